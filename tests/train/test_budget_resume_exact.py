"""The time budget's schedule across plans, corrections and resumes: a resumed run goes on at the rate the
run had reached, and a stall or a slow-down does not throw the run off its budget."""
from __future__ import annotations

import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _tiny import tiny_config  # noqa: E402
from test_budget import _budgeted_run  # noqa: E402

from kizuna.train import budget as budget_mod  # noqa: E402
from kizuna.train.budget import SKIP_FIRST, TimeBudget  # noqa: E402
from kizuna.train.optim import cosine_lr  # noqa: E402


def _resumed(cfg, state, step, named=None):
    """A trainer as ``_resume`` leaves it for restore_length: at ``step``, with initial_length's length."""
    total, planned = budget_mod.initial_length(cfg, steps_per_epoch=125)
    trainer = SimpleNamespace(cfg=cfg, budget=TimeBudget(budget_minutes=cfg.time_budget_minutes), step=step,
                              total_steps=total, planned=planned, named=named, dist=SimpleNamespace(is_main=True))
    budget_mod.restore_length(trainer, state)
    return trainer


# ----- a second resume before the new plan ------------------------------------------------------
def test_a_resume_stopped_before_its_new_plan_resumes_on_its_saved_length(tmp_path):
    """A finished 80-step run resumed with a new budget runs on a length of 104 until its new plan; stopped
    before that plan and resumed again, the saved 104 was thrown away for the open length (10**9): the rate
    went back to the peak (5e-4 where it had 4e-5) until the plan."""
    cfg = tiny_config(tmp_path, steps=0, time_budget_minutes=0.5, warmup_steps=5)
    state = {"total_steps": 104, "planned": False, "budget_seconds_spent": 3.0,
             "train_config": {"time_budget_minutes": 0.5, "steps": 0}}
    at_70 = _resumed(cfg, state, step=70)
    assert at_70.total_steps == 104 and not at_70.planned  # the saved length: the rate goes on as it was
    # stopped at 87, the plan (24 timed steps on) would come after step 104: the length is just long enough
    at_87 = _resumed(cfg, state, step=87)
    assert at_87.total_steps == 87 + SKIP_FIRST + at_87.budget.calibrate_steps + 1 and not at_87.planned
    assert cosine_lr(87, at_87.total_steps, 5) < 0.15  # near the end of the cosine, as before: not the peak
    capped = _resumed(tiny_config(tmp_path, steps=100, time_budget_minutes=0.5, warmup_steps=5), state, step=70)
    assert capped.total_steps == 100  # a new --steps cap bounds it
    # a run killed before any plan (on the open length) still waits for its plan, with the budget it has left
    fresh = _resumed(cfg, {**state, "total_steps": budget_mod.UNPLANNED}, step=10)
    assert fresh.total_steps == budget_mod.UNPLANNED and fresh.budget.spent_before == 3.0


# ----- a stall, and a slow-down after the first correction ------------------------------------
def test_one_stall_in_a_short_window_does_not_set_the_pace(clock):
    """A 1-min budget of 0.1-s steps, stopped 20 s once (SIGSTOP, another job) between the plan and its first
    correction (56 steps later): the stall was 20 s of that window's 25.5 and so the pace of every step left.
    The run ended at step 145 after 35 s, of 58 s. Left out, the run ends on time."""
    target = 60 * (1 - TimeBudget.margin)
    took, trainer, rows = _budgeted_run(clock, lambda step: 20.0 if step == 60 else 0.1, budget_minutes=1.0,
                                        warmup_steps=0)
    replans = [r for r in rows if r["kind"] == "replan"]
    assert replans[0]["seconds_per_step"] == pytest.approx(0.1)
    assert target - 0.3 <= took <= target + 0.1  # the stall's time is spent, and the rest fills the budget
    # one stall only: two in the window are a slowness that recurs, the pace (both count)
    b = TimeBudget(calibrate_steps=20)
    b.step_times = [0.1] * (SKIP_FIRST + 18) + [20.0, 20.0]
    assert b.seconds_per_step() == pytest.approx((18 * 0.1 + 40.0) / 20)


def test_a_correction_that_ends_the_run_early_places_the_corrections_still_due(clock, monkeypatch):
    """A 2-min budget of 0.1-s steps slowing to 0.8 s for good at step 100: the first correction (step 137)
    saw a pace half old, half new and shortened the run to 374 steps, before its corrections at 479 (never
    reached) and 308 (after the budget was spent). The run took 3 minutes of its 2. Placed anew from that
    correction, the others bring the run in on time."""
    monkeypatch.setattr(budget_mod, "REPLAN_AT", (0.1, 0.25, 0.4))  # the mechanism, on the first three shares
    target = 120 * (1 - TimeBudget.margin)
    took, trainer, rows = _budgeted_run(clock, lambda step: 0.1 if step < 100 else 0.8, budget_minutes=2.0,
                                        warmup_steps=0)
    plan = next(r for r in rows if r["kind"] == "plan")
    replans = [r for r in rows if r["kind"] == "replan"]
    first = replans[0]
    assert first["step"] == plan["step"] + round(budget_mod.REPLAN_AT[0] * (plan["total_steps"] - plan["step"]))
    # the rest at their shares of the way from the first correction to the end it set
    assert replans[1]["step"] == first["step"] + round(budget_mod.REPLAN_AT[1] * (first["total_steps"] - first["step"]))
    assert len(replans) == len(budget_mod.REPLAN_AT) and trainer.step == replans[-1]["total_steps"]
    assert target - 1.0 <= took <= target + 1.0


# ----- the step after a plan, straight and resumed -------------------------------------------
def test_a_run_resumed_at_its_plan_step_goes_on_exactly_as_the_straight_run(tmp_path, monkeypatch):
    """The plan changed the length after apply_gradients() had set the next step's rate from the old one: the
    straight run's step 25 went at the peak, the run resumed from step 24 at the planned cosine's rate, and
    every loss after it differed. The plan (at step 24: the first step is untimed, then 3 more and 20 to
    calibrate) is held to 60 steps here (the budget is 10 min), and the time limit ends both runs at step 26."""
    from kizuna.train.contrastive import ContrastiveTrainer
    from kizuna.train.logging import read_metrics

    real_plan = TimeBudget.plan
    monkeypatch.setattr(TimeBudget, "plan", lambda self, step, cap=0, **kw: real_plan(self, step, cap=60, **kw))
    trainers = []
    monkeypatch.setattr(TimeBudget, "time_is_up", lambda self, device: trainers[-1].step >= 26)
    kw = dict(steps=0, time_budget_minutes=10.0, time_limit_minutes=10.0, warmup_steps=2, save_every=24,
              keep_last=5, eval_every=0, precision="fp32")
    trainers.append(ContrastiveTrainer(tiny_config(tmp_path / "a", **kw)))
    trainers[0].train()
    trainers.append(ContrastiveTrainer(tiny_config(tmp_path / "b", resume=str(
        tmp_path / "a" / "checkpoints" / "step_0000024"), **kw)))
    trainers[1].train()
    plan = read_metrics(tmp_path / "a" / "metrics.jsonl", "plan")
    assert [(p["step"], p["total_steps"]) for p in plan] == [(24, 60)]
    straight, resumed = ({r["step"]: r for r in read_metrics(tmp_path / run / "metrics.jsonl", "train")}
                         for run in ("a", "b"))
    for step in (25, 26):
        assert straight[step]["lr"] == pytest.approx(1e-3 * cosine_lr(step - 1, 60, 2), rel=1e-9)
        assert resumed[step]["lr"] == pytest.approx(straight[step]["lr"], rel=1e-9)
        assert resumed[step]["loss"] == pytest.approx(straight[step]["loss"], rel=1e-6)


# ----- a resume with the budget off ---------------------------------------------------------
def test_a_budgeted_run_resumed_with_the_budget_off_keeps_its_planned_length(tmp_path, capsys):
    """--time-budget-minutes 0 gave a planned 80-step run the length of --epochs' default (125 steps here), at
    8 times the rate, without a word."""
    state = {"total_steps": 80, "planned": True, "budget_seconds_spent": 18.0,
             "train_config": {"time_budget_minutes": 0.3, "steps": 0, "epochs": 1.0}}
    off = tiny_config(tmp_path, steps=0, time_budget_minutes=0.0)
    kept = _resumed(off, state, step=70, named=frozenset({"out", "resume", "time_budget_minutes"}))
    assert kept.total_steps == 80 and kept.planned
    assert "the run has 80 steps (the length its budget planned" in capsys.readouterr().err
    assert _resumed(off, state, step=70).total_steps == 80  # from Python: --epochs at its default is not named
    # --epochs or --steps named: the length they give, said
    by_epochs = _resumed(off, state, step=70, named=frozenset({"out", "resume", "time_budget_minutes", "epochs"}))
    assert by_epochs.total_steps == 125 and "the run has 125 steps (from --epochs 1)" in capsys.readouterr().err
    by_steps = _resumed(tiny_config(tmp_path, steps=90, time_budget_minutes=0.0), state, step=70)
    assert by_steps.total_steps == 90 and "the run has 90 steps (from --steps)" in capsys.readouterr().err
    # a run that never had a budget is resumed as ever, without a word
    plain = _resumed(off, {**state, "train_config": {"time_budget_minutes": 0.0, "steps": 0}}, step=70)
    assert plain.total_steps == 125 and capsys.readouterr().err == ""


def test_a_second_resume_with_the_budget_off_keeps_the_planned_length(tmp_path, capsys):
    """The first resume with --time-budget-minutes 0 kept the planned 80 steps, but its checkpoint has the budget
    at 0: the next resume counted the run as never budgeted and took --epochs' default (125 steps)."""
    state = {"total_steps": 80, "planned": True, "budget_seconds_spent": 18.0,
             "train_config": {"time_budget_minutes": 0.3, "steps": 0, "epochs": 1.0}}
    off = tiny_config(tmp_path, steps=0, time_budget_minutes=0.0)
    first = _resumed(off, state, step=60, named=frozenset({"out", "resume", "time_budget_minutes"}))
    saved = {**budget_mod.length_state(first), "train_config": off.to_dict()}  # its checkpoint at step 70
    second = _resumed(off, saved, step=70, named=frozenset({"out", "resume"}))
    assert second.total_steps == 80 and second.planned
    assert budget_mod.length_state(second)["length_from_budget"]  # and the resumes after it
    assert "the run has 80 steps (the length its budget planned" in capsys.readouterr().err
    # --epochs named on the first resume: that length is not the budget's, and the next resume keeps --epochs'
    by_epochs = _resumed(off, state, step=60, named=frozenset({"out", "resume", "time_budget_minutes", "epochs"}))
    assert not budget_mod.length_state(by_epochs)["length_from_budget"]
    # a run that never had a budget: as ever
    plain = _resumed(off, {"total_steps": 125, "planned": True, "train_config": off.to_dict()}, step=70)
    assert not budget_mod.length_state(plain)["length_from_budget"] and plain.total_steps == 125


def test_a_run_resumed_inside_its_warmup_with_a_new_budget_is_planned_after_the_warmup(tmp_path, clock):
    """A run planned inside its 100-step warm-up (its 0.1-min budget did not fit it) resumed at step 60 with 10
    minutes: the length until the new plan was step + 24, but the plan waits for the warm-up, so the run ended
    unplanned at step 84 having used 2.4 s of its 600."""
    from test_budget import _Log

    state = {"total_steps": 60, "planned": True, "budget_seconds_spent": 5.8,
             "train_config": {"time_budget_minutes": 0.1, "steps": 0}}
    cfg = tiny_config(tmp_path, steps=0, time_budget_minutes=10.0, warmup_steps=100)
    trainer = _resumed(cfg, state, step=60, named=frozenset({"time_budget_minutes"}))
    assert trainer.total_steps == 101 and not trainer.planned  # long enough to reach the plan at step 100
    trainer.device, trainer.logger, trainer.evaluate, trainer.steps_per_epoch = None, _Log(), dict, 125
    trainer.budget.restart()
    trainer.budget.step_done()
    while trainer.step < trainer.total_steps:
        clock.now += 0.1
        trainer.step += 1
        budget_mod.after_step(trainer)
    plan = [r for r in trainer.logger.rows if r["kind"] == "plan"]
    assert [r["step"] for r in plan] == [100] and trainer.step > 5000  # planned after the warm-up: the budget used


# ----- a budget's --steps cap inside the warm-up --------------------------------------------
@pytest.mark.parametrize("budget_minutes", [0.0, 5.0])
def test_a_warmup_longer_than_the_steps_cap_is_warned_about_with_a_budget_too(tmp_path, budget_minutes):
    """--steps 10 with the default 100-step warm-up: warned without a budget, silent with one (the run ends at
    its cap before any plan)."""
    cfg = tiny_config(tmp_path, steps=10, warmup_steps=100, time_budget_minutes=budget_minutes)
    total, planned = budget_mod.initial_length(cfg, steps_per_epoch=125)
    trainer = SimpleNamespace(cfg=cfg, total_steps=total, planned=planned, dist=SimpleNamespace(is_main=True))
    with pytest.warns(UserWarning, match=r"the warm-up \(100 steps\) lasts the whole run \(10 steps"):
        budget_mod.warn_if_warmup_fills_the_run(trainer)
    # a budget without a cap: the length is not known before the plan (which warns itself if need be)
    open_run = SimpleNamespace(cfg=tiny_config(tmp_path, steps=0, warmup_steps=100, time_budget_minutes=5.0),
                               total_steps=budget_mod.UNPLANNED, planned=False, dist=SimpleNamespace(is_main=True))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        budget_mod.warn_if_warmup_fills_the_run(open_run)
