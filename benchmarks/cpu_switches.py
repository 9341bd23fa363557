"""Training-path switches chosen per CPU: the patch embedding as a conv or as one GEMM, and attention through
SDPA or materialised (scores, softmax, @ v).

Both are forward-and-backward choices (training), set from measurements: ``kizuna.models.vit.PATCH_GEMM``
and ``kizuna.models.layers.MATERIALISED_TRAINING_KEYS``. They were first measured on an Intel Xeon; this
section measures both forms side by side on whatever machine runs it, so the rule can be checked (or set)
for another CPU. Shapes are those of ViT-B/32 and ViT-B/16 at 224 px and batch 32, OpenAI's text tower
(77 tokens, causal), and the CIFAR-10 configs at batch 128 (``vit_cifar10``: 8 x 8 patches of 4 px, width
96; ``vit_cifar10_hybrid``: a 1 x 1 "patch" over the ResNet stem's 64 channels). fp32, and bf16 (autocast
for the patch embedding, bf16 tensors for attention, as the model sees them under autocast). Each timed
call is one forward and one backward; both forms are checked to give the same output first.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from .common import Settings, interleaved, md_table

NAME = "cpu_switches"
TITLE = "Per-CPU training switches: patch embedding as conv or GEMM, attention through SDPA or materialised"


def _autocast(dtype: torch.dtype):
    return torch.autocast("cpu", dtype=torch.bfloat16) if dtype == torch.bfloat16 else contextlib.nullcontext()


def _patch_cases(s: Settings):
    # (name, batch, in channels, image size, patch, width, input needs grad)
    if s.quick:
        return [("tiny", 4, 3, 32, 8, 32, False)]
    return [("ViT-B/32", 32, 3, 224, 32, 768, False), ("ViT-B/16", 32, 3, 224, 16, 768, False),
            ("vit_cifar10", 128, 3, 32, 4, 96, False), ("vit_cifar10_hybrid", 128, 64, 8, 1, 96, True)]


def _attention_cases(s: Settings):
    # (name, batch, heads, keys, head dim, causal)
    if s.quick:
        return [("tiny", 2, 2, 10, 8, False)]
    return [("ViT-B/32", 32, 12, 50, 64, False), ("vit_cifar10", 128, 3, 65, 32, False),
            ("text (77, causal)", 32, 8, 77, 64, True), ("ViT-B/16", 32, 12, 197, 64, False)]


def _compare(s: Settings, rows: list, data: dict, op: str, key: str, name: str, dtype: torch.dtype,
             forms: dict) -> None:
    """Check that both forms (name -> a call doing one forward and backward, returning the output) agree,
    time them interleaved, and add a table row (first form's ms, second's, first ÷ second) and the timings."""
    (first, a), (second, b) = forms.items()
    tol = 1e-4 if dtype == torch.float32 else 3e-2
    torch.testing.assert_close(b().float(), a().float(), atol=tol, rtol=tol)
    s.log(f"[{NAME}] {op} of {name}, {str(dtype)[6:]}")
    t = interleaved(forms, s.reps, s.warmup, max_reps=s.max_reps)
    ms = {k: v.median * 1e3 for k, v in t.items()}
    rows.append([op, name, str(dtype)[6:], f"{ms[first]:.1f}", f"{ms[second]:.1f}", f"**{ms[first] / ms[second]:.2f}x**"])
    data[f"{key} {name} {dtype}"] = {k: v.as_dict() for k, v in t.items()}


def _backward(y: torch.Tensor) -> torch.Tensor:
    y.float().square().mean().backward()
    return y


def _patch(s: Settings, rows: list, data: dict) -> None:
    from kizuna.models.vit import patch_gemm

    for name, batch, chans, size, p, width, input_grad in _patch_cases(s):
        g = torch.Generator().manual_seed(0)
        x = torch.randn(batch, chans, size, size, generator=g).requires_grad_(input_grad)
        w = (torch.randn(width, chans, p, p, generator=g) * (chans * p * p) ** -0.5).requires_grad_()
        b = torch.zeros(width, requires_grad=True)
        for dtype in (torch.float32, torch.bfloat16):
            def conv():
                with _autocast(dtype):
                    y = F.conv2d(x, w, b, stride=p)
                return _backward(y)

            def gemm():
                with _autocast(dtype):
                    y = patch_gemm(x, w, b)
                return _backward(y)

            _compare(s, rows, data, "patch embedding", "patch", name, dtype, {"conv": conv, "gemm": gemm})


def _attention(s: Settings, rows: list, data: dict) -> None:
    from kizuna.models.layers import materialised_attention

    for name, batch, heads, keys, hd, causal in _attention_cases(s):
        for dtype in (torch.float32, torch.bfloat16):
            g = torch.Generator().manual_seed(0)
            q, k, v = (torch.randn(batch, heads, keys, hd, generator=g).to(dtype).requires_grad_() for _ in range(3))
            sdpa = lambda: _backward(F.scaled_dot_product_attention(q, k, v, is_causal=causal))  # noqa: E731
            mat = lambda: _backward(materialised_attention(q, k, v, causal=causal)[0])  # noqa: E731
            _compare(s, rows, data, f"attention, {keys} keys", "attention", name, dtype,
                     {"sdpa": sdpa, "materialised": mat})


def run(s: Settings) -> dict:
    from kizuna.models import layers, vit

    rows, data = [], {}
    _patch(s, rows, data)
    _attention(s, rows, data)
    table = md_table(["op (forward + backward)", "shape of", "dtype", "conv / SDPA, ms", "GEMM / materialised, ms",
                      "speed-up of the second form"], rows, align="lllrrr")
    keys = {str(k)[6:]: v for k, v in layers.MATERIALISED_TRAINING_KEYS.items()}
    notes = [
        f"kizuna on this machine: patch embedding as a GEMM: **{vit.PATCH_GEMM}** (`vit.PATCH_GEMM`, "
        "`KIZUNA_PATCH_GEMM=0/1` overrides); attention materialised in training up to "
        f"**{keys or 'no'}** keys (`layers.MATERIALISED_TRAINING_KEYS`, `KIZUNA_MATERIALISED_ATTENTION=0/1` "
        "overrides), SDPA above.",
        "\"speed-up\" > 1 means the second form (GEMM, materialised) is faster. Both forms give the same "
        "outputs (checked here, and with gradients in tests/models/test_vit.py and tests/models/test_gemm.py).",
    ]
    return {"title": TITLE, "md": table, "notes": notes, "targets": [],
            "data": {"timings": data, "patch_gemm": bool(vit.PATCH_GEMM), "materialised_keys": keys}}
