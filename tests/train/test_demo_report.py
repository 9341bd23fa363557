"""`kizuna demo`'s REPORT.md says what ran: the steps taken (the config's time limit can stop the run early),
this run's records only, the CPU model, and no made-up throughput when nothing was logged."""
from __future__ import annotations

import argparse
import json

import pytest
import torch

import kizuna
import kizuna.models.layers as layers
import kizuna.train.config as train_config
from kizuna.train import demo
from kizuna.train.config import load_config_file, make_config
from kizuna.train.logging import read_metrics
from kizuna.train.report import write_demo_report


@pytest.fixture
def tiny_demo_config(monkeypatch):
    """The demo config, shrunk to seconds, with a time limit that stops it after its first step."""
    real = train_config.load_config_file

    def load(name):
        base = real(name)
        base.update(synthetic_image_size=32, synthetic_length=256, batch_size=8, steps=40, time_limit_minutes=1e-4,
                    tokenizer_vocab_size=600, workers=0, eval_every=0, save_every=0, eval_max_samples=4,
                    log_every=1, warmup_steps=2)
        return base

    monkeypatch.setattr(train_config, "load_config_file", load)


def _run_demo(out) -> int:
    parser = argparse.ArgumentParser()
    demo.add_arguments(parser)
    return demo.run(parser.parse_args(["--out", str(out), "--probe-size", "4", "--no-progress", "--threads", "1"]))


def test_the_report_gives_the_steps_run_and_only_this_run(tiny_demo_config, tmp_path):
    """It said 'trained from scratch for 40 steps' (cfg.steps) when the time limit stopped the run at step 1,
    and a second demo into the same --out appended to the first one's metrics.jsonl."""
    out = tmp_path / "demo"
    for _ in range(2):
        assert _run_demo(out) == 0
    report = (out / "REPORT.md").read_text()
    assert "for 40 steps" not in report
    final = json.loads((out / "final_metrics.json").read_text())
    steps = final["steps_run"]  # 1 on a CPU; a fast machine may fit another step into the 6 ms
    # (named "train_seconds" until 2026-12-07, though the clock ran from before the model was built)
    assert final["setup_and_train_seconds"] > 0 and "train_seconds" not in final
    assert 1 <= steps < 40 and final["stopped_by_time_limit"] is True
    assert f"for {steps} step{'s' * (steps > 1)} (stopped by the 0.0001-min time limit; 40 were configured)" in report
    # this run's records only (one per step at log_every=1); the first run's were moved aside
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl", "train")] == list(range(1, steps + 1))
    assert read_metrics(out / "metrics.jsonl.prev", "train")[0]["step"] == 1
    # the earlier demo's report is set aside when the new one starts: a demo stopped before its report (and the
    # run continued with `kizuna train`) kept the other run's REPORT.md and final_metrics.json beside its own
    assert (out / "REPORT.md.prev").is_file() and (out / "final_metrics.json.prev").is_file()
    # it says over how many scenes the table is (the curves' last point is over fewer, and differed unexplained)
    assert final["probe_size"] == 4 and "Over 4 held-out scenes a task; the accuracy plot's points" in report


def test_a_report_without_logged_steps_says_so(tmp_path, monkeypatch):
    """No metrics.jsonl: it printed 'median 0 pairs/s' and an empty results table, and named the machine
    'x86_64' (platform.processor()) rather than its CPU model."""
    monkeypatch.setattr(layers, "cpu_info", lambda field, cpuinfo=None: "Test CPU 9000" if field == "model name" else "")
    torch.manual_seed(0)
    model = kizuna.create_model("ViT-mu-8").eval()
    cfg = make_config(load_config_file("demo"), out=str(tmp_path))
    report = write_demo_report(tmp_path, model, kizuna.get_tokenizer(model), {}, 30.0, cfg).read_text()
    assert "pairs/s" not in report and "no training steps were logged" in report
    assert "No held-out results" in report and "```" not in report
    assert "on Test CPU 9000 (" in report and "took 30 s" in report
    assert "for 0 steps (400 were configured)" in report
    assert "(loss.png)" not in report and "(predictions.png)" in report


def test_the_steps_run_default_to_the_last_logged_step(tmp_path):
    rows = [{"kind": "train", "step": s, "loss": 1.0, "samples_per_s": 100.0 + s} for s in (10, 20, 27)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    torch.manual_seed(0)
    model = kizuna.create_model("ViT-mu-8").eval()
    cfg = make_config(load_config_file("demo"), out=str(tmp_path))
    report = write_demo_report(tmp_path, model, kizuna.get_tokenizer(model), {"probe/shape": 0.5}, 90.0,
                               cfg).read_text()
    assert "for 27 steps (400 were configured)" in report
    assert "median 127 pairs/s" in report  # of the windows after the first
    assert "shape zero-shot top-1" in report and "took 1.5 min" in report


def test_a_shorter_demo_shortens_its_warm_up():
    """`kizuna demo --steps 30` kept the config's 50-step warm-up: the run never left it, and the warning told the
    user to lower a --warmup-steps the demo does not have."""
    parser = argparse.ArgumentParser()
    demo.add_arguments(parser)
    base = load_config_file("demo")
    assert (base["steps"], base["warmup_steps"]) == (400, 50)
    short = demo.demo_overrides(parser.parse_args(["--steps", "30"]), base)
    assert (short["steps"], short["warmup_steps"]) == (30, 4)
    assert demo.demo_overrides(parser.parse_args(["--steps", "1"]), base)["warmup_steps"] == 0  # none to decay
    assert "warmup_steps" not in demo.demo_overrides(parser.parse_args(["--steps", "800"]), base)
    assert "warmup_steps" not in demo.demo_overrides(parser.parse_args([]), base)


def test_a_ctrl_c_in_the_final_evaluation_says_the_model_is_saved(tiny_demo_config, tmp_path, monkeypatch, capsys):
    """The demo printed "interrupted" alone once training was done and saved: nothing said so."""
    import kizuna.train.evaluation as evaluation

    real, calls = evaluation.synthetic_probe_metrics, []

    def interrupted(*a, **k):  # the training's own evaluation (its last step) runs; the demo's final one stops
        calls.append(1)
        if len(calls) > 1:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(evaluation, "synthetic_probe_metrics", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _run_demo(tmp_path / "demo")
    assert "the trained model is saved in " in capsys.readouterr().err
    assert (tmp_path / "demo" / "checkpoints" / "latest").is_file()


def test_the_demo_under_torchrun_points_to_its_config(tmp_path, monkeypatch, capsys):
    """Under torchrun every rank printed the probe table and wrote the report into one folder."""
    from kizuna.apps.cli import main

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    assert main(["demo", "--out", str(tmp_path / "demo")]) == 2
    assert "train --config demo" in capsys.readouterr().err and not (tmp_path / "demo").exists()


def test_the_report_says_its_numbers_are_the_final_models_and_which_step_best_is(tiny_demo_config, tmp_path):
    """REPORT.md scores the final model; checkpoints/best (which the README loaded) may be an earlier step, and
    scored other numbers (best/ at step 300 of the demo's 400: counting 93% against the report's 98%)."""
    from kizuna.analysis.report import read_extra
    from kizuna.models.checkpoint import save_model
    from kizuna.train.report import which_model

    out = tmp_path / "demo"
    assert _run_demo(out) == 0
    final = json.loads((out / "final_metrics.json").read_text())
    steps = final["steps_run"]
    assert final["model"] == "checkpoints/latest" and final["best_step"] == steps  # evaluated at the last step
    assert read_extra(out / "checkpoints" / "latest")["step"] == steps
    assert f"These are the final model's results (step {steps}, `checkpoints/latest`), which is also" in (
        out / "REPORT.md").read_text()
    vit = kizuna.create_vit("mu/4", image_size=8, num_classes=2, width=16, depth=1, heads=2, mlp_dim=32)
    save_model(vit, tmp_path / "other" / "checkpoints" / "best", extra={"step": 300})
    assert which_model(tmp_path / "other", 400, "probe/unseen_combos").endswith(
        "`checkpoints/best` is the model of step 300, the highest `probe/unseen_combos` at an evaluation during "
        "training.")
    assert which_model(tmp_path / "none", 400, "x") == "These are the final model's results (step 400, " \
                                                        "`checkpoints/latest`)."


@pytest.mark.parametrize("signame, raised", [("SIGINT", KeyboardInterrupt), ("SIGTERM", "Terminated")])
def test_a_stop_asked_during_the_last_step_skips_the_final_evaluation(tiny_demo_config, tmp_path, monkeypatch,
                                                                       capsys, signame, raised):
    """Ctrl-C (or a scheduler's SIGTERM) during the last step printed "stopping after this step", then the demo ran
    its ~45 s of final probes anyway, wrote REPORT.md and exited 0."""
    import os
    import signal

    import kizuna.train.evaluation as evaluation
    from kizuna.apps.cli import Terminated
    from kizuna.train.contrastive import ContrastiveTrainer

    raised = Terminated if raised == "Terminated" else raised
    real_finish = ContrastiveTrainer.finish

    def finish_with_a_signal(self, metrics):  # the last step, before its checkpoint
        os.kill(os.getpid(), getattr(signal, signame))
        return real_finish(self, metrics)

    real, calls = evaluation.synthetic_probe_metrics, []

    def probes(*a, **k):  # the training's own evaluation (its last step) runs; the demo's final one must not
        calls.append(1)
        assert len(calls) == 1, "the final evaluation ran after the stop"
        return real(*a, **k)

    monkeypatch.setattr(ContrastiveTrainer, "finish", finish_with_a_signal)
    monkeypatch.setattr(evaluation, "synthetic_probe_metrics", probes)
    monkeypatch.setattr(train_config, "load_config_file", _without_time_limit(train_config.load_config_file))
    with pytest.raises(raised):
        _run_demo(tmp_path / "demo")
    err = capsys.readouterr().err
    said = "Ctrl-C" if signame == "SIGINT" else "SIGTERM"
    assert f"kizuna demo: {said} during the last step: the trained model is saved in " in err
    assert (tmp_path / "demo" / "checkpoints" / "latest").read_text().strip() == "step_0000003"
    assert not (tmp_path / "demo" / "REPORT.md").exists()


def _without_time_limit(load):
    def shrunk(name):
        return {**load(name), "steps": 3, "time_limit_minutes": 0}
    return shrunk
