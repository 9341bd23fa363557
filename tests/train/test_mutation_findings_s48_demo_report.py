"""Mutation-testing round 48 (the demo's REPORT.md): the predictions figure ranks by the logits and shows the
probabilities, and the zero-shot-over-training figure is still drawn and linked."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from matplotlib.axes import Axes

import kizuna
from kizuna.eval.zeroshot import ZeroShotClassifier
from kizuna.train import report


def test_the_predictions_figure_ranks_by_the_logits_and_shows_probabilities(tmp_path, monkeypatch):
    """Kills: the bars ranked by the probabilities (saturated at 1.0 they tie, and came out in label order), and the
    bars' lengths taken from the logits. The classifier's logits are fixed (ascending by class), its probabilities
    all 1.0, as a saturated SigLIP's."""
    seen = {}

    def logits(self, images):
        seen["names"] = list(self.classnames)
        return torch.arange(len(self.classnames), dtype=torch.float32).repeat(len(images), 1)

    monkeypatch.setattr(ZeroShotClassifier, "logits", logits)
    monkeypatch.setattr(ZeroShotClassifier, "probabilities", lambda self, x: torch.ones_like(x))
    bars = []
    real = Axes.barh
    monkeypatch.setattr(Axes, "barh", lambda ax, labels, values, *a, **k: bars.append((list(labels), list(values)))
                        or real(ax, labels, values, *a, **k))
    torch.manual_seed(0)
    model = kizuna.create_model("ViT-mu-8").eval()
    report.plot_predictions(model, kizuna.get_tokenizer(model), tmp_path / "p.png", n=2)
    names = seen["names"]
    assert len(names) >= 5 and len(bars) == 2
    for labels, values in bars:
        assert labels == names[-5:]  # the five highest logits, the highest drawn last (on top)
        assert values == [1.0] * 5


def test_the_zeroshot_over_training_figure_is_drawn_and_linked(tmp_path, monkeypatch):
    """Kills: the zero-shot-over-training figure left out of REPORT.md where the run logged evaluations."""
    def quick(model, tokenizer, path, **kwargs):
        Path(path).write_bytes(b"png")
        return Path(path)

    monkeypatch.setattr(report, "plot_predictions", quick)
    rows = [{"kind": "train", "step": 1, "loss": 2.0}, {"kind": "train", "step": 2, "loss": 1.5},
            {"kind": "eval", "step": 2, "probe/shape": 0.5, "probe/colour": 0.4, "probe/unseen_combos": 0.3,
             "probe/counting": 0.2}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    class Cfg:
        model_overrides = {"vision": {"width": 16, "depth": 1, "patch_size": 8}, "text": {"depth": 1}}
        synthetic_image_size, batch_size, steps, epochs, eval_max_samples, best_metric = 32, 8, 2, 0, 4, ""

    torch.manual_seed(0)
    model = kizuna.create_model("ViT-mu-8")
    path = report.write_demo_report(tmp_path, model, kizuna.get_tokenizer(model), {}, 1.0, Cfg(), steps_run=2)
    text = path.read_text()
    assert "![zeroshot_over_training](zeroshot_over_training.png)" in text
    assert (tmp_path / "zeroshot_over_training.png").exists()
    assert "![loss](loss.png)" in text and "![predictions](predictions.png)" in text
