"""What a supervised training recipe does to its images: ``kizuna vit augment``.

The same images through both augmentation paths of :class:`~kizuna.train.supervised.SupervisedTrainer`
- the PIL loader (:class:`~kizuna.data.augment.ClassificationTrainTransform`) and the device batches
(:class:`~kizuna.data.batch_augment.BatchAugment`) - as a grid (``augment.png``: one row per image,
the original and then several draws of each path), with pixel statistics of both over more images
(``augment.json``): the two should draw from the same distribution, so their means, spreads and
shares of grey fill (geometric ops) and black padding (the crop) should agree to sampling noise.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from PIL import Image

__all__ = ["augmentation_samples", "pixel_stats", "plot_augmentations", "preview_augmentation"]


def augmentation_samples(cfg, n_images: int = 8, draws: int = 4, seed: int = 0) -> dict:
    """``{"original": uint8 [n, H, W, 3], "loader": [draws, n, H, W, 3], "device": same or None,
    "labels": [...], "classnames": [...]}`` for the first ``n_images`` training images of ``cfg``."""
    from kizuna.data.batch_augment import batch_generator, decode_images
    from kizuna.data.sources import PairDataset
    from kizuna.train.supervised import _take, augmentations, load_classification

    if not cfg.image_size:
        raise ValueError("--image-size is needed to preview the augmentation (0 means 'the checkpoint's own')")
    index, classnames, _ = load_classification(cfg.data, cfg.data_split, cfg.classnames or None)
    if len(index) == 0:
        raise ValueError(f"{cfg.data}: no labelled images")
    n = min(n_images, len(index))
    first = _take(index, np.arange(n), index.labels[:n])
    decoded = decode_images(first, cfg.image_size)  # what the device path starts from
    if len(decoded.labels) < n:
        raise ValueError(f"{cfg.data}: {n - len(decoded.labels)} of the first {n} images do not decode "
                         f"({decoded.skips.report()})")
    full = PairDataset(first, None, caption_sampling="first", seed_transform=False)  # what the loader starts from
    loader, device = augmentations(cfg, cfg.image_size)
    out = {"original": decoded.images.permute(0, 2, 3, 1).numpy(), "labels": decoded.labels.tolist(),
           "classnames": list(classnames), "device": None}
    out["loader"] = np.stack([np.stack([
        np.asarray(loader.augment(Image.fromarray(full[i]["image"].permute(1, 2, 0).numpy()),
                                  random.Random(seed * 1_000_003 + d * 10_007 + i)))
        for i in range(n)]) for d in range(draws)])
    if device is not None:
        cpu = torch.device("cpu")
        out["device"] = np.stack([device.augment(decoded.images, batch_generator(cpu, seed, d)).permute(0, 2, 3, 1)
                                  .to(torch.uint8).numpy() for d in range(draws)])
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


def plot_augmentations(samples: dict, path, title: str = "") -> Path:
    """One row per image: the original, then the loader's draws, then the device's."""
    from .figures import _save

    n = len(samples["original"])
    columns = [("original", samples["original"][None])]
    columns.append(("PIL loader", samples["loader"]))
    if samples["device"] is not None:
        columns.append(("device batches", samples["device"]))
    total = sum(len(c) for _, c in columns)
    height = 1.15 * n + 0.9
    fig = Figure(figsize=(1.1 * total + 0.6, height))
    axes = fig.subplots(n, total, squeeze=False)
    fig.subplots_adjust(left=0.04, right=0.99, bottom=0.02, top=1 - 0.75 / height, wspace=0.06, hspace=0.12)
    for r in range(n):
        col = 0
        for name, draws in columns:
            for d in range(len(draws)):
                ax = axes[r, col]
                ax.imshow(draws[d][r], interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                if r == 0:
                    ax.set_title(name if d == 0 else "", fontsize=9, loc="left")
                if col == 0:
                    label = samples["labels"][r]
                    names = samples["classnames"]
                    ax.set_ylabel(names[label] if 0 <= label < len(names) else str(label), fontsize=8)
                col += 1
    fig.suptitle(title or "training augmentation: the PIL loader and the device batches", fontsize=10)
    return _save(fig, path)


def preview_augmentation(cfg, out, n_images: int = 8, draws: int = 4, stats_images: int = 512,
                         seed: int = 0) -> dict:
    """Write ``OUT/augment.png`` (``n_images`` x ``draws`` of each path) and ``OUT/augment.json`` (pixel
    statistics of one draw of each path over ``stats_images`` images); returns the JSON's content."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    randaug = (f"RandAugment {cfg.randaug_ops} ops at magnitude {cfg.randaug_magnitude:g}" if cfg.randaug_ops
               else "no RandAugment")
    recipe = f"crop {cfg.crop} (padding {cfg.crop_padding}), flip {cfg.hflip:g}, {randaug}"
    shown = augmentation_samples(cfg, n_images, draws, seed)
    figure = plot_augmentations(shown, out / "augment.png", f"{cfg.data}: {recipe}")
    many = augmentation_samples(cfg, stats_images, 1, seed + 1)
    record = {"data": str(cfg.data), "image_size": cfg.image_size, "recipe": recipe,
              "original": pixel_stats(many["original"]), "loader": pixel_stats(many["loader"]),
              "device": pixel_stats(many["device"]) if many["device"] is not None else None,
              "figure": str(figure)}
    if many["device"] is None:
        record["device_note"] = f"crop {cfg.crop!r} has no device path (it needs the full-size image)"
    (out / "augment.json").write_text(json.dumps(record, indent=2) + "\n")
    return record
