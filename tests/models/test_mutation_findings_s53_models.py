"""Mutation findings (session 53), models: a folder without config.json whose model.safetensors is not kizuna's."""
from __future__ import annotations

import pytest
import torch

import kizuna
from kizuna.models.checkpoint import CheckpointError


@pytest.mark.parametrize("weights", ["none", "plain", "garbage"])
def test_a_folder_without_config_whose_weights_carry_no_record_says_so(tmp_path, weights):
    """Kills `return True` in checkpoint._carries_a_record (any folder without config.json sent to a
    model.safetensors that has no record, or none at all)."""
    from safetensors.torch import save_file

    folder = tmp_path / "m"
    folder.mkdir()
    if weights == "plain":
        save_file({"w": torch.zeros(2)}, str(folder / "model.safetensors"))
    elif weights == "garbage":
        (folder / "model.safetensors").write_bytes(b"not a safetensors file")
    (folder / "notes.txt").write_text("x")
    with pytest.raises(CheckpointError) as e:
        kizuna.load_model(folder)
    assert "folder has no config.json (expected a kizuna or Hugging Face model)" in str(e.value)
    assert "carries kizuna's record" not in str(e.value)
