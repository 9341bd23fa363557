"""Evaluate CLIP models: zero-shot classification, retrieval, linear/few-shot probes, robustness probes, suites.

  kizuna eval zeroshot     --model M --dataset DIR [--split test] [--dataset-name cifar10] [--templates FILE] [--out DIR]
  kizuna eval retrieval    --model M --dataset DIR [--split test] [--out DIR]
  kizuna eval linear-probe --model M --dataset DIR [--few-shot 1,2,4,8,16] [--seeds 3] [--out DIR]
  kizuna eval probes       --model M --dataset DIR [--severities 1,3,5] [--out DIR]
  kizuna eval suite FILE   [--out DIR]

DIR is a CLIP_benchmark WebDataset folder (split folders train/ test/ with 000000.tar.. shards,
classnames.txt, zeroshot_classification_templates.txt; dataset_type.txt "retrieval" for retrieval
sets), an ImageFolder tree (one folder per class) or a CSV file (image path + label or caption column).
Class names and templates missing from the dataset come from the bundled CLIP_benchmark lists by
--dataset-name (default: the folder's name).

Results are printed as tables; with --out they are also written as results.json (CLIP_benchmark's
record fields), results.md and plots. Under torchrun (torchrun --nproc_per_node N -m kizuna.apps.cli
eval ...) the encoding is sharded over the ranks and gives the same numbers as one process.
See docs/EVALUATION.md (in kizuna's source repository) for what each metric means.
"""
from __future__ import annotations

import argparse
import os

from kizuna.apps.common import (add_loader_timeout_argument, add_model_argument, add_progress_argument,
                               add_threads_argument, check_out_outside_data, check_writable, device_name, folder_path)


def _severities(s: str) -> list[int]:
    """--severities: ImageNet-C's levels 1..5, each once ("0" ran the defaults; "1,1" counted a level twice)."""
    import argparse

    try:
        levels = [int(x) for x in s.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected distinct levels from 1 to 5, e.g. 1,3,5; got {s!r}") from None
    if not levels or any(not 1 <= v <= 5 for v in levels) or len(set(levels)) != len(levels):
        raise argparse.ArgumentTypeError(f"expected distinct levels from 1 to 5, e.g. 1,3,5; got {s!r}")
    return levels


def _ints(s: str) -> list[int]:
    s = (s or "").strip().lower()
    if s in ("", "none", "0", "off"):
        return []
    try:
        return [int(x) for x in s.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {s!r}") from None


def _count(s: str) -> int:
    """--max-samples / --max-train-samples: an integer >= 0 (0 = all); -5 silently meant "all"."""
    try:
        n = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0 (0 = all), got {s!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0 (0 = all), got {n}")
    return n


def _common(p, dataset_required: bool = True, classification: bool = True):
    add_model_argument(p)
    # --data is every other command's word for its images (`kizuna train`, `kizuna vit ...`); without it here,
    # argparse called --data "ambiguous" (a prefix of --dataset and --dataset-name)
    p.add_argument("--dataset", "--data", dest="dataset", required=dataset_required,
                   help="dataset folder (CLIP_benchmark WebDataset root, ImageFolder tree) or CSV file")
    p.add_argument("--split", default=None,
                   help="split folder to evaluate (default: test, else val/validation, else the folder itself)")
    p.add_argument("--dataset-name", default=None,
                   help="CLIP_benchmark key for bundled class names/templates, e.g. cifar10 (default: folder name)"
                   if classification else "the dataset's name in the report and results.json (default: folder name)")
    if classification:
        p.add_argument("--templates", "--template", dest="templates", action="append", default=None,
                       help="prompt templates: .txt (one per line, with {c}), CLIP_benchmark-style .json, or one "
                            "template with {c}; repeatable, as on `kizuna zeroshot` "
                            "(default: the dataset's zeroshot_classification_templates.txt, else the bundled "
                            "list for --dataset-name, else 'a photo of a {c}.')")
        p.add_argument("--classnames", default=None,
                       help="class names file, one per line in label order (default: the dataset's classnames.txt, "
                            "else the bundled list for --dataset-name, else the ImageFolder folder names)")
        p.add_argument("--cache-dir", type=folder_path, default=None,
                       help="folder for an on-disk cache of class embeddings (.pt) (default: no cache on disk)")
    p.add_argument("--max-samples", type=_count, default=0, help="evaluate the first N images only (0 = all)")
    p.add_argument("--batch-size", type=int, default=64, help="images per batch (default 64)")
    p.add_argument("--num-workers", "--workers", type=int, default=0,
                   help="DataLoader worker processes for decoding (default 0: decode in the main process)")
    add_loader_timeout_argument(p)
    p.add_argument("--image-column", default="filepath", help="CSV: image path column (default filepath)")
    # each task is given the column it reads (a retrieval's --label-column was accepted and did nothing)
    if classification:
        p.add_argument("--label-column", default="label",
                       help="CSV: class index or class name column (default label)")
    else:
        p.add_argument("--caption-column", default="title", help="CSV: caption column (default title)")
    p.add_argument("--name", default=None, help="model label in the report (default: config name or path)")
    p.add_argument("--out", type=folder_path, default=None,
                   help="write results.json, results.md and plots here (default: print the tables only)")
    add_progress_argument(p, "no progress bars")


def add_arguments(p):
    sub = p.add_subparsers(dest="eval_command", metavar="TASK")
    fmt = argparse.RawDescriptionHelpFormatter

    z = sub.add_parser("zeroshot", formatter_class=fmt, help="zero-shot classification (top-1/top-5/per-class)",
                       description=ZEROSHOT_DOC)
    _common(z)

    r = sub.add_parser("retrieval", formatter_class=fmt, help="image<->text retrieval R@1/5/10, median rank",
                       description=RETRIEVAL_DOC)
    _common(r, classification=False)
    r.add_argument("--query-chunk", type=int, default=1024,
                   help="queries per similarity block; smaller uses less memory, same numbers (default 1024)")

    lp = sub.add_parser("linear-probe", formatter_class=fmt,
                        help="linear probe + few-shot on frozen features, vs zero-shot",
                        description=LINEAR_PROBE_DOC)
    _common(lp)
    lp.add_argument("--train-split", default="train",
                    help="split to fit the probe on (default train); for a CSV --dataset, the training CSV file (a "
                         "path, or a file name beside the test CSV)")
    lp.add_argument("--few-shot", type=_ints, default=[1, 2, 4, 8, 16],
                    help="shots per class, comma-separated (default 1,2,4,8,16; 'none' or 0 to skip)")
    lp.add_argument("--seeds", type=int, default=3, help="few-shot draws per k (default 3)")
    lp.add_argument("--max-train-samples", type=_count, default=None,
                    help="use the first N training images (0 = all, as the suite key; default: as many as "
                         "--max-samples)")
    lp.add_argument("--no-zeroshot", action="store_true", help="skip the zero-shot comparison")

    pr = sub.add_parser("probes", formatter_class=fmt,
                        help="robustness (blur/noise/JPEG/contrast), typographic attack, relation swap",
                        description=PROBES_DOC)
    _common(pr, dataset_required=False)
    pr.add_argument("--severities", type=_severities, default=None,
                    help="corruption severities 1..5 (default 1,3,5); the robustness probe, which needs --dataset")
    pr.add_argument("--corruptions", default=None,
                    help="comma-separated subset of gaussian_blur,gaussian_noise,jpeg,contrast (default all)")
    pr.add_argument("--no-robustness", action="store_true",
                    help="skip the corruption probe (blur, noise, JPEG, contrast on --dataset's images)")
    pr.add_argument("--no-typographic", action="store_true",
                    help="skip the typographic attack (a wrong class name written on --dataset's images)")
    pr.add_argument("--no-relation-swap", action="store_true",
                    help="skip the relation-swap probe on synthetic scenes ('A left of B' vs 'B left of A')")
    pr.add_argument("--relation-groups", type=int, default=100, help="relation-swap groups (default 100)")

    s = sub.add_parser("suite", formatter_class=fmt, help="run a suite file of (model, dataset, task) runs",
                       description=_suite_doc())
    s.add_argument("file", help="suite file: .json or .py (format described above)")
    s.add_argument("--out", type=folder_path, default=None,
                   help="output folder for results.json, results.md and plots (default: the file's 'out'; "
                        "without either the tables are only printed)")
    s.add_argument("--device", type=device_name, default=None,
                   help="device for every run, in place of the suite file's (default: the file's, else cuda if "
                        "available)")
    s.add_argument("--allow-jit", action="store_true",
                   help="let the runs whose \"allow_jit\" is true load TorchScript archives, which execute code when "
                        "loaded: a suite file cannot consent to that alone (only with a suite and models you trust)")
    add_threads_argument(s)
    add_loader_timeout_argument(s)
    add_progress_argument(s, "no progress bars")


def _suite_doc() -> str:
    from . import suite

    return ("Run every (model, dataset, task) of a suite file; write one results.json, results.md and plots.\n\n"
            "  kizuna eval suite suite.json --out eval_results\n\n" + (suite.__doc__ or ""))


ZEROSHOT_DOC = """Zero-shot classification with a prompt ensemble: top-1, top-5, mean per-class recall, a per-class
table and a confusion-matrix plot. With --out: results.json, results.md and confusion-matrix PNGs.

  kizuna eval zeroshot --model runs/demo/checkpoints/best --dataset ../shared/data/cifar10 --out runs/eval/c10
"""

RETRIEVAL_DOC = """Image->text and text->image retrieval with several captions per image: R@1/5/10 and median rank,
computed in chunks (exact). With --out: results.json and results.md.

  kizuna eval retrieval --model runs/f8k/checkpoints/best --dataset ../shared/data/flickr8k --out runs/eval/f8k
"""

LINEAR_PROBE_DOC = """Multinomial logistic regression on frozen image features (L-BFGS, L2 chosen on a validation split
carved from train), few-shot probes with k examples per class (mean +- std over seeds), compared with
zero-shot in a table. With --out: results.json, results.md and a zero-shot vs probe plot.

  kizuna eval linear-probe --model runs/demo/checkpoints/best --dataset ../shared/data/cifar10 --few-shot 1,4,16 \\
      --out runs/eval/c10-probe
"""

PROBES_DOC = """Zero-shot accuracy under blur, noise, JPEG and contrast shifts and a typographic attack (a wrong class
name written on each image), both on --dataset's images; Winoground-style relation-swap scores on
synthetic scenes (needs no --dataset). With --out: results.json, results.md and robustness plots.

  kizuna eval probes --model runs/demo/checkpoints/best --dataset ../shared/data/cifar10 --out runs/eval/probes
  kizuna eval probes --model runs/demo/checkpoints/best            # relation swap only
"""


def _entry(args, task) -> dict:
    from kizuna.apps.cli import text_argument

    for k in ("dataset_name", "image_column", "label_column", "caption_column", "name"):  # text, not paths:
        if getattr(args, k, None) is not None:  # as UTF-8 under any locale (LC_ALL=C gave them as surrogates)
            setattr(args, k, text_argument(getattr(args, k)))
    e = {"model": args.model, "dataset": args.dataset, "task": task, "split": args.split,
         "dataset_name": args.dataset_name, "max_samples": args.max_samples, "batch_size": args.batch_size,
         "num_workers": args.num_workers, "device": args.device, "image_column": args.image_column,
         "label_column": getattr(args, "label_column", "label"),
         "caption_column": getattr(args, "caption_column", "title"), "allow_jit": args.allow_jit,
         "precision": args.precision, "act": args.act}  # --act was parsed and then dropped: GELU files ran QuickGELU
    for k in ("templates", "classnames", "cache_dir"):
        if getattr(args, k, None) is not None:
            e[k] = getattr(args, k)
    if e.get("templates") is not None:  # files and single templates, as given; one file stays its path
        from .datasets import default_dataset_name, template_arguments

        # a CLIP_benchmark .json pooled with other templates is read here, under the name load_dataset would use
        e["templates"] = template_arguments(e["templates"], args.dataset_name or default_dataset_name(args.dataset))
    if args.name:
        e["name"] = args.name
    # a CSV's column flags for a folder, the command's only data, did nothing (a suite's defaults may name them for
    # its CSV runs: not checked there); a training split given as a CSV file reads them
    folder = os.path.isdir(os.path.expanduser(str(args.dataset)))
    if folder and not str(getattr(args, "train_split", None) or "").lower().endswith((".csv", ".tsv")):
        from .datasets import refuse_csv_columns

        refuse_csv_columns(args.dataset, e["image_column"], e["label_column"], e["caption_column"])
    return e


def run(args):
    from kizuna.train.distributed import finish_distributed, init_distributed

    cmd = getattr(args, "eval_command", None)
    if not cmd:
        raise ValueError("choose a task: zeroshot, retrieval, linear-probe, probes or suite (see kizuna eval --help)")
    out = getattr(args, "out", None)
    if out:  # a file or an unwritable place was found only after the whole evaluation, before
        check_writable(out, "the results")
        # an --out inside an ImageFolder --dataset became a class of the next run (its confusion PNG an image)
        check_out_outside_data(out, "--dataset", getattr(args, "dataset", None))
    cache = getattr(args, "cache_dir", None)
    if cache:  # likewise its class cache
        check_out_outside_data(cache, "--dataset", getattr(args, "dataset", None), "--cache-dir")
    info = init_distributed(getattr(args, "device", None))
    code = _run(args, cmd, info)
    finish_distributed()  # under torchrun: after rank 0 wrote the results
    return code


def _run(args, cmd, info):
    from .suite import check_run_values, results_folder_lock, run_entry, run_suite, write_results
    from .encode import is_main

    progress = not args.no_progress
    if cmd == "suite":
        device = args.device
        if info.enabled:
            device = str(info.device)
        run_suite(args.file, out_dir=args.out, device=device, progress=progress, allow_jit=args.allow_jit)
        return 0
    if info.enabled:
        args.device = str(info.device)
    if cmd == "zeroshot":
        entries = [_entry(args, ["zeroshot_classification"])]
    elif cmd == "retrieval":
        entries = [{**_entry(args, ["zeroshot_retrieval"]), "query_chunk": args.query_chunk}]
    elif cmd == "linear-probe":
        if args.no_zeroshot:  # they shape the zero-shot comparison only: accepted, they did nothing
            unused = [flag for flag, key in (("--templates", "templates"), ("--cache-dir", "cache_dir"))
                      if getattr(args, key, None) is not None]
            if unused:
                raise ValueError(f"{', '.join(unused)}: set{'s' if len(unused) == 1 else ''} the zero-shot "
                                 "comparison, which --no-zeroshot switches off: drop one or the other")
        e = _entry(args, ["linear_probe"])
        e.update(train_split=args.train_split, few_shot=args.few_shot, seeds=args.seeds,
                 zeroshot=not args.no_zeroshot)
        entries = [e]
        if args.max_train_samples is not None:  # 0 meant "as --max-samples" here and "all" in a suite
            e["max_train_samples"] = args.max_train_samples
    else:  # probes
        # (--no-robustness first: with it, "pass --dataset DIR" led to this second refusal)
        if args.no_robustness and (args.severities is not None or args.corruptions):  # they did nothing
            raise ValueError("--severities / --corruptions set the robustness probe, which --no-robustness switches "
                             "off: drop one or the other")
        if not args.dataset and (args.severities is not None or args.corruptions):
            # they shape the robustness probe, which runs on --dataset's images: without it they did nothing
            raise ValueError("--severities / --corruptions set the robustness probe, which runs on the images of "
                             "--dataset: pass --dataset DIR (without it only the relation-swap probe runs)")
        tasks = ([] if args.no_robustness or not args.dataset else ["robustness"]) + \
                ([] if args.no_typographic or not args.dataset else ["typographic"]) + \
                ([] if args.no_relation_swap else ["relation_swap"])
        if not tasks:
            raise ValueError("nothing to do: every probe is switched off (or --dataset is missing)")
        if tasks == ["relation_swap"]:
            # they shape the dataset's probes; the relation swap draws its own scenes: a names file that did not
            # exist was accepted, and --dataset D with both of its probes off did nothing
            unused = [flag for flag, key, default in (
                ("--dataset", "dataset", None), ("--split", "split", None), ("--dataset-name", "dataset_name", None),
                ("--templates", "templates", None), ("--classnames", "classnames", None),
                ("--cache-dir", "cache_dir", None), ("--max-samples", "max_samples", 0),
                ("--image-column", "image_column", "filepath"), ("--label-column", "label_column", "label"))
                if getattr(args, key, default) != default]
            if unused:
                why = ("--no-robustness and --no-typographic switch off the probes that read it" if args.dataset
                       else "they shape the robustness and typographic probes, which run on --dataset's images")
                raise ValueError(f"{', '.join(unused)}: only the relation-swap probe runs, on scenes of its own "
                                 f"({why}); drop {'it' if len(unused) == 1 else 'them'}")
        e = _entry(args, tasks)
        e.update(severities=args.severities or [1, 3, 5], relation_groups=args.relation_groups)
        if args.corruptions is not None:
            e["corruptions"] = list(dict.fromkeys(c.strip() for c in args.corruptions.split(",") if c.strip()))
            if not e["corruptions"]:  # an empty list is "all" to the suite: "," ran every corruption
                raise ValueError(f"--corruptions {args.corruptions!r} names no corruption; leave it out for all of them")
        entries = [e]
    records = []
    with results_folder_lock(args.out):  # (another command writing into --out: refused)
        for e in entries:
            check_run_values(e, None)  # its flags named: main() says which command
            records += run_entry(e, out_dir=args.out, progress=progress)
        if args.out and is_main():
            path = write_results(records, args.out)
            plots = [p for r in records for p in (r.get("details") or {}).get("plots", [])]  # (as the suite says)
            print(f"\nwrote {path} and {path.with_name('results.md')}" + (f" (figures: {', '.join(plots)})"
                                                                          if plots else ""))
    return 0
