"""Mutation findings (session 53), train: whose SIGTERM handler the training loop takes over."""
from __future__ import annotations

import errno
import signal

import pytest

from kizuna.train.trainer import _ours_to_take


def test_the_loop_takes_over_sigterm_from_the_default_and_the_command_lines_handler_only():
    """Kills `return True` and `return handler in (signal.SIG_DFL, None)` in trainer._ours_to_take, and
    `_handle.kizuna_sigterm = False` in apps.cli._SigtermRaises (the command line's own SIGTERM handler kept by
    the loop: `kill` of `kizuna train` raised Terminated mid-step instead of stopping and saving)."""
    from kizuna.apps.cli import _SigtermRaises

    assert _ours_to_take(signal.SIG_DFL) and _ours_to_take(None)
    assert _ours_to_take(_SigtermRaises()._handle)
    assert not _ours_to_take(signal.SIG_IGN)
    assert not _ours_to_take(lambda signum, frame: None)


@pytest.mark.parametrize("limit, code", [(2**20, errno.EFBIG), (None, errno.ENOSPC)])
def test_a_checkpoint_error_without_errno_is_said_as_the_limit_or_the_disk(tmp_path, monkeypatch, limit, code):
    """Kills `return OSError(errno.ENOSPC, message)` in CheckpointManager._write_failed (a write past `ulimit -f`
    said by the command line as a full disk's "free space there")."""
    from kizuna.train import checkpointing

    monkeypatch.setattr(checkpointing, "file_size_limit", lambda: limit)
    manager = checkpointing.CheckpointManager(tmp_path / "ckpt")
    error = manager._write_failed(tmp_path / "ckpt" / "step_2", RuntimeError("unexpected pos 1234 vs 1200"))
    assert error.errno == code and "writing the checkpoint" in str(error)


def test_a_finished_runs_stale_curves_are_drawn_again_at_its_resume_and_fresh_ones_are_kept(tmp_path):
    """Kills `curves.png ... st_mtime_ns >= 0` for `>= log_time` in Trainer._draw_curves(only_if_stale=True) (a
    figure of the run's previous length, older than its log, kept for good)."""
    import os

    from _tiny import tiny_config

    from kizuna.train.contrastive import ContrastiveTrainer

    out = tmp_path / "run"
    ContrastiveTrainer(tiny_config(out, eval_max_samples=0)).train()
    curves = out / "curves.png"
    log = (out / "metrics.jsonl").stat().st_mtime_ns
    os.utime(curves, ns=(log - 10**10, log - 10**10))  # drawn before the log's last line
    ContrastiveTrainer(tiny_config(out, eval_max_samples=0, resume="latest")).train()
    redrawn = curves.stat().st_mtime_ns
    assert redrawn >= log
    ContrastiveTrainer(tiny_config(out, eval_max_samples=0, resume="latest")).train()
    assert curves.stat().st_mtime_ns == redrawn  # fresh: not drawn again


def test_the_other_ranks_say_a_failed_trial_checkpoint_as_the_trial(tmp_path, monkeypatch):
    """Kills `f"the checkpoint of step ..."` for the trial's words in Trainer.save (under torchrun the ranks that
    did not fail said the plan's trial checkpoint as a checkpoint of the run, which `latest` did not name)."""
    from _tiny import tiny_config

    from kizuna.train import trainer as trainer_mod
    from kizuna.train.contrastive import ContrastiveTrainer

    said = []
    real = trainer_mod.raise_together
    monkeypatch.setattr(trainer_mod, "raise_together",
                        lambda error, device, what, *a, **k: (said.append(what), real(error, device, what, *a, **k)))
    trainer = ContrastiveTrainer(tiny_config(tmp_path / "run", eval_max_samples=0))
    trainer.time_a_checkpoint()
    trainer.save()
    assert "the trial checkpoint of step 0 (writing it failed)" in said
    assert "the checkpoint of step 0 (writing it failed)" in said


def test_an_absolute_out_trains_after_a_change_of_folder(tmp_path, monkeypatch):
    """Kills `if os.getcwd() != self.started_in` without `not self.out.is_absolute()` in
    Trainer._check_the_folder_is_still_ours (a notebook that changed folder refused a trainer whose out names its
    folder in full)."""
    from _tiny import tiny_config

    from kizuna.train.contrastive import ContrastiveTrainer

    (tmp_path / "elsewhere").mkdir()
    trainer = ContrastiveTrainer(tiny_config(tmp_path / "run", eval_max_samples=0, steps=2))
    monkeypatch.chdir(tmp_path / "elsewhere")
    trainer.train()
    assert trainer.step == 2


def test_a_subclasss_own_init_after_its_base_draws_from_the_runs_stream(tmp_path):
    """Kills `if True:` for `if type(self).__init__ is guarded:` in Trainer.__init_subclass__ (the base's guard
    ended construction within a subclass's __init__: the caller's RNG given back before the subclass's own layers
    were drawn, so one seed built other weights after each notebook cell)."""
    import torch
    from _tiny import tiny_config

    from kizuna.train.contrastive import ContrastiveTrainer

    class WithHead(ContrastiveTrainer):
        def __init__(self, cfg):
            super().__init__(cfg)
            self.head_init = torch.rand(3)

    draws = []
    for i, caller_seed in enumerate((1, 2)):
        torch.manual_seed(caller_seed)
        draws.append(WithHead(tiny_config(tmp_path / f"run{i}", eval_max_samples=0, seed=0)).head_init)
    torch.testing.assert_close(draws[0], draws[1], rtol=0, atol=0)


def test_a_run_that_timed_a_checkpoint_writes_no_trial_one(tmp_path, monkeypatch):
    """Kills `if hasattr(trainer, "time_a_checkpoint")` without `not trainer.budget.save_times` in budget.plan_run
    (a run whose --save-every had timed a checkpoint wrote and deleted one more at its plan: a whole checkpoint's
    time and disk for nothing)."""
    from _tiny import tiny_config

    from kizuna.train.contrastive import ContrastiveTrainer

    trials = []
    real = ContrastiveTrainer.time_a_checkpoint
    monkeypatch.setattr(ContrastiveTrainer, "time_a_checkpoint", lambda self: trials.append(self.step) or real(self))
    trainer = ContrastiveTrainer(tiny_config(tmp_path / "run", steps=30, save_every=2, time_budget_minutes=5,
                                             warmup_steps=2, eval_max_samples=0))
    trainer.train()
    records = (tmp_path / "run" / "metrics.jsonl").read_text()
    assert '"plan"' in records and trials == []


def test_a_later_trainer_on_the_folder_by_another_spelling_takes_it_over(tmp_path, monkeypatch):
    """Kills `key = Path(out)` for `Path(out).resolve()` in checkpointing.claim_run_folder (an absolute and a
    relative out naming one folder were two owners: both trainers trained into it, their steps interleaved)."""
    import pytest
    from _tiny import tiny_config

    from kizuna.train.contrastive import ContrastiveTrainer

    first = ContrastiveTrainer(tiny_config(tmp_path / "run", eval_max_samples=0, steps=2))
    monkeypatch.chdir(tmp_path)
    ContrastiveTrainer(tiny_config("run", eval_max_samples=0, steps=2))
    with pytest.raises(ValueError, match="taken the folder over"):
        first.train()
