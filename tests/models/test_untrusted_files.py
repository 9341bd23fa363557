"""Every reader of a torch file someone else may have written refuses a TorchScript archive itself, before
torch.load: on torch < 2.6 (pyproject allows 2.3) a weights-only load handed one to torch.jit.load, which runs
code stored in it (CVE-2025-32434). Found by a security review of the readers, 2026-12-06."""
from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

import kizuna
from kizuna.eval import classification
from kizuna.models.checkpoint import CheckpointError, _is_torchscript, load_model
from kizuna.train.checkpointing import read_train_state


@pytest.fixture(scope="module")
def torchscript_archive(tmp_path_factory):
    path = tmp_path_factory.mktemp("jit") / "scripted.pt"
    with warnings.catch_warnings():  # deprecated in favour of torch.export; OpenAI's .pt files are these
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(nn.Linear(2, 2)), str(path))
    return path


@pytest.fixture()
def old_torch(monkeypatch):
    """torch.load as before 2.6 for a TorchScript archive: it would hand it to torch.jit.load (run its code)."""
    real = torch.load
    reached = []

    def load(f, *args, **kwargs):
        if _is_torchscript(Path(str(f))):
            reached.append(str(f))
            raise AssertionError("a TorchScript archive reached torch.load")
        return real(f, *args, **kwargs)

    monkeypatch.setattr(torch, "load", load)
    return reached


def test_an_hf_folders_torchscript_bin_is_refused_before_torch_load(tmp_path, torchscript_archive, old_torch):
    folder = tmp_path / "hf"
    folder.mkdir()
    shutil.copy(torchscript_archive, folder / "pytorch_model.bin")
    (folder / "config.json").write_text('{"model_type": "clip"}')
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch's "dispatching to torch.jit.load" warning is not reached either
        with pytest.raises(CheckpointError, match="TorchScript") as e:
            load_model(folder)
    assert "weights_only" not in str(e.value) and "damaged" not in str(e.value)
    assert old_torch == []


@pytest.mark.parametrize("mmap", [False, True])
def test_a_torchscript_train_state_is_refused_before_torch_load(tmp_path, torchscript_archive, old_torch, mmap):
    checkpoint = tmp_path / "run" / "checkpoints" / "step_10"
    kizuna.save_model(kizuna.create_model("ViT-mu-8"), checkpoint)
    shutil.copy(torchscript_archive, checkpoint / "train_state.pt")
    with pytest.raises(CheckpointError, match="TorchScript"):
        read_train_state(checkpoint, mmap=mmap)
    assert old_torch == []


def test_a_pickled_train_state_is_named_as_such_not_damage(tmp_path):
    """A train_state.pt asking for posix.system was called "damaged ... start the run again"."""
    import os

    class Payload:
        def __reduce__(self):
            return os.getpid, ()

    checkpoint = tmp_path / "run" / "checkpoints" / "step_10"
    kizuna.save_model(kizuna.create_model("ViT-mu-8"), checkpoint)
    torch.save({"step": 10, "x": Payload()}, checkpoint / "train_state.pt")
    with pytest.raises(CheckpointError, match="pickled objects other than tensors") as e:
        read_train_state(checkpoint)
    assert "damaged" not in str(e.value) and "weights_only" not in str(e.value)


def test_a_torchscript_class_cache_is_not_loaded_by_torch(tmp_path, torchscript_archive, old_torch):
    cache = tmp_path / "cache" / "classes-0123.pt"
    cache.parent.mkdir()
    shutil.copy(torchscript_archive, cache)
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        assert classification._load(cache, ["a"], ["{}"], None) is None  # a miss: computed again
    assert old_torch == [] and any("TorchScript" in str(w.message) for w in said)


def test_a_damaged_pickle_in_train_state_is_called_damage(tmp_path):
    """A flipped byte in data.pkl is an UnpicklingError too ("Unsupported operand"), not an object refused."""
    import io

    checkpoint = tmp_path / "run" / "checkpoints" / "step_10"
    kizuna.save_model(kizuna.create_model("ViT-mu-8"), checkpoint)
    buffer = io.BytesIO()
    torch.save({"step": 3, "x": torch.zeros(3)}, buffer)
    data = buffer.getvalue()
    at = data.find(b"\x80\x02}")
    (checkpoint / "train_state.pt").write_bytes(data[:at] + b"\x00" + data[at + 1:])
    with pytest.raises(CheckpointError, match="this checkpoint is damaged") as e:
        read_train_state(checkpoint)
    assert "weights_only" not in str(e.value)
