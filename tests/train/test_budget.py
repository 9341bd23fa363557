"""Wall-clock control of training: the time budget that plans a run's length, and the hard time limit."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from kizuna.train import budget as budget_mod
from kizuna.train.budget import SKIP_FIRST, TimeBudget

sys.path.insert(0, str(Path(__file__).parent))
from _clock import _steps  # noqa: E402


def test_plan_fills_the_budget_with_steps_and_evaluations(clock):
    b = TimeBudget(budget_minutes=1.0, margin=0.0, calibrate_steps=5)
    b.restart()
    b.step_done()  # the loop's first step boundary
    _steps(b, clock, [3.0] * SKIP_FIRST + [0.5] * 5)  # slow start-up steps are not the pace
    assert b.seconds_per_step() == 0.5
    assert not b.ready_to_plan(step=8, warmup_steps=10) and b.ready_to_plan(step=8, warmup_steps=8)
    spent = b.elapsed
    assert spent == pytest.approx(3 * 3.0 + 5 * 0.5)
    # 60 s budget: 11.5 spent, 5 s for the final evaluation, and every 10 steps another 5 s (0.5 s a step)
    plan = b.plan(step=8, eval_seconds=5.0, eval_every=10)
    assert plan["total_steps"] == 8 + int((60 - spent - 5.0) // (0.5 + 0.5))
    assert plan["seconds_per_step"] == 0.5 and plan["planned_at_step"] == 8
    assert b.plan(step=8)["total_steps"] == 8 + int((60 - spent) // 0.5)  # no evaluation to leave room for
    assert b.plan(step=8, cap=20)["total_steps"] == 20  # `steps` caps a budgeted run


def test_bursty_steps_are_planned_at_their_mean_so_the_run_ends_on_time(clock):
    """A loader-bound run: three quick steps on prefetched batches, then one that waits for the workers.
    The budget is spent at the mean (0.2 s), not the median (0.1 s): planned on the median, the run would
    take 1.7x its budget."""
    pattern = [0.1, 0.1, 0.1, 0.5]
    b = TimeBudget(budget_minutes=1.0, margin=0.0, calibrate_steps=40)
    b.restart()
    b.step_done()
    _steps(b, clock, [0.1] * SKIP_FIRST + pattern * 10)
    assert b.seconds_per_step() == pytest.approx(0.2)
    plan = b.plan(step=43)
    _steps(b, clock, (pattern * 1000)[:plan["total_steps"] - 43])  # the rest of the run at the same pace
    assert 60 - 0.5 <= b.elapsed <= 60 + 1e-9


def test_an_isolated_pause_among_hundreds_of_steps_does_not_shorten_the_run(clock):
    b = TimeBudget(budget_minutes=1.0, calibrate_steps=200)
    b.restart()
    b.step_done()
    _steps(b, clock, [0.1] * (SKIP_FIRST + 150) + [5.0] + [0.1] * 49)  # one 5-s pause (a GC, a checkpoint)
    assert b.seconds_per_step() == pytest.approx(0.1)
    _steps(b, clock, [5.0, 5.0])  # three among 203: a pace, not an accident
    assert b.seconds_per_step() > 0.1


def test_plan_never_goes_backwards_and_the_margin_is_kept(clock):
    b = TimeBudget(budget_minutes=0.1, margin=0.1, calibrate_steps=1)
    b.restart()
    b.step_done()
    _steps(b, clock, [1.0] * 10)  # 10 s spent of 6: over budget already
    # ends at the plan's own step, never before it (the loop evaluates and saves there: one more step evaluated
    # again and overran a spent budget by an evaluation)
    assert b.plan(step=10)["total_steps"] == 10
    c = TimeBudget(budget_minutes=1.0, margin=0.1, calibrate_steps=1)
    c.restart()
    c.step_done()
    _steps(c, clock, [1.0] * 4)
    assert c.plan(step=4)["total_steps"] == 4 + int(60 * 0.9 - 4)


def test_pause_keeps_evaluations_out_of_the_step_time(clock):
    b = TimeBudget(budget_minutes=1.0, calibrate_steps=1)
    b.restart()
    b.step_done()
    _steps(b, clock, [0.2] * 4)
    clock.now += 30.0  # an evaluation, after which the trainers call pause()
    b.pause()
    _steps(b, clock, [0.2] * 2)  # the step after it is timed from the pause's end
    assert max(b.step_times) == pytest.approx(0.2) and len(b.step_times) == 6


def test_a_run_that_evaluates_after_every_step_is_still_planned(clock):
    """--eval-every 1: every step follows a pause. They were all left untimed, so the run was never planned
    and ran on to its cap (or for ever)."""
    took, trainer, rows = _budgeted_run(clock, lambda step: 0.5, budget_minutes=1.0, warmup_steps=0,
                                        eval_seconds=0.1, eval_every=1)
    assert [r["step"] for r in rows if r["kind"] == "plan"] == [SKIP_FIRST + 20]
    assert trainer.planned and 50 < took <= 60


def test_a_budget_shorter_than_the_warmup_is_planned_inside_it(clock, capsys):
    """Planned only after a 200-step warm-up of 1-s steps, a 1-min budget took 201 s at the peak rate."""
    with pytest.warns(UserWarning, match="inside its warm-up of 200 steps"):
        took, trainer, rows = _budgeted_run(clock, lambda step: 1.0, budget_minutes=1.0, warmup_steps=200)
    plan = [r for r in rows if r["kind"] == "plan"]
    assert len(plan) == 1 and plan[0]["step"] < 60 and trainer.step < 200
    assert took <= 60 + 1.0


def test_a_budget_spent_before_its_plan_ends_the_run(clock):
    """Steps so slow that the calibration steps alone overrun the budget: the run ends at the next step."""
    took, trainer, rows = _budgeted_run(clock, lambda step: 10.0, budget_minutes=1.0, warmup_steps=0)
    assert [r["kind"] for r in rows].count("plan") == 1 and trainer.step == trainer.total_steps <= 7
    assert took <= 60 + 10.0


def test_a_plan_at_the_capped_last_step_ends_there(clock):
    b = TimeBudget(budget_minutes=10.0, calibrate_steps=1)
    b.restart()
    b.step_done()
    _steps(b, clock, [0.1] * 24)
    assert b.plan(step=24, cap=24)["total_steps"] == 24  # was 25: one step past --steps
    assert b.plan(step=20, cap=24)["total_steps"] == 24


def test_limit(clock):
    b = TimeBudget(limit_minutes=0.5)
    b.restart()
    clock.now += 29.0
    assert not b.time_is_up(torch.device("cpu"))
    clock.now += 2.0
    assert b.time_is_up(torch.device("cpu"))
    assert not TimeBudget().time_is_up(torch.device("cpu"))  # no limit set
    with pytest.raises(ValueError):
        TimeBudget(budget_minutes=-1)


class _Log:
    def __init__(self):
        self.rows = []

    def log(self, step, values, kind="train"):
        self.rows.append({"kind": kind, "step": step, **values})


def _budgeted_run(clock, pace, budget_minutes=10.0, warmup_steps=30, eval_seconds=0.0, eval_every=0):
    """Drives ``after_step`` as both trainers do (a step, then the call) with steps of ``pace(step)``
    seconds and an evaluation of ``eval_seconds`` at the plan, every ``eval_every`` steps and at the end.
    Returns (seconds the run took, the trainer, the logged rows)."""
    from types import SimpleNamespace

    budget = TimeBudget(budget_minutes=budget_minutes, calibrate_steps=20)

    def evaluate():
        clock.now += eval_seconds
        return {"val_top1": 0.5} if eval_seconds else {}

    cfg = SimpleNamespace(warmup_steps=warmup_steps, steps=0, eval_every=eval_every, save_every=0,
                          time_budget_minutes=budget_minutes, time_limit_minutes=0.0)
    trainer = SimpleNamespace(cfg=cfg, budget=budget, step=0, total_steps=budget_mod.UNPLANNED, planned=False,
                              steps_per_epoch=100, device=torch.device("cpu"), logger=_Log(), evaluate=evaluate,
                              dist=SimpleNamespace(is_main=True))
    budget.restart()
    budget.step_done()
    while trainer.step < trainer.total_steps:
        clock.now += pace(trainer.step)
        trainer.step += 1
        budget_mod.after_step(trainer)
        if eval_every and trainer.step % eval_every == 0 and trainer.step < trainer.total_steps:
            evaluate()
            budget.pause()
    evaluate()  # the final one
    return budget.elapsed, trainer, trainer.logger.rows


@pytest.mark.parametrize("before, after", [(0.30, 0.25), (0.20, 0.26)], ids=["quicker", "slower"])
def test_the_plan_is_corrected_when_the_pace_changes_after_it(clock, monkeypatch, before, after):
    """The Zen 4's 27-min runs: steps 5-15% quicker after the plan than the ones it timed, so the run ended
    minutes early (or slower, and it overran). Corrected at 10/25/40% of the way, it ends on time; planned
    once, it does not. Evaluations (2 s every 200 steps) are part of what the correction sees."""
    monkeypatch.setattr(budget_mod, "REPLAN_AT", (0.1, 0.25, 0.4))  # the mechanism, on the first three shares
    target = 10 * 60 * (1 - TimeBudget.margin)
    pace = lambda step: before if step < 100 else after  # noqa: E731  (the plan comes at step 30)
    took, trainer, rows = _budgeted_run(clock, pace, eval_seconds=2.0, eval_every=200)
    plan = [r for r in rows if r["kind"] == "plan"]
    replans = [r for r in rows if r["kind"] == "replan"]
    assert len(plan) == 1 and plan[0]["step"] == 30
    assert len(replans) == len(budget_mod.REPLAN_AT)
    first_total = plan[0]["total_steps"]
    assert [r["step"] for r in replans] == [30 + round(s * (first_total - 30)) for s in budget_mod.REPLAN_AT]
    assert trainer.step == trainer.total_steps == replans[-1]["total_steps"]
    assert replans[0]["seconds_per_step"] == pytest.approx(  # since the plan, the change and an evaluation
        (70 * before + (replans[0]["step"] - 100) * after) / (replans[0]["step"] - 31), rel=0.01)
    assert replans[-1]["seconds_per_step"] == pytest.approx(after)  # since the last correction
    assert abs(took - target) < 2 * after + 2.0  # on time: within a step and an evaluation

    monkeypatch.setattr(budget_mod, "REPLAN_AT", ())  # the same run planned once
    clock.now = 100.0
    took_once, _, rows_once = _budgeted_run(clock, pace, eval_seconds=2.0, eval_every=200)
    assert not [r for r in rows_once if r["kind"] == "replan"]
    assert abs(took_once - target) > 0.1 * target  # 16% early or 25% late


@pytest.mark.parametrize("before, after", [(0.05, 0.0336), (0.0336, 0.05)], ids=["neighbour-ends", "neighbour-starts"])
def test_a_pace_change_past_the_first_corrections_is_re_fitted(clock, monkeypatch, before, after):
    """The issue-5 call: three runs share a GPU in a 7-minute budget, and one of them stops (diverged) or starts
    (a slow set-up) some 4 minutes in, past 40% of the way, where the last correction used to be: the others
    ended 21% early, or met the hard limit mid-cosine. Corrected to 85%, they end on time."""
    target = 7 * 60 * (1 - TimeBudget.margin)
    pace = lambda step: before if clock.now - 100.0 < 240 else after  # noqa: E731  (the clock starts at 100)
    took, trainer, rows = _budgeted_run(clock, pace, budget_minutes=7.0, warmup_steps=250, eval_seconds=1.3,
                                        eval_every=0)
    assert abs(took - target) < 2 * max(before, after) + 1.3
    assert trainer.step == trainer.total_steps

    monkeypatch.setattr(budget_mod, "REPLAN_AT", (0.1, 0.25, 0.4))  # corrected up to 40% only, as it was
    clock.now = 100.0
    took_before, _, _ = _budgeted_run(clock, pace, budget_minutes=7.0, warmup_steps=250, eval_seconds=1.3)
    assert abs(took_before - target) > 0.08 * target


def test_a_run_with_no_plan_of_its_own_is_not_corrected(clock):
    """A run resumed after its plan keeps its checkpoint's length: its budget never planned, so it holds no
    corrections (its clock restarted at the resume and knows nothing of the time spent before)."""
    b = TimeBudget(budget_minutes=1.0, calibrate_steps=1)
    b.restart()
    b.step_done()
    _steps(b, clock, [0.5] * 50)
    assert b.replan_steps == [] and all(b.replan(step) is None for step in range(100))


def test_a_run_killed_before_its_plan_resumes_with_the_budget_it_has_left(clock):
    """Its clock restarts with the resume: before, the plan to come had the whole budget again."""
    from types import SimpleNamespace

    def resumed(budget_minutes, saved_budget, steps=0, planned=False):
        cfg = SimpleNamespace(time_budget_minutes=budget_minutes, steps=steps)
        trainer = SimpleNamespace(cfg=cfg, budget=TimeBudget(budget_minutes=budget_minutes, margin=0.0), step=10,
                                  total_steps=budget_mod.UNPLANNED, planned=False)
        state = {"total_steps": 40 if planned else budget_mod.UNPLANNED, "planned": planned,
                 "budget_seconds_spent": 25.0, "train_config": {"time_budget_minutes": saved_budget, "steps": 0}}
        budget_mod.restore_length(trainer, state)
        return trainer

    same = resumed(1.0, 1.0)
    assert same.budget.usable_seconds == pytest.approx(35.0) and not same.planned
    same.budget.restart()
    same.budget.step_done()
    _steps(same.budget, clock, [1.0] * 5)
    assert same.budget.plan(step=15)["total_steps"] == 15 + 30  # 35 s left, 5 spent since the resume
    assert resumed(2.0, 1.0).budget.usable_seconds == pytest.approx(120.0)  # a new budget: the time for the rest
    # a new --steps cap alone, before or after the plan: the same budget, less what was spent (it had it all again)
    for planned in (False, True):
        capped = resumed(1.0, 1.0, steps=3000, planned=planned)
        assert capped.budget.usable_seconds == pytest.approx(35.0) and not capped.planned
    # what a checkpoint keeps: the budget spent so far, across resumes
    clock.now += 10.0
    state = budget_mod.length_state(SimpleNamespace(total_steps=45, planned=True, budget=same.budget))
    assert state["budget_seconds_spent"] == pytest.approx(25.0 + 15.0)


def test_corrections_price_evaluations_at_those_since_the_plan(clock):
    """The plan times one evaluation, the run's first, with its one-off costs (workers starting, a validation
    set decoded once); the corrections priced every evaluation still to come at it, and ended the run early."""
    b = TimeBudget(budget_minutes=10.0, margin=0.0, calibrate_steps=5)
    b.restart()
    b.step_done()
    _steps(b, clock, [1.0] * (SKIP_FIRST + 5))
    clock.now += 30.0  # the first evaluation, at the plan
    first = b.plan(step=8, eval_seconds=30.0, eval_every=10)
    b.pause()
    for _ in range(3):
        _steps(b, clock, [1.0] * 10)
        b.evaluation_took(3.0)
        clock.now += 3.0
        b.pause()
    import math

    corrected = b.replan(b.replan_steps[0]) if b.replan_steps else None
    assert first["eval_seconds"] == 30.0 and corrected is not None and corrected["eval_seconds"] == 3.0
    per_step = 1.0 + 3.0 / 10  # a step and its share of the evaluations, priced at 3 s, not 30
    assert corrected["total_steps"] - corrected["planned_at_step"] == math.floor(corrected["remaining_s"] / per_step)


def test_the_plan_leaves_room_for_the_checkpoints_to_come():
    """Checkpoint time was left out of the plan: with --save-every 3 a tiny run overran its budget by 15%."""
    def planned(save_times, save_every):
        b = TimeBudget(budget_minutes=1.0, margin=0.0)
        b.step_times = [0.1] * 40
        b.save_times = list(save_times)
        return b.plan(30, save_every=save_every)

    free = planned([], 0)
    saving = planned([1.0, 1.0, 1.0], 10)  # 1 s every 10 steps of 0.1 s: half the time
    assert saving["save_seconds"] == 1.0
    # the time left, less the final checkpoint, at 0.2 s a step (0.1 s of step and 1 s every 10 steps)
    assert saving["total_steps"] - 30 == pytest.approx((free["remaining_s"] - 1.0) / 0.2, abs=2)


def test_a_plan_with_time_left_but_too_little_for_a_step_and_the_end_says_what_is_left(clock):
    """Not "spent" with 10 s of 58 left: too few for another step and the final 25-s evaluation (session 51)."""
    with pytest.warns(UserWarning, match=r"has 10\.2 s left at step 23, too few for another step and the final "
                                         r"evaluation and checkpoint \(25\.0 s\): the run ends there"):
        took, trainer, rows = _budgeted_run(clock, lambda step: 1.0, budget_minutes=1.0, warmup_steps=0,
                                            eval_seconds=25.0)
    plan = [r for r in rows if r["kind"] == "plan"]
    assert plan[0]["step"] == 23 and trainer.step == trainer.total_steps == 23


def test_a_correction_after_a_stall_ends_the_run_at_its_own_step_and_says_so(clock):
    pace = lambda step: 60.0 if step == 50 else 0.1  # noqa: E731  (a minute's stall after the plan)
    with pytest.warns(UserWarning, match=r"time budget of 1 min was spent by step (\d+): the run ends there"):
        took, trainer, rows = _budgeted_run(clock, pace, budget_minutes=1.0, warmup_steps=0)
    replans = [r for r in rows if r["kind"] == "replan"]
    assert replans and replans[-1]["total_steps"] == replans[-1]["step"] == trainer.step  # not one step more


def test_a_plan_says_when_the_steps_cap_shortened_it(clock):
    """A config's steps (flickr8k's 780, demo's 400) capped a typed budget without a word (session 51)."""
    b = TimeBudget(budget_minutes=10.0, calibrate_steps=1)
    b.restart()
    b.step_done()
    _steps(b, clock, [0.1] * 24)
    assert b.plan(step=24, cap=400)["capped_by_steps"] is True  # the budget would fill ~5,000 steps
    assert b.plan(step=24, cap=50_000)["capped_by_steps"] is False
    assert b.plan(step=24)["capped_by_steps"] is False


def test_the_limit_warning_names_the_steps_cap_too(tmp_path):
    from kizuna.train.config import make_config

    with pytest.warns(UserWarning, match=r"--steps 400 caps the plan \(--steps 0 lets the budget fill its time\)"):
        make_config(model="ViT-mu-8", data="synthetic", out=str(tmp_path), steps=400, time_budget_minutes=20,
                    time_limit_minutes=8)
