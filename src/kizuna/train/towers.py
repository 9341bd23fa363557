"""Locking towers (LiT).

LiT locks a pretrained tower and trains the other one to match it; ``unlocked_blocks`` leaves the
last N blocks (and the final norm and projection) trainable, as OpenCLIP's --lock-image-unlocked-groups.
"""
from __future__ import annotations

from torch import nn


def lock_tower(tower: nn.Module, unlocked_blocks: int = 0) -> None:
    """Freeze a tower except its last ``unlocked_blocks`` blocks (with everything after them)."""
    for p in tower.parameters():
        p.requires_grad_(False)
    if unlocked_blocks <= 0:
        tower.eval()  # LayerNorm has no running stats, but a frozen tower must not drop patches either
        return
    blocks = tower.transformer.blocks
    for block in blocks[-unlocked_blocks:]:
        for p in block.parameters():
            p.requires_grad_(True)
    for name in ("norm", "attn_pool", "proj", "head"):
        module = getattr(tower, name, None)
        if isinstance(module, nn.Module):
            for p in module.parameters():
                p.requires_grad_(True)
