"""Mutation findings (session 50), the run lock read by --resume latest: this process's own lock survives being
asked about (a second handle's close drops a POSIX lock), a holder whose pid is unreadable is named as a run without
a pid, and such a holder still stops "--resume latest" with "another kizuna run", not "no checkpoint"."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("fcntl")

from kizuna.train.checkpointing import (RUN_LOCK, CheckpointManager, hold_run_lock, release_run_lock,  # noqa: E402
                                        run_lock_holder)


_LOCKER = ("import fcntl, sys, time; f = open(sys.argv[1], 'a+'); f.seek(0); f.truncate(); f.write(sys.argv[2]); "
           "f.flush(); fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB); print('held', flush=True); time.sleep(60)")


def _held_by_another_process(out: Path, content: str) -> subprocess.Popen:
    out.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([sys.executable, "-c", _LOCKER, str(out / RUN_LOCK), content], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_asking_about_this_processs_own_lock_keeps_it(tmp_path):
    out = tmp_path / "run"
    key = hold_run_lock(out)
    try:
        assert run_lock_holder(out) is None  # this process's own: no other run
        # and still held against another process (closing a second handle on the file dropped it)
        other = subprocess.run(
            [sys.executable, "-c", "import fcntl, sys; f = open(sys.argv[1], 'a+'); "
             "fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)", str(out / RUN_LOCK)],
            capture_output=True, text=True, timeout=60)
        assert other.returncode != 0 and ("Resource temporarily unavailable" in other.stderr
                                          or "Permission denied" in other.stderr), other.stderr
    finally:
        release_run_lock(key)


def test_a_holder_with_an_unreadable_pid_is_named_without_one(tmp_path):
    out = tmp_path / "run"
    proc = _held_by_another_process(out, "not-a-pid")
    try:
        assert run_lock_holder(out) == ""
        with pytest.raises(ValueError) as refused:
            CheckpointManager(out).resolve("latest")
    finally:
        proc.kill()
        proc.wait()
    message = str(refused.value)
    assert "another kizuna run is writing there" in message and "pid" not in message and "not-a-pid" not in message
    # once it is gone: the plain "no checkpoint"
    assert run_lock_holder(out) is None
    with pytest.raises(FileNotFoundError, match="no checkpoint under"):
        CheckpointManager(out).resolve("latest")


def test_a_holder_with_a_pid_is_named_by_it(tmp_path):
    out = tmp_path / "run"
    proc = _held_by_another_process(out, "12345")
    try:
        assert run_lock_holder(out) == "12345"
        with pytest.raises(ValueError, match=r"another kizuna run \(pid 12345\) is writing there"):
            CheckpointManager(out).resolve("latest")
    finally:
        proc.kill()
        proc.wait()
