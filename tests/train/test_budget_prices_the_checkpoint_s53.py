"""The time budget prices the final checkpoint (session 53): a run that had written none by its plan (the default
--save-every 0) priced it at 0 s, and overran the budget by its length (B/16 on a 2-core CPU: a 5.6-s checkpoint
ended a 45-s budget at 50 s). The plan now writes one in full, times it and deletes it."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from _tiny import tiny_config

from kizuna.train import budget as budget_mod
from kizuna.train.budget import TimeBudget

SAVE_SECONDS = 5.0


def _run(clock, timed_save: bool, budget_minutes=1.0, pace=0.1):
    """A stand-in trainer driven as both trainers drive the budget, whose checkpoint takes SAVE_SECONDS; the final
    one is written at the end. Returns (seconds the run took, the plan's record)."""
    budget = TimeBudget(budget_minutes=budget_minutes, calibrate_steps=20)
    cfg = SimpleNamespace(warmup_steps=5, steps=0, eval_every=0, save_every=0, time_budget_minutes=budget_minutes,
                          time_limit_minutes=0.0)
    rows = []
    logger = SimpleNamespace(log=lambda step, record, kind: rows.append(dict(record, step=step, kind=kind)))
    trainer = SimpleNamespace(cfg=cfg, budget=budget, step=0, total_steps=budget_mod.UNPLANNED, planned=False,
                              steps_per_epoch=1000, device=torch.device("cpu"), logger=logger, evaluate=dict,
                              dist=SimpleNamespace(is_main=True))

    def save():
        clock.now += SAVE_SECONDS
        return SAVE_SECONDS

    if timed_save:
        trainer.time_a_checkpoint = save
    budget.restart()
    budget.step_done()
    while trainer.step < trainer.total_steps:
        clock.now += pace
        trainer.step += 1
        budget_mod.after_step(trainer)
    save()  # the final checkpoint
    return budget.elapsed, next(r for r in rows if r["kind"] == "plan")


def test_the_plan_prices_the_final_checkpoint_and_the_run_ends_on_time(clock):
    target = 60 * (1 - TimeBudget.margin)
    took, plan = _run(clock, timed_save=True)
    assert plan["save_seconds"] == SAVE_SECONDS
    assert target - 0.1 - 1e-9 <= took <= target + 1e-9  # within a step, the trial checkpoint's time included
    clock.now = 100.0
    took_unpriced, plan_unpriced = _run(clock, timed_save=False)  # as before: priced at nothing
    assert plan_unpriced["save_seconds"] == 0.0
    assert took_unpriced > target + SAVE_SECONDS - 0.2


def test_a_budgeted_run_writes_a_trial_checkpoint_at_its_plan_and_keeps_only_its_own(tmp_path, monkeypatch):
    from kizuna.train import checkpointing
    from kizuna.train.contrastive import ContrastiveTrainer

    written = []
    save_model = checkpointing.save_model

    def counting(model, folder, **kwargs):
        written.append(folder.name)
        return save_model(model, folder, **kwargs)

    monkeypatch.setattr(checkpointing, "save_model", counting)
    out = tmp_path / "run"
    trainer = ContrastiveTrainer(tiny_config(out, steps=30, time_budget_minutes=5, warmup_steps=2, eval_max_samples=0))
    trainer.train()
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    plan = next(r for r in records if r.get("kind") == "plan")
    assert plan["save_seconds"] > 0
    assert len(written) == 2  # the trial and the final checkpoint (best/ has no metric to keep by here)
    folders = sorted(p.name for p in (out / "checkpoints").iterdir() if p.is_dir())
    assert folders == ["step_0000030"], folders  # the trial left nothing: no step folder, no temp folder
    assert (out / "checkpoints" / "latest").read_text().strip() == "step_0000030"


def test_a_disk_too_full_for_the_trial_stops_the_run_at_the_plan(tmp_path, monkeypatch):
    import errno

    from kizuna.train import checkpointing
    from kizuna.train.contrastive import ContrastiveTrainer

    def full(model, folder, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpointing, "save_model", full)
    trainer = ContrastiveTrainer(tiny_config(tmp_path / "run", steps=30, time_budget_minutes=5, warmup_steps=2,
                                             eval_max_samples=0))
    with pytest.raises(OSError, match="disk full"):
        trainer.train()
    assert trainer.step < 30  # stopped at the plan, not after the whole run
    assert not list((tmp_path / "run" / "checkpoints").glob(".step_*"))


def test_the_trial_checkpoint_is_no_training_time(tmp_path, monkeypatch):
    """The plan without an evaluation: its trial checkpoint's time was counted in the step's samples/s (9 against
    300 elsewhere)."""
    import time

    from kizuna.train import checkpointing
    from kizuna.train.contrastive import ContrastiveTrainer

    save_model = checkpointing.save_model

    def slow(model, folder, **kwargs):
        time.sleep(1.0)
        return save_model(model, folder, **kwargs)

    monkeypatch.setattr(checkpointing, "save_model", slow)
    out = tmp_path / "run"
    trainer = ContrastiveTrainer(tiny_config(out, steps=30, time_budget_minutes=5, warmup_steps=2, eval_max_samples=0))
    trainer.evaluate = dict  # nothing to evaluate at the plan
    trainer.train()
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    plan_step = next(r for r in records if r.get("kind") == "plan")["step"]
    rates = {r["step"]: r["samples_per_s"] for r in records if r.get("kind") == "train"}
    others = sorted(v for k, v in rates.items() if k != plan_step)
    assert rates[plan_step] > others[len(others) // 2] / 3, (rates[plan_step], others)
