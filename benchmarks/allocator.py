"""Training steps with freed memory kept in the process (``kizuna.train.memory``) and without.

A training step frees its activations and gradients at its end and allocates them again at the next. With
glibc's defaults, large blocks go back to the OS and return as fresh pages, which the OS zero-fills on first
touch (minor page faults). ``kizuna.train.memory.keep_freed_memory``, which kizuna's trainers call on the CPU
(``keep_freed_memory`` in their configs), tells glibc to keep them.

The setting is process-wide and is not undone cleanly, so each contender runs in child processes of its own
(``python -m benchmarks.allocator MODE PRESET BATCH STEPS``), alternating: default, kept, default, kept, ...
A child builds a fresh kizuna CLIP (``kizuna.create_model``), runs two warm-up steps (forward, CLIP loss,
backward, AdamW; the train_step section's step) on random images and Flickr8k captions, then times ``STEPS``
steps and counts page faults per step. Each figure is the median over all timed steps of a contender.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time

from .common import REPO, Settings, md_table

NAME = "allocator"
TITLE = "Training steps with freed memory kept in the process (glibc), on and off"
MODES = {"default": "glibc's defaults", "kept": "freed memory kept (`keep_freed_memory`)"}


def _child(mode: str, preset: str, batch: int, steps: int) -> dict:
    import resource

    import torch

    import kizuna
    from kizuna.data.tokenizer import ClipTokenizer
    from kizuna.train.memory import keep_freed_memory

    from .common import caption_source, clip_train_step, minor_faults, step_optimizer

    kept = keep_freed_memory() if mode == "kept" else False
    torch.manual_seed(0)
    model = kizuna.create_model(preset).train()
    size = model.cfg.vision.image_size
    pixels = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    tokens = ClipTokenizer(model.cfg.text.context_length)(caption_source()[0][:batch])
    opt = step_optimizer(model)

    def features():
        out = model(pixels, tokens)
        return out["image_features"], out["text_features"], out["logit_scale"]

    for _ in range(2):
        clip_train_step(features, opt)
    times, faults = [], []
    for _ in range(steps):
        f0 = minor_faults()
        t0 = time.perf_counter()
        clip_train_step(features, opt)
        times.append(time.perf_counter() - t0)
        faults.append(minor_faults() - f0)
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
    return {"mode": mode, "kept": kept, "times_s": times, "faults": faults, "peak_rss_gib": round(peak_gib, 2)}


def _spawn(mode: str, preset: str, batch: int, steps: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-m", "benchmarks.allocator", mode, preset, str(batch), str(steps)],
                          cwd=REPO, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"allocator child ({mode}) failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(s: Settings) -> dict:
    from kizuna.train.memory import _glibc

    if _glibc() is None:
        return {"title": TITLE, "md": "Not measured: this process does not run on glibc (`kizuna.train.memory`).",
                "notes": [], "targets": [], "data": {"skipped": "not on glibc"}}
    preset, batch, steps, rounds = ("ViT-mu-8", 8, 3, 2) if s.quick else ("ViT-B-32", 32, 3, 3)
    children = {m: [] for m in MODES}
    for r in range(rounds):
        for mode in MODES:
            s.log(f"[allocator] {preset} batch {batch}, {mode}, child {r + 1} of {rounds}")
            children[mode].append(_spawn(mode, preset, batch, steps))
    stats = {}
    for mode, runs in children.items():
        times = [t for c in runs for t in c["times_s"]]
        faults = [f for c in runs for f in c["faults"]]
        median = statistics.median(times)
        stats[mode] = {"median_s": median, "spread": (max(times) - min(times)) / median,
                       "faults_per_step": statistics.median(faults),
                       "peak_rss_gib": max(c["peak_rss_gib"] for c in runs), "steps": len(times)}
    ratio = stats["default"]["median_s"] / stats["kept"]["median_s"]
    rows = [[MODES[m], f"{v['median_s']:.2f}", f"{batch / v['median_s']:.2f}", f"{v['faults_per_step']:,.0f}",
             f"{v['peak_rss_gib']:.2f}", f"{v['spread']:.0%}", v["steps"]] for m, v in stats.items()]
    table = md_table(["allocator", "s per step", "images/s", "page faults per step", "peak RSS GiB", "spread",
                      "timed steps"], rows, align="lrrrrrr")
    table += f"\n\n**Kept ÷ default: {ratio:.2f}x** ({preset}, batch {batch}, fp32, {rounds} children per contender)."
    notes = [
        "Each contender runs in fresh child processes, alternating (glibc's settings are process-wide); a child "
        "builds the model, runs two untimed warm-up steps, then times its steps.",
        "kizuna's trainers keep freed memory on the CPU by default (`--keep-freed-memory false` turns it off): "
        "the process holds on to its peak memory instead of returning it to the OS between steps.",
        "How many faults the default takes depends on the allocator's history in the process, so it varies "
        "between children; blocks over 32 MB always come fresh from the OS.",
    ]
    return {"title": TITLE, "md": table, "notes": notes, "targets": [],
            "data": {"preset": preset, "batch": batch, "ratio_kept_vs_default": round(ratio, 4), "stats": stats,
                     "children": children}}


if __name__ == "__main__":  # a child process: python -m benchmarks.allocator MODE PRESET BATCH STEPS
    mode, preset, batch, steps = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    print(json.dumps(_child(mode, preset, batch, steps)))
