"""A model saved in place of another, killed between its two files (session 53)."""
from __future__ import annotations

import pytest

import kizuna
from kizuna.models import checkpoint
from kizuna.models.checkpoint import CheckpointError, save_model


def test_a_save_over_another_model_cut_before_its_config_refuses_to_load_naming_its_weights(tmp_path, monkeypatch):
    """The first model's config.json stayed beside the second's weights: GELU weights read as QuickGELU, loaded
    without a word (1e-3 off)."""
    save_model(kizuna.create_model("ViT-mu-8"), tmp_path / "m")
    second = kizuna.create_model("ViT-mu-8-quickgelu")

    def killed(path, text, *a, **k):  # the process ends before config.json is written
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "atomic_write_text", killed)
    with pytest.raises(KeyboardInterrupt):
        save_model(second, tmp_path / "m")
    monkeypatch.undo()
    with pytest.raises(CheckpointError, match=r"no config.json, but its model.safetensors carries kizuna's record"):
        kizuna.load_model(tmp_path / "m")
    loaded = kizuna.load_model(tmp_path / "m" / "model.safetensors")  # the way on the message gives
    assert loaded.cfg.to_dict() == second.cfg.to_dict()


def test_a_save_of_the_same_model_again_keeps_its_config_until_replaced(tmp_path, monkeypatch):
    model = kizuna.create_model("ViT-mu-8")
    save_model(model, tmp_path / "m", extra={"step": 1})
    monkeypatch.setattr(checkpoint, "atomic_write_text", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        save_model(model, tmp_path / "m", extra={"step": 2})
    monkeypatch.undo()
    with pytest.warns(UserWarning, match="config.json says step 1, but the weights were saved at step 2"):
        kizuna.load_model(tmp_path / "m")  # (the same architecture: read with the weights' own record, as before)


def test_an_hf_export_over_another_cut_before_its_config_leaves_no_other_models_config(tmp_path, monkeypatch):
    from kizuna.models import convert_hf
    from kizuna.models.convert_hf import export_hf_clip

    export_hf_clip(kizuna.create_model("ViT-mu-8"), tmp_path / "hf")
    monkeypatch.setattr(convert_hf, "atomic_write_text", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        export_hf_clip(kizuna.create_model("ViT-mu-8-quickgelu"), tmp_path / "hf")
    monkeypatch.undo()
    assert not (tmp_path / "hf" / "config.json").exists()
    with pytest.raises(CheckpointError, match="no config.json"):
        kizuna.load_model(tmp_path / "hf")


def test_a_rename_onto_a_file_in_use_is_tried_again(tmp_path, monkeypatch):
    """Windows: a reader of a live run's `latest` (an eval, a virus scanner) failed the next save's rename, and the
    run stopped with [WinError 32]."""
    import os

    monkeypatch.setattr(checkpoint, "RENAME_RETRIES", (0.0, 0.0, 0.0))
    tries = []
    replace = os.replace

    def in_use_twice(src, dst):
        tries.append(1)
        if len(tries) <= 2:
            raise PermissionError(13, "The process cannot access the file because it is being used")
        replace(src, dst)

    monkeypatch.setattr(checkpoint.os, "replace", in_use_twice)
    checkpoint.atomic_write(tmp_path / "latest", lambda tmp: open(tmp, "w").write("step_0000002"))
    assert (tmp_path / "latest").read_text() == "step_0000002" and len(tries) == 3
    tries.clear()
    monkeypatch.setattr(checkpoint, "RENAME_RETRIES", ())  # POSIX: a PermissionError is the folder's rights
    with pytest.raises(PermissionError):
        checkpoint.atomic_write(tmp_path / "latest", lambda tmp: open(tmp, "w").write("x"))
    assert len(tries) == 1 and not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_a_killed_writes_temp_file_is_removed_by_the_next_write_once_stale(tmp_path):
    import os
    import time

    stale, young = tmp_path / ".e.npy.abc123.tmp", tmp_path / ".e.npy.def456.tmp"
    for temp in (stale, young):
        temp.write_bytes(b"half an embedding")
    old = time.time() - checkpoint.STALE_TEMP_SECONDS - 60
    os.utime(stale, (old, old))
    other = tmp_path / ".other.npy.abc.tmp"  # another target's: not this write's to sweep
    other.write_bytes(b"x")
    os.utime(other, (old, old))
    checkpoint.atomic_write(tmp_path / "e.npy", lambda tmp: open(tmp, "wb").write(b"new"))
    assert not stale.exists() and young.exists() and other.exists()
    assert (tmp_path / "e.npy").read_bytes() == b"new"
