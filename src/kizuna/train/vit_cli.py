"""Train a Vision Transformer on labelled images, or fine-tune one (ViT paper, Dosovitskiy et al.).

Every field of kizuna.train.supervised.SupervisedConfig is a flag; `--config FILE.py` (a module with
get_config() -> dict) sets several at once and flags override it. Data: CLIP_benchmark
classification shards (KEY.jpg + KEY.cls), a dataset root with split folders, an ImageFolder tree
(one folder per class), a side-car folder or a CSV with a label column.

  kizuna vit train --data ../shared/data/cifar10/train --val-data ../shared/data/cifar10/test \\
      --model S/4 --image-size 32 --epochs 30 --out runs/cifar-s4
  kizuna vit train ... --model hybrid-S/1 --model-overrides '{"stem_channels": [64, 128]}'
  kizuna vit train ... --subset-fraction 0.1 --out runs/cifar-s4-10pct      # data-scaling study
  kizuna vit train ... --randaug-ops 2 --randaug-magnitude 9 --mixup 0.8 --cutmix 1.0 --label-smoothing 0.1
  kizuna vit train ... --resume latest                                        # continue a killed run
  kizuna vit finetune runs/cifar-s4/model --data ... --val-data ... --image-size 64 --out runs/ft64
  kizuna vit finetune runs/cifar-s4/model ... --image-size 64 --no-pos-interp --out runs/ft64-noint
  torchrun --nproc_per_node 2 -m kizuna.apps.cli vit train ... --device cpu

Fine-tuning defaults follow the paper: SGD with momentum 0.9, no weight decay, gradient clipping at
1, cosine schedule, a zero-initialised head; at a new --image-size the position embeddings are
interpolated in 2-D (--pos-embed interpolate) unless --no-pos-interp (= --pos-embed sequence:
the old table reused by sequence index, zero rows appended / rows cut). See docs/VIT.md.
"""
from __future__ import annotations

import argparse
import json
import os

# `kizuna vit finetune` defaults (the paper's fine-tuning recipe, scaled to small runs).
FINETUNE_DEFAULTS = dict(optimizer="sgd", lr=0.01, weight_decay=0.0, warmup_steps=100, epochs=10.0,
                         image_size=0, randaug_ops=0, mixup=0.0, cutmix=0.0, label_smoothing=0.0,
                         out="runs/vit-finetune")


def _add_config_flags(parser: argparse.ArgumentParser, defaults: dict, skip: tuple = ()) -> None:
    from .config import add_config_arguments
    from .supervised import SupervisedConfig

    add_config_arguments(parser, SupervisedConfig, defaults, skip)
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")


def add_arguments(p):
    sub = p.add_subparsers(dest="vit_command", metavar="ACTION")
    t = sub.add_parser("train", help="train a ViT from scratch on labelled images",
                       description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_config_flags(t, {}, skip=("init", "reset_head", "pos_embed"))
    f = sub.add_parser("finetune", help="fine-tune a trained ViT (or CLIP image tower) on labelled images",
                       description="Fine-tune a checkpoint: new zero-initialised head, optionally a higher "
                                   "resolution with interpolated (or, for the ablation, not interpolated) "
                                   "position embeddings.")
    f.add_argument("checkpoint", help="ViT or CLIP checkpoint (folder or .safetensors), e.g. runs/x/model")
    f.add_argument("--no-pos-interp", action="store_true",
                   help="ablation: reuse the position-embedding table by sequence index (= --pos-embed sequence)")
    _add_config_flags(f, FINETUNE_DEFAULTS, skip=("init", "model", "model_overrides"))
    p.set_defaults(_vit_parser=p)


def config_from_args(args):
    from .config import given_arguments, load_config_file
    from .supervised import SupervisedConfig, make_supervised_config

    base = dict(FINETUNE_DEFAULTS) if args.vit_command == "finetune" else {}
    if getattr(args, "config", None):
        base.update(load_config_file(args.config))
    given = given_arguments(args, SupervisedConfig)
    if args.vit_command == "finetune":
        given["init"] = args.checkpoint
        if args.no_pos_interp:
            if given.get("pos_embed", "sequence") != "sequence":
                raise ValueError("--no-pos-interp contradicts --pos-embed " + given["pos_embed"])
            given["pos_embed"] = "sequence"
    return make_supervised_config(base, **given)


def run(args):
    if not getattr(args, "vit_command", None):
        args._vit_parser.print_help()
        return 2
    from .supervised import train_supervised

    cfg = config_from_args(args)
    if args.print_config:
        print(json.dumps(cfg.to_dict(), indent=2))
        return 0
    metrics = train_supervised(cfg)
    if metrics and int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(metrics, indent=2))
    return 0
