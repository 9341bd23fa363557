"""Where the time goes: ``torch.profiler`` over one batch-32 encode of kizuna, HF and kizuna as a plain model.

"kizuna" is kizuna as shipped (CPU fp32: linears on the library ``kizuna.models.layers.GEMM`` chose,
bias/activation/residual fused into the GEMMs at inference); "kizuna, plain F.linear (unfused)" is the same
model instance called inside ``common.plain_linears`` (``F.linear`` on MKL, unfused blocks).

Top operators by self CPU time, plus minor page faults per call (fresh large allocations from the OS
are zero-filled on first touch; this shows up inside the ops that first write a buffer).
"""
from __future__ import annotations

import torch
from torch.profiler import ProfilerActivity, profile

from .common import (PLAIN_LABEL, Settings, build_pair, caption_source, md_table, minor_faults, pooled, shipped_gemm,
                     with_plain_linears)

NAME = "profile"
TITLE = "Profile (torch.profiler, one batch-32 call after warm-up)"
TOP = 8


def _profile(fn) -> tuple[list[dict], float, int | None]:
    fn()
    fn()
    r0 = minor_faults()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    faults = None if r0 is None else minor_faults() - r0
    ev = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in ev)
    ev.sort(key=lambda e: -e.self_cpu_time_total)
    ops = [{"op": e.key, "calls": e.count, "self_ms": e.self_cpu_time_total / 1e3,
            "share": e.self_cpu_time_total / total} for e in ev]
    return ops, total / 1e3, faults


def run(s: Settings) -> dict:
    from kizuna.data.tokenizer import ClipTokenizer

    b = 4 if s.quick else 32
    k, hf = build_pair("ViT-B/32")
    pixels = torch.randn(b, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    tokens = ClipTokenizer(77)(caption_source()[0][:b])
    parts, data = [], {}
    with torch.inference_mode():
        for tower in ("image", "text"):
            kfn = (lambda: k.encode_image(pixels)) if tower == "image" else (lambda: k.encode_text(tokens))
            fns = {"kizuna": kfn,
                   "HF": ((lambda: pooled(hf.get_image_features(pixel_values=pixels))) if tower == "image"
                          else (lambda: pooled(hf.get_text_features(input_ids=tokens)))),
                   PLAIN_LABEL: with_plain_linears(kfn)}
            res = {}
            for name, fn in fns.items():
                s.log(f"[profile] {tower} {name}")
                res[name] = _profile(fn)
            names = list(res)
            ops_union = []
            for name in names:
                for o in res[name][0][:TOP]:
                    if o["op"] not in ops_union:
                        ops_union.append(o["op"])
            rows = []
            for op in ops_union:
                row = [f"`{op}`"]
                for name in names:
                    o = next((x for x in res[name][0] if x["op"] == op), None)
                    row.append(f"{o['self_ms']:.0f} ms ({o['share']:.0%}, {o['calls']}x)" if o else "-")
                rows.append(row)
            rows.append(["**total self CPU**"] + [f"**{res[n][1]:.0f} ms**" for n in names])
            rows.append(["minor page faults per call"]
                        + ["-" if res[n][2] is None else f"{res[n][2]:,}" for n in names])
            parts.append(f"**{tower} tower, ViT-B/32, batch {b}**\n\n"
                         + md_table(["operator (self time, share, calls)"] + names, rows, align="l" + "r" * len(names)))
            data[tower] = {n: {"ops": res[n][0][:20], "total_ms": res[n][1], "minor_faults": res[n][2]} for n in names}
    notes = [
        "Profiled times include the profiler's overhead and the machine's load; read the shares, not the totals.",
        "`aten::addmm` is the GEMM of every `F.linear` (MKL sgemm: HF, and kizuna as a plain model); its bias is "
        "first broadcast-copied into the output (`aten::copy_`). "
        + ("kizuna as shipped runs oneDNN here: `mkldnn::_linear_pointwise` is its GEMM with the bias, activation "
           "and residual add fused." if shipped_gemm() == "onednn" else
           "kizuna as shipped runs MKL here: `aten::addmm` for qkv and fc1 (into buffers reused across blocks, so "
           "fewer page faults), `aten::addmm_` for proj and fc2 (accumulating into the residual plus bias), "
           "the activation in place (`aten::silu_`)."),
    ]
    return {"title": TITLE, "md": "\n\n".join(parts), "notes": notes, "targets": [], "data": data}
