"""Mutation-testing round (stop 49): the evaluation functions' argument checks (bools, masks of other dtypes,
labels past int64's reach) and corrupt()'s severity."""
import numpy as np
import pytest
import torch
from PIL import Image

from kizuna.eval.classification import classify_features, classify_scores
from kizuna.eval.encode import as_tensor
from kizuna.eval.linear_probe import linear_probe_from_features
from kizuna.eval.probes import corrupt
from kizuna.eval.retrieval import retrieval_from_features


def _unit(n, d, seed):
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(seed))
    return torch.nn.functional.normalize(x, dim=1)


def _probe_data():
    x, y = np.random.default_rng(0).normal(size=(30, 4)), np.arange(30) % 3
    return x, y


def test_as_tensor_converts_a_tensor_to_the_asked_dtype():
    assert as_tensor(torch.tensor([1, 0]), "m", torch.bool).dtype == torch.bool
    assert as_tensor(np.array([1, 0]), "m", torch.bool).dtype == torch.bool
    t = torch.tensor([1.0])
    assert as_tensor(t, "m") is t


def test_a_mask_of_ones_and_zeros_is_read_as_a_mask():
    """A 0/1 mask (ints) is a mask, not row numbers: as a long tensor it indexed rows 1, 1, 0."""
    img, cls, labels = _unit(6, 8, 0), _unit(3, 8, 1), [i % 3 for i in range(6)]
    want = classify_features(img, labels, cls, ["a", "b", "c"], valid=torch.tensor([True] * 5 + [False]), k=2).metrics
    for valid in (np.array([1] * 5 + [0]), torch.tensor([1] * 5 + [0])):
        assert classify_features(img, labels, cls, ["a", "b", "c"], valid=valid, k=2).metrics == want
    txt, t2i = _unit(12, 8, 2), [i // 2 for i in range(12)]
    mask = [True] * 5 + [False]
    want = retrieval_from_features(img, txt, t2i, image_valid=torch.tensor(mask)).metrics
    from kizuna.apps.common import json_safe  # (R@10 of 5 images: NaN, which equals nothing)

    assert json_safe(retrieval_from_features(img, txt, t2i, image_valid=torch.tensor(mask).int()).metrics) == \
        json_safe(want)
    tmask = [True] * 11 + [False]
    want = retrieval_from_features(img, txt, t2i, text_valid=torch.tensor(tmask)).metrics
    assert json_safe(retrieval_from_features(img, txt, t2i, text_valid=np.array(tmask, dtype=np.int64)).metrics) \
        == json_safe(want)


def test_classify_scores_reads_a_mask_of_ones_and_zeros_as_a_mask():
    scores = torch.eye(4) + 0.01  # every row's own class first: all right
    for valid in (np.array([1, 1, 1, 0]), [1, 1, 1, 0]):
        assert classify_scores(scores, [0, 1, 2, 3], list("abcd"), valid=valid, k=2).metrics["acc1"] == 1.0
    # the scores as an array too (np.load of saved logits)
    assert classify_scores(scores.numpy(), [0, 1, 2, 3], list("abcd"), k=2).metrics["acc1"] == 1.0


def test_a_label_between_2_62_and_int64s_end_is_named_as_itself():
    """1e19 is past int64 (9.2e18): cast, it wrapped to a negative class."""
    with pytest.raises(ValueError, match="got 1e\\+19"):
        classify_scores(torch.randn(3, 3), np.array([0, 1, 1e19]), ["a", "b", "c"])
    x, y = _probe_data()
    with pytest.raises(ValueError, match="got 1e\\+19"):
        linear_probe_from_features(x, np.where(y == 2, 1e19, y.astype(float)), x, y, 3, few_shot=())
    with pytest.raises(ValueError, match="got 1e\\+20"):
        linear_probe_from_features(x, np.where(y == 2, 1e20, y.astype(float)), x, y, 3, few_shot=())


def test_bools_are_refused_as_seeds_and_shots():
    x, y = _probe_data()
    with pytest.raises(ValueError, match="seeds"):
        linear_probe_from_features(x, y, x, y, 3, few_shot=(1,), seeds=True)
    with pytest.raises(ValueError, match="few_shot"):
        linear_probe_from_features(x, y, x, y, 3, few_shot=(True,), seeds=1)


def test_train_features_and_labels_of_different_lengths_are_named():
    x, y = _probe_data()
    with pytest.raises(ValueError, match="x_train has 30 rows but y_train has 20"):
        linear_probe_from_features(x, y[:20], x, y, 3, few_shot=())


def test_a_bool_severity_is_refused():
    with pytest.raises(ValueError, match="whole number"):
        corrupt(Image.new("RGB", (8, 8)), "contrast", True)


def test_a_fitted_probe_takes_numpy_everywhere_and_checks_lengths():
    from kizuna.eval.linear_probe import fit_logistic_regression

    x, y = _probe_data()
    probe = fit_logistic_regression(x, y, 3, l2=1e-3)  # numpy features, as np.load gives them
    want = fit_logistic_regression(torch.as_tensor(x), y, 3, l2=1e-3)
    assert torch.equal(probe.weight, want.weight)
    assert torch.equal(probe.predict(x), probe.predict(torch.as_tensor(x)))
    with pytest.raises(ValueError, match="x has 10 rows but y has 30"):
        probe.accuracy(x[:10], y)


def test_zeroshot_classnames_as_one_string_are_refused():
    import kizuna
    from kizuna.eval.zeroshot import ZeroShotClassifier

    model = kizuna.create_model("ViT-mu-8")
    with pytest.raises(TypeError, match="wrap it"):
        ZeroShotClassifier(model, kizuna.get_tokenizer(model), "cat")


def test_labels_as_strings_are_refused_by_the_probes():
    """"0", "1", "2" read from a text column are not class indices (numpy casts them to 0, 1, 2 without a word)."""
    from kizuna.eval.linear_probe import fit_logistic_regression

    x, y = _probe_data()
    with pytest.raises(ValueError, match="class indices \\(integers\\)"):
        fit_logistic_regression(x, y.astype(str), 3, l2=1e-3)
    with pytest.raises(ValueError, match="class indices \\(integers\\)"):
        linear_probe_from_features(x, y.astype(str), x, y, 3, few_shot=())
