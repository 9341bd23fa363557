"""Mutation findings (session 53), data.loader: the wait watcher says its wait once; the innermost watcher is
the one asked."""
from __future__ import annotations

import os
import time
import warnings

import torch

from kizuna.data import loader as loader_mod
from kizuna.data.loader import loader_waits_watched, wait_watch


def test_a_long_wait_is_said_once():
    """Kills `if waited >= SAY_A_WAIT_AFTER_S` without `not said` (said at every poll past a minute: 600 lines in
    ten minutes of a hung worker)."""
    on_wait = wait_watch(0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        on_wait(30.0)
        on_wait(60.0)
        on_wait(61.0)
        on_wait(120.0)
    assert len(caught) == 1 and "for 60 s" in str(caught[0].message)


class _Slow(torch.utils.data.Dataset):
    def __init__(self):
        self.parent = os.getpid()

    def __len__(self):
        return 1

    def __getitem__(self, i):
        time.sleep(0.6 if os.getpid() != self.parent else 0)
        return i


def test_the_innermost_watcher_is_asked(monkeypatch):
    """Kills `_WAIT_WATCHERS[0]` in watched_batches (a trainer's evaluation inside a command's limit watched by the
    command's, not by the trainer's own: its Ctrl-C and its loader_timeout_minutes not looked at)."""
    monkeypatch.setattr(loader_mod, "POLL_SECONDS", 0.2)
    dl = torch.utils.data.DataLoader(_Slow(), batch_size=1, num_workers=1, timeout=loader_mod.loader_timeout(1))
    outer, inner = [], []
    with loader_waits_watched(outer.append), loader_waits_watched(inner.append):
        assert [int(b) for b in loader_mod.watched_batches(dl)] == [0]
    assert inner and not outer
    assert loader_mod._WAIT_WATCHERS == []


class _SlowPair(_Slow):
    def __len__(self):
        return 2


def test_the_training_loaders_watcher_is_read_at_each_wait():
    """Kills `polled(..., self.on_wait)` in Loader._batches (the watcher bound when the epoch's iterator started:
    one set, or unset, after its first batch, as the trainers do around their loop, was not the one asked)."""
    from types import SimpleNamespace

    from kizuna.data.loader import Loader

    dl = torch.utils.data.DataLoader(_SlowPair(), batch_size=1, num_workers=1, timeout=0.2)
    loader = Loader(dl, SimpleNamespace(epoch=0, iteration_start=0), poll_seconds=0.2)
    waits = []
    batches = iter(loader)
    assert int(next(batches)) == 0  # (unwatched)
    loader.on_wait = waits.append
    assert int(next(batches)) == 1
    assert waits and all(w > 0 for w in waits)
