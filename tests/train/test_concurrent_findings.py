"""Two processes on one run folder: a run whose folder was moved or removed while it trained (a user restarting
it by hand) wrote on by path into the new run at that path, whose checkpoints its pruning then deleted; a resume
from a live run's checkpoint that the run pruned meanwhile was called damaged, with "start the run again"."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _tiny import tiny_config  # noqa: E402

from kizuna.train.checkpointing import CheckpointManager, hold_run_lock, read_train_state, release_run_lock, \
    run_lock_lost  # noqa: E402
from kizuna.train.contrastive import ContrastiveTrainer  # noqa: E402


def test_a_lock_file_removed_or_replaced_is_told_apart_from_the_held_one(tmp_path):
    key = hold_run_lock(tmp_path / "run")
    try:
        assert run_lock_lost(key) is None
        (tmp_path / "run" / ".kizuna-run.lock").unlink()
        assert run_lock_lost(key) == "removed"
        (tmp_path / "run" / ".kizuna-run.lock").write_text("4242\n")  # another run's, at the same path
        assert run_lock_lost(key) == "replaced by another run's"
    finally:
        release_run_lock(key)


@pytest.mark.parametrize("how", ["moved", "removed"])
def test_a_run_whose_folder_goes_while_it_trains_stops_at_its_next_record(tmp_path, how):
    out = tmp_path / "run"
    trainer = ContrastiveTrainer(tiny_config(out, steps=6, save_every=2))
    fit, steps = trainer.fit_batch, []

    def fit_then_lose_the_folder(batch):
        steps.append(1)
        result = fit(batch)
        if len(steps) == 3:
            shutil.move(out, tmp_path / "set-aside") if how == "moved" else shutil.rmtree(out)
            out.mkdir()  # a new run's folder at the path
        return result

    trainer.fit_batch = fit_then_lose_the_folder
    with pytest.raises(ValueError, match=r"the run's folder lock \(\.kizuna-run\.lock\) was removed while this "
                                         r"run wrote there: .*Stopping"):
        trainer.train()
    assert len(steps) == 3 and list(out.iterdir()) == []  # nothing written into the new folder


def test_a_checkpoint_pruned_while_a_resume_reads_it_is_not_called_damaged(tmp_path):
    ContrastiveTrainer(tiny_config(tmp_path / "run", steps=2, save_every=1)).train()
    step = tmp_path / "run" / "checkpoints" / "step_0000002"
    gone = tmp_path / "run" / "checkpoints" / "step_0000009"  # chosen, then pruned by the run still writing
    with pytest.raises(ValueError, match=r"step_0000009 was removed while this run read it: a run still writing "
                                         r"into .* prunes its older checkpoints \(--keep-last\)"):
        read_train_state(gone)
    manager = CheckpointManager(tmp_path / "run", 2)
    model = ContrastiveTrainer(tiny_config(tmp_path / "other", steps=1)).model
    shutil.rmtree(step)
    with pytest.raises(ValueError, match=r"was removed while this run read it") as error:
        manager.load_into(step, model)
    assert "damaged" not in str(error.value)


def test_loading_latest_of_a_run_that_prunes_it_meanwhile_reads_what_latest_names_now(tmp_path, monkeypatch):
    """`kizuna eval --model RUN/checkpoints/latest` while RUN trains: the folder `latest` named was pruned between
    reading the pointer and reading the weights, and the error called the file unreadable."""
    from kizuna.models import checkpoint

    ContrastiveTrainer(tiny_config(tmp_path / "run", steps=3, save_every=1, keep_last=3)).train()
    ckpts = tmp_path / "run" / "checkpoints"
    # step 3 not saved yet (kept aside: beside step 2, it is read as saved after it, latest or not)
    shutil.move(ckpts / "step_0000003", tmp_path / "step_3_to_come")
    (ckpts / "latest").write_text("step_0000002")
    real, read = checkpoint._load_model, []

    def pruned_while_read(path, *args):
        read.append(path.name)
        if len(read) == 1:  # the run saves step 3, moves latest and prunes step 2
            shutil.move(tmp_path / "step_3_to_come", ckpts / "step_0000003")
            shutil.rmtree(path)
            (ckpts / "latest").write_text("step_0000003")
            raise checkpoint.CheckpointError(f"{path}/model.safetensors: not a readable safetensors file")
        return real(path, *args)

    monkeypatch.setattr(checkpoint, "_load_model", pruned_while_read)
    assert checkpoint.load_model(ckpts / "latest") is not None
    assert read == ["step_0000002", "step_0000003"]
    with pytest.raises(checkpoint.CheckpointError):  # any other failure is the failure
        checkpoint.load_model(ckpts / "step_0000001" / "nosuch")
