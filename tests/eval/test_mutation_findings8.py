"""Mutation-test findings for the class-embedding cache key and the usable-row paths (session 44): each test pins
one behaviour a hand-made mutant of the changed code broke without any existing test failing."""
from __future__ import annotations

import pytest
import torch

from kizuna.eval.encode import model_fingerprint


def _one_param(values):
    module = torch.nn.Module()
    module.w = torch.nn.Parameter(torch.tensor(values, dtype=torch.float32))
    return module


def _write_through_data(module, values):
    with torch.no_grad():
        module.w.data.copy_(torch.tensor(values, dtype=torch.float32))


def test_fingerprint_sees_two_columns_swapped_through_data():
    """Two input columns exchanged through ``.data`` keep every row's sum: only the column checksum sees it."""
    module = _one_param([[1.0, 2.0], [3.0, 4.0]])
    before = model_fingerprint(module)
    _write_through_data(module, [[2.0, 1.0], [4.0, 3.0]])
    assert model_fingerprint(module) != before


def test_fingerprint_sees_a_change_that_keeps_the_flat_index_weighted_sum():
    """Row and column sums are weighted separately: one checksum over the flattened index missed this write."""
    module = _one_param([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])  # mass at flat 2 and 4
    before = model_fingerprint(module)
    _write_through_data(module, [[0.0, 0.0, 0.0], [2.0, 0.0, 0.0]])  # mass 2 at flat 3: same sum, same flat moment
    assert model_fingerprint(module) != before


def test_fingerprint_sees_a_gelu_switched_to_tanh():
    """nn.GELU's ``approximate`` is part of the structure: the same class with another variant computes otherwise."""
    module = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.GELU())
    before = model_fingerprint(module)
    module[1].approximate = "tanh"
    assert model_fingerprint(module) != before


def test_fingerprint_sees_a_buffer_rewritten_through_data():
    """Buffers are fingerprinted alongside parameters: a buffer written through ``.data`` changed nothing."""
    module = torch.nn.Linear(2, 2)
    module.register_buffer("scale", torch.ones(3))
    before = model_fingerprint(module)
    module.scale.data.mul_(2.0)
    assert model_fingerprint(module) != before


def test_content_hash_covers_the_state_dict_names():
    """The same bytes under another parameter name are another module: the disk cache key hashes the names."""
    from kizuna.eval.encode import content_hash

    a, b = torch.nn.Module(), torch.nn.Module()
    a.register_buffer("alpha", torch.ones(2))
    b.register_buffer("beta", torch.ones(2))
    assert content_hash(a) != content_hash(b)


def _shards(tmp_path, classnames, labels):
    from _evalhelpers import classification_wds

    from kizuna.eval.datasets import load_dataset

    root = classification_wds(tmp_path / "wds", n=len(labels), shards=1, classnames=classnames, labels=labels)
    return load_dataset(root, task="classification")


@pytest.mark.parametrize("shard_names, own, source, pattern", [
    # names given with ``own`` that the model lacks: blamed on ``own_source``, and the remedy is to rename them
    (["car", "dog", "cat"], ["car", "dog", "bird"], "--classnames x.txt",
     r"bird of --classnames x\.txt are not.*name them as the model's classes"),
    # without ``own``: blamed on the split's classnames.txt, and --classnames is the remedy
    (["car", "dog", "bird"], None, "", r"bird of its classnames\.txt are not.*pass --classnames FILE"),
    # a name repeated in the given names: ``own_source`` named, not a classnames.txt never read
    (["car", "dog", "cat"], ["car", "dog", "dog"], "--classnames y.txt", r"--classnames y\.txt repeats dog.*name each "
                                                                         "class once"),
    # a label past the given names: whose names it ran past
    (["car", "dog", "cat"], ["car", "dog"], "--classnames z.txt",
     r"a label is 2, beyond the 2 classes --classnames z\.txt names"),
])
def test_relabel_by_name_errors_name_whose_names_and_the_remedy(tmp_path, shard_names, own, source, pattern):
    """relabel_by_name's errors name the names they come from (``own_source`` or the split's file) and the remedy
    that fits them."""
    from kizuna.eval.datasets import DatasetError, relabel_by_name

    ds = _shards(tmp_path, shard_names, [0, 1, 2])
    with pytest.raises(DatasetError, match=pattern):
        relabel_by_name(ds, ["cat", "dog", "car"], own=own, own_source=source)


def test_fingerprint_takes_empty_and_scalar_tensors():
    """A 0-row parameter and a 0-dim buffer (logit_scale) are fingerprinted, not a division by zero or a bad view."""
    module = torch.nn.Module()
    module.empty = torch.nn.Parameter(torch.zeros(0, 3))
    module.register_buffer("scale", torch.tensor(2.0))
    module.wide = torch.nn.Parameter(torch.ones(2, 5))
    before = model_fingerprint(module)
    module.scale.data.fill_(3.0)
    assert model_fingerprint(module) != before


def test_relabel_by_name_given_names_without_a_source_are_called_the_class_names_given(tmp_path):
    """``own`` without ``own_source``: errors call them "the class names given", not an empty name."""
    from kizuna.eval.datasets import DatasetError, relabel_by_name

    ds = _shards(tmp_path, ["car", "dog", "cat"], [0, 1, 2])
    with pytest.raises(DatasetError, match=r"bird of the class names given are not"):
        relabel_by_name(ds, ["cat", "dog", "car"], own=["car", "dog", "bird"])
