"""Packed text columns (kizuna.data.columns): they read back exactly what was packed, as the lists they
replace did, and a SampleIndex holds its keys, paths and captions packed."""
import pickle

import numpy as np
import pytest

from kizuna.data.columns import PackedCaptions, PackedStrings
from kizuna.data.sources import SampleIndex

ROWS = ["000001", "", None, "café/x.jpg", "bad\udcff-byte", "lone \ud83d surrogate", "\0nul", None, "日本"]


def test_strings_read_back_as_the_list_they_were():
    col = PackedStrings(ROWS)
    assert len(col) == len(ROWS) and list(col) == ROWS and col == ROWS
    assert [col[k] for k in range(len(ROWS))] == ROWS
    assert [col[-k] for k in range(1, len(ROWS) + 1)] == [ROWS[-k] for k in range(1, len(ROWS) + 1)]
    assert col[2:7] == ROWS[2:7] and col[::-2] == ROWS[::-2] and col[np.int64(3)] == "café/x.jpg"
    with pytest.raises(IndexError):
        col[len(ROWS)]
    with pytest.raises(IndexError):
        col[-len(ROWS) - 1]
    assert PackedStrings(col) == col and PackedStrings([]) == [] and len(PackedStrings()) == 0
    assert col != ROWS[:-1] and col != ROWS[:-1] + ["日"]
    assert pickle.loads(pickle.dumps(col)) == ROWS


def test_captions_read_back_as_tuples():
    rows = [("a dog", "a cat"), (), ("x",), (), ("", "y\udcff", "z")]
    col = PackedCaptions(rows)
    assert list(col) == rows and col == rows and [col[k] for k in range(5)] == rows
    assert col[-1] == rows[-1] and col[1:4] == rows[1:4] and col.counts().tolist() == [2, 0, 1, 0, 3]
    assert all(isinstance(c, tuple) for c in col)
    assert pickle.loads(pickle.dumps(col)) == rows and PackedCaptions(col) == rows
    with pytest.raises(IndexError):
        col[5]


def test_a_sample_index_holds_its_text_packed_and_reads_it_back():
    keys, paths = ["k0", "k1", "k2"], [None, "/d/b.jpg", None]
    captions = [("one", "two"), (), ("three",)]
    index = SampleIndex(["s.tar"], ["tar"], np.zeros(3), keys, np.arange(3), np.ones(3), paths, captions,
                        np.array([-1, 2, -1]))
    assert isinstance(index.keys, PackedStrings) and isinstance(index.captions, PackedCaptions)
    assert isinstance(index.paths, PackedStrings)
    assert [tuple(index[k])[2] for k in range(3)] == keys and index[1].path == "/d/b.jpg"
    assert index[0].captions == ("one", "two") and index[1].captions == ()
    assert index.num_captions == 3 and index.has_captions
    index.captions = [()] * 3  # assigned afterwards: packed as well
    assert isinstance(index.captions, PackedCaptions) and not index.has_captions and index.num_captions == 0
    again = pickle.loads(pickle.dumps(index))
    assert list(again.keys) == keys and list(again.paths) == paths
    joined = SampleIndex.concat([index, again])
    assert list(joined.keys) == keys * 2 and joined[4].path == "/d/b.jpg"


def test_rows_joined_off_the_buffer_are_the_encoded_rows_joined():
    col = PackedStrings(ROWS)
    for start, stop in ((0, len(ROWS)), (2, 5), (4, 5), (3, 3), (-3, len(ROWS)), (0, 100)):
        expected = b"\0".join((s or "").encode("utf-8", "surrogatepass") for s in ROWS[start:stop])
        assert col.joined(start, stop) == expected, (start, stop)
    assert PackedStrings(["a", "", "b"]).joined(0, 3, b"|") == b"a||b"


def test_taking_rows_copies_them_in_that_order():
    col = PackedStrings(ROWS)
    for sel in ([0, 1, 2, 3, 4, 5, 6, 7, 8], [8, 0, 3], [2, 2, 7], [], [4]):
        assert list(col.take(sel)) == [ROWS[i] for i in sel], sel
    rows = [("a dog", "a cat"), (), ("x",), ("", "y\udcff", "z")]
    caps = PackedCaptions(rows)
    for sel in ([0, 1, 2, 3], [3, 0], [1, 1], [], [2]):
        assert list(caps.take(sel)) == [rows[i] for i in sel], sel
    many = PackedStrings([f"{i:06d}" for i in range(70_000)])  # across a block of 65,536
    assert list(many.take(np.arange(69_999, -1, -7))) == [f"{i:06d}" for i in range(69_999, -1, -7)]
