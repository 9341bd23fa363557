"""Round-7 mutation findings in the evaluation code: retrieval's unit-length test of the features it ranks, the
linear probe's label range, and where a CSV's captionless row between grouped images falls under --max-samples.
Each test checks what a caller gets (the recalls, a refusal, the skip report) against a value worked out by hand,
on a few hand-made features or a four-image CSV."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image


def test_rows_of_norm_095_are_normalised_before_ranking():
    """retrieval_from_features ranks by cosine: rows 5% short of unit length are normalised, not ranked by their
    dot products. Image 0's own caption (norm 0.95, cosine 1) must outrank image 1's caption (norm 1.05, cosine
    0.99), so image-to-text R@1 is 1.0; by dot products (0.95 < 1.04) it was 0.5. Kills R04 (the unit-length
    tolerance 1e-3 widened to 1e-1: rows of norm 0.95 passed as unit)."""
    from kizuna.eval.retrieval import retrieval_from_features

    images = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    own = torch.tensor([0.95, 0.0, 0.0])
    near = torch.tensor([1.0, 0.15, 0.0])
    texts = torch.stack([own, 1.05 * near / near.norm()])
    m = retrieval_from_features(images, texts, [0, 1]).metrics
    assert m["image_to_text_R@1"] == 1.0
    unit = retrieval_from_features(images, texts / texts.norm(dim=1, keepdim=True), [0, 1]).metrics
    from kizuna.apps.common import json_safe

    assert json_safe(m) == json_safe(unit)  # (R@5 and R@10 of 2 candidates: NaN, which equals nothing)


def test_a_negative_test_label_is_refused_by_the_linear_probe():
    """linear_probe_from_features: a label of -1 (a missing label read from a file) in y_test is refused before
    any fit, not scored as a wrong prediction. Kills P02 (only labels past the classes refused)."""
    from kizuna.eval.linear_probe import linear_probe_from_features

    x = np.eye(4, dtype=np.float32)
    with pytest.raises(ValueError, match=r"y_test: labels must be in 0\.\.1 for 2 classes, got -1\.\.1"):
        linear_probe_from_features(x, [0, 1, 0, 1], x, [0, -1, 1, 0], 2)
    with pytest.raises(ValueError, match=r"y_train: labels must be in 0\.\.1 for 2 classes, got -1\.\.1"):
        linear_probe_from_features(x, [0, -1, 1, 1], x, [0, 1, 1, 0], 2)


def test_a_captionless_row_between_grouped_images_is_counted_within_max_samples(tmp_path):
    """A CSV of one row per caption (a.jpg twice) with an empty caption for c.jpg between a.jpg's rows and
    b.jpg's: grouped, the samples are a, b, d, and the rejected row lies after a and before b. With
    --max-samples 2 (a and b) it is among the rows read, so the skip report counts it. Kills G02 (searchsorted
    side="right": placed after b, outside the two) and G03 (the ungrouped row position 2 kept: outside too)."""
    from kizuna.eval.datasets import load_dataset

    for n in "abcd":
        Image.new("RGB", (8, 8), (10, 20, 30)).save(tmp_path / f"{n}.jpg")
    (tmp_path / "pairs.csv").write_text(
        "filepath,title\na.jpg,cap a1\na.jpg,cap a2\nc.jpg,\nb.jpg,cap b\nd.jpg,cap d\n")
    ds = load_dataset(tmp_path / "pairs.csv", max_samples=2)
    assert ds.skips.as_dict() == {"empty_caption": 1}
    assert "row 4 (c.jpg)" in ds.skips.report()
    full = load_dataset(tmp_path / "pairs.csv")
    assert full.skips.as_dict() == {"empty_caption": 1}
    one = load_dataset(tmp_path / "pairs.csv", max_samples=1)  # a only: the row after it is not read
    assert not one.skips.as_dict()
