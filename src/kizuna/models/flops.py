"""Analytic FLOP counts (2 x multiply-accumulates of every matmul/conv), for `kizuna info` and MFU.

Element-wise work (softmax, LayerNorm, GELU) is left out, as in the usual MFU convention; the tests
check these counts against a hand count and against torch's FlopCounterMode.
"""
from __future__ import annotations

from .clip import ClipConfig
from .text import TextConfig
from .vit import VisionConfig


def _block_flops(tokens: int, width: int, mlp_dim: int, rows: int | None = None) -> int:
    """One block over ``tokens`` tokens; ``rows``: only that many query rows computed (the pruned last
    block of a pooled tower, ``Block.forward_rows``: keys and values still for every token)."""
    T, D, R = tokens, width, tokens if rows is None else rows
    kv_q = 2 * T * D * 2 * D + 2 * R * D * D
    return kv_q + 2 * 2 * R * T * D + 2 * R * D * D + 2 * 2 * R * D * mlp_dim


def _transformer_flops(tokens: int, width: int, depth: int, mlp_dim: int, pruned: bool = False) -> int:
    if not depth:
        return 0
    last = _block_flops(tokens, width, mlp_dim, rows=1 if pruned else None)
    return (depth - 1) * _block_flops(tokens, width, mlp_dim) + last


def vision_flops(cfg: VisionConfig, image_size=None, pruned: bool = False) -> int:
    """FLOPs of one image. ``pruned``: as kizuna runs a class-token tower (last block for that token only);
    the default counts the full last block (the model's FLOPs, as other libraries run it)."""
    if image_size is not None:
        cfg = VisionConfig(**{**cfg.to_dict(), "image_size": image_size})
    gh, gw = cfg.grid
    n = gh * gw
    if cfg.stem != "patch":
        raise ValueError("analytic FLOPs are implemented for patch stems only; use measured_flops()")
    flops = 2 * n * (3 * cfg.patch_size**2) * cfg.width
    flops += _transformer_flops(n + cfg.num_prefix_tokens, cfg.width, cfg.depth, cfg.mlp_dim,
                                pruned=pruned and cfg.pool == "cls")
    if cfg.pool == "map":
        T, D = n + cfg.num_prefix_tokens, cfg.width
        flops += 2 * D * D + 2 * T * D * 2 * D + 2 * 2 * T * D + 2 * D * D + 2 * 2 * D * cfg.mlp_dim
    if cfg.output_dim:
        flops += 2 * cfg.width * cfg.output_dim
    if cfg.num_classes:
        flops += 2 * cfg.width * cfg.num_classes
    return flops


def text_flops(cfg: TextConfig, context_length: int | None = None, pruned: bool = False) -> int:
    """FLOPs of one text of ``context_length`` positions; ``pruned``: last block for the pooled token only."""
    T = context_length or cfg.context_length
    flops = _transformer_flops(T, cfg.width, cfg.depth, cfg.mlp_dim, pruned=pruned)
    if cfg.output_dim:
        flops += 2 * cfg.width * cfg.output_dim
    return flops


def clip_flops(cfg: ClipConfig) -> dict[str, int]:
    img, txt = vision_flops(cfg.vision), text_flops(cfg.text)
    return {"image": img, "text": txt, "total": img + txt}


def measured_flops(fn, *args) -> int:
    """FLOPs of one call as counted by torch's FlopCounterMode (matmuls, convs, attention). Attention runs
    on SDPA's math backend here: FlopCounterMode has no count for the CPU's fused kernel, which it would
    add as zero (ViT-mu-8's image tower came out 3% low under no_grad, the SigLIP pool's head missing)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        fn(*args)
    return counter.get_total_flops()
