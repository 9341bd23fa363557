"""Session 54 mutation findings: damaged shards said a few, then in one line (data/tar_index.py _say,
shard_warnings_summed), and the brace range's own cap (data/sources.py _range_items)."""
import warnings

import pytest

from kizuna.data import sources, tar_index


def _said(fn):
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        fn()
    return [str(w.message) for w in got]


def test_nested_summing_sums_once_at_the_outermost():
    """Kills: shard_warnings_summed's nesting test dropped (an inner block started its own count and said its
    summary at its end, and the outer one's count began again)."""
    def inner_then_more():
        with tar_index.shard_warnings_summed():
            with tar_index.shard_warnings_summed():
                for i in range(5):
                    tar_index._say("truncated", 2, f"shard {i} damaged")
            for i in range(5, 7):
                tar_index._say("truncated", 2, f"shard {i} damaged")
    said = _said(inner_then_more)
    assert said[:3] == ["shard 0 damaged", "shard 1 damaged", "shard 2 damaged"]
    assert len(said) == 4 and said[3].startswith("... and 4 more tar shards, as the 3 above")
    assert "8 partial samples" in said[3]


def test_a_range_past_the_cap_is_refused_before_its_names_are_made(monkeypatch):
    """Kills: _range_items' own cap dropped (the names were all made, then counted by expand_braces)."""
    monkeypatch.setattr(sources, "MAX_BRACE_NAMES", 10)
    assert len(sources._range_items("0", "9", None)) == 10
    with pytest.raises(ValueError, match=r"\{0\.\.10\} expands to more than 10 names"):
        sources._range_items("0", "10", None)


def test_no_summary_line_when_every_shard_was_said():
    """Kills: the summary said for a kind with nothing more ("... and 0 more tar shards")."""
    def three():
        with tar_index.shard_warnings_summed():
            for i in range(3):
                tar_index._say("not_utf8", 1, f"shard {i} not utf-8")
    assert _said(three) == ["shard 0 not utf-8", "shard 1 not utf-8", "shard 2 not utf-8"]
