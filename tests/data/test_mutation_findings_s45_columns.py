"""Mutation testing of the packed text columns (kizuna.data.columns, stop 45): ASCII columns (the fast paths that
decode a span at once), steps and negative steps, the 65,536-row block boundary with an ASCII block before a
non-ASCII one, comparisons with tuples and shorter lists, a caption row read by index after unpickling, repr."""
import pickle

import pytest

from kizuna.data.columns import PackedCaptions, PackedStrings

ASCII = ["k0", "", "key-2", "a/b.jpg", "x", "", "last one"]


def test_an_ascii_columns_spans_read_back_from_any_start():
    """Kills: the ASCII span's ends taken as absolute offsets (``end - first`` dropped): text sliced from a
    row > 0 cut at the wrong places."""
    col = PackedStrings(ASCII)
    assert col._ascii
    for start in range(len(ASCII) + 1):
        for stop in range(start, len(ASCII) + 1):
            assert col[start:stop] == ASCII[start:stop], (start, stop)
    assert col[-3:] == ASCII[-3:] and col[5:2] == [] and col[100:] == []


def test_positive_steps_are_not_read_as_a_span():
    """Kills: ``step == 1`` widened to ``step > 0`` (``col[::2]`` returned every row)."""
    for rows in (ASCII, ["é", "b", None, "日本", "c"]):
        col = PackedStrings(rows)
        assert col[::2] == rows[::2] and col[1::3] == rows[1::3] and col[5:0:-2] == rows[5:0:-2]


def test_none_rows_in_an_ascii_column_stay_none_in_spans():
    col = PackedStrings(["a", None, "bc", None, "d"])
    assert col[1:4] == [None, "bc", None] and col[2:] == ["bc", None, "d"] and list(col) == col[:]


def test_a_column_across_the_block_boundary_ascii_then_not():
    """65,537 rows: a first block of 65,536 ASCII rows, a second block holding non-ASCII text. Kills: a block
    built of one row fewer (``start + _BLOCK - 1``: row 65,535 lost, its length left uninitialised), and
    iteration by blocks of one row fewer (row 65,535 skipped)."""
    block = PackedStrings._BLOCK
    assert block == 1 << 16
    rows = [str(k) for k in range(block)] + ["ü-last"]
    col = PackedStrings(rows)
    assert not col._ascii and len(col) == block + 1
    assert col[block - 1] == str(block - 1) and col[block] == "ü-last" and col[block - 2] == str(block - 2)
    assert col[block - 2:block + 1] == rows[block - 2:]
    assert list(col) == rows


def test_captions_across_the_block_boundary():
    """Kills: PackedCaptions iterated by blocks of one row fewer (row 65,535 skipped)."""
    block = PackedStrings._BLOCK
    rows = [("a",)] * (block - 1) + [("b", "c"), ("d",)]
    col = PackedCaptions(rows)
    seen = list(col)
    assert len(seen) == block + 1 and seen[block - 1] == ("b", "c") and seen[block] == ("d",)


def test_columns_equal_tuples_and_differ_from_their_prefixes():
    """Kills: the tuple dropped from the types ``==`` compares with, in both columns; PackedCaptions' length check
    dropped (a prefix compared equal); a row compared without ``tuple()`` (a list of lists unequal)."""
    assert PackedStrings(ASCII) == tuple(ASCII)
    rows = [("a dog", "a cat"), (), ("x",)]
    col = PackedCaptions(rows)
    assert col == tuple(rows) and col == [list(r) for r in rows]
    assert col != rows[:-1] and col != rows + [("y",)]


def test_caption_rows_by_negative_steps():
    """Kills: a negative step read forwards (``abs(step)``)."""
    rows = [("a",), ("b", "c"), (), ("d", "e", "f")]
    col = PackedCaptions(rows)
    assert col[::-1] == rows[::-1] and col[::-2] == rows[::-2] and col[::2] == rows[::2]


def test_an_unpickled_caption_column_reads_a_row_by_index():
    """Kills: ``_at`` not reset by ``__setstate__`` (an unpickled column had no ``_at``: AttributeError on
    ``col[k]``)."""
    rows = [("one", "two"), (), ("three",)]
    again = pickle.loads(pickle.dumps(PackedCaptions(rows)))
    assert again[0] == ("one", "two") and again[2] == ("three",) and again[-2] == ()


def test_a_caption_that_is_none_stays_none_in_a_row_of_several():
    """Kills: the several-caption fast path taken with None rows in the text column (None read back as "")."""
    col = PackedCaptions([(None, "a", "b"), ("c", "d")])
    assert col[0] == (None, "a", "b") and col[1] == ("c", "d")


def test_reprs_show_three_strings_or_two_caption_rows():
    """Kills: the repr's head of 3 strings cut to 2, and its ', ...' shown or hidden at the wrong lengths."""
    assert repr(PackedStrings(["a", "b", "c"])) == "PackedStrings(['a', 'b', 'c'], 3 rows)"
    assert repr(PackedStrings(["a", "b", "c", "d"])) == "PackedStrings(['a', 'b', 'c', ...], 4 rows)"
    assert repr(PackedCaptions([("a",), ("b",)])) == "PackedCaptions([('a',), ('b',)], 2 rows)"
    assert repr(PackedCaptions([("a",), ("b",), ("c",)])) == "PackedCaptions([('a',), ('b',), ...], 3 rows)"


def test_joined_from_an_ascii_column_with_none_rows():
    col = PackedStrings(["ab", None, "c", ""])
    assert col.joined(0, 4) == b"ab\0\0c\0" and col.joined(1, 3, b",") == b",c" and col.joined(-1, 10) == b""
    with pytest.raises(IndexError):
        PackedStrings(["a"])[1]
