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
