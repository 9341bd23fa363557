"""Contrastive losses: CLIP's symmetric cross-entropy and SigLIP's pairwise sigmoid loss.

Both take the *local* features and, optionally, the features of the whole global batch, so the
distributed trainer reuses them unchanged: each rank scores its n rows against all N columns (the
"local loss" form), which gives the same gradients as one process over the concatenated batch.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .layers import autocast_off


def _logits(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """``s * I T^T`` in float32, also under autocast: in bf16 a cosine keeps ~3 significant digits, and at
    CLIP's logit scale (up to 100) that is an error of ~0.4 in every logit. The matrix is B x B x D, cheap."""
    with autocast_off(image_features.device.type):  # (a plain number as the scale: 100.0 raised AttributeError)
        return torch.as_tensor(logit_scale).float() * image_features.float() @ text_features.float().T


def similarity(queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """``queries @ keys^T`` in float32, also under autocast (as :func:`_logits`): the evaluators' scores, which
    under a caller's bf16 autocast came out bf16 (tied ranks moved top-1 and recall; retrieval's float32 buffers
    refused them)."""
    with autocast_off(queries.device.type):
        return queries.float() @ keys.float().T


def clip_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    logit_scale: torch.Tensor,
    all_image_features: torch.Tensor | None = None,
    all_text_features: torch.Tensor | None = None,
    offset: int = 0,
) -> torch.Tensor:
    """(CE(s * I T^T, diag) + CE(s * T I^T, diag)) / 2 on L2-normalised features.

    ``logit_scale`` is the multiplier s (already exponentiated). With ``all_*`` given, the local
    rows [offset, offset + n) of the global batch are scored against every global column.
    """
    all_img = image_features if all_image_features is None else all_image_features
    all_txt = text_features if all_text_features is None else all_text_features
    logits_per_image = _logits(image_features, all_txt, logit_scale)
    logits_per_text = _logits(text_features, all_img, logit_scale)
    labels = torch.arange(image_features.shape[0], device=image_features.device) + offset
    return (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)) / 2


def siglip_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    logit_scale: torch.Tensor,
    logit_bias: torch.Tensor,
    negatives_only: bool = False,
) -> torch.Tensor:
    """-sum_ij log sigmoid(z_ij * (s * I_i . T_j + b)) / B with z = 2*eye - 1 (Zhai et al.).

    Summed over the B x B matrix and divided by the number of images B (a mean would make the loss
    ~B times too small). ``negatives_only`` scores a text chunk from another rank, where every pair
    is negative; the caller adds those terms and keeps dividing by its own B.
    """
    logits = _logits(image_features, text_features, logit_scale) + torch.as_tensor(logit_bias).float()
    if negatives_only:
        labels = -torch.ones_like(logits)
    else:
        labels = 2 * torch.eye(logits.shape[0], logits.shape[1], device=logits.device, dtype=logits.dtype) - 1
    return -F.logsigmoid(labels * logits).sum() / image_features.shape[0]
