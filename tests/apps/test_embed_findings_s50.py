"""The .txt beside `kizuna embed`'s .npy names each row once (session 50): a line break inside a name was written
as a space, so files named "a b.png", "a\\nb.png" and "a\\u2028b.png" were three rows named "a b.png", two of them
the name of another file's row."""
from __future__ import annotations

import numpy as np
from PIL import Image

import kizuna
from kizuna.apps.embed import embed_images, write_embeddings


def test_names_with_line_breaks_stay_distinct_and_one_line_each(tmp_path):
    names = ["a b.png", "a\nb.png", "a\u2028b.png", "a\x85b", "a\r\nb", "c\\d"]
    write_embeddings(tmp_path / "e.npy", names, np.eye(6, 3, dtype=np.float32), "path")
    lines = (tmp_path / "e.txt").read_bytes().decode("utf-8").split("\n")[:-1]
    assert len(lines) == len(set(lines)) == 6
    assert lines == ["a b.png", "a\\nb.png", "a\\u2028b.png", "a\\x85b", "a\\r\\nb", "c\\d"]
    assert (tmp_path / "e.txt").read_text(encoding="utf-8").splitlines() == lines  # one line a row, for any reader


def test_embedded_files_named_alike_but_for_a_line_break(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, name in enumerate(["a b.png", "a\nb.png", "a\u2028b.png"]):
        Image.new("RGB", (32, 32), (80 * i, 40, 200 - 60 * i)).save(folder / name)
    model = kizuna.create_model("ViT-mu-8")
    names, emb, _ = embed_images(model, folder, batch_size=2, workers=0, progress=False)
    write_embeddings(tmp_path / "e.npy", names, emb, "path")
    rows = (tmp_path / "e.txt").read_text(encoding="utf-8").splitlines()
    assert len(set(rows)) == 3 and sum(row.endswith("a b.png") for row in rows) == 1
