"""The evaluation functions called from Python with arrays, generators and plain images (stop 49)."""
import random

import numpy as np
import pytest
import torch
from PIL import Image

import kizuna
from kizuna.eval.classification import classify_features
from kizuna.eval.linear_probe import fit_logistic_regression, linear_probe_from_features
from kizuna.eval.probes import corrupt
from kizuna.eval.retrieval import retrieval_from_features, retrieval_ranks
from kizuna.eval.zeroshot import ZeroShotClassifier


def _unit(n, d, seed):
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(seed))
    return torch.nn.functional.normalize(x, dim=1)


def test_features_and_masks_as_numpy_arrays_give_the_tensors_results():
    """np.load of `kizuna embed`'s .npy failed deep inside: "'str' object has no attribute 'type'"."""
    img, cls = _unit(12, 8, 0), _unit(3, 8, 1)
    labels = [i % 3 for i in range(12)]
    valid = np.array([True] * 11 + [False])
    want = classify_features(img, labels, cls, ["a", "b", "c"], valid=torch.as_tensor(valid), k=2).metrics
    got = classify_features(img.numpy(), labels, cls.numpy(), ["a", "b", "c"], valid=valid, k=2).metrics
    assert got == want
    txt, t2i = _unit(24, 8, 2), [i // 2 for i in range(24)]
    want = retrieval_from_features(img, txt, t2i, image_valid=torch.as_tensor(valid)).metrics
    assert retrieval_from_features(img.numpy(), txt.numpy(), t2i, image_valid=valid).metrics == want
    for a, b in zip(retrieval_ranks(img.numpy(), txt.numpy(), t2i), retrieval_ranks(img, txt, t2i)):
        assert torch.equal(a, b)


def test_a_feature_argument_that_is_no_array_is_named():
    with pytest.raises(TypeError, match="image_features"):
        retrieval_ranks({"a": 1}, _unit(2, 4, 0), [0, 0])


def test_linear_probe_inputs_are_checked_up_front():
    x, y = np.random.default_rng(0).normal(size=(60, 4)), np.arange(60) % 3
    with pytest.raises(ValueError, match="x has 50 rows but y has 60"):
        fit_logistic_regression(torch.as_tensor(x[:50]), y, 3, l2=1e-3)
    with pytest.raises(ValueError, match="whole class indices"):
        fit_logistic_regression(torch.as_tensor(x), y + 0.5, 3, l2=1e-3)
    with pytest.raises(ValueError, match="x_test has 60 rows but y_test has 30"):
        linear_probe_from_features(x, y, x, y[:30], 3, few_shot=(1,), seeds=1)
    with pytest.raises(ValueError, match="seeds"):
        linear_probe_from_features(x, y, x, y, 3, few_shot=(1,), seeds=0)
    with pytest.raises(ValueError, match="few_shot"):
        linear_probe_from_features(x, y, x, y, 3, few_shot=(0,), seeds=1)
    # seeds only count the few-shot draws: with none asked for, any value is fine
    assert "lp_acc1" in linear_probe_from_features(x, y, x, y, 3, few_shot=(), seeds=0).metrics
    probe = fit_logistic_regression(torch.as_tensor(x), y, 3, l2=1e-3)
    assert probe.accuracy(x, y) == probe.accuracy(torch.as_tensor(x), torch.as_tensor(y))  # numpy x too
    with pytest.raises(ValueError, match="whole class indices"):
        probe.accuracy(x, y + 0.5)


def test_zeroshot_classifier_takes_a_generator_of_names_and_explains_a_pil_image():
    model = kizuna.create_model("ViT-mu-8")
    clf = ZeroShotClassifier(model, kizuna.get_tokenizer(model), (c for c in ["cat", "dog"]))
    assert clf.classnames == ["cat", "dog"] and clf.weights.shape[0] == 2
    with pytest.raises(TypeError, match="get_preprocess|preprocess"):
        clf.logits(Image.new("RGB", (8, 8)))


def test_corrupt_reads_transparency_as_the_model_does_and_wants_a_whole_severity():
    a = np.zeros((16, 16, 4), np.uint8)  # transparent throughout
    out = np.asarray(corrupt(Image.fromarray(a, "RGBA"), "contrast", 1, random.Random(0)))
    assert out.min() > 200  # onto white, as to_rgb reads it (convert("RGB") gave black)
    with pytest.raises(ValueError, match="whole number"):
        corrupt(Image.new("RGB", (8, 8)), "contrast", 2.0)
