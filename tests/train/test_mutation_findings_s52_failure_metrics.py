"""Mutation findings (session 52): a data loader failing after an evaluation step saves that step with its
evaluation's metrics (as its own checkpoint would have), through _save_after_failure."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _tiny import tiny_config  # noqa: E402

from kizuna.analysis.report import read_extra  # noqa: E402
from kizuna.train.contrastive import ContrastiveTrainer  # noqa: E402


class _FailsAfter:
    """The trainer's loader, whose batches end in an error after ``n`` of them (a disk gone mid-run)."""

    def __init__(self, loader, n):
        self._loader, self._n = loader, n

    def __getattr__(self, name):
        return getattr(self._loader, name)

    def __iter__(self):
        for i, batch in enumerate(self._loader):
            if i == self._n:
                raise OSError(5, "Input/output error")
            yield batch


def test_a_loader_failure_after_an_evaluation_step_saves_its_metrics(tmp_path):
    trainer = ContrastiveTrainer(tiny_config(tmp_path, steps=8, eval_every=3, save_every=0, workers=0,
                                             eval_zeroshot="synthetic"))
    trainer.loader = _FailsAfter(trainer.loader, 3)
    with pytest.raises(OSError, match="Input/output error"):
        trainer.train()
    saved = read_extra(tmp_path / "checkpoints" / "step_0000003").get("metrics")
    assert saved  # (it was saved with none)


def test_a_loader_failure_after_a_later_step_saves_no_earlier_evaluation_as_its_own(tmp_path):
    trainer = ContrastiveTrainer(tiny_config(tmp_path, steps=8, eval_every=3, save_every=0, workers=0,
                                             eval_zeroshot="synthetic"))
    trainer.loader = _FailsAfter(trainer.loader, 4)  # step 3 evaluated, step 4 not
    with pytest.raises(OSError, match="Input/output error"):
        trainer.train()
    assert not read_extra(tmp_path / "checkpoints" / "step_0000004").get("metrics")


def test_the_time_budgets_planned_evaluation_is_saved_with_a_failure_at_its_step(tmp_path, monkeypatch):
    """The budget's plan evaluated step 3 (after_step returned its metrics, logged there): a loader failure
    before step 4 saves step 3 with them."""
    from kizuna.train import trainer as trainer_module

    planned = {"val_loss": 1.25}
    monkeypatch.setattr(trainer_module, "after_step", lambda self, bar: dict(planned) if self.step == 3 else None)
    trainer = ContrastiveTrainer(tiny_config(tmp_path, steps=8, eval_every=0, save_every=0, workers=0))
    trainer.loader = _FailsAfter(trainer.loader, 3)
    with pytest.raises(OSError, match="Input/output error"):
        trainer.train()
    assert read_extra(tmp_path / "checkpoints" / "step_0000003").get("metrics") == planned


def test_a_resume_of_a_finished_run_saved_without_metrics_gives_none(tmp_path, monkeypatch):
    """A finished run's checkpoint whose record holds no metrics dict (null there): {} as before, no TypeError."""
    from kizuna.analysis import report

    ContrastiveTrainer(tiny_config(tmp_path, steps=3, warmup_steps=1, eval_max_samples=0)).train()
    monkeypatch.setattr(report, "read_extra", lambda path: {"metrics": None})
    assert ContrastiveTrainer(tiny_config(tmp_path, steps=3, warmup_steps=1, eval_max_samples=0,
                                          resume="latest")).train() == {}


def test_the_loader_is_unwatched_after_the_loop(tmp_path):
    """Batches read from the loader after train() wait as before: no stop watcher of a finished loop left on it."""
    trainer = ContrastiveTrainer(tiny_config(tmp_path, steps=3, warmup_steps=1, eval_max_samples=0, workers=0))
    trainer.train()
    assert trainer.loader.on_wait is None
