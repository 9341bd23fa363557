"""bf16 on the CPU: encoding and a training step where the CPU does bf16 matmuls natively (AMX, AVX-512 BF16).

On a CPU with AMX, oneDNN's bf16 matmul runs several times faster than the best fp32 one, so a bf16 model
is the fast way to encode there, and bf16 autocast a faster way to train a large model. This section
measures what that is worth, against HF ``CLIPModel`` in the same precision and identical weights:

- encoding, batch 32, ``torch.inference_mode()``: each model cast with ``.to(torch.bfloat16)`` (what
  ``--precision bf16`` does in kizuna's evaluation and apps, and HF's ``torch_dtype=torch.bfloat16``);
  contenders kizuna bf16 (fused blocks on oneDNN, ``kizuna.models.layers.ONEDNN_BF16``), HF bf16, the
  same kizuna bf16 model unfused (``common.plain_linears``), and kizuna fp32 (as shipped for inference);
- a ViT-B/32 training step at batch 32 (forward, CLIP loss, backward, AdamW), fp32 weights under
  ``torch.autocast("cpu", torch.bfloat16)`` (``--precision bf16`` in the trainers) for kizuna and HF, and
  kizuna's fp32 step;
- the bf16 matmul peak (``torch.mm``, square, all threads) and each encoder's share of it.

Where bf16 is not native (the measured bf16 peak under 1.5x the fp32 one, or oneDNN's bf16 op missing), the
section measures the peaks only and says so: bf16 there is slower than fp32 and nobody should use it.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from .common import (TINY, Settings, build_pair, caption_source, clip_train_step, faults_text, interleaved, md_table, pooled,
                     spread_text, step_optimizer, with_plain_linears)

NAME = "bf16"
TITLE = "bf16 on the CPU (AMX, AVX-512 BF16) vs Hugging Face CLIPModel in bf16"
LABELS = {"kizuna": "kizuna bf16", "hf": "HF bf16", "kizuna_plain": "kizuna bf16, unfused",
          "kizuna_fp32": "kizuna fp32"}
NATIVE = 1.5  # bf16 peak / fp32 peak above which bf16 counts as native here


def _peak(dtype: torch.dtype, sizes, tries: int) -> dict[int, float]:
    """torch.mm GFLOP/s in ``dtype`` per square size, best of ``tries``; for fp32 the faster of torch.mm and
    oneDNN's matmul, as ``utilization``'s peak (on AMD torch.mm is MKL's slow path: the bf16/fp32 ratio read
    2.2x against it, 1.9x against the machine's real fp32 peak)."""
    from .utilization import _best_gflops, measure_peak

    if dtype == torch.float32:
        both = measure_peak(sizes, tries)
        return {n: max(both["mkl_mm"][n], both["onednn"].get(n, 0.0)) for n in sizes}

    g = torch.Generator().manual_seed(0)
    out = {}
    for n in sizes:
        a, b = (torch.randn(n, n, generator=g).to(dtype) for _ in range(2))
        c = torch.empty(n, n, dtype=dtype)
        # into one output, as the fp32 peak is timed: a fresh 32 MiB output per call page-faulted (8,193 faults a
        # call at n=4096 under glibc's defaults) and read the bf16 peak up to 25% low
        out[n] = _best_gflops(lambda: torch.mm(a, b, out=c), n, tries)
    return out


def _texts(n: int) -> torch.Tensor:
    from kizuna.data.tokenizer import ClipTokenizer

    return ClipTokenizer(77)(caption_source()[0][:n])


def _min_cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return F.cosine_similarity(a.float(), b.float(), dim=-1).min().item()


def run(s: Settings) -> dict:
    from kizuna.models import layers
    from kizuna.models.flops import text_flops, vision_flops

    sizes = (512, 1024) if s.quick else (2048, 3072, 4096)
    tries = 3 if s.quick else 5
    s.log("[bf16] measuring the fp32 and bf16 matmul peaks")
    peaks = {"fp32": _peak(torch.float32, sizes[:1], tries), "bf16": _peak(torch.bfloat16, sizes[:1], tries)}
    native = layers.ONEDNN_BF16 and peaks["bf16"][sizes[0]] >= NATIVE * peaks["fp32"][sizes[0]]
    if native:
        peaks = {"fp32": _peak(torch.float32, sizes, tries), "bf16": _peak(torch.bfloat16, sizes, tries)}
    p32, p16 = max(peaks["fp32"].values()), max(peaks["bf16"].values())
    ptable = md_table(["n (square, all threads)", "fp32 GFLOP/s (torch.mm or oneDNN, the faster)",
                       "torch.mm bf16 GFLOP/s"],
                      [[n, f"{peaks['fp32'][n]:,.0f}", f"{peaks['bf16'][n]:,.0f}"] for n in peaks["fp32"]], align="lrr")
    data = {"peak_fp32": p32, "peak_bf16": p16, "peaks": peaks, "native": native,
            "onednn_bf16": layers.ONEDNN_BF16, "encode": [], "train_step": None, "parity": []}
    if not native:
        why = ("oneDNN's bf16 linear is unavailable or failed its start-up check (`layers.ONEDNN_BF16` is False)"
               if not layers.ONEDNN_BF16 else
               f"the bf16 matmul peak ({p16:,.0f} GFLOP/s) is under {NATIVE}x the fp32 one ({p32:,.0f})")
        return {"title": TITLE, "md": ptable, "targets": [], "data": data,
                "notes": [f"bf16 is not native on this CPU: {why}. Encoders and the training step were not "
                          "timed; use fp32 here."]}

    batch = 4 if s.quick else 32
    variants = [TINY] if s.quick else ["ViT-B/32", "ViT-B/16"]  # quick: a smoke run on a two-block model
    tokens = _texts(batch)
    rows, urows = [], []
    for variant in variants:
        s.log(f"[bf16] building {variant}")
        k32, hf32 = build_pair(variant)
        k16, hf16 = copy.deepcopy(k32).to(torch.bfloat16), copy.deepcopy(hf32).to(torch.bfloat16)
        cfg = k32.cfg
        size = cfg.vision.image_size
        pixels = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
        towers = ["image"] if variant == "ViT-B/16" else ["image", "text"]
        with torch.inference_mode():
            for tower in towers:
                if tower == "image":
                    kfn = lambda m: (lambda: m.encode_image(pixels))
                    hfn = lambda m: (lambda: pooled(m.get_image_features(pixel_values=pixels.to(m.dtype))))
                else:
                    kfn = lambda m: (lambda: m.encode_text(tokens))
                    hfn = lambda m: (lambda: pooled(m.get_text_features(input_ids=tokens)))
                ref = hfn(hf32)()
                for name, fn in (("kizuna", kfn(k16)), ("hf", hfn(hf16)), ("kizuna_fp32", kfn(k32))):
                    data["parity"].append({"variant": variant, "tower": tower, "contender": name,
                                           "min_cosine_vs_hf_fp32": _min_cos(fn(), ref)})
                fns = {"kizuna": kfn(k16), "hf": hfn(hf16), "kizuna_plain": with_plain_linears(kfn(k16)),
                       "kizuna_fp32": kfn(k32)}
                s.log(f"[bf16] {variant} {tower} batch {batch}")
                t = interleaved(fns, s.reps, s.warmup, items=batch, max_reps=s.max_reps)
                r = t["kizuna"].rate / t["hf"].rate
                unit = "images/s" if tower == "image" else "texts/s"
                rows.append([variant, f"{tower} ({unit})", batch, f"{t['kizuna'].rate:.1f}", f"{t['hf'].rate:.1f}",
                             f"**{r:.2f}x**", f"{t['kizuna_plain'].rate:.1f} ({t['kizuna'].rate / t['kizuna_plain'].rate:.2f}x)",
                             f"{t['kizuna_fp32'].rate:.1f} (**{t['kizuna'].rate / t['kizuna_fp32'].rate:.2f}x**)",
                             " / ".join(spread_text(t[n]) for n in ("kizuna", "hf")),
                             " / ".join(faults_text(t[n]) for n in ("kizuna", "hf"))])
                # FLOPs each contender runs: kizuna prunes its last block to the pooled token and trims texts
                # to the batch's last end-of-text token (as in `utilization`); HF runs everything.
                kept = k16.text.positions_run(tokens)
                for name in ("kizuna", "hf"):
                    ours = name == "kizuna"
                    f = (vision_flops(cfg.vision, pruned=ours) if tower == "image" else
                         text_flops(cfg.text, context_length=kept if ours else cfg.text.context_length, pruned=ours))
                    achieved = f * batch / min(t[name].runs) / 1e9
                    urows.append([variant, tower, LABELS[name], f"{f / 1e9:.2f}", f"{achieved:,.0f}",
                                  f"{achieved / p16:.0%}"])
                data["encode"].append({"variant": variant, "tower": tower, "batch": batch, "ratio_vs_hf_bf16": r,
                                       "ratio_vs_kizuna_fp32": t["kizuna"].rate / t["kizuna_fp32"].rate,
                                       "ratio_fused_vs_unfused": t["kizuna"].rate / t["kizuna_plain"].rate,
                                       "timings": {n: v.as_dict() for n, v in t.items()}})
        del k16, hf16
        if variant == "ViT-B/16":
            del k32, hf32
            continue
        s.log(f"[bf16] {variant} training step, batch {batch}")
        step = _train_step(s, k32, hf32, pixels, tokens)
        rows_step = step.pop("rows")
        data["train_step"] = step
        del k32, hf32

    s.log("[bf16] pretrained MiniLM on real captions")
    minilm = _pretrained_minilm(s)
    data["pretrained_minilm"] = minilm

    etable = md_table(["model", "input", "batch", LABELS["kizuna"], LABELS["hf"], "kizuna ÷ HF (bf16)",
                       f"{LABELS['kizuna_plain']} (fused ÷ it)", f"{LABELS['kizuna_fp32']} (bf16 ÷ fp32)",
                       "spread kizuna / HF", "page faults per call kizuna / HF"], rows, align="llrrrrrrrr")
    utable = md_table(["model", "tower", "contender", "GFLOP per item", "achieved GFLOP/s (fastest run)",
                       f"of the bf16 peak {p16:,.0f}"], urows, align="lllrrr")
    stable = md_table(["contender", "s per step", "kizuna bf16 ÷ it", "page faults per step"], rows_step, align="lrrr")
    cos = md_table(["model", "tower", "contender", "min cosine vs HF fp32"],
                   [[p["variant"], p["tower"], LABELS[p["contender"]], f"{p['min_cosine_vs_hf_fp32']:.5f}"]
                    for p in data["parity"]], align="lllr")
    parts = [ptable, "**Encoding**", etable, "**Share of the bf16 matmul peak**", utable,
             f"**Training step, {variants[0]}, batch {batch}**", stable, "**Agreement with fp32**", cos]
    if "skipped" in minilm:
        parts.append(f"**Pretrained weights:** not measured ({minilm['skipped']}).")
    else:
        parts += ["**Pretrained weights: all-MiniLM-L6-v2 (kizuna's `minilm` text tower) on real captions**", md_table(
            ["captions", "fp32 s", "bf16 s", "bf16 ÷ fp32", "min / mean cosine bf16 vs fp32",
             "nearest other caption, same in both"],
            [[f"{minilm['captions']:,}", f"{minilm['fp32_s']:.2f}", f"{minilm['bf16_s']:.2f}",
              f"{minilm['fp32_s'] / minilm['bf16_s']:.2f}x", f"{minilm['min_cosine']:.5f} / {minilm['mean_cosine']:.5f}",
              f"{minilm['neighbour_agreement']:.1%}"]], align="rrrrrr")]
    md = "\n\n".join(parts)
    notes = [
        f"bf16 peak {p16:,.0f} GFLOP/s, fp32 peak {p32:,.0f} GFLOP/s ({p16 / p32:.1f}x); both best of {tries} runs "
        "per size, the best size counted.",
        "Encoding: both models cast to bf16 (`.to(torch.bfloat16)`); kizuna takes float32 pixels and casts them "
        "itself, HF's pixels are cast before the call. Same weights, same inputs.",
        "Training step: fp32 weights and AdamW, forward and loss under `torch.autocast('cpu', torch.bfloat16)`, "
        "as the trainers' `--precision bf16` runs them. The fp32 row is `--precision fp32`, the default on CPUs without bf16 in hardware (AMX, AVX-512 BF16).",
        "The min cosine compares each contender's features with HF's fp32 features of the same weights.",
        "Pretrained weights: the sentence embeddings of the packaged all-MiniLM-L6-v2 (a Hugging Face BERT "
        "encoder, mean-pooled) for Flickr8k captions, 256 per batch, fp32 against a bf16 copy: their cosine, and "
        "how often a caption's nearest other caption is the same in both. The only pretrained weights on this "
        "machine; a check that bf16 keeps what a trained model computes, not only random weights.",
    ]
    return {"title": TITLE, "md": md, "notes": notes, "targets": [], "data": data}


def _pretrained_minilm(s: Settings) -> dict:
    import time

    from .common import flickr_captions

    try:
        from kizuna.models.minilm import MiniLMTextTower, MiniLMTokenizer, minilm_path

        minilm_path()
    except (ImportError, ValueError) as e:
        return {"skipped": f"the MiniLM package is not installed: {e}"}
    captions = flickr_captions()
    if not captions:
        return {"skipped": "the shared Flickr8k captions were not found"}
    captions = captions[: 64 if s.quick else 2000]
    tokens = MiniLMTokenizer()(captions)
    tower = MiniLMTextTower(64)
    tower.load_pretrained_weights()
    tower.eval()
    tower16 = copy.deepcopy(tower).to(torch.bfloat16)

    def embed(m):
        t0 = time.perf_counter()
        out = torch.cat([m.sentence_embeddings(tokens[i : i + 256]) for i in range(0, len(captions), 256)])
        return out.float(), time.perf_counter() - t0

    with torch.inference_mode():
        embed(tower16)  # warm-up: oneDNN's first bf16 calls
        a, t32 = embed(tower)
        b, t16 = embed(tower16)
    cos = F.cosine_similarity(a, b, dim=-1)
    sims = [F.normalize(x, dim=-1) @ F.normalize(x, dim=-1).T for x in (a, b)]
    for m in sims:
        m.fill_diagonal_(-2.0)
    agree = (sims[0].argmax(1) == sims[1].argmax(1)).float().mean().item()
    return {"captions": len(captions), "fp32_s": t32, "bf16_s": t16, "min_cosine": cos.min().item(),
            "mean_cosine": cos.mean().item(), "neighbour_agreement": agree}


def _train_step(s: Settings, k32, hf32, pixels, tokens) -> dict:
    models = {"kizuna": copy.deepcopy(k32), "hf": copy.deepcopy(hf32), "kizuna_fp32": copy.deepcopy(k32)}
    opts = {}
    for name, m in models.items():
        m.train()
        opts[name] = step_optimizer(m)
    from kizuna.train.optim import autocast_for

    bf16 = lambda: autocast_for("bf16", torch.device("cpu"))  # the trainers' own context for --precision bf16

    def kizuna_step(name, autocast):
        m = models[name]

        def features():
            out = m(pixels, tokens)
            return out["image_features"], out["text_features"], out["logit_scale"]
        return lambda: clip_train_step(features, opts[name], autocast() if autocast else None)

    def hf_step():
        m = models["hf"]

        def features():
            out = m(input_ids=tokens, pixel_values=pixels, return_loss=False)
            return out.image_embeds, out.text_embeds, m.logit_scale.exp()
        return clip_train_step(features, opts["hf"], bf16())

    fns = {"kizuna": kizuna_step("kizuna", bf16), "hf": hf_step, "kizuna_fp32": kizuna_step("kizuna_fp32", None)}
    t = interleaved(fns, s.reps, max(1, s.warmup - 1), max_reps=s.reps)
    k = t["kizuna"].median
    rows = [[LABELS[n] if n != "kizuna_fp32" else "kizuna fp32", f"{t[n].median:.2f}", f"{t[n].median / k:.2f}x",
             faults_text(t[n])] for n in fns]
    return {"rows": rows, "ratio_vs_hf_bf16": t["hf"].median / k, "ratio_vs_kizuna_fp32": t["kizuna_fp32"].median / k,
            "timings": {n: v.as_dict() for n, v in t.items()}}
