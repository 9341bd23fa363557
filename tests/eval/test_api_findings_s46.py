"""The public evaluation API against its docstrings (stop 46): one-class datasets scored 100%, a boolean mask read
as positions 0 and 1, class names of another count than the scores' classes, empty inputs of the wrong shape,
chunk sizes and sample caps that meant something else."""
import numpy as np
import pytest
import torch
from _evalhelpers import classification_wds

from kizuna.eval.classification import classify_scores
from kizuna.eval.datasets import DatasetError, load_dataset
from kizuna.eval.linear_probe import evaluate_linear_probe, linear_probe_from_features
from kizuna.eval.probes import evaluate_robustness
from kizuna.eval.retrieval import retrieval_ranks
from kizuna.eval.zeroshot import encode_texts


@pytest.fixture
def one_class(tmp_path):
    root = classification_wds(tmp_path / "one", n=4, split="train", classnames=["cat"], shards=1)
    return classification_wds(root, n=4, split="test", classnames=["cat"], shards=1)


def test_a_linear_probe_of_one_class_is_refused(tiny, one_class):
    """Every probe predicts the one class: 100.00 for random weights, written to results.json."""
    model, _ = tiny
    train, test = load_dataset(one_class, split="train"), load_dataset(one_class, split="test")
    with pytest.raises(DatasetError, match="a linear probe needs at least two"):
        evaluate_linear_probe(model, train, test, few_shot=(1,), seeds=1, progress=False)
    x = torch.randn(6, 4)
    with pytest.raises(ValueError, match="num_classes 1: a linear probe needs at least two"):
        linear_probe_from_features(x, [0] * 6, x, [0] * 6, 1, few_shot=(), seeds=1)


def test_the_robustness_probe_of_one_class_is_refused(tiny, one_class):
    model, tokenizer = tiny
    with pytest.raises(DatasetError, match="the robustness probe needs at least two"):
        evaluate_robustness(model, tokenizer, load_dataset(one_class, split="test"), corruptions=["gaussian_blur"],
                            severities=(1,), progress=False)


def test_subset_takes_a_boolean_mask_as_the_samples_it_marks(tmp_path):
    root = classification_wds(tmp_path / "ds", n=9, shards=1)
    ds = load_dataset(root, split="test")
    picked = ds.subset(ds.labels == 2)
    assert len(picked) == 3 and set(picked.labels.tolist()) == {2}  # (as int64: positions 0 and 1, 9 samples)
    assert np.array_equal(ds.subset(torch.as_tensor(ds.labels == 1)).labels, ds.labels[ds.labels == 1])
    assert np.array_equal(ds.subset([0, 4]).labels, ds.labels[[0, 4]])  # positions as before
    assert len(ds.subset([])) == 0
    with pytest.raises(ValueError, match="one entry per sample"):
        ds.subset(np.ones(3, dtype=bool))
    with pytest.raises(ValueError, match="integer positions or a boolean mask"):
        ds.subset(np.array([0.0, 1.5]))


def test_class_names_must_match_the_scored_classes():
    scores, labels = torch.eye(3), [0, 1, 2]
    with pytest.raises(ValueError, match="3 classes scored but 2 class names"):
        classify_scores(scores, labels, ["a", "b"])  # the third class left the table (or an IndexError in it)
    assert classify_scores(scores, labels, ["a", "b", "c"]).metrics["acc1"] == 1.0


def test_encode_texts_of_no_texts_is_zero_rows_of_the_embedding_width(tiny):
    model, tokenizer = tiny
    assert tuple(encode_texts(model, tokenizer, []).shape) == (0, model.cfg.embed_dim)  # was (0,)


@pytest.mark.parametrize("chunks", [{"query_chunk": 0}, {"key_chunk": 0}, {"query_chunk": -4}])
def test_retrieval_chunks_must_be_positive(chunks):
    f = torch.nn.functional.normalize(torch.randn(2, 4), dim=1)
    with pytest.raises(ValueError, match="must be a whole number >= 1"):  # 0: torch's "step must be nonzero"
        retrieval_ranks(f, f, [0, 1], **chunks)


def test_load_dataset_refuses_a_negative_sample_cap_and_takes_arrays_of_names(tmp_path):
    root = classification_wds(tmp_path / "ds", n=6, shards=1)
    with pytest.raises(ValueError, match="max_samples must be a whole number >= 0"):
        load_dataset(root, split="test", max_samples=-1)  # it meant all
    ds = load_dataset(root, split="test", classnames=np.array(["kitten", "puppy", "auto"]),
                      templates=np.array(["a {c}."]))  # an array was taken for a path (a TypeError)
    assert ds.classnames == ["kitten", "puppy", "auto"] and ds.templates == ["a {c}."]


def test_class_names_without_an_order_are_refused_and_none_is_all(tmp_path):
    """A set of names came out in the hash seed's order while the labels stayed: images scored as another class."""
    root = classification_wds(tmp_path / "ds", n=6, shards=1)
    with pytest.raises(TypeError, match="has no order; pass a list"):
        load_dataset(root, split="test", classnames={"kitten", "puppy", "auto"})
    with pytest.raises(TypeError, match=r"a mapping\): pass list\(d\)"):
        load_dataset(root, split="test", classnames={"kitten": 0, "puppy": 1, "auto": 2})
    ordered = {"kitten": 0, "puppy": 1, "auto": 2}.keys()  # (torchvision's class_to_idx.keys(): in index order)
    assert load_dataset(root, split="test", classnames=ordered).classnames == ["kitten", "puppy", "auto"]
    assert len(load_dataset(root, split="test", max_samples=None)) == 6  # None: all, as the suite passes it


@pytest.mark.parametrize("l2", [1.0, 0.1, 1e-3])
def test_a_probe_of_features_with_a_large_common_part_reaches_the_minimum(l2):
    """A random model's features share most of their direction (cosines 0.9996): a strong penalty's fit stopped
    after one iteration, its gradient already under the tolerance, 71% of its predictions off the minimum's (a
    16-shot lambda and accuracy 3.6 points off scikit-learn's). The bias is not penalised, so shifting every
    feature by one vector moves only the bias: the same weights, the same predictions."""
    from kizuna.eval.linear_probe import fit_logistic_regression

    rng = np.random.default_rng(0)
    small = torch.as_tensor(rng.normal(0, 0.02, (160, 16)))
    y = rng.integers(0, 10, 160)
    common = torch.as_tensor(rng.normal(0, 1, 16))
    common *= 10 / common.norm()  # a common part 100x the spread
    plain = fit_logistic_regression(small, y, 10, l2)
    shifted = fit_logistic_regression(small + common, y, 10, l2)
    assert torch.allclose(shifted.weight, plain.weight, atol=1e-6 * float(plain.weight.abs().max()) + 1e-9)
    assert torch.equal(shifted.predict(small + common), plain.predict(small))
