"""`kizuna embed`'s .npy and the .txt that names its rows are one output: a failure between the two (a full disk)
left the new rows beside the old row names, and a reader mapped the wrong texts onto the embeddings."""
from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pytest

from kizuna.apps.embed import write_embeddings


def _old_pair(tmp_path):
    out = tmp_path / "e.npy"
    write_embeddings(out, ["a red circle", "a blue square"], np.ones((2, 4), np.float32), "text")
    return out, out.with_suffix(".txt")


def _consistent_or_gone(out: Path, rows: Path) -> None:
    """Either both files, naming the same number of rows, or neither; and no temp file left."""
    assert out.exists() == rows.exists(), sorted(p.name for p in out.parent.iterdir())
    if out.exists():
        assert np.load(out).shape[0] == len(rows.read_text().splitlines())
    assert not [p.name for p in out.parent.iterdir() if p.name.endswith(".tmp")]


def test_a_full_disk_writing_the_row_list_leaves_the_old_pair(tmp_path, monkeypatch):
    from kizuna.apps import embed

    out, rows = _old_pair(tmp_path)
    real = embed._filled

    def full_for_the_rows(path, fill):
        if Path(path).name.startswith(".e.txt."):  # the row list's temp file
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, fill)

    monkeypatch.setattr(embed, "_filled", full_for_the_rows)
    with pytest.raises(OSError) as info:
        write_embeddings(out, ["x", "y", "z"], np.zeros((3, 4), np.float32), "text")
    _consistent_or_gone(out, rows)
    assert info.value.errno == errno.ENOSPC
    assert f"could not write {out} and its row list {rows}" in str(info.value), str(info.value)
    assert rows.read_text().splitlines() == ["a red circle", "a blue square"]  # nothing new was put in place
    assert (np.load(out) == 1).all()


def test_a_failed_rename_of_the_row_list_leaves_neither_file(tmp_path, monkeypatch):
    """The .npy is in, the .txt rename fails: the new .npy and the old .txt (a stale partner) both go."""
    out, rows = _old_pair(tmp_path)
    real = os.replace

    def failing_for_the_rows(src, dst, *args, **kwargs):
        if Path(dst) == rows:
            raise OSError(errno.EIO, "Input/output error")
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", failing_for_the_rows)
    with pytest.raises(OSError) as info:
        write_embeddings(out, ["x", "y", "z"], np.zeros((3, 4), np.float32), "text")
    _consistent_or_gone(out, rows)
    assert not out.exists() and "neither is left" in str(info.value)


def test_the_pair_is_still_written_whole(tmp_path):
    out, rows = _old_pair(tmp_path)
    write_embeddings(out, ["x", "y", "z"], np.zeros((3, 4), np.float32), "text")
    assert np.load(out).shape == (3, 4) and rows.read_text().splitlines() == ["x", "y", "z"]
    _consistent_or_gone(out, rows)


def test_writing_a_large_npy_does_not_hold_copies_of_the_matrix(tmp_path):
    """The .npy was serialised in memory (a BytesIO, then its bytes) after an astype copy: 2-3 matrices' worth
    more than the embeddings themselves, for a file that is written a buffer at a time now."""
    import tracemalloc

    emb = np.random.default_rng(0).random((200_000, 64), dtype=np.float32)  # 51 MB
    tracemalloc.start()
    try:
        write_embeddings(tmp_path / "big.npy", [str(i) for i in range(len(emb))], emb, "text")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 0.6 * emb.nbytes, peak / emb.nbytes
    assert np.array_equal(np.load(tmp_path / "big.npy"), emb)
