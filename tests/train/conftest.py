"""Fixtures of the training tests."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _clock import Clock  # noqa: E402

from kizuna.train import budget as budget_mod  # noqa: E402


@pytest.fixture
def clock(monkeypatch):
    """time.perf_counter of the budget replaced by a Clock the test advances."""
    c = Clock()
    monkeypatch.setattr(budget_mod.time, "perf_counter", c)
    return c
