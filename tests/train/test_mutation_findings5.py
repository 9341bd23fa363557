"""The code added to the trainers since the fourth mutation hunt (the time budget's stall filter, its checkpoint
pricing and re-placed corrections, the resume's checkpoint checks and folder lock, the kept head's class order,
the fine-tune's dropped architecture keys), checked against values worked out by hand: a fifth mutation hunt
found each of these unchecked."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _clock import _steps  # noqa: E402

from kizuna.train import budget as budget_mod  # noqa: E402
from kizuna.train.budget import SKIP_FIRST, TimeBudget  # noqa: E402


# ----------------------------------------------------------------------------- the time budget
def test_one_stall_far_off_the_median_is_dropped_and_a_loaders_wait_is_not():
    """Among fewer than 100 steps, the slowest is dropped when over 10x the median (OUTLIER): a 15x stall is not
    the pace, a 5x wait is. Kills OUTLIER raised (the stall counted) and the drop of one step removed."""
    b = TimeBudget(calibrate_steps=20)
    b.step_times = [1.0] * SKIP_FIRST + [0.1] * 19 + [1.5]  # one step at 15x the median
    assert b.seconds_per_step() == pytest.approx(0.1)
    b.step_times = [1.0] * SKIP_FIRST + [0.1] * 19 + [0.5]  # 5x: a loader's wait, part of the pace
    assert b.seconds_per_step() == pytest.approx((19 * 0.1 + 0.5) / 20)


def test_the_plan_prices_a_checkpoint_at_the_median_of_the_latest_five():
    """Checkpoints got slower (a larger run folder, a busier disk): the plan reads the last five, not the first.
    Kills save_times[:5] for save_times[-5:]."""
    b = TimeBudget(budget_minutes=1.0, margin=0.0)
    b.step_times = [0.1] * 40
    b.save_times = [1.0] * 5 + [3.0] * 5
    plan = b.plan(30, save_every=10)
    assert plan["save_seconds"] == 3.0
    # the final checkpoint is left out of the time, and 3 s every 10 steps of 0.1 s adds 0.3 s a step
    assert plan["remaining_s"] == pytest.approx(60.0 - b.elapsed - 3.0)


def test_a_correction_ending_the_run_on_a_correction_still_due_places_the_rest_anew(clock, monkeypatch):
    """Plan at step 10 (0.5-s steps, 60 s) -> 120 steps, corrections at 21, 38 and 54. Slowed to 1.92 s, the
    first correction ends the run at 21 + floor((55 - 11 * 1.92) / 1.92) = 38: exactly on the one due next,
    which the run never makes (step == total ends it). The rest are placed from 21 to 38: 21 + max(5, 4) = 26
    and 21 + max(5, 7) = 28, which comes 2 steps after 26 (under calibrate_steps) and is dropped. Kills the
    re-placing test `>=` weakened to `>`, and the spacing measured from the correction instead of the one before."""
    monkeypatch.setattr(budget_mod, "REPLAN_AT", (0.1, 0.25, 0.4))  # the mechanism, on the first three shares
    b = TimeBudget(budget_minutes=1.0, margin=0.0, calibrate_steps=5)
    b.restart()
    b.step_done()
    _steps(b, clock, [0.5] * 10)
    first = b.plan(step=10)
    assert first["total_steps"] == 120 and b.replan_steps == [21, 38, 54]
    _steps(b, clock, [1.92] * 11)
    corrected = b.replan(21)
    assert corrected["total_steps"] == 38
    assert b.replan_steps == [26]

    # the last one due, alone on the new end: kept at the pace (0.5 s) to 38, then slowed to 1.48 s the
    # correction at 38 ends the run at 38 + floor((49.5 - 17 * 1.48) / 1.48) = 54, on the last correction,
    # which is placed anew at 38 + max(5, round(0.4 * 16)) = 44
    clock.now = 100.0
    b = TimeBudget(budget_minutes=1.0, margin=0.0, calibrate_steps=5)
    b.restart()
    b.step_done()
    _steps(b, clock, [0.5] * 10)
    assert b.plan(step=10)["total_steps"] == 120
    _steps(b, clock, [0.5] * 11)
    assert b.replan(21)["total_steps"] == 120 and b.replan_steps == [38, 54]
    _steps(b, clock, [1.48] * 17)
    assert b.replan(38)["total_steps"] == 54
    assert b.replan_steps == [44]


def test_the_step_after_a_correction_goes_at_the_rate_of_the_corrected_length(clock):
    """The scheduler sets the next step's rate in apply_gradients(), before the step's correction changes the
    length: the rate is set again from the new length (as a resume from that step sets it). Steps of 0.1 s
    slowing to 0.2 s make each correction shorten the run; right after each, the rate is the cosine's on the
    corrected length. Kills the rate left at the old length's after a correction."""
    from types import SimpleNamespace

    from kizuna.train import budget as budget_mod
    from kizuna.train.optim import cosine_lr, make_scheduler

    from test_budget import _Log

    weight = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([weight], lr=0.5)
    cfg = SimpleNamespace(warmup_steps=0, steps=0, eval_every=0, save_every=0, time_budget_minutes=1.0,
                          time_limit_minutes=0.0, lr=0.5, weight_decay=0.0)
    trainer = SimpleNamespace(cfg=cfg, budget=TimeBudget(budget_minutes=1.0, calibrate_steps=20), step=0,
                              total_steps=budget_mod.UNPLANNED, planned=False, steps_per_epoch=100,
                              device=torch.device("cpu"), logger=_Log(), evaluate=dict,
                              dist=SimpleNamespace(is_main=True), optimizer=optimizer,
                              optimizer_settings=dict)
    trainer.scheduler = make_scheduler(optimizer, lambda: trainer.total_steps, 0)
    trainer.budget.restart()
    trainer.budget.step_done()
    rate_after = {}
    while trainer.step < trainer.total_steps:
        clock.now += 0.1 if trainer.step < 60 else 0.2
        optimizer.step()
        trainer.scheduler.step()  # apply_gradients(): the next step's rate, from the length before this step's plan
        trainer.step += 1
        budget_mod.after_step(trainer)
        rate_after[trainer.step] = optimizer.param_groups[0]["lr"]
    plan = next(r for r in trainer.logger.rows if r["kind"] == "plan")
    replans = [r for r in trainer.logger.rows if r["kind"] == "replan"]
    assert replans and replans[0]["total_steps"] < plan["total_steps"]  # the slow-down shortened the run
    for r in [plan, *replans]:
        assert rate_after[r["step"]] == pytest.approx(0.5 * cosine_lr(r["step"], r["total_steps"], 0), rel=1e-12)


# ----------------------------------------------------------------------------- checkpoints
def _tiny_vit():
    from kizuna.models.vit import VisionConfig, VisionTransformer

    return VisionTransformer(VisionConfig(image_size=8, patch_size=4, width=8, depth=1, heads=2, num_classes=2))


def test_the_typographic_attack_rate_is_best_at_its_lowest():
    """The share of answers that follow a written word: best/ picked as the highest was the model most fooled.
    Kills lower_is_better without its ``endswith("attack_rate")``."""
    from kizuna.train.checkpointing import CheckpointManager, lower_is_better

    assert lower_is_better("typographic/attack_rate") and lower_is_better("Typographic/Attack_Rate")
    assert CheckpointManager("unused", metric="typographic/attack_rate").mode == "min"
    assert not lower_is_better("typographic/accuracy")


def test_a_run_with_no_best_yet_resumed_by_a_metric_does_not_start_best_afresh(tmp_path):
    """A run that had no best value (no best metric, or none measured yet) has no best to restart: the resume
    said "best/ starts afresh: the run picked it by the max of None". Kills load_into without its
    ``best_value is not None``; the one with a value measured by another metric does restart."""
    from kizuna.train.checkpointing import CheckpointManager

    CheckpointManager(tmp_path / "a").save(2, _tiny_vit(), {"step": 2})
    resumed = CheckpointManager(tmp_path / "a", metric="val_top1")
    resumed.load_into(tmp_path / "a" / "checkpoints" / "step_0000002", _tiny_vit())
    assert resumed.best_restarted is None and resumed.best_value is None

    by_loss = CheckpointManager(tmp_path / "b", metric="val_loss")
    by_loss.update_best(1, _tiny_vit(), {"val_loss": 0.7})
    by_loss.save(2, _tiny_vit(), {"step": 2})
    other = CheckpointManager(tmp_path / "b", metric="val_top1")
    other.load_into(tmp_path / "b" / "checkpoints" / "step_0000002", _tiny_vit())
    assert other.best_restarted == ("val_loss", "min") and other.best_value is None


@pytest.mark.parametrize("free, said", [(3 * 2**30, "3.0 GiB free there"), (5 * 2**20, "5.0 MiB free there")])
def test_a_failed_checkpoint_says_the_free_space_in_its_unit(tmp_path, monkeypatch, free, said):
    """GiB from 1 GiB up, MiB below. Kills the GiB threshold moved."""
    import shutil
    from types import SimpleNamespace

    from kizuna.train import checkpointing
    from kizuna.train.checkpointing import CheckpointManager

    manager = CheckpointManager(tmp_path)

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpointing, "save_model", full)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: SimpleNamespace(total=free, used=0, free=free))
    with pytest.raises(OSError, match=said):
        manager.save(1, _tiny_vit(), {"step": 1})


def test_resume_latest_with_no_checkpoints_names_the_set_aside_ones(tmp_path):
    """A fresh run into the folder set the earlier run's checkpoints aside as checkpoints.prev: `--resume latest`
    names them and how to continue one. Kills the hint's folder name changed."""
    from kizuna.train.checkpointing import CheckpointManager

    CheckpointManager(tmp_path).save(2, _tiny_vit(), {"step": 2})
    (tmp_path / "checkpoints").rename(tmp_path / "checkpoints.prev")
    (tmp_path / "checkpoints").mkdir()
    prev = tmp_path / "checkpoints.prev"
    with pytest.raises(FileNotFoundError) as info:
        CheckpointManager(tmp_path).resolve("latest")
    message = str(info.value)
    assert f"no checkpoint under {tmp_path / 'checkpoints'}" in message
    assert f"an earlier run's are in {prev}" in message and f"--resume {prev}/step_N" in message
    with pytest.raises(FileNotFoundError) as info:  # nothing set aside: no hint
        CheckpointManager(tmp_path / "empty").resolve("latest")
    assert "earlier run" not in str(info.value)


def test_a_resume_naming_another_existing_checkpoint_is_refused_and_the_same_one_otherwise_spelt_is_not(
        tmp_path, monkeypatch):
    """--init spelt otherwise (./base, an absolute path) is the run's own; another checkpoint that exists is not
    (it would be ignored: the run goes on with its own model). Kills _same_setting taking any two existing
    paths for the same."""
    from types import SimpleNamespace

    from kizuna.train.checkpointing import check_resume_settings

    (tmp_path / "base").mkdir()
    (tmp_path / "other").mkdir()
    monkeypatch.chdir(tmp_path)
    step = tmp_path / "run" / "checkpoints" / "step_0000004"
    saved = {"init": "base"}
    for spelt in ("./base", str(tmp_path / "base"), "base/"):
        check_resume_settings(saved, SimpleNamespace(init=spelt), ("init",), step, frozenset({"init"}))
    with pytest.raises(ValueError) as info:
        check_resume_settings(saved, SimpleNamespace(init="other"), ("init",), step, frozenset({"init"}))
    message = str(info.value)
    assert "init='other' (the run has 'base')" in message
    assert f"kizuna vit train --out {tmp_path / 'run'} --resume latest" in message


# ----------------------------------------------------------------------------- training data
def test_a_dataset_root_with_a_capitalised_train_split_names_it_and_only_the_held_out_ones(tmp_path):
    """Train/ (as Kaggle ships it) is the training split whatever its case: the refusal names test and val as
    held out, and Train as the one to pass. Kills the case-sensitive ``!= "train"`` and the first split folder
    (test, in SPLIT_NAMES order) offered instead of the training one."""
    from kizuna.train.data import _refuse_a_root_with_held_out_splits

    for split in ("test", "val", "Train"):
        (tmp_path / split).mkdir()
        (tmp_path / split / "a.jpg").write_bytes(b"")
    with pytest.raises(ValueError) as info:
        _refuse_a_root_with_held_out_splits(str(tmp_path))
    message = str(info.value)
    assert "it would train on test and val too" in message
    assert message.endswith(f"e.g. --data {tmp_path / 'Train'}")
    _refuse_a_root_with_held_out_splits(str(tmp_path / "Train"))  # the split itself: fine


def test_a_synthetic_epoch_draws_its_own_scenes_whatever_the_keys_shape():
    """Epoch e's slot i is scene e * length + i, for the sampler's key ``(i, epoch)`` and ``(i, epoch, draw)`` as
    for a bare ``i``. Kills _scene reading the epoch as 0 from a tuple key (every epoch the same scenes)."""
    from kizuna.train.data import SyntheticPairs

    ds = SyntheticPairs(8, 16, transform=lambda image: image)
    assert ds[3]["key"] == "synthetic-3"
    assert ds[(3, 1)]["key"] == "synthetic-11" and ds[(3, 2, 5)]["key"] == "synthetic-19"
    assert ds[(3, 1)]["caption"] == ds.world[11][1] and ds[(3, 1)]["index"] == 3


# ----------------------------------------------------------------------------- the trainer's loop
def test_every_checkpoint_is_timed_for_the_budget(tmp_path):
    """The plan and its corrections price the checkpoints to come from those timed so far: a 2-step run saving
    every step times two. Kills the loop without its ``budget.save_took``."""
    from _tiny import tiny_config

    from kizuna.train.contrastive import ContrastiveTrainer

    trainer = ContrastiveTrainer(tiny_config(tmp_path, steps=2, save_every=1, warmup_steps=1, precision="fp32"))
    trainer.evaluate, trainer._draw_curves = dict, lambda: None  # only the checkpoints matter here
    trainer.train()
    assert len(trainer.budget.save_times) == 2 and all(t > 0 for t in trainer.budget.save_times)
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("step_*")) == ["step_0000001", "step_0000002"]


# ----------------------------------------------------------------------------- the ViT trainer
def test_a_window_with_nonfinite_logits_logs_no_train_accuracy():
    """NaN logits' argmax is class 0, not a prediction: a window with any image whose logits hold NaN or inf
    logs train_top1 as NaN (a diverged run logged the share of class 0). Kills the NaN dropped."""
    import math

    from kizuna.train.supervised import SupervisedTrainer

    record, short = SupervisedTrainer.window_record(None, {"correct": 3, "samples": 4, "nonfinite": 1})
    assert math.isnan(record["train_top1"]) and short == {"acc": "nan"}
    record, _ = SupervisedTrainer.window_record(None, {"correct": 3, "samples": 4, "nonfinite": 0})
    assert record["train_top1"] == 0.75


def test_a_finetunes_config_file_architecture_is_dropped_and_named():
    """`vit finetune CKPT --config FILE`: the checkpoint fixes the model, so the file's model and
    model_overrides (off their defaults) are dropped, with a warning naming them; without init they stay.
    Kills drop_file_architecture returning the file's settings as they were, and its warning's key list
    emptied."""
    from kizuna.train.supervised import SupervisedConfig, drop_file_architecture

    base = {"model": "S/4-not-default", "model_overrides": {"depth": 2}, "lr": 0.1, "data": "d"}
    with pytest.warns(UserWarning, match=r"the config's model and model_overrides are not used: a fine-tune's "
                                         r"model is its checkpoint's \(ckpt\)"):
        assert drop_file_architecture(dict(base), {"init": "ckpt"}) == {"lr": 0.1, "data": "d"}
    with pytest.warns(UserWarning, match=r"the config's model_overrides are not used"):  # model at its default
        kept = drop_file_architecture({**base, "model": SupervisedConfig.model, "init": "ckpt"}, {})
    assert kept == {"lr": 0.1, "data": "d", "init": "ckpt"}
    assert drop_file_architecture(dict(base), {}) == base  # trained from scratch: the file's model


def test_a_resumed_sgd_run_takes_the_momentum_of_its_command_line():
    """The optimizer's saved state carries the old momentum; the resume (and a plan's rate) sets the command
    line's, as for AdamW's betas and eps. Kills optimizer_settings without SGD's momentum."""
    from types import SimpleNamespace

    from kizuna.train.optim import make_scheduler, use_config_settings
    from kizuna.train.supervised import SupervisedConfig, SupervisedTrainer

    weight = torch.nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.SGD([weight], lr=0.1, momentum=0.9)  # as loaded from the checkpoint
    scheduler = make_scheduler(optimizer, 10, 0)
    stub = SimpleNamespace(cfg=SupervisedConfig(optimizer="sgd", momentum=0.5))
    use_config_settings(optimizer, scheduler, 0.1, 0.0, **SupervisedTrainer.optimizer_settings(stub))
    assert optimizer.param_groups[0]["momentum"] == 0.5


def test_the_hint_to_continue_quotes_an_out_with_spaces_and_parentheses():
    """The command said after a Ctrl-C or a failure is pasted into a shell. Kills continue_with without
    shlex.quote."""
    import shlex
    from types import SimpleNamespace

    from kizuna.train.trainer import continue_with

    trainer = SimpleNamespace(resume_command=None, cfg=SimpleNamespace(out="my runs/a (1)"))
    how = continue_with(trainer)
    assert how == "--out 'my runs/a (1)' --resume latest"
    assert shlex.split(how) == ["--out", "my runs/a (1)", "--resume", "latest"]
    assert continue_with(SimpleNamespace(resume_command="kizuna vit x", cfg=trainer.cfg)) == "kizuna vit x"


def test_samples_per_second_leaves_out_the_time_excluded_from_the_window(monkeypatch):
    """An evaluation or a checkpoint inside a log window is not training time. Kills LogWindow.exclude doing
    nothing (samples/s counted the pauses)."""
    from kizuna.train import trainer as trainer_mod

    now = [100.0]
    monkeypatch.setattr(trainer_mod.time, "perf_counter", lambda: now[0])
    window = trainer_mod.LogWindow()
    now[0] += 2.0  # a step
    window.add({"loss": 1.0, "samples": 8})
    now[0] += 6.0  # an evaluation
    window.exclude(6.0)
    now[0] += 2.0  # another step
    window.add({"loss": 3.0, "samples": 8})
    assert window.elapsed() == pytest.approx(4.0) and window.sums == {"loss": 4.0, "samples": 16}
    assert window.steps == 2


def test_a_resume_from_a_checkpoint_inside_out_but_not_its_checkpoints_is_refused(tmp_path):
    """OUT/checkpoints.prev/step_N continued in OUT itself would set aside the log beside its own checkpoints:
    refused even though OUT holds no checkpoints of its own. Kills the refusal without its ``inside``."""
    from types import SimpleNamespace

    from kizuna.train.checkpointing import CheckpointManager
    from kizuna.train.trainer import Trainer

    step = tmp_path / "checkpoints.prev" / "step_0000002"
    step.mkdir(parents=True)
    stub = SimpleNamespace(resumes_another_run=True, resume_from=step, out=tmp_path, ckpt=CheckpointManager(tmp_path))
    refused = r"is in --out itself; continue it in a new folder \(--out NEW --resume PATH\)$"
    with pytest.raises(ValueError, match=refused):
        Trainer._refuse_a_foreign_resume_into_a_run(stub)
    elsewhere = tmp_path / "other"  # from another run's folder into a new one: goes on
    Trainer._refuse_a_foreign_resume_into_a_run(SimpleNamespace(
        resumes_another_run=True, resume_from=step, out=elsewhere, ckpt=CheckpointManager(elsewhere)))


# ----------------------------------------------------------------------------- the CLIP trainer
def test_evaluation_data_gone_on_a_resume_says_how_to_go_on_without_it(tmp_path):
    """On a resume the folder comes from the run's settings, so "drop the flag" would keep it: the refusal says
    to pass the folder's new place or an empty flag. A fresh run is told to fix the flag. Kills the resume's
    advice replaced by the fresh run's."""
    from types import SimpleNamespace

    from kizuna.train.contrastive import check_evaluation_data

    gone = tmp_path / "moved-away"
    cfg = dict(eval_zeroshot=str(gone), eval_retrieval="", eval_split="", eval_max_samples=0)
    with pytest.raises(ValueError) as info:
        check_evaluation_data(SimpleNamespace(**cfg, resume="latest"), {})
    message = str(info.value)
    assert message.startswith(f"--eval-zeroshot {gone}: ")
    assert ('pass --eval-zeroshot with the folder\'s new place, or --eval-zeroshot "" to evaluate without it'
            in message)
    with pytest.raises(ValueError, match=r"Before training, fix the flag \(or drop it\)"):
        check_evaluation_data(SimpleNamespace(**cfg, resume=""), {})
