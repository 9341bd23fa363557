"""Classify one or more images against labels you type, and print a ranked table.

  kizuna zeroshot --model runs/demo/checkpoints/best --image a.jpg --labels "cat,dog,car"
  kizuna zeroshot --model ViT-B-32 --image a.jpg b.png --labels labels.txt --template "a photo of a {c}."
"""
from __future__ import annotations

from pathlib import Path

from kizuna.apps.common import add_model_argument, format_table, load_model_from_args, refuse_under_torchrun


def add_arguments(p):
    add_model_argument(p)
    # extend: given twice, both lists (stored, the first was dropped without a word)
    p.add_argument("--image", "--images", dest="image", nargs="+", action="extend", required=True,
                   help="image file(s); repeatable")
    p.add_argument("--labels", required=True, help="comma-separated labels, or a text file with one per line")
    p.add_argument("--template", "--templates", dest="template", action="append", default=None,
                   help="prompt template with {c}, or a .txt/.json file of them as `kizuna eval` takes "
                        "(repeatable; default: 'a photo of a {c}.')")
    p.add_argument("--top", type=int, default=5, help="labels to print per image, most probable first (default 5)")
    p.epilog = "Prints one table per image (label, probability); writes no files."


def parse_labels(spec: str, minimum: int = 2) -> list[str]:
    """The --labels value: comma-separated labels, or a file with one per line. At least ``minimum`` (two to
    choose between, for a prediction: one label came out as 100% of a mistyped file name; compare-runs' run
    labels pass 1)."""
    from kizuna.apps.cli import text_argument
    from kizuna.eval.datasets import is_file_argument, json_names, numbered_lines

    path = Path(spec)
    is_file = is_file_argument(path)  # a pipe too (<(...), /dev/stdin), read once below
    if not is_file:  # labels typed, as UTF-8 text under any locale (a file's name stays as given)
        spec = text_argument(spec)
    if not is_file and "," not in spec and path.suffix.lower() in (".txt", ".csv", ".tsv", ".lst"):
        raise ValueError(f"--labels {spec}: no such file (labels are comma-separated, or a file with one per line)")
    # a file's non-blank lines (candidate labels: no line numbers a class, unlike a class names file)
    if is_file and path.suffix.lower() == ".json":  # a list, as --classnames and --templates take (its lines were
        # read as labels: "[", "\"airplane\",", ...)
        labels = json_names(path, None, "labels")
        if not all(isinstance(label, str) for label in labels):
            raise ValueError(f"--labels {spec}: labels must be strings")
        labels = [label.strip() for label in labels if label.strip()]
    else:
        labels = ([text for _, text in numbered_lines(path)] if is_file
                  else [label.strip() for label in spec.split(",") if label.strip()])
    from collections import Counter

    repeated = sorted(label for label, n in Counter(labels).items() if n > 1)  # labels.count(): 5 s for 20,000
    if repeated:  # two rows of one class would split its probability between them
        raise ValueError(f"--labels: repeated label(s) {', '.join(map(repr, repeated))}")
    if not labels:
        raise ValueError(f"no labels in {spec!r}")
    if len(labels) < minimum:
        named = "" if is_file or "," in spec else " (a folder, not a file of labels)" if path.is_dir() else \
            " (and no file of that name)"
        raise ValueError(f"--labels {spec}: {len(labels)} label ({labels[0]!r}){named}: a prediction needs at least "
                         f"{minimum} to choose between; give them comma-separated or in a file, one per line")
    return labels


def check_label_prompts(tokenizer, labels: list[str], templates: list[str]) -> None:
    """Refuse labels that the model's tokenizer reads alike in every prompt ("Cat" and "cat", "a cat" and
    "a  cat" to CLIP's BPE, which lower-cases and collapses whitespace): parse_labels compares the text,
    and such labels split one probability exactly in half. Tokenizing only, before anything is encoded."""
    from kizuna.eval.zeroshot import same_prompts

    groups = same_prompts(tokenizer, labels, templates)
    if groups:
        shown = "; ".join(" = ".join(repr(labels[k]) for k in group) for group in groups[:5])
        raise ValueError(f"--labels: {shown}{'; ...' if len(groups) > 5 else ''}: the model's tokenizer reads "
                         "them alike in every prompt (CLIP's lower-cases, collapses whitespace and cuts text at its "
                         "context length), so they would split one probability; keep one of each")


def parse_templates(templates: list[str] | None) -> list[str]:
    """The --template values, checked before the model loads: "a {} in {style}" ended in a KeyError
    traceback from filling the prompts, after the model had loaded."""
    from kizuna.eval.datasets import DatasetError, read_templates, template_arguments

    try:
        return read_templates(template_arguments(templates) or ["a photo of a {c}."])
    except DatasetError as e:
        raise ValueError(f"--template: {e}") from None


def run(args):
    refuse_under_torchrun("kizuna zeroshot")
    import torch

    import kizuna
    from kizuna.data.images import load_image
    from kizuna.eval.zeroshot import ZeroShotClassifier

    if args.top < 1:
        raise ValueError(f"--top must be >= 1, got {args.top}")
    labels = parse_labels(args.labels)
    templates = parse_templates(args.template)
    # Fail on a bad file before loading the model. A few images are kept as decoded; many are decoded again a
    # batch at a time (all of them held at full size, and encoded as one batch, took 2 GB for 400 photos of 1 MP)
    images = [load_image(p) for p in args.image] if len(args.image) <= _BATCH else None
    if images is None:
        for p in args.image:
            load_image(p)
    model = load_model_from_args(args)
    preprocess = kizuna.get_preprocess(model)
    tokenizer = kizuna.get_tokenizer(model)
    check_label_prompts(tokenizer, labels, templates)
    clf = ZeroShotClassifier(model, tokenizer, labels, templates, refuse_non_finite=True)
    for start in range(0, len(args.image), _BATCH):
        paths = args.image[start:start + _BATCH]
        decoded = images if images is not None else [load_image(p) for p in paths]
        batch = torch.stack([preprocess(im) for im in decoded]).to(args.device)
        for path, ranked in zip(paths, clf.topk(batch, k=args.top)):
            print(f"\n{path}")
            print(format_table([[lbl, f"{p * 100:.2f}%"] for lbl, p in ranked], ["label", "probability"]))


_BATCH = 32  # images encoded at once
