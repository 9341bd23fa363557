"""Locking towers (LiT).

LiT locks a pretrained tower and trains the other one to match it. ``unlocked_blocks`` (the
``--lock-image-unlocked-blocks`` / ``--lock-text-unlocked-blocks`` flags) says how much of the locked
tower still trains, counted from the output end:

- 0: nothing; the whole tower is frozen (and kept in eval mode).
- N >= 1: the last N transformer blocks plus everything after them: the final norm, the pooling head
  (SigLIP's MAP ``attn_pool``) and the projection (``proj``, or a classifier ``head``). The embeddings
  (patch/token embedding, position embedding, class token) and ``norm_pre`` stay frozen, also when
  N >= the number of blocks, which unlocks every block and nothing more.

This is not OpenCLIP's count. OpenCLIP's ``--lock-image-unlocked-groups G`` unlocks the last G of the
groups ``[embeddings + ln_pre], block 1, ..., block depth-1, [last block + ln_post], proj``, so G=1 is
the projection alone. kizuna's N is OpenCLIP's G = N + 1 for 1 <= N <= depth; OpenCLIP's G=1
(projection only) has no kizuna value, and its G = depth + 2 (the embeddings too) is kizuna's
``--lock-image false``. The count is kept as it is: saved training configs depend on it. (OpenCLIP's
text flag is ``--lock-text-unlocked-layers``, counted its own way.)
"""
from __future__ import annotations

from torch import nn


def lock_tower(tower: nn.Module, unlocked_blocks: int = 0) -> None:
    """Freeze a tower except its last ``unlocked_blocks`` blocks and everything after them (the final
    norm, pooling head and projection); see the module docstring for how this maps to OpenCLIP."""
    blocks = getattr(getattr(tower, "transformer", None), "blocks", None)
    if unlocked_blocks > 0 and blocks is None:
        # Checked before anything is frozen, so a refused call leaves the tower as it was.
        raise ValueError(f"cannot unlock the last {unlocked_blocks} blocks of a {type(tower).__name__}: it has no "
                         "transformer.blocks (kizuna's ViT and text transformer have); lock it whole "
                         "(unlocked blocks 0)")
    for p in tower.parameters():
        p.requires_grad_(False)
    if unlocked_blocks <= 0:
        tower.eval()  # LayerNorm has no running stats, but a frozen tower must not drop patches either
        return
    for block in blocks[-unlocked_blocks:]:
        for p in block.parameters():
            p.requires_grad_(True)
    for name in ("norm", "attn_pool", "proj", "head"):
        module = getattr(tower, name, None)
        if isinstance(module, nn.Module):
            for p in module.parameters():
                p.requires_grad_(True)
