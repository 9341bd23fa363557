"""What distributed runs must agree on, and what they report: a time budget's corrections each timed over
enough steps, a diverged run's train_top1, a resume that one rank refuses (every rank raises, nothing written),
and a checkpoint whose optimizer state names other trainable parameters.

Run as a script (under torchrun, by the 2-rank test here), it is that test's worker."""
from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent


# ----- finding 1: each correction timed over at least calibrate_steps --------------------------------------------
def test_every_budget_correction_times_at_least_calibrate_steps(monkeypatch):
    """Corrections were kept calibrate_steps after the plan only: a 2-rank run planned at step 24 of 117 was
    corrected at 44, 47 and 61, and a 40-s budget at 44 and 45, the second timing a single step. One slow step
    (3x, no outlier) there ended the run at 28.5 s of 40. Each correction now comes calibrate_steps after the one
    before (a closer one is dropped), and the run ends on time."""
    sys.path.insert(0, str(HERE))
    from _clock import Clock
    from test_budget import _budgeted_run

    from kizuna.train import budget as budget_mod
    from kizuna.train.budget import REPLAN_AT, TimeBudget

    b = TimeBudget(budget_minutes=1.0)
    assert b._correction_steps(24, 117, REPLAN_AT[:3]) == [44]  # was [44, 47, 61]
    for step, total in ((24, 77), (24, 174), (30, 400), (100, 2000), (24, 60)):
        kept = b._correction_steps(step, total, REPLAN_AT)
        assert all(later - earlier >= b.calibrate_steps for earlier, later in zip([step, *kept], kept)), kept
        assert all(s < total for s in kept)
    assert b._correction_steps(30, 1030, REPLAN_AT) == [130, 280, 430, 580, 730, 880]  # a long run: all six

    clock = Clock()
    monkeypatch.setattr(budget_mod.time, "perf_counter", clock)
    target = 0.67 * 60 * (1 - TimeBudget.margin)
    # one 3x step right after the first correction; a loader's bursts (3 quick steps, then one that waits)
    for pace, before in ((lambda step: 1.5 if step == 44 else 0.5, "28.5 s"),
                         (lambda step: 1.4 if step % 4 == 3 else 0.2, "64 s")):
        clock.now = 100.0
        took, trainer, rows = _budgeted_run(clock, pace, budget_minutes=0.67, warmup_steps=0)
        steps = [r["step"] for r in rows if r["kind"] in ("plan", "replan")]
        assert all(later - earlier >= 20 for earlier, later in zip(steps, steps[1:])), steps
        assert target - 1.5 <= took <= target + 1.0, (took, before)  # ended at `before` of 39 s
        assert trainer.step == trainer.total_steps


# ----- finding 3: a diverged run's train_top1 ---------------------------------------------------------------------
def test_train_top1_of_a_diverged_run_is_nan_not_the_share_of_class_0(tmp_path):
    """`vit train` at lr 1e30: the logits are NaN from step 2 on, and train_top1 was logged as a number, the
    share of class 0 in the batch (argmax of an all-NaN row is 0). A window with a non-finite logit row logs
    NaN, as the evaluation's val_top1 does; the count travels with the window's sums (and their all_reduce)."""
    sys.path.insert(0, str(HERE))
    from test_supervised import CLASSES, TINY, _shard

    from kizuna.train.logging import read_metrics
    from kizuna.train.supervised import SupervisedTrainer, make_supervised_config
    from kizuna.train.trainer import TrainingDiverged

    _shard(tmp_path / "data" / "train" / "000000.tar", 0, 32)
    (tmp_path / "data" / "classnames.txt").write_text("\n".join(CLASSES) + "\n")
    out = tmp_path / "run"
    cfg = make_supervised_config(model="mu/4", model_overrides=TINY, image_size=16, data=str(tmp_path / "data" / "train"),
                                 batch_size=8, workers=0, warmup_steps=1, out=str(out), progress=False, device="cpu",
                                 steps=3, lr=1e30, precision="fp32", log_every=1, threads=1, save_every=0)
    trainer = SupervisedTrainer(cfg)
    numbers = []
    fit = trainer.fit_batch
    trainer.fit_batch = lambda batch: numbers.append(fit(batch)) or numbers[-1]
    with pytest.raises(TrainingDiverged, match="the loss is nan by step 2"):  # stopped at its first NaN record
        trainer.train()
    rows = [r for r in read_metrics(out / "metrics.jsonl") if r["kind"] == "train"]
    assert math.isfinite(rows[0]["train_top1"]) and len(rows) == 2
    assert all(math.isnan(r["train_top1"]) for r in rows[1:]), rows
    assert [n.get("nonfinite") for n in numbers] == [0, 8]  # every row NaN after the first update
    # one non-finite row among a window's (or the ranks') summed numbers is enough
    own, short = SupervisedTrainer.window_record(trainer, {"loss": 1.0, "correct": 5, "samples": 16, "nonfinite": 1})
    assert math.isnan(own["train_top1"]) and short["acc"] == "nan"
    own, _ = SupervisedTrainer.window_record(trainer, {"loss": 1.0, "correct": 5, "samples": 16, "nonfinite": 0})
    assert own["train_top1"] == 5 / 16


# ----- finding 6: an optimizer state with other trainable parameters -----------------------------------------
def test_an_optimizer_state_of_other_parameters_names_the_checkpoint_and_the_flag(tmp_path):
    """A run started by an earlier kizuna on a CLIP-loss model with a logit bias optimised the bias (frozen now,
    one parameter fewer): the resume failed on torch's "loaded state dict contains a parameter group that
    doesn't match the size of optimizer's group", naming no file. Faked here by one parameter more in the
    checkpoint's optimizer state."""
    import pytest
    import torch

    sys.path.insert(0, str(HERE))
    from _tiny import tiny_config

    from kizuna.train.contrastive import ContrastiveTrainer

    ContrastiveTrainer(tiny_config(tmp_path / "run", steps=2, warmup_steps=1, eval_max_samples=0)).train()
    step = tmp_path / "run" / "checkpoints" / "step_0000002"
    state = torch.load(step / "train_state.pt", weights_only=False)
    group = state["optimizer"]["param_groups"][0]
    group["params"].append(max(p for g in state["optimizer"]["param_groups"] for p in g["params"]) + 1)
    torch.save(state, step / "train_state.pt")
    log = (tmp_path / "run" / "metrics.jsonl").read_text()
    with pytest.raises(ValueError) as refused:
        ContrastiveTrainer(tiny_config(tmp_path / "run", steps=4, warmup_steps=1, resume="latest"))
    said = str(refused.value)
    assert str(step) in said and "optimizer state holds other trainable parameters" in said, said
    assert f"`kizuna train --model {step}` in another --out" in said and "doesn't match" not in said, said
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == log  # refused before the log was touched
    # the flag it names starts a new run from the checkpoint's weights
    fresh = ContrastiveTrainer(tiny_config(tmp_path / "new", model=str(step), steps=1, warmup_steps=1, context_length=0))
    assert fresh.step == 0 and fresh.resume_from is None


# ----- finding 4: a resume one rank refuses -------------------------------------------------------------------
def test_a_resume_one_rank_refuses_is_refused_by_every_rank_before_anything_is_written(tmp_path):
    """Two gloo ranks train 2 steps, then resume with rank 1 given another --synthetic-length (as a node whose
    copy of the data differs): only rank 1 raised, and rank 0 rewrote metrics.jsonl (drop_after and a resume
    record) and went on into its first collective, where it died ("Connection closed by peer"). Now both
    raise, rank 0 naming rank 1, and the log is as the run left it."""
    sys.path.insert(0, str(HERE))
    from test_distributed import torchrun

    torchrun(Path(__file__), tmp_path, timeout=240)
    ranks = [json.loads((tmp_path / f"agree_rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[1]["error"] and "refused the resume" not in ranks[1]["error"], ranks  # its own message
    assert ranks[0]["error"].startswith("--resume ") and ranks[0]["error"].endswith(
        "step_0000002: rank 1 refused the resume: see its message"), ranks
    assert ranks[0]["log_before"] == ranks[0]["log_after"]  # rank 0 wrote nothing: no drop_after, no resume record


def _worker(out: Path) -> None:
    """Under torchrun: the 2-rank test's ranks. Writes agree_rank{r}.json."""
    sys.path.insert(0, str(HERE))
    from _tiny import tiny_config

    from kizuna.train.contrastive import ContrastiveTrainer
    from kizuna.train.distributed import barrier, finish_distributed

    run = out / "run"
    first = ContrastiveTrainer(tiny_config(run, steps=2, warmup_steps=1, eval_max_samples=0, device="cpu"))
    first.train()
    rank = first.dist.rank
    barrier()
    log_before = (run / "metrics.jsonl").read_text()
    length = 256 if rank == 1 else 512
    error = ""
    try:
        ContrastiveTrainer(tiny_config(run, steps=4, warmup_steps=1, eval_max_samples=0, device="cpu",
                                       synthetic_length=length, resume="latest"))
    except ValueError as e:
        error = str(e)
    barrier()
    (out / f"agree_rank{rank}.json").write_text(json.dumps({
        "error": error, "log_before": log_before,
        "log_after": (run / "metrics.jsonl").read_text()}))
    finish_distributed()
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    _worker(Path(sys.argv[1]))
