"""What a supervised training recipe does to its images: ``kizuna vit augment``.

The same images through both augmentation paths of :class:`~kizuna.train.supervised.SupervisedTrainer`
- the PIL loader (:class:`~kizuna.data.augment.ClassificationTrainTransform`) and the device batches
(:class:`~kizuna.data.batch_augment.BatchAugment`) - as a grid (``augment.png``: one row per image,
the original and then several draws of each path), with pixel statistics of both over more images
(``augment.json``): the two should draw from the same distribution, so their means, spreads and
shares of grey fill (geometric ops) and black padding (the crop) should agree to sampling noise.

Mixup / CutMix act on whole batches after either path: when the recipe has them, the grid adds the
loader's draws mixed as training mixes a batch (:func:`~kizuna.train.supervised.mix_batch`, with the
grid's rows as the batch, so row ``i`` is mixed with row ``n-1-i``), each column titled with its method
and lambda. The statistics are of the two paths before mixing, which both share. Label smoothing changes
only the targets and is named as not shown. With ``subset_fraction`` < 1 the images are the first of the
training subset, as training would draw them.
"""
from __future__ import annotations

import json
import random
import textwrap
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from PIL import Image

from kizuna.models.checkpoint import atomic_write_text

from .figures import fit_lines

__all__ = ["augmentation_samples", "describe_recipe", "pixel_stats", "plot_augmentations", "preview_augmentation"]

_UINT64 = (1 << 64) - 1


def _mixes(cfg) -> bool:
    return cfg.mixup > 0 or cfg.cutmix > 0


def describe_recipe(cfg) -> str:
    """What the preview shows of ``cfg``'s recipe, in the settings that act (e.g. the crop scale of a random
    resized crop, not the unused padding; the RandAugment magnitude after clamping to 0..10), and what acts
    in training but cannot be shown."""
    from kizuna.data.augment import MAX_LEVEL

    if cfg.crop == "rrc":
        crop = f"random resized crop (scale {'-'.join(f'{v:g}' for v in cfg.crop_scale)})"
    elif cfg.crop == "pad" and cfg.crop_padding > 0:
        crop = f"pad-and-crop (padding {cfg.crop_padding})"
    else:  # "none", or "pad" with no padding: resize and centre crop only
        crop = "no random crop"
    flip = f"flip {min(cfg.hflip, 1.0):g}" if cfg.hflip > 0 else "no flip"
    parts = [crop, flip]
    if cfg.randaug_ops > 0:
        magnitude = min(max(float(cfg.randaug_magnitude), 0.0), MAX_LEVEL)  # as the ops clamp it
        clamped = f" ({cfg.randaug_magnitude:g} clamped to 0..{MAX_LEVEL:g})" if magnitude != cfg.randaug_magnitude else ""
        parts.append(f"RandAugment {cfg.randaug_ops} ops at magnitude {magnitude:g}{clamped}")
    else:
        parts.append("no RandAugment")
    if _mixes(cfg):
        methods = [f"{name} alpha {alpha:g}" for name, alpha in (("mixup", cfg.mixup), ("cutmix", cfg.cutmix)) if alpha > 0]
        mixing = " or ".join(methods) + (" (one per batch)" if len(methods) == 2 else "")
        if cfg.mix_prob < 1:
            mixing += f" on {max(cfg.mix_prob, 0.0):g} of batches"
        parts.append(mixing)
    if cfg.label_smoothing:
        parts.append(f"label smoothing {cfg.label_smoothing:g} (targets only, not shown)")
    return ", ".join(parts)


def _check_counts(**counts) -> None:
    for flag, value in counts.items():
        if value < 1:
            raise ValueError(f"--{flag.replace('_', '-')} must be at least 1, got {value}")


def _mixed_draws(loader_draws: np.ndarray, cfg, seed: int) -> tuple[np.ndarray, list]:
    """The loader's draws ``[draws, n, H, W, 3]`` mixed the way training mixes a batch (the grid's rows as
    the batch), one generator per draw as training has one per step. Mixing pixel values commutes with the
    normalisation (a per-channel affine map), so mixing the uint8 images shows what the model gets."""
    from kizuna.train.supervised import mix_batch

    mixed, info = [], []
    for d, draw in enumerate(loader_draws):
        images = torch.from_numpy(np.ascontiguousarray(draw)).permute(0, 3, 1, 2).float()
        rng = np.random.default_rng([seed & _UINT64, d, 0, 0x3117])  # numpy rejects negative seeds
        targets = torch.zeros(len(images), 1)  # the figure shows images only
        images, _, how = mix_batch(images, targets, rng, cfg.mixup, cfg.cutmix, cfg.mix_prob)
        mixed.append(images.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy())
        info.append(how)
    return np.stack(mixed), info


def augmentation_samples(cfg, n_images: int = 8, draws: int = 4, seed: int = 0, mix: bool = True) -> dict:
    """``{"original": uint8 [n, H, W, 3], "loader": [draws, n, H, W, 3], "device": same or None,
    "mixed": the loader's draws mixed, or None, "mix_info": [{"method", "lam"} per draw], "labels": [...],
    "classnames": [...]}`` for the first ``n_images`` images of ``cfg``'s training set (of its subset with
    ``subset_fraction`` < 1). ``mixed`` is made when ``mix`` and the recipe has Mixup or CutMix."""
    from kizuna.data.batch_augment import batch_generator, decode_images
    from kizuna.data.sources import PairDataset
    from kizuna.train.supervised import _take, augmentations, load_classification, stratified_subset

    _check_counts(num_images=n_images, draws=draws)
    if not cfg.image_size:
        raise ValueError("--image-size is needed to preview the augmentation (0 means 'the checkpoint's own')")
    index, classnames, _ = load_classification(cfg.data, cfg.data_split or "train", cfg.classnames or None,
                                               image_column=cfg.image_column, label_column=cfg.label_column)
    if len(index) == 0:
        raise ValueError(f"{cfg.data}: no labelled images")
    rows = stratified_subset(index.labels, cfg.subset_fraction, cfg.subset_seed)  # as the trainer keeps them
    n = min(n_images, len(rows))
    first = _take(index, rows[:n], index.labels[rows[:n]])
    decoded = decode_images(first, cfg.image_size)  # what the device path starts from
    if len(decoded.labels) < n:
        raise ValueError(f"{cfg.data}: {n - len(decoded.labels)} of the first {n} images do not decode "
                         f"({decoded.skips.report()})")
    from kizuna.train.supervised import loader_draft_size

    side = cfg.image_size if isinstance(cfg.image_size, int) else max(cfg.image_size)
    # what the loader starts from: decoded as the training loader decodes (JPEG draft mode)
    full = PairDataset(first, None, caption_sampling="first", seed_transform=False,
                       draft_size=loader_draft_size(cfg, side))
    loader, device = augmentations(cfg, cfg.image_size)
    out = {"original": decoded.images.permute(0, 2, 3, 1).numpy(), "labels": decoded.labels.tolist(),
           "classnames": list(classnames), "device": None, "mixed": None, "mix_info": []}
    out["loader"] = np.stack([np.stack([
        np.asarray(loader.augment(Image.fromarray(full[i]["image"].permute(1, 2, 0).numpy()),
                                  random.Random(seed * 1_000_003 + d * 10_007 + i)))
        for i in range(n)]) for d in range(draws)])
    if device is not None:
        cpu = torch.device("cpu")
        out["device"] = np.stack([device.augment(decoded.images, batch_generator(cpu, seed, d)).permute(0, 2, 3, 1)
                                  .to(torch.uint8).numpy() for d in range(draws)])
    if mix and _mixes(cfg):
        out["mixed"], out["mix_info"] = _mixed_draws(out["loader"], cfg, seed)
    return out


def pixel_stats(images: np.ndarray) -> dict:
    """Statistics of uint8 RGB images ``[..., H, W, 3]`` that the augmentation moves: mean and spread of
    the values, the mean per-image spread, and the shares of pixels that are grey fill (128, 128, 128),
    black padding (0, 0, 0) or saturated (any channel 255)."""
    x = np.asarray(images, dtype=np.float64).reshape(-1, *np.shape(images)[-3:])
    return {"images": int(x.shape[0]), "mean": float(x.mean()), "std": float(x.std()),
            "per_image_std": float(x.reshape(len(x), -1).std(1).mean()),
            "grey_fill": float((x == 128).all(-1).mean()), "black": float((x == 0).all(-1).mean()),
            "saturated": float((x == 255).any(-1).mean())}


def _column_title(name: str, d: int, mix_info: list | None) -> str:
    """The group's name over its first column; a mixed draw also names its method and lambda (a batch the
    mix probability left alone says so), on a second line so that every column's line up."""
    head = name if d == 0 else ""
    if mix_info is None:
        return head
    how = mix_info[d]
    return f"{head}\n" + ("not mixed" if how["method"] == "none" else f"{how['method']} \u03bb={how['lam']:.2f}")


def plot_augmentations(samples: dict, path, title: str = "") -> Path:
    """One row per image: the original, then the loader's draws, then the device's, then the loader's draws
    mixed (when there are mixed draws)."""
    from .figures import _save

    return _save(augmentation_figure(samples, title), path)


def augmentation_figure(samples: dict, title: str = "") -> Figure:
    """The figure :func:`plot_augmentations` saves."""
    n = len(samples["original"])
    columns = [("original", samples["original"][None], None)]
    columns.append(("PIL loader", samples["loader"], None))
    if samples["device"] is not None:
        columns.append(("device batches", samples["device"], None))
    if samples.get("mixed") is not None:
        columns.append(("PIL draws mixed", samples["mixed"], samples["mix_info"]))
    total = sum(len(c) for _, c, _ in columns)
    width = 1.1 * total + 0.6
    title = title or "training augmentation: the PIL loader and the device batches"
    title_size = 10
    # Wrap the title to the figure's width (a character of DejaVu Sans averages about 0.55 of the font size;
    # 0.6 leaves room for capitals and digits), so a narrow grid (2 images x 2 draws) shows all of it instead
    # of cutting it at both edges.
    chars_per_line = max(12, int(0.96 * width * 72 / (0.6 * title_size)))
    lines = textwrap.wrap(title, chars_per_line) or [""]
    column_title_lines = 2 if samples.get("mixed") is not None else 1
    top_in = 0.2 + 0.19 * len(lines) + 0.17 * column_title_lines
    height = 1.15 * n + 0.35 + top_in
    fig = Figure(figsize=(width, height))
    axes = fig.subplots(n, total, squeeze=False)
    fig.subplots_adjust(left=0.04, right=0.99, bottom=0.02, top=1 - top_in / height, wspace=0.06, hspace=0.12)
    for r in range(n):
        col = 0
        for name, draws, mix_info in columns:
            for d in range(len(draws)):
                ax = axes[r, col]
                ax.imshow(draws[d][r], interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                if r == 0:
                    ax.set_title(_column_title(name, d, mix_info), fontsize=9 if mix_info is None else 8, loc="left")
                if col == 0:
                    label = samples["labels"][r]
                    names = samples["classnames"]
                    # a row is an image high: an 80-character name ran past it into the next row's
                    ax.set_ylabel(fit_lines(names[label] if 0 <= label < len(names) else str(label), 18, 3),
                                  fontsize=8)
                col += 1
    fig.suptitle("\n".join(lines), fontsize=title_size, y=1 - 0.1 / height, va="top")
    return fig


def preview_augmentation(cfg, out, n_images: int = 8, draws: int = 4, stats_images: int = 512,
                         seed: int = 0) -> dict:
    """Write ``OUT/augment.png`` (``n_images`` x ``draws`` of each path, and of the loader's draws mixed when
    the recipe mixes) and ``OUT/augment.json`` (pixel statistics of one draw of each path, before mixing, over
    ``stats_images`` images); returns the JSON's content. ``recipe`` names exactly what the figure shows."""
    _check_counts(num_images=n_images, draws=draws, stats_images=stats_images)
    out = Path(out)
    shown = augmentation_samples(cfg, n_images, draws, seed)
    recipe = describe_recipe(cfg)
    if _mixes(cfg) and len(shown["original"]) < 2:  # mix_batch leaves a batch of one alone
        shown["mixed"] = None
        recipe += " (mixing not shown: it needs 2 or more images, see --images)"
    subset = f" (first images of the {cfg.subset_fraction:g} subset)" if cfg.subset_fraction < 1 else ""
    # the statistics before anything is written: an image of theirs that failed left the new figure beside the
    # earlier run's augment.json (another dataset and recipe), and a bad --data an empty OUT
    many = augmentation_samples(cfg, stats_images, 1, seed + 1, mix=False)
    out.mkdir(parents=True, exist_ok=True)
    figure = plot_augmentations(shown, out / "augment.png", f"{cfg.data}{subset}: {recipe}")
    record = {"data": str(cfg.data), "image_size": cfg.image_size, "recipe": recipe,
              "original": pixel_stats(many["original"]), "loader": pixel_stats(many["loader"]),
              "device": pixel_stats(many["device"]) if many["device"] is not None else None,
              "figure": figure.name}  # beside augment.json, as every analysis JSON names its figures
    if shown["mixed"] is not None:
        record["mixed_draws"] = shown["mix_info"]
        record["mixing_note"] = ("mixed draws: the loader's draws mixed as training mixes a batch, row i with row "
                                 "n-1-i; the statistics are before mixing")
    if subset:
        record["subset_fraction"] = cfg.subset_fraction
    if many["device"] is None:
        record["device_note"] = f"crop {cfg.crop!r} has no device path (it needs the full-size image)"
    atomic_write_text(out / "augment.json", json.dumps(record, indent=2) + "\n")
    return record
