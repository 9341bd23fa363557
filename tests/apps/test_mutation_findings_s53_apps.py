"""Mutation findings (session 53), apps: --loader-timeout-minutes as the command applies it, and a full disk's one
line (kizuna.apps.cli._disk_full)."""
from __future__ import annotations

import argparse
import contextlib
import errno
import os

import pytest

from kizuna.apps import cli
from kizuna.data import loader as loader_mod
from kizuna.data.loader import LoaderStalled


def test_the_flags_minutes_are_minutes():
    """Kills `wait_watch(minutes)` in _loader_waits_limited (0.5 min ended a wait at 0.5 s)."""
    with cli._loader_waits_limited(argparse.Namespace(loader_timeout_minutes=0.5)):
        on_wait = loader_mod._WAIT_WATCHERS[-1]
        on_wait(29.0)  # (under 60 s: not said, not raised)
        with pytest.raises(LoaderStalled):
            on_wait(30.0)
    assert on_wait not in loader_mod._WAIT_WATCHERS


@pytest.mark.parametrize("value", [True, None, "3"])
def test_no_number_is_no_limit_of_the_commands(value):
    """Kills `if not isinstance(minutes, (int, float))` without the bool check (a config's True taken as 1 minute)."""
    assert isinstance(cli._loader_waits_limited(argparse.Namespace(loader_timeout_minutes=value)),
                      contextlib.nullcontext)


def test_zero_minutes_is_a_valid_flag():
    """Kills `if not value > 0` in add_loader_timeout_argument (0 = wait for ever was refused)."""
    from kizuna.apps.common import add_loader_timeout_argument

    p = argparse.ArgumentParser()
    add_loader_timeout_argument(p)
    assert p.parse_args(["--loader-timeout-minutes", "0"]).loader_timeout_minutes == 0
    assert p.parse_args(["--loader-timeout-minutes", "2.5"]).loader_timeout_minutes == 2.5
    assert p.parse_args([]).loader_timeout_minutes == loader_mod.LOADER_TIMEOUT_MINUTES > 0


def test_a_full_disk_in_the_systems_words_gets_advice():
    """Kills `error.strerror != os.strerror(...)` and the EFBIG/ENOSPC advice swapped, in _disk_full."""
    full = cli._disk_full(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "x.pt"))
    assert full.startswith(os.strerror(errno.ENOSPC)) and "free space there" in full and "ulimit" not in full
    big = cli._disk_full(OSError(errno.EFBIG, os.strerror(errno.EFBIG), "x.pt"))
    assert "ulimit -f" in big and "free space" not in big
    quota = cli._disk_full(OSError(errno.EDQUOT, os.strerror(errno.EDQUOT), "x.pt"))
    assert "raise the quota" in quota


def test_kizunas_own_words_are_said_as_they_are():
    """Kills the same mutant from the other side: kizuna's own message (it says what to do) gets no advice."""
    own = cli._disk_full(OSError(errno.ENOSPC, "the checkpoint of step 3 did not fit: 2 GB free, keep fewer"))
    assert own == "the checkpoint of step 3 did not fit: 2 GB free, keep fewer"
    said = "a file past the limit: see ulimit"
    assert cli._disk_full(OSError(errno.EFBIG, said)) == said


def test_a_path_too_long_in_the_systems_words_is_no_disk_full():
    """Kills `if error.errno == errno.ENAMETOOLONG:` (any path too long said as kizuna's own one line; the system's
    keeps its traceback, its path is the user's to see) and EFBIG dropped from the errnos."""
    assert cli._disk_full(OSError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG), "x" * 300)) is None
    assert cli._disk_full(OSError(errno.ENAMETOOLONG, "the checkpoint's path is too long: use a shorter OUT")) == \
        "the checkpoint's path is too long: use a shorter OUT"
    assert cli._disk_full(OSError(errno.EIO, os.strerror(errno.EIO))) is None
    assert cli._disk_full(OSError(errno.EFBIG, os.strerror(errno.EFBIG))) is not None


def test_a_full_disk_ends_the_command_in_one_line(monkeypatch, capsys):
    """Kills `_disk_full(e)` dropped from _run_command's OSError handler (a full disk kept its traceback)."""
    from kizuna.apps import embed

    def full(args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "e.npy")

    monkeypatch.setattr(embed, "run", full)
    code = cli.main(["embed", "--model", "ViT-mu-8", "--texts", "t.txt", "--out", "e.npy"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and "\n" not in err and "free space there" in err, err
