"""The MLP's first GEMM with its activation: fused into oneDNN's GEMM (a post-op) or applied in place after it.

kizuna's inference block runs fc1 as one oneDNN call. Where the activation goes is a choice that depends
on the CPU (``kizuna.models.layers.FUSE_ACTIVATION``: fused where torch runs AVX-512 kernels, in place
elsewhere); this section measures both placements on fc1 of ViT-B/16 and ViT-B/32 at batch 32
(6,304 and 1,600 token rows, 768 -> 3,072), for GELU (erf) and SiLU (QuickGELU is SiLU of a scaled input),
with the plain GEMM as the floor. Random fp32 inputs; ``torch.inference_mode()``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .common import Settings, interleaved, md_table, onednn_matmul

NAME = "fusion"
TITLE = "fc1 activation: fused into the oneDNN GEMM or in place after it"


def run(s: Settings) -> dict:
    from kizuna.models import layers

    lp = onednn_matmul()
    if lp is None:
        return {"title": TITLE, "md": "Skipped: oneDNN's linear op is not available in this torch build.",
                "notes": [], "targets": [], "data": {"skipped": True}}
    shapes = {"ViT-B/16": 32 * 197, "ViT-B/32": 32 * 50} if not s.quick else {"tiny": 64}
    k, n = (768, 3072) if not s.quick else (64, 256)
    g = torch.Generator().manual_seed(0)
    w, b = torch.randn(n, k, generator=g) * k**-0.5, torch.randn(n, generator=g)
    rows, data = [], {}
    with torch.inference_mode():
        for model, m in shapes.items():
            x = torch.randn(m, k, generator=g)
            fns = {
                "plain": lambda: lp(x, w, b, "none", [], ""),
                "gelu_fused": lambda: lp(x, w, b, "gelu", [], "none"),
                "gelu_in_place": lambda: torch.ops.aten.gelu_(lp(x, w, b, "none", [], "")),
                "silu_fused": lambda: lp(x, w, b, "swish", [], ""),
                "silu_in_place": lambda: F.silu(lp(x, w, b, "none", [], ""), inplace=True),
            }
            torch.testing.assert_close(fns["gelu_fused"](), fns["gelu_in_place"](), atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(fns["silu_fused"](), fns["silu_in_place"](), atol=1e-4, rtol=1e-4)
            s.log(f"[{NAME}] fc1 of {model} ({m} rows)")
            t = interleaved(fns, s.reps, s.warmup, max_reps=s.max_reps)
            ms = {name: r.median * 1e3 for name, r in t.items()}
            for act in ("gelu", "silu"):
                fused, inplace = ms[f"{act}_fused"], ms[f"{act}_in_place"]
                rows.append([model, m, act.upper() if act == "gelu" else "SiLU (QuickGELU)", f"{ms['plain']:.1f}",
                             f"{fused:.1f} ({fused - ms['plain']:+.1f})", f"{inplace:.1f} ({inplace - ms['plain']:+.1f})",
                             f"**{fused / inplace:.2f}x**"])
            data[model] = {"rows": m, "timings": {name: r.as_dict() for name, r in t.items()}}
    table = md_table(["model", "token rows", "activation", "GEMM alone, ms", "fused post-op, ms (+ activation)",
                      "in place after, ms (+ activation)", "fused ÷ in place (time)"], rows, align="lrlrrrr")
    placement = "fused (post-op)" if layers.FUSE_ACTIVATION else "in place after the GEMM"
    notes = [
        f"kizuna on this machine: the activation is **{placement}** (`kizuna.models.layers.FUSE_ACTIVATION`, "
        f"from torch's CPU capability `{torch.backends.cpu.get_cpu_capability()}`; `KIZUNA_FUSE_ACTIVATION=0/1` "
        "overrides).",
        "\"fused ÷ in place\" > 1 means the post-op costs more than a separate in-place pass over the output. "
        "Both give the same numbers (checked here to 1e-4, and in tests/models/test_gemm.py for whole blocks).",
    ]
    return {"title": TITLE, "md": table, "notes": notes, "targets": [],
            "data": {"shapes": data, "fuse_activation": bool(layers.FUSE_ACTIVATION)}}
