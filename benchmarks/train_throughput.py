"""Training throughput of the real contrastive trainer on the demo model, vs the bare training step.

``ContrastiveTrainer(cfg).train()`` with the built-in ``demo`` config (the model, tokenizer training,
synthetic shapes data, 1 loader worker and batch size of ``kizuna demo``), for a fixed number of steps
with no evaluation or checkpoint in between and a log record every step. The trainer writes
``samples_per_s`` into ``OUT/metrics.jsonl`` for each logging window (here: one step, measured from the
end of the previous record, so it includes waiting for the next batch: scene rendering in the worker,
collation and tokenisation); the figure is the median over the steps after the first few (warm-up:
worker start-up, first allocations).

The second row is the bare step on the trainer's own model (same config, same tokenizer vocabulary):
forward, CLIP loss, backward, gradient clipping and AdamW on random images and pre-tokenized captions,
timed with ``common.interleaved`` (median of 5 to 9 timed runs). The gap between the two is the trainer's
overhead (data, tokenisation, logging) over the compute.
"""
from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import torch

from .common import GEMM_NAMES, Settings, interleaved, md_table, shipped_gemm, spread_text

NAME = "train_throughput"
TITLE = "Training throughput: contrastive trainer (demo config) vs the bare step"


def _trainer_config(out: str, s: Settings):
    from kizuna.train.config import load_config_file, make_config

    overrides = dict(out=out, progress=False, eval_every=0, save_every=0, time_limit_minutes=0,
                     steps=6 if s.quick else 60, log_every=1)
    if s.quick:  # a few small steps, and a tiny end-of-run probe evaluation (not timed)
        overrides.update(batch_size=8, eval_max_samples=10)
    return make_config(load_config_file("demo"), **overrides)


def run(s: Settings) -> dict:
    from kizuna.train.contrastive import ContrastiveTrainer
    from kizuna.train.distributed import contrastive_loss
    from kizuna.train.logging import read_metrics
    from kizuna.train.optim import make_optimizer

    tmp = tempfile.TemporaryDirectory(prefix="kizuna-bench-train-")
    try:
        cfg = _trainer_config(tmp.name, s)
        skip = 2 if s.quick else 5
        s.log(f"[train_throughput] ContrastiveTrainer, demo config: {cfg.steps} steps of batch {cfg.batch_size}, "
              f"{cfg.workers} worker(s); the first {skip} steps are warm-up")
        t0 = time.perf_counter()
        trainer = ContrastiveTrainer(cfg)  # trains the demo's BPE tokenizer on the captions first
        t1 = time.perf_counter()
        trainer.train()  # ends with the (untimed) probe evaluation and a checkpoint
        t2 = time.perf_counter()
        records = read_metrics(Path(cfg.out) / "metrics.jsonl", kind="train")
        logged = [r for r in records if "samples_per_s" in r]
        rates = [float(r["samples_per_s"]) for r in logged if r["step"] > skip]
        if not rates:
            raise RuntimeError(f"no samples_per_s records after step {skip} in {cfg.out}/metrics.jsonl")
        tr_rate = statistics.median(rates)
        tr_spread = (max(rates) - min(rates)) / tr_rate

        # The bare step, on the trainer's own model (same shapes, same tokenizer vocabulary).
        model, batch = trainer.model.train(), cfg.batch_size
        size = model.cfg.vision.image_size
        size = (size, size) if isinstance(size, int) else tuple(size)
        g = torch.Generator().manual_seed(0)
        images = torch.randn(batch, 3, *size, generator=g)
        tokens = trainer.tokenizer([trainer.dataset[(i, 0)]["caption"] for i in range(batch)])
        opt = make_optimizer(model, cfg.lr, cfg.weight_decay, cfg.betas, cfg.eps)
        loss_kind = model.cfg.loss

        precision = trainer.precision  # what the trainer's `auto` resolved to here: the bare step runs the same

        def bare_step():
            with trainer.autocast():
                out = model(images, tokens=tokens)
                bias = None if out["logit_bias"] is None else out["logit_bias"].float()
                loss = contrastive_loss(loss_kind, out["image_features"].float(), out["text_features"].float(),
                                        out["logit_scale"].float(), bias)
            loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.grad is not None], cfg.grad_clip)
            opt.step()
            opt.zero_grad(set_to_none=True)
            return loss.detach()

        s.log(f"[train_throughput] bare step, batch {batch}")
        t = interleaved({"bare": bare_step}, s.reps, s.warmup, items=batch, max_reps=s.max_reps)["bare"]
        n_params = sum(p.numel() for p in model.parameters())
        mcfg = model.cfg
        del trainer, model, opt
    finally:
        tmp.cleanup()

    ratio = tr_rate / t.rate
    gemm = shipped_gemm()
    rows = [
        ["`ContrastiveTrainer.train()`: data (render, collate) + tokenisation + step; `samples_per_s` from "
         f"metrics.jsonl, median of steps {skip + 1}..{cfg.steps}", batch, f"{tr_rate:,.1f}",
         f"{batch / tr_rate:.3f}", f"{ratio:.2f}x", f"{tr_spread:.0%}"],
        ["bare step: forward + CLIP loss + backward + grad clip + AdamW (random images, pre-tokenized captions)",
         batch, f"{t.rate:,.1f}", f"{t.median:.3f}", "1.00x", spread_text(t)],
    ]
    table = md_table(["what", "batch", "samples/s", "s per step", "÷ bare step", "spread"], rows, align="lrrrrr")
    overhead = max(0.0, 1 - ratio)
    v, tx = mcfg.vision, mcfg.text
    notes = [
        f"Demo model: image tower {v.width} wide x {v.depth} blocks, patch {v.patch_size} at {size[0]}x{size[1]} px; "
        f"text tower {tx.width} x {tx.depth}, context {tx.context_length}, vocabulary {tx.vocab_size} (the BPE "
        f"tokenizer the demo trains first); {n_params / 1e6:.1f} M parameters; {precision} (the trainer's `auto` here, the bare step alike), {torch.get_num_threads()} "
        f"torch threads.",
        f"Trainer run: {cfg.steps} steps of batch {cfg.batch_size}" + (" (--quick: the demo trains at batch 128)"
                                                                        if s.quick else " (the demo's batch)")
        + f", synthetic shapes data rendered by {cfg.workers} loader worker process(es) alongside the main "
          f"process (on a machine with few cores they compete for the same CPUs); a log record every step "
          f"(log_every=1); steps 1..{skip} are warm-up and not counted. Set-up before the first step "
          f"(tokenizer training, model, loader) took {t1 - t0:.1f} s and the run {t2 - t1:.1f} s including the "
          "untimed end-of-run probe evaluation and checkpoint.",
        f"Trainer overhead over the compute-only step: {overhead:.0%} of the trainer's step time "
        f"({batch / tr_rate:.3f} s vs {t.median:.3f} s per step).",
        "The two rows are measured one after the other in the same process, not interleaved (the trainer "
        "figure is the median over the steps of one run, the bare step the median of 5 to 9 timed runs after warm-up); "
        "see the load averages above.",
        f"kizuna as shipped, training in {precision}: `kizuna.models.layers.GEMM` is `{gemm}` here, so its CPU fp32 "
        f"linears run on {GEMM_NAMES[gemm]} (chosen by CPU vendor; `KIZUNA_GEMM` overrides); no block fusion while "
        "training.",
    ]
    return {"title": TITLE, "md": table, "notes": notes, "targets": [],
            "data": {"steps": cfg.steps, "batch": batch, "precision": precision, "gemm": gemm, "warmup_steps_skipped": skip,
                     "workers": cfg.workers,
                     "trainer_samples_per_s": round(tr_rate, 3), "trainer_spread": round(tr_spread, 4),
                     "trainer_step_rates": [round(r, 3) for r in rates],
                     "trainer_all_records": [{"step": r["step"], "samples_per_s": r["samples_per_s"]} for r in logged],
                     "bare_step": t.as_dict(), "trainer_vs_bare": round(ratio, 4),
                     "setup_s": round(t1 - t0, 2), "train_s": round(t2 - t1, 2), "parameters": n_params}}
