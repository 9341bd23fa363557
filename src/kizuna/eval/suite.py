"""Evaluation suites: many (model, dataset, task) runs, one JSON + Markdown report with plots.

A suite file is JSON or a ``.py`` file:

    {"out": "eval_results",                                 # optional; --out overrides
     "defaults": {"split": "test", "batch_size": 64},        # optional; merged into every run
     "runs": [
       {"model": "runs/demo/checkpoints/best", "dataset": "/data/cifar10", "task": "zeroshot_classification"},
       {"model": "runs/demo/checkpoints/best", "dataset": "/data/flickr8k", "task": "zeroshot_retrieval"},
       {"model": "ViT-B-32", "dataset": "/data/cifar10", "task": ["linear_probe", "probes"],
        "few_shot": [1, 4, 16], "seeds": 2, "max_samples": 2000}
     ]}

(a bare JSON list of runs also works; ``run_suite`` also takes that dict or list itself). A ``.py`` file
defines ``SUITE`` (that dict or list) or a function ``suite()`` returning it - handy for loops over models or
datasets.

Tasks: ``zeroshot_classification`` (alias ``zeroshot``), ``zeroshot_retrieval`` (``retrieval``),
``linear_probe`` (``linear-probe``; includes few-shot and the zero-shot comparison), ``robustness``,
``typographic``, ``relation_swap`` and ``probes`` (= the last three). Run keys: ``model``, ``dataset``,
``task``, and optionally ``name`` / ``pretrained`` (labels in the report), ``split``, ``train_split``,
``dataset_name``, ``templates``, ``classnames``, ``max_samples``, ``max_train_samples``, ``batch_size``, ``num_workers``,
``device``, ``precision`` ("fp32" or "bf16"), ``act`` ("gelu" for an OpenCLIP checkpoint in the OpenAI layout),
``few_shot``, ``seeds``, ``corruptions``, ``severities``, ``relation_groups``,
``cache_dir``, ``index_cache_dir``, ``query_chunk``, ``image_column``, ``label_column``, ``caption_column``,
``zeroshot`` (false: no zero-shot comparison in the linear probe), ``allow_jit`` (true: the run's model may be a
TorchScript archive, which runs code as it loads; the command's ``--allow-jit`` must consent as well). Any other key
is an error.

Output in ``out``: ``results.json`` - a list of records with CLIP_benchmark's fields
``{"dataset", "model", "pretrained", "task", "metrics", "language": "en"}`` (plus ``details``: split,
counts, skips, per-class table...), ``results.md`` - one Markdown table per task, and the plots
(confusion matrices, zero-shot vs linear probe, robustness curves).

Under ``torchrun`` every rank runs the suite; encoding is sharded and gathered, so all ranks compute
identical metrics, and rank 0 alone writes and prints.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import runpy
import time
from collections.abc import Callable
from pathlib import Path

from kizuna.apps.common import (check_out_outside_data, check_writable, home_path, json_safe, names_a_preset,
                                parts_below)
from kizuna.models.checkpoint import atomic_write_texts, drawn, save_figure

from .datasets import DatasetError, in_suite_words, is_file_argument, is_one_template, with_caller_flags
from .encode import is_main

__all__ = ["TASK_ALIASES", "check_run_values", "load_suite", "markdown_report", "normalise_suite", "run_entry",
           "run_suite", "write_results"]

TASK_ALIASES = {
    "zeroshot_classification": "zeroshot_classification", "zeroshot": "zeroshot_classification",
    "classification": "zeroshot_classification",
    "zeroshot_retrieval": "zeroshot_retrieval", "retrieval": "zeroshot_retrieval",
    "linear_probe": "linear_probe", "linear-probe": "linear_probe", "few_shot": "linear_probe",
    "robustness": "robustness", "typographic": "typographic", "relation_swap": "relation_swap",
    "winoground": "relation_swap", "probes": "probes",
}
# Columns of the Markdown tables, per task (other metrics stay in the JSON).
TABLE_COLUMNS = {
    "zeroshot_classification": ["acc1", "acc5", "mean_per_class_recall"],
    "zeroshot_retrieval": ["image_to_text_R@1", "image_to_text_R@5", "image_to_text_R@10", "text_to_image_R@1",
                           "text_to_image_R@5", "text_to_image_R@10", "image_to_text_median_rank",
                           "text_to_image_median_rank"],
    "linear_probe": ["zeroshot_acc1"] + [f"fewshot_{k}_acc1_mean" for k in (1, 2, 4, 8, 16)] + ["lp_acc1"],
    "robustness": ["clean_acc1", "gaussian_blur_acc1", "gaussian_noise_acc1", "jpeg_acc1", "contrast_acc1",
                   "shifted_acc1", "shifted_drop"],
    "typographic": ["clean_acc1", "attacked_acc1", "drop", "follow_rate", "follow_rate_of_correct"],
    "relation_swap": ["text_score", "image_score", "group_score", "caption_acc"],
}
# Every key a run may hold (a misspelt one is an error, not a silently ignored setting).
RUN_KEYS = frozenset({
    "model", "dataset", "task", "name", "pretrained", "split", "train_split", "dataset_name", "templates", "classnames",
    "max_samples", "max_train_samples", "batch_size", "num_workers", "device", "precision", "few_shot", "seeds",
    "corruptions", "severities", "relation_groups", "cache_dir", "index_cache_dir", "image_column", "label_column",
    "caption_column", "allow_jit", "zeroshot", "query_chunk", "act"})
_RANK_METRICS = ("median_rank", "mean_rank", "lp_l2", "lp_C", "groups", "zeroshot_matches_k_shot")


# ----------------------------------------------------------------------------------- suite files
def load_suite(path) -> dict:
    """-> ``{"out": str | None, "runs": [dict, ...]}`` with defaults merged and tasks normalised."""
    return normalise_suite(_read_suite(path), str(path))


_NO_SUITE = object()


def _read_suite(path):
    """A suite file's dict or list of runs, as written."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder; a suite is a .json or .py file")
    if not path.is_file():
        raise FileNotFoundError(f"suite file not found: {path}")
    if path.suffix == ".py":
        from kizuna.train.config import imports_beside, user_code_error

        # (a module beside it imported, as a .py training config may: "No module named 'common'")
        with imports_beside(path):
            try:
                ns = runpy.run_path(str(path))
                obj = ns["suite"]() if callable(ns.get("suite")) else ns.get("SUITE", _NO_SUITE)
            except SyntaxError as e:  # a traceback (exit 1) pointed into runpy
                raise ValueError(f"{path}:{e.lineno}: {e.msg} (a Python suite file must run)") from None
            except Exception as e:  # noqa: BLE001 - the user's code (a NameError, 1/0 in suite()): it was a traceback
                raise user_code_error(f"suite {str(path)!r}", path.resolve().parent, e) from e
        if obj is _NO_SUITE:
            raise ValueError(f"{path}: define SUITE = [...] (or {{'runs': [...]}}) or a function suite()")
    else:
        try:
            # bytes: json detects a byte-order mark (UTF-8's, or UTF-16 as PowerShell 5.1's `>` writes), which
            # Windows tools put at the start ("not valid JSON (Unexpected UTF-8 BOM)", "not a text file")
            obj = json.loads(path.read_bytes())
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from None
        except RecursionError:  # [[[[... nested 100000 deep: a traceback out of the JSON decoder
            raise ValueError(f"{path}: not valid JSON (nested too deeply)") from None
        except UnicodeDecodeError:
            raise ValueError(f"{path}: not a text file; a suite is a .json or .py file") from None
    return obj


def normalise_suite(obj, path: str = "the suite") -> dict:
    """A suite's dict (or list of runs) -> ``{"out", "runs"}`` as :func:`load_suite` returns it: defaults merged,
    keys and values checked, tasks as lists of their canonical names. ``path`` names the suite in errors.
    Normalising a normalised suite changes nothing."""
    if isinstance(obj, list):
        obj = {"runs": obj}
    if not isinstance(obj, dict) or not isinstance(obj.get("runs"), list):
        raise ValueError(f"{path}: expected a list of runs or an object with a 'runs' list")
    unknown = sorted(set(obj) - {"out", "defaults", "runs"})
    if unknown:
        raise ValueError(f"{path}: unknown top-level key(s) {', '.join(map(repr, unknown))} "
                         "(known: out, defaults, runs)")
    if not obj["runs"]:  # it ran nothing and said nothing
        raise ValueError(f"{path}: the suite has no runs")
    if not isinstance(obj.get("defaults") or {}, dict):
        raise ValueError(f"{path}: 'defaults' must be an object of run settings, got {obj['defaults']!r}")
    if obj.get("out") is not None and not isinstance(obj["out"], (str, os.PathLike)):
        raise ValueError(f"{path}: 'out' must be a folder name (a string), got {obj['out']!r}")
    if isinstance(obj.get("out"), str) and not obj["out"].strip():  # read as no out: nothing written, rc 0
        raise ValueError(f"{path}: 'out' is empty: give a folder, or leave it out (null) to print the tables only")
    defaults = dict(obj.get("defaults") or {})
    unknown = sorted(set(defaults) - RUN_KEYS)  # (said of "run 0", which did not hold it)
    if unknown:
        raise ValueError(f"{path}: defaults: unknown key(s) {', '.join(map(repr, unknown))} "
                         f"(known: {', '.join(sorted(RUN_KEYS))})")
    check_run_values(dict(defaults), f"{path}: defaults")
    runs = []
    for i, run in enumerate(obj["runs"]):
        if not isinstance(run, dict):
            raise ValueError(f"{path}: run {i} is not an object")
        r = {**defaults, **run}
        unknown = sorted(set(r) - RUN_KEYS)
        if unknown:
            raise ValueError(f"{path}: run {i}: unknown key(s) {', '.join(map(repr, unknown))} "
                             f"(known: {', '.join(sorted(RUN_KEYS))})")
        check_run_values(r, f"{path}: run {i}")
        for key in ("dataset", "classnames", "templates", "cache_dir", "index_cache_dir"):  # as the command line's
            if isinstance(r.get(key), str):  # (a cache and results went into ./~, a names file was "not found")
                r[key] = home_path(r[key])
        missing = [k for k in ("model", "task") if k not in r]
        if missing:
            raise ValueError(f"{path}: run {i} lacks {', '.join(missing)}")
        r["task"] = canonical_tasks(r["task"], f"{path}: run {i}")
        if "dataset" not in r and any(t != "relation_swap" for t in r["task"]):
            raise ValueError(f"{path}: run {i} lacks 'dataset'")
        if "dataset" in r and not Path(os.path.expanduser(str(r["dataset"]))).exists():  # before any run starts
            raise FileNotFoundError(f"{path}: run {i}: dataset not found: {r['dataset']}{_from_here(r['dataset'])}")
        for key in ("classnames", "templates"):  # a typo failed only when its run came up, after the runs before
            value = r.get(key)
            if isinstance(value, (str, os.PathLike)) and not (key == "templates" and is_one_template(value)) \
                    and not is_file_argument(os.path.expanduser(str(value))):
                raise FileNotFoundError(f"{path}: run {i}: {key} file not found: {value}")
        model = home_path(str(r["model"]))
        if model != str(r["model"]):  # as the check takes it, so does the run (it failed there)
            r["model"] = model
        if not Path(model).exists():  # a preset name, or a path with a typo: say so now
            from kizuna.models.presets import CLIP_PRESETS, unknown_model_message

            if model.replace("/", "-") not in CLIP_PRESETS:
                here = _from_here(model) if Path(model).suffix or os.sep in model else ""
                raise ValueError(f"{path}: run {i}: {unknown_model_message(model)}{here}")
        if r.get("act") and names_a_preset(model):
            # refused when its run came up, after the runs before it, in the command line's words (--act, --model)
            raise ValueError(f"{path}: run {i}: \"act\" names the activation of an OpenAI-layout checkpoint; a "
                             f"preset's ({model}) is its own (QuickGELU for the -quickgelu presets, else GELU): drop it")
        runs.append(r)
    return {"out": home_path(obj.get("out")), "runs": runs}


def canonical_tasks(task, where: str) -> list[str]:
    """A run's "task" (a name, an alias or a list of them) as the list of canonical names, a task named twice once;
    ``where`` begins the errors."""
    tasks = task if isinstance(task, list) else [task]
    if not tasks:  # it evaluated nothing, exit 0, and the empty report replaced an earlier one in --out
        raise ValueError(f"{where}: 'task' is an empty list: name at least one (known: {', '.join(sorted(TASK_ALIASES))})")
    for t in tasks:
        if not isinstance(t, str) or t not in TASK_ALIASES:
            raise ValueError(f"{where}: unknown task {t!r} (known: {', '.join(sorted(TASK_ALIASES))})")
    return list(dict.fromkeys(TASK_ALIASES[t] for t in tasks))


def _from_here(value) -> str:
    """For a relative path a suite names that is not there: where it was looked for (the current folder, not the
    suite file's; a suite run from another folder found nothing beside it)."""
    if os.path.isabs(os.path.expanduser(str(value))):
        return ""
    return f" (a suite's relative paths are read from the current folder, {os.getcwd()}, not the suite file's)"


def _whole(value) -> int:
    """A count from a suite file: 2.5 ran as 2 and true as 1 (int() of them), where the command line refuses them."""
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise ValueError(f"{value!r} is not a whole number")
    return int(value)


def _as_list(value, cast=_whole) -> list:
    """A run's list setting given as a list, one number, or a comma-separated string ("1,3,5")."""
    if isinstance(value, str):
        return [cast(v.strip()) for v in value.split(",") if v.strip()]
    if isinstance(value, (list, tuple)):
        return [cast(v) for v in value]
    return [cast(value)]


def check_run_values(r: dict, where: str | None) -> None:
    """Normalise the list settings and refuse values that would fail deep inside a task or give NaN.
    ``where`` names the suite entry; None: the values came from a command line, and its flags are named."""

    def name(key: str) -> str:
        return f"--{key.replace('_', '-')}" if where is None else key

    at = "" if where is None else f"{where}: "
    if where is not None:  # a file's values: a number or a list where text belongs was a TypeError traceback,
        _check_text_values(r, at)  # some after the run's header was printed
    if where is not None and r.get("device") is not None:  # (a command line's --device is checked by argparse)
        import argparse

        from kizuna.apps.common import device_name

        try:
            r["device"] = device_name(str(r["device"]))  # "auto" as the GPU where there is one
        except argparse.ArgumentTypeError as e:  # "mps" or a GPU this machine lacks: a traceback from .to() before
            raise ValueError(f"{at}device {e}") from None
    if isinstance(r.get("few_shot"), (int, str)) and str(r["few_shot"]).strip().lower() in ("0", "none", "off"):
        r["few_shot"] = []  # no few-shot fits, as `--few-shot none` or 0 on the command line (a suite refused them)
    try:
        for key in ("few_shot", "severities"):
            if key in r:
                r[key] = _as_list(r[key])
        if "corruptions" in r and r["corruptions"] is not None:
            r["corruptions"] = _as_list(r["corruptions"], str)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{at}{name('few_shot')} and {name('severities')} take integers ({e})") from None
    minimums = {"batch_size": 1, "seeds": 1, "relation_groups": 1, "query_chunk": 1, "num_workers": 0}
    for key, least in minimums.items():
        if key in r and (not isinstance(r[key], int) or isinstance(r[key], bool) or r[key] < least):
            raise ValueError(f"{at}{name(key)} must be an integer >= {least}, got {r[key]!r}")
    for key in ("max_samples", "max_train_samples"):  # None and 0 mean all; a negative count meant all too
        if r.get(key) is not None and (not isinstance(r[key], int) or isinstance(r[key], bool) or r[key] < 0):
            raise ValueError(f"{at}{name(key)} must be an integer >= 0 (0 = all), got {r[key]!r}")
    for key in ("allow_jit", "zeroshot"):  # bool("false") is True: the string turned TorchScript loading on
        if key in r and not isinstance(r[key], bool):
            raise ValueError(f"{at}{name(key)} must be true or false (a JSON boolean), got {r[key]!r}")
    if r.get("act") is not None and r["act"] not in ("quick_gelu", "gelu"):
        raise ValueError(f"{at}{name('act')} must be quick_gelu or gelu, got {r['act']!r}")
    if "precision" in r:  # checked when its run began: the runs before it were done, and the error named no run
        from kizuna import PRECISIONS

        if r["precision"] not in PRECISIONS:
            raise ValueError(f"{at}{name('precision')} must be one of {', '.join(PRECISIONS)}, got {r['precision']!r}")
    if "corruptions" in r and r["corruptions"] is not None and not r["corruptions"]:
        # [] or "" ran every corruption (the opposite of what it says; the command line refuses its ",")
        raise ValueError(f"{at}{name('corruptions')} names no corruption; leave it out (or null) for all of them")
    if r.get("corruptions"):  # a misspelt name stopped the run only after the clean images were encoded
        from .probes import CORRUPTIONS

        unknown = [c for c in r["corruptions"] if c not in CORRUPTIONS]
        if unknown:
            raise ValueError(f"{at}unknown corruption(s) {', '.join(map(repr, unknown))} "
                             f"(known: {', '.join(CORRUPTIONS)})")
    if any(k < 1 for k in r.get("few_shot", [])):
        raise ValueError(f"{at}{name('few_shot')} takes examples per class >= 1, got {r['few_shot']}")
    if "severities" in r and (not r["severities"] or any(not 1 <= v <= 5 for v in r["severities"])
                              or len(set(r["severities"])) != len(r["severities"])):
        # a level twice weighed it twice in the shifted mean (the command line refuses it too)
        raise ValueError(f"{at}{name('severities')} are distinct levels 1..5, got {r['severities']}")
    if r.get("corruptions"):  # likewise a corruption twice (the command line drops repeats)
        r["corruptions"] = list(dict.fromkeys(r["corruptions"]))


def run_name(r: dict) -> str:
    """A run's "name" as text ("" where it has none): a number or an object was written into results.json as
    such (a reader grouping by model met a dict), and a name of 0 (a .py suite's seed 0) was dropped for the
    model's."""
    name = r.get("name")
    if name is None:
        return ""
    return name if isinstance(name, str) else json.dumps(name, sort_keys=True, default=str)


# ("name" may be any value, written as text; "device" is checked as a device, a torch.device too)
_TEXT_KEYS = ("model", "dataset", "pretrained", "split", "train_split", "dataset_name", "cache_dir",
              "index_cache_dir", "image_column", "label_column", "caption_column")


def _check_text_values(r: dict, at: str) -> None:
    """A suite file's text settings are strings (null: unset); templates and classnames a file name, one
    template, or a list of strings."""
    for key in _TEXT_KEYS:
        if r.get(key) is not None and not isinstance(r[key], (str, os.PathLike)):
            raise ValueError(f"{at}{key} must be a string, got {r[key]!r}")
    for key in ("cache_dir", "index_cache_dir"):  # "" was the current folder (as --cache-dir "" is refused)
        if isinstance(r.get(key), str) and not r[key].strip():
            raise ValueError(f"{at}{key} is empty: give a folder, or leave it out (null)")
    for key in ("templates", "classnames"):  # (a Python suite's templates may be functions of the class name)
        value = r.get(key)
        if value is not None and not isinstance(value, (str, os.PathLike)) and not (
                isinstance(value, (list, tuple)) and all(isinstance(v, str) or callable(v) for v in value)):
            raise ValueError(f"{at}{key} must be a file name or a list of strings, got {value!r}")


# ----------------------------------------------------------------------------------- running
def _slug(s: str) -> str:
    """A file-name-safe form of a run's or dataset's name: accents dropped (café -> cafe); a name with no ASCII
    letter or digit left (日本データ) is "x" and a short hash of it, so two such names get files of their own (all
    were "x", "x_2", ... in the order the suite ran them)."""
    import hashlib
    import unicodedata

    text = unicodedata.normalize("NFKD", str(s)).encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[-60:]
    if slug.strip("._-"):
        return slug
    return "x" + hashlib.sha1(str(s).encode("utf-8", "surrogatepass")).hexdigest()[:8]


class _Context:
    """Models and datasets loaded once per suite; a model is let go after the last run that uses it (a suite over
    20 checkpoints held all 20 until it ended: 12 GB of ViT-B/32 weights)."""

    def __init__(self, device=None):
        self.device = device
        self.models: dict = {}
        self.datasets: dict = {}
        self.features: dict = {}
        self.plots: set[str] = set()  # case-folded: Demo__x.png and demo__x.png are one file on macOS and Windows

    def plot_path(self, out_dir: Path, name: str) -> Path:
        """``out_dir/name``, numbered when an earlier run of the suite wrote a plot of that name."""
        stem, suffix, n = Path(name).stem, Path(name).suffix, 1
        path = out_dir / name
        while str(path).casefold() in self.plots:
            n += 1
            path = out_dir / f"{stem}_{n}{suffix}"
        self.plots.add(str(path).casefold())
        return path

    def model_args(self, r: dict) -> tuple:
        """Run ``r``'s (spec, device, allow_jit, precision, act): what :func:`run_entry` passes to :meth:`model`,
        and the key the model is kept under."""
        import torch

        device = r.get("device") or self.device or ("cuda" if torch.cuda.is_available() else "cpu")
        return str(r["model"]), str(device), bool(r.get("allow_jit", False)), r.get("precision", "fp32"), r.get("act")

    def release_models(self, keep: set) -> None:
        """Let go of the models whose keys are not in ``keep`` (those of the runs still to come)."""
        gone = [key for key in self.models if key not in keep]
        for key in gone:
            del self.models[key]
        if gone:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    def model(self, spec: str, device, allow_jit: bool = False, precision: str = "fp32", act: str | None = None):
        # a run that refuses JIT archives is not served one loaded for another, nor a GELU run a QuickGELU model
        key = (spec, str(device), allow_jit, precision, act)  # in model_args' order
        if key not in self.models:
            import torch

            import kizuna
            from kizuna.train.optim import announce_precision

            announce_precision(precision, torch.device(device), is_main())
            from kizuna.apps.common import checked_clip_model, create_model_for_command

            m = create_model_for_command(spec, allow_jit=allow_jit, precision=precision, act=act)
            m = checked_clip_model(m, spec, is_main=is_main()).to(device).eval()
            self.models[key] = (m, kizuna.get_tokenizer(m))
        return self.models[key]

    def dataset(self, r: dict, split: str | None, task: str | None, max_samples: int | None = None):
        from .datasets import load_dataset

        max_samples = int((r.get("max_samples") if max_samples is None else max_samples) or 0)
        # (repr: a Python suite's templates may be functions of the class name, which JSON has no text for)
        key = (str(r["dataset"]), split, task, r.get("dataset_name"), json.dumps(r.get("classnames"), default=repr),
               json.dumps(r.get("templates"), default=repr), max_samples, r.get("image_column"), r.get("label_column"),
               r.get("caption_column"), r.get("index_cache_dir"))
        if key not in self.datasets:
            self.datasets[key] = load_dataset(
                r["dataset"], split=split, task=task, dataset_name=r.get("dataset_name"),
                classnames=r.get("classnames"), templates=r.get("templates"), max_samples=max_samples,
                image_column=r.get("image_column", "filepath"), label_column=r.get("label_column", "label"),
                caption_column=r.get("caption_column", "title"), cache_dir=r.get("index_cache_dir"))
        return self.datasets[key]


def _record(r: dict, model, dataset_name: str, task: str, metrics: dict, details: dict) -> dict:
    spec = str(r["model"])
    pretrained = r.get("pretrained")
    if pretrained is None:
        from kizuna.apps.common import is_preset_spec

        pretrained = "random_init" if is_preset_spec(spec) else spec
    name = run_name(r) or (model.cfg.name if getattr(model.cfg, "name", "") else spec)
    details = {**details, "precision": r.get("precision", "fp32")}
    return json_safe({"dataset": dataset_name, "model": name, "pretrained": pretrained, "task": task,
                      "metrics": metrics, "language": "en", "details": details})


def run_tasks(r: dict) -> list[str]:
    """A run's tasks in order: "probes" is the three probes; a task named twice (an alias of it, or inside
    "probes") runs once (a second "probes" reached no task and lost the run's records after its work, a second
    "zeroshot" ran again)."""
    return list(dict.fromkeys(t for task in r["task"] for t in (
        ("robustness", "typographic", "relation_swap") if task == "probes" else (task,))))


_TASK_DATA = {"zeroshot_classification": "classification", "robustness": "classification",
              "typographic": "classification", "linear_probe": "classification", "zeroshot_retrieval": "retrieval"}


def check_run_datasets(r: dict, ctx: "_Context", tasks: list[str] | None = None) -> None:
    """Index (into ``ctx``, where the run then finds them) and check every dataset run ``r``'s tasks read."""
    tasks = run_tasks(r) if tasks is None else tasks
    for task in tasks:
        if task in _TASK_DATA:
            ds = ctx.dataset(r, r.get("split"), _TASK_DATA[task])
            if task == "typographic" and ds.num_classes < 2:
                raise ValueError(f"{ds.name}: the typographic attack needs at least two classes (it writes a wrong "
                                 f"class name on each image); this dataset has {ds.num_classes}")
            if task == "typographic":  # class names no font here draws: refused before the run's other tasks
                from .probes import font_for  # (the robustness probe ran, then the suite ended with nothing kept)

                font_for(ds.classnames)
    if "linear_probe" in tasks:
        _probe_splits(r, ctx)


def _probe_splits(r: dict, ctx: "_Context"):
    """The linear probe's (train, test) datasets, checked: separate splits, and a class with 2 or more training
    images (its L2 is chosen on a validation split carved from them: it failed after the test split was encoded,
    as "too few training samples", naming no setting)."""
    import numpy as np

    try:  # the split that failed is the training one: its advice named --split, which changed nothing
        train = ctx.dataset(r, r.get("train_split", "train"), "classification",
                            max_samples=r.get("max_train_samples", r.get("max_samples")))
    except DatasetError as e:
        raise DatasetError(with_caller_flags(e, "--train-split")) from None
    test = ctx.dataset(r, r.get("split"), "classification")
    if parts_below(test.source, train.source) == ():  # (a path spelt two ways, `Pets` and `pets` on macOS: one)
        raise DatasetError(f"{r['dataset']}: the linear probe needs separate train and test splits "
                           f"(found only {test.source})" + ("; a CSV is one split: for the training CSV pass "
                                                            "--train-split FILE.csv" if test.layout == "csv" else ""))
    labels = np.asarray(train.labels)
    known = labels[labels >= 0]
    if not len(known) or np.bincount(known).max() < 2:
        key = "max_train_samples" if r.get("max_train_samples") is not None else "max_samples"  # the cap's own
        flag, cap = f"--{key.replace('_', '-')}", r.get(key)
        raise DatasetError(f"{train.source}: the linear probe's {len(labels)} training image(s) have no class "
                           "with 2 or more, which it needs to hold some out to choose its L2"
                           + (f"; raise {flag} (now {cap})" if cap else ""))
    # a test class the training split lacks: refused here, not after both splits were encoded
    from .linear_probe import _test_labels_in_train_order

    _test_labels_in_train_order(train, test)
    return train, test


def run_entry(r: dict, ctx: _Context | None = None, out_dir=None, progress: bool = True,
              echo: Callable[[str], None] | None = print) -> list[dict]:
    """Evaluate one run (all its tasks); returns its records, writes plots to ``out_dir``."""
    from .classification import evaluate_zeroshot
    from .encode import encode_images
    from .linear_probe import evaluate_linear_probe, zeroshot_over_train_classes
    from .probes import evaluate_robustness, relation_swap_probe, typographic_attack
    from .retrieval import evaluate_retrieval

    ctx = ctx or _Context()
    say = echo if (echo and is_main()) else (lambda s: None)
    # its tasks as a suite file's: aliases ("zeroshot") and one task as a string were "unknown task 'z'" here, after
    # the model had loaded (the rest of a run is the caller's: the eval commands' own checks, a suite's)
    r = {**r, "task": canonical_tasks(r.get("task"), "the run")}
    tasks = run_tasks(r)
    split = r.get("split")
    # every dataset the run reads, indexed and checked before the model loads and any task's work: a task whose
    # data did not fit (retrieval on a classification set, a split that is not there) failed after the others
    check_run_datasets(r, ctx, tasks)
    args = ctx.model_args(r)
    device = args[1]
    model, tokenizer = ctx.model(*args)
    bs, nw = int(r.get("batch_size", 64)), int(r.get("num_workers", 0))
    out_dir = Path(out_dir) if out_dir else None
    records = []
    stem = _slug(run_name(r) or Path(str(r["model"])).name)
    who = run_name(r) or short_spec(str(r["model"]))  # as the figures' titles name the model
    common = dict(batch_size=bs, device=device, num_workers=nw, progress=progress)
    clean_cache: dict = {}

    def clean_features(ds):
        k = id(ds)
        if k not in clean_cache:
            clean_cache[k] = encode_images(model, ds, desc=f"{ds.name}: images", **common)
        return clean_cache[k]

    zs_acc: dict = {}
    for task in tasks:
        t0 = time.perf_counter()  # a duration: the wall clock can step (NTP)
        if task == "zeroshot_classification":
            ds = ctx.dataset(r, split, "classification")
            say(ds.describe())
            res = evaluate_zeroshot(model, tokenizer, ds, cache_dir=r.get("cache_dir"), image_features=clean_features(ds),
                                    **common)
            zs_acc[id(ds)] = res.metrics["acc1"]
            say(res.summary())
            say(res.table())
            details = {"split": ds.split, **res.to_dict(), "templates_source": ds.templates_source,
                       "classnames_source": ds.classnames_source}
            details.pop("metrics")
            if out_dir and is_main():
                details["plots"] = drawn(res.plot_confusion, ctx.plot_path(
                    out_dir, f"{stem}__{_slug(ds.name)}__confusion.png"), _NUMBERS_KEPT, model=who)
            metrics = res.metrics
            name = ds.name
        elif task == "zeroshot_retrieval":
            ds = ctx.dataset(r, split, "retrieval")
            say(ds.describe())
            res = evaluate_retrieval(model, tokenizer, ds, image_features=clean_features(ds),
                                     query_chunk=int(r.get("query_chunk", 1024)), **common)
            say(res.summary())
            details = {"split": ds.split, **res.to_dict()}
            details.pop("metrics")
            metrics, name = res.metrics, ds.name
        elif task == "linear_probe":
            train, test = _probe_splits(r, ctx)  # (indexed and checked by check_run_datasets)
            say(f"train: {train.describe()}\ntest:  {test.describe()}")
            # The suite's own zero-shot task scored the test split over its classes: reused beside the probe only
            # where they are the training split's (a test split lacking a class gave 100% over one class there)
            same_classes = list(train.classnames or ()) == list(test.classnames or ())
            wanted = r.get("zeroshot", True)  # false: no zero-shot row, also where the run's own task scored it
            zeroshot = zs_acc.get(id(test)) if same_classes and wanted else None
            if zeroshot is None and wanted:
                # over the training split's classes, which the probe predicts among: a test split lacking a class
                # scored zero-shot over fewer classes (a higher chance level) than the probe it was compared with
                zeroshot = zeroshot_over_train_classes(
                    model, tokenizer, train, test, clean_features(test), cache_dir=r.get("cache_dir"),
                    batch_size=bs, device=device, progress=progress)
            few = r.get("few_shot", [1, 2, 4, 8, 16])
            res = evaluate_linear_probe(model, train, test, few_shot=few, seeds=int(r.get("seeds", 3)),
                                        zeroshot_acc=zeroshot, test_features=clean_features(test),
                                        **common)
            say(res.table())
            details = {"split": test.split, "train_split": train.split, **res.to_dict()}
            details.pop("metrics")
            if out_dir and is_main():
                details["plots"] = drawn(res.plot, ctx.plot_path(
                    out_dir, f"{stem}__{_slug(test.name)}__zeroshot_vs_probe.png"), _NUMBERS_KEPT,
                    title=f"{r.get('name') or r['model']} on {test.name}")
            metrics, name = res.metrics, test.name
        elif task == "robustness":
            ds = ctx.dataset(r, split, "classification")
            sev = r.get("severities", [1, 3, 5])
            corr = r.get("corruptions") or None
            kw = {"corruptions": corr} if corr else {}
            res = evaluate_robustness(model, tokenizer, ds, severities=[int(s) for s in sev],
                                      clean_features=clean_features(ds), cache_dir=r.get("cache_dir"), **kw, **common)
            say(f"robustness on {ds.name} ({res.n} images):\n{res.table()}")
            details = {"split": ds.split, **res.to_dict()}
            details.pop("metrics")
            if out_dir and is_main():
                details["plots"] = drawn(res.plot, ctx.plot_path(out_dir, f"{stem}__{_slug(ds.name)}__robustness.png"),
                                         _NUMBERS_KEPT, model=who)
            metrics, name = res.metrics, ds.name
        elif task == "typographic":
            ds = ctx.dataset(r, split, "classification")
            res = typographic_attack(model, tokenizer, ds, clean_features=clean_features(ds),
                                     cache_dir=r.get("cache_dir"), **common)
            skips = f"; {res.skipped.report()}" if res.skipped else ""
            say(f"typographic attack on {ds.name} ({res.n} images{skips}):\n{res.table()}")
            details = {"split": ds.split, **res.to_dict()}
            details.pop("metrics")
            metrics, name = res.metrics, ds.name
        elif task == "relation_swap":
            metrics = relation_swap_probe(model, tokenizer, n_groups=int(r.get("relation_groups", 100)),
                                          batch_size=bs, device=device)
            say(f"relation swap (Winoground-style, {int(metrics['groups'])} groups): text {100 * metrics['text_score']:.1f}%  "
                f"image {100 * metrics['image_score']:.1f}%  group {100 * metrics['group_score']:.1f}%  "
                f"(chance 25 / 25 / 16.7)")
            name, details = "synthetic_relation_swap", {}
        else:  # pragma: no cover - load_suite validated the names
            raise ValueError(f"unknown task {task!r}")
        details["seconds"] = round(time.perf_counter() - t0, 2)
        records.append(_record(r, model, name, task, dict(metrics), details))
    return records


def _on_device(obj, device):
    """A suite's runs with ``device`` (--device; a torchrun rank's own) in place of the device they name, as --out
    replaces the file's "out": a file's "device": "cuda" put every rank on cuda:0, and on a machine without one
    failed advising the --device cpu given."""
    if not device:
        return obj
    runs = obj if isinstance(obj, list) else obj.get("runs") if isinstance(obj, dict) else None
    if not isinstance(runs, list):
        return obj  # refused by normalise_suite
    runs = [{**r, "device": str(device)} if isinstance(r, dict) else r for r in runs]  # (a torch.device too)
    if isinstance(obj, list):
        return runs
    defaults = obj.get("defaults")  # (checked on their own: "device": "cuda" there was refused beside --device cpu)
    if isinstance(defaults, dict) and "device" in defaults:
        obj = {**obj, "defaults": {**defaults, "device": str(device)}}
    return {**obj, "runs": runs}


def run_suite(path_or_suite, out_dir=None, device=None, progress: bool = True,
              echo: Callable[[str], None] | None = print, allow_jit: bool = False) -> list[dict]:
    """Run every entry of a suite file (or an already loaded ``{"runs": [...]}`` or list of runs) and write the
    report. ``allow_jit``: the caller's consent to the runs whose "allow_jit" is true (TorchScript archives run
    code as they load); without it such a suite is refused: a JSON file, which reads as data, turned it on alone."""
    if isinstance(path_or_suite, (dict, list)):  # normalised as a file's: its defaults, aliases and checks ran too
        suite = normalise_suite(_on_device(path_or_suite, device))
    else:
        suite = normalise_suite(_on_device(_read_suite(path_or_suite), device), str(path_or_suite))
    jit_runs = [i for i, r in enumerate(suite["runs"]) if r.get("allow_jit")]
    if jit_runs and not allow_jit:
        raise ValueError(f"run {jit_runs[0]}: \"allow_jit\": true lets its model load a TorchScript archive, which "
                         "executes code when loaded, and a suite file cannot consent to that alone: pass --allow-jit "
                         "as well (Python: run_suite(..., allow_jit=True)), only if you trust the suite and its models")
    out_dir = out_dir or suite.get("out")
    if out_dir:  # before the first run: the suite file's "out" was never checked (a file failed after all the
        # work, as "[Errno 17] File exists"), and an out inside a run's ImageFolder dataset became a class of the
        # next suite (its confusion PNG an image), as `eval zeroshot --out` refuses
        check_writable(out_dir, "the suite's results")
        for i, r in enumerate(suite["runs"]):
            check_out_outside_data(out_dir, f"run {i}'s dataset", r.get("dataset"))
    for i, r in enumerate(suite["runs"]):  # a run's class cache likewise (it became a class "cache")
        check_out_outside_data(r.get("cache_dir"), f"run {i}'s dataset", r.get("dataset"), "cache_dir")
    ctx = _Context(device)
    # every run's datasets, before the first run: a later run's split typo (or retrieval on a classification
    # set) was found after the earlier runs' work, and the results.json there was replaced by theirs alone
    for i, r in enumerate(suite["runs"]):
        try:
            check_run_datasets(r, ctx)
        except DatasetError as e:
            raise DatasetError(f"run {i}: {in_suite_words(e)}") from None
    with results_folder_lock(out_dir):
        return _run_all(suite, ctx, out_dir, progress, echo)


@contextlib.contextmanager
def results_folder_lock(out_dir):
    """The results folder held for this command while it evaluates and writes there (the main process's; the
    kernel's lock on OUT/.kizuna-run.lock, as a training run holds its folder): two suites into one --out
    removed each other's figures, and one's results.json then listed a figure that was gone. A second command
    into the folder is refused, naming the first one's process."""
    from kizuna.train.distributed import first_rank

    if not out_dir or not (is_main() and first_rank()):  # (first_rank: also before a process group is set up)
        yield
        return
    from kizuna.train.checkpointing import hold_run_lock, release_run_lock

    key = hold_run_lock(Path(out_dir).expanduser())
    try:
        yield
    finally:
        release_run_lock(key)


def _run_all(suite: dict, ctx, out_dir, progress: bool, echo) -> list[dict]:
    records: list[dict] = []
    written = None  # how many runs results.json holds, once written by this call
    current = 0
    try:
        for i, r in enumerate(suite["runs"]):
            current = i
            if echo and is_main():
                echo(f"\n=== [{i + 1}/{len(suite['runs'])}] {r['model']} | {r.get('dataset', '-')} | "
                     f"{', '.join(r['task'])}")
            try:
                records += run_entry(r, ctx, out_dir=out_dir, progress=progress, echo=echo)
            except DatasetError as e:  # advice in the suite file's keys (`eval suite` has no --split)
                raise DatasetError(f"run {i}: {in_suite_words(e)}") from None
            ctx.release_models({ctx.model_args(later) for later in suite["runs"][i + 1:]})
            if out_dir and is_main():  # after every run: a later run that fails keeps the finished ones
                write_results(records, out_dir)
                written = i + 1
    except BaseException as e:
        # Ctrl-C (or SIGTERM) in run 3 of 3 left 2 records in an --out that had held 3 (a complete earlier
        # result), and only "interrupted" was said. A run that fails (a model that cannot be loaded) ends the
        # suite too, and its error alone did not say which run it was or what results.json kept.
        if out_dir and echo and is_main():
            import sys

            total, results = len(suite["runs"]), Path(out_dir) / "results.json"
            if isinstance(e, Exception):
                # numbered as the suite's errors number runs (from 0, as the file's list), tied to the header
                print(f"run {current} ([{current + 1}/{total}] above, {suite['runs'][current]['model']}) failed",
                      file=sys.stderr)
            print(f"{results} holds {written} of {total} runs (the finished ones)" if written is not None else
                  f"none of the {total} runs finished; {results} was not written"
                  + (" (the one there is from before)" if results.exists() else ""), file=sys.stderr)
        raise
    if out_dir and is_main():
        write_results(records, out_dir)
        if echo:
            plots = [p for r in records for p in (r.get("details") or {}).get("plots", [])]
            echo(f"\nwrote {Path(out_dir) / 'results.json'} and {Path(out_dir) / 'results.md'}"
                 + (f" (figures: {', '.join(plots)})" if plots else ""))
    return records


# ----------------------------------------------------------------------------------- reports
def _fmt(key: str, v) -> str:
    if v is None or (isinstance(v, float) and v != v):  # NaN (e.g. acc5 of < 5 classes; null in the JSON)
        return "-"
    if any(key.endswith(s) for s in _RANK_METRICS):
        return f"{v:g}" if isinstance(v, (int, float)) else str(v)
    return f"{100 * v:.2f}" if isinstance(v, (int, float)) else str(v)


_MARKDOWN_ACTIVE = frozenset("\\`*<>[]|~$")


def markdown_cell(value) -> str:
    """``value`` as the text of one Markdown table cell: a ``|`` escaped (``\\|``, with any backslashes before it
    doubled, so that they stay text) and a line break made a space. A model named ``mu|8`` or a dataset path with
    a newline split its row into extra cells, or ended the table mid-row. So are the characters Markdown acts on
    (a run named ``<b>x</b>`` or ``__init__`` was shown bold, its tags and underscores gone; ``$`` opens GitHub's
    math), but an underscore inside a word, which opens no emphasis (``acc1_std`` stays readable)."""
    text = " ".join(str(value).splitlines())
    out = []
    for i, c in enumerate(text):
        if c == "_":
            inside_a_word = 0 < i < len(text) - 1 and text[i - 1].isalnum() and text[i + 1].isalnum()
            out.append(c if inside_a_word else "\\_")
        else:
            out.append("\\" + c if c in _MARKDOWN_ACTIVE else c)
    return "".join(out)


def markdown_report(records: list[dict]) -> str:
    """One table per task; accuracies and recalls in %, ranks as numbers."""
    lines = ["# Evaluation results", ""]
    for task in dict.fromkeys(r["task"] for r in records):
        recs = [r for r in records if r["task"] == task]
        preferred = TABLE_COLUMNS.get(task, [])
        present = set().union(*(r["metrics"] for r in recs))
        if task == "linear_probe":  # every k the runs probed (3 and 32 shots were left out of the table)
            shots = sorted({int(c.split("_")[1]) for c in present if c.startswith("fewshot_") and c.endswith("_mean")})
            preferred = ["zeroshot_acc1"] + [f"fewshot_{k}_acc1_mean" for k in shots] + ["lp_acc1"]
        cols = [c for c in preferred if c in present] or sorted(present)[:10]
        lines += [f"## {markdown_cell(task)}", "",
                  "| model | pretrained | dataset | " + " | ".join(map(markdown_cell, cols)) + " |",
                  "|" + "---|" * (3 + len(cols))]
        for r in recs:
            cells = [r["model"], r["pretrained"], r["dataset"]] + [_fmt(c, r["metrics"].get(c)) for c in cols]
            lines.append("| " + " | ".join(map(markdown_cell, cells)) + " |")
        plots = [p for r in recs for p in r.get("details", {}).get("plots", [])]
        if plots:
            lines += [""] + [f"![{p}]({p})" for p in plots]
        lines.append("")
    lines.append("Accuracies and recalls in %; ranks 1-based. Full metrics in results.json.")
    return "\n".join(lines) + "\n"


def short_spec(spec: str) -> str:
    """A model spec as a figure names it: a run's checkpoint by its run (``runA/best`` for
    ``runs/runA/checkpoints/best``), another path by its last part, a preset by its name."""
    parts = Path(spec).parts
    if "checkpoints" in parts[:-1]:
        at = len(parts) - 1 - parts[::-1].index("checkpoints")
        return "/".join(parts[max(at - 1, 0):at] + parts[at + 1:at + 2])
    return Path(spec).name or spec


_NUMBERS_KEPT = "; the numbers are in results.json"


def _robustness_scatter(records: list[dict], path: Path) -> Path | None:
    def label(r: dict) -> str:
        # the model's name, and which checkpoint where two runs' names agree (two of "ViT-mu-8" read alike)
        same = [o for o in records if o["task"] == "robustness" and o["model"] == r["model"]]
        if len({str(o["pretrained"]) for o in same}) > 1:
            return f"{r['model']} ({short_spec(str(r['pretrained']))}) / {r['dataset']}"
        return f"{r['model']} / {r['dataset']}"

    pts = [(r["metrics"].get("clean_acc1"), r["metrics"].get("shifted_acc1"), label(r))
           for r in records if r["task"] == "robustness"]
    pts = [p for p in pts if p[0] is not None and p[1] is not None]
    if len(pts) < 2:
        return None
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 5.0), dpi=120)
    ax = fig.subplots()
    for i, (c, s, label) in enumerate(pts):
        ax.scatter([100 * c], [100 * s], color=f"C{i % 10}", label=label, s=30)
    hi = max(100 * max(max(p[0], p[1]) for p in pts), 1) * 1.05
    ax.plot([0, hi], [0, hi], "k--", linewidth=1, label="y = x (no drop)")
    ax.set_xlabel("clean top-1 (%)")
    ax.set_ylabel("shifted top-1, mean over shifts (%)")
    ax.set_title("clean vs shifted accuracy")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.set_layout_engine("tight")  # laid out as it is saved, once save_figure has made every "$" a dollar
    save_figure(fig, path)  # (in place, Ctrl-C left a cut-off PNG)
    return path


def _listed_plots(results: Path) -> set[str]:
    """The plot files a results.json lists (its records' details.plots); none for a file that is not one."""
    try:
        records = json.loads(results.read_text(encoding="utf-8"))
        if isinstance(records, dict):  # `vit eval`'s one record, which lists its plots at the top
            records = [{"details": {"plots": records.get("plots", [])}}]
        names = {p for r in records for p in (r.get("details") or {}).get("plots", [])}
    except (OSError, ValueError, TypeError, AttributeError, RecursionError):
        return set()
    return {n for n in names if isinstance(n, str) and n.endswith(".png") and Path(n).name == n}


def unlisted_plots(out: Path, current: set[str]) -> list[Path]:
    """The plots an earlier results.json in ``out`` listed that the results now written there do not (``current``):
    `eval zeroshot` and `vit eval` into one --out left each other's confusion PNG beside their own results. A user's
    own files, which no results.json lists, stay. Found before the new results.json is written, removed after it
    (:func:`remove_plots`): removed first, a Ctrl-C while the new figures were drawn left the earlier results.json
    naming figures that were gone."""
    return [out / name for name in sorted(_listed_plots(out / "results.json") - current)]


def remove_plots(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


def write_results(records: list[dict], out_dir) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # the plots an earlier results.json here listed that these records do not: an earlier `eval zeroshot --out`
    # on another dataset left its confusion PNG beside results that no longer named it (a user's own files,
    # which no results.json lists, stay)
    stale = unlisted_plots(out, {p for r in records for p in (r.get("details") or {}).get("plots", [])})
    scatter = drawn(lambda path: _robustness_scatter(records, path), out / "robustness_scatter.png", _NUMBERS_KEPT)
    p = out / scatter[0] if scatter else None
    text = markdown_report(records)
    if p is not None:
        text += f"\n![clean vs shifted]({p.name})\n"
    else:  # an earlier suite's scatter (other models) stayed beside this report, as if it were this one's
        stale.append(out / "robustness_scatter.png")
    # results.md first, results.json last: a kill between the two left a new results.json that the interrupted
    # suite's message called "the one there is from before"; both written before either is renamed (a full disk
    # at results.json left this run's results.md beside the last run's results.json)
    atomic_write_texts([(out / "results.md", text),
                        (out / "results.json", json.dumps(records, indent=2, allow_nan=False) + "\n")])
    remove_plots(stale)
    return out / "results.json"
