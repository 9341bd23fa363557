"""One registry of named models.

ViT variants decode from strings in big_vision's form: "B/16" = Base width/depth/heads, 16 px patches (the sizes
are :data:`VIT_SIZES`; kizuna's "mu" is its own, wider than big_vision's).
Two-tower presets follow OpenCLIP's names ("ViT-B-32", "ViT-L-14", ...); "ViT-B/32" is accepted too. ``siglip-B-16``
is SigLIP B/16's architecture with OpenAI's BPE (49,408 ids; SigLIP's own sentencepiece vocabulary of 32,000 is not
shipped): 216.5M parameters, 13.37M more than the paper's model, all of them in the token embedding.
"""
from __future__ import annotations

import dataclasses
import json
import math
import re

from .clip import ClipConfig
from .text import TextConfig
from .vit import VisionConfig

# name: (width, depth, heads, mlp_dim): B, L and H from the ViT paper's Table 1, Ti and S from DeiT, M (Medium) as in
# big_vision and OpenCLIP, and a tiny size of kizuna's own for tests and demos.
VIT_SIZES = {
    "mu": (64, 2, 2, 256),
    "Ti": (192, 12, 3, 768),
    "S": (384, 12, 6, 1536),
    "M": (512, 12, 8, 2048),
    "B": (768, 12, 12, 3072),
    "L": (1024, 24, 16, 4096),
    "H": (1280, 32, 16, 5120),
}

# Text towers paired with each image-tower size: (width, depth, heads, embed_dim). S, M, B, L as in CLIP/OpenCLIP;
# mu and Ti are kizuna's own choices (OpenCLIP has no Ti).
CLIP_TEXT = {
    "mu": (64, 2, 2, 32),
    "Ti": (256, 12, 4, 256),
    "S": (384, 12, 6, 384),
    "M": (512, 12, 8, 512),
    "B": (512, 12, 8, 512),
    "L": (768, 12, 12, 768),
    "H": (1024, 24, 16, 1024),
}

_VARIANT = re.compile(r"^(?P<size>mu|Ti|S|M|B|L|H)/(?P<patch>[1-9]\d*)$")  # (a patch of 0: refused at build)


def is_vit_variant(name: str) -> bool:
    """Whether ``name`` is a supervised ViT variant: "S/16", or "hybrid-S/1" for the ResNet-stem hybrid."""
    return _VARIANT.match(name.removeprefix("hybrid-")) is not None


def decode_variant(variant: str) -> dict:
    """"B/16" -> dict(width=768, depth=12, heads=12, mlp_dim=3072, patch_size=16)."""
    m = _VARIANT.match(variant)
    if not m:
        raise ValueError(f"unknown ViT variant {variant!r}; expected SIZE/PATCH with SIZE in {list(VIT_SIZES)}")
    width, depth, heads, mlp = VIT_SIZES[m["size"]]
    return dict(width=width, depth=depth, heads=heads, mlp_dim=mlp, patch_size=int(m["patch"]))


def vit_config(variant: str, image_size: int = 224, num_classes: int = 0, **overrides) -> VisionConfig:
    """A supervised ViT as in the paper: "B/16", or "hybrid-S/1" for the ResNet-stem hybrid."""
    stem = "patch"
    if variant.startswith("hybrid-"):
        stem, variant = "resnet", variant[len("hybrid-") :]
    cfg = dict(decode_variant(variant), image_size=image_size, num_classes=num_classes, stem=stem)
    cfg.update(overrides)
    return VisionConfig(**cfg)


def _clip_preset(size: str, patch: int, image_size: int = 224, act: str = "gelu") -> ClipConfig:
    width, depth, heads, embed = CLIP_TEXT[size]
    vision = VisionConfig(
        **decode_variant(f"{size}/{patch}"),
        image_size=image_size,
        act=act,
        eps=1e-5,
        norm_pre=True,
        patch_bias=False,
        output_dim=embed,
    )
    text = TextConfig(width=width, depth=depth, heads=heads, mlp_dim=4 * width, act=act, output_dim=embed)
    return ClipConfig(embed_dim=embed, vision=vision, text=text)


def _siglip_preset(size: str, patch: int, image_size: int = 224) -> ClipConfig:
    v = decode_variant(f"{size}/{patch}")
    vision = VisionConfig(**v, image_size=image_size, act="gelu_tanh", eps=1e-6, class_token=False, pool="map")
    text = TextConfig(
        width=v["width"], depth=v["depth"], heads=v["heads"], mlp_dim=v["mlp_dim"], act="gelu_tanh", eps=1e-6,
        causal=False, pool="last", output_dim=v["width"], proj_bias=True, context_length=64,
    )
    return ClipConfig(
        embed_dim=v["width"], vision=vision, text=text, loss="siglip",
        init_logit_scale=math.log(10), init_logit_bias=-10.0, max_logit_scale=None,
        preprocess={"image_size": image_size, "mean": [0.5] * 3, "std": [0.5] * 3,
                    "interpolation": "bicubic", "resize_mode": "squash"},
        tokenizer={"type": "clip_bpe", "context_length": 64},
    )


def _registry() -> dict:
    reg = {}
    for size, patches, res in [("B", (32, 16), 224), ("L", (14,), 224), ("H", (14,), 224),
                               ("S", (32, 16), 224), ("M", (32, 16), 224), ("Ti", (16,), 224), ("mu", (8,), 32)]:
        for p in patches:
            reg[f"ViT-{size}-{p}"] = lambda s=size, p=p, r=res: _clip_preset(s, p, r)
            reg[f"ViT-{size}-{p}-quickgelu"] = lambda s=size, p=p, r=res: _clip_preset(s, p, r, "quick_gelu")
    reg["ViT-L-14-336"] = lambda: _clip_preset("L", 14, 336)
    reg["siglip-B-16"] = lambda: _siglip_preset("B", 16)
    reg["siglip-mu-8"] = lambda: _siglip_preset("mu", 8, 32)
    return reg


CLIP_PRESETS = _registry()


def list_models() -> list[str]:
    return sorted(CLIP_PRESETS)


def unknown_model_message(name: str) -> str:
    """A name that is neither a preset nor an existing path: a preset misspelt (the closest preset names, case
    and separators ignored), or a path that is not there."""
    import difflib

    canon = {k.lower().replace("-", "").replace("/", ""): k for k in CLIP_PRESETS}
    close = difflib.get_close_matches(name.lower().replace("-", "").replace("/", ""), list(canon), n=3, cutoff=0.75)
    if close:
        return (f"unknown model {name!r} (did you mean {', '.join(canon[c] for c in close)}?); "
                "`kizuna info list` names every preset")
    if any(c in name for c in "/.~\\"):
        return (f"{name}: no such checkpoint (file or folder), and not a preset name; `kizuna info list` names "
                "the presets")
    return (f"unknown model {name!r}. Known presets: {', '.join(list_models())} (or pass a checkpoint: a folder, "
            ".safetensors, OpenAI .pt or Hugging Face folder)")


_MERGED = {"vision": VisionConfig, "text": TextConfig, "preprocess": None, "tokenizer": None}


def follow_context_length(d: dict, preset_length: int, tokenizer_override) -> None:
    """A new text context length is also the tokenizer's (as a new image size is the preprocessing's), unless the
    tokenizer override sets its own: a 32-position tower with the preset's 77-token tokenizer failed at its first
    encode_text, and a 100-position one kept cutting captions at 77. A MiniLM text tower gets its own tokenizer."""
    text, tokenizer = d.get("text"), d.get("tokenizer")
    if not isinstance(text, dict) or not isinstance(tokenizer, dict) or tokenizer.get("type") == "minilm":
        return
    if text.get("kind") == "minilm" and "type" not in (tokenizer_override or {}):
        # the MiniLM tower reads its own WordPiece ids (kizuna.get_tokenizer(model) gave OpenAI's BPE rows, which
        # it refused)
        d["tokenizer"] = {"type": "minilm", "context_length": (tokenizer_override or {}).get("context_length", 64)}
        return
    length = text.get("context_length")
    if length != preset_length and "context_length" not in (tokenizer_override or {}):
        d["tokenizer"] = {**tokenizer, "context_length": length}


def follow_overrides(d: dict, base: ClipConfig, overrides: dict) -> None:
    """What a changed field carries along in ``d`` (``base``'s config dict with ``overrides`` applied), unless the
    overrides set it too; one rule for create_model and `kizuna train` (which replaced a preprocess.image_size
    override)."""
    # A new image size is also the size images are preprocessed to, unless the preprocessing says otherwise.
    new_size = d["vision"].get("image_size") if isinstance(d.get("vision"), dict) else None
    if (new_size != base.vision.image_size and isinstance(d.get("preprocess"), dict)
            and "image_size" not in (overrides.get("preprocess") or {})):
        size = list(new_size) if isinstance(new_size, (tuple, list)) else new_size
        d["preprocess"] = {**d["preprocess"], "image_size": size}
    if "embed_dim" in overrides:  # a new joint width: the towers' projections follow it (create_model refused it)
        for tower in ("vision", "text"):
            given = overrides.get(tower)
            if isinstance(d.get(tower), dict) and d[tower].get("output_dim") and (
                    given is None or isinstance(given, dict) and "output_dim" not in given):
                d[tower]["output_dim"] = d["embed_dim"]
    follow_context_length(d, base.text.context_length, overrides.get("tokenizer"))


def check_override_types(defaults: dict, overrides: dict, where: str = "", label: str = "--model-overrides") -> None:
    """Each override's value against the kind of the value it replaces (``defaults``: the model's config as a
    dict), for --model-overrides and clip_config alike. The config classes take any value, so
    {"embed_dim": "64"} failed as a TypeError in torch while the model was built, and {"eps": "1e-5"} saved and
    reloaded a model that failed at its first forward. A default of None (an optional field) takes anything.
    ``label`` names the overrides in the message."""
    def kind(value) -> str:
        for types, name in ((bool, "true or false"), (int, "a whole number"), (float, "a number"),
                            (str, "a string"), ((list, tuple), "a list"), (dict, "a JSON object")):
            if isinstance(value, types):
                return name
        return type(value).__name__

    for key, value in overrides.items():
        default, name = defaults.get(key), where + key
        if isinstance(default, dict) and isinstance(value, dict):
            check_override_types(default, value, name + ".", label)
        elif default is not None and value is not None and kind(value) != kind(default) and not (
                kind(default) == "a number" and kind(value) == "a whole number") and not (
                key == "image_size" and isinstance(value, (list, tuple))):  # (height, width): the config checks it
            raise ValueError(f"{label}: {name} must be {kind(default)} (as the model's "
                             f"{json.dumps(default, default=str)}), got {json.dumps(value, default=str)}")


def refuse_a_vision_head(config: dict) -> None:
    """A new CLIP config (a preset with overrides, a training run's) whose image tower has a classifier head: the
    head replaced the projection in forward_head, so the features were its logits, visual.proj never trained, and
    a class count other than embed_dim failed at the first step. Refused for new models only: a checkpoint
    trained so before still loads."""
    classes = (config.get("vision") or {}).get("num_classes")
    if classes:
        raise ValueError(f"vision.num_classes {classes}: a CLIP image tower ends in its projection to the joint "
                         "space, not a classifier head; drop num_classes (train a classifier with `kizuna vit "
                         "train`, or fine-tune one from a CLIP with `kizuna vit finetune`)")


def _plain(value):
    """numpy scalars and arrays as Python numbers and lists (np.int64(32) was refused as not a whole number, or
    built a config that saved as no JSON), inside dicts and lists too; anything else as it is."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    if type(value).__module__ == "numpy" and hasattr(value, "tolist"):  # np.generic and np.ndarray
        return value.tolist()
    return value


def clip_config(name: str, **overrides) -> ClipConfig:
    """A preset's config with ``overrides`` applied: a field's new value, or for ``vision``, ``text``,
    ``preprocess`` and ``tokenizer`` a dict merged into the preset's. The result is built through
    ``ClipConfig``'s constructor, so every check applies (a mismatched ``embed_dim``, an unknown ``loss``,
    an image smaller than a patch): a bad override is a ``ValueError`` naming it, not a model that trains
    wrongly or saves but does not reload."""
    key = name.replace("/", "-")
    if key not in CLIP_PRESETS:
        raise ValueError(unknown_model_message(name))
    base = CLIP_PRESETS[key]()
    if not overrides:
        base.name = key
        return base
    overrides = {k: _plain(v) for k, v in overrides.items()}
    d = base.to_dict()
    d["name"] = key
    fields = {f.name for f in dataclasses.fields(ClipConfig)}
    for k, v in overrides.items():
        if k not in fields:
            raise ValueError(f"unknown ClipConfig field {k!r} (fields: {', '.join(sorted(fields))})")
        if k in _MERGED and dataclasses.is_dataclass(v) and not isinstance(v, type):
            v = v.to_dict()  # a VisionConfig/TextConfig given whole replaces the preset's
            d[k] = v
            continue
        if k in _MERGED and (v is not None or _MERGED[k] is not None):
            if not isinstance(v, dict):
                raise ValueError(f"override {k}= must be a dict (merged into the preset's {k}), got {type(v).__name__}")
            known = _MERGED[k]
            if known is not None:
                own = {f.name for f in dataclasses.fields(known)}
                bad = sorted(set(v) - own)
                if bad:
                    raise ValueError(f"unknown {k} field{'s' if len(bad) > 1 else ''} {', '.join(map(repr, bad))} "
                                     f"in override {k}= (fields: {', '.join(sorted(own))})")
            d[k] = {**(d[k] or {}), **v}
        else:
            d[k] = v
    follow_overrides(d, base, overrides)
    try:
        # the values' kinds, as --model-overrides checks them ({"eps": "1e-5"} saved, reloaded, and failed at the
        # first forward)
        check_override_types(base.to_dict(), {k: v.to_dict() if dataclasses.is_dataclass(v) else v
                                              for k, v in overrides.items()}, label="override")
        refuse_a_vision_head(d)
        cfg = ClipConfig.from_dict(d)
        cfg.check_tokenizer()
        if "preprocess" in overrides:  # a mean of two numbers or an unknown filter was saved, and failed in
            from kizuna.data.transforms import preprocess_from_config  # get_preprocess, at the first image

            preprocess_from_config(cfg.preprocess)
        return cfg
    except (TypeError, ValueError) as e:
        shown = ", ".join(f"{k}={v!r}" for k, v in overrides.items())
        if len(shown) > 300:
            shown = shown[:300] + "..."
        raise ValueError(f"{key} with {shown}: {e}") from None
