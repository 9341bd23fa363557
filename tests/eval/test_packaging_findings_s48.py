"""A figure that cannot be drawn (matplotlib missing, or broken) is warned about; the numbers are still written.
`eval --out` printed its tables and ended in a traceback without results.json."""
from __future__ import annotations

import json

import pytest
import torch

import kizuna
from _evalhelpers import image_folder
from kizuna.apps.cli import main


def _broken(*args, **kwargs):
    raise ModuleNotFoundError("No module named 'matplotlib'")


def test_eval_writes_its_results_when_a_figure_fails(tmp_path, monkeypatch, capsys):
    from kizuna.eval.classification import ClassificationResult

    image_folder(tmp_path / "d", per_class=2, classes=("cat", "dog"))
    torch.manual_seed(0)
    kizuna.save_model(kizuna.create_model("ViT-mu-8"), tmp_path / "m")
    monkeypatch.setattr(ClassificationResult, "plot_confusion", _broken)
    out = tmp_path / "out"
    assert main(["eval", "zeroshot", "--model", str(tmp_path / "m"), "--dataset", str(tmp_path / "d"),
                 "--out", str(out), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "could not draw" in err and "No module named 'matplotlib'" in err and "numbers are in results.json" in err
    records = json.loads((out / "results.json").read_text())
    assert records[0]["details"]["plots"] == [] and "acc1" in records[0]["metrics"]
    assert not list(out.glob("*.png"))


def test_the_demo_report_is_written_when_a_figure_fails(tmp_path, monkeypatch):
    from kizuna.train import report

    monkeypatch.setattr(report, "plot_predictions", _broken)
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"kind": "train", "step": 1, "loss": 2.0}) + "\n")

    class Cfg:
        model_overrides = {"vision": {"width": 16, "depth": 1, "patch_size": 8}, "text": {"depth": 1}}
        synthetic_image_size, batch_size, steps, epochs, eval_max_samples, best_metric = 32, 8, 1, 0, 4, ""

    torch.manual_seed(0)
    model = kizuna.create_model("ViT-mu-8")
    with pytest.warns(RuntimeWarning, match=r"could not draw .*predictions\.png .*REPORT\.md is written without it"):
        path = report.write_demo_report(tmp_path, model, kizuna.get_tokenizer(model), {}, 1.0, Cfg(), steps_run=1)
    text = path.read_text()
    assert "![loss](loss.png)" in text and "predictions.png" not in text
