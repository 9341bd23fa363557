import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _shards import make_pair_shard, pair_members, random_crop, to_tensor, write_tar  # noqa: E402

from kizuna.data.loader import Collate, make_loader  # noqa: E402
from kizuna.data.sampler import EpochSampler  # noqa: E402
from kizuna.data.sources import PairDataset, build_index  # noqa: E402


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    caps = [[f"c{i} a", f"c{i} b", f"c{i} c"] for i in range(12)]
    members = pair_members([f"{i:09d}" for i in range(12)], caps)
    members[12:12] = [("000000099.jpg", b"garbage" * 10), ("000000099.txt", b"corrupt")]
    write_tar(root / "000000.tar", members)
    make_pair_shard(root / "000001.tar", 12, 9)
    idx = build_index(f"{root}/{{000000..000001}}.tar")
    assert len(idx) == 22
    return idx


def run_epoch(loader, epoch):
    loader.sampler.set_epoch(epoch)
    return [b for b in loader]


def summary(batches):
    return [(b["keys"], b["captions"], b["indices"].tolist(), b["position"]) for b in batches]


def test_workers_give_the_same_batches_and_report_skips(index):
    results = {}
    for workers in (0, 2):
        ds = PairDataset(index, random_crop, seed=9)  # random augmentation + random caption pick
        loader = make_loader(ds, EpochSampler(len(ds), 4, seed=1, drop_last=False), workers)
        assert not loader.dataloader.pin_memory  # CPU only here
        assert loader.dataloader.persistent_workers == (workers > 0)
        batches = run_epoch(loader, 1)
        results[workers] = (batches, loader.skips.as_dict(), loader.report())
        batches2 = run_epoch(loader, 2)  # a second epoch through the same (persistent) workers
        results[workers] += (summary(batches2),)
        del loader

    (b0, skips0, _, e2_0), (b2, skips2, report2, e2_2) = results[0], results[2]
    assert summary(b0) == summary(b2)
    for x, y in zip(b0, b2):
        assert torch.equal(x["images"], y["images"])
    assert e2_0 == e2_2 and e2_0 != summary(b0)
    assert skips0 == skips2 == {"corrupt_image": 1}
    assert report2.startswith("skipped 1 samples: corrupt_image=1 (e.g. key 000000099 in shard ")
    keys = [k for b in b0 for k in b["keys"]]
    assert sorted(keys) == [f"{i:09d}" for i in range(21)]  # exactly once, the corrupt one dropped
    assert sum(b["skipped"].get("corrupt_image", 0) for b in b0) == 1
    assert {b["images"].shape[1:] for b in b0} == {(3, 8, 8)}


def test_resume_through_prefetching_workers(index):
    def loader_for(workers):
        ds = PairDataset(index, to_tensor, seed=2)
        return make_loader(ds, EpochSampler(len(ds), 3, seed=4), workers, prefetch_factor=2)

    ref = summary(run_epoch(loader_for(0), 3))
    loader = loader_for(2)
    loader.sampler.set_epoch(3)
    it = iter(loader)
    head = [next(it) for _ in range(2)]
    state = loader.state_dict()
    # the workers have already asked the sampler for more batches than the loop has seen
    assert (state["epoch"], state["batches_consumed"]) == (3, 2)
    del it, loader

    resumed = loader_for(0)
    resumed.load_state_dict(state)
    rest = run_epoch(resumed, 3)
    assert summary(head) + summary(rest) == ref
    assert len(ref) == len(resumed) == 22 // 3
    # a loader that has delivered batches, then loads a checkpoint, reports the loaded position (it kept
    # reporting the batches it had delivered before the load)
    resumed.load_state_dict(state)
    assert (resumed.state_dict()["epoch"], resumed.state_dict()["batches_consumed"]) == (3, 2)


def test_collate_tokenizes_and_keeps_empty_batches(index):
    def tokenizer(texts):
        return torch.tensor([[len(t), 0] for t in texts])

    ds = PairDataset(index, to_tensor, tokenizer=tokenizer, caption_sampling="first")
    collate = Collate(tokenizer=ds.tokenizer)
    bad = index.keys.index("000000099")
    batch = collate(ds.__getitems__([(0, 0), (bad, 0), (1, 0)]))
    assert batch["keys"] == ["000000000", "000000001"]
    assert batch["captions"] == ["c0 a", "c1 a"]
    assert batch["text"].tolist() == [[4, 0], [4, 0]]
    assert batch["images"].shape == (2, 3, 8, 8) and batch["labels"].tolist() == [-1, -1]
    assert batch["skipped"] == {"corrupt_image": 1}

    empty = collate(ds.__getitems__([(bad, 0)]))
    assert empty["images"].numel() == 0 and empty["keys"] == [] and "text" not in empty
    assert empty["skipped"] == {"corrupt_image": 1}
    assert Collate()([None, ds[0]])["skipped"] == {"unknown": 1}  # a dataset without __getitems__

    def picky(texts):
        if any(t.startswith("c1 ") for t in texts):
            raise ValueError("nothing left after cleaning")
        return tokenizer(texts)

    batch = Collate(tokenizer=picky)(ds.__getitems__([(0, 0), (1, 0), (2, 0)]))
    assert batch["keys"] == ["000000000", "000000002"] and batch["text"].shape == (2, 2)
    assert batch["skipped"] == {"bad_caption": 1}


def test_a_resumed_epoch_reports_the_skips_from_before_its_checkpoint(index):
    """The skip counters were not in the loader's state: an epoch resumed after its corrupt image reported
    nothing skipped, and the run's log missed that epoch's report."""
    def loader_for():
        ds = PairDataset(index, to_tensor, seed=2)
        return make_loader(ds, EpochSampler(len(ds), 4, seed=1, drop_last=False), 0)

    whole = loader_for()
    run_epoch(whole, 1)
    assert whole.skips.as_dict() == {"corrupt_image": 1}
    first = loader_for()
    first.sampler.set_epoch(1)
    it = iter(first)
    seen = []
    while not seen or not seen[-1]["skipped"]:  # up to the batch that held the corrupt image
        seen.append(next(it))
    state = first.state_dict()
    resumed = loader_for()
    resumed.load_state_dict(state)
    run_epoch(resumed, 1)
    assert resumed.skips.as_dict() == resumed.total_skips.as_dict() == {"corrupt_image": 1}
    # and the place its report names (stop 54: the count was carried, the example not: it named another sample)
    assert resumed.skips.examples == resumed.total_skips.examples == whole.skips.examples != {}
    # at an epoch's end its skips are reported right after the checkpoint: a resume there does not repeat them
    end = loader_for()
    run_epoch(end, 1)
    at_end = loader_for()
    at_end.load_state_dict(end.state_dict())
    assert run_epoch(at_end, 1) == [] and at_end.skips.total == 0 and at_end.total_skips.total == 1


def test_another_ranks_state_brings_no_skips(index):
    """The trainers save rank 0's loader state, with every rank's skips summed in it, and every rank loads it:
    rank 1 took rank 0's counts too, and a report summing the ranks counted them twice. The rank whose state
    it is carries them on; the others start from none (their position is the same)."""
    def loader_for(rank):
        ds = PairDataset(index, to_tensor, seed=2)
        return make_loader(ds, EpochSampler(len(ds), 2, rank=rank, world_size=2, seed=1, drop_last=False), 0)

    first = loader_for(0)
    first.sampler.set_epoch(0)
    for batch in first:
        if batch["skipped"]:
            break
    state = first.state_dict()
    assert state["skips"]["total"] == {"corrupt_image": 1} and state["rank"] == 0
    own, other = loader_for(0), loader_for(1)
    own.load_state_dict(state)
    other.load_state_dict(state)
    assert own.total_skips.as_dict() == {"corrupt_image": 1} and other.total_skips.total == 0
    assert other.sampler.batches_consumed == own.sampler.batches_consumed == state["batches_consumed"]
    run_epoch(own, 0)
    run_epoch(other, 0)
    assert own.skips.as_dict() == {"corrupt_image": 1} and other.skips.total == 0


class _PlainDataset(torch.utils.data.Dataset):
    """Only __getitem__, as most users' datasets."""

    def __len__(self):
        return 40

    def __getitem__(self, key):
        i = key[0]  # (index, epoch), or (index, epoch, draw) when resampled
        return {"image": torch.full((1,), float(i)), "index": i, "key": str(i)}


def _plain_collate(samples):  # a collate function of the user's own: a dict without the sampler's tags
    return {"images": torch.stack([s["image"] for s in samples]), "labels": torch.zeros(len(samples))}


class _ListFetchingDataset(_PlainDataset):
    def __getitems__(self, keys):  # a batch fetch of its own, returning a plain list
        return [self[k] for k in keys]


@pytest.mark.parametrize("collate", [None, _plain_collate])
@pytest.mark.parametrize("dataset", [_PlainDataset, _ListFetchingDataset])
def test_a_plain_dataset_resumes_at_the_batches_delivered_not_the_prefetched(collate, dataset):
    """With workers the sampler runs ahead; a dataset without __getitems__ (or the user's collate) lost the
    batch position, so the state fell back to the sampler's: 6 batches consumed after 2 delivered."""
    for workers in (0, 2):
        sampler = EpochSampler(40, 4, seed=0)
        loader = make_loader(dataset(), sampler, num_workers=workers, collate=collate)
        sampler.set_epoch(0)
        it = iter(loader)
        seen = [next(it)["images"].flatten().tolist() for _ in range(2)]
        state = loader.state_dict()
        assert state["batches_consumed"] == 2, workers
        fresh = EpochSampler(40, 4, seed=0)
        resumed = make_loader(dataset(), fresh, num_workers=0, collate=collate)
        resumed.load_state_dict(state)
        fresh.set_epoch(0)
        rest = [b["images"].flatten().tolist() for b in resumed]
        whole = [sorted(x) for x in seen + rest]
        assert len(whole) == 10 and sorted(v for b in whole for v in b) == [float(i) for i in range(40)]


def test_an_endless_resampled_loader_has_a_state():
    """len() of an endless resampled sampler raises; state_dict() called it."""
    sampler = EpochSampler(40, 4, seed=0, resampled=True)
    loader = make_loader(_PlainDataset(), sampler)
    sampler.set_epoch(0)
    it = iter(loader)
    next(it), next(it)
    state = loader.state_dict()
    assert state["batches_consumed"] == 2 and state["skips"]["epoch"] == {}


class _TaggedDataset(_PlainDataset):
    tag = 7


def _scale_by_the_tag(worker_id):
    info = torch.utils.data.get_worker_info()
    info.dataset.scale = info.dataset.tag  # a worker_init_fn reads (and sets) the user's dataset's attributes


def test_a_worker_init_fn_sees_the_users_dataset_attributes():
    """get_worker_info().dataset is the user's dataset (the loader once wrapped it, and reading its
    attributes through the wrapper was an AttributeError in every worker)."""
    sampler = EpochSampler(8, 4, seed=0)
    loader = make_loader(_TaggedDataset(), sampler, num_workers=1, worker_init_fn=_scale_by_the_tag)
    sampler.set_epoch(0)
    assert len(list(loader)) == 2


def _tuple_collate(samples):  # a user's collate that returns a tuple: no room for the sampler's tags
    return torch.stack([s["image"] for s in samples]), torch.zeros(len(samples))


def test_a_collate_that_returns_a_tuple_resumes_at_the_batches_delivered():
    """The position came only from tags in a dict batch: with a tuple, a resume started where the
    prefetching workers' sampler had got to, 6 batches in after 2 delivered, and 4 batches were never seen."""
    sampler = EpochSampler(40, 4, seed=0)
    loader = make_loader(_PlainDataset(), sampler, num_workers=2, collate=_tuple_collate)
    sampler.set_epoch(0)
    it = iter(loader)
    seen = [next(it)[0].flatten().tolist() for _ in range(2)]
    state = loader.state_dict()
    assert state["batches_consumed"] == 2
    fresh = EpochSampler(40, 4, seed=0)
    resumed = make_loader(_PlainDataset(), fresh, num_workers=0, collate=_tuple_collate)
    resumed.load_state_dict(state)
    fresh.set_epoch(0)
    it = iter(resumed)
    rest = [next(it)[0].flatten().tolist()]
    assert resumed.state_dict()["batches_consumed"] == 3  # counted on from the loaded position
    rest += [b[0].flatten().tolist() for b in it]
    assert sorted(v for b in seen + rest for v in b) == [float(i) for i in range(40)]


WORKER_SCRIPT = """
import ctypes, os, signal, subprocess, time, torch
from kizuna.data.loader import make_loader
from kizuna.data.sampler import EpochSampler
{dataset}
loader = make_loader(D(), EpochSampler({n}, {n}, shuffle=False), num_workers=1, pin_memory=False, timeout={timeout},
                     collate=lambda items: {{"x": torch.tensor(items)}})
try:
    print("first batch:", next(iter(loader.dataloader))["x"].tolist())
except RuntimeError as e:
    print("timed out:", "timed out" in str(e))
"""


def _through_a_worker(dataset: str, n: int, timeout: float = 0) -> str:
    """The output of a fresh process that reads one batch of ``n`` items of ``dataset`` (code defining a Dataset D)
    through one kizuna loader worker; it must exit 0 (not hang)."""
    import subprocess

    script = WORKER_SCRIPT.format(dataset=dataset, n=n, timeout=timeout)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a pthread deadlock through ctypes (Linux)")
def test_a_worker_stuck_in_c_code_is_ended_and_the_process_exits():
    """The workers' SIGTERM decision was a Python handler, which never runs while the worker is stuck in C code: the
    loader's terminate() did nothing, and the process hung at exit joining the worker."""
    stuck = """
class D(torch.utils.data.Dataset):
    def __len__(self):
        return 16
    def __getitem__(self, i):
        i = i[0] if isinstance(i, tuple) else i  # (the sampler's index carries its draw)
        if i == 8:  # a deadlock inside C code: the worker never returns to Python
            mutex = ctypes.create_string_buffer(64)
            libc = ctypes.CDLL(None)
            libc.pthread_mutex_lock(mutex)
            libc.pthread_mutex_lock(mutex)
        return i
"""
    assert "timed out: True" in _through_a_worker(stuck, 16, timeout=3)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="POSIX signals")
def test_a_program_a_worker_starts_can_still_be_terminated():
    """Blocking SIGTERM in the workers (to decide it in a thread) was inherited by every program a dataset started:
    terminate() of a subprocess did nothing (review)."""
    starts = """
class D(torch.utils.data.Dataset):
    def __len__(self):
        return 4
    def __getitem__(self, i):
        child = subprocess.Popen(["sleep", "30"])
        child.terminate()
        return child.wait(timeout=10)
"""
    assert "first batch: [-15, -15, -15, -15]" in _through_a_worker(starts, 4)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="POSIX signals and fork")
def test_a_helper_a_worker_forks_can_be_terminated_without_ending_the_worker():
    """A process forked from a worker inherited its SIGTERM handler and wakeup pipe: the helper ignored terminate(),
    and the worker read the helper's SIGTERM as its own and exited (review)."""
    forks = """
class D(torch.utils.data.Dataset):
    def __len__(self):
        return 2
    def __getitem__(self, i):
        pid = os.fork()  # a helper without exec (a worker is daemonic: multiprocessing refuses children)
        if pid == 0:
            time.sleep(30)
            os._exit(0)
        time.sleep(0.2)
        os.kill(pid, signal.SIGTERM)
        _, status = os.waitpid(pid, 0)
        return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
"""
    assert "first batch: [-15, -15]" in _through_a_worker(forks, 2)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="POSIX signals")
def test_a_worker_ended_by_sigterm_leaves_no_temp_folder(tmp_path):
    """A worker that had sent batches had started multiprocessing's resource sharer: its os._exit skipped the clean-up,
    and every SIGTERM (a scheduler's, `kill -TERM -PGID`) left $TMPDIR/pymp-*/listener-* behind. The TMPDIR is
    too long for a socket path (as pytest-xdist's tmp_path was for a user name of 6 letters): the worker's send
    failed, and the main process waited for its batch for ever, until the sharer's folder moved to /tmp."""
    import subprocess

    script = """
import multiprocessing, os, signal, torch
from kizuna.data.loader import make_loader
from kizuna.data.sampler import EpochSampler
class D(torch.utils.data.Dataset):
    def __len__(self):
        return 64
    def __getitem__(self, i):
        return torch.zeros(1000)
loader = make_loader(D(), EpochSampler(64, 4, shuffle=False), num_workers=2, pin_memory=False,
                     collate=lambda items: {"x": torch.stack(items)})
batches = iter(loader.dataloader)
for _ in range(4):
    next(batches)
workers = multiprocessing.active_children()
for w in workers:
    os.kill(w.pid, signal.SIGTERM)
for w in workers:
    w.join(30)
print("exit codes:", [w.exitcode for w in workers])
"""
    temp = tmp_path / "tmp"
    temp = temp / ("t" * max(1, 80 - len(str(temp)) - 1))  # 80 characters: 112 with the sharer's socket name
    temp.mkdir(parents=True)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "TMPDIR": str(temp)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "exit codes: [0, 0]" in done.stdout
    assert sorted(p.name for p in temp.iterdir()) == []
