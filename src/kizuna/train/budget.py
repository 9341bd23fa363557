"""Wall-clock control of a training loop: a hard time limit, and a time budget that sizes the run.

A **time limit** stops a run early: it evaluates, saves and ends at the next step after the limit. The
learning-rate schedule is cut where it stands, so a run stopped halfway ends at a high learning rate.

A **time budget** instead decides how many steps the run gets, so that its schedule *ends* on time (the
point of Li et al., "Budgeted Training", ICLR 2020: a schedule that decays to its end within the budget
beats a longer one that is cut off). The first steps are timed; once the warm-up is over (and at least
``calibrate_steps`` steps after the first few, which carry one-off costs such as worker start-up, cuDNN
autotuning or compilation), the trainer calls :meth:`TimeBudget.plan`::

    steps left = (budget - time spent - final evaluation - final checkpoint - margin)
                 / (seconds per step + evaluation share + checkpoint share)

The checkpoints are priced by one written at the plan and deleted (a run that had saved none by then priced
them at 0 s, and its final one overran the budget by its length).

and the cosine schedule is stretched or shrunk to the new total. Until then the schedule is in its
warm-up (or just past it, where a cosine is flat), so the change of total moves the rate little: it stays at
its peak until the plan, which with a warm-up much shorter than ``calibrate_steps`` comes some steps into the
cosine, and the rate then steps down once to the planned cosine's value (by 3.3% with a 3-step warm-up and a
planned total of 183 steps; not at all with a warm-up as long as the calibration, as the shipped configs have).
That is the rate of the step right after the plan (and after a correction): it is set from the new length at
once, as a resume from a checkpoint at that step sets it (:func:`rate_on_the_new_length`).

The pace after the plan is not always the pace the plan saw: the first steps of a run are slower
(allocator, caches, a first epoch), other jobs start or stop on a shared machine or GPU. So the plan is
**corrected** at :data:`REPLAN_AT` (10, 25, 40, 55, 70 and 85% of the way from the plan's step to its end): the
same formula with the real elapsed time and the pace of the steps since the last plan or correction. (Corrected up
to 40% only, three runs sharing a GPU in a 7-minute budget ended 21% early when one of them stopped after that,
or met the hard limit mid-cosine when one started; each correction also mends the one before it, which timed a
pace half old and half new.) A correction
that ends the run before corrections still due places them anew, at their shares of the way from it to its new
end (a run that slowed for good was otherwise corrected once, on a pace half old and half new, and overran).
Every correction comes at least ``calibrate_steps`` after the plan or the correction before it (one that would
come sooner is dropped: a short run is corrected fewer times), since each times only the steps since the last.
One stall among the few steps a correction may time is not its pace (:meth:`TimeBudget.seconds_per_step`).
Early in a cosine a change of total moves the learning rate little (a 10% longer run at 40% of the way
raises it by 8% of its value there); late in it, the rate is small whatever the change (at 85% of the way, 5.5%
of the peak; a 10% longer run raises it to 12%); a run planned late (after a long warm-up) is corrected late too. On a 2-core Zen 4, 27-min runs planned once
ended 5.6% and 11.6% early (the device-augmented hybrid and plain ViT) or 4% late (the hybrid with
loaders); the plain ViT corrected ended 3.9% early (docs/RESULTS.md).

The planned total is checkpointed: a resumed run keeps the total of its checkpoint and does not correct
it (its clock restarted, so its elapsed time says nothing of the time spent before). A time limit's stop
is not a plan: a run it cut short resumes to the end of its plan; a run killed before its plan resumes with
the budget it has left (:attr:`TimeBudget.spent_before`). A resume that changes the budget (then
the time for the rest of the run) or the ``--steps`` cap (with the time spent counted) plans anew (:func:`restore_length`),
going on until then on its checkpoint's length, which a resume stopped before that plan saves for the next one;
resumed with the budget off, a budgeted run keeps its planned length unless ``--steps`` or ``--epochs`` is named,
and so do the resumes after it. A budget too
short for the warm-up is planned before the warm-up ends (the run then ends inside it, with a warning),
and a budget spent before its plan ends the run at the plan's step. In distributed runs
every rank takes the smallest plan (the slowest rank sets the pace), corrections happen at the same steps
everywhere, and all ranks agree on when to plan (a spent budget, a warm-up that does not fit: each
rank's own clock says) and on the limit, or one rank would wait forever in a collective.
"""
from __future__ import annotations

import math
import statistics
import sys
import time
import warnings
from array import array
from dataclasses import dataclass, field, fields
from fractions import Fraction

import torch

from .distributed import any_rank
from .optim import use_config_settings

__all__ = ["REPLAN_AT", "TimeBudget", "after_step", "initial_length", "length_state", "plan_run",
           "rate_on_the_new_length", "restore_length", "warn_if_warmup_fills_the_run"]

SKIP_FIRST = 3  # steps whose duration says more about start-up than about the run
# shares of the planned steps (after the plan) at which the plan is corrected. Up to 40% only, a pace that changed
# later (a run beside it on the GPU ending or starting) was never re-fitted: 21% early, or the hard limit mid-cosine
REPLAN_AT = (0.1, 0.25, 0.4, 0.55, 0.7, 0.85)
UNPLANNED = 10**9  # stands in for the length of a budgeted run until it is planned
OUTLIER = 10  # a step this many times the median is a stall, not the pace (seconds_per_step)


@dataclass
class TimeBudget:
    limit_minutes: float = 0.0  # hard stop; 0 = none
    budget_minutes: float = 0.0  # size the run to end its schedule in this time; 0 = off
    calibrate_steps: int = 20  # timed steps the plan is based on (after the first SKIP_FIRST)
    margin: float = 0.03  # share of the budget kept free for what the plan cannot see (jitter, a slow disk)
    start: float = field(default_factory=time.perf_counter)
    step_times: array = field(default_factory=lambda: array("d"))  # 8 bytes a step (a list's floats: 32)
    replan_steps: list = field(default_factory=list)  # steps at which the plan is corrected (set by the plan)
    spent_before: float = 0.0  # seconds of this budget a killed run spent before the checkpoint it resumed from
    eval_times: list = field(default_factory=list)  # the evaluations' durations since the plan (corrections read them)
    save_times: list = field(default_factory=list)  # the checkpoints' durations (the plan prices those to come)
    _last: float | None = None
    _planned_with: dict = field(default_factory=dict)  # the first plan's arguments and first timed step
    resumed_planned: bool = False  # a resume that keeps its saved plan: no plan or correction to come
    _warmup_pace: tuple | None = None  # (timed steps, seconds per step) that ready_to_plan measured last

    def __post_init__(self):
        if self.limit_minutes < 0 or self.budget_minutes < 0:
            raise ValueError("time limit and time budget must be >= 0 minutes")

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def restart(self) -> None:
        """The clock starts at the training loop, not at set-up (model building, indexing)."""
        self.start, self._last, self.step_times = time.perf_counter(), None, array("d")

    def step_done(self) -> None:
        now = time.perf_counter()
        # kept only while a plan or a correction is still to read them: every step of every run was kept
        # (31 MiB a million steps, with no budget at all)
        planning = not (self._planned_with or self.resumed_planned) or self.replan_steps
        if self._last is not None and self.budget_minutes and planning:
            self.step_times.append(now - self._last)
        self._last = now

    def evaluation_took(self, seconds: float) -> None:
        """An evaluation's duration, for the corrections: the plan timed only its own, the first of the run,
        which carries one-off costs (loader workers starting, a validation set decoded once) and made the
        evaluations still to come look dearer than they are."""
        if self._planned_with:
            self.eval_times.append(seconds)

    def save_took(self, seconds: float) -> None:
        """A checkpoint's duration: the plan and its corrections leave room for the checkpoints still to come
        (a run saving every few steps overran its budget by the time they took)."""
        self.save_times.append(seconds)

    def pause(self) -> None:
        """Called after an evaluation or a checkpoint, which happen between steps: the next step is timed
        from here, so the pause is not step time (and a step after every pause is still timed: a run that
        evaluates every step must be planned too)."""
        self._last = time.perf_counter()

    # ----- the hard limit -------------------------------------------------------------------------
    def time_is_up(self, device: torch.device) -> bool:
        """Whether the limit has passed, agreed by all ranks (any rank past it stops them all)."""
        if not self.limit_minutes:
            return False
        return any_rank(self.elapsed > self.limit_minutes * 60, device)

    # ----- the budget -------------------------------------------------------------------------------
    @property
    def usable_seconds(self) -> float:
        """What the plan may fill from the clock's start: the budget less the margin and the time an earlier,
        killed part of the run spent (resumed before its plan, it had the whole budget again)."""
        return self.budget_minutes * 60 * (1 - self.margin) - self.spent_before

    def ready_to_plan(self, step: int, warmup_steps: int, device: torch.device | None = None) -> bool:
        """After the warm-up and the calibration steps; or before, when the warm-up itself would not fit
        in the budget (the plan then ends the run inside its warm-up, and says so), or when the budget is
        spent already (slow first steps: the plan ends the run at its own step).

        The last two read this process's clock, so under torchrun (``device`` given) the ranks agree: any
        rank that is ready makes them all ready (one all_reduce of a flag per step, only while a budgeted
        run is not yet planned). Decided alone, one rank went into the plan's evaluation and all_reduce
        while the others stepped on: a gloo "collective mismatch", or a hang."""
        if not self.budget_minutes or not self.step_times:  # the same on every rank
            return False
        ready = self.elapsed >= self.usable_seconds
        if not ready and len(self.step_times) >= SKIP_FIRST + self.calibrate_steps:
            ready = step >= warmup_steps or (
                self.elapsed + (warmup_steps - step) * self._pace_in_warmup() > self.usable_seconds)
        return any_rank(ready, device)

    def _consumed(self) -> int:
        """The timed steps a plan or correction has read are dropped but for the last few (what the next one
        falls back to if no step is timed before it); returns how many are left, where the next one starts."""
        del self.step_times[:max(0, len(self.step_times) - 100)]
        return len(self.step_times)

    def _pace_in_warmup(self) -> float:
        """:meth:`seconds_per_step` for the warm-up's check, measured again once the timed steps grew by 1%:
        measured at every step (it sorts every time), a 100,000-step warm-up spent 29 ms a step on it, inside
        the steps it times."""
        n = len(self.step_times)
        if self._warmup_pace is None or n >= 1.01 * self._warmup_pace[0] + 1:
            self._warmup_pace = (n, self.seconds_per_step())
        return self._warmup_pace[1]

    def seconds_per_step(self, first: int = SKIP_FIRST) -> float:
        """Mean of the timed steps from the ``first``-th on (by default all but the first few), less a stall: the
        slowest step when it is over :data:`OUTLIER` times the median and no other step is.

        The mean, not the median: a run whose loader sets the pace has bursty steps (several quick ones while
        prefetched batches last, then one that waits for the workers), and the budget is spent at the mean.
        Planned on the median, a 6-minute CIFAR-10 run on an H200 took 8 (34 ms median, 47 ms mean) and a
        27-minute CPU run 29.6. One stall (the process stopped a while, another job's burst) is not the pace of
        every step left: taken for it, a 30-s run ended at 19 s. A stall that recurs is: the loader workers
        refilling at each epoch's start come every few hundred steps, and leaving out the slowest 1% of the
        steps (as this did) left every one of them out: a 10-minute run with a 5-s stall every 195 steps
        overran by 1.8%, a short one by 16-23%. (A one-off stall that falls into a window with another, or an
        isolated pause longer windows used to drop, now shortens the run until the next correction mends it.)
        """
        times = sorted(self.step_times[first:] or self.step_times[SKIP_FIRST:] or self.step_times)
        dropped = 0
        if len(times) > 2:
            bar = OUTLIER * statistics.median(times)
            dropped = 1 if times[-1] > bar >= times[-2] else 0
        elif len(times) == 2 and times[-1] > OUTLIER * times[0]:
            dropped = 1
        return statistics.fmean(times[:len(times) - dropped])

    def plan(self, step: int, cap: int = 0, eval_seconds: float = 0.0, eval_every: int = 0,
             device: torch.device | None = None, save_every: int = 0) -> dict:
        """The total number of steps that ends training within the budget (see the module docstring).

        ``eval_seconds``: what one evaluation costs (0 without one); it is paid once at the end and every
        ``eval_every`` steps on the way; a checkpoint (the median of those timed so far) likewise, every
        ``save_every`` steps and at the end. ``cap`` (> 0) bounds the total from above. Returns the plan as
        a dict for the log: ``total_steps``, ``seconds_per_step``, ``eval_seconds``, ``save_seconds``,
        ``remaining_s``.
        """
        first_plan = not self._planned_with
        per_step = self.seconds_per_step(SKIP_FIRST if first_plan else self._planned_with["first_timed"])
        save_seconds = statistics.median(self.save_times[-5:]) if self.save_times else 0.0
        remaining = self.usable_seconds - self.elapsed - eval_seconds - save_seconds
        per_step_all = (per_step + (eval_seconds / eval_every if eval_every else 0.0)
                        + (save_seconds / save_every if save_every else 0.0))
        # spent (slow first steps, an evaluation longer than the budget): the run ends here, on the plan's
        # evaluation (one more step evaluated again: a 3-s budget with a 7.5-s evaluation ended at 19 s)
        left = max(1, math.floor(remaining / per_step_all)) if remaining > 0 else 0
        total = step + left
        capped = bool(cap) and total > max(cap, step)  # (the budget would fill more: said in the plan's line)
        if cap:
            total = min(total, max(cap, step))  # planned at the cap's own step: the run ends there
        if device is not None and torch.distributed.is_available() and torch.distributed.is_initialized():
            t = torch.tensor([float(total)], dtype=torch.float64, device=device)  # float32: exact to 2^24 only
            torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MIN)
            total = int(t.item())
        if first_plan:  # the corrections: at fixed steps (the same on every rank), on the pace from here on
            self._planned_with = {"cap": cap, "eval_seconds": eval_seconds, "eval_every": eval_every,
                                  "save_every": save_every, "first_timed": self._consumed()}
            self.replan_steps = self._correction_steps(step, total, REPLAN_AT)
        return {"total_steps": int(total), "seconds_per_step": per_step, "eval_seconds": eval_seconds,
                "save_seconds": save_seconds, "remaining_s": remaining, "budget_minutes": self.budget_minutes,
                "planned_at_step": step, "capped_by_steps": capped}

    def replan(self, step: int, device: torch.device | None = None) -> dict | None:
        """The corrected plan when ``step`` is one of :attr:`replan_steps` (else None): the first plan's
        formula with the elapsed time now and the pace of the steps timed since the last plan or correction
        (the recent pace, hundreds of steps); an evaluation costs the median of those since the plan (the
        plan's own, the run's first, carried one-off costs), or the plan's when there were none yet. A
        correction that ends the run before any correction still due places all of those anew from here (one
        that falls past the new end only: otherwise they keep their steps)."""
        if step not in self.replan_steps:
            return None
        self.replan_steps.remove(step)
        w = self._planned_with
        eval_seconds = w["eval_seconds"]
        if self.eval_times and eval_seconds:  # the median: one slow evaluation is not the pace
            eval_seconds = statistics.median(self.eval_times[-5:])
        plan = self.plan(step, cap=w["cap"], eval_seconds=eval_seconds, eval_every=w["eval_every"], device=device,
                         save_every=w.get("save_every", 0))
        w["first_timed"] = self._consumed()  # the next correction reads the pace from here on
        if any(s >= plan["total_steps"] for s in self.replan_steps):
            # this correction ends the run before corrections still due, which would never come: a run that
            # slowed for good was corrected once, on a pace half old and half new, and overran its budget.
            # They are placed anew, at their shares of the way from here to the new end (every rank has the
            # same step and total), all of them: also one the run would still reach, which comes sooner, on
            # the new pace (a run that slowed for good needs its next correction soon).
            self.replan_steps = self._correction_steps(step, plan["total_steps"],
                                                       REPLAN_AT[len(REPLAN_AT) - len(self.replan_steps):])
        return plan

    def _correction_steps(self, step: int, total: int, shares) -> list:
        """The steps at ``shares`` of the way from ``step`` to ``total``, each at least ``calibrate_steps``
        after ``step`` and after the correction before it (a correction times only the steps since the last
        one, and a pace needs that many: one that would come sooner is dropped), and before ``total``. Kept
        only from ``step``, two corrections of a short run came 1-3 steps apart, and one slow or quick step
        set the pace of the rest (a 40-s run ended at 28 s, or at 64)."""
        kept, last = [], step
        for s in sorted({step + max(self.calibrate_steps, round(share * (total - step))) for share in shares}):
            if s >= total:
                break
            if s - last >= self.calibrate_steps:
                kept.append(s)
                last = s
        return kept


def initial_length(cfg, steps_per_epoch: int) -> tuple[int, bool]:
    """(total steps, planned) at the start of a run: from ``steps`` or ``epochs``, or, with a time budget,
    open (``steps`` as a cap, else :data:`UNPLANNED`) until :func:`plan_run` fixes it. The schedule reads
    the total only after its warm-up, and the plan comes right after the warm-up."""
    if cfg.time_budget_minutes:
        return cfg.steps or UNPLANNED, False
    # exactly (the epochs as written): a float product, 0.07 * 100 = 7.000000000000001, ran 8 steps, not 7
    return cfg.steps or max(1, math.ceil(Fraction(str(cfg.epochs)) * steps_per_epoch)), True


def plan_run(trainer, bar=None) -> dict:
    """Fix a trainer's length from its measured step time (the budget's plan); both trainers call this.

    ``trainer`` has ``cfg`` (``time_budget_minutes``, ``steps``, ``eval_every``), ``budget``, ``step``,
    ``total_steps``, ``planned``, ``steps_per_epoch``, ``device``, ``logger`` and ``evaluate()``, and where it
    trains ``optimizer``, ``scheduler`` and ``optimizer_settings()`` (:func:`rate_on_the_new_length`). One
    evaluation is run and timed here and logged as usual, so the plan can leave room for the evaluations
    still to come. Returns that evaluation's metrics ({} when the trainer has nothing to evaluate).
    """
    cfg = trainer.cfg
    t0 = time.perf_counter()
    metrics = trainer.evaluate()
    eval_s = time.perf_counter() - t0 if metrics else 0.0
    if metrics:
        trainer.logger.log(trainer.step, metrics, kind="eval")
    if not trainer.budget.save_times and hasattr(trainer, "time_a_checkpoint"):  # (the budget's tests' stand-ins)
        trainer.budget.save_took(trainer.time_a_checkpoint())  # the final checkpoint's price, and --save-every's
    plan = trainer.budget.plan(trainer.step, cap=cfg.steps, eval_seconds=eval_s, eval_every=cfg.eval_every,
                               device=trainer.device, save_every=cfg.save_every)
    trainer.total_steps, trainer.planned = plan["total_steps"], True
    rate_on_the_new_length(trainer)
    trainer.logger.log(trainer.step, plan, kind="plan")
    if bar is not None:
        bar.total = trainer.total_steps
        bar.refresh()
        if trainer.dist.is_main:  # every rank has a bar (hidden but for rank 0); one line per run
            bar.write(f"time budget {cfg.time_budget_minutes:g} min: {plan['seconds_per_step'] * 1e3:.0f} ms per step"
                      + (f", {eval_s:.1f} s per evaluation" if metrics else "")
                      + f" -> {trainer.total_steps} steps ({trainer.total_steps / trainer.steps_per_epoch:.1f} epochs)"
                      + (f", capped by --steps {cfg.steps} (--steps 0 lets the budget fill its time)"
                         if plan.get("capped_by_steps") else ""))
    if not warn_if_it_ends_here(trainer, plan, evaluated=bool(metrics)) and (
            trainer.total_steps <= cfg.warmup_steps and trainer.dist.is_main):
        # through warnings, so the command prints it in its own voice ("kizuna train: warning: ...")
        # (at the warm-up's last step the peak is reached, at that step only)
        reach = ("never reaches its peak or decays" if trainer.total_steps < cfg.warmup_steps else
                 "reaches its peak at the last step only and never decays")
        warnings.warn(f"the time budget of {cfg.time_budget_minutes:g} min ends the run at step {trainer.total_steps}, "
                      f"inside its warm-up of {cfg.warmup_steps} steps: the learning rate {reach}. Lower "
                      "--warmup-steps or raise --time-budget-minutes", stacklevel=2)
    trainer.budget.pause()
    return metrics


def warn_if_it_ends_here(trainer, plan: dict, evaluated: bool = False) -> bool:
    """Whether ``plan`` (the plan's or a correction's) ends the run at the step it was made at, the budget left too
    short for another step and the final evaluation and checkpoint; said on the main rank. ``evaluated``: the plan
    timed its own evaluation just now."""
    if plan["remaining_s"] > 0 or trainer.total_steps != trainer.step:
        return False
    if trainer.dist.is_main:
        end = plan["eval_seconds"] + plan["save_seconds"]
        left = plan["remaining_s"] + end  # (remaining_s is less the final evaluation and checkpoint)
        if left <= 0:
            state = f"was spent by step {trainer.step}" + (
                f" (its evaluation took {plan['eval_seconds']:.1f} s)" if evaluated else "")
        else:  # (a third of the budget may be left: "spent" it was not)
            state = (f"has {left:.1f} s left at step {trainer.step}, too few for another step and the final "
                     f"evaluation and checkpoint ({end:.1f} s)")
        warnings.warn(f"the time budget of {trainer.cfg.time_budget_minutes:g} min {state}: the run ends there. "
                      "Raise --time-budget-minutes" + (" or lower the evaluation's size" if plan["eval_seconds"]
                                                       else ""), stacklevel=3)
    return True


def rate_on_the_new_length(trainer) -> None:
    """The next step's rate, read from the length a plan or correction just set. The scheduler computed it in
    ``apply_gradients()``, before this step's plan, from the old length: the step after a plan went at the
    open length's rate (the peak), and a run resumed from a checkpoint at that step, whose rate the resume
    reads from the saved (new) length, did not go on as the run had. Set as the resume sets it
    (:func:`~kizuna.train.optim.use_config_settings` with the run's settings), so the two agree."""
    if getattr(trainer, "scheduler", None) is None:  # a stand-in trainer without a schedule (the budget's tests)
        return
    use_config_settings(trainer.optimizer, trainer.scheduler, trainer.cfg.lr, trainer.cfg.weight_decay,
                        **trainer.optimizer_settings())


def after_step(trainer, bar=None) -> dict:
    """Both trainers call this after every optimizer step: it times the step, plans the run's length once
    the budget is ready to, and ends the run at the hard limit (``total_steps`` set to the current step,
    so the loop evaluates, saves and stops). Returns the plan's evaluation metrics ({} otherwise)."""
    budget, cfg = trainer.budget, trainer.cfg
    budget.step_done()
    metrics = {}
    if not trainer.planned and budget.ready_to_plan(trainer.step, cfg.warmup_steps, trainer.device):
        metrics = plan_run(trainer, bar)
    elif (plan := budget.replan(trainer.step, trainer.device)) is not None:
        before, trainer.total_steps = trainer.total_steps, plan["total_steps"]
        rate_on_the_new_length(trainer)
        trainer.logger.log(trainer.step, plan, kind="replan")
        warn_if_it_ends_here(trainer, plan)  # (a stall since the plan: the correction ends the run at its step)
        if bar is not None:
            bar.total = trainer.total_steps
        if bar is not None and trainer.dist.is_main:
            bar.write(f"time budget: {plan['seconds_per_step'] * 1e3:.0f} ms per step lately -> "
                      f"{trainer.total_steps} steps (was {before})")
    if budget.time_is_up(trainer.device) and trainer.step < trainer.total_steps:
        if bar is not None and trainer.dist.is_main:
            of = f"/{trainer.total_steps}" if trainer.planned else " (before the budget planned the run)"
            bar.write(f"time limit of {cfg.time_limit_minutes:g} min reached at step {trainer.step}{of}; "
                      "evaluating and saving")
        trainer.length_before_limit = trainer.total_steps  # the plan, for a resume to continue
        trainer.total_steps = trainer.step
    return metrics


def warn_if_warmup_fills_the_run(trainer) -> None:
    """A warm-up as long as a run of known length leaves no room for the cosine (``vit finetune``'s default
    100 steps do on a dataset of under ~1,300 images at batch 128 and 10 epochs). A budgeted run not yet
    planned is known to be no longer than its ``--steps`` cap (its plan can only shorten it): ``--steps 10``
    with a 100-step warm-up warned without a budget and said nothing with one."""
    cfg = trainer.cfg
    length = trainer.total_steps if trainer.planned else cfg.steps  # 0: a budget without a cap, not known yet
    # the step after the warm-up is at the peak (the cosine starts there, OpenCLIP's convention): a warm-up of
    # all steps but one leaves no decay either
    if length and cfg.warmup_steps and cfg.warmup_steps >= length - 1 and trainer.dist.is_main:
        run = f"({length} steps" + ("" if trainer.planned else ", its --steps cap") + ")"
        what = (f"lasts the whole run {run}" if cfg.warmup_steps >= length else
                f"leaves one step of the run {run}, at the peak")
        warnings.warn(f"the warm-up ({cfg.warmup_steps} steps) {what}: the learning rate never decays"
                      + (" and never reaches --lr" if cfg.warmup_steps > length else "")
                      + ". Lower --warmup-steps", stacklevel=2)


def length_state(trainer) -> dict:
    """What a checkpoint keeps of the run's length: the planned length, not a time limit's cut (a resumed
    run continues to the end of its plan), and whether a budget set it (a resume with the budget off keeps it)."""
    from_budget = bool(trainer.planned and (trainer.budget.budget_minutes or getattr(trainer, "length_from_budget", 0)))
    return {"total_steps": getattr(trainer, "length_before_limit", None) or trainer.total_steps,
            "planned": trainer.planned, "budget_seconds_spent": trainer.budget.spent_before + trainer.budget.elapsed,
            "length_from_budget": from_budget}


RELENGTH = ("steps", "time_budget_minutes")  # changed on a resume, they plan a budgeted run's length anew


def restore_length(trainer, state: dict) -> None:
    """A run resumed after its plan keeps the length the budget gave it (also when a time limit stopped it
    early). A resume that changes ``--time-budget-minutes`` (then the time for the rest of the run) or the
    ``--steps`` cap plans the rest anew; until that plan the saved length holds, made long enough to reach the
    plan (past the calibration steps and the warm-up): a finished run being extended gets a length just past
    the calibration steps, so its rate goes back up from the end of its cosine to that length's value, and the
    plan then stretches the cosine over the new length. A resume stopped before that plan saves that length
    unplanned, and the next resume goes on from it the same way (it went back to the open length: the rate
    at the peak until the plan). With the budget unchanged, that plan counts the time the run spent before.

    ``--time-budget-minutes 0`` on a budgeted run keeps the length its budget planned, unless ``--steps`` or
    ``--epochs`` is named (the length came from ``--epochs``' default: a planned 80-step run became 125 steps,
    at 8 times the rate); the length is said either way. Its checkpoints say the length is the budget's
    (``length_from_budget``), so the resumes after it keep it too."""
    saved_total, saved_cfg = int(state.get("total_steps", 0)), state.get("train_config", {})
    if not trainer.cfg.time_budget_minutes:
        # a budget's length, also one a resume with the budget off kept (its checkpoint has the budget at 0: the
        # next resume took --epochs' default, and a planned 60-step run became 256 steps)
        if saved_cfg.get("time_budget_minutes") or state.get("length_from_budget"):
            _length_without_the_budget(trainer, saved_total, bool(state.get("planned")))
        return
    changed = [f for f in RELENGTH if f in saved_cfg and getattr(trainer.cfg, f) != saved_cfg[f]]
    if "time_budget_minutes" not in changed:
        # the same budget: a plan to come leaves out the time spent (a new --steps cap alone granted the whole
        # budget again: a 30-second run trained 45)
        trainer.budget.spent_before = float(state.get("budget_seconds_spent", 0.0))
    if not state.get("planned") and saved_total in (0, UNPLANNED):
        return  # killed before its plan on the open length (initial_length's): the plan to come sizes it
    if state.get("planned") and not changed:
        trainer.total_steps, trainer.planned = saved_total, True
        trainer.budget.resumed_planned = True  # (its step times were kept to the end, for no plan to read)
        return
    # to be planned (anew): the schedule goes on from the saved length until the plan, which comes once the
    # calibration steps are timed and the warm-up is over (ready_to_plan; a run resumed inside a long warm-up
    # ended unplanned 24 steps on, with its budget unused)
    plan_at = max(trainer.step + SKIP_FIRST + trainer.budget.calibrate_steps, getattr(trainer.cfg, "warmup_steps", 0))
    interim = max(saved_total, plan_at + 1)
    trainer.total_steps = min(interim, trainer.cfg.steps) if trainer.cfg.steps else interim
    trainer.planned = False


def _length_without_the_budget(trainer, saved_total: int, planned: bool) -> None:
    """A budgeted run resumed with the budget off: its planned length unless ``--steps`` or ``--epochs`` is
    named (``trainer.total_steps`` holds :func:`initial_length`'s from them), and the length said."""
    cfg, named = trainer.cfg, getattr(trainer, "named", None)
    if named is None:  # a config built in Python: a field off its default counts as named (as for the resume)
        named = frozenset(f.name for f in fields(cfg) if f.name in ("steps", "epochs")
                          and getattr(cfg, f.name) != f.default)
    if planned and not {"steps", "epochs"} & named:
        trainer.total_steps, trainer.length_from_budget = saved_total, True  # saved as the budget's (length_state)
        why = "the length its budget planned; --steps or --epochs sets another"
    else:
        why = "from --steps" if cfg.steps else f"from --epochs {cfg.epochs:g}"
    if getattr(trainer, "dist", None) is None or trainer.dist.is_main:
        print(f"--time-budget-minutes 0: the run has {trainer.total_steps} steps ({why})", file=sys.stderr)
