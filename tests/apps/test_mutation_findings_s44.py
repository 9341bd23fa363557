"""Mutation-test findings for `kizuna embed`'s preallocated rows and the out-of-memory advice (session 44): each
test pins one behaviour a hand-made mutant broke without any existing test failing."""
from __future__ import annotations

import torch

from kizuna.apps.cli import _out_of_memory
from kizuna.apps.embed import _into_rows


def test_into_rows_writes_float32_whatever_the_batch_dtype():
    """A bf16 model's embeddings are stored as float32 (as the old ``.float()`` did), written at their offset."""
    out = _into_rows(None, 4, 0, torch.ones(2, 3, dtype=torch.bfloat16))
    out = _into_rows(out, 4, 2, torch.full((2, 3), 2.0, dtype=torch.bfloat16))
    assert out.dtype == torch.float32 and out.tolist() == [[1.0] * 3] * 2 + [[2.0] * 3] * 2


def test_cpu_out_of_memory_advice_names_the_held_features():
    """A host MemoryError's advice says that evaluations and embed hold every item's features, and --max-samples."""
    advice = _out_of_memory(MemoryError("Unable to allocate 3.4 GiB for an array"))
    assert "holds every item's features in memory at once" in advice and "--max-samples" in advice


def test_gpu_out_of_memory_advice_says_nothing_of_held_features():
    """A CUDA out-of-memory error is the batch's on the GPU: the held-features advice (host memory) is left out."""
    advice = _out_of_memory(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert advice.startswith("out of GPU memory") and "features" not in advice and "--max-samples" not in advice
