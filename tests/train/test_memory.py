"""kizuna.train.memory: on glibc, freed memory stays in the process, so a step does not page-fault it in again."""
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from kizuna.train import memory

sys.path.insert(0, str(Path(__file__).parent))
from _tiny import tiny_config  # noqa: E402

needs_glibc = pytest.mark.skipif(memory._glibc() is None, reason="glibc's mallopt is needed (Linux with glibc)")

# A "step" allocates and fills a 64 MB tensor, then frees it; the median page faults of steps 2-6 (the process's
# own, in a fresh interpreter so this test's settings do not leak into the suite's process). The median: on a
# busy machine the kernel now and then takes one step's pages back (5,461 faults a step on average over three,
# with the memory kept), whatever the allocator does.
# argv: the mode ("keep", "release": kept then released, "default"), the block's MB and the steps timed
PROBE = textwrap.dedent("""
    import resource, statistics, sys, torch
    from kizuna.train.memory import keep_freed_memory, release_kept_memory
    mode, mb, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    kept = keep_freed_memory() if mode in ("keep", "release") else None
    if mode == "release":
        release_kept_memory()
    def step():
        torch.empty(mb * 2**18).fill_(1.0)
    step()
    faults = []
    for _ in range(steps):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        step()
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    print(kept, int(statistics.median(faults)))
""")


def _faults_per_step(mode: str, mb: int = 64, steps: int = 5) -> tuple[str, int]:
    """64 MB: over glibc's largest mmap threshold."""
    out = subprocess.run([sys.executable, "-c", PROBE, mode, str(mb), str(steps)], capture_output=True, text=True,
                         check=True).stdout
    kept, faults = out.split()
    return kept, int(faults)


@needs_glibc
def test_freed_memory_is_not_faulted_in_again():
    kept, faults_kept = _faults_per_step("keep")
    _, faults_default = _faults_per_step("default")
    assert kept == "True"
    assert faults_default > 10_000  # 16,384 pages of 4 KB, zero-filled by the OS at every step
    assert faults_kept < 500


def test_nothing_changes_without_glibc(monkeypatch):
    monkeypatch.setattr(memory, "_glibc", lambda: None)
    assert memory.keep_freed_memory() is False


def test_an_environment_that_tunes_malloc_itself_is_left_alone(monkeypatch):
    """A process started with glibc settings of its own (MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=..., as
    XEON-MALLOC.md measures) lost them after any train(): the release set glibc's defaults, and every large
    allocation page-faulted again (0 -> 81,925 faults for 5 x 64 MB)."""
    assert not memory.malloc_tuned_by_environment({"GLIBC_TUNABLES": "glibc.pthread.rseq=0", "MALLOC_ARENA": ""})
    for env in ({"MALLOC_MMAP_MAX_": "0"}, {"MALLOC_TRIM_THRESHOLD_": "68719476736"},
                {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1000000"}):
        assert memory.malloc_tuned_by_environment(env)
    monkeypatch.setenv("MALLOC_MMAP_MAX_", "0")
    assert memory.keep_freed_memory() is False  # so the trainers do not release (reset) it either


@pytest.mark.parametrize("keep", [True, False])
def test_trainers_keep_freed_memory_on_the_cpu_unless_told_not_to(tmp_path, monkeypatch, keep):
    from kizuna.train import contrastive, trainer

    calls = []
    monkeypatch.setattr(trainer, "keep_freed_memory", lambda: calls.append(1) or True)
    monkeypatch.setattr(trainer, "release_kept_memory", lambda: calls.append(-1) or True)
    t = contrastive.ContrastiveTrainer(tiny_config(tmp_path, keep_freed_memory=keep, device="cpu", steps=1))
    assert calls == []  # not while setting up: a set-up that fails would leave it on
    t.train()
    assert calls == ([1, -1] if keep else [])


RELEASE_PROBE = textwrap.dedent("""
    import os, torch
    from kizuna.train.memory import keep_freed_memory, release_kept_memory
    def resident_mb():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    keep_freed_memory()
    t = torch.empty(32 * 2**20).fill_(1.0)  # 128 MB, then freed: kept in the heap
    del t
    kept = resident_mb()
    print(release_kept_memory(), kept - resident_mb())
""")


@needs_glibc
def test_release_gives_the_kept_memory_back():
    """A notebook that trained a model held the run's peak memory for the rest of its life."""
    out = subprocess.run([sys.executable, "-c", RELEASE_PROBE], capture_output=True, text=True, check=True).stdout
    released, freed_mb = out.split()
    assert released == "True" and float(freed_mb) > 100


def test_the_trainer_releases_what_it_kept(tmp_path, monkeypatch):
    from kizuna.train import contrastive, trainer

    calls = []
    monkeypatch.setattr(trainer, "keep_freed_memory", lambda: True)
    monkeypatch.setattr(trainer, "release_kept_memory", lambda: calls.append("released") or True)
    contrastive.ContrastiveTrainer(tiny_config(tmp_path, steps=1, device="cpu")).train()
    assert calls == ["released"]
    calls.clear()
    contrastive.ContrastiveTrainer(tiny_config(tmp_path / "off", steps=1, device="cpu", keep_freed_memory=False)).train()
    assert calls == []


@needs_glibc
def test_after_the_release_blocks_are_not_faulted_in_at_every_use():
    """Any mallopt of the thresholds turns glibc's adaptation off for good, and the release set the default trim
    threshold back: blocks over 128 KB then went to mmap and back at every use, zero-filled each time (3x the
    faults of a fresh process after a training run). The release sets the thresholds glibc adapts to instead."""
    # 1 MB: over glibc's default mmap threshold (128 KB), under its largest; from mmap, 256 pages faulted each use
    assert _faults_per_step("release", mb=1, steps=20)[1] < 64
