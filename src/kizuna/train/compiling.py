"""``--compile``: torch.compile the model a trainer runs, and fall back to eager mode where it cannot.

torch.compile fails late: a missing C++ compiler or an op Inductor cannot lower shows up in the first
forward, deep inside torch. A run asked to compile should then train eagerly, saying why, rather than
die. The backward graph is compiled in that same first forward (AOTAutograd otherwise lowers it lazily,
inside ``loss.backward()``, where no wrapper sees its failure). Errors from the model itself (bad input)
are not compiler errors, though Dynamo wraps them in its own exception types: the eager call that
follows raises them, and compiling stays on.

Measured (docs/TRAINING.md, "What a step does", `--compile true`): on CPU kizuna's eager path with oneDNN GEMMs is faster than
Inductor's code for the small ViTs of the CIFAR recipe, so compiling is off by default.
"""
from __future__ import annotations

import contextlib
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
                with _backward_compiled_with_forward(), _random_as_eager():
                    return self.compiled(*args, **kwargs)
            except Exception as error:  # noqa: BLE001 - only compiler errors are swallowed, below
                if not _is_compiler_error(error):
                    raise
                out = self.module(*args, **kwargs)  # raises here when the input, not the compiler, was at fault
                self.fallback_reason = f"{type(error).__name__}: {_headline(error)}"
                warnings.warn(f"torch.compile failed ({self.fallback_reason}); training continues in eager mode",
                              RuntimeWarning, stacklevel=2)
                return out
        return self.module(*args, **kwargs)


def _headline(error: BaseException) -> str:
    """The error's first line, with the next when the first only introduces it ("backend='inductor' raised:")."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()] or [""]
    head = lines[0] + (" " + lines[1] if lines[0].endswith(":") and len(lines) > 1 else "")
    return head[:300]


def _backward_compiled_with_forward():
    """AOTAutograd's switch to lower the backward graph when the forward is compiled (a private setting of
    recent torch; a no-op context where this torch has no such switch)."""
    config = getattr(getattr(torch, "_functorch", None), "config", None)
    if config is None or not hasattr(config, "force_non_lazy_backward_lowering"):
        return contextlib.nullcontext()
    return config.patch(force_non_lazy_backward_lowering=True)


def _random_as_eager():
    """Inductor's random ops draw what eager mode draws from the same RNG state (its own generator drew other
    numbers). GradCache re-runs each chunk compiled after caching its features eagerly, from the same state:
    patch dropout then kept other patches in the two passes, and the gradients (0.15 off) were not the loss's.
    Random ops are a small part of a step; a no-op context where this torch has no such switch."""
    try:
        from torch._inductor import config
    except ImportError:
        return contextlib.nullcontext()
    return config.patch(fallback_random=True) if hasattr(config, "fallback_random") else contextlib.nullcontext()


def compiled_or_eager(module: nn.Module, enabled: bool):
    """``module`` itself unless ``enabled``; then a compiled callable that falls back to ``module``."""
    if not enabled:
        return module
    if not hasattr(torch, "compile"):
        warnings.warn(f"torch {torch.__version__} has no torch.compile; training in eager mode", RuntimeWarning,
                      stacklevel=2)
        return module
    try:
        return CompiledOrEager(module)
    except RuntimeError as error:  # torch.compile() itself refuses this Python ("Dynamo is not supported on
        # Python 3.12+" in torch 2.2-2.3; torch 2.13 on 3.15+): the run died with a traceback before its first step
        warnings.warn(f"torch.compile is unavailable here ({_headline(error)}); training continues in eager mode",
                      RuntimeWarning, stacklevel=2)
        return module
