"""``--compile``: torch.compile the model a trainer runs, and fall back to eager mode where it cannot.

torch.compile fails late: a missing C++ compiler or an op Inductor cannot lower shows up in the first
forward, deep inside torch. A run asked to compile should then train eagerly, saying why, rather than
die. Errors from the model itself (bad input) are not compiler errors: they are re-raised by the eager
call that follows.

Measured (docs/TRAINING.md, "Compiling"): on CPU kizuna's eager path with oneDNN GEMMs is faster than
Inductor's code for the small ViTs of the CIFAR recipe, so compiling is off by default.
"""
from __future__ import annotations

import warnings

import torch
from torch import nn


def _is_compiler_error(error: BaseException) -> bool:
    module = type(error).__module__ or ""
    return module.startswith(("torch._dynamo", "torch._inductor")) or "CompilerError" in type(error).__name__


class CompiledOrEager:
    """Calls ``torch.compile(module)``; after a compiler error, calls ``module`` itself from then on."""

    def __init__(self, module: nn.Module):
        self.module = module
        self.compiled = torch.compile(module)
        self.fallback_reason: str | None = None

    def __call__(self, *args, **kwargs):
        if self.fallback_reason is None:
            try:
                return self.compiled(*args, **kwargs)
            except Exception as error:  # noqa: BLE001 - only compiler errors are swallowed, below
                if not _is_compiler_error(error):
                    raise
                first_line = (str(error).strip().splitlines() or [""])[0][:300]
                self.fallback_reason = f"{type(error).__name__}: {first_line}"
                warnings.warn(f"torch.compile failed ({self.fallback_reason}); training continues in eager mode",
                              RuntimeWarning, stacklevel=2)
        return self.module(*args, **kwargs)


def compiled_or_eager(module: nn.Module, enabled: bool):
    """``module`` itself unless ``enabled``; then a compiled callable that falls back to ``module``."""
    if not enabled:
        return module
    if not hasattr(torch, "compile"):
        warnings.warn(f"torch {torch.__version__} has no torch.compile; training in eager mode", RuntimeWarning,
                      stacklevel=2)
        return module
    return CompiledOrEager(module)
