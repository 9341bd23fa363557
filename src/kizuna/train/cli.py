"""Train a CLIP or SigLIP model contrastively on image-text pairs.

Every option of kizuna.train.config.TrainConfig is a flag; a --config file sets several at once and
flags override it. Multi-GPU / multi-process: launch the same command with torchrun. --out gets
checkpoints/ (step_*, latest, best/), metrics.jsonl, tensorboard/ (with kizuna[train]) and train_config.json.

  kizuna train --config demo                                  # the built-in shapes world
  kizuna train --config flickr8k --out runs/f8k               # ../shared/data/flickr8k
  kizuna train --config flickr8k --loss siglip --out runs/f8k-siglip
  kizuna train --config flickr8k_minilm                       # locked pretrained MiniLM text tower
  kizuna train --out runs/f8k --resume latest                 # continue a killed run exactly, as it was started
  torchrun --nproc_per_node 2 -m kizuna.apps.cli train --config demo --device cpu
"""
from __future__ import annotations

import sys


def add_arguments(p):
    from .config import add_config_arguments

    add_config_arguments(p)
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")


def run(args):
    from .checkpointing import nothing_written, resumed_config
    from .config import check_batch_parts, config_from_args, named_fields
    from .contrastive import train
    from .distributed import first_rank
    from .logging import json_text

    cfg = config_from_args(args)
    if args.print_config:  # as a resume would run it: the checkpoint's settings under the flags
        named = named_fields(args)
        resumed = resumed_config(cfg, named)[0]
        check_batch_parts(resumed, resumed=bool(cfg.resume) and "batch_size" not in named)
        if first_rank():  # one JSON document on stdout under torchrun, not one per rank
            print(json_text(resumed.to_dict(), indent=2))
        return 0
    from kizuna.eval.encode import is_main

    from .distributed import finish_distributed

    out = resumed_config(cfg, named_fields(args))[0].out  # a resume goes on in the checkpoint's own run folder
    metrics = train(cfg, named_fields(args))
    # once, not once per rank, by the trainer's own rule (init_distributed): a process group only under torchrun
    # (WORLD_SIZE > 1), and then its rank. int(RANK) failed on an empty RANK after the whole run, and a stale
    # RANK=1 outside torchrun dropped the summary.
    if is_main():
        # strict JSON (a diverged run's NaN is null), {} without an evaluation: nothing at all left
        # `kizuna train ... > final.json` an empty file that no JSON reader takes, where `vit train` wrote one
        print(json_text(metrics or {}, indent=2))
        print(nothing_written(out, cfg.resume) or f"checkpoints: {out}/checkpoints/latest (evaluate or resume from it)",
              file=sys.stderr)
    finish_distributed()
    return 0
