"""What a training run that raises leaves in its caller's process (stop 47's review of resource hygiene)."""

import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _tiny import tiny_config  # noqa: E402

from kizuna.train.contrastive import ContrastiveTrainer  # noqa: E402
from kizuna.train.trainer import TrainingDiverged  # noqa: E402


def test_a_run_that_diverges_closes_its_tensorboard_writer(tmp_path):
    """Its writer's thread ran on: one more thread per diverged run of a learning-rate sweep in a notebook."""
    pytest.importorskip("tensorboard")
    before = set(threading.enumerate())
    for i, lr in enumerate((1e5, 1e7)):
        trainer = ContrastiveTrainer(tiny_config(tmp_path / f"lr{i}", steps=12, lr=lr, grad_clip=0.0,
                                                 warmup_steps=1))
        with pytest.raises(TrainingDiverged):  # (its writer opened at the first record, closed when it raised)
            trainer.train()
        assert trainer.logger.tb is None
        assert list((tmp_path / f"lr{i}" / "tensorboard").glob("events.*"))  # (it wrote: the writer was opened)
    left = [t for t in set(threading.enumerate()) - before if t.is_alive() and "tqdm" not in t.name]
    assert not left, left
