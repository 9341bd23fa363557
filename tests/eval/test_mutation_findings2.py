"""Round-2 mutation findings: eval/probes.py, eval/encode.py, train/evaluation.py, models/convert_hf.py,
models/convert_openai.py. Each test pins a documented number against an independent reference (PIL, numpy,
the sigmoid written out, transformers' CLIPModel)."""
import dataclasses
import io
import json
import math
import random

import numpy as np
import pytest
import torch
from _evalhelpers import classification_wds
from PIL import Image, ImageFilter

import kizuna
from kizuna.eval import probes as P
from kizuna.eval.datasets import load_dataset


def _noise_img(size: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8), "RGB")


# ------------------------------------------------------------------------------------ corruptions
def test_blur_sigma_scales_with_the_image_size():
    """ImageNet-C sigma 1 px at 224 px; at 448 px severity 1 is a 2 px blur (module docstring)."""
    img = _noise_img(448)
    got = np.asarray(P.corrupt(img, "gaussian_blur", 1))
    ref = np.asarray(img.filter(ImageFilter.GaussianBlur(radius=2.0)))
    assert np.array_equal(got, ref)


def test_jpeg_severity_five_is_quality_seven():
    img = _noise_img(32)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=7)
    ref = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    assert np.array_equal(np.asarray(P.corrupt(img, "jpeg", 5)), ref)


def test_contrast_severity_three_keeps_a_fifth_rounded_to_nearest():
    img = _noise_img(16, 1)
    x = np.asarray(img, dtype=np.float64) / 255.0
    mean = x.mean(axis=(0, 1), keepdims=True)
    ref = np.clip((x - mean) * 0.2 + mean, 0, 1)
    got = np.asarray(P.corrupt(img, "contrast", 3)).astype(np.float64)
    assert np.abs(got - ref * 255.0).max() <= 0.5 + 1e-3  # rounded, not truncated


def test_noise_is_rounded_to_the_nearest_uint8():
    """A flat grey image plus N(0, 0.08): the output is round(255 * clip(x + n)), not its floor."""
    img = Image.new("RGB", (32, 32), (128, 128, 128))
    rng = random.Random(5)
    got = np.asarray(P.corrupt(img, "gaussian_noise", 1, random.Random(5))).astype(np.int64)
    gen = np.random.default_rng(rng.getrandbits(64))
    n = gen.normal(0.0, 0.08, size=(32, 32, 3)).astype(np.float32)
    x = np.clip(np.float32(128 / 255) + n, 0.0, 1.0)
    ref = np.floor(x.astype(np.float64) * 255.0 + 0.5)
    assert np.abs(got - ref).max() <= 1 and np.mean(got == ref) > 0.99
    assert abs(got.mean() - 128.0) < 0.5  # truncation shifts the mean down by ~0.5


def test_noise_is_seeded_per_image():
    """Each sample's own seed (PairDataset seeds `random` per sample) gives its own noise."""
    img = Image.new("RGB", (16, 16), (128, 128, 128))
    op = P._CorruptOp("gaussian_noise", 3)
    random.seed(1)
    a = np.asarray(op(img))
    random.seed(2)
    b = np.asarray(op(img))
    random.seed(1)
    c = np.asarray(op(img))
    assert not np.array_equal(a, b) and np.array_equal(a, c)


# ------------------------------------------------------------------------------------ robustness
def test_shifted_drop_is_clean_minus_shifted():
    rows = [{"corruption": "contrast", "severity": 1, "acc": 0.5, "drop": 0.3, "relative": 0.625},
            {"corruption": "contrast", "severity": 3, "acc": 0.3, "drop": 0.5, "relative": 0.375}]
    m = P.RobustnessResult(0.8, rows).metrics
    assert m["shifted_acc1"] == pytest.approx(0.4)
    assert m["shifted_drop"] == pytest.approx(0.4)


def test_effective_robustness_logit_baseline():
    """Taori et al.: shifted - sigmoid(slope * logit(clean) + intercept)."""
    clean, shifted, slope, icpt = 0.7, 0.5, 0.8, -0.6
    pred = 1 / (1 + math.exp(-(slope * math.log(clean / (1 - clean)) + icpt)))
    assert P.effective_robustness(clean, shifted, (slope, icpt)) == pytest.approx(shifted - pred)


def test_robustness_scores_only_images_valid_in_the_clean_pass(tmp_path, tiny, monkeypatch):
    """An image the clean pass could not use is left out of the shifted accuracy too."""
    from kizuna.eval.classification import class_embeddings
    from kizuna.eval.encode import encode_images

    model, tok = tiny
    ds = load_dataset(classification_wds(tmp_path / "d", n=9))  # labels 0,1,2,0,1,2,...
    w = class_embeddings(model, tok, ds.classnames, ds.templates)
    monkeypatch.setattr(model, "encode_image", lambda x, normalize=False: w[0].expand(len(x), -1).clone())
    clean = encode_images(model, ds, progress=False)
    keep = torch.as_tensor(np.asarray(ds.labels) == 0)  # only label-0 images valid when clean
    clean = dataclasses.replace(clean, valid=clean.valid & keep)
    r = P.evaluate_robustness(model, tok, ds, corruptions=["contrast"], severities=(1,), progress=False,
                              clean_features=clean)
    assert r.clean_acc == 1.0
    assert r.rows[0]["acc"] == 1.0  # every model prediction is class 0; 1/3 over all nine images


# ------------------------------------------------------------------------------------ typographic
def test_wrong_classes_are_drawn_over_every_other_class():
    labels = np.zeros(300, dtype=np.int64)
    written = P._wrong_classes(labels, 4, 0)
    assert set(written.tolist()) == {1, 2, 3}
    labels = np.arange(300) % 3
    written = P._wrong_classes(labels, 3, 1)
    assert (written != labels).all()
    assert {(int(a), int(b)) for a, b in zip(labels, written)} == {(0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1)}


def test_follow_rate_of_correct_counts_only_images_right_when_clean(tmp_path, tiny, monkeypatch, typographic_word):
    from kizuna.eval.classification import class_embeddings

    model, tok = tiny
    ds = load_dataset(classification_wds(tmp_path / "d", n=9))
    labels = np.asarray(ds.labels)
    w = class_embeddings(model, tok, ds.classnames, ds.templates)
    written = P._wrong_classes(labels, ds.num_classes, 0)
    # clean: always class 0 (right on label-0 images); attacked: follows every word except class 1's name
    follows = written != 1
    right = labels == 0
    expected, overall = follows[right].mean(), follows.mean()
    assert expected != overall  # the case separates the two rates
    def encode_image(x, normalize=False):
        ks = [ds.classnames.index(word) if word else 0 for word in typographic_word.words_of(x, model)]
        return torch.stack([w[0 if k == 1 else k] for k in ks])

    monkeypatch.setattr(model, "encode_image", encode_image)
    t = P.typographic_attack(model, tok, ds, progress=False, batch_size=100)
    assert t.written.tolist() == written.tolist()
    assert t.metrics["follow_rate"] == pytest.approx(overall)
    assert t.metrics["follow_rate_of_correct"] == pytest.approx(expected)


# ------------------------------------------------------------------------------------ encode / evaluation
def test_rows_with_inf_are_non_finite():
    from kizuna.eval.encode import NonFiniteFeatures, check_finite

    f = torch.ones(3, 4)
    f[1, 2] = float("inf")
    with pytest.raises(NonFiniteFeatures, match="1 of 3"):
        check_finite(f, None, "x")
    f[1, 2] = -float("inf")
    with pytest.raises(NonFiniteFeatures):
        check_finite(f, None, "x")


def test_synthetic_probe_metrics_draw_the_probes_relation_swap_probe_draws(tiny, monkeypatch):
    """Training's probes and `kizuna eval probes` (relation_swap_probe, seed=1) score the same scenes."""
    import inspect

    from kizuna.train import evaluation as E

    seen = {}

    def fake(seed, image_size, n_per_task, **k):
        seen["seed"] = seed
        raise RuntimeError("stop")

    monkeypatch.setattr(E, "make_probes", fake)
    model, tok = tiny
    with pytest.raises(RuntimeError, match="stop"):
        E.synthetic_probe_metrics(model, tok)
    assert seen["seed"] == inspect.signature(P.relation_swap_probe).parameters["seed"].default == 1


# ------------------------------------------------------------------------------------ HF conversion
def _hf_tiny(folder, logit_scale=None, eos_token_id=98, seed=0, vocab=99):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.CLIPConfig(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           patch_size=8, image_size=16),
        text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                         vocab_size=vocab, max_position_embeddings=8, eos_token_id=eos_token_id, bos_token_id=97,
                         pad_token_id=1),
        projection_dim=16,
    )
    torch.manual_seed(seed)
    hf = transformers.CLIPModel(cfg).eval()
    if logit_scale is not None:
        with torch.no_grad():
            hf.logit_scale.fill_(logit_scale)
    hf.save_pretrained(folder)
    return hf


def _hf_logits(hf, pixels, ids):
    with torch.no_grad():
        return hf(input_ids=ids, pixel_values=pixels).logits_per_image


def test_hf_logit_scale_past_ln100_is_kept_unclamped(tmp_path):
    """HF does not clamp at inference: a scale of 5.0 (> ln 100) reads back as exp(5) logits."""
    hf = _hf_tiny(tmp_path, logit_scale=5.0)
    with pytest.warns(UserWarning):
        k = kizuna.create_model(str(tmp_path)).eval()
    assert k.cfg.max_logit_scale is None
    g = torch.Generator().manual_seed(0)
    pixels = torch.randn(2, 3, 16, 16, generator=g)
    ids = torch.tensor([[97, 5, 7, 98, 0, 0, 0, 0], [97, 9, 98, 0, 0, 0, 0, 0]])
    ref = _hf_logits(hf, pixels, ids)
    assert ref.abs().max() > 0
    with torch.no_grad():
        logits, _ = k.logits(pixels, ids)
    torch.testing.assert_close(logits, ref, rtol=1e-4, atol=1e-4)


def test_hf_export_writes_the_models_own_logit_scale(tmp_path):
    transformers = pytest.importorskip("transformers")
    from kizuna.models.convert_hf import export_hf_clip

    _hf_tiny(tmp_path / "src", eos_token_id=49407, vocab=49408)
    k = kizuna.create_model(str(tmp_path / "src")).eval()
    with torch.no_grad():
        k.logit_scale.fill_(3.25)
    export_hf_clip(k, tmp_path / "out")
    cfg = transformers.CLIPConfig.from_pretrained(tmp_path / "out")
    assert cfg.logit_scale_init_value == pytest.approx(3.25)
    assert float(transformers.CLIPModel.from_pretrained(tmp_path / "out").logit_scale.detach()) == pytest.approx(3.25)


def test_hf_text_without_eos_id_pools_at_the_end_of_text_not_argmax(tmp_path):
    """Only the legacy eos_token_id=2 means argmax pooling; no eos id is not that case."""
    from kizuna.models.convert_hf import _clip_config

    cfg = json.loads(json.dumps(_hf_tiny(tmp_path).config.to_dict()))
    t, v = cfg["text_config"], cfg["vision_config"]
    assert _clip_config(cfg, dict(t, eos_token_id=2), v, "x", None).text.pool == "argmax"
    c = _clip_config(cfg, dict(t, eos_token_id=None), v, "x", None)
    assert c.text.pool == "eot" and c.text.eot_token_id == t["vocab_size"] - 1


# ------------------------------------------------------------------------------------ OpenAI layout
def _openai_sd(width=64, twidth=64, vocab=50, embed=16):
    g = torch.Generator().manual_seed(0)

    def r(*s):
        return torch.randn(*s, generator=g) * 0.05

    sd = {"visual.conv1.weight": r(width, 3, 8, 8), "visual.class_embedding": r(width),
          "visual.positional_embedding": r(5, width), "visual.proj": r(width, embed),
          "token_embedding.weight": r(vocab, twidth), "positional_embedding": r(8, twidth),
          "text_projection": r(twidth, embed)}
    for p, w in (("visual.", width), ("", twidth)):
        b = f"{p}transformer.resblocks.0."
        sd.update({b + "ln_1.weight": torch.ones(w), b + "ln_1.bias": r(w), b + "ln_2.weight": torch.ones(w),
                   b + "ln_2.bias": r(w), b + "attn.in_proj_weight": r(3 * w, w), b + "attn.in_proj_bias": r(3 * w),
                   b + "attn.out_proj.weight": r(w, w), b + "attn.out_proj.bias": r(w),
                   b + "mlp.c_fc.weight": r(4 * w, w), b + "mlp.c_fc.bias": r(4 * w),
                   b + "mlp.c_proj.weight": r(w, 4 * w), b + "mlp.c_proj.bias": r(w)})
    for n in ("visual.ln_pre", "visual.ln_post", "ln_final"):
        w = twidth if n == "ln_final" else width
        sd[f"{n}.weight"], sd[f"{n}.bias"] = torch.ones(w), r(w)
    return sd


def test_openai_layout_defaults_and_argmax_pooling():
    """No logit_scale: CLIP's trained value ln(100); text pooled at argmax(ids), as OpenAI's encode_text."""
    import warnings

    from kizuna.models.convert_openai import openai_to_kizuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        record, tensors = openai_to_kizuna(_openai_sd())
    assert float(tensors["logit_scale"]) == pytest.approx(math.log(100))
    assert record["config"]["init_logit_scale"] == pytest.approx(math.log(100))
    assert record["config"]["text"]["pool"] == "argmax"
    # behaviour: ids whose highest id is not vocab - 1 pool at that highest id's position
    from kizuna.models.clip import ClipConfig, ClipModel

    m = ClipModel(ClipConfig.from_dict(record["config"]) if hasattr(ClipConfig, "from_dict")
                  else ClipConfig(**record["config"])).eval()
    m.load_state_dict(tensors, strict=False)
    ids = torch.tensor([[3, 40, 7, 0, 0, 0, 0, 0]])
    ids_cut = torch.tensor([[3, 40, 0, 0, 0, 0, 0, 0]])  # causal: features at position 1 ignore what follows
    with torch.no_grad():
        torch.testing.assert_close(m.encode_text(ids), m.encode_text(ids_cut))


def test_openclip_vision_heads_per_width():
    """OpenCLIP head widths: H-14 1280/80, g-14 1408/88, bigG-14 1664/104, e-14 1792/112: 16 heads each."""
    from kizuna.models.convert_openai import infer_heads

    for width, head_width in ((1280, 80), (1408, 88), (1664, 104), (1792, 112)):
        assert infer_heads(width, "vision") == width // head_width == 16
    assert infer_heads(1280, "text") == 20
