"""Mutation-testing round 48 (evaluation): model_fingerprint's version counter, kept for ordinary tensors where
today's change reads -1 for inference tensors (which have none)."""
from __future__ import annotations

import torch

from kizuna.eval.encode import model_fingerprint


def test_an_in_place_write_that_keeps_every_checksum_still_changes_the_fingerprint():
    """Kills: the version counter read as -1 for every tensor (not only inference tensors): a write that keeps the
    sums, the row sums and the column sums (+1 -1 / -1 +1 on a 2 x 2 block) left the fingerprint as it was, and
    the class-embedding cache served the old weights' embeddings."""
    layer = torch.nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        layer.weight.zero_()
    before = model_fingerprint(layer)
    with torch.no_grad():
        layer.weight.add_(torch.tensor([[1.0, -1.0], [-1.0, 1.0]]))
    assert model_fingerprint(layer) != before
    assert model_fingerprint(layer) == model_fingerprint(layer)
    with torch.inference_mode():
        frozen = torch.nn.Linear(2, 2)
    assert model_fingerprint(frozen) == model_fingerprint(frozen)
