"""Model loading and config findings: OpenCLIP head counts and activation, preset overrides checked as a
whole config, the OpenAI layout's strict export, unreadable configs, HF processor mean/std and SigLIP's
default resize, SigLIP configs without a logit bias, get_preprocess on configs and ViTs."""
import json
import math
import re
import warnings

import pytest
import torch

import kizuna
from kizuna.models.checkpoint import CheckpointError, load_model, load_state_dict_strict, save_model
from kizuna.models.clip import OPENAI_MEAN, OPENAI_STD, ClipConfig, ClipModel
from kizuna.models.convert_hf import export_hf_clip, export_hf_siglip, hf_folder_to_kizuna, preprocess_from_hf
from kizuna.models.convert_openai import _infer_config, kizuna_to_openai, openai_to_kizuna
from kizuna.models.presets import clip_config
from kizuna.models.text import TextConfig
from kizuna.models.vit import VisionConfig


def _openai_like(vision_width=64, vision_heads=1, act="quick_gelu", vision_eps=1e-5, text_eps=1e-5, eot=99,
                 pool="eot") -> ClipModel:
    cfg = ClipConfig(
        embed_dim=32,
        vision=VisionConfig(image_size=28, patch_size=14, width=vision_width, depth=1, heads=vision_heads, mlp_dim=64,
                            act=act, eps=vision_eps, norm_pre=True, patch_bias=False, output_dim=32),
        text=TextConfig(vocab_size=100, context_length=16, width=64, depth=1, heads=1, mlp_dim=128, act=act,
                        eps=text_eps, output_dim=32, eot_token_id=eot, pool=pool),
    )
    torch.manual_seed(0)
    return ClipModel(cfg).eval()


def _quickgelu_warnings(record) -> list:
    return [w for w in record if "QuickGELU" in str(w.message)]


# ----- B1: OpenCLIP's large image towers and GELU ------------------------------------------------------
def _meta_openclip_sd(width: int, text_width: int, embed: int) -> dict:
    def e(*shape):
        return torch.empty(*shape, device="meta")

    return {"visual.conv1.weight": e(width, 3, 14, 14), "visual.positional_embedding": e(257, width),
            "visual.proj": e(width, embed), "text_projection": e(text_width, embed),
            "token_embedding.weight": e(49408, text_width), "positional_embedding": e(77, text_width),
            "visual.transformer.resblocks.0.mlp.c_fc.weight": e(4 * width, width),
            "transformer.resblocks.0.mlp.c_fc.weight": e(4 * text_width, text_width)}


@pytest.mark.parametrize("name,width,text_width,embed,text_heads", [
    ("ViT-H-14", 1280, 1024, 1024, 16), ("ViT-g-14", 1408, 1024, 1024, 16), ("ViT-bigG-14", 1664, 1280, 1280, 20),
    ("ViT-B-32 (OpenAI)", 768, 512, 512, 8), ("ViT-L-14 (OpenAI)", 1024, 768, 768, 12),
])
def test_openclip_large_image_towers_get_their_head_count(name, width, text_width, embed, text_heads):
    from kizuna.models.convert_openai import infer_heads

    cfg = _infer_config(_meta_openclip_sd(width, text_width, embed), name, "gelu", None, None)
    expected = {1280: 16, 1408: 16, 1664: 16}.get(width, width // 64)
    assert (cfg.vision.heads, cfg.text.heads) == (expected, text_heads)
    assert infer_heads(width, "vision") == expected and infer_heads(1280, "text") == 20


def test_openclip_state_dict_loads_with_its_heads_and_act_gelu(tmp_path):
    k = _openai_like(vision_width=1280, vision_heads=16, act="gelu")
    sd = kizuna_to_openai(k, strict=False)  # GELU: the layout cannot say so
    path = tmp_path / "open_clip_pytorch_model.bin"
    torch.save(sd, path)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        back = load_model(path, act="gelu")
    assert not _quickgelu_warnings(rec)
    assert (back.cfg.vision.heads, back.cfg.vision.act, back.cfg.text.act) == (16, "gelu", "gelu")
    pixels, tokens = torch.randn(2, 3, 28, 28), torch.randint(0, 99, (2, 16))
    tokens[:, 9] = 99
    with torch.no_grad():
        torch.testing.assert_close(back.logits(pixels, tokens)[0], k.logits(pixels, tokens)[0])
    assert kizuna.create_model(str(path), act="gelu").cfg.vision.act == "gelu"

    # without act=: QuickGELU assumed, and a warning says how to ask for GELU
    with pytest.warns(UserWarning, match=r"QuickGELU.*act=\"gelu\"") as rec:
        assumed = load_model(path)
    assert len(_quickgelu_warnings(rec)) == 1
    assert assumed.cfg.vision.act == "quick_gelu" and assumed.cfg.vision.heads == 16


def test_act_is_refused_for_checkpoints_that_record_theirs(tmp_path):
    path = save_model(kizuna.create_model("ViT-mu-8"), tmp_path / "m.safetensors")
    with pytest.raises(ValueError, match=r"--act \(act=\) applies to OpenAI-layout"):
        load_model(path, act="gelu")
    with pytest.raises(ValueError, match=r"--act \(act=\) applies to OpenAI-layout"):
        kizuna.create_model(str(path), act="gelu")
    sd_path = tmp_path / "x.pt"
    torch.save(kizuna_to_openai(_openai_like()), sd_path)
    with pytest.raises(ValueError, match="act must be one of"):
        load_model(sd_path, act="relu")


def test_openai_quickgelu_export_with_openclip_head_count_passes_strict():
    # 1280 wide with 16 heads is what a reader now infers: strict accepts it, 20 heads it refuses
    kizuna_to_openai(_openai_like(vision_width=1280, vision_heads=16))
    with pytest.raises(ValueError, match="vision has 20 heads, a reader infers OpenCLIP's table = 16"):
        kizuna_to_openai(_openai_like(vision_width=1280, vision_heads=20))


# ----- B3: strict export refuses what an OpenAI-layout reader misreads ---------------------------------------
def test_strict_openai_export_refuses_preprocessing_the_reader_does_not_give():
    """A model trained with mean/std 0.5, bilinear or squash resizing was exported without a word and read back
    with OpenAI's preprocessing (pixels 2.5 off, other photo embeddings)."""
    import dataclasses

    for preprocess, said in (({"mean": [0.5] * 3, "std": [0.5] * 3}, "mean [0.5, 0.5, 0.5], std [0.5, 0.5, 0.5]"),
                             ({"interpolation": "bilinear"}, "interpolation 'bilinear'"),
                             ({"resize_mode": "squash"}, "resize_mode 'squash'"),
                             ({"crop_pct": 0.875}, "crop_pct 0.875"), ({"image_size": 32}, "image_size 32")):
        k = _openai_like()
        k.cfg = dataclasses.replace(k.cfg, preprocess={"image_size": 28, **preprocess})
        with pytest.raises(ValueError, match=re.escape(f"its preprocessing ({said}) is not OpenAI's")):
            kizuna_to_openai(k)
        kizuna_to_openai(k, strict=False)
    k = _openai_like()  # OpenAI's own, written out in full or as a list size: exported
    k.cfg = dataclasses.replace(k.cfg, preprocess={"image_size": [28, 28], "mean": list(OPENAI_MEAN),
                                                   "std": list(OPENAI_STD), "interpolation": "bicubic"})
    kizuna_to_openai(k)


def test_strict_openai_export_refuses_another_eot_token_and_layernorm_eps():
    with pytest.raises(ValueError, match=r"end-of-text token 5.*argmax\(ids\)"):
        kizuna_to_openai(_openai_like(eot=5))
    with pytest.raises(ValueError, match=r"vision LayerNorm eps is 1e-06.*1e-5") as e:
        kizuna_to_openai(_openai_like(vision_eps=1e-6, text_eps=1e-6))
    assert "text LayerNorm eps is 1e-06" in str(e.value)
    kizuna_to_openai(_openai_like(eot=5), strict=False)
    kizuna_to_openai(_openai_like(eot=5, pool="argmax"))  # argmax pooling is what the reader does

    # the model that is accepted reads back exactly
    k = _openai_like()
    record, tensors = openai_to_kizuna(kizuna_to_openai(k), "x")
    back = ClipModel(ClipConfig.from_dict(record["config"])).eval()
    load_state_dict_strict(back, tensors, "x")
    tokens = torch.tensor([[1, 50, 60, 99] + [0] * 12])
    with torch.no_grad():
        torch.testing.assert_close(back.encode_text(tokens), k.encode_text(tokens))


def test_strict_openai_export_refuses_an_image_size_the_layout_cannot_record(tmp_path):
    """36 pixels with patch 8: the layout keeps only the 4x4 patch grid, the file reloaded as a 32-pixel model
    that preprocesses photos to 32 pixels (other embeddings), and the strict export said nothing."""
    import numpy as np
    from PIL import Image

    def mu8(size):
        return kizuna.create_model("ViT-mu-8-quickgelu", image_size=size, vision={"heads": 1}, text={"heads": 1}).eval()

    with pytest.warns(UserWarning, match="not a multiple of patch_size"):
        model = mu8(36)
    with pytest.raises(ValueError, match=r"image_size 36 is not a multiple of patch_size 8: the layout records only "
                                         r"the 4x4 patch grid, so a reader rebuilds a 32-pixel model .* export at a "
                                         r"multiple of the patch size .*save_model.*export_hf_clip"):
        kizuna_to_openai(model)
    kizuna_to_openai(mu8(40))  # a multiple is recorded exactly
    # strict=False exports anyway (INTEROP.md): the same pixels give the same embeddings, the same photo does not
    path = tmp_path / "m.pt"
    torch.save(kizuna_to_openai(model, strict=False), path)
    back = load_model(path, act="quick_gelu")
    assert back.cfg.vision.image_size == 32 and back.cfg.preprocess["image_size"] == 32
    photo = Image.fromarray(np.random.default_rng(0).integers(0, 255, (60, 80, 3), dtype=np.uint8))
    pixels = kizuna.get_preprocess(model)(photo)[None]
    with torch.no_grad():
        torch.testing.assert_close(back.encode_image(pixels), model.encode_image(pixels))
        assert not torch.allclose(back.encode_image(kizuna.get_preprocess(back)(photo)[None]),
                                  model.encode_image(pixels), atol=1e-3)


# ----- B2: preset overrides are checked as a whole config ------------------------------------------------
@pytest.mark.parametrize("overrides,match", [
    (dict(embed_dim=16, vision={"output_dim": 32}), "embed_dim 16 disagrees"),
    (dict(loss="sigmoid"), "loss must be 'clip' or 'siglip'"),
    (dict(image_size=4), "smaller than one patch"),
    (dict(vision={"dept": 1}), "unknown vision field 'dept'"),
    (dict(foo=1), "unknown ClipConfig field 'foo'"),
    (dict(vision=None), "must be a dict"),
])
def test_bad_preset_overrides_are_named_errors(overrides, match):
    with pytest.raises(ValueError, match=match):
        kizuna.create_model("ViT-mu-8", **overrides)


def test_dict_overrides_merge_into_the_preset_and_reload(tmp_path):
    model = kizuna.create_model("ViT-mu-8", vision={"depth": 1}, text={"depth": 1}, image_size=48)
    c = model.cfg
    assert isinstance(c.vision, VisionConfig) and isinstance(c.text, TextConfig)
    assert (c.vision.depth, c.vision.width, c.text.depth, c.text.width) == (1, 64, 1, 64)
    assert c.vision.image_size == 48 and c.preprocess["image_size"] == 48 and c.name == "ViT-mu-8"
    back = load_model(save_model(model, tmp_path / "m.safetensors"))
    assert back.cfg.to_dict() == c.to_dict()
    # a preset's act= sets both towers; an explicit tower act wins
    c2 = kizuna.create_model("ViT-mu-8", act="quick_gelu", text={"act": "gelu"}).cfg
    assert (c2.vision.act, c2.text.act) == ("quick_gelu", "gelu")
    assert clip_config("ViT-mu-8", vision=VisionConfig(**{**c.vision.to_dict(), "image_size": 64})).preprocess[
        "image_size"] == 64


def test_a_new_text_context_length_is_the_tokenizers_too():
    """The tokenizer kept the preset's 77: a 32-position tower failed at its first encode_text, a 100-position one
    cut captions at 77; a config built without a tokenizer gets one as long as its text tower."""
    for length in (32, 100):
        model = kizuna.create_model("ViT-mu-8", text={"context_length": length})
        tokens = kizuna.get_tokenizer(model)(["a photo of a dog " * 30])
        assert tokens.shape == (1, length) and model.encode_text(tokens).shape == (1, model.cfg.embed_dim)
    assert clip_config("ViT-mu-8", text={"context_length": 32}, tokenizer={"context_length": 16}).tokenizer[
        "context_length"] == 16  # a tokenizer set alongside is the user's choice
    short = clip_config("ViT-mu-8").to_dict()
    short.update(text={**short["text"], "context_length": 16}, tokenizer=None)
    assert ClipConfig.from_dict(short).tokenizer == {"type": "clip_bpe", "context_length": 16}


# ----- R1: an unreadable config.json ----------------------------------------------------------------------
def test_config_json_that_is_a_folder_is_a_checkpoint_error(tmp_path):
    (tmp_path / "m" / "config.json").mkdir(parents=True)
    with pytest.raises(CheckpointError, match=r"config\.json: cannot be read") as e:
        load_model(tmp_path / "m")
    assert str(tmp_path / "m" / "config.json") in str(e.value)


# ----- R2 / R3: HF processor settings -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def hf_mu(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hf") / "clip"
    export_hf_clip(kizuna.create_model("ViT-mu-8"), folder)
    return folder


@pytest.mark.parametrize("mean,expected", [
    (0.5, [0.5, 0.5, 0.5]), ([0.1, 0.2, 0.3], [0.1, 0.2, 0.3]), ("abc", None), ([0.5], None), ([1, 2], None),
    ([0.5, "x", 0.5], None),
])
def test_hf_processor_mean_is_checked_where_it_is_read(hf_mu, mean, expected):
    pp_file = hf_mu / "preprocessor_config.json"
    pp = json.loads(pp_file.read_text())
    original = pp_file.read_text()
    try:
        pp_file.write_text(json.dumps({**pp, "image_mean": mean, "image_std": mean}))
        if expected is None:
            with pytest.raises(CheckpointError, match="image_mean must be three numbers") as e:
                hf_folder_to_kizuna(hf_mu)
            assert str(pp_file) in str(e.value) and "config.json:" not in str(e.value).replace(str(pp_file), "")
        else:
            record, _ = hf_folder_to_kizuna(hf_mu)
            assert record["config"]["preprocess"]["mean"] == expected
            assert record["config"]["preprocess"]["std"] == expected
    finally:
        pp_file.write_text(original)


def test_hf_processor_size_errors_name_the_processor_file():
    with pytest.raises(CheckpointError, match=r"^p/preprocessor_config\.json: cannot read"):
        preprocess_from_hf({"size": {"shortest_edge": "x"}, "do_center_crop": True,
                            "crop_size": {"height": 3, "width": 3}}, "clip", 224, "p/preprocessor_config.json")
    with pytest.raises(CheckpointError, match="image_std must be positive"):
        preprocess_from_hf({"image_std": [0.5, 0, 0.5]}, "clip", 224, "p")


def test_siglip_processor_without_size_squashes(tmp_path):
    folder = export_hf_siglip(kizuna.create_model("siglip-mu-8"), tmp_path / "sig")
    pp = json.loads((folder / "preprocessor_config.json").read_text())
    pp.pop("size")
    pp.pop("do_center_crop", None)
    (folder / "preprocessor_config.json").write_text(json.dumps(pp))
    record, _ = hf_folder_to_kizuna(folder)
    assert record["config"]["preprocess"]["resize_mode"] == "squash"
    assert record["config"]["preprocess"]["image_size"] == 32  # the model's own size
    # a crop asked for is still a crop
    assert preprocess_from_hf({"do_center_crop": True, "crop_size": {"height": 32, "width": 32}}, "siglip", 32)[
        "resize_mode"] == "shortest"


# ----- R4: SigLIP needs its logit bias ----------------------------------------------------------------------
def test_siglip_loss_without_a_logit_bias_is_refused():
    c = clip_config("siglip-mu-8").to_dict()
    with pytest.raises(ValueError, match="loss='siglip' needs a logit bias"):
        ClipConfig.from_dict({**c, "init_logit_bias": None})
    assert ClipConfig.from_dict(c).init_logit_bias == -10.0
    assert clip_config("siglip-mu-8").init_logit_scale == pytest.approx(math.log(10))


def test_a_logit_bias_with_the_clip_loss_is_refused_for_training_and_still_loads(tmp_path):
    """The softmax loss never uses the bias: it had no gradient (GradCache failed on it, DDP on an unused
    parameter, and a plain run saved it untrained). Training refuses it; a model saved so still loads."""
    from kizuna.train.config import make_config
    from kizuna.train.contrastive import model_config

    with pytest.raises(ValueError, match=r"init_logit_bias=-5.0 is for the sigmoid loss.*--loss siglip"):
        model_config(make_config(model="ViT-mu-8", data="some/shards", model_overrides={"init_logit_bias": -5.0}))
    c = clip_config("ViT-mu-8").to_dict()
    old = ClipModel(ClipConfig.from_dict({**c, "init_logit_bias": -5.0}))  # saved before the refusal
    loaded = load_model(save_model(old, tmp_path / "m"))
    assert loaded.cfg.loss == "clip" and float(loaded.logit_bias) == -5.0

# ----- N3: get_preprocess ------------------------------------------------------------------------------------
def test_get_preprocess_takes_a_config_a_model_or_a_dict_and_says_what_a_vit_needs():
    model = kizuna.create_model("ViT-mu-8")
    a, b = kizuna.get_preprocess(model), kizuna.get_preprocess(model.cfg)
    c = kizuna.get_preprocess(model.cfg.preprocess)
    assert repr(a) == repr(b) == repr(c)
    vit = kizuna.create_vit("mu/8", image_size=32)
    with pytest.raises(ValueError, match="carries no preprocessing.*vit_preprocess"):
        kizuna.get_preprocess(vit)
    with pytest.raises(ValueError, match="carries no preprocessing"):
        kizuna.get_preprocess(vit.cfg)
    with pytest.raises(TypeError, match="get_preprocess takes"):
        kizuna.get_preprocess(42)


def test_the_command_line_passes_act_on(tmp_path):
    """The library took act=, the command line had no way to say it (a GELU OpenCLIP file only warned)."""
    from kizuna.apps.cli import build_parser
    from kizuna.apps.common import load_model_from_args

    path = tmp_path / "open_clip_pytorch_model.bin"
    torch.save(kizuna_to_openai(_openai_like(act="gelu"), strict=False), path)
    args = build_parser().parse_args(["embed", "--model", str(path), "--texts", "t.txt", "--out", "o.npy",
                                      "--device", "cpu", "--act", "gelu"])
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        model = load_model_from_args(args)
    assert (model.cfg.vision.act, model.cfg.text.act) == ("gelu", "gelu") and not _quickgelu_warnings(rec)


# ----- interop findings --------------------------------------------------------------------------------------
@pytest.mark.parametrize("settings,match", [
    ({"resample": 1}, r"resample 1 \(PIL LANCZOS\) is not an interpolation"),
    ({"resample": 4}, r"resample 4 \(PIL BOX\)"),
    ({"resample": 5}, r"resample 5 \(PIL HAMMING\)"),
    ({"resample": "lanczos"}, "resample 'lanczos' is not"),  # transformers resizes bilinear for any name
    ({"resample": 3.0}, "resample 3.0 is not"),
    ({"resample": None}, "resample None is not"),
    ({"do_resize": False}, "do_resize is false"),
    ({"rescale_factor": 0}, "rescale_factor must be a positive number"),
    ({"rescale_factor": "1/255"}, "rescale_factor must be a positive number"),
    # resized smaller than the crop: transformers pads to the crop, kizuna resized to cover it (test_interop)
    ({"size": {"shortest_edge": 24}}, r"size\.shortest_edge 24 is smaller than crop_size 32: transformers pads"),
    ({"size": 24}, r"size 24 is smaller than crop_size 32: .* set size to at least 32"),  # an int size: the edge
    ({"crop_size": {"height": 32, "width": 40}}, r"size\.shortest_edge 32 is smaller than crop_size 32x40: .* at "
                                                 r"least 40"),  # a square photo would be padded at the sides
    # squashed to size, then cropped: kizuna's squash enlarges both sides by one factor, and never pads
    ({"size": {"height": 40, "width": 48}}, r"size 40x48 \(height x width\) with crop_size 32x32: transformers "
                                            r"squashes"),
    ({"size": {"height": 24, "width": 24}}, r"size 24x24 .*\(padding with black where size is smaller"),
])
def test_hf_processor_settings_kizuna_cannot_reproduce_are_refused(settings, match):
    """They became bicubic, or were never read, silently (kizuna's preprocessing resizes with nearest, bilinear
    or bicubic, and always). HF's pixels for what is read: test_interop."""
    with pytest.raises(CheckpointError, match=rf"^p/preprocessor_config\.json: {match}"):
        preprocess_from_hf({"size": {"shortest_edge": 32}, "crop_size": {"height": 32, "width": 32}, **settings},
                           "clip", 32, "p/preprocessor_config.json")
    # what is read: an int size is the shortest edge (timm's crop_pct past the crop), resample codes, rescaling
    pre = preprocess_from_hf({"size": 40, "crop_size": 32, "resample": 0, "do_rescale": False, "image_mean": 0.5,
                              "image_std": 0.5}, "clip", 32)
    assert (pre["image_size"], pre["crop_pct"], pre["interpolation"]) == (32, 0.8, "nearest")
    assert pre["mean"] == pytest.approx([0.5 / 255] * 3) and pre["std"] == pytest.approx([0.5 / 255] * 3)


def test_export_hf_siglip_removes_an_earlier_exports_sentencepiece_tokenizer(spiece_model, tmp_path):
    """A model whose tokenizer is CLIP's BPE, exported over an earlier export's spiece.model, reloaded with
    that sentencepiece tokenizer (other ids)."""
    native = kizuna.create_model("siglip-mu-8")
    assert native.cfg.tokenizer["type"] == "clip_bpe"
    stale = export_hf_siglip(native, tmp_path / "stale")
    (stale / "spiece.model").write_bytes(spiece_model)
    (stale / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "SiglipTokenizer"}))
    assert load_model(stale).cfg.tokenizer["type"] == "sentencepiece"  # what an earlier export leaves
    export_hf_siglip(native, stale)
    assert not (stale / "spiece.model").exists() and not (stale / "tokenizer_config.json").exists()
    back = load_model(stale)
    assert back.cfg.tokenizer == native.cfg.tokenizer
    assert torch.equal(kizuna.get_tokenizer(back)(["a dog"]), kizuna.get_tokenizer(native)(["a dog"]))
    # another tokenizer's settings are not the exporter's to remove
    (stale / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "CLIPTokenizer"}))
    export_hf_siglip(native, stale)
    assert (stale / "tokenizer_config.json").is_file()


def test_export_hf_clip_removes_an_earlier_siglip_exports_tokenizer(spiece_model, tmp_path):
    """A CLIP model exported over an earlier SigLIP export (with its sentencepiece tokenizer) left spiece.model and
    the SiglipTokenizer settings behind: transformers' AutoTokenizer loaded them as the CLIP model's tokenizer."""
    transformers = pytest.importorskip("transformers")
    siglip = export_hf_siglip(kizuna.create_model("siglip-mu-8"), tmp_path / "siglip")
    (siglip / "spiece.model").write_bytes(spiece_model)
    (siglip / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "SiglipTokenizer"}))
    folder = export_hf_siglip(load_model(siglip), tmp_path / "out")  # writes its sentencepiece tokenizer back
    assert type(transformers.AutoTokenizer.from_pretrained(folder)).__name__.startswith("Siglip")
    export_hf_clip(kizuna.create_model("ViT-mu-8"), folder)
    assert not (folder / "spiece.model").exists()  # the settings are the CLIP export's own tokenizer's now
    assert json.loads((folder / "tokenizer_config.json").read_text())["tokenizer_class"] == "CLIPTokenizer"
    assert json.loads((folder / "config.json").read_text())["model_type"] == "clip"
    # another tokenizer's settings are not the exporter's to remove
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "CLIPTokenizer"}))
    export_hf_clip(kizuna.create_model("ViT-mu-8"), folder)
    assert (folder / "tokenizer_config.json").is_file()


@pytest.mark.parametrize("field,value", [("heads", 0), ("width", 0), ("depth", 0), ("context_length", 0),
                                         ("vocab_size", 0), ("mlp_dim", -1), ("heads", 1.5), ("depth", True)])
def test_text_config_sizes_are_checked_as_vision_ones_are(field, value):
    """heads 0 divided by zero, mlp_dim -1 failed in a Linear; width, depth, context and vocabulary 0 built."""
    with pytest.raises(ValueError, match=f"text {field} must be a positive int, got {value!r}"):
        TextConfig(**{field: value})
    with pytest.raises(ValueError, match="text width 64 is not divisible by heads 3"):
        TextConfig(width=64, heads=3)
    # a preset override: named (a value of another kind, 1.5 or True, by clip_config's type check)
    with pytest.raises(ValueError, match=f"text[ .]{field} must be a (positive int|whole number)"):
        kizuna.create_model("ViT-mu-8", text={field: value})


def test_openai_layout_with_a_tower_narrower_than_a_head_is_a_checkpoint_error(tmp_path):
    """heads = width // 64 = 0 for a 32-wide text tower: a ZeroDivisionError."""
    model = kizuna.create_model("ViT-mu-8-quickgelu", vision={"heads": 1},
                                text={"heads": 1, "width": 32, "mlp_dim": 64})
    path = tmp_path / "narrow.pt"
    torch.save(kizuna_to_openai(model, strict=False), path)
    with pytest.raises(CheckpointError, match=r"narrow\.pt: the text tower is 32 wide, narrower than one head of 64"):
        load_model(path, act="quick_gelu")
    record, tensors = openai_to_kizuna(torch.load(path, weights_only=True), str(path), act="gelu", text_heads=1)
    back = ClipModel(ClipConfig.from_dict(record["config"]))
    load_state_dict_strict(back, tensors, str(path))


def test_exporters_refuse_a_minilm_text_tower_and_a_vit_with_a_clear_error(tmp_path):
    """kizuna_to_openai on a MiniLM tower: KeyError 'text.token_embed.weight'; a ViT classifier: AttributeError."""
    cfg = clip_config("ViT-mu-8-quickgelu").to_dict()
    cfg["text"].update(kind="minilm", output_dim=cfg["embed_dim"])
    with torch.device("meta"):
        minilm = ClipModel(ClipConfig.from_dict(cfg))
    for strict in (True, False):
        with pytest.raises(ValueError, match="OpenAI CLIP layout cannot express this model: its text tower is "
                                             "'minilm'"):
            kizuna_to_openai(minilm, strict=strict)
    vit = kizuna.create_vit("mu/8", image_size=32, num_classes=3)
    for export in (kizuna_to_openai, lambda m: export_hf_clip(m, tmp_path / "x"),
                   lambda m: export_hf_siglip(m, tmp_path / "x")):
        with pytest.raises(TypeError, match="exports a CLIP or SigLIP model .* got VisionTransformer: a supervised"):
            export(vit)
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("size", [4, 0, -8, 32.0, "48", True, (32, 0)])
def test_a_bad_image_size_argument_is_not_blamed_on_the_checkpoint(size, tmp_path):
    """load_model(path, image_size=4) said the checkpoint's kizuna record was from another kizuna version."""
    path = save_model(kizuna.create_model("ViT-mu-8"), tmp_path / "m.safetensors")
    with pytest.raises(ValueError, match="image_size") as e:
        load_model(path, image_size=size)
    assert not isinstance(e.value, CheckpointError) and "another kizuna version" not in str(e.value)
    assert load_model(path, image_size=48).cfg.vision.image_size == 48


def test_the_grid_warning_is_said_once_per_load(tmp_path):
    """image_size not a multiple of the patch: the converter's config, load_model's resize and the model's own
    each warned."""
    with pytest.warns(UserWarning, match="not a multiple of patch_size"):
        model = kizuna.create_model("ViT-mu-8-quickgelu", image_size=36, vision={"heads": 1}, text={"heads": 1})
    export_hf_clip(model, tmp_path / "hf")
    path = save_model(model, tmp_path / "m.safetensors")
    for load in (lambda: load_model(tmp_path / "hf"), lambda: load_model(path, image_size=44)):
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always")
            load()
        assert len([w for w in rec if "is not a multiple of patch_size" in str(w.message)]) == 1


def test_info_on_a_vit_says_what_it_counts(tmp_path, capsys):
    """`kizuna info` on a ViT classifier said "(one image / one text)", and for a hybrid suggested
    measured_flops(model.encode_image, ...), which a VisionTransformer does not have."""
    from argparse import Namespace

    from kizuna.apps.info import run

    for stem, expected in (("patch", "(2 x MACs, one image)"), ("conv", "measured_flops(model, x)")):
        vit = kizuna.create_vit("mu/8", image_size=32, num_classes=3, stem=stem)
        path = save_model(vit, tmp_path / f"{stem}.safetensors")
        run(Namespace(model=str(path), allow_jit=False, act=None, json=False))
        out = capsys.readouterr().out
        assert expected in out and "one text" not in out and "encode_image" not in out


def test_a_trained_tokenizer_is_not_exported_to_a_layout_that_cannot_carry_it(tmp_path):
    """The OpenAI layout has no place for a tokenizer: a reader assumes OpenAI's BPE, whose ids a model trained with
    its own never saw. (An HF CLIP folder carries the trained BPE now: tests/models/test_hf_export_tokenizer.py.)"""
    from kizuna.data.tokenizer import train_bpe_tokenizer

    tok = train_bpe_tokenizer(["a photo of a red square", "a blue circle on the left"] * 50, vocab_size=600,
                              context_length=16)
    model = kizuna.create_model("ViT-mu-8", tokenizer=tok.to_config(), text={
        "vocab_size": tok.vocab_size, "eot_token_id": tok.eot_token_id, "context_length": 16})
    with pytest.raises(ValueError, match="the tokenizer is 'trained_bpe', a reader assumes OpenAI's BPE"):
        kizuna_to_openai(model)
