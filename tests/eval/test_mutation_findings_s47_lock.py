"""Mutation findings (stop 47's mutation test of the results folder's lock): mutants that no test killed.

Reference: the kernel's record lock on OUT/.kizuna-run.lock, as another process sees it (``fcntl.lockf`` from a
child process): held while a command evaluates into OUT, free once it has returned (as a training run's is)."""
import subprocess
import sys

import pytest

from kizuna.eval import suite

PROBE = """
import fcntl, os, sys
if not os.path.exists(sys.argv[1]):  # (removed with the lock: free)
    sys.exit(0)
f = open(sys.argv[1], "a+")
try:
    fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
except OSError:
    sys.exit(3)
"""


def _free_to_another_process(out) -> bool:
    done = subprocess.run([sys.executable, "-c", PROBE, str(out / ".kizuna-run.lock")], timeout=60)
    assert done.returncode in (0, 3)
    return done.returncode == 0


@pytest.mark.skipif(sys.platform == "win32", reason="no fcntl: the folder is not locked there")
def test_the_results_folder_is_free_again_once_the_command_returns(tmp_path):
    """Kills results_folder_lock's ``release_run_lock`` dropped: a notebook's (or a sweep's) evaluation into OUT
    kept the folder locked for the life of the process, and every later command into it was refused."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.json").write_text("[]\n")  # an earlier command's
    with suite.results_folder_lock(out):
        assert not _free_to_another_process(out)
    assert _free_to_another_process(out)
    with suite.results_folder_lock(out):  # and this process takes it again
        assert not _free_to_another_process(out)
    assert _free_to_another_process(out)
