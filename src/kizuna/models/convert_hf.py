"""Hugging Face CLIP / SigLIP folders <-> kizuna.

    record, tensors = hf_folder_to_kizuna("clip-vit-base-patch32/")   # what load_model does for a folder
    export_hf_clip(model, "out/")      # transformers.CLIPModel.from_pretrained("out/") then gives the same numbers
    export_hf_siglip(model, "out/")    # likewise for SiglipModel

Both directions are JSON plus tensor renames; ``transformers`` is never imported. The only real
reshaping: HF keeps q, k and v as three Linear layers (we fuse them into one ``qkv``), SigLIP's MAP
head is an ``nn.MultiheadAttention`` (its ``in_proj`` splits into our ``q`` and ``kv``), and HF's
class/position embeddings drop the leading batch axes that ours carry.
"""
from __future__ import annotations

import functools
import json
import math
import warnings
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .checkpoint import (FORMAT_KEY, CheckpointError, TensorTaker, atomic_write, atomic_write_text, check_depth_fits,
                         load_state_dict_file, stored_scalar, utf8_path)
from .clip import OPENAI_MEAN, OPENAI_STD, ClipConfig, ClipModel
from .convert_openai import OPENAI_VOCAB, unavailable_tokenizer
from .text import TextConfig
from .vit import VisionConfig, VisionTransformer, grid_warning_silenced

# HF activation names -> ours. gelu_new/gelu_fast are the tanh approximation written out by hand.
HF_ACTS = {
    "quick_gelu": "quick_gelu",
    "gelu": "gelu",
    "gelu_python": "gelu",  # the same erf GELU, written out in Python
    "gelu_pytorch_tanh": "gelu_tanh",
    "gelu_new": "gelu_tanh",
    "gelu_fast": "gelu_tanh",
}
TO_HF_ACT = {"quick_gelu": "quick_gelu", "gelu": "gelu", "gelu_tanh": "gelu_pytorch_tanh"}
# PIL resample codes as HF image processors store them: the ones kizuna's preprocessing has, then the rest.
HF_RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic"}
TO_HF_RESAMPLE = {v: k for k, v in HF_RESAMPLE.items()}
_OTHER_PIL_RESAMPLE = {1: "LANCZOS", 4: "BOX", 5: "HAMMING"}

# (HF name inside encoder.layers.{i}, kizuna name inside transformer.blocks.{i}); q/k/v handled apart.
_BLOCK_NAMES = (
    ("layer_norm1", "norm1"),
    ("layer_norm2", "norm2"),
    ("mlp.fc1", "mlp.fc1"),
    ("mlp.fc2", "mlp.fc2"),
    ("self_attn.out_proj", "attn.proj"),
)
_WB = ("weight", "bias")

# Defaults of transformers' CLIP/SigLIP sub-configs, for config.json files that leave fields out.
_HF_DEFAULTS = {
    "clip": {
        "text": dict(vocab_size=49408, hidden_size=512, intermediate_size=2048, num_hidden_layers=12,
                     num_attention_heads=8, max_position_embeddings=77, hidden_act="quick_gelu",
                     layer_norm_eps=1e-5, eos_token_id=49407),
        "vision": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                       image_size=224, patch_size=32, hidden_act="quick_gelu", layer_norm_eps=1e-5,
                       num_channels=3),
    },
    "siglip": {
        "text": dict(vocab_size=32000, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                     num_attention_heads=12, max_position_embeddings=64, hidden_act="gelu_pytorch_tanh",
                     layer_norm_eps=1e-6, eos_token_id=49407, projection_size=None),
        "vision": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                       image_size=224, patch_size=16, hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6,
                       num_channels=3, vision_use_head=True),
    },
}


# ================================================================================================
# Reading a Hugging Face folder
# ================================================================================================
def _read_json(path: Path) -> dict:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:  # the last: nested too deep
        raise CheckpointError(f"{path}: cannot be read as JSON ({type(e).__name__}: {e})") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(obj).__name__}")
    return obj


def _read_safetensors(path: Path) -> dict:
    try:
        with utf8_path(path) as readable, safe_open(readable, framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types for truncated/corrupt files
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None


def read_hf_weights(folder: str | Path) -> dict:
    """All tensors of an HF folder: model.safetensors, a sharded safetensors index, or pytorch_model.bin."""
    folder = Path(folder)
    for name, reader in (("model.safetensors", _read_safetensors), ("pytorch_model.bin", load_state_dict_file)):
        if (folder / name).is_file():
            return reader(folder / name)
        index = folder / f"{name}.index.json"
        if index.is_file():
            weight_map = _read_json(index).get("weight_map")
            if not isinstance(weight_map, dict) or not weight_map:
                raise CheckpointError(f"{index}: has no 'weight_map'")
            for shard in weight_map.values():
                # A shard is a file beside the index (transformers names them so): a path ("../x", "/abs/x",
                # "sub/x", Windows' "C:x") would read weights from outside the model folder.
                if not isinstance(shard, str) or shard in ("", ".", "..") or any(c in shard for c in "/\\:"):
                    raise CheckpointError(f"{index}: names shard {shard!r}, which is not a plain file name "
                                          f"(a shard must be a file in {folder} itself)")
            tensors = {}
            for shard in sorted(set(weight_map.values())):
                if not (folder / shard).is_file():
                    raise CheckpointError(f"{index}: names shard {shard!r}, which is not in {folder}")
                tensors.update(reader(folder / shard))
            return tensors
    raise CheckpointError(
        f"{folder}: no weights found (expected model.safetensors, model.safetensors.index.json or pytorch_model.bin)"
    )


def _sub_config(cfg: dict, key: str, model_type: str) -> dict:
    out = dict(_HF_DEFAULTS[model_type][key])
    for src in (cfg.get(f"{key}_config"), cfg.get(f"{key}_config_dict")):  # *_dict wins, as in transformers
        if isinstance(src, dict):
            out.update({k: v for k, v in src.items() if v is not None})
    return out


def _act(name: str, source: str) -> str:
    try:
        return HF_ACTS[name]
    except KeyError:
        raise CheckpointError(f"{source}: activation {name!r} has no kizuna equivalent (known: {sorted(HF_ACTS)})") from None


def _image_size(size, source: str) -> int | tuple[int, int]:
    if isinstance(size, int):
        return size
    if isinstance(size, (list, tuple)) and len(size) == 2:
        return (int(size[0]), int(size[1])) if size[0] != size[1] else int(size[0])
    raise CheckpointError(f"{source}: cannot read image_size {size!r}")


HF_DEFAULT_CROP = 224  # transformers' CLIPImageProcessor crop_size where its file gives a size but no crop_size
HF_DEFAULT_EDGE = 224  # and its size.shortest_edge where the file gives a crop_size but no size


def _hw(size) -> tuple[int, int] | None:
    """An HF processor size (int, {"height", "width"} or {"shortest_edge"}) -> (h, w); None if unknown."""
    if isinstance(size, int):
        return size, size
    if isinstance(size, dict):
        if "height" in size and "width" in size:
            return int(size["height"]), int(size["width"])
        if "shortest_edge" in size:
            return int(size["shortest_edge"]), int(size["shortest_edge"])
    return None


def _mean_std(value, name: str, source: str) -> list[float]:
    """An HF processor's image_mean/image_std: three numbers (one per RGB channel), or one number, which HF
    applies to every channel; anything else (a one-element list too, which HF's processor refuses) is an error
    naming the processor file."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = [value] * 3
    if (not isinstance(value, (list, tuple)) or len(value) != 3
            or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in value)):
        raise CheckpointError(f"{source}: {name} must be three numbers (one per RGB channel) or one number, "
                              f"got {value!r}")
    out = [float(x) for x in value]
    if name == "image_std" and not all(x > 0 for x in out):
        raise CheckpointError(f"{source}: image_std must be positive, got {value!r}")
    return out


def read_image_processor_config(folder: Path) -> dict | None:
    """The image processor settings of an HF folder, found where transformers looks for them: the
    ``"image_processor"`` entry of ``processor_config.json`` (transformers 5 writes them only there when a
    whole processor is saved), else ``preprocessor_config.json``; None when neither has them."""
    processor_file = folder / "processor_config.json"
    if processor_file.is_file():
        nested = _read_json(processor_file).get("image_processor")
        if nested is not None:
            if not isinstance(nested, dict):
                raise CheckpointError(f"{processor_file}: 'image_processor' must be a JSON object, "
                                      f"got {type(nested).__name__}")
            return nested
    pp_file = folder / "preprocessor_config.json"
    return _read_json(pp_file) if pp_file.is_file() else None


def image_processor_source(folder: Path) -> str:
    """Where :func:`read_image_processor_config` found the settings, for error messages."""
    processor_file = folder / "processor_config.json"
    if processor_file.is_file() and "image_processor" in _read_json(processor_file):
        return f"{processor_file} ('image_processor')"
    return str(folder / "preprocessor_config.json")


def preprocess_from_hf(pp: dict | None, model_type: str, image_size,
                       source: str = "the image processor config") -> dict:
    """kizuna's preprocess config from HF image processor settings (:func:`read_image_processor_config`),
    or defaults when there are none. ``source`` names the settings' file in errors."""
    # transformers builds the processor its file names (a CLIP model saved with a SigLIP processor is squashed and
    # normalised by 0.5): its defaults fill the fields the file leaves out, not the model's
    named = str((pp or {}).get("image_processor_type") or "")
    siglip = named.startswith("Siglip") if named.startswith(("Siglip", "CLIP")) else model_type == "siglip"
    mean, std = ([0.5] * 3, [0.5] * 3) if siglip else (list(OPENAI_MEAN), list(OPENAI_STD))
    size = image_size if isinstance(image_size, int) else list(image_size)
    out = {"image_size": size, "mean": mean, "std": std, "interpolation": "bicubic",
           "resize_mode": "squash" if siglip else "shortest"}
    if not pp:
        return out
    try:
        return _read_processor(pp, out, siglip, source)
    except (TypeError, ValueError, AttributeError) as e:
        if isinstance(e, CheckpointError):
            raise
        raise CheckpointError(f"{source}: cannot read the image processor settings ({type(e).__name__}: {e})") from None


def _resample(value, source: str) -> str:
    """kizuna's interpolation for an HF processor's ``resample``: a PIL code kizuna's preprocessing has. The
    others (LANCZOS, BOX, HAMMING) are refused, and so is anything but an int code: transformers' image
    processor resizes bilinear when given a name or a float (and LANCZOS for true)."""
    code = value if isinstance(value, int) and not isinstance(value, bool) else None
    if code in HF_RESAMPLE:
        return HF_RESAMPLE[code]
    known = ", ".join(f"{code} ({name})" for code, name in HF_RESAMPLE.items())
    what = f" (PIL {_OTHER_PIL_RESAMPLE[code]})" if code in _OTHER_PIL_RESAMPLE else ""
    raise CheckpointError(f"{source}: resample {value!r}{what} is not an interpolation kizuna's preprocessing "
                          f"reproduces; it has {known}: set resample to one of those codes")


def _rescale(pp: dict, source: str) -> float:
    """How many times larger transformers' rescaled pixels are than kizuna's, which are always divided by
    255: 1 for the usual ``rescale_factor`` 1/255, 255 for ``do_rescale`` false."""
    if not pp.get("do_rescale", True):
        return 255.0
    factor = pp.get("rescale_factor", 1 / 255)
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not 0 < factor < math.inf:
        raise CheckpointError(f"{source}: rescale_factor must be a positive number (1/255 maps pixels to "
                              f"0..1), got {factor!r}")
    return factor * 255


def _read_processor(pp: dict, out: dict, siglip: bool, source: str) -> dict:
    mean, std = out["mean"], out["std"]
    if pp.get("do_normalize", True):
        out["mean"] = _mean_std(pp.get("image_mean", mean), "image_mean", source)
        out["std"] = _mean_std(pp.get("image_std", std), "image_std", source)
    else:
        out["mean"], out["std"] = [0.0] * 3, [1.0] * 3
    # transformers normalises x * rescale_factor; kizuna x / 255. Another factor (or none) folds into mean
    # and std, as transformers' own torchvision processors fuse them: (x*f - m) / s = (x/255 - m/k) / (s/k),
    # k = 255 f.
    k = _rescale(pp, source)
    if k != 1.0:
        out["mean"], out["std"] = [m / k for m in out["mean"]], [s / k for s in out["std"]]
    if not pp.get("do_resize", True):
        raise CheckpointError(f"{source}: do_resize is false: transformers then takes each image at its own size, "
                              "which kizuna's preprocessing cannot (it resizes every image to the model's); set "
                              "do_resize to true")
    out["interpolation"] = _resample(pp.get("resample", 3), source)
    size = pp.get("size")
    if isinstance(size, dict) and set(size) - {"height", "width", "shortest_edge"}:
        unread = ", ".join(f"size.{k}" for k in sorted(set(size) - {"height", "width", "shortest_edge"}))
        raise CheckpointError(f"{source}: {unread} is not read by kizuna's preprocessing (it resizes by "
                              "shortest_edge or to height x width): remove it, or resize the images yourself")
    crop = pp.get("do_center_crop", not siglip)
    crop_size = pp.get("crop_size")
    if crop and crop_size is None and size is not None:
        # CLIPImageProcessor's default crop: its size was ignored and the image resized to the model's instead
        model_hw = _hw(out["image_size"]) if isinstance(out["image_size"], int) else tuple(out["image_size"])
        if model_hw != (HF_DEFAULT_CROP, HF_DEFAULT_CROP):  # transformers refuses such a folder too
            raise CheckpointError(f"{source}: no crop_size: transformers then crops to its default "
                                  f"{HF_DEFAULT_CROP}x{HF_DEFAULT_CROP}, which this model ({model_hw[0]}x{model_hw[1]} "
                                  f"pixels) does not take; add \"crop_size\": {{\"height\": {model_hw[0]}, "
                                  f"\"width\": {model_hw[1]}}}")
        crop_size = {"height": HF_DEFAULT_CROP, "width": HF_DEFAULT_CROP}
    if crop and crop_size is not None and size is None and not siglip:
        # CLIPImageProcessor's default size: the short side to 224, then the crop (kizuna resized straight to the
        # crop: an image embedding at cosine 0.92 of transformers' for a 336-px crop). A crop above 224 is then
        # padded by transformers, refused below as for a size given smaller than the crop
        size, defaulted = {"shortest_edge": HF_DEFAULT_EDGE}, True
    else:
        defaulted = False
    hw = _hw(crop_size) if crop else _hw(size)
    _check_processor_size(hw, out["image_size"], "crop_size" if crop else "size", source)
    if not crop and isinstance(size, dict) and "height" in size:
        out["resize_mode"] = "squash"
    elif crop and hw is not None and isinstance(size, dict) and "height" in size:
        # transformers squashes to size, then crops the centre: kizuna's squash at image_size / crop_pct
        out["resize_mode"], out["image_size"] = "squash", hw[0] if hw[0] == hw[1] else list(hw)
        sh, sw = _hw(size)
        pct = hw[0] / sh
        if sh < hw[0] or sw < hw[1] or round(hw[1] / pct) != sw:
            raise CheckpointError(
                f"{source}: size {sh}x{sw} (height x width) with crop_size {hw[0]}x{hw[1]}: transformers squashes "
                "to size and crops the centre (padding with black where size is smaller), which kizuna's "
                "preprocessing does only where size is the crop enlarged by one factor on both sides; set size to "
                f"{{\"height\": {hw[0]}, \"width\": {hw[1]}}} or to the crop enlarged by one factor")
        if pct < 1.0:
            out["crop_pct"] = _exported_crop_pct(pp, pct, ((hw[0], sh), (hw[1], sw)))
        return out
    elif not crop and siglip and size is None:
        # SiglipImageProcessor's default size is {"height", "width"}: a squash, to the model's own size here
        # (HF's default 224 would not fit a model of another size)
        out["resize_mode"] = "squash"
    else:
        # A crop, or a shortest-edge resize with no crop (kizuna crops the centre to the model's size).
        out["resize_mode"] = "shortest"
    if hw is not None:
        out["image_size"] = hw[0] if hw[0] == hw[1] else list(hw)
    # an int size is the old feature extractors' shortest edge: transformers reads {"shortest_edge": size}
    edge = size if isinstance(size, int) else size.get("shortest_edge") if isinstance(size, dict) else None
    if crop and hw is not None and edge and int(edge) < max(hw):
        # transformers resizes the short side to the edge and pads what the crop overhangs with black (for a
        # square photo: a band on every side); kizuna resizes until the image covers the crop (crop_pct <= 1),
        # so it would read other pixels without a word.
        crop_hw = f"{hw[0]}" if hw[0] == hw[1] else f"{hw[0]}x{hw[1]}"
        field = "size" if isinstance(size, int) else "size.shortest_edge"
        given = " (transformers' default: the file gives no size)" if defaulted else ""
        raise CheckpointError(f"{source}: {field} {int(edge)}{given} is smaller than crop_size {crop_hw}: "
                              "transformers pads the resized image to the crop, which kizuna's preprocessing does "
                              f"not do (it resizes to cover the crop); set {field} to at least {max(hw)}")
    if crop and hw is not None and edge and int(edge) > min(hw):  # resized larger than the crop (timm's crop_pct)
        out["crop_pct"] = _exported_crop_pct(pp, min(hw) / int(edge), ((min(hw), int(edge)),))
    return out


def _check_processor_size(hw, model_size, field: str, source: str) -> None:
    """Warn where the pixels the processor gives (``hw``, from ``field``) are not the vision tower's: kizuna then
    embeds them with its position embeddings resampled (as transformers does only with
    ``interpolate_pos_encoding=True``; without, it refuses: "Input image size (48*48) doesn't match model
    (32*32)"), at a resolution the model may never have been trained at; it did so without a word."""
    if hw is None or model_size is None:
        return
    model_hw = _hw(model_size) if isinstance(model_size, int) else tuple(model_size)
    if tuple(hw) != tuple(model_hw):
        warnings.warn(f"{source}: {field} {hw[0]}x{hw[1]} is not the model's {model_hw[0]}x{model_hw[1]} pixels "
                      "(vision_config.image_size): kizuna resamples the position embeddings to it, as transformers "
                      "does only with interpolate_pos_encoding=True (without, it refuses the images); set "
                      f"{field} to the model's size if that is not meant", UserWarning, stacklevel=4)


def _exported_crop_pct(pp: dict, pct: float, sizes) -> float:
    """``pct``, the crop over the resize as the sizes give it, or the exact ``crop_pct`` kizuna's export writes
    beside them (an extra key transformers' CLIP and SigLIP image processors ignore). The sizes are whole
    pixels: 32 / 0.875 = 36.6 is written 37, read back as 32 / 37 = 0.865, and a model then loaded at
    image_size=224 resized to 259 where the original resizes to 256. The key is taken only when it gives the
    ``sizes`` ((crop, resize) pairs) written beside it; another tool's, or sizes edited since, are not ours."""
    written = pp.get("crop_pct")
    if isinstance(written, bool) or not isinstance(written, (int, float)) or not 0 < written <= 1:
        return pct
    return float(written) if all(round(crop / written) == resize for crop, resize in sizes) else pct


def _check_channels(v: dict, source: str) -> None:
    channels = int(v.get("num_channels", 3))
    if channels != 3:
        raise CheckpointError(f"{source}: the vision tower takes {channels}-channel images (num_channels); kizuna's "
                              "towers take RGB (3 channels)")


def _clip_config(cfg: dict, t: dict, v: dict, source: str, pp: dict | None, pp_source: str = "") -> ClipConfig:
    _check_channels(v, source)
    embed = int(cfg.get("projection_dim") or 512)
    eos = t.get("eos_token_id")
    eos = eos[0] if isinstance(eos, list) and eos else eos
    vision = VisionConfig(
        image_size=_image_size(v["image_size"], source), patch_size=int(v["patch_size"]),
        width=v["hidden_size"], depth=v["num_hidden_layers"], heads=v["num_attention_heads"],
        mlp_dim=v["intermediate_size"], act=_act(v["hidden_act"], source), eps=float(v["layer_norm_eps"]),
        class_token=True, pool="cls", norm_pre=True, patch_bias=False, output_dim=embed,
    )
    # Before transformers PR #24773 CLIP configs said eos_token_id=2, and HF pools at argmax(ids) then.
    pool = "argmax" if eos == 2 else "eot"
    text = TextConfig(
        vocab_size=t["vocab_size"], context_length=t["max_position_embeddings"], width=t["hidden_size"],
        depth=t["num_hidden_layers"], heads=t["num_attention_heads"], mlp_dim=t["intermediate_size"],
        act=_act(t["hidden_act"], source), eps=float(t["layer_norm_eps"]), causal=True, pool=pool,
        eot_token_id=int(eos) if pool == "eot" and eos is not None else t["vocab_size"] - 1,
        output_dim=embed, proj_bias=False,
    )
    return ClipConfig(
        embed_dim=embed, vision=vision, text=text, loss="clip",
        preprocess=preprocess_from_hf(pp, "clip", vision.image_size, pp_source or source),
        tokenizer={"type": "clip_bpe", "context_length": text.context_length},
    )


def _siglip_config(cfg: dict, t: dict, v: dict, source: str, pp: dict | None, pp_source: str = "") -> ClipConfig:
    _check_channels(v, source)
    if not v.get("vision_use_head", True):
        raise CheckpointError(f"{source}: SigLIP vision tower without its attention-pool head is not supported")
    width = v["hidden_size"]
    proj = t.get("projection_size") or t["hidden_size"]
    if proj != width:
        raise CheckpointError(
            f"{source}: SigLIP text projection_size {proj} differs from the vision width {width}; "
            "the two embeddings could not be compared"
        )
    vision = VisionConfig(
        image_size=_image_size(v["image_size"], source), patch_size=int(v["patch_size"]), width=width,
        depth=v["num_hidden_layers"], heads=v["num_attention_heads"], mlp_dim=v["intermediate_size"],
        act=_act(v["hidden_act"], source), eps=float(v["layer_norm_eps"]), class_token=False, pool="map",
        norm_pre=False, patch_bias=True, output_dim=None,
    )
    eos = t.get("eos_token_id")
    eos = eos[0] if isinstance(eos, list) and eos else eos
    text = TextConfig(
        vocab_size=t["vocab_size"], context_length=t["max_position_embeddings"], width=t["hidden_size"],
        depth=t["num_hidden_layers"], heads=t["num_attention_heads"], mlp_dim=t["intermediate_size"],
        act=_act(t["hidden_act"], source), eps=float(t["layer_norm_eps"]), causal=False, pool="last",
        eot_token_id=int(eos) if eos is not None else t["vocab_size"] - 1, output_dim=proj, proj_bias=True,
    )
    ctx = text.context_length
    tokenizer = (
        {"type": "clip_bpe", "context_length": ctx}
        if text.vocab_size == 49408
        else {"type": "unavailable", "note": "SigLIP's sentencepiece tokenizer: the folder has no spiece.model"}
    )
    return ClipConfig(
        embed_dim=width, vision=vision, text=text, loss="siglip", init_logit_scale=math.log(10),
        init_logit_bias=-10.0, max_logit_scale=None,
        preprocess=preprocess_from_hf(pp, "siglip", vision.image_size, pp_source or source), tokenizer=tokenizer,
    )


def _encoder_from_hf(take, hf: str, ours: str, depth: int, width: int, out: dict):
    for i in range(depth):
        h, o = f"{hf}.encoder.layers.{i}", f"{ours}.transformer.blocks.{i}"
        for a, b in _BLOCK_NAMES:
            for p in _WB:
                out[f"{o}.{b}.{p}"] = take(f"{h}.{a}.{p}")
        for p, shape in zip(_WB, ((width, width), (width,))):  # shapes checked: concatenated
            out[f"{o}.attn.qkv.{p}"] = torch.cat([take(f"{h}.self_attn.{x}_proj.{p}", shape) for x in "qkv"])


def _take_wb(take, hf: str, ours: str, out: dict):
    for p in _WB:
        out[f"{ours}.{p}"] = take(f"{hf}.{p}")


# Tensors the converters reshape, split or concatenate are taken with the shape the config implies (a config
# at odds with the weights is then a mis-shaped tensor in the one error, not a RuntimeError from the reshape).
def _pos_shape(vc: VisionConfig) -> tuple[int, int]:
    return vc.grid[0] * vc.grid[1] + vc.num_prefix_tokens, vc.width


def _clip_tensors(take, c: ClipConfig) -> dict:
    out = {}
    v = "vision_model"
    D = c.vision.width
    out["visual.cls_token"] = take(f"{v}.embeddings.class_embedding", (D,)).reshape(1, 1, D)
    out["visual.patch_embed.proj.weight"] = take(f"{v}.embeddings.patch_embedding.weight")
    out["visual.pos_embed"] = take(f"{v}.embeddings.position_embedding.weight", _pos_shape(c.vision)).unsqueeze(0)
    _take_wb(take, f"{v}.pre_layrnorm", "visual.norm_pre", out)
    _encoder_from_hf(take, v, "visual", c.vision.depth, D, out)
    _take_wb(take, f"{v}.post_layernorm", "visual.norm", out)
    out["visual.proj.weight"] = take("visual_projection.weight")
    _text_from_hf(take, c, out)
    out["text.proj.weight"] = take("text_projection.weight")
    out["logit_scale"] = take("logit_scale", ())
    return out


def _text_from_hf(take, c: ClipConfig, out: dict):
    t = "text_model"
    out["text.token_embed.weight"] = take(f"{t}.embeddings.token_embedding.weight")
    out["text.pos_embed"] = take(f"{t}.embeddings.position_embedding.weight")
    _encoder_from_hf(take, t, "text", c.text.depth, c.text.width, out)
    _take_wb(take, f"{t}.final_layer_norm", "text.norm", out)


def _siglip_tensors(take, c: ClipConfig) -> dict:
    out = {}
    v = "vision_model"
    D = c.vision.width
    for p in _WB:
        out[f"visual.patch_embed.proj.{p}"] = take(f"{v}.embeddings.patch_embedding.{p}")
    out["visual.pos_embed"] = take(f"{v}.embeddings.position_embedding.weight", _pos_shape(c.vision)).unsqueeze(0)
    _encoder_from_hf(take, v, "visual", c.vision.depth, D, out)
    _take_wb(take, f"{v}.post_layernorm", "visual.norm", out)
    h, o = f"{v}.head", "visual.attn_pool"
    out[f"{o}.probe"] = take(f"{h}.probe", (1, 1, D))
    w, b = take(f"{h}.attention.in_proj_weight", (3 * D, D)), take(f"{h}.attention.in_proj_bias", (3 * D,))
    out[f"{o}.q.weight"], out[f"{o}.kv.weight"] = w[:D].clone(), w[D:].clone()
    out[f"{o}.q.bias"], out[f"{o}.kv.bias"] = b[:D].clone(), b[D:].clone()
    for a, b_ in (("attention.out_proj", "proj"), ("layernorm", "norm"), ("mlp.fc1", "mlp.fc1"), ("mlp.fc2", "mlp.fc2")):
        _take_wb(take, f"{h}.{a}", f"{o}.{b_}", out)
    _text_from_hf(take, c, out)
    _take_wb(take, "text_model.head", "text.proj", out)
    out["logit_scale"] = take("logit_scale", ())
    out["logit_bias"] = take("logit_bias", ())
    return out


def hf_folder_to_kizuna(folder: str | Path) -> tuple[dict, dict]:
    """An HF ``CLIPModel``/``SiglipModel`` folder -> (record, kizuna-named tensors) for ``load_model``."""
    folder = Path(folder)
    cfg_file = folder / "config.json"
    if not cfg_file.is_file():
        raise CheckpointError(f"{folder}: folder has no config.json (expected a Hugging Face CLIP or SigLIP model)")
    cfg = _read_json(cfg_file)
    model_type = cfg.get("model_type")
    if not isinstance(model_type, str) or model_type not in _HF_DEFAULTS:  # (a list: "unhashable type" from here)
        raise CheckpointError(
            f"{folder}: Hugging Face model_type {model_type!r} is not supported (kizuna reads 'clip' and 'siglip')"
        )
    source = str(folder)
    t = _sub_config(cfg, "text", model_type)
    v = _sub_config(cfg, "vision", model_type)
    pp = read_image_processor_config(folder)
    try:
        build = _clip_config if model_type == "clip" else _siglip_config
        with grid_warning_silenced():  # said once, by the model built from the record
            c = build(cfg, t, v, source, pp, image_processor_source(folder) if pp is not None else "")
    except (KeyError, TypeError, ValueError) as e:
        if isinstance(e, CheckpointError):
            raise
        raise CheckpointError(f"{cfg_file}: cannot build a model from this config ({type(e).__name__}: {e})") from None
    c.name = folder.name
    ctx = _tokenizer_context(folder, c.text.context_length)
    if "context_length" in (c.tokenizer or {}):
        c.tokenizer = {**c.tokenizer, "context_length": ctx}
    if model_type == "clip":  # a tokenizer export_hf_clip wrote for a model trained with its own BPE
        c.tokenizer = _read_clip_tokenizer(folder, ctx) or c.tokenizer
        # No BPE files and a vocabulary that is not OpenAI's: nothing says what its ids mean (as the OpenAI layout's
        # reader). With OpenAI's files, a padded vocabulary (kizuna's text={"vocab_size": 49664}) is OpenAI's BPE;
        # a smaller one cannot embed its ids.
        padded = _clip_bpe_files(folder) is not None and c.text.vocab_size > OPENAI_VOCAB
        if c.tokenizer["type"] == "clip_bpe" and c.text.vocab_size != OPENAI_VOCAB and not padded:
            c.tokenizer = unavailable_tokenizer(source, c.text.vocab_size, "and the folder holds no BPE of its own "
                                                "(vocab.json + merges.txt)", stacklevel=4)
    if model_type == "siglip":  # the folder's own sentencepiece model, when it ships one (HF's spiece.model)
        from kizuna.data.siglip_tokenizer import siglip_tokenizer_config

        c.tokenizer = siglip_tokenizer_config(folder, ctx) or c.tokenizer
    # position_ids are index buffers some transformers versions saved; they carry no weights.
    take = TensorTaker({k: v for k, v in read_hf_weights(folder).items() if not k.endswith("position_ids")}, source)
    check_depth_fits({"config": c.to_dict()}, len(take.tensors), source)
    tensors = _clip_tensors(take, c) if model_type == "clip" else _siglip_tensors(take, c)
    with torch.device("meta"):
        take.finish(tensors, ClipModel(c))
    # Configs built from this record start from the stored scale and bias, not the training defaults.
    c.init_logit_scale = stored_scalar(tensors["logit_scale"], "logit_scale", source)
    if "logit_bias" in tensors:
        c.init_logit_bias = stored_scalar(tensors["logit_bias"], "logit_bias", source)
    if c.max_logit_scale is not None and c.init_logit_scale > c.max_logit_scale + 1e-6:
        # HF does not clamp at inference; keep its numbers for a checkpoint trained past ln(100).
        c.max_logit_scale = None
    return {"kind": "clip", "config": c.to_dict()}, tensors


# ================================================================================================
# Writing a Hugging Face folder
# ================================================================================================
def _refuse(problems: list[str], what: str):
    if problems:
        raise ValueError(f"{what} cannot express this model: " + "; ".join(problems))


def _square(size, problems: list[str]) -> int:
    if isinstance(size, int):
        return size
    h, w = size
    if h != w:
        problems.append(f"image_size {tuple(size)} is not square (HF takes one int)")
    return int(h)


def _encoder_to_hf(sd: dict, ours: str, hf: str, depth: int, out: dict):
    for i in range(depth):
        o, h = f"{ours}.transformer.blocks.{i}", f"{hf}.encoder.layers.{i}"
        for a, b in _BLOCK_NAMES:
            for p in _WB:
                out[f"{h}.{a}.{p}"] = sd[f"{o}.{b}.{p}"]
        for p in _WB:
            for x, part in zip("qkv", sd[f"{o}.attn.qkv.{p}"].chunk(3, dim=0)):
                out[f"{h}.self_attn.{x}_proj.{p}"] = part


def _put_wb(sd: dict, ours: str, hf: str, out: dict):
    for p in _WB:
        out[f"{hf}.{p}"] = sd[f"{ours}.{p}"]


def _text_positions(c: ClipConfig) -> int:
    """The text positions an HF folder gets (its ``max_position_embeddings``): the tokenizer's context where it
    is shorter than the tower's. The reader builds the tokenizer from max_position_embeddings, so a 64-position
    SigLIP tower with a 16-token tokenizer read back padding to 64, and SigLIP pools the last position: every
    text embedding changed (and a CLIP folder no longer cut captions at 16 tokens). The positions past the
    tokenizer's context are never used: both towers, kizuna's and transformers', add the first T position
    embeddings to T-token ids and pool inside them (SigLIP at T - 1, CLIP at the end-of-text token or
    argmax), so cutting them keeps every number."""
    ctx = (c.tokenizer or {}).get("context_length")
    if isinstance(ctx, int) and not isinstance(ctx, bool) and 0 < ctx < c.text.context_length:
        return ctx
    return c.text.context_length


def _text_to_hf(sd: dict, c: ClipConfig, out: dict, positions: int):
    out["text_model.embeddings.token_embedding.weight"] = sd["text.token_embed.weight"]
    out["text_model.embeddings.position_embedding.weight"] = sd["text.pos_embed"][:positions]
    _encoder_to_hf(sd, "text", "text_model", c.text.depth, out)
    _put_wb(sd, "text.norm", "text_model.final_layer_norm", out)


def _tower_config(tc) -> dict:
    return dict(hidden_size=tc.width, intermediate_size=tc.mlp_dim, num_hidden_layers=tc.depth,
             num_attention_heads=tc.heads, hidden_act=TO_HF_ACT[tc.act], layer_norm_eps=tc.eps, attention_dropout=0.0)


def _act_problems(c: ClipConfig, problems: list[str]):
    for tower, tc in (("vision", c.vision), ("text", c.text)):
        if tc.act not in TO_HF_ACT:
            problems.append(f"{tower} activation {tc.act!r} has no HF name")


def _hf_preprocess(pre: dict, processor: str) -> dict:
    h, w = (pre["image_size"], pre["image_size"]) if isinstance(pre["image_size"], int) else pre["image_size"]
    squash = pre.get("resize_mode", "shortest") == "squash"
    out = {
        "do_convert_rgb": True,
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": list(pre["mean"]),
        "image_std": list(pre["std"]),
        "image_processor_type": processor,
        "resample": TO_HF_RESAMPLE.get(pre.get("interpolation", "bicubic"), 3),
        "rescale_factor": 1 / 255,
    }
    pct = float(pre.get("crop_pct", 1.0))
    if pct != 1.0:  # the sizes below round it to whole pixels; the reader takes it back exact (_exported_crop_pct)
        out["crop_pct"] = pct
    if squash and pct != 1.0:  # squash to the crop enlarged by 1 / crop_pct, then crop the centre
        out.update(do_center_crop=True, size={"height": round(h / pct), "width": round(w / pct)},
                   crop_size={"height": h, "width": w})
    elif squash:
        out.update(do_center_crop=False, size={"height": h, "width": w})
    else:
        edge = round(min(h, w) / pct)
        out.update(do_center_crop=True, size={"shortest_edge": edge}, crop_size={"height": h, "width": w})
    return out


def _write_folder(folder: Path, config: dict, tensors: dict, preprocess: dict, processor_class: str) -> Path:
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    # a diverged model (NaN weights, an infinite logit scale) would be exported for someone else to load, and its
    # logit_scale_init_value written as Infinity, which strict JSON readers (JavaScript's JSON.parse) refuse
    broken = [k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if broken:
        raise CheckpointError(f"not exported to {folder}: {len(broken)} tensor(s) hold NaN or inf (a diverged "
                              f"model?): {', '.join(broken[:5])}{' ...' if len(broken) > 5 else ''}")
    _refuse_a_kizuna_checkpoint(folder)
    folder.mkdir(parents=True, exist_ok=True)
    # an earlier export's tokenizer goes before the new weights come: an export stopped between the two (Ctrl-C, a
    # full disk) left the new weights with the old tokenizer, which load_model read as theirs (other ids, a
    # 16-token context); now such a folder has no tokenizer, which the readers say
    _remove_stale_clip_tokenizer(folder)
    _remove_stale_sentencepiece(folder)
    if processor_class == "CLIPProcessor":  # (transformers reads it before vocab.json: another model's)
        (folder / "tokenizer.json").unlink(missing_ok=True)
    # and its config likewise: an export cut between the weights and config.json paired the new weights with the
    # old model's config (another activation, loaded without a word); a folder without one refuses to load
    (folder / "config.json").unlink(missing_ok=True)
    atomic_write(folder / "model.safetensors", lambda tmp: save_file(tensors, tmp, metadata={"format": "pt"}))
    atomic_write_text(folder / "config.json", json.dumps(config, indent=2, allow_nan=False))
    atomic_write_text(folder / "preprocessor_config.json", json.dumps(preprocess, indent=2, allow_nan=False))
    processor_file = folder / "processor_config.json"
    if processor_file.is_file():
        # transformers (and read_image_processor_config) read the image settings here first: an earlier
        # processor's entry would win over the ones just written.
        processor = _read_json(processor_file)
        if "image_processor" in processor or "processor_class" in processor:
            if "image_processor" in processor:
                processor["image_processor"] = preprocess
            if "processor_class" in processor:
                # AutoProcessor builds the class named here before it looks anywhere else: an earlier SigLIP
                # export's SiglipProcessor was built for a CLIP model (and the other way round).
                processor["processor_class"] = processor_class
            atomic_write_text(processor_file, json.dumps(processor, indent=2))
    return folder


def _refuse_a_kizuna_checkpoint(folder: Path) -> None:
    """An HF export replaces ``config.json`` and ``model.safetensors``, which in a kizuna checkpoint (a run's
    ``checkpoints/step_N``, a save_model folder) are its record: exported into one, the run's checkpoint was lost
    without a word, and its resume (its optimizer state beside another model's weights) crashed the process."""
    config = folder / "config.json"
    kizuna_record = False
    if config.is_file():
        try:
            kizuna_record = FORMAT_KEY in _read_json(config)
        except CheckpointError:
            kizuna_record = False
    if kizuna_record or (folder / "train_state.pt").exists():
        raise CheckpointError(f"not exported to {folder}: it holds a kizuna checkpoint (its config.json and "
                              "model.safetensors would be replaced); export into another folder")


def exportable_config(model, function: str, what: str) -> ClipConfig:
    """The config of ``model`` when an exporter (``function``, writing ``what``) can take it: a ClipModel
    (a supervised VisionTransformer has no text tower and another config), whose text tower is kizuna's own
    transformer. Said before any tensor is looked up."""
    if not isinstance(model, ClipModel):
        hint = (": a supervised ViT has no text tower, and no layout of these; save it with kizuna.save_model"
                if isinstance(model, VisionTransformer) else "")
        raise TypeError(f"{function} exports a CLIP or SigLIP model (a kizuna ClipModel), got "
                        f"{type(model).__name__}{hint}")
    _refuse_other_text_towers(model.cfg, what)
    return model.cfg


def _refuse_other_text_towers(c: ClipConfig, what: str) -> None:
    """Only kizuna's own text transformer has an HF CLIP/SigLIP layout; say so before any tensor is looked up."""
    if c.text.kind != "transformer":
        raise ValueError(f"{what} cannot express this model: its text tower is {c.text.kind!r} (a pretrained "
                         "sentence encoder, not a CLIP/SigLIP text transformer); only models whose text tower "
                         "is kind 'transformer' can be exported")


def _dtype_name(model) -> str:
    return str(next(model.visual.parameters()).dtype).replace("torch.", "")  # logit_scale stays float32


def export_hf_clip(model: ClipModel, folder: str | Path) -> Path:
    """Write ``config.json``, ``model.safetensors`` and ``preprocessor_config.json`` that
    ``transformers.CLIPModel.from_pretrained(folder)`` loads with the same numbers, and the model's tokenizer
    as HF's ``CLIPTokenizer`` files (``vocab.json``, ``merges.txt``, ``tokenizer_config.json`` with
    ``model_max_length`` the context written, ``special_tokens_map.json``), so that ``AutoTokenizer`` and
    ``AutoProcessor`` give kizuna's ids (HF pads with the end-of-text token, kizuna with 0: the features,
    pooled at the first end-of-text token, are the same). The tokenizer is OpenAI's BPE (``clip_bpe``) or one
    trained by kizuna (``trained_bpe``, read back as such by ``load_model``); a model with any other tokenizer
    is refused. An earlier export's tokenizer files in ``folder`` are replaced (its ``tokenizer.json`` removed),
    and an earlier SigLIP export's ``spiece.model`` is removed.

    HF CLIP has a class token, a pre-LayerNorm, no patch bias, a causal text tower pooled at the
    end-of-text token, bias-free projections and no logit bias; other models raise ``ValueError``.
    HF does not clamp the logit scale at inference, so a scale trained past ``max_logit_scale`` differs.
    """
    c = exportable_config(model, "export_hf_clip", "HF CLIPModel")
    v, t = c.vision, c.text
    problems: list[str] = []
    if not v.class_token or v.pool != "cls":
        problems.append(f"vision pooling must be the class token (got pool={v.pool!r}, class_token={v.class_token})")
    if not v.norm_pre:
        problems.append("vision norm_pre=False, but HF CLIP always applies pre_layrnorm")
    if v.patch_bias:
        problems.append("the patch embedding has a bias, HF CLIP's has none")
    if v.stem != "patch" or v.num_classes:
        problems.append("hybrid stems and classification heads are not part of HF CLIP")
    if v.norm_after_pool:
        problems.append("norm_after_pool=True, HF CLIP normalises the class token before pooling")
    if not v.output_dim or v.output_dim != t.output_dim:
        problems.append(f"both towers need a projection to one size (vision {v.output_dim}, text {t.output_dim})")
    if not t.causal:
        problems.append("the text tower is bidirectional, HF CLIP's is causal")
    if t.pool not in ("eot", "argmax"):
        problems.append(f"text pool {t.pool!r} (HF CLIP pools at the end-of-text token)")
    if t.pool == "eot" and t.eot_token_id == 2:
        problems.append("eot_token_id=2 means argmax pooling to HF")
    if t.proj_bias:
        problems.append("the text projection has a bias, HF CLIP's has none")
    if model.logit_bias is not None:
        problems.append("a logit bias (SigLIP-style), HF CLIP has none")
    bpe = _hf_clip_tokenizer(c, problems)
    _act_problems(c, problems)
    image_size = _square(v.image_size, problems)
    _refuse(problems, "HF CLIPModel")

    sd = model.state_dict()
    out = {
        "vision_model.embeddings.class_embedding": sd["visual.cls_token"].reshape(-1),
        "vision_model.embeddings.patch_embedding.weight": sd["visual.patch_embed.proj.weight"],
        "vision_model.embeddings.position_embedding.weight": sd["visual.pos_embed"][0],
        "visual_projection.weight": sd["visual.proj.weight"],
        "text_projection.weight": sd["text.proj.weight"],
        "logit_scale": sd["logit_scale"].reshape(()),
    }
    _put_wb(sd, "visual.norm_pre", "vision_model.pre_layrnorm", out)
    _encoder_to_hf(sd, "visual", "vision_model", v.depth, out)
    _put_wb(sd, "visual.norm", "vision_model.post_layernorm", out)
    positions = _text_positions(c)
    _text_to_hf(sd, c, out, positions)

    text_cfg = dict(_tower_config(t), model_type="clip_text_model", vocab_size=t.vocab_size,
                    max_position_embeddings=positions, projection_dim=t.output_dim,
                    bos_token_id=bpe[0][_SOT], eos_token_id=2 if t.pool == "argmax" else t.eot_token_id,
                    pad_token_id=1)
    vision_cfg = dict(_tower_config(v), model_type="clip_vision_model", image_size=image_size,
                      patch_size=v.patch_size, num_channels=3, projection_dim=v.output_dim)
    config = {
        "architectures": ["CLIPModel"],
        "model_type": "clip",
        "projection_dim": v.output_dim,
        "logit_scale_init_value": float(sd["logit_scale"]),
        "initializer_factor": 1.0,
        "dtype": _dtype_name(model),
        "text_config": text_cfg,
        "vision_config": vision_cfg,
    }
    pre = _hf_preprocess(c.preprocess, "CLIPImageProcessor")
    folder = _write_folder(Path(folder), config, out, pre, "CLIPProcessor")
    # An HF CLIP folder has no sentencepiece tokenizer; one left by an earlier SigLIP export would be loaded by
    # AutoTokenizer for this model.
    _remove_stale_sentencepiece(folder)
    _write_clip_tokenizer(folder, *bpe, positions)
    return folder


def export_hf_siglip(model: ClipModel, folder: str | Path) -> Path:
    """Write an HF ``SiglipModel`` folder (no class token, MAP head, bidirectional text pooled at the last
    position with a biased head, logit scale and bias). Other models raise ``ValueError``. A sentencepiece
    tokenizer (read from an HF folder) is written back as ``spiece.model`` + ``tokenizer_config.json``; for any
    other tokenizer (OpenAI's BPE too) no tokenizer is written (HF SigLIP expects sentencepiece; kizuna's
    reader takes OpenAI's BPE for a 49,408-token vocabulary), and those two files, left in ``folder`` by an
    earlier export, are removed. An earlier CLIP export's ``vocab.json`` and ``merges.txt`` (with their
    CLIPTokenizer settings) are removed in either case: transformers would read them as this model's."""
    c = exportable_config(model, "export_hf_siglip", "HF SiglipModel")
    v, t = c.vision, c.text
    problems: list[str] = []
    if v.class_token or v.pool != "map":
        problems.append(f"vision pooling must be the MAP head without class token (got pool={v.pool!r})")
    if v.norm_pre:
        problems.append("vision norm_pre=True, HF SigLIP has no pre-LayerNorm")
    if not v.patch_bias:
        problems.append("the patch embedding has no bias, HF SigLIP's has one")
    if v.output_dim or v.stem != "patch" or v.num_classes or v.norm_after_pool:
        problems.append("the image tower must end at the MAP head (no projection, stem, classifier or norm_after_pool)")
    if t.causal or t.pool != "last":
        problems.append("the text tower must be bidirectional and pooled at the last position")
    if not t.proj_bias or t.output_dim != v.width:
        problems.append(f"the text head must be biased and map to the vision width {v.width} (got {t.output_dim})")
    if model.logit_bias is None:
        problems.append("no logit bias")
    _act_problems(c, problems)
    image_size = _square(v.image_size, problems)
    _refuse(problems, "HF SiglipModel")

    sd = model.state_dict()
    D = v.width
    out = {
        "vision_model.embeddings.position_embedding.weight": sd["visual.pos_embed"][0],
        "vision_model.head.probe": sd["visual.attn_pool.probe"].reshape(1, 1, D),
        "vision_model.head.attention.in_proj_weight": torch.cat(
            [sd["visual.attn_pool.q.weight"], sd["visual.attn_pool.kv.weight"]]),
        "vision_model.head.attention.in_proj_bias": torch.cat(
            [sd["visual.attn_pool.q.bias"], sd["visual.attn_pool.kv.bias"]]),
        "logit_scale": sd["logit_scale"].reshape(1),
        "logit_bias": sd["logit_bias"].reshape(1),
    }
    _put_wb(sd, "visual.patch_embed.proj", "vision_model.embeddings.patch_embedding", out)
    _encoder_to_hf(sd, "visual", "vision_model", v.depth, out)
    _put_wb(sd, "visual.norm", "vision_model.post_layernorm", out)
    for a, b in (("attention.out_proj", "proj"), ("layernorm", "norm"), ("mlp.fc1", "mlp.fc1"), ("mlp.fc2", "mlp.fc2")):
        _put_wb(sd, f"visual.attn_pool.{b}", f"vision_model.head.{a}", out)
    positions = _text_positions(c)
    _text_to_hf(sd, c, out, positions)
    _put_wb(sd, "text.proj", "text_model.head", out)

    text_cfg = dict(_tower_config(t), model_type="siglip_text_model", vocab_size=t.vocab_size,
                    max_position_embeddings=positions, projection_size=t.output_dim,
                    bos_token_id=49406, eos_token_id=t.eot_token_id, pad_token_id=1)
    vision_cfg = dict(_tower_config(v), model_type="siglip_vision_model", image_size=image_size,
                      patch_size=v.patch_size, num_channels=3, vision_use_head=True)
    config = {
        "architectures": ["SiglipModel"],
        "model_type": "siglip",
        "initializer_factor": 1.0,
        "dtype": _dtype_name(model),
        "text_config": text_cfg,
        "vision_config": vision_cfg,
    }
    pre = _hf_preprocess(c.preprocess, "SiglipImageProcessor")
    _warn_if_transformers_cannot_crop(pre)
    folder = _write_folder(Path(folder), config, out, pre, "SiglipProcessor")
    _remove_stale_clip_tokenizer(folder)
    if (c.tokenizer or {}).get("type") == "sentencepiece":
        from kizuna.data.siglip_tokenizer import write_hf_tokenizer

        write_hf_tokenizer({**c.tokenizer, "context_length": positions}, folder)
    else:
        _remove_stale_sentencepiece(folder)
    return folder


def _warn_if_transformers_cannot_crop(pre: dict) -> None:
    """A SigLIP export with a centre crop (crop_pct != 1) gives kizuna's image embeddings in transformers >= 5.18
    (checked without torchvision; 5.4-5.17 need torchvision for the processor): the SiglipImageProcessor of 4.x and
    5.0-5.3 squashes to ``size`` and has no centre crop (4.40: a cosine of 0.27 on a tiny model). The installed
    version is read from its metadata, without importing it; none installed, no warning."""
    if not pre.get("do_center_crop"):
        return
    from importlib import metadata

    try:
        version = metadata.version("transformers")
    except metadata.PackageNotFoundError:
        return
    parts = version.split(".")
    if len(parts) > 1 and parts[0].isdigit() and parts[1].isdigit() and (int(parts[0]), int(parts[1])) < (5, 4):
        import warnings

        warnings.warn(f"export_hf_siglip: the model's preprocessing (crop_pct {pre.get('crop_pct', 1.0)}) is written "
                      f"as a resize and a centre crop, which the installed transformers {version} does not do for "
                      "SigLIP (its SiglipImageProcessor has no centre crop): its image embeddings will differ from "
                      "kizuna's. transformers >= 5.18 crops: pip install -U 'transformers>=5.18'", UserWarning,
                      stacklevel=3)


def _remove_stale_sentencepiece(folder: Path) -> None:
    """Remove an earlier export's sentencepiece tokenizer from ``folder``, for a model written without one
    (export_hf_clip always, export_hf_siglip when the model's tokenizer is not sentencepiece): kizuna's reader
    of a SigLIP folder and transformers' AutoTokenizer (``tokenizer_class`` in tokenizer_config.json, whatever
    the model type) would read it back as this model's, with other ids. Its settings file goes with it; another
    tokenizer's (a CLIP one) is not the exporter's to remove, and stays."""
    (folder / "spiece.model").unlink(missing_ok=True)
    settings = folder / "tokenizer_config.json"
    try:
        stale = settings.is_file() and str(_read_json(settings).get("tokenizer_class")).startswith("Siglip")
    except CheckpointError:
        stale = False
    if stale:
        settings.unlink()


# ------------------------------------------------------------------------------------------------
# HF CLIPTokenizer files: vocab.json + merges.txt (+ its settings), written and read back
# ------------------------------------------------------------------------------------------------
_SOT, _EOT = "<|startoftext|>", "<|endoftext|>"
# The merges transformers' CLIPTokenizer reads (before version 5 it cut merges.txt to this many lines): OpenAI's
# 49,408-token vocabulary has this many, and so has a kizuna-trained one of that size.
_HF_CLIP_MERGES = 49152 - 256 - 2
_CLIP_SPECIAL_TOKENS = {"bos_token": _SOT, "eos_token": _EOT, "unk_token": _EOT, "pad_token": _EOT}


def _bpe_vocab_merges(tokenizer) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """(vocab, merges) of a `tokenizers.Tokenizer` with a BPE model, from its JSON."""
    model = json.loads(tokenizer.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return dict(model["vocab"]), merges


@functools.lru_cache(maxsize=1)
def _openai_bpe() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """(vocab, merges) of OpenAI's CLIP BPE as kizuna bundles it (the files of HF's openai/clip-* folders)."""
    from kizuna.data.tokenizer import _openai_tokenizer

    return _bpe_vocab_merges(_openai_tokenizer())


def _hf_clip_tokenizer(c: ClipConfig, problems: list[str]) -> tuple[dict[str, int], list[tuple[str, str]]] | None:
    """(vocab, merges) that transformers' ``CLIPTokenizer`` turns into this model's ids: OpenAI's BPE
    (``clip_bpe``) or a CLIP-style BPE trained by kizuna (``trained_bpe``: the same cleaning, split, byte
    symbols and ``</w>`` suffix, its merges learned). Any other tokenizer is a ``problem``."""
    cfg = c.tokenizer or {}
    kind = cfg.get("type", "clip_bpe")
    if kind in ("clip_bpe", "openai"):
        return _openai_bpe()
    keep = "keep kizuna's format (save_model), which stores the tokenizer"
    if kind != "trained_bpe":  # the folder would read back with OpenAI's BPE, whose ids this model never saw
        problems.append(f"the tokenizer is {kind!r}, and an HF CLIP folder carries a CLIP BPE tokenizer (OpenAI's "
                        f"or one trained by kizuna, written as vocab.json + merges.txt); {keep}")
        return None
    from kizuna.data.tokenizer import _SUFFIX, _is_kizuna_layout, tokenizer_from_config

    try:
        tokenizer = tokenizer_from_config(cfg).tokenizer
        model = json.loads(tokenizer.to_str())["model"]
    except (ValueError, KeyError, TypeError) as e:
        problems.append(f"the trained_bpe tokenizer cannot be read ({e})")
        return None
    if (model.get("type") != "BPE" or model.get("end_of_word_suffix") != _SUFFIX or model.get("byte_fallback")
            or model.get("continuing_subword_prefix") not in (None, "") or model.get("dropout") is not None
            or not _is_kizuna_layout(tokenizer)):
        # a tokenizers JSON from elsewhere (load_tokenizer): HF's CLIPTokenizer splits and merges as kizuna's
        # own BPE does, not as this one
        problems.append(f"the trained_bpe tokenizer is not a CLIP-style BPE as train_bpe_tokenizer builds it "
                        f"(CLIP's split, byte symbols, {_SUFFIX!r} suffix, no normaliser), which transformers' "
                        f"CLIPTokenizer reproduces; {keep}")
        return None
    vocab, merges = _bpe_vocab_merges(tokenizer)
    if len(merges) > _HF_CLIP_MERGES:
        problems.append(f"the trained_bpe tokenizer has {len(merges)} merges, and transformers' CLIPTokenizer "
                        f"reads at most {_HF_CLIP_MERGES} (before version 5: a vocabulary up to 49,408 tokens); "
                        f"{keep}")
        return None
    return vocab, merges


def _write_clip_tokenizer(folder: Path, vocab: dict[str, int], merges: list[tuple[str, str]],
                          context_length: int) -> None:
    """HF ``CLIPTokenizer``'s files, as ``save_pretrained`` writes a slow one: ``vocab.json``, ``merges.txt``
    (``#version: 0.2``, then one ``a b`` merge a line), ``tokenizer_config.json`` and ``special_tokens_map.json``.
    An earlier ``tokenizer.json`` goes: transformers reads it before ``vocab.json``, and it is another model's."""
    vocab = dict(sorted(vocab.items(), key=lambda kv: kv[1]))
    settings = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": int(context_length),
        **_CLIP_SPECIAL_TOKENS,
        "do_lower_case": True,
        "errors": "replace",
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": False,
        "added_tokens_decoder": {
            str(vocab[t]): {"content": t, "lstrip": False, "normalized": True, "rstrip": False,
                            "single_word": False, "special": True}
            for t in (_SOT, _EOT)
        },
    }
    files = {
        "vocab.json": json.dumps(vocab, ensure_ascii=False),
        "merges.txt": "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges),
        "tokenizer_config.json": json.dumps(settings, indent=2),
        "special_tokens_map.json": json.dumps(_CLIP_SPECIAL_TOKENS, indent=2),
    }
    for name, text in files.items():
        atomic_write_text(folder / name, text)
    (folder / "tokenizer.json").unlink(missing_ok=True)


def _remove_stale_clip_tokenizer(folder: Path) -> None:
    """Remove an earlier CLIP export's tokenizer (``vocab.json``, ``merges.txt``) from ``folder``, for a model
    written without one: transformers' ``AutoTokenizer`` would read it as this model's. Where those files were
    there, the CLIPTokenizer settings and special tokens written beside them go too (settings with no vocabulary
    gave a 2-token CLIPTokenizer, every text one id); such settings without the files are not the exporter's."""
    had_files = False
    for name in ("vocab.json", "merges.txt"):
        had_files |= (folder / name).is_file()
        (folder / name).unlink(missing_ok=True)
    if not had_files:
        return
    for name, key, stale in (("tokenizer_config.json", "tokenizer_class", lambda v: str(v).startswith("CLIPTokenizer")),
                             ("special_tokens_map.json", "eos_token", lambda v: _EOT in json.dumps(v))):
        try:
            if (folder / name).is_file() and stale(_read_json(folder / name).get(key)):
                (folder / name).unlink()
        except CheckpointError:
            pass


def _tokenizer_context(folder: Path, positions: int) -> int:
    """The folder's tokenizer length: ``tokenizer_config.json``'s ``model_max_length`` where it is shorter than
    the text tower's positions, which transformers' tokenizer pads and cuts to (the reader took the positions:
    a SigLIP folder with 64 positions and a 16-token tokenizer embedded every text otherwise, since SigLIP pools
    the last position). A missing or unreadable file, or transformers' "no limit" (1e30), keeps the positions."""
    file = folder / "tokenizer_config.json"
    try:
        length = _read_json(file).get("model_max_length") if file.is_file() else None
    except CheckpointError:  # a tokenizer file the folder's weights do not need: read as before, without it
        return positions
    if isinstance(length, int) and not isinstance(length, bool) and 0 < length < positions:
        return length
    return positions


def _clip_bpe_files(folder: Path) -> tuple[dict, list[tuple[str, str]], str, str] | None:
    """An HF CLIP folder's BPE: (vocab, merges, the files, the vocabulary's file: named in errors) from
    ``vocab.json`` + ``merges.txt``, or from ``tokenizer.json`` alone, which is all transformers 5 writes when it
    saves a processor again (a folder export_hf_clip wrote, loaded and saved with transformers, lost its trained
    BPE); None where it has neither. Files that cannot hold one are a ``CheckpointError`` naming them."""
    vocab_file, merges_file = folder / "vocab.json", folder / "merges.txt"
    if vocab_file.is_file() and merges_file.is_file():
        vocab, where, vocab_where = _read_json(vocab_file), f"{vocab_file}, {merges_file}", str(vocab_file)
        try:
            lines = merges_file.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise CheckpointError(f"{merges_file}: cannot be read ({type(e).__name__}: {e})") from None
        merges = []
        for n, line in enumerate(lines, 1):
            if (n == 1 and line.startswith("#version")) or not line.strip():  # as transformers reads it
                continue
            pair = line.split()
            if len(pair) != 2:
                raise CheckpointError(f"{merges_file}: line {n} is not a merge (two tokens): {line[:60]!r}")
            merges.append(tuple(pair))
    elif (folder / "tokenizer.json").is_file():
        where = vocab_where = str(folder / "tokenizer.json")
        model = _read_json(folder / "tokenizer.json").get("model")
        if not isinstance(model, dict) or model.get("type") != "BPE":
            return None  # another kind of tokenizer (WordPiece, Unigram): not a CLIP BPE
        vocab, raw = model.get("vocab"), model.get("merges")
        if not isinstance(vocab, dict) or not isinstance(raw, list):
            raise CheckpointError(f"{where}: its BPE model has no vocab (a map) or merges (a list)")
        merges = []
        for n, merge in enumerate(raw):  # "a b" (tokenizers < 0.20) or ["a", "b"]
            pair = merge.split(" ") if isinstance(merge, str) else merge
            if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(x, str) for x in pair)):
                raise CheckpointError(f"{where}: merge {n} is not two tokens: {str(merge)[:60]!r}")
            merges.append(tuple(pair))
    else:
        return None
    if not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in vocab.values()):
        raise CheckpointError(f"{where}: the vocabulary is not a token -> id map (non-negative ints)")
    return vocab, merges, where, vocab_where


def _read_clip_tokenizer(folder: Path, context_length: int) -> dict | None:
    """The tokenizer config of an HF CLIP folder's BPE (:func:`_clip_bpe_files`): None where the folder has
    none, or has OpenAI's (hub CLIP folders; the reader's default, ``clip_bpe``, is that one), else the
    ``trained_bpe`` these files make (what :func:`export_hf_clip` writes for a model trained with its own BPE).
    Files that are not a CLIP BPE tokenizer are a ``CheckpointError`` naming them."""
    files = _clip_bpe_files(folder)
    if files is None:
        return None
    vocab, merges, where, vocab_where = files
    openai_vocab, openai_merges = _openai_bpe()
    if vocab == openai_vocab and merges[:_HF_CLIP_MERGES] == openai_merges:
        return None
    missing = [t for t in (_SOT, _EOT) if t not in vocab]
    if missing:
        raise CheckpointError(f"{vocab_where}: has no {' or '.join(missing)}: not a CLIP tokenizer's vocabulary")
    from kizuna.data.tokenizer import TrainedBpeTokenizer, _build_tokenizer

    try:
        tokenizer = TrainedBpeTokenizer(_build_tokenizer(vocab, merges), context_length)
    except Exception as e:  # noqa: BLE001 - the Rust BPE raises a plain Exception (a merge of unknown tokens)
        raise CheckpointError(f"{where}: not a BPE tokenizer ({str(e).strip()[:200]})") from None
    return tokenizer.to_config()
