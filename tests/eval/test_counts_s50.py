"""numpy whole numbers (what `np.load`, `np.arange` or a pandas column hand a notebook) are counts like Python
ints: retrieval's block sizes and a prediction panel's top_k refused ``np.int64(2)`` while the evaluators'
other counts took it (one ``is_count`` for all)."""
import numpy as np
import pytest
import torch

import kizuna
from kizuna.analysis.report import load_target, predict_report
from kizuna.eval.retrieval import retrieval_ranks


def test_retrieval_blocks_take_numpy_whole_numbers():
    g = torch.Generator().manual_seed(0)
    img, txt = torch.randn(9, 4, generator=g), torch.randn(18, 4, generator=g)
    t2i = torch.arange(18) // 2
    ints = retrieval_ranks(img, txt, t2i, query_chunk=2, key_chunk=5)
    numpy_ints = retrieval_ranks(img, txt, t2i, query_chunk=np.int64(2), key_chunk=np.int32(5))
    assert torch.equal(ints[0], numpy_ints[0]) and torch.equal(ints[1], numpy_ints[1])
    for bad in (2.0, True, np.int64(0)):
        with pytest.raises(ValueError, match="query_chunk must be a whole number >= 1"):
            retrieval_ranks(img, txt, t2i, query_chunk=bad)


def test_a_prediction_panel_takes_a_numpy_top_k(tmp_path):
    target = load_target(kizuna.create_model("ViT-mu-8"))
    image = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0))
    report = predict_report(target, image, tmp_path, labels=["cat", "dog", "car"], top_k=np.int64(2))
    assert [name for name, _ in report["top"]] == [name for name, _ in predict_report(
        target, image, tmp_path / "int", labels=["cat", "dog", "car"], top_k=2)["top"]]
    assert len(report["top"]) == 2
    with pytest.raises(ValueError, match="top_k must be a whole number >= 1"):
        predict_report(target, image, tmp_path, labels=["cat", "dog", "car"], top_k=2.0)
