"""Supervised image classification with a Vision Transformer (Dosovitskiy et al., 2021).

    cfg = SupervisedConfig(model="S/4", image_size=32, data="/data/cifar10/train",
                           val_data="/data/cifar10/test", epochs=30, out="runs/cifar-s4")
    metrics = SupervisedTrainer(cfg).train()     # {"val_top1": ..., "val_loss": ...}

Data: anything :func:`kizuna.eval.datasets.load_dataset` reads as a classification split -
CLIP_benchmark WebDataset shards (``KEY.jpg`` + ``KEY.cls``), an ImageFolder tree (one folder per
class), a side-car folder (``KEY.jpg`` + ``KEY.cls``) or a CSV with a label column. A dataset root
with split folders takes ``data_split`` / ``val_split``. ``subset_fraction`` keeps a fixed,
class-stratified share of the training set (nested: the 10% subset is inside the 30% one).

One optimizer step: per-sample augmentation (crop, flip, RandAugment; seeded per (seed, epoch,
sample)) in the loader's processes, or with ``augment_on="device"`` the same ops on whole batches of
the once-decoded training set on the training device (seeded per (seed, epoch, batch, rank);
:mod:`kizuna.data.batch_augment`), optional Mixup / CutMix (seeded per (seed, step, rank)), soft-target cross-entropy with
label smoothing, backward, gradient clipping, AdamW (or SGD with momentum for fine-tuning), cosine
schedule with linear warmup. bf16 autocast on GPUs since Ampere and on CPUs with AMX or AVX-512 BF16, fp32 elsewhere
unless asked.
Everything a resumed run needs (model, optimizer, scheduler, RNG, data position) is checkpointed, so a
resumed run is bit-identical to an uninterrupted one.

Fine-tuning (``init=CHECKPOINT``): a ViT (or a CLIP model's image tower) is loaded, optionally at a
new ``image_size``, and gets a fresh zero-initialised classifier. ``pos_embed`` says how the
learned position embeddings meet the new patch grid:

* ``"interpolate"`` (the paper's method, Sec. 3.2): 2-D bicubic resampling of the patch-position
  grid, class-token embedding kept (:func:`kizuna.models.vit.resample_pos_embed`);
* ``"sequence"`` (the ablation, ``--no-pos-interp``): the embedding table is reused by *sequence
  index*, as if the longer token sequence were just a longer 1-D sequence - rows ``0..T_old-1``
  kept, rows past the old table zero (or the table truncated when the grid shrinks). Every patch
  of the first ``w_old`` ... positions thus gets an embedding learned for another 2-D location,
  which is exactly why the paper says pre-trained embeddings "may no longer be meaningful";
* ``"grid"``: patch ``(r, c)`` keeps the embedding it had at ``(r, c)`` on the old grid (the image
  corner keeps its meaning, the rest of the grid gets zeros).
"""
from __future__ import annotations

import dataclasses
import math
import shlex
import shutil
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import kizuna
from kizuna.data.augment import ClassificationTrainTransform
from kizuna.data.batch_augment import BatchAugment, TensorBatches, decode_images
from kizuna.data.loader import Collate, make_loader
from kizuna.data.sampler import EpochSampler, with_undecoded_rows
from kizuna.data.sources import PairDataset, SampleIndex, SkipCounter
from kizuna.data.transforms import Preprocess, crop_draft_size
from kizuna.eval.encode import NonFiniteFeatures, summed_skips
from kizuna.models.checkpoint import load_model, load_state_dict_strict, make_temp_folder, save_model
from kizuna.models.clip import ClipModel
from kizuna.models.presets import check_override_types
from kizuna.models.vit import VisionConfig, VisionTransformer, _pair, resample_pos_embed

from .config import alias_keys_as_fields, check_act, check_common, epochs_unused, merge_model_overrides, python_numbers
from .distributed import all_reduce_sum, barrier
from .optim import make_optimizer, param_groups
from .checkpointing import load_resumed_model, swap_folder_in
from .trainer import OUTPUT_CHECK_SAMPLES, Trainer

# Settings that make the model: a resumed run continues with the checkpoint's, so these may not change.
# The subset's seed too: at the same fraction another seed draws as many images (the data-position check passes)
# but other ones, and the saved position would go on through a different subset.
RESUME_FIXED = ("model", "model_overrides", "image_size", "init", "act", "pos_embed", "reset_head", "subset_seed")
# The optimizer's saved state is AdamW's or SGD's: another --optimizer cannot load it (KeyError 'momentum').
RESUME_STATE_FIXED = ("optimizer",)

__all__ = [
    "VIT_MEAN", "VIT_STD", "SupervisedConfig", "SupervisedTrainer", "adapt_pos_embed", "augmentations", "load_for_finetune",
    "source_normalisation",
    "load_classification", "make_supervised_config", "mix_batch", "soft_cross_entropy", "stratified_subset",
    "train_supervised", "vit_preprocess",
]

# The big_vision convention for supervised ViTs: pixels scaled to [-1, 1].
VIT_MEAN = [0.5, 0.5, 0.5]
VIT_STD = [0.5, 0.5, 0.5]
POS_EMBED_MODES = ("interpolate", "sequence", "grid")


@dataclass
class SupervisedConfig:
    # model
    model: str = "S/4"  # ViT variant: "Ti/16", "S/4", "B/16", "hybrid-S/1", "mu/4" (tiny), ...
    model_overrides: dict = field(default_factory=dict)  # VisionConfig fields, e.g. {"depth": 6, "pool": "gap"}
    image_size: int = 32  # input side in pixels; 0 = the checkpoint's own (fine-tuning) or 224 (from scratch)
    init: str = ""  # checkpoint to fine-tune (kizuna ViT or CLIP folder/.safetensors); "" = train from scratch
    act: str = ""  # activation of an OpenAI-layout CHECKPOINT (.pt/.bin) given to `vit finetune`, which the layout does not record: "gelu" for most OpenCLIP (LAION) checkpoints; "" = QuickGELU (OpenAI's), with a warning
    reset_head: bool = True  # fine-tuning: new zero-initialised classifier; false keeps the head, its rows matched to the data's classes by name (refused for other classes)
    pos_embed: str = "interpolate"  # fine-tuning at a new resolution: "interpolate" | "sequence" | "grid"
    # data
    data: str = ""  # training split: shards folder, dataset root, ImageFolder tree, side-car folder or CSV
    data_split: str = "train"  # split folder used when `data` is a dataset root
    val_data: str = ""  # evaluation split ("" = no evaluation)
    val_split: str = ""  # split folder of a --val-data root; "" = val (or validation, valid, dev) where it has one, else test (recorded in train_config.json)
    classnames: str = ""  # class names file (one per line, in label order); "" = found with the data
    image_column: str = "filepath"  # CSV data: the column of image paths (as `kizuna eval --image-column`)
    label_column: str = "label"  # CSV data: the column of class indices or class names
    subset_fraction: float = 1.0  # share of the training set, class-stratified and nested
    subset_seed: int = 0  # seed of the class-stratified subset draw (--subset-fraction)
    val_max_samples: int = 0  # evaluate on the first N validation images; 0 = all
    workers: int = 2  # data-loader processes per rank decoding and augmenting images (0 = in the main process)
    loader_timeout_minutes: float = 10.0  # a run whose loader workers give no batch for this long ends, its last step saved (a hung worker waited for ever); 0 = wait for ever
    # augmentation
    crop: str = "pad"  # "pad" (CIFAR pad-and-crop) | "rrc" (random resized crop) | "none"
    crop_padding: int = 4  # pixels of padding on each side before the random crop (--crop pad)
    crop_scale: tuple = (0.08, 1.0)  # random resized crop only: min,max fraction of the image area kept
    hflip: float = 0.5  # probability of a horizontal flip per image
    randaug_ops: int = 0  # RandAugment N (0 = off)
    randaug_magnitude: float = 9.0  # RandAugment M (0..10)
    mixup: float = 0.0  # Beta(alpha, alpha) for Mixup (0 = off)
    cutmix: float = 0.0  # Beta(alpha, alpha) for CutMix (0 = off); with both, each batch picks one
    mix_prob: float = 1.0  # share of batches mixed when mixup/cutmix are on
    label_smoothing: float = 0.0  # share of the target probability spread evenly over all classes (0 = one-hot)
    augment_on: str = "loader"  # "loader" (PIL per image in worker processes) | "device" (images decoded once onto the training device, whole batches augmented on it)
    # optimisation
    optimizer: str = "adamw"  # "adamw" | "sgd" (momentum; the paper's fine-tuning optimizer)
    batch_size: int = 128  # global batch (all ranks)
    steps: int = 0  # total optimizer steps; 0 = derive from epochs
    epochs: float = 30.0  # passes over the training set (fractions allowed) when --steps is 0 and there is no time budget
    lr: float = 1e-3  # peak learning rate, reached after warm-up, then cosine decay
    min_lr_ratio: float = 0.0  # the cosine decay's floor as a fraction of --lr, reached one step after the last (OpenCLIP's convention)
    warmup_steps: int = 500  # optimizer steps of linear warm-up to --lr (step 1 at lr/N, as OpenCLIP)
    weight_decay: float = 0.05  # weight decay on matrices (not biases, gains, position embeddings); AdamW: decoupled
    betas: tuple = (0.9, 0.999)  # AdamW beta1,beta2 (comma-separated)
    eps: float = 1e-8  # AdamW epsilon (added to the denominator)
    momentum: float = 0.9  # SGD only
    grad_clip: float = 1.0  # clip the global gradient L2 norm to this; 0 = no clipping
    precision: str = "auto"  # "auto" (bf16 on GPUs since Ampere and on CPUs with AMX or AVX-512 BF16, else fp32) | "fp32" | "bf16"
    grad_checkpointing: bool = False  # recompute activations in the backward pass: less memory, slower steps
    compile: bool = False  # torch.compile the model (eager again, with a warning, if compiling fails)
    seed: int = 0  # random seed for the model init, data order and augmentation
    device: str = "auto"  # "auto" (cuda if available, else cpu) | "cpu" | "cuda" | "cuda:N"
    threads: int = 0  # CPU threads for torch (0 = torch's default)
    keep_freed_memory: bool = True  # CPU: keep freed memory (glibc) so steps need not page-fault it in again (kizuna.train.memory)
    # evaluation during training
    eval_every: int = 0  # steps between evaluations; 0 = only at the end
    eval_batch_size: int = 256  # images per evaluation batch (global, all ranks)
    # wall clock (kizuna.train.budget)
    time_budget_minutes: float = 0.0  # plan the steps so the schedule ends in this time (`steps` caps it); 0 = off
    time_limit_minutes: float = 0.0  # hard stop: evaluate, save and end once training has run this long; 0 = none
    # output
    out: str = "runs/vit"  # run folder: model/, checkpoints/, metrics.jsonl, tensorboard/, train_config.json
    save_every: int = 0  # steps between checkpoints; 0 = only at the end
    keep_last: int = 2  # step checkpoints kept in OUT/checkpoints (older ones deleted; best/ is extra)
    log_every: int = 20  # steps between training-metric lines in metrics.jsonl and the console
    resume: str = ""  # "latest" (in --out) or a checkpoint folder; the run's own settings, unless a flag is given
    progress: bool = True  # show a progress bar (false: one console line per logged step instead)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# The paper's fine-tuning recipe, scaled to small runs: what a config with an ``init`` (a checkpoint to fine-tune)
# gets for the fields it does not set, as `kizuna vit finetune` does. image_size 0: the checkpoint's own.
FINETUNE_RECIPE = dict(optimizer="sgd", lr=0.01, weight_decay=0.0, warmup_steps=100, epochs=10.0, image_size=0,
                       randaug_ops=0, mixup=0.0, cutmix=0.0, label_smoothing=0.0)


def make_supervised_config(base: dict | None = None, **overrides) -> SupervisedConfig:
    """A checked :class:`SupervisedConfig`: ``base`` (a config file's dict) with ``overrides`` on top. With an
    ``init`` (a checkpoint to fine-tune) the fields neither sets are :data:`FINETUNE_RECIPE`'s, as `kizuna vit
    finetune` has them: from Python the from-scratch defaults trained a fine-tune with AdamW at 32 px, the
    checkpoint's position embeddings interpolated down to it without a word."""
    fields = {f.name for f in dataclasses.fields(SupervisedConfig)}
    base = drop_file_architecture(dict(base or {}), overrides)
    # --model-overrides merges into a config's (it replaced them: `--config vit_cifar10 --model-overrides
    # '{"depth": 4}'` lost the config's width 96), as `kizuna train` does; another --model drops the config's
    base, overrides = alias_keys_as_fields(dict(base or {}), fields), alias_keys_as_fields(overrides, fields)
    base, overrides = merge_model_overrides(base, overrides, SupervisedConfig.model)
    merged = {**base, **overrides}
    if merged.get("init"):  # (a resume too: the same call resumes the run it started; a fine-tune begun with
        # AdamW before the recipe was the default is refused "--optimizer sgd (the run has adamw)": pass its values)
        merged = {**FINETUNE_RECIPE, **merged}
    unknown = sorted(set(merged) - fields)
    if unknown:
        from kizuna.train.config import TrainConfig

        clip = set(unknown) <= {f.name for f in dataclasses.fields(TrainConfig)}
        raise ValueError(f"unknown ViT training option(s): {', '.join(unknown)}"
                         + ("; they are `kizuna train` options (a CLIP config given to `kizuna vit`?)" if clip else ""))
    cfg = SupervisedConfig(**python_numbers(SupervisedConfig, merged))
    if cfg.pos_embed not in POS_EMBED_MODES:
        raise ValueError(f"pos_embed must be one of {POS_EMBED_MODES}, got {cfg.pos_embed!r}")
    check_act(cfg.act)
    if cfg.act and not cfg.init:
        from .config import overrides_flag

        raise ValueError(f"--act {cfg.act} names the activation of an OpenAI-layout checkpoint given to `kizuna vit "
                         "finetune CHECKPOINT`; a model trained from scratch sets it with "
                         + overrides_flag(cfg.model_overrides, {"act": cfg.act}) + " instead")
    if cfg.optimizer not in ("adamw", "sgd"):
        raise ValueError(f"optimizer must be 'adamw' or 'sgd', got {cfg.optimizer!r}")
    if cfg.augment_on not in ("loader", "device"):
        raise ValueError(f"augment_on must be 'loader' or 'device', got {cfg.augment_on!r}")
    if not 0.0 < cfg.subset_fraction <= 1.0:
        raise ValueError(f"subset_fraction must be in (0, 1], got {cfg.subset_fraction}")
    check_augmentation(cfg)
    check_model_overrides(cfg.model_overrides, None if cfg.init else cfg.model)
    if not (cfg.init or cfg.resume):  # (a resume's model is its checkpoint's)
        check_fresh_model(cfg.model)
    check_common(cfg)
    return cfg


def check_fresh_model(model: str) -> None:
    """A model trained from scratch is a ViT variant ("S/4", "hybrid-S/1"): a checkpoint goes to `vit finetune`, and
    a misspelt variant was refused only once the data was indexed (after --print-config had printed it, exit 0)."""
    if Path(model).exists():
        raise ValueError(f"--model {model} is a checkpoint; fine-tune it with `kizuna vit finetune "
                         f"{shlex.quote(str(model))} ...` (or a config's `init`)")
    from kizuna.models.presets import VIT_SIZES, is_vit_variant

    if not is_vit_variant(model):
        raise ValueError(f"--model {model}: not a ViT variant; expected SIZE/PATCH (e.g. S/16) or hybrid-SIZE/PATCH "
                         f"(e.g. hybrid-S/1), with SIZE one of {', '.join(VIT_SIZES)}")


def unused_flags(cfg: SupervisedConfig) -> list[tuple[str, bool, str]]:
    """`kizuna vit`'s flags that another setting makes unused (:func:`~kizuna.train.config.refuse_unused`)."""
    mixing = cfg.mixup > 0 or cfg.cutmix > 0
    csv = any(ext in path.lower() for path in (cfg.data, cfg.val_data) for ext in (".csv", ".tsv"))
    return [
        epochs_unused(cfg),
        ("betas", cfg.optimizer == "sgd", "AdamW's; --optimizer sgd takes --momentum"),
        ("eps", cfg.optimizer == "sgd", "AdamW's; --optimizer sgd takes --momentum"),
        ("momentum", cfg.optimizer == "adamw", "SGD's; AdamW takes --betas"),
        ("crop_scale", cfg.crop != "rrc", f"it sizes --crop rrc, and the crop is {cfg.crop}"),
        ("crop_padding", cfg.crop != "pad", f"it pads for --crop pad, and the crop is {cfg.crop}"),
        ("mix_prob", not mixing, "it is the share of batches mixed by --mixup/--cutmix, and both are off"),
        ("randaug_magnitude", cfg.randaug_ops == 0, "RandAugment is off (--randaug-ops 0)"),
        ("eval_every", not cfg.val_data, "no --val-data to evaluate on"),
        ("eval_batch_size", not cfg.val_data, "no --val-data to evaluate on"),
        ("val_split", not cfg.val_data, "it picks a split of --val-data, which is not given"),
        ("val_max_samples", not cfg.val_data, "no --val-data to evaluate on"),
        ("image_column", not csv, "it names a column of a .csv/.tsv --data or --val-data"),
        ("label_column", not csv, "it names a column of a .csv/.tsv --data or --val-data"),
        ("subset_seed", cfg.subset_fraction >= 1, "it draws the --subset-fraction subset, and the fraction is 1"),
        ("pos_embed", cfg.image_size == 0, "it places the position embeddings at a new --image-size, and none is "
                                           "given (the checkpoint's own size keeps its table)")]


# A config file's keys that build a fresh model: a fine-tune's model is its checkpoint's, so they build nothing
ARCHITECTURE_KEYS = ("model", "model_overrides")


def drop_file_architecture(base: dict, overrides: dict) -> dict:
    """``base`` (a config file's settings) without its architecture when the run fine-tunes (``init`` set, by
    the file or a flag): the checkpoint fixes the model, and `vit finetune CKPT --config vit_cifar10` recorded
    the recipe's model and model_overrides in train_config.json while the checkpoint's model trained (and
    compare-runs listed them as a difference). Said once, naming the keys that were not at their defaults;
    the command line's own ``overrides`` are left as they were."""
    init = {**base, **overrides}.get("init")
    if not init:
        return base
    defaults = {"model": SupervisedConfig.model, "model_overrides": {}}
    dropped = [key for key in ARCHITECTURE_KEYS if key in base and base[key] != defaults[key]]
    if dropped:
        warnings.warn(f"the config's {' and '.join(dropped)} are not used: a fine-tune's model is its checkpoint's "
                      f"({init})", UserWarning, stacklevel=3)
    return {key: value for key, value in base.items() if key not in ARCHITECTURE_KEYS}


def check_model_overrides(overrides: dict, model: str | None = None) -> None:
    """--model-overrides names VisionConfig fields; the image size and the class count have flags of their own
    (and the class count comes from the data). A wrong key failed as a TypeError deep in model building. Values
    are checked against ``model``'s (the preset's: a mu/4's "depth must be a whole number (as the model's 12)"
    quoted the default VisionConfig's)."""
    from kizuna.models.vit import VisionConfig

    if not isinstance(overrides, dict):
        raise ValueError(f"--model-overrides must be a JSON object of VisionConfig fields, got {overrides!r}")
    fields = {f.name for f in dataclasses.fields(VisionConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"--model-overrides: unknown VisionConfig field(s) {', '.join(unknown)} "
                         f"(known: {', '.join(sorted(fields - {'image_size', 'num_classes'}))})")
    owned = {"image_size": "--image-size", "num_classes": "the data's class count"}
    for key in sorted(set(overrides) & set(owned)):
        raise ValueError(f"--model-overrides: {key} is set by {owned[key]}, not by an override")
    if overrides.get("output_dim"):  # a classifier's head reads the pooled features: the projection was built,
        # decayed and saved without ever training, and under torchrun DDP stopped at step 2 on the unused weight
        raise ValueError(f"--model-overrides: output_dim {overrides['output_dim']} is the joint-space projection of a "
                         "CLIP image tower; a classifier's head reads the pooled features without it: drop it")
    if not overrides:
        return
    try:
        from kizuna.models.presets import vit_config

        with warnings.catch_warnings():  # (built at 224 px for its values only: its grid warning is not this run's)
            warnings.simplefilter("ignore")
            reference = vit_config(model) if model else VisionConfig()
    except (ValueError, KeyError, TypeError):  # not a preset (a checkpoint to fine-tune, a typo refused later)
        reference = VisionConfig()
    check_override_types(dataclasses.asdict(reference), overrides)  # {"eps": "1e-6"}: a TypeError in torch


def check_augmentation(cfg: SupervisedConfig) -> None:
    """The recipe's values, before any data is read: out of range they silently switched a feature off or on,
    or failed later inside a loader worker (one --crop-scale number), and a label smoothing above 1 made
    negative targets, a loss without a lower bound that trains away from the true class."""
    def need(ok: bool, flag: str, what: str, value) -> None:
        if not ok:
            raise ValueError(f"--{flag.replace('_', '-')} must be {what}, got {value!r}")

    need(cfg.crop in ("pad", "rrc", "none"), "crop", "pad, rrc or none", cfg.crop)
    need(0.0 <= cfg.label_smoothing < 1.0, "label_smoothing", "in [0, 1)", cfg.label_smoothing)
    for name in ("mixup", "cutmix"):
        need(getattr(cfg, name) >= 0, name, ">= 0 (the Beta distribution's alpha; 0 = off)", getattr(cfg, name))
    need(0.0 <= cfg.mix_prob <= 1.0, "mix_prob", "a probability in [0, 1]", cfg.mix_prob)
    need(cfg.randaug_ops >= 0, "randaug_ops", ">= 0 (0 = off)", cfg.randaug_ops)
    need(0.0 <= cfg.randaug_magnitude <= 10.0, "randaug_magnitude",
         "in [0, 10] (the RandAugment paper's scale; torchvision's 0..30 is three times it)", cfg.randaug_magnitude)
    need(cfg.crop_padding >= 0, "crop_padding", ">= 0", cfg.crop_padding)


def vit_preprocess(image_size, mean=VIT_MEAN, std=VIT_STD) -> dict:
    """The evaluation preprocessing a supervised kizuna ViT expects (stored with the final model)."""
    return {"image_size": image_size, "mean": list(mean), "std": list(std),
            "interpolation": "bicubic", "resize_mode": "shortest"}


def source_normalisation(path: str | None, resumed: str | Path | None = None,
                         act: str | None = None) -> tuple[list, list]:
    """The pixel mean and std a checkpoint to fine-tune was trained with: a CLIP tower's (OpenAI's 0.48/0.27)
    or a ViT's stored preprocessing; kizuna's ViT default (0.5/0.5) for a fresh model. Fine-tuning a CLIP
    tower on 0.5/0.5 fed it inputs at about half the scale its weights expect. ``resumed``: the checkpoint a
    run resumes from, whose stored preprocessing wins (checkpoints written before it was stored have none)."""
    if resumed is not None:
        from kizuna.analysis.report import read_record

        stored = (read_record(resumed).get("extra") or {}).get("preprocess")
        if stored:
            return list(stored.get("mean", VIT_MEAN)), list(stored.get("std", VIT_STD))
    if not path:
        return list(VIT_MEAN), list(VIT_STD)
    if not Path(path).exists():
        warnings.warn(f"{path} (the checkpoint the run was fine-tuned from) is gone: normalising with kizuna's "
                      "ViT default mean/std 0.5", RuntimeWarning)
        return list(VIT_MEAN), list(VIT_STD)
    from kizuna.analysis.report import read_record

    record = read_record(path)  # a kizuna file: its config and extra, without reading the weights again
    stored = (record.get("extra") or {}).get("preprocess") or (record.get("config") or {}).get("preprocess")
    if not record:  # an HF folder or an OpenAI file: the loader knows their preprocessing
        with warnings.catch_warnings():  # loaded once already, to fine-tune: its warnings were given then
            warnings.simplefilter("ignore")
            model = load_model(path, act=act)
        stored = model.cfg.preprocess if isinstance(model, ClipModel) else None
    if not stored:
        return list(VIT_MEAN), list(VIT_STD)
    return list(stored.get("mean", VIT_MEAN)), list(stored.get("std", VIT_STD))


def augmentations(cfg: SupervisedConfig, image_size, mean=VIT_MEAN,
                  std=VIT_STD) -> tuple[ClassificationTrainTransform, BatchAugment | None]:
    """The recipe of ``cfg`` both ways: the loader's per-image PIL transform, and the device's batch
    transform (None for a random resized crop, which needs the full-size image)."""
    loader = ClassificationTrainTransform(
        image_size=image_size, mean=mean, std=std, crop=cfg.crop, padding=cfg.crop_padding,
        scale=tuple(cfg.crop_scale), hflip=cfg.hflip, randaug_ops=cfg.randaug_ops,
        randaug_magnitude=cfg.randaug_magnitude)
    device = None
    if cfg.crop in ("pad", "none"):
        device = BatchAugment(mean=mean, std=std, crop=cfg.crop, padding=cfg.crop_padding, hflip=cfg.hflip,
                              randaug_ops=cfg.randaug_ops, randaug_magnitude=cfg.randaug_magnitude)
    return loader, device


# ----------------------------------------------------------------------------------- data
def _take(index: SampleIndex, rows: np.ndarray, labels: np.ndarray) -> SampleIndex:
    """A new index holding ``rows`` of ``index`` (in order) with the given labels."""
    rows = np.asarray(rows, dtype=np.int64)
    return SampleIndex(index.sources, index.kinds, index.source_ids[rows], index.keys.take(rows),
                       index.offsets[rows], index.sizes[rows], index.paths.take(rows),
                       index.captions.take(rows), np.asarray(labels, dtype=np.int64),
                       index.skips, index.damaged, source_stamps=index.source_stamps)


def load_classification(path: str, split: str | None = None, classnames: str | list | None = None,
                        max_samples: int = 0, image_column: str = "filepath", label_column: str = "label",
                        default_split: str | None = "train"):
    """-> (SampleIndex with one row per usable sample, class names, EvalDataset).

    Class names: ``classnames`` > those :func:`~kizuna.eval.datasets.load_dataset` finds (the split
    folder, the dataset root, bundled lists, ImageFolder names) > ``classnames.txt`` in the parent
    folder (so ``--data cifar10/train`` works) > ``"0"``, ``"1"``, ... from the labels present.
    """
    from kizuna.eval.datasets import (CLASSNAMES_FILE, DatasetError, RepeatedClassNamesWarning, file_in, find_split,
                                      is_split_folder, load_dataset, read_lines)

    # `--data cifar10/test` is those images when the split is the command's default (``default_split``); a split
    # the user named goes to that folder beside it, as `vit eval --data cifar10/test --split train` does (`vit train
    # --val-data cifar10/test --val-split train` validated on the test images, and `--val-split nosuch` passed)
    if is_split_folder(Path(path)) and split in (None, default_split):
        split = None

    def unnamed(ds) -> tuple[list[str], str]:
        """Names for classes named nowhere: the parent folder's names file, else the label numbers. From the
        dataset as indexed (it was indexed three times, 31 s instead of 13 at 100,000 images)."""
        folder, _ = find_split(Path(path), split or None)
        parent = file_in(folder.parent, CLASSNAMES_FILE)
        if parent is not None:
            names = read_lines(parent)
            if not names:
                raise DatasetError(f"{parent} is empty: it needs one class name per line, in label order")
            return names, str(parent)
        # a CSV's labels are in its label column (without it, no row had a label and no class was found)
        labels = np.asarray(ds.index.labels if ds.labels_override is None else ds.labels_override)
        labels = labels[labels >= 0]
        if not len(labels):
            raise DatasetError(f"{folder}: no labelled sample to number the classes from; pass --classnames "
                               "FILE (one class name per line)")
        return [str(i) for i in range(int(labels.max()) + 1)], "label numbers"

    kw = dict(task="classification", max_samples=max_samples, image_column=image_column, label_column=label_column)
    # names CLIP's tokenizer reads alike ("A" and "a": EMNIST's letters) are a zero-shot matter; a head tells them apart
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RepeatedClassNamesWarning)
        ds = load_dataset(path, split or None, classnames=classnames or None, unnamed=None if classnames else unnamed,
                          **kw)
    index = _take(ds.index, ds.positions, ds.labels)
    return index, list(ds.classnames), ds


def load_validation(cfg, train_classnames: list[str], resumed: bool = False):
    """The validation split as :func:`load_classification` gives it, its labels indexing the training classes.
    Numbered labels (shards' .cls, side-cars, a CSV of indices) go through the split's own class names file, by
    name (:func:`~kizuna.eval.datasets.relabel_by_name`, as `kizuna vit eval` does): read as the training
    classes' numbers, they were all wrong when the training data ordered its classes otherwise (an
    ImageFolder's sorted names against shards numbered in another order), without a word. An ImageFolder is
    matched by folder name already; ``--classnames`` names both splits' classes."""
    from kizuna.eval.datasets import (DatasetError, load_under_classes, relabel_by_name, validation_split,
                                      with_caller_flags)

    # best/ is picked on this split: a root's val split where it has one (test first, best/ was picked on the
    # numbers a user reports). A new run records the split it took (trainer); a resumed run whose settings say
    # none began when "" meant test first, and goes on with that
    split = cfg.val_split or (None if resumed else validation_split(cfg.val_data))

    def load(classnames):
        return load_classification(cfg.val_data, split, classnames, cfg.val_max_samples,
                                   image_column=cfg.image_column, label_column=cfg.label_column, default_split=None)

    try:
        # numbered or wnid folders: named by the split's own classnames.txt, not the training classes' order
        vindex, vnames, vset = load(cfg.classnames) if cfg.classnames else \
            load_under_classes(load, train_classnames, dataset_of=lambda loaded: loaded[2], of="the training set")
    except DatasetError as e:
        raise DatasetError(with_caller_flags(e, "--val-split")) from None
    except FileNotFoundError as e:  # "dataset not found: X" named no flag
        raise FileNotFoundError(f"--val-data {cfg.val_data}: {e}") from None
    if not cfg.classnames and relabel_by_name(vset, train_classnames):
        vindex = _take(vset.index, vset.positions, vset.labels)
    return vindex, vnames, vset


def warn_about_the_validation_split(cfg, validation, training_sources) -> None:
    """Said once at the start: validation images the run trains on, and best/ picked on a test split (its
    numbers are then no held-out estimate; the metrics a run reports are its final model's)."""
    from .data import warn_if_evaluated_on_training_data

    warn_if_evaluated_on_training_data(training_sources, validation.source, "--val-data", cfg.val_data)
    # (a test.csv too: its file's stem names the split)
    if (validation.split or Path(validation.source).stem).casefold() == "test":
        warnings.warn(f"checkpoints/best is picked by val_top1 on the test split of --val-data {cfg.val_data}, so "
                      "best/'s test numbers are no longer held out (the metrics the run reports are its final "
                      "model's); pass --val-split val where the data has one", stacklevel=2)


def stratified_subset(labels: np.ndarray, fraction: float, seed: int = 0) -> np.ndarray:
    """Sorted rows keeping ``round(fraction * n_c)`` (at least 1) samples of every class ``c``.

    Each class's rows are shuffled once by ``seed`` and the first ones kept, so for one seed a
    smaller fraction is always a subset of a larger one.
    """
    labels = np.asarray(labels)
    if fraction >= 1.0:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed % 2**64)  # a negative seed, as --seed takes (numpy refuses one)
    keep = []
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        perm = rng.permutation(len(rows))
        keep.append(rows[perm[: max(1, int(round(fraction * len(rows))))]])
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, dtype=np.int64)


# ----------------------------------------------------------------------------------- model
def adapt_pos_embed(pos_embed: torch.Tensor, old_grid, new_grid, num_prefix: int = 1,
                    mode: str = "interpolate") -> torch.Tensor:
    """Position embeddings ``[1, prefix + h*w, D]`` of ``old_grid`` made to fit ``new_grid``
    (modes as in the module docstring). The prefix (class-token) rows are always kept."""
    old_grid, new_grid = _pair(old_grid), _pair(new_grid)  # (an int grid, as resample_pos_embed takes: not iterable)
    if mode == "interpolate":
        return resample_pos_embed(pos_embed, new_grid, old_grid, num_prefix)
    _, T, D = pos_embed.shape
    new_T = num_prefix + new_grid[0] * new_grid[1]
    out = torch.zeros(1, new_T, D, dtype=pos_embed.dtype, device=pos_embed.device)
    if mode == "sequence":
        n = min(T, new_T)
        out[:, :n] = pos_embed[:, :n]
        return out
    if mode == "grid":
        out[:, :num_prefix] = pos_embed[:, :num_prefix]
        old = pos_embed[:, num_prefix:].reshape(1, old_grid[0], old_grid[1], D)
        new = out[:, num_prefix:].view(1, new_grid[0], new_grid[1], D)
        h, w = min(old_grid[0], new_grid[0]), min(old_grid[1], new_grid[1])
        new[:, :h, :w] = old[:, :h, :w]
        return out
    raise ValueError(f"pos_embed mode must be one of {POS_EMBED_MODES}, got {mode!r}")


def _image_tower(model: nn.Module, source: str) -> VisionTransformer:
    if isinstance(model, ClipModel):
        vit = model.visual
        vit.proj = None  # the joint-space projection is not used by a classifier
        vit.cfg.output_dim = None
        return vit
    if isinstance(model, VisionTransformer):
        return model
    raise ValueError(f"{source}: expected a ViT or CLIP checkpoint, got a {type(model).__name__}")


def loader_draft_size(cfg, side: int) -> int:
    """The size the training loader decodes JPEGs at (draft mode): reduced, still covering the smallest random
    resized crop. `vit augment`'s preview decodes so too (in full, its loader column was not what training saw)."""
    return crop_draft_size(side, cfg.crop_scale[0]) if cfg.crop == "rrc" else side


def load_for_finetune(path: str, num_classes: int, image_size: int | None = None,
                      pos_embed: str = "interpolate", reset_head: bool = True,
                      act: str | None = None) -> VisionTransformer:
    """A ViT (or CLIP image tower) from ``path`` at ``image_size`` with a head for ``num_classes``.

    ``pos_embed="interpolate"`` goes through ``kizuna.load_model(path, image_size=...)`` (2-D
    interpolation); ``"sequence"`` / ``"grid"`` rebuild the model at the new size and place the old
    table as described in :func:`adapt_pos_embed`. The head is zero-initialised (``reset_classifier``);
    ``reset_head=False`` keeps it, and is refused where the checkpoint has no head for ``num_classes``. ``act``: the
    activation of an OpenAI-layout state dict (``load_model``'s).
    """
    if pos_embed not in POS_EMBED_MODES:
        raise ValueError(f"pos_embed must be one of {POS_EMBED_MODES}, got {pos_embed!r}")
    model = load_model(path, act=act)
    carried = getattr(model, "preprocess_config", None)  # a ViT checkpoint's own mean/std (load_model)
    if isinstance(model, ClipModel):  # CLIP's mean/std, as `kizuna vit finetune` stores them: without them
        # evaluate_classifier and save_model fell back to 0.5/0.5 (inputs at about half the scale it expects)
        pre = model.cfg.preprocess
        carried = vit_preprocess(model.cfg.vision.image_size, pre.get("mean", VIT_MEAN), pre.get("std", VIT_STD))
    vit = _image_tower(model, path)
    same_size = not image_size or VisionConfig(**{**vit.cfg.to_dict(), "image_size": image_size}).grid == vit.cfg.grid
    if not same_size:
        if pos_embed == "interpolate":
            vit = _image_tower(load_model(path, image_size=image_size, act=act), path)
        else:
            new_cfg = VisionConfig(**{**vit.cfg.to_dict(), "image_size": image_size})
            state = dict(vit.state_dict())
            state["pos_embed"] = adapt_pos_embed(state["pos_embed"], vit.cfg.grid, new_cfg.grid,
                                                 vit.cfg.num_prefix_tokens, pos_embed)
            new = VisionTransformer(new_cfg)
            load_state_dict_strict(new, state, path)
            vit = new
    elif image_size:
        if pos_embed != "interpolate":  # an ablation run that looked as if it had used its table
            warnings.warn(f"pos_embed {pos_embed!r} does nothing: image size {image_size} keeps the checkpoint's "
                          f"{vit.cfg.grid[0]}x{vit.cfg.grid[1]} grid of patches, so its position embeddings are used "
                          "as they are", UserWarning, stacklevel=2)
        vit.cfg.image_size = image_size
    if isinstance(carried, dict):  # at the new size, whichever way the model was rebuilt (grid and sequence
        # built a fresh one without it, so the pos-embed mode decided the normalisation it was evaluated with)
        vit.preprocess_config = {**carried, "image_size": vit.cfg.image_size}
    if not reset_head and (vit.head is None or vit.cfg.num_classes != num_classes):
        # a new zero head trained under a recorded "reset_head": false (a CLIP tower has no head to keep)
        has = (f"a head for {vit.cfg.num_classes} classes" if vit.head is not None and vit.cfg.num_classes
               else "no classifier head (a CLIP image tower, or a ViT trained without classes)")
        raise ValueError(f"--reset-head false keeps the head of {path}, but it has {has} and the data has "
                         f"{num_classes} classes; fine-tune with a new head (--reset-head true)")
    if reset_head:  # (a head kept is the data's: another count was refused above)
        vit.reset_classifier(num_classes)
    return vit


def keep_head_for_classes(model: VisionTransformer, path: str, classnames: list[str]) -> None:
    """A head kept (``--reset-head false``) answers in the checkpoint's class order: its rows are put in the data's
    order by name (the same classes listed otherwise scored 0%, with no word); other classes are refused."""
    from kizuna.analysis.report import read_extra

    stored = read_extra(path).get("classnames")
    if model.head is None or not stored or list(stored) == list(classnames):
        return
    if sorted(stored) != sorted(classnames):
        raise ValueError(f"--reset-head false keeps the head of {path}, trained on the classes {list(stored)}, but the "
                         f"data's classes are {list(classnames)}; fine-tune with a new head (--reset-head true) or "
                         "give the data those class names (--classnames)")
    order = torch.tensor([list(stored).index(name) for name in classnames])
    with torch.no_grad():
        model.head.weight.copy_(model.head.weight[order])
        if model.head.bias is not None:
            model.head.bias.copy_(model.head.bias[order])


# ----------------------------------------------------------------------------------- loss / mixing
def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ``-sum_k t_k log softmax(logits)_k`` (targets are distributions)."""
    return -(targets * F.log_softmax(logits.float(), dim=-1)).sum(dim=-1).mean()


def check_training_classes(data: str, classnames: list[str], labels, warn: bool = True) -> None:
    """One class: refused (a one-logit softmax has loss 0: nothing trained, and every accuracy was 100%, in
    silence). Classes no training image has (a CSV labelled with some of --classnames' names only): warned, as
    `eval linear-probe` warns: the head never learns them, and their validation images count as errors."""
    if len(classnames) < 2:
        raise ValueError(f"{data}: {len(classnames)} class ({', '.join(map(str, classnames))}): a classifier needs "
                         "at least two to choose between (with one, the loss is 0, nothing trains, and every "
                         "accuracy is 100%); pass --classnames FILE naming them all, or add the other classes' images")
    present = set(np.unique(np.asarray(labels)).tolist())
    missing = [name for k, name in enumerate(classnames) if k not in present]
    if missing and warn:
        shown = ", ".join(map(str, missing[:5])) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        warnings.warn(f"{data}: {len(missing)} of {len(classnames)} classes have no training image ({shown}): the "
                      "head never learns them, and their validation images count as errors", UserWarning,
                      stacklevel=2)


def smooth_targets(labels: torch.Tensor, num_classes: int, smoothing: float = 0.0) -> torch.Tensor:
    t = F.one_hot(labels, num_classes).float()
    return t * (1.0 - smoothing) + smoothing / num_classes if smoothing else t


def mix_batch(images: torch.Tensor, targets: torch.Tensor, rng: np.random.Generator, mixup: float = 0.0,
              cutmix: float = 0.0, prob: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Mixup (Zhang et al., 2018) or CutMix (Yun et al., 2019) with the batch reversed as partner.

    ``rng`` draws whether to mix, which method, lambda ~ Beta(alpha, alpha) and the CutMix box;
    with both on, each batch picks one with equal odds. For CutMix lambda is corrected to the
    box's actual area. Returns (images, targets, {"method": ..., "lam": ...}).
    """
    if (mixup <= 0 and cutmix <= 0) or len(images) < 2 or rng.random() >= prob:
        return images, targets, {"method": "none", "lam": 1.0}
    use_cutmix = cutmix > 0 and (mixup <= 0 or rng.random() < 0.5)
    alpha = cutmix if use_cutmix else mixup
    lam = float(rng.beta(alpha, alpha))
    partner = images.flip(0)
    if use_cutmix:
        H, W = images.shape[-2:]
        cut = math.sqrt(1.0 - lam)
        ch, cw = int(H * cut), int(W * cut)
        cy, cx = int(rng.integers(H)), int(rng.integers(W))
        y0, y1 = max(cy - ch // 2, 0), min(cy + ch // 2, H)
        x0, x1 = max(cx - cw // 2, 0), min(cx + cw // 2, W)
        images = images.clone()
        images[..., y0:y1, x0:x1] = partner[..., y0:y1, x0:x1]
        lam = 1.0 - (y1 - y0) * (x1 - x0) / float(H * W)
    else:
        images = images * lam + partner * (1.0 - lam)
    targets = targets * lam + targets.flip(0) * (1.0 - lam)
    return images, targets, {"method": "cutmix" if use_cutmix else "mixup", "lam": lam}


# ----------------------------------------------------------------------------------- the trainer
class SupervisedTrainer(Trainer):
    resume_fixed = RESUME_FIXED
    run_outputs = Trainer.run_outputs + (("model", "final model"),)  # OUT/model (export)
    resume_state_fixed = RESUME_STATE_FIXED
    # --augment-on too: decoded onto the device, the training set leaves its undecodable images out of the count
    data_size_fields = ("data", "data_split", "subset_fraction", "subset_seed", "augment_on", "image_column",
                        "label_column", "classnames")
    batch_key = "labels"
    bar_label = "vit"
    # a new run from a checkpoint's weights, said where its optimizer state cannot continue it (vit train has no
    # --init: `vit train --model CHECKPOINT` is refused, and names `vit finetune`)
    new_run_from_weights = "kizuna vit finetune {path}"
    # (`kizuna eval` refuses a ViT classifier; {out} is shell-quoted by the trainer)
    evaluate_command = "kizuna vit eval {out}/model --data DATA"

    def __init__(self, cfg: SupervisedConfig, named: frozenset[str] | None = None):
        """``named``: the fields the command line set (kizuna.train.config.named_fields); see Trainer.start."""
        cfg = self.start(cfg, named)

        # data first: the class count sizes the head
        from kizuna.eval.datasets import DatasetError, with_caller_flags

        try:
            # (--data-split "": train, as the field's default; read as no split, a root's test split was trained on)
            index, self.classnames, train_set = load_classification(cfg.data, cfg.data_split or "train",
                                                                    cfg.classnames or None,
                                                                    image_column=cfg.image_column,
                                                                    label_column=cfg.label_column)
        except DatasetError as e:
            raise DatasetError(with_caller_flags(e, "--data-split")) from None
        # samples left out while indexing (no or a bad label, an empty image): said and logged, as `kizuna train`
        self.index_skips = {"index_skipped": train_set.skips}
        self.full_train_size = len(index)
        rows = stratified_subset(index.labels, cfg.subset_fraction, cfg.subset_seed)
        self.train_index = _take(index, rows, index.labels[rows])
        if len(self.train_index) == 0:
            raise ValueError(f"{cfg.data}: no labelled training samples")
        self.num_classes = len(self.classnames)
        check_training_classes(cfg.data, self.classnames, self.train_index.labels, self.dist.is_main)
        # the validation set indexed now, before the model is built and the training images decoded (a typo in
        # --val-data or --val-split was found after them: 6-9 s of decoding CIFAR-10 onto the device)
        validation = (load_validation(cfg, self.classnames, resumed=self.resume_from is not None)
                      if cfg.val_data else None)
        if validation is not None and not cfg.val_split and validation[2].split and self.resume_from is None:
            # the split a root's "" resolved to, in train_config.json: a resume reads the same one (a resumed run
            # keeps its ""; recorded there, the resume compared it with the saved "" and started best/ afresh)
            cfg = self.cfg = dataclasses.replace(cfg, val_split=validation[2].split)
        if validation is not None and self.dist.is_main:
            from .data import training_places

            warn_about_the_validation_split(cfg, validation[2], training_places(index))

        # model: the checkpoint being resumed, a checkpoint to fine-tune, or a fresh preset
        if self.resume_from is not None:
            model = _image_tower(load_resumed_model(self.resume_from), str(self.resume_from))
        elif cfg.init:
            model = load_for_finetune(cfg.init, self.num_classes, cfg.image_size or None, cfg.pos_embed, cfg.reset_head,
                                      act=cfg.act or None)
            if not cfg.reset_head:
                keep_head_for_classes(model, cfg.init, self.classnames)
        else:
            check_fresh_model(cfg.model)
            model = kizuna.create_vit(cfg.model, image_size=cfg.image_size or 224, num_classes=self.num_classes,
                                      **cfg.model_overrides)
        if model.head is None or model.cfg.num_classes != self.num_classes:
            raise ValueError(f"model has {model.cfg.num_classes} classes but the data has {self.num_classes}")
        self.model: VisionTransformer = model.to(self.device).train()
        if cfg.grad_checkpointing:
            self.model.set_grad_checkpointing(True)
        size = self.model.cfg.image_size
        self.image_size = size if isinstance(size, int) else list(size)
        mean, std = source_normalisation(cfg.init, self.resume_from, act=cfg.act or None)  # a fine-tuned model keeps its inputs
        self.preprocess_cfg = vit_preprocess(self.image_size, mean, std)
        self.ckpt.model_extra = {"preprocess": self.preprocess_cfg, "classnames": self.classnames,
                                 "task": "classification"}

        # loaders
        self.transform, self.batch_augment = augmentations(cfg, self.image_size, mean, std)
        side = self.image_size if isinstance(self.image_size, int) else max(self.image_size)
        self.decode_skips = None
        if cfg.augment_on == "device":
            self.loader, self.sampler = self._device_batches()
        else:
            self.dataset = PairDataset(self.train_index, self.transform, caption_sampling="first", seed=cfg.seed,
                                       draft_size=loader_draft_size(cfg, side))
            self.sampler = self._train_sampler(len(self.dataset))
            # pinned batches only for a GPU run: pinning starts CUDA (a context on GPU 0) where a GPU is merely present
            self.loader = make_loader(self.dataset, self.sampler, num_workers=cfg.workers, collate=Collate(),
                                      pin_memory=self.device.type == "cuda")
        self.val_loader = self.val_sampler = None
        if validation is not None:
            vindex, vnames, val_set = validation
            self.index_skips["val_index_skipped"] = val_set.skips
            self._said_val_skips = False  # unreadable validation images are said at the first evaluation only
            # decoded in full, as `kizuna vit eval` decodes (a JPEG decoded at a reduced size gave other pixels:
            # top-1 75.2% here, 75.0% there, and best/ was picked on those numbers)
            vset = PairDataset(vindex, Preprocess(**self.preprocess_cfg), caption_sampling="first",
                               seed_transform=False)
            self.val_sampler = EpochSampler(len(vset), max(1, cfg.eval_batch_size // self.dist.world_size),
                                            rank=self.dist.rank, world_size=self.dist.world_size, shuffle=False,
                                            drop_last=False)
            self.val_loader = make_loader(vset, self.val_sampler, num_workers=min(cfg.workers, 2), collate=Collate(),
                                          pin_memory=self.device.type == "cuda")
            self.val_size = len(vset)
        # optimisation
        if cfg.optimizer == "sgd":
            optimizer = torch.optim.SGD(param_groups(self.model, cfg.weight_decay), lr=cfg.lr, momentum=cfg.momentum)
        else:
            optimizer = make_optimizer(self.model, cfg.lr, cfg.weight_decay, cfg.betas, cfg.eps)
        self.prepare_optimisation(optimizer)
        self.open_log()
        if self.resume_from is None and self.decode_skips is not None:
            self.log_skips(self.decode_skips, step=0)
        for name, skips in self.index_skips.items():
            if skips and self.dist.is_main:
                where = "training" if name == "index_skipped" else "validation"
                print(f"data: {where} samples left out while indexing: {skips.report()}", file=sys.stderr)
                if self.resume_from is None:  # the run's log has them from its start
                    self.log_skips(skips, name, step=0)
        if self.dist.is_main:  # also without a bar: what the run trains on (on the device: what decoded)
            n = len(self.train_index) if self.decode_skips is None else len(self.train_index) - self.decode_skips.total
            # the share kept, which the at-least-one-per-class rule can raise (0.01 of 8 images kept 2)
            share = (f" ({n / self.full_train_size:.3g} of {self.full_train_size}: --subset-fraction "
                     f"{cfg.subset_fraction:g}, at least one per class)" if cfg.subset_fraction < 1 else "")
            length = (f"{self.total_steps} steps" if self.planned else
                      f"steps planned after the warm-up to end within {cfg.time_budget_minutes:g} min"
                      + (f" (at most {cfg.steps})" if cfg.steps else ""))
            print(f"data: {n} training images{share}, {self.num_classes} classes"
                  + (f", {self.val_size} validation images"
                     + (f" (split {cfg.val_split})" if cfg.val_split else "") if self.val_loader else "")
                  + f"; {self.steps_per_epoch} steps/epoch, {length}", file=sys.stderr)

    def best_metric(self, cfg: SupervisedConfig) -> tuple[str | None, str]:
        return ("val_top1" if cfg.val_data else None), "auto"

    def check_config(self, cfg: SupervisedConfig) -> None:
        if not cfg.data:
            raise ValueError("no training data: pass --data (shards folder, dataset root, ImageFolder tree or CSV)")
        super().check_config(cfg)

    def _train_sampler(self, n: int, decoded_rows=None) -> EpochSampler:
        # which rows, in which order (kizuna.data.sources.SampleIndex.fingerprint; decoded onto the device, also
        # which of them did not decode): saved with the data position, which a resume on other data, or another
        # order, refuses
        fingerprint = self.train_index.fingerprint()
        if decoded_rows is not None:
            fingerprint = with_undecoded_rows(fingerprint, decoded_rows, len(self.train_index))
        sampler = EpochSampler(n, self.per_rank_batch, rank=self.dist.rank, world_size=self.dist.world_size,
                               seed=self.cfg.seed, data_fingerprint=fingerprint)
        if len(sampler) == 0:
            cut = (f" (--subset-fraction {self.cfg.subset_fraction:g} of the set)" if self.cfg.subset_fraction < 1
                   else "")  # (the folder held more: the message named none of it)
            raise ValueError(f"{self.cfg.data}: {n} samples{cut} do not fill one global batch of "
                             f"{self.cfg.batch_size}; lower --batch-size")
        return sampler

    def _device_batches(self) -> tuple[TensorBatches, EpochSampler]:
        """augment_on="device": the training set decoded once onto the device, augmented per batch there."""
        cfg = self.cfg
        if self.batch_augment is None:
            raise ValueError(f"--augment-on device crops with 'pad' or 'none', got --crop {cfg.crop}; a random "
                             "resized crop needs the full-size image: use --augment-on loader")
        show = self.dist.is_main and cfg.progress
        if self.dist.is_main and not show:  # (without a bar the decoding was seconds of silence: 25k images 4-5 s)
            print(f"decoding {len(self.train_index)} training images onto {self.device} ...", file=sys.stderr,
                  flush=True)
        decoded = decode_images(self.train_index, self.image_size, self.device, cfg.workers, progress=show)
        if not len(decoded.labels):
            raise ValueError(f"{cfg.data}: none of its {len(self.train_index)} training images decoded: "
                             f"{decoded.skips.report()}. Check the files the report names")
        if decoded.skips.total:
            self.decode_skips = decoded.skips
            if self.dist.is_main:  # with --progress false too, as the loader's epoch reports are
                print(f"decoding the training set: {decoded.skips.report()}", file=sys.stderr)
        sampler = self._train_sampler(len(decoded.labels), decoded.rows)
        return TensorBatches(decoded, sampler, self.batch_augment, seed=cfg.seed, rank=self.dist.rank), sampler

    # ----- one step ----------------------------------------------------------------------------
    def fit_batch(self, batch: dict) -> dict[str, float]:
        loss, correct, nonfinite = self.train_step(batch["images"], batch["labels"])
        return {"loss": loss, "correct": correct, "samples": len(batch["labels"]), "nonfinite": nonfinite}

    def window_record(self, sums: dict[str, float]) -> tuple[dict, dict]:
        top1 = sums["correct"] / max(sums["samples"], 1)
        if sums.get("nonfinite"):  # summed over the window (and the ranks): NaN logits' argmax is class 0, not a
            top1 = float("nan")  # prediction (a diverged run logged the share of class 0), as evaluate() does
        return {"train_top1": top1}, {"acc": f"{top1:.3f}"}

    def evaluation_line(self, metrics: dict) -> str:
        return f"val top-1 {metrics['val_top1']:.4f}, loss {metrics['val_loss']:.4f}"

    def outputs_finite(self, batch: dict) -> bool:
        """The logits of the batch's first few images (a step at a huge learning rate leaves finite weights whose
        logits are NaN: the checkpoint was saved and the run exported it as model/)."""
        with self.autocast():
            logits = self.model(batch["images"][:OUTPUT_CHECK_SAMPLES].to(self.device))
        return bool(torch.isfinite(logits).all())

    def train_step(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[float, int, int]:
        """One optimizer step: the loss, the images classified right, and those whose logits hold NaN or inf."""
        cfg = self.cfg
        images = images.to(self.device, non_blocking=True)
        labels = labels.to(self.device, non_blocking=True)
        targets = smooth_targets(labels, self.num_classes, cfg.label_smoothing)
        rng = np.random.default_rng([cfg.seed % 2**64, self.step, self.dist.rank, 0x3117])  # numpy refuses seeds < 0
        images, targets, _ = mix_batch(images, targets, rng, cfg.mixup, cfg.cutmix, cfg.mix_prob)
        with self.autocast():
            logits = self.forward_model(images)
        loss = soft_cross_entropy(logits, targets)
        loss.backward()
        self.apply_gradients()
        logits = logits.detach()
        # one read-back (a GPU stall) for all three; the counts are exact in float32 (batches < 2**24)
        loss, correct, nonfinite = torch.stack([loss.detach().float(), (logits.argmax(-1) == labels).sum().float(),
                                                (~torch.isfinite(logits).all(-1)).sum().float()]).tolist()
        return loss, int(correct), int(nonfinite)

    # ----- evaluation ----------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self) -> dict:
        if self.val_loader is None:
            return {}
        from tqdm import tqdm

        self.model.eval()
        # correct, count, loss sum, images whose logits hold NaN or inf
        stats = torch.zeros(4, dtype=torch.float64, device=self.device)
        skips = SkipCounter()  # unreadable validation images: counted and said (they went unmentioned)
        try:
            self.val_sampler.set_epoch(0)
            # a bar of its own: the training bar stood still at its step for the minutes a large set takes
            for batch in tqdm(self.val_loader, desc="evaluating", unit="batch", leave=False, dynamic_ncols=True,
                              disable=not (self.dist.is_main and self.cfg.progress)):
                if batch.get("skipped"):
                    skips.update(batch["skipped"], batch.get("skip_examples"))
                if len(batch["labels"]) == 0:
                    continue
                x = batch["images"].to(self.device, non_blocking=True)
                y = batch["labels"].to(self.device, non_blocking=True)
                with self.autocast():
                    logits = self.model(x)
                stats[0] += (logits.argmax(-1) == y).sum()
                stats[1] += len(y)
                stats[2] += F.cross_entropy(logits.float(), y, reduction="sum")
                stats[3] += (~torch.isfinite(logits).all(-1)).sum()
        finally:
            self.model.train()
        all_reduce_sum(stats)
        skips = summed_skips(skips)
        if skips and self.dist.is_main and not self._said_val_skips:
            print(f"validation: {skips.report()}", file=sys.stderr)  # the same images each evaluation: said once
            self._said_val_skips = True
        if not stats[1]:  # summed over ranks: all raise. Scored over nothing it was top-1 0 and loss 0 (a perfect
            # loss), and best/ was written from it; `vit eval` of the folder refuses it so
            from kizuna.eval.datasets import DatasetError

            raise DatasetError(f"{self.cfg.val_data}: none of its {self.val_size} validation images could be "
                               f"used: {skips.report() if skips else 'none was read'}")
        n = float(stats[1])
        metrics = {"val_top1": float(stats[0]) / n, "val_loss": float(stats[2]) / n}
        if stats[3]:  # summed over ranks: all take this path. NaN logits' argmax is class 0, scored as if real
            from .evaluation import diverged_metrics

            metrics = diverged_metrics(NonFiniteFeatures(
                f"{self.cfg.val_data}: the model gave NaN or inf logits for {int(stats[3])} of {int(stats[1])} "
                "validation images; its weights hold NaN or inf, or it overflowed (a diverged run?)"), metrics)
        return {**metrics, "val_samples": int(stats[1]), **({"val_skipped": skips.total} if skips else {})}

    # ----- checkpoints -------------------------------------------------------------------------
    def optimizer_settings(self) -> dict:
        return {"momentum": self.cfg.momentum} if self.cfg.optimizer == "sgd" else super().optimizer_settings()

    def export(self, metrics: dict) -> Path:
        """OUT/model: the final model with its preprocessing and class names (for `kizuna analyze`)."""
        path = self.out / "model"
        if self.dist.is_main:
            # filled aside and swapped in: saved in place, a run extended by --resume rewrote the weights and then
            # config.json, and a kill between the two paired the new weights with the old step, metrics, classes
            self.out.mkdir(parents=True, exist_ok=True)
            for stray in self.out.glob(".model.*"):  # an export a kill interrupted: a model's size each
                if stray.is_dir():
                    shutil.rmtree(stray, ignore_errors=True)
            tmp = make_temp_folder(self.out, ".model.")
            try:
                save_model(self.model, tmp, extra={**self.ckpt.model_extra, "step": self.step, "metrics": metrics})
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            swap_folder_in(tmp, path)
        barrier()
        return path

    def finish(self, metrics: dict) -> None:
        self.export(metrics)


def train_supervised(cfg: SupervisedConfig, named: frozenset[str] | None = None) -> dict:
    return SupervisedTrainer(cfg, named).train()
