"""Mutation findings (session 52): Loader._batches' polls, with a stand-in for torch's iterator (no workers, no
waiting): the seconds told to on_wait add up, a dead pin-memory thread ends the wait, and make_loader's poll."""
import pytest

from kizuna.data import loader as loader_mod
from kizuna.data.sampler import EpochSampler


class _Timeouts:
    """An iterator that times out ``n`` times, then gives ``batch``; ``pin_alive`` for its pin-memory thread."""

    def __init__(self, n, batch="b", pin_alive=True):
        self.n, self.batch, self.given = n, batch, False

        class _Thread:
            def is_alive(self_inner):
                return pin_alive

        self._pin_memory_thread = _Thread()

    def __iter__(self):
        return self

    def __next__(self):
        if self.n:
            self.n -= 1
            raise RuntimeError("DataLoader timed out after 0.5 seconds")
        if self.given:
            raise StopIteration
        self.given = True
        return self.batch


class _Source:
    dataset = ()

    def __init__(self, it):
        self.it = it

    def __iter__(self):
        return self.it


def _loader(it, poll=0.5):
    return loader_mod.Loader(_Source(it), EpochSampler(2, 1, shuffle=False), dataset=(), poll_seconds=poll)


def test_each_empty_poll_tells_the_whole_wait_so_far():
    loader = _loader(_Timeouts(3))
    told = []
    loader.on_wait = told.append
    assert list(loader._batches()) == ["b"]
    assert told == [0.5, 1.0, 1.5]


def test_a_dead_pin_memory_thread_ends_the_wait():
    loader = _loader(_Timeouts(10 ** 6, pin_alive=False))
    told = []

    def on_wait(waited):
        told.append(waited)
        if len(told) > 3:
            raise AssertionError("waited on past a dead pin-memory thread")

    loader.on_wait = on_wait
    with pytest.raises(RuntimeError, match="Pin memory thread exited unexpectedly"):
        list(loader._batches())
    assert told == []


def test_a_loader_without_polls_raises_torchs_timeout():
    with pytest.raises(RuntimeError, match="DataLoader timed out"):
        list(_loader(_Timeouts(1), poll=0.0)._batches())


class _Tiny:
    def __len__(self):
        return 2

    def __getitem__(self, i):
        return {"x": i}


def test_make_loader_polls_only_with_workers_and_no_timeout_of_the_callers():
    sampler = EpochSampler(2, 1, shuffle=False)
    with_workers = loader_mod.make_loader(_Tiny(), sampler, num_workers=1)
    assert with_workers.dataloader.timeout == loader_mod.POLL_SECONDS
    assert with_workers.poll_seconds == loader_mod.POLL_SECONDS
    callers = loader_mod.make_loader(_Tiny(), sampler, num_workers=1, timeout=7)
    assert callers.dataloader.timeout == 7 and callers.poll_seconds == 0
    in_process = loader_mod.make_loader(_Tiny(), sampler, num_workers=0)
    assert in_process.dataloader.timeout == 0 and in_process.poll_seconds == 0
