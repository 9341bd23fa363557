"""Mutation testing of stop 46's model-config checks (presets.check_override_types/_plain/clip_config,
ClipConfig.check_tokenizer, VisionTransformer's size checks, flops.clip_text_flops/clip_image_flops, create_model's
act and get_preprocess): checks whose loosening or tightening no test noticed."""
import pytest
import torch

import kizuna
from kizuna.models.flops import clip_flops, measured_flops


def test_a_whole_number_for_a_float_field_and_a_height_width_image_size_still_build():
    """The kind check lets an int stand for a float (init_logit_scale=2) and (height, width) for an int image_size;
    dropping either exemption refused configs clip_config built before."""
    cfg = kizuna.clip_config("ViT-mu-8", init_logit_scale=2, vision={"eps": 0})
    assert cfg.init_logit_scale == 2 and cfg.vision.eps == 0
    assert tuple(kizuna.clip_config("ViT-mu-8", vision={"image_size": [32, 32]}).vision.image_size) == (32, 32)
    # a field whose default is None (optional) takes any kind: the config's own checks judge it
    assert kizuna.clip_config("ViT-mu-8", loss="siglip", init_logit_bias=-10).init_logit_bias == -10


@pytest.mark.parametrize("overrides", [{"text": {"causal": 0}}, {"vision": {"class_token": 1}}])
def test_a_number_for_a_true_false_field_is_refused(overrides):
    """A bool is an int to isinstance: checked as "a whole number" first, 0 passed for causal=False."""
    with pytest.raises(ValueError, match="must be true or false"):
        kizuna.clip_config("ViT-mu-8", **overrides)


def test_numpy_numbers_inside_a_list_are_plain_numbers_too(tmp_path):
    """_plain converts inside lists: a list of np.float32 (not a float subclass) was kept as it was, and the
    model's config saved as no JSON."""
    np = pytest.importorskip("numpy")
    model = kizuna.create_model("ViT-mu-8", preprocess={"mean": [np.float32(0.5)] * 3})
    assert all(type(m) is float for m in model.cfg.preprocess["mean"])
    kizuna.save_model(model, tmp_path / "m.safetensors")
    assert kizuna.load_model(tmp_path / "m.safetensors").cfg.preprocess["mean"] == [0.5, 0.5, 0.5]


@pytest.mark.parametrize("embed_dim", [0, True])
def test_embed_dim_is_refused_by_name_when_not_a_positive_int(embed_dim):
    """ClipConfig's own check (not only clip_config's kind check): 0 and True are no width of the joint space."""
    from kizuna.models.clip import ClipConfig

    d = kizuna.clip_config("ViT-mu-8").to_dict()
    d["vision"]["output_dim"] = d["text"]["output_dim"] = None
    with pytest.raises(ValueError, match="embed_dim must be a positive int"):
        ClipConfig.from_dict({**d, "embed_dim": embed_dim})


def test_the_end_of_text_check_is_only_for_an_eot_pooled_tower_behind_openais_bpe():
    """A tower pooling at the highest id (argmax) never looks for the end-of-text id, and a tokenizer that is not
    OpenAI's BPE has ids of its own: neither is refused for an eot_token_id other than 49407."""
    cfg = kizuna.clip_config("ViT-mu-8", text={"pool": "argmax", "eot_token_id": 49406})
    assert cfg.text.eot_token_id == 49406
    # SigLIP's sentencepiece tokenizer numbers its own ids
    cfg = kizuna.clip_config("ViT-mu-8", tokenizer={"type": "sentencepiece"}, text={"eot_token_id": 1})
    assert cfg.text.vocab_size == 49408 and cfg.text.eot_token_id == 1


def _tower(stem, channels, patch):
    from kizuna.models.vit import VisionConfig, VisionTransformer

    return VisionTransformer(VisionConfig(image_size=32, patch_size=patch, width=32, depth=1, heads=2, mlp_dim=64,
                                          stem=stem, stem_channels=channels)).eval()


def test_a_stems_other_runtime_errors_are_not_called_too_small():
    """Only an image below patch x stride is "smaller than one patch": an image of that size or more that the stem
    fails on for another reason keeps the stem's own error."""
    model = _tower("conv", [8, 16, 16], 2)
    side = model.cfg.patch_size * model.cfg.stem_stride

    def failing(x):
        raise RuntimeError("the stem's own failure")

    model.stem.forward = failing
    with torch.no_grad():
        for size in (side, 32):
            with pytest.raises(RuntimeError, match="the stem's own failure"):
                model(torch.randn(1, 3, size, size))
        with pytest.raises(ValueError, match="smaller than one patch"):
            model(torch.randn(1, 3, side - 1, side - 1))


@pytest.mark.parametrize("field", ["num_classes", "output_dim"])
def test_true_is_no_layer_width(field):
    """A bool is an int to isinstance: True was a 1-wide head or projection."""
    from kizuna.models.vit import VisionConfig

    with pytest.raises(ValueError, match=f"vision {field} must be a positive int"):
        VisionConfig(image_size=32, patch_size=8, width=32, depth=1, heads=2, mlp_dim=64, **{field: True})


def _unpruned(model):
    for module in model.modules():
        if hasattr(module, "prune_last_block"):
            module.prune_last_block = False
    return model


def test_text_flops_never_count_more_positions_than_the_tower_has():
    """A saved config whose tokenizer names no length (77) in front of a 32-position tower: the tower runs at most
    32 (longer ids are refused), and its FLOPs are counted at 32, not at the tokenizer's 77."""
    from kizuna.models.clip import ClipConfig, ClipModel
    from kizuna.models.flops import text_flops

    d = kizuna.clip_config("ViT-mu-8", text={"context_length": 32}).to_dict()
    model = _unpruned(ClipModel(ClipConfig.from_dict({**d, "tokenizer": {"type": "clip_bpe"}})))
    tokens = kizuna.get_tokenizer(model)(["a photo of a dog " * 20])[:, :32]
    with torch.no_grad():
        assert clip_flops(model.cfg)["text"] == measured_flops(model.encode_text, tokens) == text_flops(model.cfg.text)


def test_image_flops_at_a_height_by_width_preprocess_size():
    model = _unpruned(kizuna.create_model("ViT-mu-8", preprocess={"image_size": [48, 40]}))
    with torch.no_grad():
        assert clip_flops(model.cfg)["image"] == measured_flops(model.encode_image, torch.randn(1, 3, 48, 40))
