"""Mutation finding (session 51) on ``evaluate_robustness``' inputs: one corruption named as a string is that
corruption, not its letters."""
import pytest

import kizuna
from _evalhelpers import classification_wds
from kizuna.eval import probes
from kizuna.eval.datasets import load_dataset


@pytest.fixture(scope="module")
def tiny_cifar(tmp_path_factory):
    root = classification_wds(tmp_path_factory.mktemp("c"), n=8)
    model = kizuna.create_model("ViT-mu-8").eval()
    return model, kizuna.get_tokenizer(model), load_dataset(str(root), "test")


def test_one_corruption_given_as_a_string_is_that_corruption(tiny_cifar):
    """``corruptions="jpeg"`` (as ``severities=[1]`` names one level): read letter by letter it was refused as the
    unknown corruptions 'j', 'p', 'e', 'g'."""
    model, tok, ds = tiny_cifar
    result = probes.evaluate_robustness(model, tok, ds, corruptions="jpeg", severities=[1], progress=False,
                                        templates=["a photo of a {c}."])
    assert [(r["corruption"], r["severity"]) for r in result.rows] == [("jpeg", 1)]
