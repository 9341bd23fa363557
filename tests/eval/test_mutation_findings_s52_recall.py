"""Mutation findings (session 52): R@K is NaN where the direction's candidates are fewer than K: texts are
image->text's candidates, images text->image's (not the other way round)."""
import math

import torch

from kizuna.eval.retrieval import retrieval_metrics


def test_each_direction_counts_its_own_candidates():
    i2t = torch.tensor([0, 1, 2])  # 3 images, each ranked among 20 texts
    t2i = torch.tensor([0] * 20)  # 20 texts, each ranked among 3 images
    m = retrieval_metrics(i2t, t2i, num_images=3, num_texts=20)
    assert m["image_to_text_R@10"] == 1.0 and m["image_to_text_R@5"] == 1.0
    assert math.isnan(m["text_to_image_R@5"]) and math.isnan(m["text_to_image_R@10"])
    assert m["text_to_image_R@1"] == 1.0


def test_no_features_or_not_a_matrix_are_no_zero_rows():
    from kizuna.eval.encode import check_no_zero_rows

    check_no_zero_rows(torch.zeros(0, 4), None, "image_features")
    check_no_zero_rows(torch.zeros(4), None, "image_features")  # (not rows: refused elsewhere, as before)
