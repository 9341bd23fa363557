"""What macOS and Windows do differently, simulated on Linux: Windows refuses os.replace onto an existing folder,
case-insensitive file systems make `base` and `Base` one folder, Windows tools write JSON with a byte-order mark,
a link from another drive has no relative path."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from kizuna.train import checkpointing

sys.path.insert(0, str(Path(__file__).parent))
from _tiny import tiny_config  # noqa: E402


def _windows_replace(monkeypatch):
    real = os.replace

    def replace(src, dst):
        if os.path.isdir(dst):
            raise PermissionError(13, "Access is denied", str(dst))
        return real(src, dst)

    monkeypatch.setattr(checkpointing, "_exchange", lambda a, b: False)  # no renameat2 outside Linux
    monkeypatch.setattr(os, "replace", replace)


def test_a_folder_is_swapped_in_twice_where_replace_refuses_an_existing_folder(tmp_path, monkeypatch):
    """The second better best/ stopped a Windows run with "Access is denied" (the old one was moved onto an empty
    temporary folder made for it)."""
    _windows_replace(monkeypatch)
    final = tmp_path / "best"
    for version in ("1", "2", "3"):
        tmp = tmp_path / f".best.{version}"
        tmp.mkdir()
        (tmp / "v.txt").write_text(version)
        checkpointing.swap_folder_in(tmp, final)
        assert (final / "v.txt").read_text() == version
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best"]


def test_a_run_keeps_best_improving_where_replace_refuses_an_existing_folder(tmp_path, monkeypatch):
    from kizuna.train.contrastive import ContrastiveTrainer

    _windows_replace(monkeypatch)
    seen = iter([0.1, 0.2, 0.3])
    monkeypatch.setattr(ContrastiveTrainer, "evaluate", lambda self: {"probe/shape": next(seen)})
    ContrastiveTrainer(tiny_config(tmp_path, steps=3, eval_every=1, best_metric="probe/shape")).train()
    extra = json.loads((tmp_path / "checkpoints" / "best" / "config.json").read_text())["kizuna"]["extra"]
    assert extra["step"] == 3


def _case_insensitive(monkeypatch):
    """os.path.samefile as on APFS or NTFS: names that differ only in case are one folder."""
    real = os.path.samefile

    def samefile(a, b):
        a, b = os.fspath(a), os.fspath(b)
        if a.casefold() == b.casefold() and os.path.exists(a.casefold()):
            return True
        return real(a, b)

    monkeypatch.setattr(os.path, "samefile", samefile)


def test_the_same_folder_spelt_in_another_case_is_caught(tmp_path, monkeypatch):
    from kizuna.apps.common import check_out_outside_data, check_start_outside_out, parts_below
    from kizuna.train.data import training_source_in

    (tmp_path / "base" / "model").mkdir(parents=True)
    (tmp_path / "pets" / "cat").mkdir(parents=True)
    _case_insensitive(monkeypatch)
    assert parts_below(tmp_path / "BASE" / "model", tmp_path / "base") == ("model",)
    with pytest.raises(ValueError, match="is inside --out"):
        check_start_outside_out(tmp_path / "BASE", "the checkpoint to fine-tune", tmp_path / "base" / "model")
    with pytest.raises(ValueError, match="is inside --dataset"):
        check_out_outside_data(tmp_path / "PETS" / "out", "--dataset", tmp_path / "pets")
    assert training_source_in([str(tmp_path / "PETS")], str(tmp_path / "pets" / "cat")) == str(tmp_path / "PETS")
    # and told apart where they are not one folder
    (tmp_path / "other").mkdir()
    assert parts_below(tmp_path / "other", tmp_path / "base") is None
    check_out_outside_data(tmp_path / "other", "--dataset", tmp_path / "pets")


def test_an_empty_folder_named_like_a_preset_is_not_taken_for_a_checkpoint(tmp_path, monkeypatch):
    """`kizuna train --model ViT-mu-8` beside a folder of that name failed with "folder has no config.json"; every
    other command uses the preset (kizuna._shadows_a_preset)."""
    from kizuna.train.contrastive import ContrastiveTrainer

    monkeypatch.chdir(tmp_path)
    (tmp_path / "ViT-mu-8").mkdir()
    trainer = ContrastiveTrainer(tiny_config(tmp_path / "run", model="ViT-mu-8", steps=1, warmup_steps=0,
                                             context_length=16))
    assert trainer.model.cfg.text.context_length == 16  # a preset's setting (refused for a checkpoint)


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16"])
def test_json_files_a_windows_tool_wrote_are_read(tmp_path, encoding):
    from kizuna.eval.suite import load_suite
    from kizuna.train.config import load_config_file

    config = tmp_path / "cfg.json"
    config.write_text(json.dumps({"steps": 7, "lr": 0.002}), encoding=encoding)
    assert load_config_file(str(config))["steps"] == 7
    suite = tmp_path / "suite.json"
    suite.write_text(json.dumps([{"model": "ViT-mu-8", "dataset": str(tmp_path), "task": "zeroshot"}]),
                     encoding=encoding)
    loaded = load_suite(str(suite))
    assert loaded["runs"][0]["model"] == "ViT-mu-8"


def test_a_class_folder_linked_from_another_drive_is_read(tmp_path, monkeypatch):
    from kizuna.data.images import list_images

    (tmp_path / "D" / "cat").mkdir(parents=True)
    (tmp_path / "D" / "cat" / "a.png").write_bytes(b"x")
    (tmp_path / "C" / "subset").mkdir(parents=True)
    (tmp_path / "C" / "subset" / "cat").symlink_to(tmp_path / "D" / "cat")

    def relpath(path, start=os.curdir):  # ntpath's rule across drives
        raise ValueError(f"path is on mount 'D:', start on mount 'C:'")

    monkeypatch.setattr(os.path, "relpath", relpath)
    assert [p.name for p in list_images(tmp_path / "C" / "subset")] == ["a.png"]


def test_templates_json_a_windows_tool_wrote_is_read(tmp_path):
    from kizuna.eval.datasets import read_templates

    path = tmp_path / "t.json"
    path.write_text(json.dumps(["a photo of a {c}.", "a {c}"]), encoding="utf-16")
    assert read_templates(str(path)) == ["a photo of a {c}.", "a {c}"]
