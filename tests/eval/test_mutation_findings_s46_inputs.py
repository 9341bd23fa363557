"""Mutation testing of stop 46's evaluation-API checks (classify_scores' class-name count, load_dataset's
max_samples, retrieval_ranks' chunk sizes): halves of a check no test exercised."""
import numpy as np
import pytest
import torch
from _evalhelpers import classification_wds

from kizuna.eval.classification import classify_scores
from kizuna.eval.datasets import load_dataset
from kizuna.eval.retrieval import retrieval_ranks


def test_more_class_names_than_scored_classes_are_refused_too():
    """An extra name shifted none of the columns but listed a class never scored (0% in the table)."""
    with pytest.raises(ValueError, match="2 classes scored but 3 class names"):
        classify_scores(torch.eye(2), [0, 1], ["a", "b", "c"])


def test_true_is_no_sample_cap(tmp_path):
    """A bool is an int to isinstance: max_samples=True read one sample."""
    root = classification_wds(tmp_path / "ds", n=6, shards=1)
    with pytest.raises(ValueError, match="max_samples must be a whole number >= 0"):
        load_dataset(root, split="test", max_samples=True)
    assert len(load_dataset(root, split="test", max_samples=np.int64(2))) == 2


@pytest.mark.parametrize("chunks", [{"query_chunk": True}, {"key_chunk": 2.0}])
def test_retrieval_chunks_are_whole_numbers(chunks):
    f = torch.nn.functional.normalize(torch.randn(2, 4), dim=1)
    with pytest.raises(ValueError, match="must be a whole number >= 1"):
        retrieval_ranks(f, f, [0, 1], **chunks)
    i2t, t2i = retrieval_ranks(f, f, [0, 1], query_chunk=1, key_chunk=1)
    assert i2t.shape[0] == t2i.shape[0] == 2


def test_a_class_cache_dir_under_home_is_the_home_folder(tiny, tmp_path, monkeypatch):
    """class_embeddings(cache_dir="~/cache") called directly (not through a suite, which expands it first): the
    cache went into a folder named "~" in the working directory."""
    from kizuna.eval.classification import class_embeddings

    model, tokenizer = tiny
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    class_embeddings(model, tokenizer, ["cat", "dog"], ["a {c}."], cache_dir="~/cache")
    assert list((tmp_path / "home" / "cache").glob("classes-*.pt"))
    assert not (tmp_path / "~").exists()
