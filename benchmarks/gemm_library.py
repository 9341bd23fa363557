"""One fused inference block on oneDNN and on MKL, by the number of token rows it runs (batch x tokens).

kizuna's inference blocks fuse bias, activation and residual adds into their GEMMs on either library
(``kizuna.models.layers``): oneDNN as post-ops, MKL by ``addmm`` into reused buffers and ``addmm_`` onto
residual + bias. Which library is faster depends on the CPU (MKL's sgemm takes a slow path on AMD) and on
the size: ``layers.GEMM`` is chosen by CPU vendor, and where it is MKL, blocks of fewer than
``layers.MKL_MIN_ROWS`` rows run on oneDNN. This section measures the whole block (QuickGELU, as OpenAI's
ViT-B) both ways, interleaved, at the row counts of ViT-B/32 and ViT-B/16 images (50 and 197 tokens,
width 768) and of the text tower (22 tokens after the padding trim, width 512, causal), so that rule can
be checked on any machine. A second table does the same for a plain linear (bias only, no autograd graph),
which follows the same rule outside the blocks (heads, pooling, the pruned last block's query).
"""
from __future__ import annotations

import torch

from .common import Settings, inner_for, interleaved, md_table, onednn_usable, spread_text

NAME = "gemm_library"
TITLE = "Fused block on oneDNN vs MKL, by token rows"


def run(s: Settings) -> dict:
    from kizuna.models import layers

    if not onednn_usable():
        return {"title": TITLE, "md": "Skipped: oneDNN's linear op is not usable here (`layers.ONEDNN` is False).",
                "notes": [], "targets": [], "data": {"skipped": True}}
    # (width, heads, tokens, causal, batches)
    cases = ([(64, 4, 10, False, [1, 8])] if s.quick else
             [(768, 12, 50, False, [1, 4, 8, 32]), (768, 12, 197, False, [1, 2, 4, 32]), (512, 8, 22, True, [1, 8, 32])])
    rows, data = [], []
    saved = layers.GEMM, layers.MKL_MIN_ROWS
    try:
        layers.MKL_MIN_ROWS = 0  # each contender on its library at every size
        for width, heads, tokens, causal, batches in cases:
            torch.manual_seed(0)
            block = layers.Block(width, heads, 4 * width, act="quick_gelu").eval()
            for batch in batches:
                x = torch.randn(batch, tokens, width)
                workspace: dict = {}
                t = _both_libraries(s, layers, lambda: block(x, causal=causal, workspace=workspace)[0],
                                    f"width {width}, {batch} x {tokens} = {batch * tokens} rows", 0.3)
                data.append({"width": width, "tokens": tokens, "batch": batch, "rows": batch * tokens,
                             "causal": causal, "mkl_speedup": round(t["onednn"].median / t["mkl"].median, 4),
                             "timings": {n: v.as_dict() for n, v in t.items()}})
                rows.append([width, tokens, batch, batch * tokens, f"{t['onednn'].median * 1e3:.2f}",
                             f"{t['mkl'].median * 1e3:.2f}", f"**{data[-1]['mkl_speedup']:.2f}x**",
                             f"{spread_text(t['onednn'])} / {spread_text(t['mkl'])}"])
        lin_rows, lin_data = _plain_linears(s, layers)
    finally:
        layers.GEMM, layers.MKL_MIN_ROWS = saved
    # What kizuna as shipped picks at each size: the library's own rule, with the settings restored.
    for table_rows, entries in ((rows, data), (lin_rows, lin_data)):
        for row, entry in zip(table_rows, entries):
            entry["shipped"] = layers.inference_library(entry["rows"])
            row.append("MKL" if entry["shipped"] == "mkl" else "oneDNN")
    table = md_table(["width", "tokens", "batch", "rows", "oneDNN, ms per block", "MKL, ms per block",
                      "oneDNN ÷ MKL (time; > 1: MKL faster)", "spread oneDNN / MKL", "kizuna as shipped here"],
                     rows, align="rrrrrrrrl")
    notes = [
        f"kizuna as shipped here: `layers.GEMM` = `{saved[0]}` (chosen by CPU vendor; `KIZUNA_GEMM` overrides)"
        + (f", inference under {saved[1]} rows on oneDNN (`layers.MKL_MIN_ROWS`, `KIZUNA_MKL_MIN_ROWS`)."
           if saved[0] == "mkl" else "."),
        "One random-init pre-LN block with QuickGELU, `torch.inference_mode()`, the fused path (the numbers of "
        "both libraries agree to 1e-4, checked here; whole blocks are tested in tests/models/test_gemm.py).",
    ]
    lin_table = md_table(["in -> out features", "rows", "oneDNN, ms", "MKL (`F.linear`), ms",
                          "oneDNN ÷ MKL (time; > 1: MKL faster)", "kizuna as shipped here"], lin_rows, align="lrrrrl")
    return {"title": TITLE, "md": table + "\n\nPlain linear (`layers.linear` without an autograd graph):\n\n" + lin_table,
            "notes": notes, "targets": [], "data": {"rows": data, "linear": lin_data}}


def _both_libraries(s: Settings, layers, compute, what: str, target_s: float) -> dict:
    """Timings of ``compute()`` with ``layers.GEMM`` set to oneDNN and to MKL, interleaved, once both are
    checked to give the same numbers."""
    def on(lib):
        def call():
            layers.GEMM = lib
            return compute()
        return call

    fns = {"onednn": on("onednn"), "mkl": on("mkl")}
    with torch.inference_mode():
        torch.testing.assert_close(fns["onednn"](), fns["mkl"](), atol=1e-4, rtol=1e-4)
        inner = inner_for(fns["onednn"], target_s)
        s.log(f"[{NAME}] {what} ({inner} calls per run)")
        return interleaved(fns, s.reps, s.warmup, inner=inner, max_reps=s.max_reps)


def _plain_linears(s: Settings, layers) -> tuple[list, list]:
    shapes = [(64, 256)] if s.quick else [(768, 2304), (3072, 768)]
    counts = [10, 80] if s.quick else [16, 50, 197, 400, 1600]
    rows, data = [], []
    g = torch.Generator().manual_seed(0)
    for k, n in shapes:
        w, b = torch.randn(n, k, generator=g) * k**-0.5, torch.randn(n, generator=g)
        for m in counts:
            x = torch.randn(m, k, generator=g)
            t = _both_libraries(s, layers, lambda: layers.linear(x, w, b), f"linear {k} -> {n}, {m} rows", 0.2)
            ratio = t["onednn"].median / t["mkl"].median
            rows.append([f"{k} -> {n}", m, f"{t['onednn'].median * 1e3:.3f}", f"{t['mkl'].median * 1e3:.3f}",
                         f"**{ratio:.2f}x**"])
            data.append({"in": k, "out": n, "rows": m, "mkl_speedup": round(ratio, 4),
                         "timings": {name: v.as_dict() for name, v in t.items()}})
    return rows, data
