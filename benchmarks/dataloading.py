"""Data loading: decoded, augmented images per second from the Flickr8k shards.

``kizuna.data.sources.PairDataset`` + ``TrainTransform`` (random resized crop, scale 0.9-1.0, bicubic,
normalise; no flip/jitter: the trainer's defaults) through ``make_loader`` with an ``EpochSampler``, as
``kizuna.train.data`` wires them (JPEG draft decoding at the output size, ``Collate()`` without tokenizer),
at 224 px and 64 px output, with 0, 1 and 2 worker processes. A timed run is one pass over the first
N samples of the train split (batches of 64); configurations are interleaved; worker processes persist
between passes (the first, untimed pass starts them).
"""
from __future__ import annotations

import torch

from .common import FLICKR, Settings, interleaved, md_table, spread_text

NAME = "dataloading"
TITLE = "Data loading (decode + augment)"


def run(s: Settings) -> dict:
    from kizuna.data.loader import make_loader
    from kizuna.data.sampler import EpochSampler
    from kizuna.data.sources import PairDataset, build_index
    from kizuna.data.transforms import TrainTransform

    split = FLICKR / "train"
    if not split.is_dir():
        return {"title": TITLE, "md": f"Skipped: {split} not found (set KIZUNA_SHARED).", "notes": [],
                "targets": [], "data": {"skipped": True}}
    index = build_index(str(split), require="caption")
    n = min(len(index), 256 if s.quick else 1024)
    batch = 64
    sizes = [224, 64]
    workers = [0, 1] if s.quick else [0, 1, 2]
    loaders, epochs = {}, {}
    for size in sizes:
        ds = PairDataset(index, TrainTransform(image_size=size), caption_sampling="random", seed=0, draft_size=size)
        for w in workers:
            sampler = EpochSampler(n, batch, seed=0, shuffle=True, drop_last=False)
            loaders[(size, w)] = (make_loader(ds, sampler, num_workers=w), sampler)
            epochs[(size, w)] = 0

    def one_pass(key):
        loader, sampler = loaders[key]
        sampler.set_epoch(epochs[key])
        epochs[key] += 1
        seen = 0
        for b in loader:
            seen += int(b["images"].shape[0])
        assert seen == n, (seen, n)

    fns = {f"{size}px/{w}w": (lambda key=(size, w): one_pass(key)) for size, w in loaders}
    s.log(f"[dataloading] {len(fns)} configurations x {s.reps} passes over {n} images")
    t = interleaved(fns, s.reps, 1, items=n, max_reps=s.max_reps)
    loaders.clear()  # shuts the worker processes down

    rows, data = [], []
    for size in sizes:
        base = t[f"{size}px/0w"].rate
        for w in workers:
            r = t[f"{size}px/{w}w"]
            per = r.rate / max(1, w)
            rows.append([f"{size}x{size}", w, f"{r.rate:,.0f}", f"{per:,.0f}", f"{r.rate / base:.2f}x", spread_text(r)])
            data.append({"size": size, "workers": w, "timing": r.as_dict(), "per_worker": per})
    table = md_table(["output", "num_workers", "images/s", "images/s per worker (main process if 0)",
                      "vs 0 workers", "spread"], rows, align="lrrrrr")
    notes = [
        f"{n:,} samples of `{split}` ({len(index):,} in the split; stored JPEGs are 128x128, q90), "
        f"batches of {batch}, random caption per image (no tokenization).",
        f"The machine has {torch.get_num_threads()} torch threads / few cores shared by the main process, the "
        "workers and other jobs, so workers beyond the core count cannot scale.",
    ]
    return {"title": TITLE, "md": table, "notes": notes, "targets": [],
            "data": {"samples": n, "batch": batch, "rows": data}}
