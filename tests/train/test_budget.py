"""Wall-clock control of training: the time budget that plans a run's length, and the hard time limit."""
from __future__ import annotations

import pytest
import torch

from kizuna.train import budget as budget_mod
from kizuna.train.budget import SKIP_FIRST, TimeBudget


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock(monkeypatch):
    c = Clock()
    monkeypatch.setattr(budget_mod.time, "perf_counter", c)
    return c


def _steps(b: TimeBudget, clock: Clock, durations):
    for d in durations:
        clock.now += d
        b.step_done()


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
    assert b.plan(step=10)["total_steps"] == 11  # at least one more step: the run still ends properly
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
    b.pause()
    clock.now += 30.0  # an evaluation
    b.step_done()  # the first step boundary after it starts a new interval
    _steps(b, clock, [0.2] * 2)
    assert max(b.step_times) == pytest.approx(0.2) and len(b.step_times) == 6


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
