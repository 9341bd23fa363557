"""Run under torchrun (2 processes, gloo): a contrastive trainer whose per-rank extra state (as the MiniLM caption
cache is) differs by rank, saved at step 2 and resumed from it (OUT/b). argv: OUT_DIR. Writes extra_rank{r}.json:
what each rank restored."""
if __name__ != "__main__":  # a torchrun script: imported (pytest given its path) it ran with pytest's argv,
    raise ImportError(f"{__file__} is a torchrun worker, not a test module")  # and wrote a run into "-q/"
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _tiny import tiny_config  # noqa: E402

from kizuna.train.contrastive import ContrastiveTrainer  # noqa: E402
from kizuna.train.distributed import finish_distributed  # noqa: E402

out_dir = Path(sys.argv[1])


class RankStateTrainer(ContrastiveTrainer):
    restored = None

    def extra_train_state(self) -> dict:
        return {"mine": torch.tensor([self.dist.rank, self.step])}

    def restore_extra_train_state(self, state: dict) -> None:
        self.restored = state["mine"].tolist()


RankStateTrainer(tiny_config(out_dir / "b", steps=2, save_every=2, precision="fp32", device="cpu")).train()
resumed = RankStateTrainer(tiny_config(out_dir / "b", steps=3, precision="fp32", device="cpu", resume="latest"))
(out_dir / f"extra_rank{resumed.dist.rank}.json").write_text(json.dumps(resumed.restored))
if resumed.dist.rank == 0:  # rank 0's own is in extra_ranks alone (it was saved at the top level too: twice)
    from kizuna.train.checkpointing import read_train_state  # noqa: E402

    saved = read_train_state(out_dir / "b" / "checkpoints" / "step_0000002")
    (out_dir / "saved_keys.json").write_text(json.dumps(["mine" in saved, len(saved.get("extra_ranks") or [])]))
# taken down as the CLI does (finish_distributed): left to the interpreter's exit, a rank's gloo could abort in
# its teardown ("terminate called without an active exception", once in a CI run)
finish_distributed()
