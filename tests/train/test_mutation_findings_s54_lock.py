"""Session 54 mutation findings: the run lock opened only as a plain file, never through a link
(train/checkpointing.py _open_lock_file, run_lock_holder)."""
import os
import subprocess
import sys

import pytest

from kizuna.eval.suite import results_folder_lock
from kizuna.train.checkpointing import RUN_LOCK, run_lock_holder


def test_a_fifo_where_the_lock_goes_is_refused_in_words(tmp_path):
    """Kills: _open_lock_file's plain-file test dropped (a FIFO planted as the lock was locked and "written": the
    pid's seek failed as an OSError, "Illegal seek", instead of the refusal that says what to do)."""
    out = tmp_path / "out"
    out.mkdir()
    os.mkfifo(out / RUN_LOCK)
    with pytest.raises(ValueError, match="symbolic link or not a plain file"):
        with results_folder_lock(out):
            pass
    assert run_lock_holder(out) is None


def test_the_holder_is_not_read_through_a_link(tmp_path):
    """Kills: run_lock_holder opening the lock with a plain open() again (through a link to another file that a
    process holds locked, it named that process as the run writing there; the run itself refuses the link)."""
    out, other = tmp_path / "out", tmp_path / "other.lock"
    out.mkdir()
    other.write_text("4242\n")
    (out / RUN_LOCK).symlink_to(other)
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'a+'); "
                               "fcntl.lockf(f, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)",
                               str(other)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert run_lock_holder(out) is None
    finally:
        holder.kill()
        holder.wait()
