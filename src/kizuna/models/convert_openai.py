"""OpenAI CLIP state dicts (also OpenCLIP's ViT checkpoints) <-> kizuna.

    record, tensors = openai_to_kizuna(torch.load("ViT-B-32.pt", weights_only=True), "ViT-B-32.pt")
    state_dict = kizuna_to_openai(model)

The layout stores no config; everything is read off the shapes, as OpenAI's ``build_model`` does:
width and patch size from ``visual.conv1``, the grid from ``visual.positional_embedding``, depth by
counting ``resblocks``, heads = width // 64 (except OpenCLIP's large image towers, ``OPENCLIP_VISION_HEADS``),
the joint size from ``text_projection``. OpenAI trained with QuickGELU, so that is the default; OpenCLIP's
non-"quickgelu" models (most LAION checkpoints) need ``act="gelu"`` (``load_model(path, act="gelu")``).
"""
from __future__ import annotations

import math
import re
import warnings

import torch

from .checkpoint import CheckpointError, TensorTaker, stored_scalar
from .clip import OPENAI_MEAN, OPENAI_STD, ClipConfig, ClipModel
from .text import TextConfig
from .vit import VisionConfig, grid_warning_silenced

OPENAI_VOCAB = 49408  # OpenAI's BPE: 256 bytes, 256 with </w>, 48,894 merges, start and end of text

HEAD_WIDTH = 64  # OpenAI: heads = width // 64 in both towers
# OpenCLIP's larger image towers use another head width (open_clip/model_configs/*.json, "vision_cfg"):
# ViT-H-14 width 1280 / head_width 80, ViT-g-14 1408 / 88, ViT-bigG-14 1664 / 104, ViT-e-14 1792 / 112, so
# 16 heads each where width // 64 would give 20, 22, 26, 28. Their text towers keep head width 64 (ViT-H-14
# and ViT-g-14: 1024 wide, 16 heads; ViT-bigG-14 and ViT-e-14: 1280 wide, 20 heads). No OpenAI CLIP has an
# image tower of these widths.
OPENCLIP_VISION_HEADS = {1280: 16, 1408: 16, 1664: 16, 1792: 16}
# Extra entries in OpenAI's JIT archives: model attributes, not weights.
_NOT_WEIGHTS = ("input_resolution", "context_length", "vocab_size")
# (OpenAI name inside resblocks.{i}, kizuna name inside blocks.{i}); in_proj_{weight,bias} apart.
_BLOCK_NAMES = (("ln_1", "norm1"), ("ln_2", "norm2"), ("mlp.c_fc", "mlp.fc1"), ("mlp.c_proj", "mlp.fc2"),
                ("attn.out_proj", "attn.proj"))
_WB = ("weight", "bias")


def _depth(sd: dict, prefix: str, source: str) -> int:
    pat = re.compile(re.escape(prefix) + r"\.(\d+)\.")
    idx = {int(m.group(1)) for k in sd if (m := pat.match(k))}
    if not idx:
        raise CheckpointError(f"{source}: no {prefix}.N blocks found")
    if idx != set(range(len(idx))):
        raise CheckpointError(f"{source}: {prefix} blocks are not numbered 0..{len(idx) - 1}: {sorted(idx)}")
    return len(idx)


def _take_blocks(take, src: str, dst: str, depth: int, out: dict):
    for i in range(depth):
        s, d = f"{src}.{i}", f"{dst}.{i}"
        for a, b in _BLOCK_NAMES:
            for p in _WB:
                out[f"{d}.{b}.{p}"] = take(f"{s}.{a}.{p}")
        for p in _WB:
            out[f"{d}.attn.qkv.{p}"] = take(f"{s}.attn.in_proj_{p}")


def infer_heads(width: int, tower: str) -> int:
    """The head count a reader of the OpenAI layout infers for a tower ``width`` wide (the layout cannot say)."""
    if tower == "vision" and width in OPENCLIP_VISION_HEADS:
        return OPENCLIP_VISION_HEADS[width]
    return width // HEAD_WIDTH


def openai_to_kizuna(
    state_dict: dict,
    source: str = "<state dict>",
    act: str = "quick_gelu",
    vision_heads: int | None = None,
    text_heads: int | None = None,
) -> tuple[dict, dict]:
    """An OpenAI-layout CLIP state dict -> (record, kizuna-named tensors) for ``load_model``.

    ``act`` and the head counts cannot be read off the weights; the defaults are OpenAI's (QuickGELU, head
    width 64), with OpenCLIP's head counts for its large image towers (``OPENCLIP_VISION_HEADS``).
    """
    from .layers import ACTIVATIONS

    if act not in ACTIVATIONS:
        raise ValueError(f"act must be one of {', '.join(sorted(ACTIVATIONS))}, got {act!r}")
    sd = {k: v for k, v in state_dict.items() if k not in _NOT_WEIGHTS}
    if sd and all(k.startswith("module.") for k in sd):  # saved from DistributedDataParallel
        sd = {k[len("module."):]: v for k, v in sd.items()}
    if any(k.startswith(("visual.layer1.", "visual.attnpool.")) for k in sd):
        raise CheckpointError(f"{source}: ResNet image towers are not supported yet (only ViT image towers load)")
    needed = ("visual.conv1.weight", "visual.class_embedding", "visual.positional_embedding", "visual.proj",
              "token_embedding.weight", "positional_embedding", "text_projection")
    if not all(k in sd for k in needed):
        shown = ", ".join(sorted(sd)[:6]) or "nothing"
        raise CheckpointError(
            f"{source}: not an OpenAI CLIP (ViT) state dict: expected {', '.join(needed)}; found {shown}"
            + (", ..." if len(sd) > 6 else "")
        )
    try:
        with grid_warning_silenced():  # said once, by the model built from the record
            config = _infer_config(sd, source, act, vision_heads, text_heads)
    except (KeyError, ValueError, IndexError) as e:  # IndexError: a tensor with fewer dimensions than its
        if isinstance(e, CheckpointError):  # name's (a 1-D text_projection) was a traceback
            raise
        raise CheckpointError(f"{source}: cannot infer the architecture from the tensor shapes ({e})") from None

    if "logit_bias" in sd:  # OpenCLIP's sigmoid-loss training (`--siglip`) of a CLIP ViT stores one beside the
        # OpenAI tensors; it was "1 unexpected [logit_bias]". Its forward does not clamp the scale.
        if sd["logit_bias"].numel() != 1:  # (reshape(()) of another shape was torch's error, naming no file)
            raise CheckpointError(f"{source}: logit_bias has shape {tuple(sd['logit_bias'].shape)}, not one number")
        config.loss, config.max_logit_scale = "siglip", None
        config.init_logit_bias = stored_scalar(sd["logit_bias"].reshape(()), "logit_bias", source)
    record = {"kind": "clip", "config": config.to_dict()}
    cfg = record["config"]
    sd.pop("attn_mask", None)  # OpenCLIP versions that saved the causal mask buffer
    take = TensorTaker(sd, source)
    out = {}
    width, text_width, embed = cfg["vision"]["width"], cfg["text"]["width"], cfg["embed_dim"]
    out["visual.patch_embed.proj.weight"] = take("visual.conv1.weight")
    out["visual.cls_token"] = take("visual.class_embedding", (width,)).reshape(1, 1, width)
    out["visual.pos_embed"] = take("visual.positional_embedding").unsqueeze(0)  # read above, so it is there
    for p in _WB:
        out[f"visual.norm_pre.{p}"] = take(f"visual.ln_pre.{p}")
        out[f"visual.norm.{p}"] = take(f"visual.ln_post.{p}")
        out[f"text.norm.{p}"] = take(f"ln_final.{p}")
    _take_blocks(take, "visual.transformer.resblocks", "visual.transformer.blocks", cfg["vision"]["depth"], out)
    out["visual.proj.weight"] = take("visual.proj", (width, embed)).T.contiguous()
    out["text.token_embed.weight"] = take("token_embedding.weight")
    out["text.pos_embed"] = take("positional_embedding")
    _take_blocks(take, "transformer.resblocks", "text.transformer.blocks", cfg["text"]["depth"], out)
    out["text.proj.weight"] = take("text_projection", (text_width, embed)).T.contiguous()
    out["logit_scale"] = take("logit_scale", ()) if "logit_scale" in sd else torch.tensor(math.log(100))
    if "logit_bias" in sd:
        out["logit_bias"] = take("logit_bias", ())
    with torch.device("meta"):
        take.finish(out, ClipModel(config))
    cfg["init_logit_scale"] = stored_scalar(out["logit_scale"], "logit_scale", source)
    if cfg["max_logit_scale"] is not None and cfg["init_logit_scale"] > cfg["max_logit_scale"] + 1e-6:
        # a model trained past ln(100) without the clamp (OpenCLIP's forward has none): its numbers, as the HF
        # reader keeps them (clamped, its logits shrank by 150/100 without a word)
        cfg["max_logit_scale"] = None
    return record, out


def unavailable_tokenizer(source: str, vocab: int, why: str, stacklevel: int) -> dict:
    """The tokenizer config of a checkpoint whose text vocabulary is not OpenAI's BPE and that carries no
    tokenizer kizuna reads: "unavailable" (get_tokenizer says why), with a warning, rather than OpenAI's BPE."""
    note = (f"{source}: its text vocabulary has {vocab:,} tokens, not the {OPENAI_VOCAB:,} of OpenAI's BPE, {why}, "
            "so only its image tower can be used")
    warnings.warn(note, UserWarning, stacklevel=stacklevel)
    return {"type": "unavailable", "note": note}


def _infer_config(sd: dict, source: str, act: str, vision_heads, text_heads) -> ClipConfig:
    conv = sd["visual.conv1.weight"]
    width, patch = conv.shape[0], conv.shape[-1]
    n_pos = sd["visual.positional_embedding"].shape[0] - 1
    grid = math.isqrt(n_pos)
    if grid * grid != n_pos:
        raise CheckpointError(f"{source}: visual.positional_embedding holds {n_pos} patch positions, not a square grid")
    embed = sd["text_projection"].shape[1]
    if sd["visual.proj"].shape != (width, embed):
        raise CheckpointError(
            f"{source}: visual.proj is {tuple(sd['visual.proj'].shape)}, expected ({width}, {embed})"
        )
    vocab, twidth = sd["token_embedding.weight"].shape
    heads = {"vision": vision_heads or infer_heads(width, "vision"), "text": text_heads or infer_heads(twidth, "text")}
    for tower, w in (("vision", width), ("text", twidth)):
        if heads[tower] < 1:  # width // 64 = 0: no OpenAI or OpenCLIP model (kizuna_to_openai(strict=False) makes them)
            raise CheckpointError(
                f"{source}: the {tower} tower is {w} wide, narrower than one head of 64, so the OpenAI layout's "
                f"rule (heads = width // 64) gives 0 heads; the layout cannot say how many it has. Load the "
                f"model from its kizuna checkpoint, or call openai_to_kizuna(..., {tower}_heads=N)")
    vision = VisionConfig(
        image_size=grid * patch, patch_size=patch, width=width,
        depth=_depth(sd, "visual.transformer.resblocks", source), heads=heads["vision"],
        mlp_dim=sd["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0], act=act, eps=1e-5,
        class_token=True, pool="cls", norm_pre=True, patch_bias=False, output_dim=embed,
    )
    ctx = sd["positional_embedding"].shape[0]
    text = TextConfig(
        vocab_size=vocab, context_length=ctx, width=twidth, depth=_depth(sd, "transformer.resblocks", source),
        heads=heads["text"], mlp_dim=sd["transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
        act=act, eps=1e-5, causal=True, pool="argmax", eot_token_id=vocab - 1, output_dim=embed, proj_bias=False,
    )
    tokenizer = {"type": "clip_bpe", "context_length": ctx}
    if vocab != OPENAI_VOCAB:
        # the layout implies OpenAI's BPE and pooling at its end-of-text (the highest id): a MetaCLIP 2 "worldwide"
        # file (mT5's 250,100 tokens, XLM-V's 901,629) has neither, and every text feature was wrong without a word
        tokenizer = unavailable_tokenizer(
            source, vocab, "which the OpenAI layout implies (e.g. a MetaCLIP 2 worldwide checkpoint: mT5's or XLM-V's "
            "tokenizer); its tokenizer and end-of-text token are not in the file", stacklevel=5)
    return ClipConfig(
        embed_dim=embed, vision=vision, text=text, loss="clip",
        preprocess={"image_size": vision.image_size, "mean": list(OPENAI_MEAN), "std": list(OPENAI_STD),
                    "interpolation": "bicubic", "resize_mode": "shortest"},
        tokenizer=tokenizer,
    )


def _preprocess_differs(preprocess: dict, image_size: int) -> str:
    """What of a model's evaluation preprocessing differs from the one the OpenAI layout's reader gives it
    (``_infer_config``: OpenAI's mean and std, bicubic, a short-side resize to the image size and a centre
    crop), as "key value" pairs; empty when nothing does."""
    from kizuna.data.transforms import Preprocess, _size_pair

    own = Preprocess(**{**preprocess, "image_size": preprocess.get("image_size", image_size)})
    reader = Preprocess(image_size=image_size, mean=list(OPENAI_MEAN), std=list(OPENAI_STD))
    differs = []
    for key in ("mean", "std"):
        if not all(math.isclose(a, b, rel_tol=1e-6) for a, b in zip(getattr(own, key), getattr(reader, key))):
            differs.append(f"{key} {list(getattr(own, key))}")
    for key in ("interpolation", "resize_mode", "crop_pct"):
        if getattr(own, key) != getattr(reader, key):
            differs.append(f"{key} {getattr(own, key)!r}")
    if _size_pair(own.image_size) != (image_size, image_size):
        differs.append(f"image_size {own.image_size!r}")
    return ", ".join(differs)


def kizuna_to_openai(model: ClipModel, strict: bool = True) -> dict:
    """The inverse of ``openai_to_kizuna``: a state dict in OpenAI's layout.

    The layout cannot say how many heads, which activation or LayerNorm eps a model has, nor which token
    ends a text; a reader assumes width // 64 heads (OpenCLIP's for its large image towers), QuickGELU,
    eps 1e-5 and pooling at argmax(ids), i.e. end-of-text = the highest id; nor an image size that is not a
    multiple of the patch size (a reader takes grid x patch). ``strict`` (default) refuses models where that
    would be wrong; ``strict=False`` exports the weights anyway.
    """
    from .convert_hf import _text_positions, exportable_config

    c = exportable_config(model, "kizuna_to_openai", "OpenAI CLIP layout")
    v, t = c.vision, c.text
    problems = []
    if (not v.class_token or v.pool != "cls" or not v.norm_pre or v.patch_bias or v.stem != "patch" or v.num_classes
            or v.norm_after_pool):
        problems.append("the image tower must be a CLIP ViT (class token, pre-LayerNorm, no patch bias, no head)")
    if not v.output_dim or v.output_dim != t.output_dim:
        problems.append("both towers need a projection to one size")
    if not t.causal or t.pool not in ("eot", "argmax") or t.proj_bias:
        problems.append("the text tower must be causal, pooled at end-of-text, with a bias-free projection")
    if model.logit_bias is not None and strict:  # OpenCLIP's CLIP reads one (strict=False writes it), OpenAI's not
        problems.append("OpenAI's reader has no logit bias (OpenCLIP's has: strict=False writes it)")
    h, w = (v.image_size, v.image_size) if isinstance(v.image_size, int) else v.image_size
    if h != w:
        problems.append("the layout implies a square image")
    if strict:
        for tower, tc in (("vision", v), ("text", t)):
            inferred = infer_heads(tc.width, tower)
            if tc.heads != inferred:
                rule = "OpenCLIP's table" if inferred != tc.width // HEAD_WIDTH else "width // 64"
                problems.append(f"{tower} has {tc.heads} heads, a reader infers {rule} = {inferred}")
            if tc.act != "quick_gelu":
                problems.append(f"{tower} activation is {tc.act!r}, a reader assumes QuickGELU")
            if tc.eps != 1e-5:
                problems.append(f"{tower} LayerNorm eps is {tc.eps:g}, a reader assumes 1e-5")
        if t.pool == "eot" and t.eot_token_id != t.vocab_size - 1:
            problems.append(f"the text tower pools at end-of-text token {t.eot_token_id}, a reader pools at "
                            f"argmax(ids), i.e. at the highest id {t.vocab_size - 1}")
        if h % v.patch_size or w % v.patch_size:
            # The layout keeps the patch grid alone: a reader rebuilds grid x patch (36 with patch 8 -> 32) and
            # preprocesses photos to that size, which gives other embeddings than the model's own preprocessing.
            gh, gw = v.grid
            size, rebuilt = ((h, gh * v.patch_size) if h == w else
                             ((h, w), f"{gh * v.patch_size}x{gw * v.patch_size}"))
            problems.append(f"image_size {size} is not a multiple of patch_size {v.patch_size}: the layout "
                            f"records only the {gh}x{gw} patch grid, so a reader rebuilds a {rebuilt}-pixel model "
                            "and preprocesses images to that size (other embeddings); "
                            "export at a multiple of the patch size (load_model(path, image_size=...)), or use "
                            "kizuna's own format (save_model) or HF's (export_hf_clip), which record it")
        differs = _preprocess_differs(model.cfg.preprocess or {}, h)
        if differs:  # a reader preprocesses as OpenAI's models do: other pixels, other embeddings
            problems.append(f"its preprocessing ({differs}) is not OpenAI's, which a reader assumes; keep kizuna's "
                            "format (save_model) or HF's (export_hf_clip), which record it")
        tokenizer = (model.cfg.tokenizer or {}).get("type", "clip_bpe")
        if tokenizer not in ("clip_bpe", "openai"):  # a reader tokenizes with OpenAI's BPE ("openai" names it too)
            problems.append(f"the tokenizer is {tokenizer!r}, a reader assumes OpenAI's BPE; keep kizuna's format "
                            "(save_model), which stores the tokenizer")
        elif t.vocab_size > OPENAI_VOCAB:  # a padded vocabulary (49,664): the reader takes another size for
            # another BPE (MetaCLIP 2's) and loads no tokenizer at all (a smaller one never embedded OpenAI's ids:
            # a tower fed ids directly, nothing to lose)
            problems.append(f"the text tower embeds {t.vocab_size} ids, not OpenAI's {OPENAI_VOCAB}: a reader "
                            "takes it for another vocabulary and loads no tokenizer; keep kizuna's format "
                            "(save_model) or HF's (export_hf_clip)")
    if problems:
        raise ValueError("OpenAI CLIP layout cannot express this model: " + "; ".join(problems))

    sd = {k: x.detach() for k, x in model.state_dict().items()}
    out = {
        "visual.conv1.weight": sd["visual.patch_embed.proj.weight"],
        "visual.class_embedding": sd["visual.cls_token"].reshape(-1),
        "visual.positional_embedding": sd["visual.pos_embed"][0],
        "visual.proj": sd["visual.proj.weight"].T.contiguous(),
        "token_embedding.weight": sd["text.token_embed.weight"],
        # a reader takes its tokenizer's context from these: cut to the model's tokenizer where that is shorter
        # (all 77 came back, and captions past 8 tokens embedded otherwise); positions past it are never used
        "positional_embedding": sd["text.pos_embed"][:_text_positions(c)],
        "text_projection": sd["text.proj.weight"].T.contiguous(),
        "logit_scale": sd["logit_scale"].reshape(()),
    }
    if model.logit_bias is not None:
        out["logit_bias"] = sd["logit_bias"].reshape(())
    for p in _WB:
        out[f"visual.ln_pre.{p}"] = sd[f"visual.norm_pre.{p}"]
        out[f"visual.ln_post.{p}"] = sd[f"visual.norm.{p}"]
        out[f"ln_final.{p}"] = sd[f"text.norm.{p}"]
    for src, dst, depth in (("visual.transformer.blocks", "visual.transformer.resblocks", v.depth),
                            ("text.transformer.blocks", "transformer.resblocks", t.depth)):
        for i in range(depth):
            s, d = f"{src}.{i}", f"{dst}.{i}"
            for a, b in _BLOCK_NAMES:
                for p in _WB:
                    out[f"{d}.{a}.{p}"] = sd[f"{s}.{b}.{p}"]
            for p in _WB:
                out[f"{d}.attn.in_proj_{p}"] = sd[f"{s}.attn.qkv.{p}"]
    return out
