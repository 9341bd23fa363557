"""Attention analysis on plain tensors: rollout, class-token maps, mean attention distance.

Conventions (what a kizuna ViT returns, and what any other model can be adapted to):

* one attention map per block, shaped ``[B, heads, T, T]`` with rows = queries and
  columns = keys (each row a probability distribution after softmax);
* ``T = num_prefix + grid_h * grid_w``: the prefix tokens (class token first, then any
  register / distillation tokens) come first, then the patch tokens in row-major order
  (patch ``(r, c)`` is token ``num_prefix + r * grid_w + c``).

References: Abnar & Zuidema, "Quantifying Attention Flow in Transformers" (2020) for
rollout; Dosovitskiy et al., "An Image is Worth 16x16 Words" (2021), Fig. 7 (right) and
Appendix D.7 for the mean attention distance.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

from kizuna.analysis.position import _as_grid
from kizuna.models.vit import interpolate_2d

__all__ = [
    "fuse_heads",
    "attention_rollout",
    "check_discard_ratio",
    "cls_rollout_map",
    "last_layer_cls_attention",
    "patch_distance_matrix",
    "mean_attention_distance",
    "attention_distance_by_layer",
    "grid_mean_pairwise_distance",
    "upsample_map",
]

_HEAD_FUSIONS = ("mean", "max", "min")


def _float(t: Tensor) -> Tensor:
    """Half / bfloat16 -> float32; float32 / float64 kept."""
    return t if t.dtype in (torch.float32, torch.float64) else t.float()


def _check_attn(attn: Tensor, name: str = "attention") -> None:
    if attn.dim() != 4 or attn.shape[-1] != attn.shape[-2]:
        raise ValueError(f"{name} must be [B, heads, T, T], got {tuple(attn.shape)}")


def _check_tokens(T: int, grid: tuple[int, int], num_prefix: int) -> None:
    if num_prefix < 0:
        raise ValueError(f"num_prefix must be >= 0, got {num_prefix}")
    if T != num_prefix + grid[0] * grid[1]:
        raise ValueError(
            f"{T} tokens do not match num_prefix={num_prefix} + grid {grid[0]}x{grid[1]}"
            f" = {num_prefix + grid[0] * grid[1]}"
        )


def fuse_heads(attn: Tensor, head_fusion: str = "mean") -> Tensor:
    """Fuse the head dimension of ``[B, H, T, T]`` attention into ``[B, T, T]``."""
    _check_attn(attn)
    if head_fusion == "mean":
        return attn.mean(dim=1)
    if head_fusion == "max":
        return attn.amax(dim=1)
    if head_fusion == "min":
        return attn.amin(dim=1)
    raise ValueError(f"head_fusion must be one of {_HEAD_FUSIONS}, got {head_fusion!r}")


def _discard_lowest(a: Tensor, discard_ratio: float) -> Tensor:
    """Zero the ``floor(discard_ratio * T)`` smallest entries of every query row.

    Done per row (rather than over the whole matrix, as some public implementations do)
    so that every row keeps its strongest keys and stays normalisable.
    """
    T = a.shape[-1]
    n = math.floor(round(discard_ratio * T, 9))  # 0.29 * 100 is 28.999999999999996 in floating point: 29
    n = min(n, T - 1)  # a ratio a hair under 1 rounds to T: every row keeps at least its strongest key
    if n <= 0:
        return a
    idx = a.topk(n, dim=-1, largest=False).indices
    return a.scatter(-1, idx, 0.0)


def check_discard_ratio(discard_ratio: float) -> float:
    """``discard_ratio`` when it is in [0, 1), else a ValueError: a ratio of 1 would drop every attention
    weight of every row, leaving nothing to roll out (NaN is refused too)."""
    if not 0.0 <= discard_ratio < 1.0:
        raise ValueError(f"discard_ratio must be in [0, 1) (the share of each row's weakest attention dropped), "
                         f"got {discard_ratio}")
    return discard_ratio


def attention_rollout(
    attentions: Sequence[Tensor],
    head_fusion: str = "mean",
    add_residual: bool = True,
    discard_ratio: float = 0.0,
) -> Tensor:
    """Attention rollout (Abnar & Zuidema, 2020).

    For each layer ``l`` (in the order given, input side first) the heads are fused
    (``head_fusion``), optionally the lowest ``discard_ratio`` of every query row is set to
    zero, the identity is added for the residual connection (``0.5 * A + 0.5 * I``) and the
    rows are renormalised to sum to one, giving ``Â_l``. The rollout is the product
    ``Â_L @ ... @ Â_2 @ Â_1``: entry ``[b, i, j]`` is how much input token ``j`` flows into
    output token ``i`` of the last layer. Row ``0`` (the class token) is the usual saliency.

    Args:
        attentions: per-block attention maps ``[B, heads, T, T]`` (rows = queries).
        head_fusion: ``"mean"``, ``"max"`` or ``"min"`` over heads.
        add_residual: add the identity for the skip connection (as in the paper).
        discard_ratio: in ``[0, 1)``; fraction of the smallest entries of each row dropped.

    Returns:
        ``[B, T, T]`` row-stochastic rollout (float32, or float64 for float64 inputs).
    """
    if head_fusion not in _HEAD_FUSIONS:
        raise ValueError(f"head_fusion must be one of {_HEAD_FUSIONS}, got {head_fusion!r}")
    check_discard_ratio(discard_ratio)
    attentions = list(attentions)
    if not attentions:
        raise ValueError("attentions is empty")
    result: Tensor | None = None
    for i, attn in enumerate(attentions):
        _check_attn(attn, f"attentions[{i}]")
        if result is not None and attn.shape[-1] != result.shape[-1]:
            raise ValueError(f"attentions[{i}] has {attn.shape[-1]} tokens, expected {result.shape[-1]}")
        a = fuse_heads(_float(attn), head_fusion)
        if discard_ratio > 0:
            a = _discard_lowest(a, discard_ratio)
        if add_residual:
            eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
            a = 0.5 * a + 0.5 * eye
        a = a / a.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(a.dtype).tiny)
        result = a if result is None else a @ result
    assert result is not None
    return result


def _normalize01(m: Tensor) -> Tensor:
    flat = m.flatten(-2)
    lo = flat.amin(-1, keepdim=True).unsqueeze(-1)
    hi = flat.amax(-1, keepdim=True).unsqueeze(-1)
    return (m - lo) / (hi - lo).clamp_min(1e-12)


def cls_rollout_map(
    rollout: Tensor,
    grid: int | Sequence[int],
    num_prefix: int = 1,
    normalize: bool = False,
) -> Tensor:
    """Class-token row of a rollout ``[B, T, T]`` over the patch tokens, as ``[B, h, w]``.

    ``normalize=True`` min-max scales each map to ``[0, 1]`` (handy for overlays).
    """
    h, w = _as_grid(grid)
    if rollout.dim() == 2:
        rollout = rollout.unsqueeze(0)
    if rollout.dim() != 3:
        raise ValueError(f"rollout must be [B, T, T], got {tuple(rollout.shape)}")
    _check_tokens(rollout.shape[-1], (h, w), num_prefix)
    if num_prefix < 1:
        raise ValueError("cls_rollout_map needs a class token (num_prefix >= 1)")
    m = rollout[:, 0, num_prefix:].reshape(rollout.shape[0], h, w)
    return _normalize01(m) if normalize else m


def last_layer_cls_attention(
    attn: Tensor | Sequence[Tensor],
    grid: int | Sequence[int],
    num_prefix: int = 1,
) -> Tensor:
    """Class-token attention to the patch tokens, per head: ``[B, heads, h, w]``.

    ``attn`` is one block's ``[B, heads, T, T]`` map, or the list of all blocks (the last
    one is used).
    """
    if not isinstance(attn, Tensor):
        attn = list(attn)[-1]
    _check_attn(attn)
    h, w = _as_grid(grid)
    _check_tokens(attn.shape[-1], (h, w), num_prefix)
    if num_prefix < 1:
        raise ValueError("last_layer_cls_attention needs a class token (num_prefix >= 1)")
    B, H = attn.shape[:2]
    return attn[:, :, 0, num_prefix:].reshape(B, H, h, w)


def patch_distance_matrix(
    grid: int | Sequence[int],
    patch_size: float = 1.0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """``[N, N]`` Euclidean distances (in pixels) between patch centres, ``N = h * w``.

    Patches are in row-major order; neighbouring patches are ``patch_size`` apart.
    """
    h, w = _as_grid(grid)
    rows = torch.arange(h, dtype=torch.float64, device=device).repeat_interleave(w)
    cols = torch.arange(w, dtype=torch.float64, device=device).repeat(h)
    coords = torch.stack([rows, cols], dim=-1) * float(patch_size)
    return torch.cdist(coords, coords).to(dtype)


def mean_attention_distance(
    attn: Tensor,
    grid: int | Sequence[int],
    patch_size: float,
    num_prefix: int = 1,
) -> Tensor:
    """Mean attention distance per head, in pixels (ViT paper, Fig. 7 right).

    Only patch-to-patch attention is used: for every query patch the attention over key
    patches is renormalised to sum to one, the pixel distance to each key patch is
    weighted by it, and the result is averaged over query patches and the batch.
    Query rows that put no mass at all on patch tokens are left out of the average; a head with
    non-finite attention anywhere (a diverged model) gets NaN.

    Args:
        attn: ``[B, heads, T, T]`` attention of one block.
        grid: patch grid ``(h, w)`` (or an int for a square grid).
        patch_size: patch side in pixels (distance between neighbouring patch centres).
        num_prefix: number of non-patch tokens at the start of the sequence.

    Returns:
        ``[heads]`` float tensor, pixels.
    """
    _check_attn(attn)
    h, w = _as_grid(grid)
    _check_tokens(attn.shape[-1], (h, w), num_prefix)
    a = _float(attn[:, :, num_prefix:, num_prefix:])
    dist = patch_distance_matrix((h, w), patch_size, dtype=a.dtype, device=a.device)
    mass = a.sum(dim=-1)  # [B, H, N]
    weighted = torch.einsum("bhqk,qk->bhq", a, dist)  # unnormalised expected distance
    valid = mass > 0
    per_query = torch.where(valid, weighted / mass.clamp_min(torch.finfo(a.dtype).tiny), 0.0)
    count = valid.sum(dim=(0, 2)).clamp_min(1)
    out = per_query.sum(dim=(0, 2)) / count
    # NaN/Inf attention (a diverged model) fails `mass > 0` and would read as a distance of 0 px, i.e. as
    # perfectly local attention: such heads have no distance, so they are NaN.
    finite = torch.isfinite(a).flatten(2).all(dim=-1).all(dim=0)  # [H]
    return torch.where(finite, out, torch.nan)


def attention_distance_by_layer(
    attentions: Sequence[Tensor],
    grid: int | Sequence[int],
    patch_size: float,
    num_prefix: int = 1,
) -> list[Tensor]:
    """:func:`mean_attention_distance` for every block: a list of ``[heads]`` tensors
    (the input :func:`kizuna.analysis.figures.plot_attention_distance` expects)."""
    return [mean_attention_distance(a, grid, patch_size, num_prefix) for a in attentions]


def grid_mean_pairwise_distance(grid: int | Sequence[int], patch_size: float = 1.0) -> float:
    """Mean distance (pixels) over all ordered pairs of patches, self-pairs included.

    This is what :func:`mean_attention_distance` gives for uniform attention over the patch
    tokens, i.e. the "no locality" reference level.
    """
    return float(patch_distance_matrix(grid, patch_size, dtype=torch.float64).mean())


def upsample_map(
    m: Tensor,
    size: int | Sequence[int],
    mode: str = "bilinear",
) -> Tensor:
    """Resize a ``[h, w]`` (or ``[..., h, w]``) map to ``size = (H, W)`` for overlays.

    Accepts tensors or array-likes; returns a float tensor with the same leading dims.
    ``mode`` is any :func:`torch.nn.functional.interpolate` 2-D mode (``"nearest"`` gives
    blocky patches, ``"bilinear"``/``"bicubic"`` smooth ones).
    """
    t = torch.as_tensor(m)
    if t.dim() < 2:
        raise ValueError(f"map must be at least 2-D, got shape {tuple(t.shape)}")
    if isinstance(size, int):
        size = (size, size)
    size = (int(size[0]), int(size[1]))
    lead = t.shape[:-2]
    x = _float(t).reshape(-1, 1, *t.shape[-2:])
    y = interpolate_2d(x, size, mode)
    return y.reshape(*lead, *size)
