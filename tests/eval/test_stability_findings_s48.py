"""A SigLIP model's predictions are ranked by their logits: its float32 sigmoids are exactly 1.0 above a logit of
about 17 (a trained model's scale is over 100), and every class tied there came out in label order."""
from __future__ import annotations

import json
import math

import torch

import kizuna
from kizuna.eval.zeroshot import ZeroShotClassifier

LABELS = ["cat", "dog", "car", "tree", "boat", "bird"]


def _saturated_siglip():
    torch.manual_seed(0)
    model = kizuna.create_model("siglip-mu-8").eval()
    with torch.no_grad():  # logits 80 +- 10: every sigmoid is 1.0 in float32, the logits all differ
        model.logit_scale.fill_(math.log(10.0))
        model.logit_bias.fill_(80.0)
    return model, kizuna.get_tokenizer(model)


def _image(model, seed=3):
    size = model.cfg.vision.image_size
    return torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_topk_of_saturated_sigmoids_follows_the_logits():
    model, tok = _saturated_siglip()
    clf = ZeroShotClassifier(model, tok, LABELS)
    x = _image(model)
    logits = clf.logits(x)[0]
    assert bool((clf.predict_proba(x) == 1.0).all())  # the setting: the probabilities cannot rank
    assert len(set(logits.tolist())) == len(LABELS)
    expected = [LABELS[i] for i in torch.argsort(logits, descending=True).tolist()]
    assert expected[:3] != LABELS[:3]  # label order differs from the true one here (the check has power)
    ranked = clf.topk(x, k=len(LABELS))[0]
    assert [name for name, _ in ranked] == expected
    assert all(p == 1.0 for _, p in ranked)  # the probabilities shown are still the sigmoids


def test_the_analysis_prediction_panel_ranks_by_the_logits(tmp_path):
    from kizuna.analysis.report import load_target, predict_report

    model, _ = _saturated_siglip()
    target = load_target(model)
    x = _image(model)
    predict_report(target, x, tmp_path, labels=LABELS, top_k=3)
    record = json.loads((tmp_path / "predict.json").read_text())
    clf = ZeroShotClassifier(model, kizuna.get_tokenizer(model), LABELS)
    logits = clf.logits(x)[0]
    expected = [LABELS[i] for i in torch.argsort(logits, descending=True).tolist()[:3]]
    assert [name for name, _ in record["top"]] == expected
    assert expected != LABELS[:3]


def test_the_prediction_panel_takes_scores_to_rank_by(tmp_path, monkeypatch):
    import numpy as np
    import pytest
    from matplotlib.axes import Axes

    from kizuna.analysis import figures

    said = {}
    real_title, real_ticks = Axes.set_title, Axes.set_yticklabels
    monkeypatch.setattr(Axes, "set_title", lambda ax, text, *a, **k: said.setdefault("titles", []).append(text) or
                        real_title(ax, text, *a, **k))
    monkeypatch.setattr(Axes, "set_yticklabels", lambda ax, names, *a, **k: said.setdefault("bars", list(names)) and
                        real_ticks(ax, names, *a, **k))
    figures.plot_prediction_panel(np.zeros((4, 4, 3)), ["a", "b", "c"], [1.0, 1.0, 0.5], tmp_path / "p.png",
                                  top_k=2, scores=[20.0, 30.0, 1.0], true_label="b")
    assert said["bars"] == ["b", "a"]  # highest first (drawn at the top)
    assert "true label rank 1" in said["titles"][-1]
    with pytest.raises(ValueError, match="3 probabilities but 2 scores"):
        figures.plot_prediction_panel(np.zeros((4, 4, 3)), ["a", "b", "c"], [1.0, 1.0, 0.5], tmp_path / "q.png",
                                      scores=[1.0, 2.0])
