"""The evaluators called with what their hints admit (session 51): a column of labels, single-use iterables,
whole numbers as numpy ints, numpy features, counts that are not counts."""
import numpy as np
import pytest
import torch

import kizuna
from _evalhelpers import classification_wds
from kizuna.eval import probes
from kizuna.eval.classification import classify_features
from kizuna.eval.datasets import load_dataset
from kizuna.eval.linear_probe import fit_logistic_regression, linear_probe_from_features
from kizuna.eval.retrieval import full_matrix_ranks, retrieval_ranks


def _unit(n, d, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(n, d, generator=g), dim=1)


def test_a_column_of_labels_scores_as_the_labels_and_other_shapes_are_refused():
    feats, weights = _unit(20, 8, 0), _unit(4, 8, 1)
    labels = torch.arange(20) % 4
    flat = classify_features(feats, labels, weights, list("abcd"))
    column = classify_features(feats, labels[:, None], weights, list("abcd"))  # broadcast to 20 x 20 before
    assert column.metrics["acc1"] == flat.metrics["acc1"]
    assert column.metrics["mean_per_class_recall"] == flat.metrics["mean_per_class_recall"]
    assert int(column.confusion.sum()) == 20
    with pytest.raises(ValueError, match=r"shape \[N\].*\(4, 5\)"):
        classify_features(feats, labels.reshape(4, 5), weights, list("abcd"))


def test_the_linear_probe_takes_a_column_of_labels_for_fit_accuracy_and_report():
    x, y = _unit(60, 6, 2), torch.arange(60) % 3
    x = x + torch.nn.functional.one_hot(y, 6).float()  # separable
    probe = fit_logistic_regression(x, y, 3, 1e-3)
    assert probe.accuracy(x, y[:, None]) == probe.accuracy(x, y) > 0.9
    column_fit = fit_logistic_regression(x, y[:, None].numpy(), 3, 1e-3)
    torch.testing.assert_close(column_fit.weight, probe.weight)
    flat = linear_probe_from_features(x, y, x, y, 3, few_shot=(), grid=(1e-3,))
    column = linear_probe_from_features(x, y[:, None], x, y[:, None].numpy(), 3, few_shot=(), grid=(1e-3,))
    assert column.metrics["lp_acc1"] == flat.metrics["lp_acc1"] > 0.9


def test_linear_probe_num_classes_must_be_a_whole_number_and_takes_numpy_ints():
    x, y = _unit(30, 4, 3), torch.arange(30) % 3
    with pytest.raises(ValueError, match="num_classes must be a whole number, got 3.0"):
        linear_probe_from_features(x, y, x, y, 3.0, few_shot=(), grid=(1e-3,))
    result = linear_probe_from_features(x, y, x, y, np.int64(3), few_shot=(), grid=(1e-3,))
    assert result.num_classes == 3 and type(result.num_classes) is int


def test_full_matrix_ranks_takes_numpy_features_as_retrieval_ranks_does():
    img, txt = _unit(5, 8, 4), _unit(10, 8, 5)
    t2i = [i // 2 for i in range(10)]
    want = full_matrix_ranks(img, txt, t2i)
    got = full_matrix_ranks(img.numpy(), txt.numpy(), np.array(t2i))
    for a, b in zip(got, want):
        assert torch.equal(a, b)
    assert torch.equal(retrieval_ranks(img.numpy(), txt.numpy(), t2i)[0], want[0])


@pytest.fixture(scope="module")
def tiny_cifar(tmp_path_factory):
    root = classification_wds(tmp_path_factory.mktemp("c"), n=8)
    model = kizuna.create_model("ViT-mu-8").eval()
    return model, kizuna.get_tokenizer(model), load_dataset(str(root), "test")


def test_robustness_reads_a_generator_of_corruptions_once(tiny_cifar):
    model, tok, ds = tiny_cifar
    result = probes.evaluate_robustness(model, tok, ds, corruptions=(c for c in ("gaussian_noise", "jpeg")),
                                        severities=iter([1]), progress=False, templates=["a photo of a {c}."])
    assert [(r["corruption"], r["severity"]) for r in result.rows] == [("gaussian_noise", 1), ("jpeg", 1)]


@pytest.mark.parametrize("severities", [[1.5], [True], ["1"], [0], [6]])
def test_robustness_refuses_a_severity_before_the_clean_pass(tiny_cifar, monkeypatch, severities):
    model, tok, ds = tiny_cifar

    def encoded(*a, **k):
        raise AssertionError("the clean pass ran before the severities were checked")

    monkeypatch.setattr(probes, "encode_images", encoded)
    with pytest.raises(ValueError, match="severities are distinct levels 1..5"):
        probes.evaluate_robustness(model, tok, ds, corruptions=["jpeg"], severities=severities, progress=False)


@pytest.mark.parametrize("batch_size", [0, -1, 2.0])
def test_an_encoder_batch_size_that_is_no_count_is_named(tiny_cifar, batch_size):
    model, tok, ds = tiny_cifar
    from kizuna.eval.classification import evaluate_zeroshot

    with pytest.raises(ValueError, match="batch_size must be a whole number >= 1"):
        evaluate_zeroshot(model, tok, ds, batch_size=batch_size, progress=False, templates=["a {c}."])


def test_masks_and_keys_of_another_length_are_named():
    from kizuna.eval.retrieval import retrieval_from_features

    feats, weights, labels = _unit(6, 4, 6), _unit(3, 4, 7), [0, 1, 2, 0, 1, 2]
    with pytest.raises(ValueError, match=r"valid has shape \(4,\) for 6 rows"):
        classify_features(feats, labels, weights, list("abc"), valid=[True] * 4)
    with pytest.raises(ValueError, match="2 keys for 6 rows of scores"):
        classify_features(feats, labels, weights, list("abc"), keys=["a", "b"])
    assert classify_features(feats, labels, weights, list("abc"), keys=list("uvwxyz")).keys == list("uvwxyz")
    img, txt = _unit(3, 4, 8), _unit(6, 4, 9)
    with pytest.raises(ValueError, match=r"image_valid has shape \(2,\) for 3 rows"):
        retrieval_from_features(img, txt, [0, 0, 1, 1, 2, 2], image_valid=[True, True])
    with pytest.raises(ValueError, match=r"text_valid has shape \(7,\) for 6 rows"):
        retrieval_from_features(img, txt, [0, 0, 1, 1, 2, 2], text_valid=[True] * 7)


def test_keys_as_a_generator_and_masks_as_a_column_are_read():
    feats, weights, labels = _unit(4, 4, 10), _unit(2, 4, 11), [0, 1, 0, 1]
    result = classify_features(feats, labels, weights, ["a", "b"], keys=(f"k{i}" for i in range(4)),
                               valid=torch.tensor([[True], [False], [True], [True]]))
    assert result.keys == ["k0", "k1", "k2", "k3"] and result.valid.tolist() == [True, False, True, True]


def test_one_corruption_given_as_a_string_is_that_corruption(tiny_cifar):
    """``corruptions="jpeg"`` (as ``severities=[1]`` names one level): read letter by letter it was refused as the
    unknown corruptions 'j', 'p', 'e', 'g'."""
    model, tok, ds = tiny_cifar
    result = probes.evaluate_robustness(model, tok, ds, corruptions="jpeg", severities=[1], progress=False,
                                        templates=["a photo of a {c}."])
    assert [(r["corruption"], r["severity"]) for r in result.rows] == [("jpeg", 1)]
