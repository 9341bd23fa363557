"""Print a model's configuration, parameter counts and FLOPs per image / per text (patch-embedding ViTs;
a conv or ResNet stem has no analytic count, and the line says so).

  kizuna info ViT-B-32
  kizuna info S/16            # a supervised ViT variant (`kizuna vit train --model`), at 224 px
  kizuna info S/4 --image-size 32
  kizuna info runs/demo/checkpoints/best
"""
from __future__ import annotations

import json

from kizuna.apps.common import model_spec


def add_arguments(p):
    p.add_argument("model", type=model_spec, help="preset name, ViT variant (S/16, hybrid-S/1: `kizuna vit train "
                   "--model`'s, at 224 px), checkpoint path, or `list` to print the presets")
    p.add_argument("--allow-jit", action="store_true", help="allow TorchScript archives (trusted files only)")
    p.add_argument("--act", choices=("quick_gelu", "gelu"), default=None,
                   help="the activation of an OpenAI-layout .pt/.bin, which the layout does not record (gelu for "
                        "most OpenCLIP checkpoints; default quick_gelu, OpenAI's)")
    p.add_argument("--image-size", type=int, default=224,
                   help="a ViT variant's input size in pixels (default 224; `kizuna vit train` builds its --image-size, "
                        "32 by default)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")


def _brief(config: dict) -> dict:
    """The config with the tokenizer's embedded vocabulary (a trained BPE's JSON, SigLIP's sentencepiece
    model: up to megabytes) replaced by its size; the full config is the checkpoint's config.json."""
    tok = config.get("tokenizer")
    if isinstance(tok, dict):
        config = {**config, "tokenizer": {k: f"<{len(v):,} characters>" if k in ("tokenizer_json", "model")
                                          and isinstance(v, str) else v for k, v in tok.items()}}
    return config


def summarize(model) -> dict:
    from kizuna.models.clip import ClipModel
    from kizuna.models.flops import clip_flops, clip_text_flops, vision_flops

    count = lambda m: sum(p.numel() for p in m.parameters())
    if isinstance(model, ClipModel):
        if model.cfg.vision.stem == "patch":
            flops = clip_flops(model.cfg)
        else:  # the text tower is counted whatever the image tower's stem
            flops = {"text": clip_text_flops(model.cfg)}
        return {
            "name": model.cfg.name, "kind": "clip", "loss": model.cfg.loss,
            "params": {"image": count(model.visual), "text": count(model.text), "total": count(model)},
            "gflops": {k: _gflops(v) for k, v in flops.items()},
            "config": _brief(model.cfg.to_dict()),
        }
    flops = vision_flops(model.cfg) if model.cfg.stem == "patch" else None
    return {"kind": "vit", "params": {"total": count(model)},
            "gflops": {"image": _gflops(flops)} if flops else {}, "config": model.cfg.to_dict()}


def _gflops(flops: float) -> float:
    """GFLOPs to 4 significant figures: rounded to 3 decimals, a small model's image tower was 0.00 (or 0.004)."""
    return float(f"{flops / 1e9:.4g}")


def run(args):
    import kizuna

    if args.model == "list":
        print(json.dumps(kizuna.list_models()) if args.json else "\n".join(kizuna.list_models()))
        return
    from pathlib import Path

    from kizuna.models.presets import is_vit_variant

    variant = not Path(args.model).exists() and is_vit_variant(args.model)
    image_size = getattr(args, "image_size", 224)  # (a caller's Namespace from before the flag)
    if image_size != 224 and not variant:  # accepted and unused, it looked like it had sized the model
        raise ValueError(f"--image-size sizes a ViT variant (S/16, hybrid-S/1); {args.model}'s size is its own")
    if args.act and variant:
        raise ValueError("--act names an OpenAI-layout checkpoint's activation; a ViT variant's is GELU")
    from kizuna.apps.common import refuse_act_for_a_preset

    refuse_act_for_a_preset(args.model, args.act)  # (a folder that shadows a preset's name too)
    if Path(args.model).exists():
        model = kizuna.create_model(args.model, allow_jit=args.allow_jit, act=args.act)
    else:  # a preset: its shapes are enough to count (ViT-H-14's random weights took 20 s to draw)
        import torch

        with torch.device("meta"):
            model = (kizuna.create_vit(args.model, image_size=image_size)  # ("not a preset name" before)
                     if variant else kizuna.create_model(args.model, act=args.act))
    info = summarize(model)
    if args.json:
        print(json.dumps(info, indent=2))
        return
    print(f"model: {args.model}  ({info['kind']}{', loss ' + info['loss'] if 'loss' in info else ''})")
    print("params: " + ", ".join(f"{k} {v / 1e6:.2f}M" for k, v in info["params"].items()))
    clip = info["kind"] == "clip"
    gflops = info["gflops"]
    if gflops:
        per = "one image / one text" if "image" in gflops and clip else "one text" if clip else "one image"
        print("GFLOPs: " + ", ".join(f"{k} {v:.4g}" for k, v in gflops.items()) + f"  (2 x MACs, {per})")
    if "image" not in gflops:  # said, not left out: a conv or ResNet stem has no analytic count
        fn = "model.encode_image" if clip else "model"  # a VisionTransformer is called itself
        vision = info["config"].get("vision", info["config"])  # (a ViT's config is its vision config)
        pruned = (" (with a class token pooled, the last block for that token only: fewer than a count of "
                  "every block, such as this command gives a patch stem)") if vision.get("pool") == "cls" else ""
        print(f"GFLOPs of the image tower: not counted for a conv or ResNet stem; "
              f"kizuna.models.flops.measured_flops({fn}, x) counts one forward as kizuna runs it{pruned}")
    print("config:")
    print(json.dumps(info["config"], indent=2))
