"""What the training loop feeds the model, measured (a review of 2026-12-06): a CSV of one row per caption."""
from __future__ import annotations

import csv
import sys
from pathlib import Path

from kizuna.train.config import make_config
from kizuna.train.data import build_dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
from _shards import color_of, image_bytes, write_tar  # noqa: E402


def test_a_csvs_rows_of_one_image_are_one_training_sample_with_its_captions(tmp_path):
    """Flickr's five rows per image were five samples in training (an epoch five passes; batches held an image
    several times, its own captions scored as negatives) but one image with five captions in evaluation."""
    rows = [["filepath", "title"]]
    for i in range(4):
        (tmp_path / f"{i}.jpg").write_bytes(image_bytes(color_of(i)))
        rows += [[f"{i}.jpg" if k % 2 else f"./{i}.jpg", f"caption {k} of image {i}"] for k in range(5)]
    with open(tmp_path / "train.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    write_tar(tmp_path / "more.tar", [("t0.jpg", image_bytes(color_of(9))), ("t0.txt", b"a tar caption")])
    cfg = make_config(data=f"{tmp_path / 'train.csv'}::{tmp_path / 'more.tar'}", out=str(tmp_path / "run"))
    dataset, captions = build_dataset(cfg, {"image_size": 16}, train=True)
    index = dataset.index
    assert len(index) == 5  # four images (./x.jpg and x.jpg are one file) and the tar's sample
    assert [len(c) for c in index.captions] == [5, 5, 5, 5, 1]
    assert index.captions[2] == tuple(f"caption {k} of image 2" for k in range(5))
    assert len(captions(100)) == 21  # the tokenizer's training text: every caption once
