"""Mutation findings (session 51) on the evaluators' inputs: ``classify_scores``' keys (exactly one per row, or none)
and the linear probe's class count."""
import pytest
import torch

from kizuna.eval.classification import classify_features


def _unit(n, d, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(n, d, generator=g), dim=-1)


def test_keys_one_short_are_refused():
    """Five keys for six rows (a header line read as a key, or one image dropped from the list) paired every
    prediction after the gap with the next image's name in the predictions table: refused as two for six are."""
    feats, weights, labels = _unit(6, 4, 6), _unit(3, 4, 7), [0, 1, 2, 0, 1, 2]
    with pytest.raises(ValueError, match="5 keys for 6 rows of scores"):
        classify_features(feats, labels, weights, list("abc"), keys=list("uvwxy"))


@pytest.mark.parametrize("num_classes", [0, -1])
def test_a_linear_probe_of_no_classes_says_it_needs_two(num_classes):
    """0 (or -1) classes is a whole number, if no usable one: the message says a probe needs two classes to choose
    between, not that it "must be a whole number", which it is."""
    from kizuna.eval.linear_probe import linear_probe_from_features

    x, y = _unit(30, 4, 3), torch.arange(30) % 3
    with pytest.raises(ValueError, match=f"num_classes {num_classes}: a linear probe needs at least two classes"):
        linear_probe_from_features(x, y, x, y, num_classes, few_shot=(), grid=(1e-3,))
