"""Utilisation: achieved FLOP/s of the encoders over the machine's measured fp32 matmul peak.

FLOPs per image/text come from ``kizuna.models.flops`` (2 x multiply-accumulates of every matmul/conv,
element-wise work left out; tested against a hand count). Achieved FLOP/s = FLOPs per item x items/s at
batch 32, taken from the ``encode`` section of the same run (or measured here when it did not run).

Two peaks are measured, each the best of several large square matmuls (2048-4096) on all threads:
``torch.mm`` (fp32 ``mm`` goes to MKL, which does not use AVX-512 on non-Intel CPUs) and oneDNN's matmul
(``torch.ops.mkldnn._linear_pointwise``, what kizuna's linears call on AMD; same sizes). Utilisation is
given against both, for kizuna as shipped (linears on ``kizuna.models.layers.GEMM``'s library, fused
blocks), kizuna as a plain model (MKL ``F.linear``, unfused) and HF. The target is checked against the *higher* of the two peaks: that is the machine's
real fp32 matmul peak.
"""
from __future__ import annotations

import time

import torch

from .common import PLAIN_LABEL, Settings, interleaved, md_table, onednn_matmul, positions_run, shipped_note, with_plain_linears

NAME = "utilization"
TITLE = "Utilisation of the fp32 matmul peak"
TARGET = 0.5
LABELS = {"kizuna": "kizuna", "kizuna_mkl": PLAIN_LABEL, "hf": "HF"}


def _best_gflops(fn, n: int, tries: int) -> float:
    fn()
    best = min(_timed(fn) for _ in range(tries))
    return 2 * n**3 / best / 1e9


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def measure_peak(sizes=(2048, 3072, 4096), tries: int = 5) -> dict:
    out = {"mkl_mm": {}, "onednn": {}}
    g = torch.Generator().manual_seed(0)
    for n in sizes:
        a, b = torch.randn(n, n, generator=g), torch.randn(n, n, generator=g)
        c = torch.empty(n, n)
        out["mkl_mm"][n] = _best_gflops(lambda: torch.mm(a, b, out=c), n, tries)
        lp = onednn_matmul()
        if lp is not None:
            bt = b.t().contiguous()
            out["onednn"][n] = _best_gflops(lambda: lp(a, bt, None, "none", [], ""), n, tries)
    return out


def _own_encode(s: Settings) -> list[dict]:
    """kizuna-only timings at batch 32 (as shipped and as a plain model) when ``encode`` did not run here."""
    from .common import build_pair, caption_source
    from kizuna.data.tokenizer import ClipTokenizer

    b = 4 if s.quick else 32
    variants = ["ViT-B/32"] if s.quick else ["ViT-B/32", "ViT-B/16"]
    tokens = ClipTokenizer(77)(caption_source()[0][:b])
    pixels = torch.randn(b, 3, 224, 224)
    rows = []
    for v in variants:
        k, hf = build_pair(v)
        del hf
        with torch.inference_mode():
            fns = {"image/kizuna": lambda: k.encode_image(pixels)}
            fns["image/kizuna_mkl"] = with_plain_linears(fns["image/kizuna"])
            if v == "ViT-B/32":
                fns["text/kizuna"] = lambda: k.encode_text(tokens)
                fns["text/kizuna_mkl"] = with_plain_linears(fns["text/kizuna"])
            t = interleaved(fns, s.reps, s.warmup, items=b, max_reps=s.max_reps)
        for tower in ("image", "text"):
            if f"{tower}/kizuna" in t:
                rows.append({"variant": v, "tower": tower, "batch": b,
                             "positions_run": positions_run(k, tokens) if tower == "text" else None,
                             "timings": {n: t[f"{tower}/{n}"].as_dict() for n in ("kizuna", "kizuna_mkl")}})
    return rows


def run(s: Settings) -> dict:
    import kizuna
    from kizuna.models.flops import text_flops, vision_flops

    enc = s.extra.get("encode")
    own = enc is None
    rows = _own_encode(s) if own else enc["data"]["rows"]
    s.log("[utilization] measuring the matmul peak")
    peak = measure_peak(sizes=(1024, 2048) if s.quick else (2048, 3072, 4096), tries=3 if s.quick else 5)
    p_mkl = max(peak["mkl_mm"].values())
    p_dnn = max(peak["onednn"].values()) if peak["onednn"] else None
    p_best = max(p_mkl, p_dnn or 0.0)
    best_name = "oneDNN matmul" if p_dnn and p_dnn > p_mkl else "torch.mm"
    avx512 = "AVX512" in torch.backends.cpu.get_cpu_capability()

    def flops_per_item(r, contender: str) -> int:
        # Texts: the FLOPs of the positions a contender runs. kizuna's trim stops at the batch's last
        # end-of-text; counting the skipped padding would inflate its figure. HF runs all 77.
        # Images and texts: kizuna runs its last block for the pooled token only (prune_last_block), HF the
        # whole block; each is credited with the FLOPs it runs.
        cfg = kizuna.clip_config(r["variant"].replace("/", "-"))
        ours = contender in ("kizuna", "kizuna_mkl")
        if r["tower"] == "image":
            return vision_flops(cfg.vision, pruned=ours)
        trimmed = ours and r.get("positions_run")
        return text_flops(cfg.text, context_length=r["positions_run"] if trimmed else cfg.text.context_length,
                          pruned=ours)

    big = max(r["batch"] for r in rows)
    table, data, targets = [], [], []
    for r in rows:
        if r["batch"] != big:
            continue
        for name in [n for n in LABELS if n in r["timings"]]:
            f = flops_per_item(r, name)
            tm = r["timings"][name]
            achieved = f * tm["items_per_s"] / 1e9  # at the median run
            # At the fastest run: the peak is a best-of too, so this compares the same machine state (the
            # one no neighbour disturbed) on both sides of the ratio.
            achieved_best = f * tm["items_per_call"] / min(tm["runs_s"]) / 1e9
            u_mkl, u_dnn = achieved_best / p_mkl, (achieved_best / p_dnn if p_dnn else None)
            u_best, u_median = achieved_best / p_best, achieved / p_best
            bold = lambda u, is_best: f"**{u:.0%}**" if is_best else f"{u:.0%}"
            table.append([r["variant"], r["tower"], LABELS[name], r["batch"], f"{f / 1e9:.2f}",
                          f"{achieved_best:.1f} / {achieved:.1f}",
                          bold(u_mkl, best_name == "torch.mm"),
                          bold(u_dnn, best_name != "torch.mm") if u_dnn is not None else "-", f"{u_median:.0%}"])
            data.append({"variant": r["variant"], "tower": r["tower"], "contender": name, "batch": r["batch"],
                         "gflop_per_item": f / 1e9, "achieved_gflops": achieved_best,
                         "achieved_gflops_median_run": achieved, "util_vs_mm_peak": u_mkl,
                         "util_vs_onednn_peak": u_dnn, "util_vs_best_peak": u_best,
                         "util_vs_best_peak_median_run": u_median})
            if name == "kizuna":
                targets.append({"target": f"utilisation: kizuna >= {TARGET:.0%} of the measured fp32 matmul peak "
                                          f"({best_name}, the higher of the two), {r['variant']} {r['tower']} "
                                          f"batch {r['batch']}", "value": f"{u_best:.0%}", "met": u_best >= TARGET})
    ptab = md_table(["n (square fp32, all threads)", "torch.mm (MKL) GFLOP/s", "oneDNN matmul GFLOP/s"],
                    [[n, f"{peak['mkl_mm'][n]:.1f}", f"{peak['onednn'][n]:.1f}" if n in peak["onednn"] else "-"]
                     for n in peak["mkl_mm"]], align="lrr")
    tag = lambda is_best: " (target's peak)" if is_best else ""
    utab = md_table(["model", "tower", "contender", "batch", "GFLOP per item (kizuna.models.flops)",
                     "achieved GFLOP/s, fastest / median run",
                     f"fastest run vs torch.mm peak {p_mkl:.0f}{tag(best_name == 'torch.mm')}",
                     f"fastest run vs oneDNN peak {p_dnn:.0f}{tag(best_name != 'torch.mm')}" if p_dnn
                     else "fastest run vs oneDNN peak", f"median run vs peak {p_best:.0f}"],
                    table, align="lllrrrrrr")
    notes = [
        f"Peak = best of {'3' if s.quick else '5'} runs per size, the best size counted: torch.mm {p_mkl:.1f} GFLOP/s"
        + (f", oneDNN {p_dnn:.1f} GFLOP/s ({p_dnn / p_mkl:.2f}x"
           + ("; MKL's sgemm does not use AVX-512 on non-Intel CPUs)." if p_dnn > p_mkl and avx512 else ").")
           if p_dnn else "."),
        "Utilisation compares the encoder's fastest timed run with the peak, which is a best-of-runs figure "
        "too: both then describe the machine when no neighbour disturbed it (on a shared virtual machine the "
        "median run can fall in a slow period that the peak's best run missed, or the other way round; a "
        "median-run encoder over a best-run peak mixes the two). The last column gives the median-run figure.",
        "Encoder rates: " + ("measured here (kizuna as shipped and as a plain model, no HF; `encode` did not run "
                             "in this process)." if own else
                             "the `encode` section's timed runs from this run."),
        f"The target is checked against the higher of the two measured peaks ({best_name}, {p_best:.1f} GFLOP/s, "
        "in bold): that is the machine's real fp32 matmul peak. Against the lower peak utilisation would look "
        "better than it is (a slow GEMM backend lowers the bar).",
        shipped_note() + f" \"{PLAIN_LABEL}\" is the same model inside `common.plain_linears` (plain `F.linear`, "
        "unfused blocks).",
    ]
    return {"title": TITLE, "md": ptab + "\n\n" + utab, "notes": notes, "targets": targets,
            "data": {"peak_gflops": {"mkl_mm": peak["mkl_mm"], "onednn": peak["onednn"]},
                     "peak_mkl": p_mkl, "peak_onednn": p_dnn, "peak_best": p_best, "peak_best_is": best_name,
                     "rows": data, "rates_from": "own" if own else "encode"}}
