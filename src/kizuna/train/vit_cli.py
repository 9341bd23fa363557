"""Train a Vision Transformer on labelled images, fine-tune one, evaluate it, or show its training augmentation
(ViT paper, Dosovitskiy et al.).

Every field of kizuna.train.supervised.SupervisedConfig is a flag; `--config FILE.py` (a module with
get_config() -> dict) sets several at once and flags override it. Data: CLIP_benchmark
classification shards (KEY.jpg + KEY.cls), a dataset root with split folders, an ImageFolder tree
(one folder per class), a side-car folder or a CSV with a label column.

  kizuna vit train --data ../shared/data/cifar10/train --val-data ../shared/data/cifar10/test \\
      --model S/4 --image-size 32 --epochs 30 --out runs/cifar-s4
  kizuna vit train ... --model hybrid-S/1 --model-overrides '{"stem_channels": [64, 128]}'
  kizuna vit train ... --subset-fraction 0.1 --out runs/cifar-s4-10pct      # data-scaling study
  kizuna vit train ... --randaug-ops 2 --randaug-magnitude 9 --mixup 0.8 --cutmix 1.0 --label-smoothing 0.1
  kizuna vit train --out runs/cifar-s4 --resume latest                        # continue a killed run as started
  kizuna vit finetune runs/cifar-s4/model --data ... --val-data ... --image-size 64 --out runs/ft64
  kizuna vit finetune runs/cifar-s4/model ... --image-size 64 --no-pos-interp --out runs/ft64-noint
  kizuna vit eval runs/cifar-s4/model --data ../shared/data/cifar10 --split test --out runs/cifar-s4/eval
  kizuna vit augment --config vit_cifar10_gpu --out fig/augment              # the recipe's augmentation, drawn
  torchrun --nproc_per_node 2 -m kizuna.apps.cli vit train ... --device cpu

Fine-tuning defaults follow the paper: SGD with momentum 0.9, no weight decay, gradient clipping at
1, cosine schedule, a zero-initialised head; at a new --image-size the position embeddings are
interpolated in 2-D (--pos-embed interpolate) unless --no-pos-interp (= --pos-embed sequence:
the old table reused by sequence index, zero rows appended / rows cut). See docs/VIT.md in kizuna's source repository.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import warnings
from pathlib import Path

from kizuna.apps.common import check_out_outside_data, check_writable, folder_path, model_spec
from kizuna.models.checkpoint import atomic_write_text

from .supervised import FINETUNE_RECIPE

# `kizuna vit finetune` defaults: the recipe a config with an init gets (kizuna.train.supervised), and its --out
FINETUNE_DEFAULTS = dict(FINETUNE_RECIPE, out="runs/vit-finetune")
# The SupervisedConfig fields `vit augment` reads: the data, the augmentation recipe, where to write.
AUGMENT_FIELDS = ("data", "data_split", "classnames", "subset_fraction", "subset_seed", "image_size", "crop",
                  "crop_scale", "crop_padding", "hflip", "randaug_ops", "randaug_magnitude", "mixup", "cutmix",
                  "mix_prob", "label_smoothing", "seed", "out", "image_column", "label_column", "threads")
AUGMENT_OUT = "runs/augment"  # `vit augment`'s own --out default


def _set_help(parser: argparse.ArgumentParser, dest: str, text: str) -> None:
    """Replace the --help text of ``dest`` (a config field whose shared comment does not fit this subcommand)."""
    for action in parser._actions:
        if action.dest == dest:
            action.help = text


FINETUNE_DOC = """Fine-tune a checkpoint: new zero-initialised head, optionally a higher resolution with interpolated
(or, for the ablation, not interpolated) position embeddings. The other flags are `vit train`'s, with the
paper's fine-tuning defaults (SGD, momentum 0.9, no weight decay). Writes OUT/model (the fine-tuned
classifier), OUT/checkpoints/, OUT/metrics.jsonl, OUT/tensorboard/ (with kizuna[train]) and
OUT/train_config.json.

  kizuna vit finetune runs/cifar-s4/model --data ../shared/data/cifar10/train \\
      --val-data ../shared/data/cifar10/test --image-size 64 --out runs/ft64
"""


AUGMENT_DOC = """The first training images through the recipe's augmentation, both paths: the PIL loader and the
device batches (--augment-on device). Writes OUT/augment.png (one row per image: the original, then
--draws of each path) and OUT/augment.json (pixel statistics of both paths over --stats-images images,
which should agree). Takes --config (its other training settings are ignored) and the recipe flags below.

  kizuna vit augment --config vit_cifar10_gpu --out fig/augment
  kizuna vit augment --data ../shared/data/cifar10/train --randaug-ops 2 --mixup 0.8 --out fig/augment
"""


def _add_config_flags(parser: argparse.ArgumentParser, defaults: dict, skip: tuple = ()) -> None:
    from .config import add_config_arguments
    from .supervised import SupervisedConfig

    add_config_arguments(parser, SupervisedConfig, defaults, skip)
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")


def add_arguments(p):
    from kizuna.apps.common import (add_loader_timeout_argument, add_progress_argument, add_threads_argument,
                                    at_least_one, at_least_zero, device_name)

    sub = p.add_subparsers(dest="vit_command", metavar="ACTION")
    t = sub.add_parser("train", help="train a ViT from scratch on labelled images",
                       description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_config_flags(t, {}, skip=("init", "reset_head", "pos_embed"))
    f = sub.add_parser("finetune", help="fine-tune a trained ViT (or CLIP image tower) on labelled images",
                       description=FINETUNE_DOC, formatter_class=argparse.RawDescriptionHelpFormatter)
    f.add_argument("checkpoint", type=model_spec,
                   help="ViT or CLIP checkpoint (folder or .safetensors), e.g. runs/x/model")
    f.add_argument("--no-pos-interp", action="store_true",
                   help="ablation: reuse the position-embedding table by sequence index (= --pos-embed sequence)")
    _add_config_flags(f, FINETUNE_DEFAULTS, skip=("init", "model", "model_overrides"))
    _set_help(f, "image_size", "input side in pixels; 0 = the checkpoint's own (default 0)")
    a = sub.add_parser("augment", help="show what the training recipe does to images (PNG grid + pixel statistics)",
                       description=AUGMENT_DOC,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    # --images is a path on every other command; the count keeps it as a second spelling
    a.add_argument("--num-images", "--images", dest="images", metavar="N", type=at_least_one, default=8,
                   help="images in the grid (default 8)")
    a.add_argument("--draws", type=at_least_one, default=4, help="draws of each path per image (default 4)")
    a.add_argument("--stats-images", type=at_least_one, default=512,
                   help="images for the pixel statistics, one draw each (default 512)")
    from .supervised import SupervisedConfig

    # only the settings the preview acts on: the other training flags were accepted and ignored (a --config
    # file may still hold them all)
    _add_config_flags(a, {"out": AUGMENT_OUT},
                      skip=tuple(f.name for f in dataclasses.fields(SupervisedConfig) if f.name not in AUGMENT_FIELDS))
    # the shared field comments speak of a training run; the preview has no checkpoint and writes no run
    _set_help(a, "image_size", f"side in pixels the images are augmented to (default {SupervisedConfig().image_size})")
    _set_help(a, "out", f'folder for augment.png and augment.json (default "{AUGMENT_OUT}")')
    # as if given: a --config's `out` is its training run's folder, and without --out the preview wrote into it
    # (or into `vit train`'s default runs/vit)
    a.set_defaults(out=AUGMENT_OUT)
    _set_help(a, "seed", f"random seed of the augmentation draws (default {SupervisedConfig().seed})")
    e = sub.add_parser("eval", help="evaluate a trained ViT's own head: top-1/top-5, per-class table, confusion",
                       description=EVAL_DOC, formatter_class=argparse.RawDescriptionHelpFormatter)
    e.add_argument("checkpoint", type=model_spec,
                   help="a model from `kizuna vit train` or `vit finetune` (folder or .safetensors)")
    e.add_argument("--data", "--dataset", dest="data", required=True,  # (--dataset: `kizuna eval`'s word)
                   help="labelled images: a CLIP_benchmark folder (root or split folder), ImageFolder tree or CSV")
    e.add_argument("--split", default=None, help="split folder (default: test, else val/validation, else the folder)")
    e.add_argument("--classnames", default=None,
                   help="the names of the data's classes, one per line in label order, matched to the classes "
                        "saved with the model by name (default: the data's classnames.txt, else the ImageFolder "
                        "folder names or CSV label names, matched alike; for a model saved without classes, these "
                        "name its outputs)")
    e.add_argument("--image-size", type=at_least_zero, default=0,
                   help="evaluate at another resolution: the position embeddings are interpolated in 2-D, as "
                        "`vit finetune` does, but nothing is trained (0 = the model's own size)")
    e.add_argument("--max-samples", type=at_least_zero, default=0, help="evaluate the first N images only (0 = all)")
    e.add_argument("--batch-size", type=at_least_one, default=128, help="images per batch (default 128)")
    e.add_argument("--num-workers", "--workers", type=at_least_zero, default=0,
                   help="DataLoader worker processes for decoding (default 0: decode in the main process)")
    add_loader_timeout_argument(e)
    add_threads_argument(e)
    e.add_argument("--image-column", default="filepath", help="CSV: image path column (default filepath)")
    e.add_argument("--label-column", default="label", help="CSV: class index or class name column (default label)")
    e.add_argument("--out", type=folder_path, default=None,
                   help="write results.json, results.md and confusion.png here (default: print the results only)")
    add_progress_argument(e)
    from kizuna import PRECISIONS

    e.add_argument("--device", type=device_name, default=None, help="cpu, cuda, cuda:1 (default: cuda if available)")
    e.add_argument("--precision", choices=tuple(PRECISIONS), default="fp32",
                   help="weights and activations: fp32 (default) or bf16 (fast on GPUs and on CPUs with AMX or AVX-512 BF16)")
    p.set_defaults(_vit_actions=tuple(sub.choices))


EVAL_DOC = """Evaluate a trained classifier (`kizuna vit train` / `vit finetune`) with its own head on labelled
images: top-1, top-5, mean per-class recall, cross-entropy loss, a per-class table (recall, precision,
most-confused class) and a confusion-matrix plot. Images that do not decode are skipped and counted.
The data's labels are matched to the classes saved with the model by name (folder names, CSV label names, the
data's classnames.txt or --classnames).

  kizuna vit eval runs/c10-vit/model --data ../shared/data/cifar10 --split test
  kizuna vit eval runs/c10-vit/model --data ../shared/data/cifar10/test --precision bf16 --out runs/c10-vit/eval
  kizuna vit eval runs/c10-vit/model --data ../shared/data/cifar10/test --image-size 48   # transfer, no training
  torchrun --nproc_per_node 2 -m kizuna.apps.cli vit eval ... --device cpu    # sharded, same numbers
"""


def _given(args) -> dict:
    """The flags given, with finetune's checkpoint argument and --no-pos-interp as the fields they set."""
    from .config import given_arguments
    from .supervised import SupervisedConfig

    given = given_arguments(args, SupervisedConfig)
    if args.vit_command == "finetune":
        given["init"] = args.checkpoint
        if args.no_pos_interp:
            if given.get("pos_embed", "sequence") != "sequence":
                raise ValueError("--no-pos-interp contradicts --pos-embed " + given["pos_embed"])
            given["pos_embed"] = "sequence"
    return given


def config_from_args(args):
    from .config import load_config_file, refuse_typed_unused
    from .supervised import ARCHITECTURE_KEYS, SupervisedConfig, make_supervised_config

    base = dict(FINETUNE_DEFAULTS) if args.vit_command == "finetune" else {}
    if getattr(args, "config", None):
        base.update(load_config_file(args.config, SupervisedConfig))
    given = _given(args)
    cfg = make_supervised_config(base, **given)
    if getattr(args, "no_pos_interp", False) and cfg.image_size == 0:  # (refused as "--pos-embed sequence", unnamed)
        raise ValueError("--no-pos-interp does nothing here: it keeps the position embeddings as a sequence at a new "
                         "--image-size, and none is given (the checkpoint's own size keeps its table); drop it")
    refuse_typed_unused(cfg, given)
    if cfg.init:  # typed under a --config file's init: recorded in train_config.json while the checkpoint's model
        # trained, without a word (the Python API's keywords, a helper passing every field, are left alone)
        defaults = {"model": SupervisedConfig.model, "model_overrides": {}}
        asked = [key for key in ARCHITECTURE_KEYS if key in given and given[key] != defaults[key]]
        if asked:
            raise ValueError(f"{' and '.join('--' + key.replace('_', '-') for key in asked)}: this run fine-tunes "
                             f"{cfg.init} (init), whose model it keeps; drop {'them' if len(asked) > 1 else 'it'}, "
                             "or leave init out to train a new model")
    return cfg


def named_fields(args) -> frozenset[str]:
    """What the command line names: flags, finetune's checkpoint, --config keys (not finetune's defaults)."""
    from .config import NamedFields, load_config_file
    from .config import named_fields as named
    from .supervised import ARCHITECTURE_KEYS, SupervisedConfig

    given = _given(args)
    names = named(args, SupervisedConfig, given)
    if getattr(args, "config", None) and (given.get("init") or load_config_file(args.config, SupervisedConfig).get("init")):
        # a fine-tune drops its config file's model and model_overrides (make_supervised_config): not asked for,
        # so a resume takes the run's own rather than refusing the file's (or the default's) as another model
        names = NamedFields(names - (set(ARCHITECTURE_KEYS) - set(given)), typed=names.typed)
    return names


def evaluate(args) -> int:
    """`kizuna vit eval`: load, classify, print the summary and table, write results with --out."""

    import torch

    from kizuna.eval.suite import results_folder_lock

    from .distributed import init_distributed
    from .optim import announce_precision

    if args.out:  # a file or an unwritable place: said after the evaluation, as "[Errno 17] File exists"
        check_writable(args.out, "results.json and results.md")
        check_out_outside_data(args.out, "--data", args.data)  # confusion.png became a class of the next evaluation
    if args.threads:
        torch.set_num_threads(args.threads)
    info = init_distributed(args.device)
    device = info.device
    announce_precision(args.precision, device, info.is_main)
    # --out held while it evaluates and writes, as `kizuna eval` holds it: a suite writing there lost its results
    # and figures to this command's, and a training run's folder took its files, without a word
    with results_folder_lock(args.out):
        return _evaluate(args, info, device)


def _evaluate(args, info, device) -> int:
    import kizuna
    from kizuna.analysis.report import read_extra
    from kizuna.apps.common import json_safe
    from kizuna.data.transforms import Preprocess
    from kizuna.eval.classification import evaluate_classifier
    from kizuna.eval.datasets import (CLASSNAMES_FILE, RepeatedClassNamesWarning, load_dataset, load_under_classes,
                                      relabel_by_name)
    from kizuna.eval.encode import is_main
    from kizuna.eval.suite import remove_plots, unlisted_plots
    from kizuna.models.vit import VisionTransformer

    model = kizuna.create_model(args.checkpoint, image_size=args.image_size or None, precision=args.precision)
    if not isinstance(model, VisionTransformer):
        raise ValueError(f"{args.checkpoint}: a {type(model).__name__}, not a ViT classifier; "
                         f"evaluate CLIP models with `kizuna eval zeroshot`")
    model = model.to(device).eval()
    extra = read_extra(args.checkpoint)
    stored = extra.get("preprocess")  # without one, evaluate_classifier uses the trainer's (vit_preprocess)
    transform = Preprocess(**{**stored, "image_size": model.cfg.image_size}) if stored else None  # --image-size too
    # the classes the model was trained on name the data's labels, as the trainer's own evaluation does: class
    # folders and CSV label names are matched to them by name (by the data's own file, a test split lacking a
    # class or listing them in another order was scored against the wrong classes)
    trained_on = extra.get("classnames")

    def load(classnames):
        with warnings.catch_warnings():  # (a head has one output per class: zero-shot's repeated-name warning)
            warnings.simplefilter("ignore", RepeatedClassNamesWarning)
            return load_dataset(args.data, args.split, task="classification", classnames=classnames,
                                max_samples=args.max_samples, image_column=args.image_column,
                                label_column=args.label_column, refuse_columns=True)

    # numbered or wnid folders: named by the data's own classnames.txt, then matched by name below
    dataset = load(args.classnames) if args.classnames or not trained_on else load_under_classes(load, trained_on)
    # numbered labels (.cls, CSV numbers) through the data's own class names file, by name, as the trainer's
    # validation reads them (they were read as the model's numbers: classes listed otherwise were swapped), and
    # labels named by --classnames alike (they were scored as the head's outputs in the file's order: the
    # model's own names reversed gave 15% for 24%)
    named_by = f"--classnames {args.classnames}" if args.classnames else f"the data's {CLASSNAMES_FILE}"
    if trained_on and relabel_by_name(dataset, list(trained_on), own=list(dataset.classnames) if args.classnames
                                      else None, own_source=named_by if args.classnames else "") and info.is_main:
        print(f"note: {named_by} orders the classes otherwise than the model; the labels are matched to the "
              "model's classes by name")
    result = evaluate_classifier(model, dataset, transform=transform, batch_size=args.batch_size, device=device,
                                 num_workers=args.num_workers, progress=not args.no_progress)
    if not is_main():
        return 0
    if args.out:  # the files first: a table that cannot be printed (a closed terminal) does not lose them
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        record = {"model": str(args.checkpoint), "dataset": str(args.data), "split": dataset.split,
                  "precision": args.precision, "image_size": model.cfg.image_size, **result.to_dict(),
                  "plots": ["confusion.png"]}
        # an earlier `eval`'s figures here (and a suite's scatter), removed once results.json is written
        stale = [*unlisted_plots(out, {"confusion.png"}), out / "robustness_scatter.png"]
        # the figure first and results.json last: interrupted, a new results.json stood beside the last run's figure;
        # and the last run's results gone as soon as the new figure is in (a kill between the figure and the new
        # results left them beside it, describing another model; interrupted while drawing, they stay, whole)
        result.plot_confusion(out / "confusion.png")
        for old in (out / "results.json", out / "results.md"):
            old.unlink(missing_ok=True)
        from kizuna.eval.suite import markdown_cell  # (a name with <b>, __x__ or $ rendered as markup)

        atomic_write_text(out / "results.md", f"# {markdown_cell(args.checkpoint)} on {markdown_cell(dataset.name)}"
                                              f"\n\n{result.summary()}\n\n"
                                        f"```\n{result.table()}\n```\n")
        atomic_write_text(out / "results.json", json.dumps(json_safe(record), indent=2, allow_nan=False) + "\n")
        remove_plots(stale)
    print(result.summary())
    print(result.table())
    if args.out:
        print(f"wrote {out / 'results.json'}, results.md and confusion.png")
    return 0


def augment(args) -> int:
    """`kizuna vit augment`: the recipe's augmentation as a figure and numbers."""
    from kizuna.apps.common import refuse_under_torchrun

    refuse_under_torchrun("kizuna vit augment")
    from kizuna.analysis.augmentation import preview_augmentation

    cfg = config_from_args(args)
    if args.print_config:  # the settings the preview reads (it listed the flag and ran, writing its files)
        from .logging import json_text

        print(json_text({name: getattr(cfg, name) for name in AUGMENT_FIELDS}, indent=2))
        return 0
    if not cfg.data:
        raise ValueError("no images: pass --data (or a --config that names them)")
    record = preview_augmentation(cfg, cfg.out, args.images, args.draws, args.stats_images, seed=cfg.seed)
    for path in ("original", "loader", "device"):
        st = record[path]
        if st:
            print(f"{path:9s} mean {st['mean']:6.1f}  std {st['std']:5.1f}  grey fill {st['grey_fill']:.3f}  "
                  f"black {st['black']:.3f}  ({st['images']} images)")
    if record.get("device_note"):
        print(record["device_note"])
    print(f"wrote {Path(cfg.out) / record['figure']} and {Path(cfg.out) / 'augment.json'}")
    return 0


def run(args):
    if not getattr(args, "vit_command", None):  # as `kizuna eval` without a task: one error line (it printed the
        raise ValueError(f"choose an action: {', '.join(args._vit_actions)} (see kizuna vit --help)")  # help, rc 2)
    if args.vit_command == "eval":
        from .distributed import finish_distributed

        code = evaluate(args)
        finish_distributed()  # under torchrun: the ranks wait for rank 0's results, as `kizuna eval` does
        return code
    if args.vit_command == "augment":
        return augment(args)
    from .checkpointing import nothing_written, resumed_config
    from .logging import json_text
    from .supervised import train_supervised

    cfg = config_from_args(args)
    if args.print_config:  # as a resume would run it: the checkpoint's settings under the flags
        settings = resumed_config(cfg, named_fields(args))[0].to_dict()
        from .distributed import first_rank

        if first_rank():  # one JSON document on stdout under torchrun, not one per rank
            print(json_text(settings, indent=2))
        return 0
    from kizuna.eval.encode import is_main

    from .distributed import finish_distributed

    out = resumed_config(cfg, named_fields(args))[0].out  # a resume goes on in the checkpoint's own run folder
    metrics = train_supervised(cfg, named_fields(args))
    # once, not once per rank, by the trainer's own rule (init_distributed): a process group only under torchrun
    # (WORLD_SIZE > 1), and then its rank. int(RANK) failed on an empty RANK after the whole run, and a stale
    # RANK=1 outside torchrun dropped the summary.
    if is_main():
        # strict JSON (a diverged run's NaN is null), {} without an evaluation (no --val-data): nothing at all
        # left `kizuna vit train ... > final.json` an empty file that no JSON reader takes
        print(json_text(metrics or {}, indent=2))
        print(nothing_written(out, cfg.resume)
              or f"model: {out}/model (kizuna vit eval / analyze take it); checkpoints: {out}/checkpoints/latest",
              file=sys.stderr)
    finish_distributed()
    return 0
