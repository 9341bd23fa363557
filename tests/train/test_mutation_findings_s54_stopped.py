"""Session 54 mutation findings: the line said after an interrupt that did not stop at a step and save
(train/trainer.py _say_where_it_stopped and the flag stop_and_save sets)."""
import os
import signal
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _tiny import tiny_config  # noqa: E402

from kizuna.apps.cli import Terminated  # noqa: E402
from kizuna.train.contrastive import ContrastiveTrainer  # noqa: E402


def _raise_at(monkeypatch, at_call, error):
    fit, calls = ContrastiveTrainer.fit_batch, []

    def fit_then_raise(self, batch):
        calls.append(1)
        if len(calls) == at_call:
            raise error
        return fit(self, batch)

    monkeypatch.setattr(ContrastiveTrainer, "fit_batch", fit_then_raise)


def test_an_interrupt_right_after_a_saved_step_says_it_is_saved_not_finished(tmp_path, monkeypatch, capsys):
    """Kills: the finished-run branch taken for any saved step (`saved == self.step`, the total not compared): a
    run stopped at step 2 of 8 was called finished."""
    _raise_at(monkeypatch, 3, KeyboardInterrupt)
    with pytest.raises(KeyboardInterrupt):
        ContrastiveTrainer(tiny_config(tmp_path, steps=8, save_every=2, eval_max_samples=0)).train()
    err = capsys.readouterr().err
    assert "stopped at once after step 2, which is saved: continue with" in err
    assert "the run had finished" not in err


def test_a_second_sigterm_mid_step_says_where_it_stopped(tmp_path, monkeypatch, capsys):
    """Kills: train()'s except catching KeyboardInterrupt alone (a Terminated, a SystemExit, went by unsaid)."""
    _raise_at(monkeypatch, 4, Terminated())
    with pytest.raises(Terminated):
        ContrastiveTrainer(tiny_config(tmp_path, steps=8, save_every=2, eval_max_samples=0)).train()
    assert "stopped at once after step 3; the last checkpoint is step_0000002" in capsys.readouterr().err


def test_an_interrupt_while_the_finished_run_draws_its_curves_says_it_finished(tmp_path, monkeypatch, capsys):
    """Kills: the finished branch (the last step saved) lost to the saved-step one."""
    def interrupted(self, only_if_stale=False):
        raise KeyboardInterrupt

    monkeypatch.setattr(ContrastiveTrainer, "_draw_curves", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ContrastiveTrainer(tiny_config(tmp_path, steps=3, eval_max_samples=0)).train()
    assert "the run had finished: its last step, 3, is saved" in capsys.readouterr().err


def test_a_stop_that_saved_says_its_own_line_only(tmp_path, monkeypatch, capsys):
    """Kills: stop_and_save no longer marking the stop as said (the interrupt's "stopped at once" line said as
    well, after "stopped at step N: saved ...")."""
    fit, calls = ContrastiveTrainer.fit_batch, []

    def fit_then_ctrl_c(self, batch):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGINT)  # (the loop's handler: stop after this step, and save)
        return fit(self, batch)

    monkeypatch.setattr(ContrastiveTrainer, "fit_batch", fit_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        ContrastiveTrainer(tiny_config(tmp_path, steps=8, eval_max_samples=0)).train()
    err = capsys.readouterr().err
    assert "stopped at step 2: saved" in err and "stopped at once" not in err


def test_a_sigterm_during_a_failed_evaluation_ends_as_a_sigterm(tmp_path, monkeypatch):
    """Kills: the failed evaluation's stop raising KeyboardInterrupt whatever the signal (a scheduler's SIGTERM,
    a preemption, read as a user's Ctrl-C: exit 130, not 143)."""
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        pytest.skip("SIGTERM is not at its default here (the loop leaves a host's handler)")
    real = ContrastiveTrainer.evaluate

    def evaluate(self):
        if self.step == self.total_steps:
            os.kill(os.getpid(), signal.SIGTERM)  # (the training loop's handler: stop after this step)
            raise RuntimeError("evaluation worker died")
        return real(self)

    monkeypatch.setattr(ContrastiveTrainer, "evaluate", evaluate)
    with pytest.raises(Terminated) as ended:
        ContrastiveTrainer(tiny_config(tmp_path, steps=2, warmup_steps=0)).train()
    assert ended.value.code == 143
