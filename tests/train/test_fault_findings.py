"""Faults a run meets on the way: a fresh run into a folder whose set-aside run it must not lose, a full disk at a
checkpoint, a damaged checkpoint file on a resume."""
from __future__ import annotations

import errno
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _tiny import tiny_config  # noqa: E402

from kizuna.models.checkpoint import CheckpointError  # noqa: E402
from kizuna.train.checkpointing import CheckpointManager, read_train_state  # noqa: E402
from kizuna.train.logging import read_metrics  # noqa: E402

# what torch.save raises when the disk fills mid-write (ENOSPC inside its zip writer)
TORCH_ENOSPC = "[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598"


def _tiny_vit():
    from kizuna.models.vit import VisionConfig, VisionTransformer

    return VisionTransformer(VisionConfig(image_size=8, patch_size=4, width=8, depth=1, heads=2, num_classes=2))


def _events(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()} if folder.is_dir() else set()


# ----------------------------------------------------------------------------------------------- finding 1
def test_a_run_killed_before_its_first_checkpoint_does_not_replace_the_set_aside_runs_log(tmp_path, monkeypatch):
    """A finishes in OUT; B, started fresh into OUT by mistake, sets A aside and is killed before its first
    checkpoint; C, started fresh, found no checkpoints to set aside (checkpoints.prev rightly stayed A's) but
    moved B's metrics.jsonl and tensorboard/ over A's .prev ones. Recovering A (--resume
    OUT/checkpoints.prev/step_N, as TRAINING.md advises) then went on from B's log as if it were A's."""
    from kizuna.train.contrastive import ContrastiveTrainer

    out = tmp_path / "run"
    ContrastiveTrainer(tiny_config(out, steps=2, save_every=2, lr=1e-3)).train()  # A
    a_records = read_metrics(out / "metrics.jsonl", "train")
    a_events = _events(out / "tensorboard")
    assert a_records and a_events

    b = ContrastiveTrainer(tiny_config(out, steps=3, save_every=0, lr=7e-3))  # B: its only checkpoint at the end

    def killed(*args, **kwargs):
        raise SystemExit("killed before its first checkpoint")

    monkeypatch.setattr(b, "save", killed)
    with pytest.raises(SystemExit):
        b.train()
    monkeypatch.undo()
    b_records = read_metrics(out / "metrics.jsonl", "train")
    b_events = _events(out / "tensorboard")
    assert b_records and b_records != a_records and b_events

    ContrastiveTrainer(tiny_config(out, steps=1, lr=2e-3)).train()  # C
    prev = out / "checkpoints.prev" / "step_0000002"
    assert prev.is_dir()  # A's checkpoints, kept
    assert read_metrics(out / "metrics.jsonl.prev", "train") == a_records  # with A's log
    assert _events(out / "tensorboard.prev") == a_events  # and A's TensorBoard events
    # B's log is not lost either: it has a name of its own
    assert read_metrics(out / "metrics.jsonl.no-checkpoint", "train") == b_records
    assert _events(out / "tensorboard.no-checkpoint") == b_events

    # the recovery goes on from A's own records
    ContrastiveTrainer(tiny_config(tmp_path / "new", steps=3, lr=1e-3, resume=str(prev))).train()
    assert read_metrics(tmp_path / "new" / "metrics.jsonl", "train")[:2] == a_records


def test_a_runs_log_is_set_aside_with_its_checkpoints_as_one_unit(tmp_path, capsys):
    """The unit in the order Trainer.open_log calls it: checkpoints, then the fresh log. A run set aside with
    no log of its own also takes the older run's .prev log away (it was not this checkpoints.prev's)."""
    from kizuna.train.logging import MetricLogger

    def fresh_run(name, steps, checkpoint, log=True):
        manager = CheckpointManager(tmp_path)
        manager.set_aside_earlier_run()
        logger = MetricLogger(tmp_path, tensorboard=False, fresh=True)
        for step in steps if log else ():
            logger.log(step, {"loss": 1.0, "run": name})
        if checkpoint:
            manager.save(steps[-1], _tiny_vit(), {"step": steps[-1]})
        logger.close()

    runs = lambda name: {r["run"] for r in read_metrics(tmp_path / name, "train")}  # noqa: E731
    fresh_run("A", [1, 2], checkpoint=True)
    fresh_run("B", [1], checkpoint=False)
    fresh_run("C", [1], checkpoint=False)
    assert runs("metrics.jsonl.prev") == {"A"} and (tmp_path / "checkpoints.prev" / "step_0000002").is_dir()
    assert runs("metrics.jsonl.no-checkpoint") == {"B"}
    assert "moved to metrics.jsonl.no-checkpoint (a run with no checkpoint" in capsys.readouterr().err
    fresh_run("D", [5], checkpoint=True, log=False)  # C is set aside (no checkpoints), D saves one, logs nothing
    fresh_run("E", [1], checkpoint=False)
    assert (tmp_path / "checkpoints.prev" / "step_0000005").is_dir()
    assert not (tmp_path / "metrics.jsonl.prev").exists()  # D had no log: A's must not pass for D's
    assert runs("metrics.jsonl") == {"E"}


# ----------------------------------------------------------------------------------------------- finding 4
def test_a_checkpoint_that_a_full_disk_stops_is_a_named_error_saying_how_to_go_on(tmp_path, monkeypatch):
    """It ended with torch's own words, "[enforce fail at inline_container.cc:672] . unexpected pos ...", which
    name neither the folder nor what to do."""
    from kizuna.train import checkpointing

    manager = CheckpointManager(tmp_path, keep_last=2)
    manager.save(4, _tiny_vit(), {"step": 4})

    def full(*args, **kwargs):
        raise RuntimeError(TORCH_ENOSPC)

    monkeypatch.setattr(checkpointing.torch, "save", full)
    with pytest.raises(OSError) as info:
        manager.save(8, _tiny_vit(), {"step": 8})
    message = str(info.value)
    assert "writing the checkpoint" in message and "step_0000008 failed" in message and "disk full?" in message
    assert "B free there" in message and "step_0000004, is intact" in message
    assert f"--out {tmp_path} --resume latest" in message
    assert isinstance(info.value.__cause__, RuntimeError) and TORCH_ENOSPC in message
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["latest", "step_0000004"]  # no temp
    assert manager.latest().name == "step_0000004"
    monkeypatch.undo()

    def no_space(*args, **kwargs):  # safetensors' I/O error, or an OSError from a plain write: best/ first
        raise OSError(errno.ENOSPC, "No space left on device")

    best = CheckpointManager(tmp_path / "b", metric="val_top1")
    monkeypatch.setattr(checkpointing, "save_model", no_space)
    with pytest.raises(OSError, match=r"writing the checkpoint .*best failed .*No checkpoint was saved before") as info:
        best.save(1, _tiny_vit(), {"step": 1}, {"val_top1": 0.5})
    assert info.value.errno == errno.ENOSPC and not list((tmp_path / "b" / "checkpoints").iterdir())


# ----------------------------------------------------------------------------------------------- finding 5
@pytest.mark.parametrize("mmap", [True, False])  # resumed_config reads it mapped, the resume itself not
def test_an_empty_train_state_says_so_without_torchs_cut_off_advice(tmp_path, mmap):
    """It read "(RuntimeError: mmap can only be used with files saved with `torch.save(_use_new_zipfile_
    serialization=True), please torch.save your che)", or "(EOFError: )"."""
    manager = CheckpointManager(tmp_path, keep_last=5)
    manager.save(1, _tiny_vit(), {"step": 1})
    path = manager.save(2, _tiny_vit(), {"step": 2})
    (path / "train_state.pt").write_bytes(b"")
    with pytest.raises(CheckpointError) as info:
        read_train_state(path, mmap=mmap)
    message = str(info.value)
    assert "train_state.pt: cannot be read (the file is empty (0 bytes))" in message, message
    assert f"Resume from an earlier one: --resume {tmp_path / 'checkpoints' / 'step_0000001'}" in message
    assert "mmap" not in message and "your che)" not in message


def test_a_long_error_is_cut_at_a_words_end(tmp_path, monkeypatch):
    from kizuna.train import checkpointing

    (tmp_path / "step_0000003").mkdir()
    long = "the archive " + "is broken " * 30

    def broken(*args, **kwargs):
        raise RuntimeError(long)

    monkeypatch.setattr(checkpointing.torch, "load", broken)
    with pytest.raises(CheckpointError) as info:
        read_train_state(tmp_path / "step_0000003")
    why = str(info.value).split("(RuntimeError: ", 1)[1].split(");", 1)[0]
    kept = why.removesuffix(" ...")
    assert kept != why and len(kept) <= 120 and long.startswith(kept + " "), why  # whole words, then " ..."


def test_a_damaged_weights_file_on_a_resume_names_the_earlier_checkpoint(tmp_path):
    """A damaged train_state.pt said where to resume from; a damaged model.safetensors in the same folder did not."""
    manager = CheckpointManager(tmp_path, keep_last=5)
    manager.save(1, _tiny_vit(), {"step": 1})
    path = manager.save(2, _tiny_vit(), {"step": 2})
    weights = path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CheckpointError) as info:
        CheckpointManager(tmp_path).load_into(path, _tiny_vit())
    message = str(info.value)
    assert "model.safetensors: not a readable safetensors file" in message
    assert f"Resume from an earlier one: --resume {tmp_path / 'checkpoints' / 'step_0000001'}" in message
