"""Principal components of the patch-embedding filters (ViT paper, Fig. 7 left)."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["patch_filter_pca"]


def patch_filter_pca(
    weight: Tensor,
    k: int = 28,
    center: bool = True,
) -> tuple[Tensor, Tensor]:
    """PCA of the linear patch-embedding filters.

    Each of the ``D`` output channels of the patch-embedding conv is one filter of shape
    ``[C, P, P]``; the filters are flattened to ``[D, C*P*P]``, centred over ``D`` (unless
    ``center=False``) and decomposed with an SVD (computed in float64).

    Args:
        weight: conv weight ``[D, C, P, P]`` (or ``[D, C, Ph, Pw]``). A flattened linear
            patch projection must be reshaped to this layout by the caller.
        k: number of components; clamped to ``min(D, C*P*P)``, and to ``D - 1`` when centred (D centred
            filters span at most D - 1 directions).
        center: subtract the mean filter before the SVD.

    Returns:
        ``components`` ``[k, C, P, P]`` (unit-norm, orthogonal, sign fixed so that the
        entry of largest magnitude is positive) and ``explained_variance_ratio`` ``[k]``
        (fraction of the total variance, decreasing), both in the weight's float dtype
        (float32 for half / integer inputs).

    Raises:
        ValueError: the weight has NaN/Inf entries (e.g. a diverged training run).
    """
    w = torch.as_tensor(weight).detach()
    if w.dim() != 4:
        raise ValueError(f"weight must be [D, C, P, P], got {tuple(w.shape)}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    out_dtype = w.dtype if w.dtype in (torch.float32, torch.float64) else torch.float32
    D, C, Ph, Pw = w.shape
    x = w.reshape(D, C * Ph * Pw).double().cpu()
    if not torch.isfinite(x).all():  # the SVD would fail with a bare LinAlgError that does not say why
        raise ValueError("the patch-embedding filters have NaN/Inf weights (a diverged run?): "
                         "they have no principal components")
    if center:
        x = x - x.mean(dim=0, keepdim=True)
    _, s, vh = torch.linalg.svd(x, full_matrices=False)
    var = s.square()
    total = var.sum()
    ratio = var / total if total > 0 else torch.zeros_like(var)
    # centred, D filters span at most D - 1 directions: a D-th component would be an arbitrary null vector
    k = min(k, vh.shape[0], max(1, D - 1) if center else D)
    comps = vh[:k]
    # Deterministic sign: the largest-magnitude entry of each component is positive.
    idx = comps.abs().argmax(dim=1)
    signs = torch.sign(comps.gather(1, idx[:, None]))
    signs[signs == 0] = 1.0
    comps = comps * signs
    device = w.device
    return (
        comps.reshape(k, C, Ph, Pw).to(device=device, dtype=out_dtype),
        ratio[:k].to(device=device, dtype=out_dtype),
    )
