"""kizuna (絆, "bond"): CLIP-style image-text models to train, evaluate, adapt, inspect and serve.

    import kizuna
    model = kizuna.create_model("ViT-B-32")            # a preset, or a checkpoint path
    preprocess = kizuna.get_preprocess(model)
    tokenizer = kizuna.get_tokenizer(model)
    img = model.encode_image(preprocess(pil_image)[None], normalize=True)
    txt = model.encode_text(tokenizer(["a photo of a dog."]), normalize=True)
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

__version__ = "0.1.0"

from .models.checkpoint import CheckpointError, load_model, save_model  # noqa: E402
from .models.clip import ClipConfig, ClipModel  # noqa: E402
from .models.layers import float32_default as _float32_default  # noqa: E402
from .models.presets import clip_config, list_models, vit_config  # noqa: E402
from .models.vit import VisionConfig, VisionTransformer, resample_pos_embed  # noqa: E402


PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16}


@_float32_default()  # (a host's float64 default gave a float64 model under precision "fp32")
def create_model(name_or_path: str, image_size: int | None = None, allow_jit: bool = False,
                 precision: str = "fp32", act: str | None = None, **overrides):
    """A preset name ("ViT-B-32", "siglip-B-16", ...) builds a fresh model; a path loads a checkpoint
    (kizuna, OpenAI state dict or Hugging Face folder) with its own config and preprocessing. Either comes in
    eval mode, as Hugging Face's from_pretrained gives it (``model.train()`` to train it).

    ``overrides`` replace preset fields (``embed_dim=``, ``vision={"depth": 6}``: dicts merge into the preset's),
    and the whole config is checked again. ``act``: for a preset, both towers' activation; for an
    OpenAI-layout state dict, the activation the layout cannot record (``act="gelu"`` for most OpenCLIP
    checkpoints; QuickGELU, OpenAI's, is the default).

    ``precision``: "fp32", or "bf16" for a model whose weights are bfloat16 - for inference (train with
    fp32 weights and autocast, the trainers' ``precision``). On a CPU with AMX it encodes images about 4x and
    texts about 2.5x faster than fp32 (AVX-512 BF16, AMD Zen 4: about 1.8x), and its features agree with
    fp32's to a cosine of about 0.9999
    (docs/PERFORMANCE.md); it still takes float32 pixels."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(f"create_model takes a preset name or a checkpoint path, got {type(name_or_path).__name__}")
    if isinstance(name_or_path, str) and name_or_path.startswith("~"):  # as save_model writes "~/m" (no preset is)
        name_or_path = os.path.expanduser(name_or_path)
    if isinstance(name_or_path, os.PathLike):  # a Path that does not exist went on as a preset name (a TypeError)
        name_or_path = Path(name_or_path).expanduser()
        if not Path(name_or_path).exists():
            raise CheckpointError(f"{name_or_path}: no such checkpoint (file or folder)")
        name_or_path = os.fspath(name_or_path)
    if not str(name_or_path).strip():  # "" is the current folder to Path: it loaded whatever was there
        raise ValueError("no model given (an empty name); pass a preset name (kizuna.list_models()) or a "
                         "checkpoint path")
    if Path(name_or_path).exists() and not _shadows_a_preset(name_or_path):
        if overrides:
            raise ValueError(f"config overrides ({', '.join(overrides)}) apply to presets only; a checkpoint carries "
                             "its own config")
        model = load_model(name_or_path, image_size=image_size, allow_jit=allow_jit, act=act)
    else:
        whole = set()
        for tower in ("vision", "text"):  # a whole VisionConfig/TextConfig is an override too: merged as its dict
            if hasattr(overrides.get(tower), "to_dict"):
                overrides[tower] = overrides[tower].to_dict()
                whole.add(tower)
        if act is not None:  # over a whole config's act (every field is set there), under a dict's own "act"
            for tower in ("vision", "text"):
                given = overrides.get(tower) or {}
                overrides[tower] = {**given, "act": act} if tower in whole else {"act": act, **given}
        if image_size is not None:
            overrides["vision"] = {**(overrides.get("vision") or {}), "image_size": image_size}
        cfg = clip_config(name_or_path, **overrides)
        # in eval mode, as a loaded checkpoint is: in train mode the MiniLM tower's dropout made encode_text give
        # other features at every call (trainers call .train() themselves)
        model = ClipModel(cfg).eval()
        if cfg.text.kind == "minilm":  # the point of this tower is its pretraining (the trainers load it too)
            model.text.load_pretrained_weights()
    if precision == "fp32":
        return model
    # The scale and bias stay float32, as OpenCLIP's low-precision conversion keeps them: in bf16 CLIP's scale of
    # 100 became 98.9 and a SigLIP's bias of -12.93 became -12.94, which moved a sigmoid probability from 49% to
    # 44%. Their values are kept aside before the cast (a cast back to float32 would keep the rounded value).
    scalars = {name: p.detach().float().clone() for name in ("logit_scale", "logit_bias")
               if isinstance(p := getattr(model, name, None), torch.nn.Parameter)}
    model = model.to(PRECISIONS[precision])
    for name, value in scalars.items():
        getattr(model, name).data = value
    return model


def _preset_name(name) -> bool:
    """A CLIP preset's name (``ViT-B-32``, ``ViT-B/32``) that is not also a path to a checkpoint."""
    return (isinstance(name, str) and name.replace("/", "-") in list_models()
            and (not _is_model_path(Path(name)) or _shadows_a_preset(name)))  # (an output folder named so)


def _is_model_path(path: Path) -> bool:
    """A checkpoint get_tokenizer reads the tokenizer of: a folder, a .safetensors / OpenAI .pt file, or a run's
    ``latest`` pointer (a tokenizer's own .json file is not one)."""
    return path.exists() and (path.is_dir() or path.suffix in (".safetensors", ".pt", ".pth", ".bin")
                              or path.name == "latest")


def _shadows_a_preset(name: str) -> bool:
    """A folder without a model that is named like a preset (an output folder "ViT-B-32" in the current
    directory): the preset is meant, not the folder (create_model failed with "folder has no config.json")."""
    path = Path(name)
    return (path.is_dir() and name.replace("/", "-") in list_models()
            and not any((path / f).exists() for f in ("config.json", "model.safetensors", "model", "checkpoints",
                                                      "train_config.json")))  # a model, or a run's --out


def create_vit(variant: str, image_size: int = 224, num_classes: int = 0, **overrides) -> VisionTransformer:
    """A supervised ViT: "B/16", "S/16", "hybrid-S/1", ..."""
    return VisionTransformer(vit_config(variant, image_size=image_size, num_classes=num_classes, **overrides))


def get_preprocess(model_or_cfg=None, train: bool = False, **train_overrides):
    """The evaluation (or training) image transform a model was built with: from a ClipModel, a ClipConfig,
    a preprocess dict (``model.cfg.preprocess``), a preset's name or a checkpoint's path. A supervised ViT's
    preprocessing is stored beside its weights, not in its config: a ViT loaded by :func:`create_model` carries it
    (``model.preprocess_config``); for another, pass that dict
    (``kizuna.analysis.report.read_extra(path)["preprocess"]``)."""
    from .data.transforms import preprocess_from_config

    if train_overrides and not train:  # they were dropped: the evaluation transform, without the augmentation
        raise ValueError(f"{', '.join(sorted(train_overrides))}: training settings; pass train=True for the "
                         "training transform")
    if model_or_cfg is None:  # CLIP's defaults, for training too (it returned the evaluation transform, dropping
        return preprocess_from_config({}, train=train, **train_overrides)  # train=True and its settings)
    if isinstance(getattr(model_or_cfg, "preprocess_config", None), dict):  # a ViT loaded from its checkpoint
        return preprocess_from_config(model_or_cfg.preprocess_config, train=train, **train_overrides)
    if _preset_name(model_or_cfg):  # OpenCLIP's habit: a preset's name (its preprocessing needs no weights)
        return preprocess_from_config(clip_config(str(model_or_cfg)).preprocess, train=train, **train_overrides)
    if isinstance(model_or_cfg, (str, os.PathLike)) and _is_model_path(Path(model_or_cfg)):
        return get_preprocess(create_model(model_or_cfg), train=train, **train_overrides)  # a checkpoint's path
    obj = model_or_cfg.cfg if hasattr(model_or_cfg, "cfg") else model_or_cfg
    if isinstance(obj, dict):
        cfg = obj
    elif hasattr(obj, "preprocess"):  # a ClipConfig
        cfg = obj.preprocess
    elif isinstance(obj, VisionConfig):
        raise ValueError(
            "this VisionTransformer (or VisionConfig) carries no preprocessing: a ViT that kizuna's trainers "
            "saved carries theirs when loaded with kizuna.create_model(path), and this one was created in Python "
            "or saved from such a one (kizuna.save_model keeps what a model carries). Pass a preprocess dict: "
            "kizuna.get_preprocess(kizuna.train.supervised.vit_preprocess(model.cfg.image_size)) is the trainers' "
            "(mean = std = 0.5, bicubic), or your own {'image_size', 'mean', 'std'}")
    else:
        got = repr(model_or_cfg) if isinstance(model_or_cfg, (str, os.PathLike)) else type(model_or_cfg).__name__
        raise TypeError("get_preprocess takes a ClipModel, a ClipConfig, a preprocess dict, a preset name or a "
                        f"checkpoint's path, got {got}")
    return preprocess_from_config(cfg, train=train, **train_overrides)


def get_tokenizer(model_or_cfg="clip_bpe", context_length: int | None = None):
    """The tokenizer a model was trained with (from the model, its config, its checkpoint's path or a preset's
    name, as OpenCLIP's ``get_tokenizer("ViT-B-32")``), or one by name ("clip_bpe") or tokenizer file.
    ``context_length`` replaces the config's (the model's positions bound it: longer fails in the tower)."""
    from .data.tokenizer import get_tokenizer as _get, tokenizer_from_config

    config = None
    # a model, or its config (model.cfg, as get_preprocess takes it)
    cfg = model_or_cfg if isinstance(model_or_cfg, ClipConfig) else getattr(model_or_cfg, "cfg", None)
    if cfg is not None and hasattr(cfg, "tokenizer"):
        config = cfg.tokenizer
        if config is None:  # the data-level error printed the whole model (thousands of characters)
            raise ValueError(f"this {type(model_or_cfg).__name__}'s config has no tokenizer (cfg.tokenizer is None); "
                             "pass the one it was trained with by name or config, e.g. "
                             "kizuna.get_tokenizer('clip_bpe', context_length=model.cfg.text.context_length)")
    elif isinstance(model_or_cfg, dict):
        config = model_or_cfg
    elif _preset_name(model_or_cfg):
        # OpenCLIP's get_tokenizer("ViT-B-32"): "unknown tokenizer", and the 'clip_bpe' it suggested gave a
        # siglip-* preset 77 tokens for its 64 positions
        config = clip_config(str(model_or_cfg)).tokenizer
    elif (isinstance(model_or_cfg, (str, os.PathLike)) and model_or_cfg not in ("clip_bpe", "openai")
          and _is_model_path(Path(model_or_cfg))):  # a folder named clip_bpe does not hide the tokenizer
        # a checkpoint's path, as create_model takes it: its own tokenizer (the error asked for a JSON inside it)
        return get_tokenizer(create_model(model_or_cfg), context_length)
    if config is not None:
        return tokenizer_from_config(config if context_length is None else {**config, "context_length": context_length})
    # None, not 77: a tokenizer file's saved context length applies, and 0 is refused rather than made 77
    return _get(model_or_cfg, context_length=context_length)


__all__ = [
    "PRECISIONS", "CheckpointError", "ClipConfig", "ClipModel", "VisionConfig", "VisionTransformer", "clip_config",
    "create_model", "create_vit", "get_preprocess", "get_tokenizer", "list_models", "load_model",
    "resample_pos_embed", "save_model", "vit_config",
]
