"""Mutation-testing round 48 (analysis): what the existing tests left open in today's changes to positions.json
and the prediction panel of `kizuna analyze predict`."""
from __future__ import annotations

import json
import math

import torch

import kizuna
from kizuna.analysis.position import row_column_score
from kizuna.analysis.report import load_target, positions_report


def test_positions_json_writes_the_equal_distance_excess_not_the_ratio(tmp_path):
    """Kills: positions.json's row_column_excess_at_equal_distance written from another key (the ratio). The
    reference: row_column_score of the position embeddings' cosine similarity, on a 6 x 6 grid (large enough for
    equal-distance pairs)."""
    torch.manual_seed(0)
    model = kizuna.create_vit("mu/4", image_size=24, num_classes=3, width=16, depth=1, heads=2, mlp_dim=32)
    target = load_target(model, preprocess={"mean": [0.5] * 3, "std": [0.5] * 3, "image_size": 24})
    rep = positions_report(target, tmp_path)
    pe = model.pos_embed.detach().reshape(-1, model.pos_embed.shape[-1])[1:].double()
    pe = pe / pe.norm(dim=1, keepdim=True)
    score = row_column_score((pe @ pe.T).float(), (6, 6))
    assert math.isfinite(score["equal_distance_excess"])
    written = json.loads((tmp_path / "positions.json").read_text())
    assert written["row_column_excess_at_equal_distance"] == rep["row_column_excess_at_equal_distance"]
    assert abs(written["row_column_excess_at_equal_distance"] - score["equal_distance_excess"]) < 1e-5
    assert abs(written["row_column_excess_at_equal_distance"] - written["row_column_ratio"]) > 1e-3


def test_the_analysis_panel_is_given_the_logits_to_rank_by(tmp_path, monkeypatch):
    """Kills: predict_report drawing its panel without scores= (the JSON's top was ranked by the logits, the PNG's
    bars by saturated sigmoids, in label order). The panel's own call is recorded."""
    import math as _m

    from kizuna.analysis import report
    from kizuna.eval.zeroshot import ZeroShotClassifier

    torch.manual_seed(0)
    model = kizuna.create_model("siglip-mu-8").eval()
    with torch.no_grad():
        model.logit_scale.fill_(_m.log(10.0))
        model.logit_bias.fill_(80.0)
    labels = ["cat", "dog", "car", "tree"]
    size = model.cfg.vision.image_size
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(3))
    seen = {}
    real = report.plot_prediction_panel

    def record(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(report, "plot_prediction_panel", record)
    report.predict_report(load_target(model), x, tmp_path, labels=labels, top_k=2)
    assert seen.get("scores") is not None
    logits = ZeroShotClassifier(model, kizuna.get_tokenizer(model), labels).logits(x)[0]
    torch.testing.assert_close(torch.as_tensor(seen["scores"]).float(), logits.float(), rtol=1e-4, atol=1e-4)
