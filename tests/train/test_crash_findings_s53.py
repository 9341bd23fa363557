"""Kills and full disks at every write (session 53)."""
from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import pytest
from _tiny import tiny_config

from kizuna.train import checkpointing
from kizuna.train.contrastive import ContrastiveTrainer


def test_a_finished_run_killed_before_its_curves_draws_them_at_its_resume(tmp_path):
    out = tmp_path / "run"
    ContrastiveTrainer(tiny_config(out, eval_max_samples=0)).train()
    (out / "curves.png").unlink()  # the kill came between the last checkpoint and the figure
    ContrastiveTrainer(tiny_config(out, eval_max_samples=0, resume="latest")).train()
    assert (out / "curves.png").is_file()


def test_a_kill_while_pruning_leaves_no_half_deleted_step_folder(tmp_path, monkeypatch):
    out = tmp_path / "run"
    removed = []
    monkeypatch.setattr(checkpointing.shutil, "rmtree", lambda path, **kw: removed.append(path))  # killed before
    trainer = ContrastiveTrainer(tiny_config(out, steps=3, save_every=1, keep_last=1, eval_max_samples=0))
    trainer.train()
    visible = sorted(p.name for p in (out / "checkpoints").iterdir() if p.name.startswith("step_"))
    assert visible == ["step_0000003"]  # the pruned ones out of sight at once, whatever the delete did
    assert any(p.name.endswith(".pruned") for p in removed)
    monkeypatch.undo()
    ContrastiveTrainer(tiny_config(out, steps=4, save_every=1, keep_last=1, eval_max_samples=0,
                                   resume="latest")).train()
    assert not [p for p in (out / "checkpoints").iterdir() if p.name.endswith(".pruned")]  # swept by the next save


def test_a_damaged_model_file_in_latest_says_where_to_resume_from(tmp_path):
    from kizuna.models.checkpoint import CheckpointError

    out = tmp_path / "run"
    ContrastiveTrainer(tiny_config(out, steps=2, save_every=1, keep_last=2, eval_max_samples=0)).train()
    weights = out / "checkpoints" / "step_0000002" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=r"this checkpoint is damaged\. Resume from an earlier one: --resume "
                                              r".*step_0000001"):
        ContrastiveTrainer(tiny_config(out, steps=2, eval_max_samples=0, resume="latest"))


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT, errno.EFBIG])
def test_a_full_disk_is_one_line(monkeypatch, capsys, code):
    from kizuna.apps import cli

    def full(args):
        raise OSError(code, "could not write out/e.npy (No space left on device); the files there before are "
                            "unchanged")

    monkeypatch.setattr(cli, "build_parser", _parser_running(full))
    assert cli.main(["x"]) == 1
    err = capsys.readouterr().err
    assert err.strip() == ("kizuna: error: could not write out/e.npy (No space left on device); the files there "
                           "before are unchanged")

    def raw(args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "out/e.npy")

    monkeypatch.setattr(cli, "build_parser", _parser_running(raw))
    assert cli.main(["x"]) == 1
    assert "No space left on device: 'out/e.npy'; free space there" in capsys.readouterr().err


def _parser_running(run):
    import argparse

    def build():
        parser = argparse.ArgumentParser(prog="kizuna")
        p = parser.add_subparsers().add_parser("x")
        p.set_defaults(_run=run)
        return parser
    return build


def test_removing_a_checkpoint_that_went_meanwhile_is_quiet(tmp_path):
    gone = tmp_path / "step_0000001"
    checkpointing._remove_checkpoint(gone)  # (a prune racing another's)
    folder = tmp_path / "step_0000002"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"x")
    checkpointing._remove_checkpoint(folder)
    assert not folder.exists() and not list(tmp_path.iterdir())
    assert shutil.rmtree  # (the real one: not patched here)


def test_vit_eval_killed_after_its_figure_leaves_no_results_of_another_model(tmp_path, monkeypatch):
    import json
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from test_supervised import _cfg, _shard

    from kizuna.apps.cli import main
    from kizuna.train import vit_cli
    from kizuna.train.supervised import SupervisedTrainer

    data = tmp_path / "data"
    _shard(data / "train" / "000000.tar", 0, 32)
    _shard(data / "test" / "000000.tar", 1000, 8)
    (data / "classnames.txt").write_text("red\ngreen\nblue\ngrey\n")
    SupervisedTrainer(_cfg(data, tmp_path / "run", steps=4, save_every=2)).train()
    ev = tmp_path / "ev"
    argv = ["vit", "eval", "--data", str(data / "test"), "--no-progress", "--out", str(ev)]
    assert main([argv[0], argv[1], str(tmp_path / "run" / "model"), *argv[2:]]) == 0
    assert json.loads((ev / "results.json").read_text())["model"].endswith("model")

    def killed(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(vit_cli, "atomic_write_text", killed)  # the kill after the new figure
    step_2 = tmp_path / "run" / "checkpoints" / "step_0000002"
    with pytest.raises(KeyboardInterrupt):
        vit_cli.run(vit_cli_args(argv, step_2))
    assert (ev / "confusion.png").is_file() and not (ev / "results.json").exists()


def vit_cli_args(argv, checkpoint):
    from kizuna.apps.cli import build_parser

    return build_parser().parse_args([argv[0], argv[1], str(checkpoint), *argv[2:]])


def test_a_checkpoint_that_did_not_fit_is_one_line(tmp_path, monkeypatch, capsys):
    """torch's and safetensors' own errors carry no errno: the checkpoint's message came after 59 lines."""
    from kizuna.apps.cli import main

    def full(*a, **k):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 1234 vs 1200")

    monkeypatch.setattr(checkpointing.torch, "save", full)
    code = main(["train", "--model", "ViT-mu-8", "--data", "synthetic", "--synthetic-image-size", "32",
                 "--synthetic-length", "64", "--batch-size", "16", "--steps", "2", "--workers", "0", "--out",
                 str(tmp_path / "run"), "--progress", "false", "--eval-max-samples", "4", "--context-length", "24"])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert "error: writing the checkpoint" in err and "No checkpoint was saved before it" in err


def test_a_checkpoint_that_cannot_be_renamed_is_left_whole(tmp_path, monkeypatch):
    """Windows: a reader holding a file of it (an eval of the live run, a virus scanner) fails the rename; the
    delete in place then left a step folder with some files gone, which the next commands failed on."""
    folder = tmp_path / "step_0000001"
    folder.mkdir()
    for name in ("model.safetensors", "config.json", "train_state.pt"):
        (folder / name).write_bytes(b"x")

    def held(src, dst):
        raise PermissionError(13, "The process cannot access the file because it is being used by another process")

    monkeypatch.setattr(checkpointing.os, "replace", held)
    checkpointing._remove_checkpoint(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors", "train_state.pt"]


def test_kizunas_own_path_too_long_message_is_one_line(monkeypatch, capsys):
    from kizuna.apps import cli

    def long(args):
        raise OSError(errno.ENAMETOOLONG, "writing the checkpoint x failed (...); a path too long for the file "
                                          "system, not a full disk. No checkpoint was saved before it: use a shorter "
                                          "--out and start the run again")

    monkeypatch.setattr(cli, "build_parser", _parser_running(long))
    assert cli.main(["x"]) == 1
    assert capsys.readouterr().err.strip().endswith("use a shorter --out and start the run again")


def test_a_second_spelling_of_a_held_folder_finds_its_lock(tmp_path, monkeypatch):
    """macOS: `Runs/x` and `runs/x` are one folder whose real paths' texts differ: a second hold under the other
    spelling opened (and closed) a second handle, which dropped the process's lock on the file."""
    out, alias = tmp_path / "runs" / "x", tmp_path / "Runs" / "x"
    alias.parent.mkdir()
    out.mkdir(parents=True)
    alias.mkdir()  # (stands for the other spelling: same_place below says they are one)
    same = checkpointing.same_place
    monkeypatch.setattr(checkpointing, "same_place", lambda a, b: {Path(a).name, Path(b).name} == {"x"} or same(a, b))
    key = checkpointing.hold_run_lock(out)
    try:
        assert checkpointing.hold_run_lock(alias) == key  # the same entry, counted again: no second handle
        checkpointing.release_run_lock(key)
    finally:
        checkpointing.release_run_lock(key)
    assert key not in checkpointing._HELD_LOCKS


def test_a_resume_whose_data_names_a_shard_twice_says_so(tmp_path):
    """A run from before 797a3dc read a shard named twice twice; today's reads it once, and the resume's refusal
    sent the user after files that had not changed ("Restore the files")."""
    import sys as _sys

    _sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
    from _shards import make_pair_shard

    make_pair_shard(tmp_path / "a.tar", 0, 16)
    spec = f"{tmp_path / 'a.tar'}::{tmp_path / 'a.tar'}"
    ContrastiveTrainer(tiny_config(tmp_path / "run", data=spec, steps=2, save_every=1, eval_max_samples=0)).train()
    state_file = tmp_path / "run" / "checkpoints" / "step_0000001" / "train_state.pt"
    import torch

    state = torch.load(state_file, weights_only=False)
    state["data"]["num_samples"] = 32  # as the older kizuna counted it: the shard's 16 samples twice
    torch.save(state, state_file)
    resume = dict(data=spec, steps=2, eval_max_samples=0, resume=str(tmp_path / "run" / "checkpoints" / "step_0000001"))
    named = frozenset({"out", "resume"})  # (as `kizuna train --out RUN --resume ...` names them)
    with pytest.raises(ValueError, match="names a source more than once, which kizuna read twice until 2026-12-07"):
        ContrastiveTrainer(tiny_config(tmp_path / "run", **resume), named=named)
    state["data"]["num_samples"] = 8  # fewer than now: the files changed (the repeat is not the cause)
    torch.save(state, state_file)
    with pytest.raises(ValueError, match="the files changed since the run started"):
        ContrastiveTrainer(tiny_config(tmp_path / "run", **resume), named=named)
