"""Terminals and environments (stop 49)."""
import os
import sys

from kizuna.apps import common


class _Terminal:
    def isatty(self):
        return True

    def fileno(self):
        return 2


def test_a_terminal_of_no_rows_gets_step_lines_not_a_hidden_bar(monkeypatch):
    """tqdm hides a bar past the screen's height: on 0 rows (`script` without a terminal) nothing showed."""
    monkeypatch.setattr(sys, "stderr", _Terminal())
    monkeypatch.setattr(os, "get_terminal_size", lambda fd=None: os.terminal_size((80, 0)))
    assert common.progress_default() is False
    monkeypatch.setattr(os, "get_terminal_size", lambda fd=None: os.terminal_size((80, 24)))
    assert common.progress_default() is True
