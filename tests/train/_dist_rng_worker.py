"""Run under torchrun (2 processes, gloo): the contrastive trainer with patch dropout, uninterrupted (OUT/a, 4
steps, a checkpoint every 2) and resumed from its step 2 (OUT/b). argv: OUT_DIR. Writes rng_rank{r}.json: each
rank's torch RNG state (hashed) at its first step and at the end of both runs, its losses, its parameters."""
if __name__ != "__main__":  # a torchrun script: imported (pytest given its path) it ran with pytest's argv,
    raise ImportError(f"{__file__} is a torchrun worker, not a test module")  # and wrote a run into "-q/"
import hashlib
import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _tiny import tiny_config  # noqa: E402

from kizuna.train.contrastive import ContrastiveTrainer  # noqa: E402

out_dir = Path(sys.argv[1])


def rng(state=None) -> str:
    return hashlib.sha1((torch.get_rng_state() if state is None else state).numpy().tobytes()).hexdigest()


def run(out, **kw):
    trainer = ContrastiveTrainer(tiny_config(out, steps=4, save_every=2, keep_last=5, patch_dropout=0.5,
                                             precision="fp32", device="cpu", **kw))
    fit, seen = trainer.fit_batch, {"losses": [], "first_rng": None}

    def fit_and_record(batch):
        seen["first_rng"] = seen["first_rng"] or rng()  # the state the first step's patch masks are drawn from
        numbers = fit(batch)
        seen["losses"].append(numbers["loss"])
        return numbers

    trainer.fit_batch = fit_and_record
    trainer.train()
    params = torch.cat([p.detach().flatten() for p in trainer.model.parameters()])
    # (the run's stream where it ended: the caller's is its own again after train())
    return trainer.dist.rank, {**seen, "end_rng": rng(trainer._run_rng["torch"]),
                               "params": hashlib.sha1(params.numpy().tobytes()).hexdigest()}


rank, record = run(out_dir / "a")
_, record["resumed"] = run(out_dir / "b", resume=str(out_dir / "a" / "checkpoints" / "step_0000002"))
(out_dir / f"rng_rank{rank}.json").write_text(json.dumps(record))
# The end of a run as the CLI ends it (finish_distributed: a barrier, then the group taken down), and no
# interpreter finalisation: left to the exit, gloo's threads aborted a finished rank now and then under load
# ("terminate called without an active exception"), which failed the test after the verdict was written.
from kizuna.train.distributed import finish_distributed  # noqa: E402

finish_distributed()
sys.stdout.flush()
os._exit(0)
