"""Mutation findings (session 51) on the time budget's end-of-run rules: the plan that leaves exactly nothing ends
the run at its own step, and ``warn_if_it_ends_here`` speaks only when the plan really ends the run there, once, on
the main rank, with the advice that fits."""
from __future__ import annotations

import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest

from kizuna.train import budget as budget_mod
from kizuna.train.budget import SKIP_FIRST, TimeBudget

sys.path.insert(0, str(Path(__file__).parent))
from _clock import _steps  # noqa: E402
from test_budget import _budgeted_run  # noqa: E402


def _trainer(step=40, total=40, is_main=True, minutes=1.0):
    return SimpleNamespace(step=step, total_steps=total, cfg=SimpleNamespace(time_budget_minutes=minutes),
                           dist=SimpleNamespace(is_main=is_main))


def _plan(remaining, eval_s=0.0, save_s=0.0):
    return {"remaining_s": remaining, "eval_seconds": eval_s, "save_seconds": save_s}


def test_a_budget_left_at_exactly_nothing_plans_no_further_step(clock):
    """0 s left after the final evaluation is spent, as less than 0 is: one more step (and its evaluation
    again) overran the budget by a step and a whole evaluation."""
    b = TimeBudget(budget_minutes=1.0, margin=0.0, calibrate_steps=5)
    b.restart()
    b.step_done()
    _steps(b, clock, [3.0] * SKIP_FIRST + [0.5] * 5)  # 11.5 s spent
    plan = b.plan(step=8, eval_seconds=60.0 - b.elapsed)  # the final evaluation takes exactly what is left
    assert plan["remaining_s"] == 0.0
    assert plan["total_steps"] == 8


def test_a_plan_ended_by_its_step_cap_with_time_left_says_nothing_of_the_budget():
    """``--steps`` reached at the plan's own step with half the budget left: the budget did not end the run, and
    a warning that it did ("too few for another step") would send the user to raise a budget that was ample."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert budget_mod.warn_if_it_ends_here(_trainer(), _plan(30.0, eval_s=5.0)) is False


def test_a_budget_spent_to_the_second_is_called_spent():
    """Nothing left for the final evaluation and checkpoint (0.0 s): "was spent", not "has 0.0 s left"."""
    with pytest.warns(UserWarning, match=r"was spent by step 40: the run ends there") as got:
        assert budget_mod.warn_if_it_ends_here(_trainer(), _plan(-25.0, eval_s=20.0, save_s=5.0)) is True
    assert not any("s left" in str(w.message) for w in got)


def test_the_advice_to_shrink_the_evaluation_only_where_there_is_one():
    with pytest.warns(UserWarning) as got:
        budget_mod.warn_if_it_ends_here(_trainer(), _plan(-3.0, eval_s=7.5))
    assert "Raise --time-budget-minutes or lower the evaluation's size" in str(got[0].message)
    with pytest.warns(UserWarning) as got:
        budget_mod.warn_if_it_ends_here(_trainer(), _plan(-3.0))
    assert "evaluation's size" not in str(got[0].message)


def test_only_the_main_rank_says_the_run_ends_but_every_rank_knows():
    """Under torchrun every rank warned: the message N times over; every rank must still know the plan ends
    the run (the warm-up warning is skipped on each)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert budget_mod.warn_if_it_ends_here(_trainer(is_main=False), _plan(-3.0)) is True


def test_a_plan_that_ends_the_run_inside_its_warm_up_warns_once_not_twice(clock):
    """The evaluation alone spends the budget before the warm-up ends: the run ends at the plan's step, said once
    as the budget's doing; the warm-up warning beside it ("lower --warmup-steps") would advise the wrong fix."""
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        took, trainer, rows = _budgeted_run(clock, lambda step: 1.0, budget_minutes=1.0, warmup_steps=500,
                                            eval_seconds=70.0)
    messages = [str(w.message) for w in got if issubclass(w.category, UserWarning)]
    assert trainer.step == trainer.total_steps
    assert any("the run ends there" in m for m in messages), messages
    assert not any("warm-up" in m for m in messages), messages
