"""Zero-shot evaluation throughput on the CIFAR-10 test split, with a demo-config model.

``kizuna.eval.datasets.load_dataset(<shared>/data/cifar10, split="test")`` (WebDataset shards of
32x32 JPEGs) and ``kizuna.eval.classification.evaluate_zeroshot`` with the dataset's 18 prompt
templates, batch 64 (the ``kizuna eval`` default), with ``num_workers`` 0 and 2 decoding processes.
End-to-end images/s = images / wall time of the whole call: JPEG decode + the model's preprocessing
(bicubic resize to the model's input size, normalise) + image encoding + class prompts (encoded once per
call: the in-memory class-embedding cache is cleared before every run) + classification and metrics.
The third figure is the image tower alone (``encode_image``, batch 64) on the same images already
preprocessed into tensors. The three are interleaved.

The model is a fresh ``kizuna.ClipModel(kizuna.train.contrastive.model_config(demo config))``: the
throughput does not depend on the weights, so an untrained model measures the same work (its accuracy is
chance level and is reported only as a check that the evaluation ran).
"""
from __future__ import annotations

import tempfile
import time

import torch

from .common import CIFAR10, Settings, interleaved, md_table, shipped_note, spread_text

NAME = "eval_throughput"
TITLE = "Zero-shot evaluation throughput (CIFAR-10 test, demo model)"
BATCH = 64
WORKERS = (0, 2)
FULL_N, SUBSET_N = 10_000, 2_000
LONG_PASS_S = 20.0  # a full-split pass longer than this: time the end-to-end runs on the 2,000-image subset


def _demo_model():
    import kizuna
    from kizuna.train.config import load_config_file, make_config
    from kizuna.train.contrastive import model_config

    with tempfile.TemporaryDirectory() as out:  # `out` is a required field; nothing is written there
        cfg = make_config(load_config_file("demo"), out=out, progress=False)
    torch.manual_seed(0)
    model = kizuna.ClipModel(model_config(cfg)).eval()
    return model, kizuna.get_tokenizer(model), kizuna.get_preprocess(model)


def _preprocessed(ds, preprocess) -> list[torch.Tensor]:
    """The images of ``ds`` decoded and preprocessed once, in batches of BATCH (for the encode-only row)."""
    from kizuna.data.loader import Collate

    rows = ds.positions.tolist()
    batches = [rows[i : i + BATCH] for i in range(0, len(rows), BATCH)]
    loader = torch.utils.data.DataLoader(ds.pair_dataset(preprocess), batch_sampler=batches, collate_fn=Collate())
    return [b["images"] for b in loader if b["images"].numel()]


def run(s: Settings) -> dict:
    from kizuna.eval.classification import clear_class_cache, evaluate_zeroshot
    from kizuna.eval.datasets import load_dataset

    split = CIFAR10 / "test"
    if not split.is_dir():
        return {"title": TITLE, "md": f"Skipped: {split} not found (the shared CIFAR-10 data; set KIZUNA_SHARED).",
                "notes": [], "targets": [], "data": {"skipped": True}}
    model, tokenizer, preprocess = _demo_model()
    n_full = 256 if s.quick else FULL_N
    full = load_dataset(CIFAR10, split="test", max_samples=n_full)
    n_full = len(full)
    last: dict = {}

    def end_to_end(ds, workers: int):
        def call():
            clear_class_cache()
            res = evaluate_zeroshot(model, tokenizer, ds, batch_size=BATCH, num_workers=workers, progress=False)
            last[(len(ds), workers)] = res
            return res
        return call

    # Is one pass over the full split long? Probe with one untimed pass over the subset (also a warm-up).
    ds, subset_used, probe_s = full, False, None
    if not s.quick and n_full > SUBSET_N:
        sub = full.subset(range(SUBSET_N))
        t0 = time.perf_counter()
        end_to_end(sub, 0)()
        probe_s = time.perf_counter() - t0
        if probe_s * n_full / SUBSET_N > LONG_PASS_S:
            ds, subset_used = sub, True
    n = len(ds)
    s.log(f"[eval_throughput] {n:,} CIFAR-10 test images (probe pass: "
          f"{'-' if probe_s is None else f'{probe_s:.1f} s for {SUBSET_N:,}'}); preprocessing them for encode-only")
    tensors = _preprocessed(ds, preprocess)
    n_enc = sum(int(x.shape[0]) for x in tensors)

    @torch.inference_mode()
    def encode_only():
        for x in tensors:
            model.encode_image(x, normalize=False)

    fns = {f"e2e_{w}w": end_to_end(ds, w) for w in WORKERS}
    fns["encode"] = encode_only
    s.log(f"[eval_throughput] {len(fns)} contenders x {s.reps} runs, interleaved")
    t = interleaved(fns, s.reps, 1, items={**{f"e2e_{w}w": n for w in WORKERS}, "encode": n_enc},
                    max_reps=s.max_reps)

    enc = t["encode"]
    rows = []
    for w in WORKERS:
        r = t[f"e2e_{w}w"]
        rows.append(["end-to-end `evaluate_zeroshot` (decode + preprocess + encode + classify)", w, f"{n:,}",
                     f"{r.rate:,.0f}", f"{r.median:.2f}", f"{r.rate / enc.rate:.2f}", spread_text(r)])
    rows.append(["image tower only: `encode_image` on preprocessed tensors", "-", f"{n_enc:,}", f"{enc.rate:,.0f}",
                 f"{enc.median:.2f}", "1.00", spread_text(enc)])
    table = md_table(["what", "num_workers", "images", "images/s", "s per pass", "÷ encode-only", "spread"], rows,
                     align="lrrrrrr")
    res = last.get((n, 0))
    acc = f"{100 * res.metrics['acc1']:.1f}%" if res is not None else "?"
    v = model.cfg.vision
    size = v.image_size if isinstance(v.image_size, int) else v.image_size[0]
    notes = [
        (f"The first {n:,} of the {len(full.index):,} images of `{split}`" if n < len(full.index)
         else f"All {n:,} images of `{split}`")
        + f", 32x32 JPEGs upscaled to the model's {size}x{size} px input, batch {BATCH}, "
          f"{len(full.templates or ())} templates x {len(full.classnames or ())} classes.",
        *([f"A full pass over {n_full:,} images would take about {probe_s * n_full / SUBSET_N:.0f} s "
           f"(probe: {probe_s:.1f} s for {SUBSET_N:,}), over the {LONG_PASS_S:.0f} s limit, so the end-to-end "
           f"figures are over the first {SUBSET_N:,} images (a subset, {s.reps} interleaved runs)."]
          if subset_used else []),
        f"Demo-config model with fresh random weights ({v.width} wide x {v.depth} blocks, patch {v.patch_size}; "
        "text tower with the `clip_bpe` tokenizer): throughput does not depend on the weights. Top-1 "
        f"{acc} (chance: 10%) only shows the evaluation ran.",
        "Each end-to-end run is one full `evaluate_zeroshot` call: with 2 workers it includes starting the "
        "DataLoader's worker processes (as every `kizuna eval` run does); the class-embedding cache is "
        "cleared first, so the 180 prompts are encoded in every run. \"÷ encode-only\" is the end-to-end rate "
        "over the image tower's own rate: the share of the time spent encoding images.",
        f"{torch.get_num_threads()} torch threads; worker processes compete with the main process for the "
        "same cores. " + shipped_note(),
    ]
    data = {"images": n, "indexed": n_full, "subset_used": subset_used, "probe_pass_s": probe_s,
            "batch": BATCH, "encode_images": n_enc, "acc1": None if res is None else res.metrics["acc1"],
            "timings": {k: x.as_dict() for k, x in t.items()}}
    return {"title": TITLE, "md": table, "notes": notes, "targets": [], "data": data}
