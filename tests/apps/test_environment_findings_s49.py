"""Terminals and environments (stop 49)."""
import os
import sys

from kizuna.apps import common


class _Terminal:
    def isatty(self):
        return True

    def fileno(self):
        return 2


class _NotATerminal(_Terminal):
    def isatty(self):
        return False


def test_a_terminal_whose_size_cannot_be_read_still_draws_bars(monkeypatch):
    def no_size(fd=None):
        raise OSError("Inappropriate ioctl for device")

    monkeypatch.setattr(sys, "stderr", _Terminal())
    monkeypatch.setattr(os, "get_terminal_size", no_size)
    assert common.progress_default() is True
    monkeypatch.setattr(sys, "stderr", _NotATerminal())
    monkeypatch.setattr(os, "get_terminal_size", lambda fd=None: os.terminal_size((80, 24)))
    assert common.progress_default() is False


def test_a_terminal_of_no_rows_gets_step_lines_not_a_hidden_bar(monkeypatch):
    """tqdm hides a bar past the screen's height: on 0 rows (`script` without a terminal) nothing showed."""
    monkeypatch.setattr(sys, "stderr", _Terminal())
    monkeypatch.setattr(os, "get_terminal_size", lambda fd=None: os.terminal_size((80, 0)))
    assert common.progress_default() is False
    monkeypatch.setattr(os, "get_terminal_size", lambda fd=None: os.terminal_size((80, 24)))
    assert common.progress_default() is True
