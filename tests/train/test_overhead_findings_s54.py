"""Work a run did for nothing (stop 54's overhead hunt): one batch past the last step was fetched and decoded."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _tiny import tiny_config  # noqa: E402

import kizuna.train.trainer as T  # noqa: E402
from kizuna.train.contrastive import ContrastiveTrainer  # noqa: E402


def _count_batches(monkeypatch):
    fetched = []
    real = T._until_stopped

    def counted(*args, **kwargs):
        for batch in real(*args, **kwargs):
            fetched.append(1)
            yield batch

    monkeypatch.setattr(T, "_until_stopped", counted)
    return fetched


def test_a_run_fetches_no_batch_past_its_last_step(tmp_path, monkeypatch):
    fetched = _count_batches(monkeypatch)
    trainer = ContrastiveTrainer(tiny_config(tmp_path / "a", steps=5, synthetic_length=512, eval_max_samples=0))
    trainer.train()
    assert len(fetched) == 5 and trainer.step == 5  # (6)
    fetched.clear()  # the last step at an epoch's end: its report said, the run ends as before
    trainer = ContrastiveTrainer(tiny_config(tmp_path / "b", steps=4, synthetic_length=32, eval_max_samples=0))
    trainer.train()
    assert len(fetched) == 4 and trainer.step == 4
    # and a resume that lengthens the run goes on from the saved position
    fetched.clear()
    longer = ContrastiveTrainer(tiny_config(tmp_path / "a", steps=7, eval_max_samples=0, resume="latest"))
    longer.train()
    assert len(fetched) == 2 and longer.step == 7


def _interrupted_at(monkeypatch, at_step):
    from kizuna.train.contrastive import ContrastiveTrainer as C

    fit, calls = C.fit_batch, []

    def fit_then_interrupt(self, batch):
        calls.append(1)
        if len(calls) == at_step:  # a second Ctrl-C: at once, mid-step
            raise KeyboardInterrupt
        return fit(self, batch)

    monkeypatch.setattr(C, "fit_batch", fit_then_interrupt)


def test_an_interrupt_at_once_says_what_is_saved(tmp_path, monkeypatch, capsys):
    """A second Ctrl-C said "interrupted" alone: nothing said whether any checkpoint was saved, or from where."""
    import pytest

    _interrupted_at(monkeypatch, 4)
    with pytest.raises(KeyboardInterrupt):
        ContrastiveTrainer(tiny_config(tmp_path / "a", steps=8, save_every=2, eval_max_samples=0)).train()
    err = capsys.readouterr().err
    assert "stopped at once after step 3; the last checkpoint is step_0000002, the steps since are not saved" in err
    _interrupted_at(monkeypatch, 3)  # (counted on: 3 more calls)
    with pytest.raises(KeyboardInterrupt):
        ContrastiveTrainer(tiny_config(tmp_path / "b", steps=8, eval_max_samples=0)).train()
    assert "stopped at once after step 2; no checkpoint was saved, so the run starts over" in capsys.readouterr().err


def test_an_interrupted_final_evaluation_is_not_called_a_finished_run(tmp_path, monkeypatch, capsys):
    import os
    import signal

    import pytest

    real = ContrastiveTrainer.evaluate

    def evaluate(self):
        if self.step == self.total_steps:
            os.kill(os.getpid(), signal.SIGINT)  # (the training loop's handler: stop after this step)
            raise RuntimeError("evaluation worker died")
        return real(self)

    monkeypatch.setattr(ContrastiveTrainer, "evaluate", evaluate)
    with pytest.raises(KeyboardInterrupt):
        ContrastiveTrainer(tiny_config(tmp_path, steps=3)).train()
    err = capsys.readouterr().err
    assert "the evaluation at step 3 failed" in err and "the run had finished" not in err
