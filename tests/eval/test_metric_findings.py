"""Metric definitions at their edges, found by comparing with sklearn and CLIP_benchmark: NaN features through the
Python API, top-k with k of 0 or 1, and a few-shot draw that leaves nothing to choose the penalty on."""
import pytest
import torch

from kizuna.eval.classification import classify_features, classify_scores
from kizuna.eval.encode import NonFiniteFeatures
from kizuna.eval.linear_probe import linear_probe_from_features
from kizuna.eval.retrieval import full_matrix_ranks, retrieval_from_features, retrieval_ranks


def _unrelated(n_images=40, per_image=5, dim=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    img = torch.nn.functional.normalize(torch.randn(n_images, dim, generator=g), dim=1)
    txt = torch.nn.functional.normalize(torch.randn(n_images * per_image, dim, generator=g), dim=1)
    return img, txt, torch.arange(n_images).repeat_interleave(per_image)


@pytest.mark.parametrize("rank", [retrieval_ranks, full_matrix_ranks])
def test_nan_image_features_are_refused_not_ranked_first(rank):
    # a NaN similarity compares neither above nor equal: the chunked ranks put a NaN image's caption at rank 0
    # (R@1 1.0 with every image NaN) while the full-matrix reference did not
    img, txt, t2i = _unrelated()
    img[:4] = float("nan")
    with pytest.raises(NonFiniteFeatures, match="images"):
        rank(img, txt, t2i)
    img, txt, t2i = _unrelated()
    txt[7] = float("inf")
    with pytest.raises(NonFiniteFeatures, match="texts"):
        rank(img, txt, t2i)


def test_retrieval_from_features_refuses_nan_in_usable_rows_only():
    img, txt, t2i = _unrelated()
    clean = retrieval_from_features(img, txt, t2i).metrics
    marked = img.clone()
    marked[3] = float("nan")  # an image the caller marked unusable may hold anything
    valid = torch.ones(len(img), dtype=torch.bool)
    valid[3] = False
    res = retrieval_from_features(marked, txt, t2i, image_valid=valid)
    assert res.num_images == len(img) - 1
    assert res.metrics["image_to_text_R@1"] <= clean["image_to_text_R@1"] + 0.1  # unrelated features: near chance
    with pytest.raises(NonFiniteFeatures):
        retrieval_from_features(marked, txt, t2i)


def test_nan_class_scores_are_refused_unless_the_row_is_invalid():
    scores = torch.randn(6, 3)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    scores[2] = float("nan")  # predicted class 0 silently before
    with pytest.raises(NonFiniteFeatures, match="class scores"):
        classify_scores(scores, labels, ["a", "b", "c"])
    valid = torch.ones(6, dtype=torch.bool)
    valid[2] = False
    res = classify_scores(scores, labels, ["a", "b", "c"], valid=valid)
    assert res.n == 5
    with pytest.raises(NonFiniteFeatures):
        classify_features(torch.full((2, 4), float("nan")), [0, 1], torch.eye(4)[:2], ["a", "b"])


def _three_of_three():
    scores = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.5, 0.1, 0.4]])
    return scores, torch.tensor([0, 1, 2])  # top-1 right for 2 of 3


def test_k1_reports_top1_and_summarises():
    scores, labels = _three_of_three()
    res = classify_scores(scores, labels, ["a", "b", "c"], k=1)
    assert res.metrics["acc1"] == pytest.approx(2 / 3)
    assert not any(key.startswith("acc") and key != "acc1" for key in res.metrics)
    text = res.summary()  # raised KeyError 'acc5'
    assert "top-1 66.67" in text and "top-5" not in text


def test_k2_is_named_acc2_and_top1_is_unchanged():
    scores, labels = _three_of_three()
    res = classify_scores(scores, labels, ["a", "b", "c"], k=2)
    assert res.metrics["acc1"] == pytest.approx(2 / 3)
    assert res.metrics["acc2"] == pytest.approx(1.0)
    assert "top-2 100.00" in res.summary()


@pytest.mark.parametrize("k", [0, -1, 1.5, True])
def test_k_below_one_or_not_whole_is_refused(k):
    # k=0 ranked no class: every prediction -1, wrapped into the last column of the confusion matrix, acc1 0
    scores, labels = _three_of_three()
    with pytest.raises(ValueError, match="k must be a whole number >= 1"):
        classify_scores(scores, labels, ["a", "b", "c"], k=k)


def test_fewshot_without_images_left_for_validation_says_the_penalty_was_fixed():
    g = torch.Generator().manual_seed(0)
    centres = torch.nn.functional.normalize(torch.randn(3, 8, generator=g), dim=1)
    y_train = torch.tensor([0, 0, 1, 1, 2, 2])  # exactly 2 per class: 2-shot leaves none for the draw
    x_train = centres[y_train] + 0.05 * torch.randn(6, 8, generator=g)
    y_test = torch.arange(3).repeat(4)
    x_test = centres[y_test] + 0.05 * torch.randn(12, 8, generator=g)
    res = linear_probe_from_features(x_train, y_train, x_test, y_test, 3, few_shot=(1, 2), seeds=2, val_fraction=0.5)
    fixed = [n for n in res.notes if "penalty is fixed" in n]
    assert len(fixed) == 1 and fixed[0].startswith("2-shot")  # 1-shot had one image per class left to sweep on
    assert "fewshot_2_acc1_mean" in res.metrics
