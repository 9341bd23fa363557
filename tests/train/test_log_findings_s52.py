"""A run's logs and their readers (session 52): a resume from an earlier step keeps the branch's later records
aside, a resume from another run's checkpoint brings its TensorBoard events, a stop at an evaluation step saves that
evaluation with its checkpoint, compare-runs counts a log's first record from where the log begins, and a resume of
a finished run gives the run's final metrics."""
import json
import signal
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _tiny import tiny_config  # noqa: E402

from kizuna.analysis.report import read_extra  # noqa: E402
from kizuna.analysis.runs import _set_final_train  # noqa: E402
from kizuna.train.contrastive import ContrastiveTrainer  # noqa: E402


def _records(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def test_a_resume_from_an_earlier_step_keeps_the_branchs_records_aside(tmp_path, capsys):
    ContrastiveTrainer(tiny_config(tmp_path, steps=8, save_every=2, keep_last=10, eval_max_samples=0)).train()
    before = _records(tmp_path / "metrics.jsonl")
    later = [r for r in before if r["step"] > 4]
    assert later
    branch = ContrastiveTrainer(tiny_config(tmp_path, steps=8, eval_max_samples=0,
                                            resume=str(tmp_path / "checkpoints" / "step_0000004")))
    now = _records(tmp_path / "metrics.jsonl")
    assert max(r["step"] for r in now) == 4 and now[-1]["kind"] == "resume"
    aside = tmp_path / "metrics.branches" / "after_step_4.jsonl"
    assert _records(aside) == later  # (they were deleted; the checkpoints they describe stayed)
    assert f"kept in {aside}" in capsys.readouterr().err
    # a second branch from the same step: a file of its own (they were appended, branches mixed)
    branch.train()  # (steps 5-8 again, saved over the first branch's)
    ContrastiveTrainer(tiny_config(tmp_path, steps=8, eval_max_samples=0,
                                   resume=str(tmp_path / "checkpoints" / "step_0000004")))
    second = tmp_path / "metrics.branches" / "after_step_4.2.jsonl"
    assert _records(aside) == later and {r["step"] for r in _records(second)} >= {5, 8}
    # a fresh run sets them aside with the log (they stayed beside the new run's)
    ContrastiveTrainer(tiny_config(tmp_path, steps=2, eval_max_samples=0)).train()
    assert not (tmp_path / "metrics.branches").exists()
    assert (tmp_path / "metrics.branches.prev" / aside.name).is_file()
    # an ordinary resume (nothing saved after its checkpoint) keeps nothing aside
    ContrastiveTrainer(tiny_config(tmp_path / "b", steps=4, save_every=2, eval_max_samples=0)).train()
    ContrastiveTrainer(tiny_config(tmp_path / "b", steps=6, eval_max_samples=0, resume="latest"))
    assert not (tmp_path / "b" / "metrics.branches").exists()


def test_a_resume_from_another_runs_checkpoint_brings_its_tensorboard_events(tmp_path):
    pytest.importorskip("tensorboard")
    ContrastiveTrainer(tiny_config(tmp_path / "a", steps=6, save_every=2, keep_last=10, eval_max_samples=0)).train()
    events = sorted(p.name for p in (tmp_path / "a" / "tensorboard").glob("events.out.tfevents.*"))
    assert events
    ContrastiveTrainer(tiny_config(tmp_path / "b", steps=6, eval_max_samples=0,
                                   resume=str(tmp_path / "a" / "checkpoints" / "step_0000004")))
    copied = sorted(p.name for p in (tmp_path / "b" / "tensorboard").glob("events.out.tfevents.*"))
    assert set(events) <= set(copied)


def test_a_stop_at_an_evaluation_step_saves_its_metrics(tmp_path, monkeypatch):
    trainer = ContrastiveTrainer(tiny_config(tmp_path, steps=8, eval_every=3, eval_zeroshot="synthetic"))
    evaluate = trainer.evaluate

    def evaluated_then_ctrl_c():
        metrics = evaluate()
        if trainer.step == 3:
            signal.raise_signal(signal.SIGINT)  # during the evaluation, as a user's Ctrl-C
        return metrics

    monkeypatch.setattr(trainer, "evaluate", evaluated_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    saved = read_extra(tmp_path / "checkpoints" / "step_0000003").get("metrics")
    logged = [r for r in _records(tmp_path / "metrics.jsonl") if r["kind"] == "eval" and r["step"] == 3]
    assert saved and logged and set(saved) <= set(logged[0])  # (it was saved with none)


def test_compare_runs_counts_a_logs_first_record_from_where_the_log_begins():
    run = {"train_steps": [27, 30, 32], "train_top1": [0.1771, 0.1146, 0.1719], "final": 0.1, "train_from": 24}
    _set_final_train(run, window_steps=15, metric="val_top1")
    assert run["final_train_top1"] == pytest.approx((3 * 0.1771 + 3 * 0.1146 + 2 * 0.1719) / 8)
    older = {"train_steps": [10, 20], "train_top1": [0.5, 0.7], "final": 0.1}  # (a log of no start record)
    _set_final_train(older, window_steps=20, metric="val_top1")
    assert older["final_train_top1"] == pytest.approx(0.6)


def test_a_resume_of_a_finished_run_gives_its_final_metrics(tmp_path):
    final = ContrastiveTrainer(tiny_config(tmp_path, steps=3, eval_zeroshot="synthetic")).train()
    assert final
    again = ContrastiveTrainer(tiny_config(tmp_path, steps=3, resume="latest")).train()
    assert again.keys() == final.keys()
    assert all(again[k] == pytest.approx(final[k], nan_ok=True) for k in final)


@pytest.mark.parametrize("command, module, function", [
    (["train"], "kizuna.train.contrastive", "train"),
    (["vit", "train", "--data", "d"], "kizuna.train.supervised", "train_supervised")])
def test_no_metrics_are_still_json_on_stdout(tmp_path, capsys, monkeypatch, command, module, function):
    """`vit train` without --val-data (and a finished run's resume) printed nothing: `> final.json` was empty."""
    import importlib

    from kizuna.apps.cli import main

    monkeypatch.setattr(importlib.import_module(module), function, lambda cfg, named: {})
    assert main([*command, "--out", str(tmp_path / "run"), "--progress", "false"]) == 0
    assert json.loads(capsys.readouterr().out) == {}
