"""One full training step: forward, CLIP loss, backward, AdamW step — kizuna vs HF ``CLIPModel``.

Both start from identical weights (ViT-B/32, OpenAI shape), in train mode, fp32, and use the same loss
(``kizuna.models.losses.clip_loss`` on the normalised features and exp(logit_scale)) and the same
optimizer (``kizuna.train.optim.make_optimizer``: AdamW, weight decay on matrices). The step is what
``ContrastiveTrainer.train_step`` does without gradient clipping and the scheduler.

"kizuna" is kizuna as shipped: on the CPU in fp32 its linears run on the library chosen for the CPU
(``kizuna.models.layers.GEMM``): on oneDNN (AMD) the forward and input-gradient GEMMs (the weight-gradient
GEMM stays on ``torch.mm``), on MKL (Intel) plain ``F.linear``; no block fusion while training. A third
contender, a copy of the same model with its own optimizer, runs every step inside ``common.plain_linears``
(plain ``F.linear``, MKL sgemm), interleaved with the others.
A fourth, another copy, has its text tower's padding trim off (``TextTransformer.trim_padding``): it
runs all 77 positions as HF does, where kizuna stops at the batch's last end-of-text token.
"""
from __future__ import annotations

import copy

import torch

from .common import (GEMM_NAMES, PAD_LABEL, PLAIN_LABEL, Settings, build_pair, caption_source, clip_train_step,
                     faults_text, interleaved, md_table, plain_linears, positions_run, shipped_gemm, spread_text,
                     step_optimizer)

NAME = "train_step"
TITLE = "Training step vs Hugging Face CLIPModel"
TARGET = 1.2
LABELS = {"kizuna": "kizuna", "hf": "HF", "kizuna_mkl": "kizuna plain", "kizuna_pad": PAD_LABEL}


def run(s: Settings) -> dict:
    from kizuna.data.tokenizer import ClipTokenizer

    batch = 4 if s.quick else 32
    variant = "ViT-B/32"
    s.log(f"[train_step] building {variant}, batch {batch}")
    k, hf = build_pair(variant)
    captions, source = caption_source()
    tokens = ClipTokenizer(77)(captions[:batch])
    pixels = torch.randn(batch, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    models = {"kizuna": k, "hf": hf, "kizuna_mkl": copy.deepcopy(k), "kizuna_pad": copy.deepcopy(k)}
    models["kizuna_pad"].text.trim_padding = False
    kept = positions_run(k, tokens)
    opts = {}
    for name, m in models.items():
        m.train()
        opts[name] = step_optimizer(m)

    def kizuna_step(m, opt):
        def features():
            out = m(pixels, tokens)
            return out["image_features"], out["text_features"], out["logit_scale"]
        return clip_train_step(features, opt)

    def mkl_step():
        with plain_linears():
            return kizuna_step(models["kizuna_mkl"], opts["kizuna_mkl"])

    def hf_step():
        def features():
            out = hf(input_ids=tokens, pixel_values=pixels)
            return out.image_embeds, out.text_embeds, hf.logit_scale.exp()
        return clip_train_step(features, opts["hf"])

    # Same loss at the first step (identical weights and inputs); the models then drift apart only by
    # floating-point rounding, which does not change the work.
    pad_step = lambda: kizuna_step(models["kizuna_pad"], opts["kizuna_pad"])
    first = {"kizuna": float(kizuna_step(k, opts["kizuna"])), "hf": float(hf_step()), "kizuna_mkl": float(mkl_step()),
             "kizuna_pad": float(pad_step())}
    fns = {"kizuna": lambda: kizuna_step(k, opts["kizuna"]), "hf": hf_step, "kizuna_mkl": mkl_step,
           "kizuna_pad": pad_step}
    t = interleaved(fns, s.reps, max(0, s.warmup - 1), items=batch, max_reps=s.max_reps)  # the loss check above was a warm-up step
    r = t["kizuna"].rate / t["hf"].rate
    m, p = t["kizuna_mkl"], t["kizuna_pad"]
    rows = [[variant, batch, f"{t['kizuna'].rate:.2f}", f"{t['hf'].rate:.2f}", f"**{r:.2f}x**",
             f"{m.rate:.2f} ({m.rate / t['hf'].rate:.2f}x)", f"{t['kizuna'].rate / m.rate:.2f}x",
             f"{p.rate:.2f} ({p.rate / t['hf'].rate:.2f}x)", f"{t['kizuna'].rate / p.rate:.2f}x",
             f"{t['kizuna'].median:.2f} / {t['hf'].median:.2f} / {m.median:.2f} / {p.median:.2f}",
             " / ".join(spread_text(x) for x in (t["kizuna"], t["hf"], m, p)),
             " / ".join(faults_text(t[n]) for n in ("kizuna", "hf", "kizuna_mkl", "kizuna_pad"))]]
    table = md_table(["model", "batch", "kizuna images/s", "HF images/s", "kizuna ÷ HF",
                      f"{PLAIN_LABEL} images/s (÷ HF)", "kizuna ÷ plain", f"{PAD_LABEL} images/s (÷ HF)",
                      "kizuna ÷ padding kept", "s per step kizuna / HF / plain / padding kept",
                      "spread kizuna / HF / plain / padding kept",
                      "page faults per step kizuna / HF / plain / padding kept"], rows, align="lrrrrrrrrrrr")
    notes = [
        f"Batch {batch} image-text pairs (random 224x224 pixels, 77-token Flickr8k captions from {source}); "
        "an image/s figure counts one pair as one image.",
        "First-step loss (identical weights, same inputs): " + ", ".join(
            f"{LABELS[n]} {v:.6f}" for n, v in first.items()) + ".",
        f"\"kizuna\" is kizuna as shipped (CPU fp32 linears on {GEMM_NAMES[shipped_gemm()]}, "
        "`kizuna.models.layers.GEMM`, chosen by CPU vendor); "
        f"\"{PLAIN_LABEL}\" is a copy of the same model, with its own optimizer, stepped inside "
        "`common.plain_linears` (plain `F.linear`, MKL sgemm), interleaved with the others: "
        "\"kizuna ÷ plain\" is what the GEMM choice is worth for training (training does not fuse)."
        + (" On this CPU kizuna as shipped trains on MKL too (MKL's AVX-512 GEMM is the faster one on Intel), "
           "so the two kizuna contenders run the same path." if shipped_gemm() == "mkl" else ""),
        "HF with its default attention (`sdpa`), dropout 0 (CLIP's config), no gradient checkpointing on either side.",
        "Page faults: median minor page faults per step (fresh memory from the OS, zero-filled on first touch; how "
        "many a step takes depends on glibc's allocator state in this process, see docs/PERFORMANCE.md).",
        f"kizuna's causal text tower runs the batch up to its last end-of-text token, {kept} of the 77 positions "
        "here (`TextTransformer.trim_padding`; exact, the positions after it cannot reach the pooled feature: same "
        f"first-step loss). \"{PAD_LABEL}\" is a third copy with the trim off, running all 77 like HF: "
        "\"kizuna ÷ padding kept\" is what the trim is worth, and the padding-kept ÷ HF ratio compares "
        "like with like in everything but the last blocks.",
        "Every kizuna contender runs the last block of each tower for the pooled token only (`prune_last_block`: "
        "exact in the forward and the backward, tests/models/test_prune.py); the encode section measures what "
        "that is worth.",
    ]
    targets = [{"target": f"train step: kizuna >= {TARGET}x HF, {variant} batch {batch}", "value": f"{r:.2f}x",
                "met": r >= TARGET}]
    return {"title": TITLE, "md": table, "notes": notes, "targets": targets,
            "data": {"variant": variant, "batch": batch, "ratio": round(r, 4),
                     "ratio_onednn_vs_mkl": round(t["kizuna"].rate / m.rate, 4),
                     "ratio_trim_vs_padding": round(t["kizuna"].rate / p.rate, 4), "positions_run": kept,
                     "first_loss": first,
                     "timings": {n: v.as_dict() for n, v in t.items()}}}
