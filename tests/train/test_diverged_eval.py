"""A diverged (NaN) model's training-time evaluation is NaN with a warning, and never best/.

The supervised validation scored NaN logits as class 0 (val_top1 = the share of class 0, and best/ was replaced by
an all-NaN model), and the synthetic probes scored NaN features as chance-level numbers, with no warning, in
`kizuna train`'s log and `kizuna demo`'s final_metrics.json."""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import kizuna.train.config as train_config
from kizuna.train import demo
from kizuna.train.contrastive import ContrastiveTrainer
from kizuna.train.logging import read_metrics
from kizuna.train.supervised import SupervisedTrainer, make_supervised_config
from kizuna.train.trainer import TrainingDiverged

sys.path.insert(0, str(Path(__file__).parent))
from _tiny import tiny_config  # noqa: E402


def _poison(model) -> None:
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float("nan"))


def _diverge_from(cls, monkeypatch, step: int) -> None:
    """``cls.evaluate`` sees all-NaN weights from training step ``step`` on (a run that diverged there)."""
    real = cls.evaluate

    def evaluate(self):
        if self.step >= step:
            _poison(self.model)
        return real(self)

    monkeypatch.setattr(cls, "evaluate", evaluate)


def _best(out):
    best = out / "checkpoints" / "best"
    extra = json.loads((best / "config.json").read_text())["kizuna"]["extra"]
    weights = load_file(str(best / "model.safetensors"))
    return extra, all(bool(torch.isfinite(v).all()) for v in weights.values() if v.is_floating_point())


def _tree(root, counts) -> str:
    rng = np.random.default_rng(len(counts) + sum(counts))
    for c, n in enumerate(counts):
        (root / f"c{c}").mkdir(parents=True)
        for i in range(n):
            arr = (rng.random((16, 16, 3)) * 60 + c * 60).clip(0, 255).astype(np.uint8)
            Image.fromarray(arr).save(root / f"c{c}" / f"{i}.png")
    return str(root)


def test_a_supervised_run_that_diverges_logs_nan_and_keeps_its_real_best(tmp_path, monkeypatch):
    _diverge_from(SupervisedTrainer, monkeypatch, 4)
    cfg = make_supervised_config(
        model="mu/4", model_overrides={"width": 32, "mlp_dim": 64, "depth": 1, "heads": 2}, image_size=16,
        data=_tree(tmp_path / "train", [4, 4, 4, 4]), val_data=_tree(tmp_path / "val", [9, 1, 1, 1]),
        batch_size=8, steps=4, eval_every=2, workers=0, warmup_steps=1, lr=1e-3, out=str(tmp_path / "run"),
        progress=False, log_every=1, threads=1)
    # the evaluation of the NaN weights is said and logged; then the run stops before saving them (TrainingDiverged)
    with pytest.warns(UserWarning, match="NaN or inf logits for 12 of 12 validation images"), \
            pytest.raises(TrainingDiverged, match="holds non-finite weights at step 4"):
        SupervisedTrainer(cfg).train()
    evals = {r["step"]: r for r in read_metrics(tmp_path / "run" / "metrics.jsonl", "eval")}
    assert sorted(evals) == [2, 4]
    assert math.isfinite(evals[2]["val_top1"]) and math.isfinite(evals[2]["val_loss"])
    # NaN, not the share of class 0 (0.75) that argmax of NaN logits scored
    assert math.isnan(evals[4]["val_top1"]) and math.isnan(evals[4]["val_loss"]) and evals[4]["val_samples"] == 12
    extra, finite = _best(tmp_path / "run")
    assert extra["step"] == 2 and finite


def test_a_contrastive_run_that_diverges_logs_nan_probes_and_writes_no_best(tmp_path, monkeypatch):
    _diverge_from(ContrastiveTrainer, monkeypatch, 2)
    with pytest.warns(UserWarning, match="synthetic probes: .*NaN or inf features"), \
            pytest.raises(TrainingDiverged, match="the loss is nan by step 3"):  # the next step's loss is NaN
        ContrastiveTrainer(tiny_config(tmp_path / "run", steps=4, eval_every=2, best_metric="probe/shape")).train()
    evals = read_metrics(tmp_path / "run" / "metrics.jsonl", "eval")
    assert [r["step"] for r in evals] == [2]
    for r in evals:  # every probe's number NaN, none left out (a chance-level 0.2 was logged)
        probes = {k: v for k, v in r.items() if k.startswith("probe/")}
        assert "probe/shape" in probes and "probe/relation_swap/group_score" in probes
        assert all(math.isnan(v) for v in probes.values()), probes
    assert not (tmp_path / "run" / "checkpoints" / "best").exists()  # a NaN is never best/


@pytest.fixture
def tiny_nan_demo(monkeypatch):
    """The demo config, shrunk to seconds; its trained model all NaN when the final evaluation runs."""
    real_load, real_train = train_config.load_config_file, ContrastiveTrainer.train

    def load(name):
        base = real_load(name)
        base.update(synthetic_image_size=32, synthetic_length=256, batch_size=8, steps=1, tokenizer_vocab_size=600,
                    workers=0, eval_every=0, save_every=0, eval_max_samples=4, log_every=1, warmup_steps=0)
        return base

    def train(self):
        out = real_train(self)
        _poison(self.model)
        return out

    monkeypatch.setattr(train_config, "load_config_file", load)
    monkeypatch.setattr(ContrastiveTrainer, "train", train)


def test_the_demo_of_a_diverged_model_reports_nan_with_a_warning(tiny_nan_demo, tmp_path, capsys):
    parser = argparse.ArgumentParser()
    demo.add_arguments(parser)
    args = parser.parse_args(["--out", str(tmp_path / "demo"), "--probe-size", "4", "--no-progress", "--threads", "1"])
    with pytest.warns(UserWarning, match="synthetic probes: .*NaN or inf features"):
        assert demo.run(args) == 0
    def no_constants(name):
        raise AssertionError(f"final_metrics.json is not strict JSON: {name}")

    final = json.loads((tmp_path / "demo" / "final_metrics.json").read_text(), parse_constant=no_constants)
    probes = {k: v for k, v in final.items() if k.startswith("probe/")}
    assert "probe/shape" in probes and all(v is None for v in probes.values()), probes  # strict JSON: NaN is null
    table = capsys.readouterr().out
    assert "nan%" not in table and "shape zero-shot top-1 (6 shapes)" in table
