"""Portability findings (a review of 2026-12-06): loaders under other start methods, shards made on macOS."""
from __future__ import annotations

from kizuna.eval.encode import progress_bar


class _CountedIterable:
    def __init__(self):
        self.iterators = 0

    def __len__(self):
        return 3

    def __iter__(self):
        self.iterators += 1
        return iter(range(3))


def test_the_progress_bar_starts_what_it_wraps_once():
    """tqdm.auto's asyncio bar called iter() on the DataLoader when made: its workers started twice per pass."""
    for enabled in (True, False):
        loader = _CountedIterable()
        assert list(progress_bar(loader, enabled=enabled)) == [0, 1, 2]
        assert loader.iterators == 1
