"""Session 54 mutation findings: a torchrun checkpoint keeps rank 0's extra training state in extra_ranks alone, and
a resume with another number of processes takes it from there (train/trainer.py _restore)."""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _tiny import tiny_config  # noqa: E402

from kizuna.train.contrastive import ContrastiveTrainer  # noqa: E402


class _RankState(ContrastiveTrainer):
    restored = None

    def extra_train_state(self) -> dict:
        return {"mine": torch.tensor([self.dist.rank, self.step])}

    def restore_extra_train_state(self, state: dict) -> None:
        self.restored = state["mine"].tolist() if "mine" in state else None


def test_one_process_resuming_a_two_rank_checkpoint_takes_rank_0s_extra_state(tmp_path):
    """Kills: _restore reading the top level where extra_ranks does not match the world size (a torchrun
    checkpoint's rank-0 extra state is in extra_ranks alone: a one-process resume lost it, the caption cache)."""
    _RankState(tiny_config(tmp_path, steps=2, save_every=2, eval_max_samples=0)).train()
    state_file = tmp_path / "checkpoints" / "step_0000002" / "train_state.pt"
    state = torch.load(state_file, weights_only=False)
    del state["mine"]  # as a two-process run saves it
    state["extra_ranks"] = [{"mine": torch.tensor([0, 2])}, {"mine": torch.tensor([1, 2])}]
    torch.save(state, state_file)
    resumed = _RankState(tiny_config(tmp_path, steps=3, eval_max_samples=0, resume="latest"))
    assert resumed.restored == [0, 2]
