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
    out, rows = _old_pair(tmp_path)
    real = Path.write_bytes

    def full_for_the_rows(self, data):
        if self.name.startswith(".e.txt."):  # the row list's temp file
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", full_for_the_rows)
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
