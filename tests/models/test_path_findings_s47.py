"""A run's ``checkpoints/latest`` pointer reached through a symbolic link (stop 47's review of paths)."""

import os
from pathlib import Path

import pytest
import torch

import kizuna
from kizuna.models.checkpoint import CheckpointError, follow_latest, save_model
from kizuna.models.vit import VisionConfig, VisionTransformer


def _tiny_vit(width=16):
    return VisionTransformer(VisionConfig(image_size=16, patch_size=8, width=width, depth=1, heads=2))


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symlinks")
def test_a_linked_latest_pointer_names_the_checkpoint_beside_the_real_pointer(tmp_path):
    """models/latest -> run/checkpoints/latest read its step_N beside the link: refused as "not a checkpoint folder
    beside it", or, where the link's folder had a step_N of its own, that one loaded without a word."""
    checkpoints = tmp_path / "run" / "checkpoints"
    save_model(_tiny_vit(16), checkpoints / "step_0000004")
    (checkpoints / "latest").write_text("step_0000004")
    shortcuts = tmp_path / "models"
    shortcuts.mkdir()
    os.symlink(checkpoints / "latest", shortcuts / "latest")
    assert Path(os.path.realpath(follow_latest(shortcuts / "latest"))) == Path(os.path.realpath(checkpoints / "step_0000004"))
    assert kizuna.load_model(shortcuts / "latest").cfg.width == 16
    save_model(_tiny_vit(32), shortcuts / "step_0000004")  # another model of the same name beside the link
    assert kizuna.load_model(shortcuts / "latest").cfg.width == 16
    # and a dangling pointer through a link names the real folder's checkpoints
    (checkpoints / "latest").write_text("step_0000009")
    with pytest.raises(CheckpointError, match=r"the newest checkpoint beside it is step_0000004: pass .*run/checkpoints"):
        kizuna.load_model(shortcuts / "latest")
