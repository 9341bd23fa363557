"""A kill between a checkpoint's swap-in and the `latest` that names it: `--resume latest` takes the checkpoint the
run saved last (it redid the steps since the one before and filed their records as an abandoned branch), and a
branch's later folders are still told apart from the run's own by the id each save records of the one it follows."""
import json
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _tiny import tiny_config  # noqa: E402

from kizuna.models.checkpoint import follow_latest, save_ids  # noqa: E402
from kizuna.train.checkpointing import CheckpointManager  # noqa: E402
from kizuna.train.contrastive import ContrastiveTrainer  # noqa: E402


def _steps(path):
    return [json.loads(line)["step"] for line in Path(path).read_text().splitlines()
            if json.loads(line).get("kind") == "train"]


def test_a_kill_before_latest_was_written_resumes_from_the_checkpoint_saved_last(tmp_path):
    ContrastiveTrainer(tiny_config(tmp_path, steps=6, save_every=2, keep_last=10, eval_max_samples=0)).train()
    ckpts = tmp_path / "checkpoints"
    four, six = ckpts / "step_0000004", ckpts / "step_0000006"
    assert save_ids(six)[1] == save_ids(four)[0] is not None  # each save names the one it follows
    (ckpts / "latest").write_text(four.name)  # as a kill between step 6's swap-in and its `latest` left it
    assert follow_latest(ckpts / "latest") == six  # (eval and analyze read it so too)
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        trainer = ContrastiveTrainer(tiny_config(tmp_path, steps=8, eval_max_samples=0, resume="latest"))
    assert trainer.step == 6  # (4: steps 5 and 6 trained again)
    assert sum("saved step_0000006 after it" in str(w.message) for w in said) == 1
    assert not (tmp_path / "metrics.branches").exists()  # steps 5 and 6 are the run's own, not a branch
    trainer.train()
    assert _steps(tmp_path / "metrics.jsonl") == list(range(1, 9))
    assert save_ids(ckpts / "step_0000008")[1] == save_ids(six)[0]


def test_a_branchs_later_folders_are_not_taken_for_the_runs_own(tmp_path):
    ContrastiveTrainer(tiny_config(tmp_path, steps=8, save_every=2, keep_last=10, eval_max_samples=0)).train()
    ckpts = tmp_path / "checkpoints"
    # resumed from step 4 and stopped at 6: the first run's step_8 followed its own step 6, not this one
    ContrastiveTrainer(tiny_config(tmp_path, steps=6, save_every=2, keep_last=10, eval_max_samples=0,
                                   resume=str(ckpts / "step_0000004"))).train()
    assert (ckpts / "step_0000008").is_dir() and (ckpts / "latest").read_text() == "step_0000006"
    assert CheckpointManager(tmp_path).latest().name == "step_0000006"
    assert follow_latest(ckpts / "latest").name == "step_0000006"
