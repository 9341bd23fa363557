"""Interoperability: Hugging Face CLIP/SigLIP folders and OpenAI state dicts load into kizuna (and export
back) with the same numbers, on real images and captions where the shared data is present."""
import json
import os
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file
from torch import nn

import kizuna
from kizuna.data.images import decode_image
from kizuna.models.checkpoint import CheckpointError, load_state_dict_strict, save_model
from kizuna.models.clip import ClipConfig, ClipModel
from kizuna.models.convert_hf import export_hf_clip, export_hf_siglip, hf_folder_to_kizuna
from kizuna.models.convert_openai import kizuna_to_openai, openai_to_kizuna
from kizuna.models.presets import clip_config
from kizuna.models.text import TextConfig
from kizuna.models.vit import VisionConfig

transformers = pytest.importorskip("transformers")

SHARED = Path(os.environ.get("KIZUNA_SHARED", Path(__file__).resolve().parents[2].parent / "shared"))
FLICKR = SHARED / "data/flickr8k/test/000000.tar"
TOL = dict(atol=1e-5, rtol=1e-5)
SYNTHETIC_CAPTIONS = ["a photo of a dog.", "two children play football on the grass .", "a red car"]


# ----- inputs ---------------------------------------------------------------------------------------
def real_samples(n_images: int = 2) -> tuple[list[Image.Image], list[str]]:
    images, captions = {}, {}
    with tarfile.open(FLICKR) as tar:
        for m in tar:
            key, _, ext = m.name.rpartition(".")
            if ext == "jpg" and len(images) < n_images:
                images[key] = decode_image(tar.extractfile(m).read(), m.name)
            elif ext == "txt" and len(captions) < n_images:
                captions[key] = tar.extractfile(m).read().decode().splitlines()
            if len(images) == len(captions) == n_images:
                break
    # First caption of each image plus one more: a 2 x 3 logit matrix.
    texts = [c[0] for c in captions.values()] + [next(iter(captions.values()))[1]]
    return list(images.values()), texts


def synthetic_samples() -> tuple[list[Image.Image], list[str]]:
    rng = np.random.RandomState(0)
    images = [Image.fromarray(rng.randint(0, 255, (h, w, 3), dtype=np.uint8)) for h, w in ((240, 320), (300, 200))]
    return images, SYNTHETIC_CAPTIONS


@pytest.fixture(scope="module")
def samples():
    """Real Flickr8k images and captions when the shared data is present, else synthetic ones."""
    return real_samples() if FLICKR.is_file() else synthetic_samples()


@pytest.fixture(params=[pytest.param("real", marks=pytest.mark.shared_data), "synthetic"])
def samples_any(request):
    if request.param == "real":
        if not FLICKR.is_file():
            pytest.skip(f"real data not found at {FLICKR} (set KIZUNA_SHARED to its location)")
        return real_samples()
    return synthetic_samples()


def inputs(model, samples, image_size=None):
    images, texts = samples
    pre = kizuna.get_preprocess(model)
    if image_size is not None:
        pre = kizuna.get_preprocess({**model.cfg.preprocess, "image_size": image_size})
    return torch.stack([pre(im) for im in images]), kizuna.get_tokenizer(model)(texts)


# ----- Hugging Face reference models ------------------------------------------------------------
def _jitter(model: nn.Module, seed: int):
    """Init leaves LayerNorms at 1/0 and biases at 0, where a swapped name would go unnoticed; perturb
    those 1-D tensors (matrices are random already)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1 and "logit" not in name:
                p.add_(torch.randn(p.shape, generator=g) * 0.1)


def _build(cls, cfg, folder: Path, seed: int):
    torch.manual_seed(seed)
    model = cls(cfg).eval()
    _jitter(model, seed)
    model.save_pretrained(folder)
    return model, folder


@pytest.fixture(scope="module")
def hf_b32(tmp_path_factory):
    """A randomly initialised HF CLIPModel with OpenAI ViT-B/32's exact shape."""
    cfg = transformers.CLIPConfig(
        vision_config=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                           patch_size=32, image_size=224, hidden_act="quick_gelu"),
        text_config=dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8,
                         hidden_act="quick_gelu"),
        projection_dim=512,
    )
    model, folder = _build(transformers.CLIPModel, cfg, tmp_path_factory.mktemp("hf") / "b32", 0)
    yield model, folder
    shutil.rmtree(folder)  # 600 MB; pytest keeps the last runs' temp folders


@pytest.fixture(scope="module")
def k_b32(hf_b32):
    return kizuna.create_model(str(hf_b32[1]))


@pytest.fixture(scope="module")
def b32_io(hf_b32, k_b32, samples):
    """(pixels, tokens, HF outputs, kizuna outputs) for the ViT-B/32 pair, computed once."""
    pixels, tokens = inputs(k_b32, samples)
    return pixels, tokens, hf_outputs(hf_b32[0], pixels, tokens), kizuna_outputs(k_b32, pixels, tokens)


@pytest.fixture(scope="module")
def hf_tiny_clip(tmp_path_factory):
    cfg = transformers.CLIPConfig(
        vision_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                           patch_size=8, image_size=32, hidden_act="quick_gelu"),
        text_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                         hidden_act="gelu"),
        projection_dim=32,
    )
    return _build(transformers.CLIPModel, cfg, tmp_path_factory.mktemp("hf") / "tiny_clip", 1)


@pytest.fixture(scope="module")
def hf_tiny_siglip(tmp_path_factory):
    cfg = transformers.SiglipConfig(
        vision_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                           patch_size=8, image_size=32),
        text_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                         vocab_size=49408),  # CLIP BPE ids of real captions can be fed
    )
    return _build(transformers.SiglipModel, cfg, tmp_path_factory.mktemp("hf") / "tiny_siglip", 2)


def _pooled(out):
    return out.pooler_output if hasattr(out, "pooler_output") else out  # transformers 5.x | 4.x


@torch.no_grad()
def hf_outputs(hf, pixels, tokens) -> dict:
    out = hf(input_ids=tokens, pixel_values=pixels)
    return {
        "image": _pooled(hf.get_image_features(pixel_values=pixels)),
        "text": _pooled(hf.get_text_features(input_ids=tokens)),
        "image_normed": out.image_embeds,
        "text_normed": out.text_embeds,
        "logits_per_image": out.logits_per_image,
        "logits_per_text": out.logits_per_text,
    }


@torch.no_grad()
def kizuna_outputs(k: ClipModel, pixels, tokens) -> dict:
    logits_per_image, logits_per_text = k.logits(pixels, tokens)
    image, text = k.encode_image(pixels), k.encode_text(tokens)
    return {
        "image": image,
        "text": text,
        "image_normed": F.normalize(image, dim=-1),
        "text_normed": F.normalize(text, dim=-1),
        "logits_per_image": logits_per_image,
        "logits_per_text": logits_per_text,
    }


def assert_close_outputs(ours: dict, theirs: dict, tol=TOL):
    assert ours.keys() == theirs.keys()
    for name in ours:
        torch.testing.assert_close(ours[name], theirs[name], **tol, msg=lambda m, n=name: f"{n}: {m}")


def assert_same_numbers(k: ClipModel, hf, pixels, tokens, tol=TOL):
    assert_close_outputs(kizuna_outputs(k, pixels, tokens), hf_outputs(hf, pixels, tokens), tol)


def assert_same_tensors(a: nn.Module, b: nn.Module):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for name in sa:
        assert torch.equal(sa[name], sb[name]), name


# ----- Hugging Face -> kizuna ---------------------------------------------------------------------
@pytest.mark.slow  # ViT-B/32 size (the tiny models check the same paths in the default suite); `make test-slow`
def test_hf_clip_b32_matches_transformers(hf_b32, k_b32, b32_io):
    hf, _ = hf_b32
    v, t = k_b32.cfg.vision, k_b32.cfg.text
    assert (v.width, v.depth, v.heads, v.patch_size, v.image_size, v.act) == (768, 12, 12, 32, 224, "quick_gelu")
    assert (t.width, t.depth, t.heads, t.context_length, t.pool, t.eot_token_id) == (512, 12, 8, 77, "eot", 49407)
    assert k_b32.cfg.embed_dim == 512 and k_b32.cfg.tokenizer == {"type": "clip_bpe", "context_length": 77}
    assert sum(p.numel() for p in k_b32.parameters()) == sum(p.numel() for p in hf.parameters())
    pixels, tokens, theirs, ours = b32_io
    assert pixels.shape == (2, 3, 224, 224) and tokens.shape == (3, 77)
    assert_close_outputs(ours, theirs)


def test_hf_tiny_clip_matches_transformers(hf_tiny_clip, samples_any):
    hf, folder = hf_tiny_clip
    k = kizuna.create_model(str(folder))
    assert (k.cfg.vision.act, k.cfg.text.act) == ("quick_gelu", "gelu")
    assert_same_numbers(k, hf, *inputs(k, samples_any))


def test_hf_siglip_matches_transformers(hf_tiny_siglip, samples_any):
    hf, folder = hf_tiny_siglip
    k = kizuna.create_model(str(folder))
    c = k.cfg
    assert c.loss == "siglip" and c.vision.pool == "map" and not c.vision.class_token and not c.vision.norm_pre
    assert not c.text.causal and c.text.pool == "last" and c.text.proj_bias and c.max_logit_scale is None
    assert c.preprocess["resize_mode"] == "squash" and c.preprocess["mean"] == [0.5] * 3
    assert c.tokenizer == {"type": "clip_bpe", "context_length": 64}
    assert k.logit_bias.item() == hf.logit_bias.item()
    pixels, tokens = inputs(k, samples_any)
    assert tokens.shape == (3, 64)
    assert_same_numbers(k, hf, pixels, tokens)


def test_hf_siglip_sentencepiece_vocab_is_recorded_as_unavailable(hf_tiny_siglip, tmp_path):
    cfg = json.loads((hf_tiny_siglip[1] / "config.json").read_text())
    cfg["text_config"]["vocab_size"] = 32000  # SigLIP's own sentencepiece vocabulary
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    tensors = load_file(hf_tiny_siglip[1] / "model.safetensors")
    tensors["text_model.embeddings.token_embedding.weight"] = torch.zeros(32000, 64)  # the weights agree (checked)
    save_file(tensors, tmp_path / "model.safetensors")
    record, _ = hf_folder_to_kizuna(tmp_path)
    assert record["config"]["tokenizer"]["type"] == "unavailable"
    assert "sentencepiece" in record["config"]["tokenizer"]["note"]


def test_hf_siglip_folder_with_its_spiece_model_tokenizes_and_encodes_as_transformers(hf_tiny_siglip, spiece_model,
                                                                                     caption_corpus, tmp_path):
    """An HF SigLIP folder as the hub ships it (spiece.model + tokenizer_config.json): kizuna's ids equal
    SiglipTokenizer's and its text features equal get_text_features, end to end from strings. The
    tokenizer travels inside kizuna's config, and export writes the same spiece.model back."""
    pytest.importorskip("sentencepiece")
    hf, src = hf_tiny_siglip
    folder = tmp_path / "hf"
    folder.mkdir()
    for name in ("config.json", "model.safetensors", "preprocessor_config.json"):
        (folder / name).symlink_to(src / name)
    (folder / "spiece.model").write_bytes(spiece_model)
    (folder / "tokenizer_config.json").write_text('{"model_max_length": 64, "do_lower_case": true}')
    try:
        hf_tok = transformers.SiglipTokenizer.from_pretrained(folder)
    except ImportError as e:
        pytest.skip(f"transformers.SiglipTokenizer unavailable: {e}")
    k = kizuna.load_model(folder).eval()
    assert k.cfg.tokenizer["type"] == "sentencepiece"
    texts = ["A photo of a Dog.", "two cats, sleeping!"] + caption_corpus[:30]
    ids = kizuna.get_tokenizer(k)(texts)
    ref = hf_tok(texts, padding="max_length", truncation=True, max_length=64, return_tensors="pt")["input_ids"]
    assert torch.equal(ids, ref)
    with torch.no_grad():
        torch.testing.assert_close(k.encode_text(ids), _pooled(hf.get_text_features(input_ids=ref)), **TOL)
    from kizuna.apps.info import summarize

    assert summarize(k)["config"]["tokenizer"]["model"].endswith("characters>")  # `kizuna info` stays short
    kizuna.save_model(k, tmp_path / "kizuna")  # a kizuna copy keeps the tokenizer
    assert torch.equal(kizuna.get_tokenizer(kizuna.load_model(tmp_path / "kizuna"))(texts), ids)
    export_hf_siglip(k, tmp_path / "back")
    assert (tmp_path / "back" / "spiece.model").read_bytes() == spiece_model
    assert torch.equal(transformers.SiglipTokenizer.from_pretrained(tmp_path / "back")(
        texts, padding="max_length", truncation=True, max_length=64, return_tensors="pt")["input_ids"], ids)


def test_hf_eos_token_2_means_argmax_pooling(hf_tiny_clip, tmp_path, samples):
    """Configs written before transformers PR #24773 say eos_token_id=2, and HF pools at argmax(ids)."""
    hf, folder = hf_tiny_clip
    cfg = json.loads((folder / "config.json").read_text())
    cfg["text_config"]["eos_token_id"] = 2
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    (tmp_path / "model.safetensors").symlink_to(folder / "model.safetensors")
    k = kizuna.create_model(str(tmp_path))
    assert k.cfg.text.pool == "argmax"
    old = transformers.CLIPModel.from_pretrained(tmp_path).eval()
    _, tokens = inputs(k, samples)
    tokens[tokens == 49407] = 0  # no EOT: argmax pools at SOT (49406), first-EOT pooling would not
    with torch.no_grad():
        torch.testing.assert_close(k.encode_text(tokens), _pooled(old.get_text_features(input_ids=tokens)), **TOL)


def test_hf_sharded_and_bin_weights(hf_tiny_clip, tmp_path):
    hf, folder = hf_tiny_clip
    ref = kizuna.create_model(str(folder))
    sharded = tmp_path / "sharded"
    hf.save_pretrained(sharded, max_shard_size="5MB")
    assert (sharded / "model.safetensors.index.json").is_file()
    assert_same_tensors(kizuna.create_model(str(sharded)), ref)
    binary = tmp_path / "bin"
    binary.mkdir()
    (binary / "config.json").write_text((folder / "config.json").read_text())
    sd = dict(hf.state_dict())
    sd["text_model.embeddings.position_ids"] = torch.arange(77)[None]  # older transformers saved these
    torch.save(sd, binary / "pytorch_model.bin")
    assert_same_tensors(kizuna.create_model(str(binary)), ref)


def _weights_and_a_processor(hf_tiny_clip, folder: Path):
    """``folder`` with the tiny HF CLIP's config and weights (links), and an image processor of non-default
    settings to save there as each test needs."""
    _, source = hf_tiny_clip
    for f in ("config.json", "model.safetensors"):
        (folder / f).symlink_to(source / f)
    return transformers.CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}, resample=2,
        image_mean=[0.1, 0.2, 0.3], image_std=[0.4, 0.5, 0.6],
    )


def test_hf_preprocessor_config_is_read(hf_tiny_clip, tmp_path):
    proc = _weights_and_a_processor(hf_tiny_clip, tmp_path)
    proc.save_pretrained(tmp_path)
    record, _ = hf_folder_to_kizuna(tmp_path)
    pre = record["config"]["preprocess"]
    assert pre == {"image_size": 32, "mean": pytest.approx([0.1, 0.2, 0.3]), "std": pytest.approx([0.4, 0.5, 0.6]),
                   "interpolation": "bilinear", "resize_mode": "shortest"}


def _pixels_equal_transformers(model, folder: Path):
    """kizuna's preprocessing of a model loaded from ``folder`` gives the pixels of the image processor
    transformers itself loads from ``folder``. (Even crop margins: for an odd one HF's crop starts a pixel
    earlier than torchvision's, which kizuna follows.)"""
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for h, w in ((60, 80), (96, 48))]
    theirs = transformers.AutoImageProcessor.from_pretrained(folder)(images=images, return_tensors="pt")
    ours = torch.stack([kizuna.get_preprocess(model)(im) for im in images])
    torch.testing.assert_close(ours, theirs["pixel_values"], atol=1e-5, rtol=1e-5)


def test_hf_processor_config_json_is_read(hf_tiny_clip, tmp_path):
    """transformers 5 saves a whole processor's image settings only in processor_config.json["image_processor"]
    (no preprocessor_config.json); kizuna read the defaults instead."""
    proc = _weights_and_a_processor(hf_tiny_clip, tmp_path)
    (tmp_path / "processor_config.json").write_text(
        json.dumps({"image_processor": proc.to_dict(), "processor_class": "CLIPProcessor"}))
    model = kizuna.load_model(tmp_path)
    assert model.cfg.preprocess == {"image_size": 32, "mean": pytest.approx([0.1, 0.2, 0.3]),
                                    "std": pytest.approx([0.4, 0.5, 0.6]), "interpolation": "bilinear",
                                    "resize_mode": "shortest"}
    _pixels_equal_transformers(model, tmp_path)
    # With both files, the nested settings win, as in transformers
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({**proc.to_dict(), "image_mean": [0.9] * 3}))
    assert kizuna.load_model(tmp_path).cfg.preprocess["mean"] == pytest.approx([0.1, 0.2, 0.3])
    _pixels_equal_transformers(kizuna.load_model(tmp_path), tmp_path)
    # An export into the folder rewrites the nested settings too, or they would win over the exported ones
    model.cfg.preprocess["mean"] = [0.2, 0.3, 0.4]
    export_hf_clip(model, tmp_path)
    assert json.loads((tmp_path / "processor_config.json").read_text())["image_processor"]["image_mean"] == \
        pytest.approx([0.2, 0.3, 0.4])
    assert kizuna.load_model(tmp_path).cfg.preprocess["mean"] == pytest.approx([0.2, 0.3, 0.4])


def test_hf_siglip_processor_saved_by_transformers_is_read(hf_tiny_siglip, spiece_model, tmp_path):
    """A SiglipProcessor saved by transformers (5: processor_config.json only) gives kizuna its mean, std,
    resampling and size."""
    pytest.importorskip("sentencepiece")
    _, folder = hf_tiny_siglip
    for f in ("config.json", "model.safetensors"):
        (tmp_path / f).symlink_to(folder / f)
    (tmp_path / "spiece.model").write_bytes(spiece_model)
    image_processor = transformers.SiglipImageProcessor(size={"height": 32, "width": 32}, resample=2,
                                                        image_mean=[0.48, 0.46, 0.41], image_std=[0.27, 0.26, 0.28])
    try:
        tokenizer = transformers.SiglipTokenizer(vocab_file=str(tmp_path / "spiece.model"), model_max_length=64)
    except ImportError as e:  # transformers' tokenizer also needs protobuf
        pytest.skip(f"transformers.SiglipTokenizer unavailable: {e}")
    transformers.SiglipProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(tmp_path)
    model = kizuna.load_model(tmp_path)
    pre = model.cfg.preprocess
    assert pre["mean"] == pytest.approx([0.48, 0.46, 0.41]) and pre["std"] == pytest.approx([0.27, 0.26, 0.28])
    assert pre["interpolation"] == "bilinear" and pre["resize_mode"] == "squash" and pre["image_size"] == 32
    _pixels_equal_transformers(model, tmp_path)


def test_hf_resize_larger_than_the_crop_matches_transformers_and_exports_back(hf_tiny_clip, tmp_path):
    """``size.shortest_edge`` 40 and ``crop_size`` 32 (timm's crop_pct 0.8): kizuna resized the short side
    straight to 32, so its pixels differed from HF's by up to 2.5. It keeps the ratio (``crop_pct``), which
    follows an --image-size change, and writes shortest_edge back on export."""
    _, folder = hf_tiny_clip
    for f in ("config.json", "model.safetensors"):
        (tmp_path / f).symlink_to(folder / f)
    proc = transformers.CLIPImageProcessor(size={"shortest_edge": 40}, crop_size={"height": 32, "width": 32})
    proc.save_pretrained(tmp_path)
    model = kizuna.load_model(tmp_path)
    assert model.cfg.preprocess["crop_pct"] == pytest.approx(0.8)
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for h, w in ((240, 320), (97, 41), (32, 32))]
    ours = torch.stack([kizuna.get_preprocess(model)(im) for im in images])
    theirs = proc(images=images, return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    export_hf_clip(model, tmp_path / "back")
    again = transformers.CLIPImageProcessor.from_pretrained(tmp_path / "back")
    assert again.size["shortest_edge"] == 40 and again.crop_size == {"height": 32, "width": 32}


def test_hf_resize_smaller_than_the_crop_is_refused(hf_tiny_clip, tmp_path):
    """``size.shortest_edge`` 24 and ``crop_size`` 32: transformers resizes to 24 and pads the crop with black;
    kizuna read no crop_pct (the edge is not past the crop), resized the short side to 32 and gave other
    pixels without a word. crop_pct cannot be over 1, so the folder is refused, naming the file and fields."""
    _, folder = hf_tiny_clip
    for f in ("config.json", "model.safetensors"):
        (tmp_path / f).symlink_to(folder / f)
    proc = transformers.CLIPImageProcessor(size={"shortest_edge": 24}, crop_size={"height": 32, "width": 32})
    proc.save_pretrained(tmp_path)
    white = Image.fromarray(np.full((48, 48, 3), 255, dtype=np.uint8))
    theirs = proc(images=[white], return_tensors="pt")["pixel_values"][0]
    black = -torch.tensor(proc.image_mean) / torch.tensor(proc.image_std)
    torch.testing.assert_close(theirs[:, 0, 0], black, **TOL)  # what transformers does: a black band ...
    torch.testing.assert_close(theirs[:, 16, 16], (1 - torch.tensor(proc.image_mean)) / torch.tensor(proc.image_std),
                               **TOL)  # ... round the 24-pixel image
    with pytest.raises(CheckpointError, match=r"preprocessor_config\.json: size\.shortest_edge 24 is smaller than "
                                              r"crop_size 32: transformers pads .* set size\.shortest_edge to at "
                                              r"least 32"):
        kizuna.load_model(tmp_path)


@pytest.mark.parametrize("settings", [
    {"size": 40, "crop_size": 32},  # an old feature extractor's int size: the shortest edge, resized past the crop
    {"resample": 0}, {"resample": 2},
    {"do_rescale": False},  # pixels 0..255 into the normalisation
    {"rescale_factor": 1 / 127.5, "image_mean": [1.0] * 3, "image_std": [1.0] * 3},  # -1..1, written another way
    {"do_normalize": False, "rescale_factor": 1 / 127.5},
    # size {"height", "width"} with a centre crop: transformers squashes to size, then crops (kizuna resized
    # the short side to the crop instead: off by up to 3.7, embeddings at a cosine of 0.96)
    {"size": {"height": 40, "width": 40}}, {"size": {"height": 32, "width": 32}},
    # a non-square crop after a shortest-edge resize: transformers sets the short side to the edge (kizuna
    # resized a portrait photo until it covered the crop / crop_pct: off by 3.3)
    {"size": {"shortest_edge": 48}, "crop_size": {"height": 32, "width": 48}},
], ids=["int-size", "nearest", "bilinear", "no-rescale", "rescale-127.5", "rescale-no-normalize", "squash-40-crop",
        "squash-32-crop", "edge-48-crop-32x48"])
def test_hf_processor_settings_give_transformers_pixels_and_export_back(hf_tiny_clip, tmp_path, settings):
    """An int ``size`` lost the crop ratio (pixels off by 2.5), and do_rescale / rescale_factor were never
    read (off by 900): kizuna read them as the defaults, silently."""
    _, folder = hf_tiny_clip
    for f in ("config.json", "model.safetensors"):
        (tmp_path / f).symlink_to(folder / f)
    pp = {"image_processor_type": "CLIPImageProcessor", "size": {"shortest_edge": 32},
          "crop_size": {"height": 32, "width": 32}, **settings}
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(pp))
    model = kizuna.load_model(tmp_path)
    rng = np.random.default_rng(0)  # sizes with even crop margins (odd ones: the crop offset INTEROP.md notes)
    images = [Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
              for h, w in ((60, 90), (50, 40), (90, 60), (100, 100))]
    ours = torch.stack([kizuna.get_preprocess(model)(im) for im in images])
    theirs = transformers.CLIPImageProcessor.from_pretrained(tmp_path)(images=images, return_tensors="pt")
    torch.testing.assert_close(ours, theirs["pixel_values"], atol=1e-5, rtol=1e-5)
    # and the exported settings give transformers the same pixels
    export_hf_clip(model, tmp_path / "back")
    again = transformers.CLIPImageProcessor.from_pretrained(tmp_path / "back")(images=images, return_tensors="pt")
    torch.testing.assert_close(again["pixel_values"], theirs["pixel_values"], atol=1e-5, rtol=1e-5)


def test_hf_channels_other_than_rgb_and_gelu_python(hf_tiny_clip, tmp_path):
    config = json.loads((hf_tiny_clip[1] / "config.json").read_text())
    config["vision_config"]["num_channels"] = 1
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "model.safetensors").symlink_to(hf_tiny_clip[1] / "model.safetensors")
    with pytest.raises(CheckpointError, match="takes 1-channel images"):
        kizuna.load_model(tmp_path)
    config["vision_config"]["num_channels"] = 3
    config["vision_config"]["hidden_act"] = config["text_config"]["hidden_act"] = "gelu_python"
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert kizuna.load_model(tmp_path).cfg.vision.act == "gelu"


# ----- kizuna -> Hugging Face ---------------------------------------------------------------------
def _export_roundtrip(k: ClipModel, export, hf_cls, folder: Path, samples, io=None):
    """Export, load with transformers (no missing/unexpected keys, same numbers), reload into kizuna."""
    export(k, folder)
    hf, info = hf_cls.from_pretrained(folder, output_loading_info=True)
    hf.eval()
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info.get("mismatched_keys")
    if io is None:
        assert_same_numbers(k, hf, *inputs(k, samples))
    else:
        pixels, tokens, _, ours = io
        assert_close_outputs(ours, hf_outputs(hf, pixels, tokens))
    back = kizuna.load_model(folder)
    assert_same_tensors(back, k)
    for part in ("vision", "text"):
        assert getattr(back.cfg, part) == getattr(k.cfg, part)
    assert back.cfg.preprocess == k.cfg.preprocess and back.cfg.tokenizer == k.cfg.tokenizer
    return hf, back


@pytest.mark.slow  # ViT-B/32 size (the tiny models check the same paths in the default suite); `make test-slow`
def test_export_hf_clip_b32(k_b32, b32_io, tmp_path, samples):
    _export_roundtrip(k_b32, export_hf_clip, transformers.CLIPModel, tmp_path, samples, io=b32_io)
    # The exported preprocessing config makes HF's image processor produce kizuna's pixels.
    proc = transformers.CLIPImageProcessor.from_pretrained(tmp_path)
    theirs = proc(images=samples[0], return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(b32_io[0], theirs, **TOL)
    (tmp_path / "model.safetensors").unlink()


@pytest.mark.parametrize("preset", ["ViT-mu-8", "ViT-mu-8-quickgelu"])
def test_export_hf_clip_native_preset(preset, tmp_path, samples):
    torch.manual_seed(3)
    k = kizuna.create_model(preset).eval()
    _jitter(k, 3)
    _export_roundtrip(k, export_hf_clip, transformers.CLIPModel, tmp_path, samples)


def test_export_hf_siglip(hf_tiny_siglip, tmp_path, samples):
    k = kizuna.create_model(str(hf_tiny_siglip[1]))
    _export_roundtrip(k, export_hf_siglip, transformers.SiglipModel, tmp_path / "from_hf", samples)
    torch.manual_seed(4)
    native = kizuna.create_model("siglip-mu-8").eval()
    _jitter(native, 4)
    _export_roundtrip(native, export_hf_siglip, transformers.SiglipModel, tmp_path / "native", samples)


def test_export_refuses_what_hf_cannot_express(tmp_path):
    siglip = kizuna.create_model("siglip-mu-8")
    with pytest.raises(ValueError, match="class token"):
        export_hf_clip(siglip, tmp_path)
    cfg = clip_config("ViT-mu-8")
    cfg.vision.norm_pre = False
    with pytest.raises(ValueError, match="pre_layrnorm"):
        export_hf_clip(ClipModel(cfg), tmp_path)
    cfg = clip_config("ViT-mu-8")
    cfg.vision.norm_after_pool = True
    with pytest.raises(ValueError, match="norm_after_pool"):
        export_hf_clip(ClipModel(cfg), tmp_path)
    with pytest.raises(ValueError, match="MAP head"):
        export_hf_siglip(kizuna.create_model("ViT-mu-8"), tmp_path)
    assert not (tmp_path / "model.safetensors").exists()


# ----- OpenAI layout --------------------------------------------------------------------------------
@pytest.mark.slow  # ViT-B/32 size (the tiny models check the same paths in the default suite); `make test-slow`
def test_openai_layout_roundtrip_b32(k_b32, b32_io, tmp_path):
    sd = kizuna_to_openai(k_b32)
    assert sd["visual.proj"].shape == (768, 512) and sd["text_projection"].shape == (512, 512)
    assert sd["visual.class_embedding"].shape == (768,) and sd["visual.positional_embedding"].shape == (50, 768)
    assert sd["visual.transformer.resblocks.0.attn.in_proj_weight"].shape == (3 * 768, 768)
    # OpenAI's JIT archives also hold these model attributes; they must be dropped, not refused.
    sd.update(input_resolution=torch.tensor(224), context_length=torch.tensor(77), vocab_size=torch.tensor(49408))
    path = tmp_path / "x.pt"
    torch.save(sd, path)
    with pytest.warns(UserWarning, match="QuickGELU"):  # a plain state dict: OpenAI's or OpenCLIP's, which may be GELU
        k = kizuna.create_model(str(path))
    v, t = k.cfg.vision, k.cfg.text
    assert (v.width, v.depth, v.heads, v.patch_size, v.image_size, v.act) == (768, 12, 12, 32, 224, "quick_gelu")
    assert (t.width, t.depth, t.heads, t.context_length, t.vocab_size) == (512, 12, 8, 77, 49408)
    path.unlink()
    assert_same_tensors(k, k_b32)
    pixels, tokens, theirs, _ = b32_io
    assert_close_outputs(kizuna_outputs(k, pixels, tokens), theirs)


def test_kizuna_to_openai_refuses_heads_a_reader_would_misread(hf_tiny_clip, samples):
    k = kizuna.create_model(str(hf_tiny_clip[1]))  # 64 wide with 2 heads: OpenAI would infer 1
    with pytest.raises(ValueError, match="width // 64"):
        kizuna_to_openai(k)
    record, tensors = openai_to_kizuna(kizuna_to_openai(k, strict=False), "tiny", vision_heads=2, text_heads=2)
    record["config"]["text"]["act"] = "gelu"  # the layout cannot say; this tiny model's text tower uses GELU
    back = ClipModel(ClipConfig.from_dict(record["config"])).eval()
    load_state_dict_strict(back, tensors, "tiny")
    assert_same_tensors(back, k)
    pixels, tokens = inputs(k, samples)
    with torch.no_grad():
        torch.testing.assert_close(back.logits(pixels, tokens)[0], k.logits(pixels, tokens)[0], **TOL)


class _Holder(nn.Module):
    """Parameters only, under OpenAI's names: stands in for a TorchScript CLIP archive."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _scripted(sd: dict) -> torch.jit.ScriptModule:
    root = _Holder()
    for name, t in sd.items():
        *path, leaf = name.split(".")
        m = root
        for p in path:
            if p not in m._modules:
                m.add_module(p, nn.Module())
            m = m._modules[p]
        m.register_parameter(leaf, nn.Parameter(t.clone(), requires_grad=False))
    return torch.jit.script(root)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit.* warn that TorchScript is deprecated
def test_torchscript_refused_unless_allowed(tmp_path):
    cfg = ClipConfig(
        embed_dim=32,
        vision=VisionConfig(image_size=32, patch_size=8, width=64, depth=1, heads=1, mlp_dim=128, act="quick_gelu",
                            eps=1e-5, norm_pre=True, patch_bias=False, output_dim=32),
        text=TextConfig(context_length=16, width=64, depth=1, heads=1, mlp_dim=128, act="quick_gelu", output_dim=32),
    )
    k = ClipModel(cfg).eval()
    sd = kizuna_to_openai(k)
    sd["input_resolution"] = torch.tensor(32)
    path = tmp_path / "ViT-tiny.pt"
    torch.jit.save(_scripted(sd), str(path))
    with pytest.raises(CheckpointError, match=r"TorchScript.*allow_jit") as e:
        kizuna.create_model(str(path))
    assert str(path) in str(e.value)
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = kizuna.create_model(str(path), allow_jit=True)
    assert not [w for w in caught if "QuickGELU" in str(w.message)]  # OpenAI's archives are QuickGELU: no warning
    assert_same_tensors(loaded, k)


# ----- position-embedding resampling ----------------------------------------------------------------
@pytest.mark.parametrize("which", ["clip", "siglip"])
def test_resampled_pos_embed_matches_hf_interpolation(which, hf_tiny_clip, hf_tiny_siglip, samples):
    hf, folder = hf_tiny_clip if which == "clip" else hf_tiny_siglip
    k = kizuna.create_model(str(folder))
    pixels, _ = inputs(k, samples, image_size=48)  # trained at 32 (4x4 grid), evaluated at 48 (6x6)
    with torch.no_grad():
        dynamic = k.encode_image(pixels)
        theirs = _pooled(hf.get_image_features(pixel_values=pixels, interpolate_pos_encoding=True))
        torch.testing.assert_close(dynamic, theirs, atol=1e-4, rtol=1e-4)
        k48 = kizuna.load_model(folder, image_size=48)  # resampled once, at load time
        assert k48.cfg.vision.image_size == 48 and k48.cfg.preprocess["image_size"] == 48
        assert k48.visual.pos_embed.shape[1] == k.cfg.vision.num_prefix_tokens + 36
        torch.testing.assert_close(k48.encode_image(pixels), dynamic, atol=1e-6, rtol=1e-6)


# ----- errors ---------------------------------------------------------------------------------------------
def test_wrong_architecture_gives_one_error_listing_everything(tmp_path):
    path = save_model(kizuna.create_model("ViT-mu-8"), tmp_path / "mu.safetensors")
    tensors = load_file(path)
    with pytest.raises(CheckpointError) as e:
        load_state_dict_strict(kizuna.create_model("siglip-mu-8"), tensors, str(path))
    msg = str(e.value)
    assert str(path) in msg
    assert "16 missing [logit_bias, text.proj.bias, visual.attn_pool" in msg
    assert "4 unexpected [visual.cls_token, visual.norm_pre.bias" in msg
    assert "mis-shaped [text.pos_embed: checkpoint (77, 64) vs model (64, 64)" in msg


def test_hf_folder_errors_name_the_path(hf_tiny_clip, tmp_path):
    _, folder = hf_tiny_clip
    good_cfg = (folder / "config.json").read_text()

    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "config.json").write_text("{not json")
    (corrupt / "model.safetensors").symlink_to(folder / "model.safetensors")
    with pytest.raises(CheckpointError, match="config.json.*invalid JSON|config.json.*JSON") as e:
        kizuna.create_model(str(corrupt))
    assert str(corrupt) in str(e.value)

    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text(good_cfg)
    with pytest.raises(CheckpointError, match="no weights found") as e:
        kizuna.create_model(str(no_weights))
    assert str(no_weights) in str(e.value)

    truncated = tmp_path / "truncated"
    truncated.mkdir()
    (truncated / "config.json").write_text(good_cfg)
    (truncated / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="safetensors") as e:
        kizuna.create_model(str(truncated))
    assert str(truncated / "model.safetensors") in str(e.value)

    # every problem in one error (it stopped at the first missing tensor): missing and left-over tensors by
    # the file's names, mis-shaped ones too
    missing_tensor = tmp_path / "missing_tensor"
    missing_tensor.mkdir()
    (missing_tensor / "config.json").write_text(good_cfg)
    sd = load_file(folder / "model.safetensors")
    del sd["vision_model.encoder.layers.1.self_attn.k_proj.bias"], sd["text_model.final_layer_norm.weight"]
    sd["extra.thing"] = torch.zeros(1)
    sd["vision_model.post_layernorm.weight"] = torch.zeros(5)
    sd["vision_model.embeddings.class_embedding"] = torch.zeros(5)
    save_file(sd, missing_tensor / "model.safetensors")
    with pytest.raises(CheckpointError) as e:
        kizuna.create_model(str(missing_tensor))
    assert str(e.value) == (
        f"{missing_tensor}: checkpoint does not fit the model: "
        "2 missing [text_model.final_layer_norm.weight, vision_model.encoder.layers.1.self_attn.k_proj.bias]; "
        "1 unexpected [extra.thing]; 2 mis-shaped [vision_model.embeddings.class_embedding: checkpoint (5,) vs "
        "model (64,), visual.norm.weight: checkpoint (5,) vs model (64,)]")

    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(CheckpointError, match="model_type 'bert' is not supported") as e:
        kizuna.create_model(str(bert))
    assert str(bert) in str(e.value)


@pytest.mark.parametrize("which", ["clip", "siglip"])
def test_hf_config_at_odds_with_the_weights_is_a_mis_shaped_tensor(which, hf_tiny_clip, hf_tiny_siglip, tmp_path):
    """A vision hidden_size the weights do not have died in ``.reshape(1, 1, D)`` of the class embedding (the
    SigLIP probe, its in_proj split) with a raw RuntimeError, before any shape was checked."""
    _, folder = hf_tiny_clip if which == "clip" else hf_tiny_siglip
    cfg = json.loads((folder / "config.json").read_text())
    cfg["vision_config"].update(hidden_size=96, num_attention_heads=2)
    if which == "siglip":
        cfg["text_config"]["projection_size"] = 96  # else refused first: SigLIP compares the two widths
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    (tmp_path / "model.safetensors").symlink_to(folder / "model.safetensors")
    with pytest.raises(CheckpointError, match="checkpoint does not fit the model: .*mis-shaped") as e:
        kizuna.load_model(tmp_path)
    name = "embeddings.class_embedding: checkpoint (64,) vs model (96,)" if which == "clip" else \
        "embeddings.position_embedding.weight: checkpoint (16, 64) vs model (16, 96)"
    assert name in str(e.value) and str(tmp_path) in str(e.value)


def test_openai_layout_errors_name_the_file(tmp_path):
    resnet = tmp_path / "RN50.pt"
    torch.save({"visual.conv1.weight": torch.zeros(32, 3, 3, 3), "visual.layer1.0.conv1.weight": torch.zeros(1),
                "token_embedding.weight": torch.zeros(10, 8)}, resnet)
    with pytest.raises(CheckpointError, match="ResNet image towers are not supported yet") as e:
        kizuna.create_model(str(resnet))
    assert str(resnet) in str(e.value)

    other = tmp_path / "other.bin"
    torch.save({"encoder.weight": torch.zeros(2, 2)}, other)
    with pytest.raises(CheckpointError, match="not an OpenAI CLIP") as e:
        kizuna.create_model(str(other))
    assert str(other) in str(e.value)
