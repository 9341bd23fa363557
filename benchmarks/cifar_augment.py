"""CIFAR-10 training augmentation: the PIL loader path against batches augmented on the device.

The supervised ViT recipe (pad-and-crop 4 px, horizontal flip, RandAugment 2 ops at magnitude 9,
normalise) two ways, over the same CIFAR-10 training images:

* ``PIL, one process``: what one loader worker does per sample, in this process - read the JPEG from
  its shard, decode, :class:`~kizuna.data.augment.ClassificationTrainTransform`, to a float tensor
  (``PairDataset.__getitems__``). Loader workers add up to one of these per core.
* ``batched on the CPU`` / ``batched on CUDA``: :class:`~kizuna.data.batch_augment.BatchAugment` on
  batches of 512 of the images :func:`~kizuna.data.batch_augment.decode_images` decoded once (its
  time is reported beside), with torch's threads (CPU) or on the GPU (synchronised).

Contenders alternate; a timed run augments the same ``n`` images.
"""
from __future__ import annotations

import os
import time

import torch

from .common import CIFAR10, Settings, interleaved, md_table, spread_text

NAME = "cifar_augment"
TITLE = "CIFAR-10 augmentation: PIL in loader processes vs batches on the device"
BATCH = 512


def run(s: Settings) -> dict:
    from kizuna.data.batch_augment import batch_generator, decode_images
    from kizuna.data.sources import PairDataset
    from kizuna.train.supervised import _take, augmentations, load_classification, make_supervised_config

    split = CIFAR10 / "train"
    if not split.is_dir():
        return {"title": TITLE, "md": f"Skipped: {split} not found (set KIZUNA_SHARED).", "notes": [],
                "targets": [], "data": {"skipped": True}}
    index, _, _ = load_classification(str(split))
    n = BATCH if s.quick else 4 * BATCH
    # the trainer's two paths for the recipe (the rest of SupervisedConfig's defaults: pad 4, flip 0.5)
    transform, batched = augmentations(make_supervised_config(randaug_ops=2, randaug_magnitude=9.0), 32)
    pil = PairDataset(index, transform, caption_sampling="first", seed=0, draft_size=32)
    sub = _take(index, list(range(n)), index.labels[:n]) if s.quick else index  # quick: decode only what is timed
    t0 = time.perf_counter()
    decoded = decode_images(sub, 32, workers=0)
    decode_s = time.perf_counter() - t0
    calls = {"pil": 0}

    def run_pil():
        calls["pil"] += 1
        out = pil.__getitems__([(i, calls["pil"]) for i in range(n)])
        assert sum(item is not None for item in out) == n

    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    on = {d.type: decoded.images[:n].to(d) for d in devices}

    def run_batched(device: torch.device):
        images = on[device.type]
        for b in range(0, n, BATCH):
            out = batched(images[b:b + BATCH], batch_generator(device, 0, b))
        if device.type == "cuda":
            torch.cuda.synchronize()
        return out

    fns = {"PIL, one process": run_pil}
    for d in devices:
        fns[f"batched on {'the CPU' if d.type == 'cpu' else 'CUDA'}"] = lambda d=d: run_batched(d)
    s.log(f"[cifar_augment] {len(fns)} contenders x {s.reps} runs over {n} images")
    t = interleaved(fns, s.reps, s.warmup, items=n, max_reps=s.max_reps)
    base = t["PIL, one process"].rate
    rows = [[name, f"{r.rate:,.0f}", f"{r.rate / base:.1f}x", spread_text(r)] for name, r in t.items()]
    table = md_table(["contender", "images/s", "vs PIL, one process", "spread"], rows, align="lrrr")
    cpu_threads = torch.get_num_threads()
    cores = os.cpu_count() or 1
    notes = [
        f"{n:,} of the {len(index):,} training images per timed run; the batched contenders first decoded "
        f"{len(decoded.labels):,} images once in {decode_s:.1f} s (no workers: "
        f"{len(decoded.labels) / decode_s:,.0f} images/s, {decoded.images.numel() / 2**20:.0f} MiB as uint8).",
        f"`batched on the CPU` uses torch's {cpu_threads} threads; the PIL path adds one loader process per "
        f"core, so on these {cores} cores it reaches at most {cores} x {base:,.0f} = {cores * base:,.0f} images/s, "
        "and those cores are then not running the training step. The batched path pays off where the step "
        "runs on a GPU: the batches are made there too, and the CPU only launches the work.",
    ]
    data = {"images": n, "batch": BATCH, "decode_s": round(decode_s, 3), "decoded": len(decoded.labels),
            "cpu_threads": cpu_threads, "timings": {name: r.as_dict() for name, r in t.items()}}
    if torch.cuda.is_available():  # the lease may be an H100 or an H200: the CUDA row is compared with gpu_train_step's
        data["gpu"] = {"name": torch.cuda.get_device_name(), "cuda": torch.version.cuda}
        built = f" (CUDA {torch.version.cuda})" if torch.version.cuda else ""
        notes.append(f"`batched on CUDA` ran on an {data['gpu']['name']}{built}.")
    return {"title": TITLE, "md": table, "notes": notes, "targets": [], "data": data}
