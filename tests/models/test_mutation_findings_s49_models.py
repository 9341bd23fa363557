"""Mutation-testing round (stop 49): the checkpoint unwrapping, the text tower's token length for FLOPs, and
info's note on a class-token pooled forward."""
import dataclasses

import pytest
import torch

import kizuna
from kizuna.apps.cli import main
from kizuna.models.checkpoint import model_record, save_model, unwrapped_model
from kizuna.models.flops import clip_text_flops, text_flops
from kizuna.models.vit import VisionConfig, VisionTransformer


class _Holder(torch.nn.Module):
    """A user's own wrapper: its child is named ``module`` as DistributedDataParallel's is, but it is no DDP."""

    def __init__(self, inner):
        super().__init__()
        self.module = inner


def test_only_ddp_is_unwrapped_by_its_module_child():
    model = kizuna.create_model("ViT-mu-8")
    holder = _Holder(model)
    assert unwrapped_model(holder) is holder
    with pytest.raises(TypeError, match="cannot save a _Holder"):
        model_record(holder)


class DistributedDataParallel(torch.nn.Module):
    """Named as torch's (no process group needed): its ``module`` is the model it wraps."""

    def __init__(self, inner):
        super().__init__()
        self.module = inner


def test_nested_wrappers_are_all_unwrapped(tmp_path):
    model = kizuna.create_model("ViT-mu-8")
    wrapped = DistributedDataParallel(torch.compile(model))  # (only wrapped, never run)
    assert unwrapped_model(wrapped) is model
    save_model(wrapped, tmp_path / "m")
    assert set(kizuna.create_model(tmp_path / "m").state_dict()) == set(model.state_dict())


def test_model_record_of_a_compiled_model_is_the_models_own():
    model = kizuna.create_model("ViT-mu-8")
    assert model_record(torch.compile(model)) == model_record(model)


def test_a_config_without_a_tokenizer_is_counted_at_the_towers_length():
    cfg = kizuna.clip_config("ViT-mu-8")
    cfg.text = dataclasses.replace(cfg.text, context_length=100)
    cfg.tokenizer = None
    assert clip_text_flops(cfg) == text_flops(cfg.text, 100)  # (not the tokenizers' default 77)
    cfg.tokenizer = {"type": "clip_bpe"}  # a usable tokenizer without a length: its default 77, not the tower's
    assert clip_text_flops(cfg) == text_flops(cfg.text, 77)


def _conv_vit(pool):
    return VisionTransformer(VisionConfig(image_size=16, patch_size=1, width=32, depth=1, heads=2, mlp_dim=64,
                                          stem="conv", stem_channels=[8, 8, 8], pool=pool))


@pytest.mark.parametrize("pool, noted", [("cls", True), ("gap", False)])
def test_info_notes_the_pruned_forward_only_for_class_token_pooling(tmp_path, capsys, pool, noted):
    save_model(_conv_vit(pool), tmp_path / "m")
    assert main(["info", str(tmp_path / "m")]) in (0, None)
    out = capsys.readouterr().out
    assert "counts one forward as kizuna runs it" in out
    assert ("with a class token pooled" in out) is noted


def test_info_reads_a_two_tower_models_pooling_from_its_vision_config(tmp_path, capsys):
    cfg = kizuna.clip_config("ViT-mu-8")
    cfg.vision = dataclasses.replace(cfg.vision, stem="conv", stem_channels=[8, 8, 8], patch_size=1, pool="cls")
    save_model(kizuna.models.clip.ClipModel(cfg), tmp_path / "m")
    assert main(["info", str(tmp_path / "m")]) in (0, None)
    assert "with a class token pooled" in capsys.readouterr().out
