"""Budgets and the clocks durations are read from (session 51): a plan whose evaluation spends the budget ends
the run there, on that evaluation; metrics.jsonl's durations come from a monotonic clock."""
import json
import time

import pytest

from _tiny import tiny_config
from kizuna.analysis.runs import load_run
from kizuna.train import logging as logging_mod
from kizuna.train.contrastive import ContrastiveTrainer
from kizuna.train.logging import MetricLogger


def test_a_plan_whose_evaluation_spends_the_budget_ends_the_run_on_it(tmp_path):
    cfg = tiny_config(tmp_path, steps=0, epochs=1.0, time_budget_minutes=0.01, warmup_steps=0, save_every=0)
    trainer = ContrastiveTrainer(cfg)
    evaluate = trainer.evaluate

    def slow_evaluation():  # longer than the 0.6-s budget by itself
        time.sleep(1.0)
        return evaluate()

    trainer.evaluate = slow_evaluation
    with pytest.warns(UserWarning, match=r"time budget of 0.01 min was spent by step \d+ \(its evaluation took"):
        trainer.train()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    plan = [r for r in rows if r["kind"] == "plan"]
    evals = [r for r in rows if r["kind"] == "eval"]
    assert len(plan) == 1 and plan[0]["total_steps"] == plan[0]["step"] == trainer.step
    assert [r["step"] for r in evals] == [trainer.step]  # one evaluation, not a second one a step later


def test_records_carry_monotonic_elapsed_seconds_that_a_clock_step_does_not_move(tmp_path, monkeypatch):
    log = MetricLogger(tmp_path, tensorboard=False)
    log.log(0, {}, kind="start")
    real = time.time
    monkeypatch.setattr(logging_mod.time, "time", lambda: real() + 3600.0)  # an NTP step of an hour
    log.log(1, {"loss": 1.0})
    log.log(1, {"val_top1": 0.5}, kind="eval")
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows[1]["time"] - rows[0]["time"] > 3500
    assert 0 <= rows[2]["elapsed_s"] - rows[0]["elapsed_s"] < 60
    assert load_run(tmp_path)["wall_minutes_logged"] < 1.0  # 60 minutes from the wall clock


def test_a_log_without_elapsed_seconds_is_timed_on_its_wall_clock(tmp_path):
    rows = [{"kind": "start", "step": 0, "time": 1000.0}, {"kind": "eval", "step": 5, "time": 1120.0, "val_top1": 0.3},
            {"kind": "resume", "step": 5, "time": 5000.0, "elapsed_s": 0.0},
            {"kind": "eval", "step": 9, "time": 9000.0, "elapsed_s": 60.0, "val_top1": 0.4}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    # 2 minutes on the old segment's wall clock, 1 on the new segment's monotonic one (its wall clock jumped)
    assert load_run(tmp_path)["wall_minutes_logged"] == pytest.approx(3.0)
