"""Outputs at size and on a full disk (session 51): embed's parquet column over the matrix's own memory, a full
disk named with the file; results.md and results.json of one run or neither."""
import errno
import json
import os
from pathlib import Path

import numpy as np
import pytest

from kizuna.apps import embed
from kizuna.eval import suite
from kizuna.models import checkpoint

pq = pytest.importorskip("pyarrow.parquet")


def test_parquet_embeddings_are_written_from_the_matrix_itself_in_row_groups(tmp_path, monkeypatch):
    emb = np.random.default_rng(0).random((50, 8), dtype=np.float32)
    seen = {}
    write_table = pq.write_table

    def capture(table, where, **kw):
        seen["table"], seen["kw"] = table, kw
        write_table(table, where, **kw)

    monkeypatch.setattr(embed, "PARQUET_ROWS", 16)
    monkeypatch.setattr(pq, "write_table", capture)
    embed.write_embeddings(tmp_path / "e.parquet", [f"{i}.png" for i in range(50)], emb, "path")
    column = seen["table"].column("embedding")
    assert column.num_chunks == 4  # 16 + 16 + 16 + 2 rows
    start, end = emb.ctypes.data, emb.ctypes.data + emb.nbytes
    for chunk in column.chunks:  # no copy: list(emb) was converted into a new list<float> column
        assert start <= chunk.values.buffers()[1].address < end
    assert seen["kw"]["row_group_size"] == 16 and seen["kw"]["use_dictionary"] == ["path"]
    back = pq.read_table(tmp_path / "e.parquet")
    assert back.column("path").to_pylist() == [f"{i}.png" for i in range(50)]
    np.testing.assert_array_equal(np.array(back.column("embedding").to_pylist(), dtype=np.float32), emb)
    assert pq.ParquetFile(tmp_path / "e.parquet").num_row_groups == 4


def test_a_full_disk_under_a_parquet_is_said_with_the_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    out = tmp_path / "e.parquet"
    out.write_bytes(b"the earlier file")

    def full(table, where, **kw):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pq, "write_table", full)
    with pytest.raises(OSError, match=r"could not write .*e\.parquet \(No space left on device\); the file there "
                                      "before is unchanged") as caught:
        embed.write_embeddings(out, ["a.png"], np.ones((1, 4), np.float32), "path")
    assert caught.value.errno == errno.ENOSPC
    assert out.read_bytes() == b"the earlier file" and os.listdir(tmp_path) == ["e.parquet"]


def test_a_full_disk_at_results_json_leaves_both_earlier_files(tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.md").write_text("# earlier\n")
    (out / "results.json").write_text("[]\n")
    records = [{"model": "x", "pretrained": "", "dataset": "d", "task": "zeroshot", "metrics": {"acc1": 0.5},
                "details": {}}]
    filled_temp = checkpoint.filled_temp

    def full_at_json(path, write_fn):
        if Path(path).name == "results.json":
            raise OSError(errno.ENOSPC, "No space left on device")
        return filled_temp(path, write_fn)

    monkeypatch.setattr(checkpoint, "filled_temp", full_at_json)
    with pytest.raises(OSError):
        suite.write_results(records, out)
    assert (out / "results.md").read_text() == "# earlier\n"  # (this run's, beside the earlier results.json)
    assert (out / "results.json").read_text() == "[]\n"
    assert sorted(os.listdir(out)) == ["results.json", "results.md"]  # no temp file left
    monkeypatch.setattr(checkpoint, "filled_temp", filled_temp)
    suite.write_results(records, out)
    assert json.loads((out / "results.json").read_text())[0]["metrics"]["acc1"] == 0.5
    assert "earlier" not in (out / "results.md").read_text()


def test_parquet_embeddings_must_be_a_matrix(tmp_path):
    with pytest.raises(ValueError, match=r"must be a matrix \[rows, dimensions\], got shape \(4,\)"):
        embed.write_embeddings(tmp_path / "e.parquet", ["a.png"], np.ones(4, np.float32), "path")
