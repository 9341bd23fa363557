"""Mutation findings (stop 47's mutation test of a stop during the loader's error, ``_StoppedWhileLoading``):
mutants that no test killed (the s47 test stops at a step that no checkpoint holds).

Reference: a Ctrl-C/SIGTERM at a step whose checkpoint was just written (``stop_and_save(saved=True)`` in the
loop): the run stops there without writing the step again, which replaced its checkpoint (and its evaluation's
metrics) with one saved without them."""
import signal
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _tiny import tiny_config  # noqa: E402
from test_signal_findings_s47 import KILLED, _WorkerKilledAfter  # noqa: E402

from kizuna.apps.cli import Terminated  # noqa: E402
from kizuna.train.contrastive import ContrastiveTrainer  # noqa: E402


def _saves(trainer):
    steps = []
    save = trainer.save

    def counted(metrics):
        steps.append(trainer.step)
        return save(metrics)

    trainer.save = counted
    return steps


def test_a_loader_stopped_right_after_a_checkpoint_does_not_save_the_step_again(tmp_path, capsys):
    """Kills ``saved_step = self.step`` after the loop's save dropped: the step was written twice."""
    trainer = ContrastiveTrainer(tiny_config(tmp_path / "run", steps=6, save_every=2))
    trainer.loader = _WorkerKilledAfter(trainer.loader, 2)
    steps = _saves(trainer)
    with pytest.raises(Terminated):
        trainer.train()
    assert f"SIGTERM: the data loader stopped with it (RuntimeError: {KILLED})" in capsys.readouterr().err
    assert steps == [2]


def test_a_resume_stopped_before_its_first_step_does_not_save_the_step_again(tmp_path, capsys):
    """Kills ``saved_step`` left None on a resume: the checkpoint it resumed from was written again."""
    ContrastiveTrainer(tiny_config(tmp_path / "run", steps=3)).train()
    trainer = ContrastiveTrainer(tiny_config(tmp_path / "run", steps=6, resume="latest"))
    trainer.loader = _WorkerKilledAfter(trainer.loader, 0)
    steps = _saves(trainer)
    with pytest.raises(Terminated):
        trainer.train()
    err = capsys.readouterr().err
    assert "stopped at step 3: saved" in err
    assert steps == []


def test_a_loader_stopped_between_logged_steps_logs_its_window(tmp_path, capsys):
    """Kills the window's ``_log_window`` dropped from the loader's stop: steps 1-3 of a run logging every 10 went
    unlogged (the window is not saved, so a resume starts a new one), as the loop's own stop logs them."""
    from test_signal_findings_s47 import _losses

    trainer = ContrastiveTrainer(tiny_config(tmp_path / "run", steps=6, log_every=10))
    trainer.loader = _WorkerKilledAfter(trainer.loader, 3)
    with pytest.raises(Terminated):
        trainer.train()
    assert "stopped at step 3: saved" in capsys.readouterr().err
    assert list(_losses(tmp_path / "run")) == [3]
