"""Figures and numbers of what a ViT learned (ViT paper Fig. 6/7, CLIP prediction panels).

MODEL is any ViT or CLIP checkpoint kizuna loads (a `kizuna vit train` run's OUT/model or
OUT/checkpoints/best, a CLIP run, an OpenAI .pt, a Hugging Face folder); for CLIP the image tower
is analysed. Every action writes PNG figure(s) plus a JSON of the numbers to --out.

  kizuna analyze filters MODEL --out fig/            # PCA of patch-embedding filters (Fig. 7 left)
  kizuna analyze positions MODEL --out fig/          # position-embedding similarity (Fig. 7 centre)
  kizuna analyze attention-distance MODEL --images DIR_OR_SHARDS --out fig/   # Fig. 7 right
  kizuna analyze rollout MODEL --image a.jpg --out fig/                       # Fig. 6
  kizuna analyze predict MODEL --image a.jpg --labels "cat,dog,car" --out fig/  # CLIP panel
  kizuna analyze all MODEL --images DIR --image a.jpg --labels labels.txt --out fig/
  kizuna analyze over-training RUN --images DIR --out fig/   # every RUN/checkpoints/step_* against the step
  kizuna analyze compare-runs RUN RUN ... --panel-by subset_fraction --colour-by model --out fig/

Numbers: filters.json (explained variance per component), positions.json (row/column similarity
score: `row_column_ratio` > 1 means patches sharing a row or column are more alike, locality included;
`row_column_excess_at_equal_distance` > 0 means rows and columns beyond locality),
attention_distance.json (mean attention distance in pixels per layer and head, with the
uniform-attention level), rollout.json (the rollout map), predict.json (class probabilities);
`all` also writes report.json with every section; over_training.json has, per checkpoint, the
per-layer attention distances, their slope against depth (> 0: grows with depth), the row/column
ratio and the validation accuracy saved with it (--metric picks another saved metric). runs.json (compare-runs) has, per run, the final and best
validation accuracy, the final training accuracy and the gap between them, and the settings the runs
differ in (from each run's saved train_config); with --group-by the mean and spread over the runs that
share those settings.
"""
from __future__ import annotations

import argparse
import os
import json
import sys

from kizuna.apps.common import (add_act_argument, add_device_argument, add_progress_argument, add_threads_argument,
                                at_least_one, folder_path, model_spec)

ACTIONS = {
    "filters": "PCA of the patch-embedding filters",
    "positions": "cosine similarity of the position embeddings, row/column score",
    "attention-distance": "mean attention distance per layer and head over a set of images",
    "rollout": "attention rollout over one image",
    "predict": "prediction panel for one image (CLIP zero-shot, or a supervised ViT's head)",
    "all": "every figure that applies, plus report.json",
    "over-training": "attention distance, position structure and accuracy at every checkpoint of a run",
    "compare-runs": "accuracy curves and final numbers of several training runs side by side (from their logs)",
}


# What each action writes to --out, and one example: the action's own --help shows them.
ACTION_DOCS = {
    "filters": ("filters.png (the first --components principal components of the patch-embedding filters) and "
                "filters.json (explained variance per component).",
                "kizuna analyze filters runs/cifar-s4/model --out fig/"),
    "positions": ("positions.png (each patch position's cosine similarity to every other) and positions.json "
                  "(row_column_ratio > 1: patches sharing a row or column are more alike, locality included; "
                  "row_column_excess_at_equal_distance > 0: rows and columns beyond locality).",
                  "kizuna analyze positions runs/cifar-s4/model --out fig/"),
    "attention-distance": ("attention_distance.png and attention_distance.json: mean attention distance in pixels "
                           "per layer and head, with the uniform-attention level.",
                           "kizuna analyze attention-distance runs/cifar-s4/model --images ../shared/data/cifar10/test "
                           "--out fig/"),
    "rollout": ("rollout.png (the image with the rolled-out attention over it) and rollout.json (the map).",
                "kizuna analyze rollout runs/cifar-s4/model --image a.jpg --out fig/"),
    "predict": ("predict.png (the image and its top --top class probabilities) and predict.json.",
                'kizuna analyze predict runs/demo/checkpoints/best --image a.jpg --labels "cat,dog,car" --out fig/'),
    "all": ("the figures and JSONs of filters, positions, attention-distance, rollout and predict that apply to "
            "the model, plus report.json with every section.",
            "kizuna analyze all runs/cifar-s4/model --images ../shared/data/cifar10/test --image a.jpg --out fig/"),
    "over-training": ("over_training.png and over_training.json: per checkpoint (RUN/checkpoints/step_*), the "
                      "per-layer attention distances, their slope against depth, the row/column ratio and --metric.",
                      "kizuna analyze over-training runs/cifar-s4 --images ../shared/data/cifar10/test --out fig/"),
    "compare-runs": ("runs.png (--metric against the step, per run) and runs.json (final and best --metric, final "
                     "train accuracy, the gap, the settings the runs differ in).",
                     "kizuna analyze compare-runs runs/s4-10pct runs/s4-100pct --panel-by subset_fraction --out fig/"),
}


def _description(name: str) -> str:
    writes, example = ACTION_DOCS[name]
    import textwrap

    text = textwrap.fill(f"{ACTIONS[name][0].upper()}{ACTIONS[name][1:]}. Writes to --out: {writes}", 100)
    return f"{text}\n\n  {example}\n"


def _number(value, spec: str) -> str:
    """A number for the summary lines; "n/a" for one the JSON holds as null (a slope of one layer)."""
    return "n/a" if value is None else format(value, spec)


def _discard_ratio(text: str) -> float:
    """An argparse type for --discard-ratio: a number in [0, 1), refused when parsed; 1.0 failed in the rollout,
    after `analyze all` had computed every other figure."""
    from .attention import check_discard_ratio

    try:
        return check_discard_ratio(float(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1) (the share of each row's weakest attention "
                                         f"dropped; 1 drops all of it), got {text!r}") from None


def add_arguments(p):
    sub = p.add_subparsers(dest="analyze_command", metavar="ACTION")
    for name, help_text in ACTIONS.items():
        a = sub.add_parser(name, help=help_text, description=_description(name),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        if name == "compare-runs":
            a.add_argument("runs", nargs="+", metavar="run", help="training runs' OUT folders (their metrics.jsonl)")
            a.add_argument("--out", type=folder_path, default="analysis",
                           help="folder for runs.png and runs.json (default: analysis)")
            a.add_argument("--metric", default="val_top1", help="the eval rows' metric to compare (default val_top1)")
            a.add_argument("--labels", help="comma-separated names for the runs, in order, or a file with one per line "
                                             "(default: folder names)")
            a.add_argument("--panel-by", help="one panel per value of this train_config setting, e.g. subset_fraction "
                                               "(default: one panel)")
            a.add_argument("--colour-by", "--color-by", dest="colour_by",
                           help="runs with the same value of this setting share a colour, e.g. model "
                                "(default: a colour per run)")
            a.add_argument("--group-by", default="", help="comma-separated settings; runs sharing them are "
                                                          "averaged (e.g. model,subset_fraction over seeds; "
                                                          "default: no averaging)")
            a.add_argument("--train-window", type=at_least_one, default=5,
                           help="final train accuracy = mean over the steps of this many last logged values "
                                "of the run that logs least often, the same steps for every run (default 5)")
            a.add_argument("--mode", choices=["auto", "max", "min"], default="auto",
                           help="which end of the metric is best: auto (default) takes the lowest for a loss, "
                                "error, rank or attack rate, else the highest")
            continue
        if name == "over-training":
            a.add_argument("model", metavar="run", type=model_spec,
                           help="a training run's OUT folder (its checkpoints/step_* are analysed; keep them with "
                                "--keep-last)")
            a.add_argument("--metric", default="val_top1",
                           help="the metric saved with each checkpoint to draw against the step (default "
                                "val_top1; a CLIP run saves e.g. zeroshot/top1). A name no checkpoint has is an "
                                "error that lists the ones they have; a checkpoint without it shows n/a")
        else:
            a.add_argument("model", type=model_spec,
                           help="ViT or CLIP checkpoint (folder, .safetensors, OpenAI .pt, HF folder)")
        a.add_argument("--out", type=folder_path, default="analysis",
                       help="folder for the PNGs and JSON (default: analysis)")
        add_device_argument(a)
        if name != "over-training":  # a run's checkpoints are kizuna's own format, never TorchScript
            a.add_argument("--allow-jit", action="store_true", help="allow TorchScript checkpoints (trusted files only)")
            add_act_argument(a)
        if name in ("filters", "all"):
            a.add_argument("--components", type=at_least_one, default=28, help="principal components to show (default 28)")
        if name in ("attention-distance", "all", "over-training"):
            a.add_argument("--images", nargs="+", action="extend", required=name != "all",  # (twice: both lists)
                           help="image files, folders or shard specs; repeatable"
                                + (" (default: 16 generated shapes-world scenes)" if name == "all" else ""))
            a.add_argument("--max-images", "--max-samples", dest="max_images", type=at_least_one, default=32,
                           help="images used (default 32)")
            add_progress_argument(a)  # the attention distances of many images (and checkpoints) take a while
        if name in ("rollout", "predict", "all"):
            a.add_argument("--image", required=name in ("rollout", "predict"),
                           help="one image file" + (" (default: the first of --images)" if name == "all" else ""))
        if name in ("rollout", "all"):
            a.add_argument("--head-fusion", default="mean", choices=["mean", "max", "min"],
                           help="how each layer's attention heads are combined before rollout (default mean)")
            a.add_argument("--discard-ratio", type=_discard_ratio, default=0.0,
                           help="drop this share (at least 0, below 1) of the weakest attention per row before rollout "
                                "(default 0)")
        if name in ("predict", "all"):
            a.add_argument("--labels", help="comma-separated class names or a file with one per line "
                                            "(CLIP: the classes to score; ViT: its classes in order; default for a "
                                            "ViT: the class names saved with it)")
            a.add_argument("--template", "--templates", dest="template", action="append", default=None,
                           help="CLIP prompt template with {c}, or a .txt/.json file of them (repeatable; default "
                                "'a photo of a {c}.')")
            a.add_argument("--true-label", default=None, help="highlight this label in the panel (default: none)")
            a.add_argument("--top", type=at_least_one, default=5, help="classes in the panel (default 5)")
        add_threads_argument(a)


def _one_image(args, target):
    from kizuna.data.images import load_image

    return target.preprocess(load_image(args.image)), str(args.image)


def _check_image_paths(args) -> None:
    """--images / --image there, before the model loads (a typo was "data source not found", naming no flag,
    after a large model's seconds of loading)."""
    import os

    from kizuna.data.sources import expand_spec

    for flag in ("images", "image"):
        value = getattr(args, flag, None)
        for spec in [value] if isinstance(value, str) else (value or []):
            try:
                missing = [p for p in expand_spec(spec) if not os.path.exists(p)]
            except FileNotFoundError as e:  # a glob matching nothing
                raise FileNotFoundError(f"--{flag} {spec}: {e}") from None
            if missing:
                raise FileNotFoundError(f"--{flag} {spec}: no such file or folder" +
                                        (f" ({missing[0]})" if missing[0] != spec else ""))


def run(args):
    if not getattr(args, "analyze_command", None):  # as `kizuna eval` without a task: one error line (it printed
        raise ValueError(f"choose an action: {', '.join(ACTIONS)} (see kizuna analyze --help)")  # the help, rc 2)
    from kizuna.apps.common import check_out_outside_data, check_writable, refuse_under_torchrun

    refuse_under_torchrun(f"kizuna analyze {args.analyze_command}")

    check_writable(args.out, "the figures and JSON")  # it failed as "[Errno 17] File exists" once they were drawn
    _check_image_paths(args)
    if getattr(args, "images", None):  # one folder given twice (a/ and a, overlapping globs) was measured twice
        seen, kept = set(), []
        for spec in args.images:
            key = os.path.realpath(spec) if os.path.exists(spec) else spec
            if key not in seen:
                seen.add(key)
                kept.append(spec)
        args.images = kept
    # the PNGs in an --out inside an --images folder were measured as images by the next run
    check_out_outside_data(args.out, "--images", getattr(args, "images", None))
    from kizuna.eval.suite import results_folder_lock

    # --out held while the action draws and writes, as `kizuna eval` holds its own: two analyses into one folder
    # (the default --out analysis) mixed one model's figures with the other's report.json, without a word
    with results_folder_lock(args.out):
        return _run_action(args)


def _run_action(args):
    from kizuna.apps.zeroshot import parse_labels
    from kizuna.data.sources import SkipCounter

    from . import report as R

    if args.analyze_command == "compare-runs":
        from .runs import compare_runs, format_table

        labels = parse_labels(args.labels, minimum=1) if args.labels else None
        group_by = [x.strip() for x in args.group_by.split(",") if x.strip()]
        numbers = compare_runs(args.runs, args.out, args.metric, labels, args.panel_by, group_by, args.train_window,
                               colour_by=args.colour_by, mode=args.mode)
        print(format_table(numbers))
        print(f"settings that differ: {', '.join(numbers['differing_settings']) or 'none'}; wrote {args.out}")
        return 0
    if args.analyze_command == "over-training":
        from .over_training import over_training_report

        numbers = over_training_report(args.model, args.images, args.out, args.max_images, args.device,
                                       args.metric, progress=not args.no_progress)
        metric = numbers["metric"]
        for row in numbers["checkpoints"]:
            layers = ", ".join(_number(d, ".1f") for d in row["per_layer_mean"])  # null: a diverged (NaN) model
            print(f"step {row['step']}: attention distance per layer {layers} px (slope "
                  f"{_number(row['depth_slope'], '+.2f')} px/layer), row/column ratio "
                  f"{_number(row['row_column_ratio'], '.3f')}, {metric} {_number(row[metric], '.4g')}")
        if all(row[metric] is None for row in numbers["checkpoints"]):
            print(f"no checkpoint was saved with any metrics, so there is no {metric} curve")
        print(f"uniform attention: {numbers['uniform_reference']:.1f} px; wrote {args.out}")
        return 0
    cmd = args.analyze_command
    labels = parse_labels(args.labels) if getattr(args, "labels", None) else None
    if getattr(args, "template", None):  # files read, and every template checked, before the model loads
        from kizuna.apps.zeroshot import parse_templates

        args.template = parse_templates(args.template)
    if getattr(args, "true_label", None):  # typed text: UTF-8 under any locale, as --labels is
        from kizuna.apps.cli import text_argument

        args.true_label = text_argument(args.true_label)
    target = R.load_target(args.model, device=args.device, allow_jit=args.allow_jit, act=args.act)
    if cmd == "all":  # before the images are read and any figure is computed, which can take minutes
        R.check_report(target, labels, args.template, args.true_label, args.discard_ratio)
    if cmd == "filters":
        numbers = R.filters_report(target, args.out, args.components)
    elif cmd == "positions":
        numbers = R.positions_report(target, args.out)
    elif cmd == "attention-distance":
        skips = SkipCounter()
        images, _ = R.load_images(args.images, target.preprocess, args.max_images, skips=skips)
        numbers = R.attention_distance_report(target, images, args.out, images_source=" ".join(args.images),
                                              skipped_images=skips.total, progress=not args.no_progress)
    elif cmd == "rollout":
        x, name = _one_image(args, target)
        numbers = R.rollout_report(target, x, args.out, args.head_fusion, args.discard_ratio, name)
    elif cmd == "predict":
        x, name = _one_image(args, target)
        numbers = R.predict_report(target, x, args.out, labels, args.template, args.true_label, args.top, name)
    else:
        skips = SkipCounter()
        images = R.load_images(args.images, target.preprocess, args.max_images, skips=skips) if args.images else None
        image = _one_image(args, target) if args.image else None
        numbers = R.full_report(target, args.out, images=images, image=image, labels=labels, top_k=args.top,
                                templates=args.template, true_label=args.true_label, components=args.components,
                                head_fusion=args.head_fusion, discard_ratio=args.discard_ratio,
                                images_source=" ".join(args.images) if args.images else "",
                                max_images=args.max_images, skipped_images=skips.total if args.images else None,
                                progress=not args.no_progress)
        unused = [flag for flag, value in (("--labels", labels), ("--template", args.template),
                                           ("--true-label", args.true_label)) if value]
        if "predict" not in numbers and unused:
            import warnings

            why = ("a ViT without a classification head has no prediction panel" if target.kind == "vit" else
                   "a CLIP model's prediction panel needs --labels")
            warnings.warn(f"{', '.join(unused)} ignored: {why}", stacklevel=1)
    if cmd != "all":  # an earlier `analyze all` report.json here: this section in it, or gone (another model's)
        R.update_report(args.out, target, cmd.replace("-", "_"), numbers)
    summary = {k: v for k, v in numbers.items() if not isinstance(v, (list, dict))}
    if cmd == "all":
        summary = {"figures": numbers["figures"],
                   "row_column_ratio": numbers["positions"]["row_column_ratio"],
                   "row_column_excess_at_equal_distance": numbers["positions"].get("row_column_excess_at_equal_distance"),
                   "attention_distance_per_layer": numbers["attention_distance"]["per_layer_mean"]}
    print(json.dumps(summary, indent=2))
    print(f"wrote {args.out}", file=sys.stderr)  # stdout is the JSON alone (`| jq` failed on "Extra data")
    return 0
