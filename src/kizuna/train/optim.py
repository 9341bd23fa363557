"""AdamW with weight decay on matrices only, a cosine schedule with linear warmup, and the precision
context (bf16 autocast on GPUs since Ampere and on CPUs with native bf16, AMX or AVX-512 BF16; fp32 elsewhere
unless asked).

Shared by the contrastive and the supervised trainers.
"""
from __future__ import annotations

import contextlib
import math
import os
import sys

import torch
from torch import nn


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Decay tensors with ndim >= 2 (weights of linears/convs/embeddings); not gains, biases, scales,
    position embeddings or tokens. Frozen parameters are left out entirely."""
    skip = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.ndim >= 2 and name not in skip else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: nn.Module, lr: float, weight_decay: float, betas=(0.9, 0.98), eps: float = 1e-6):
    """AdamW over :func:`param_groups`, fused (one kernel per tensor) where this torch has a fused kernel for
    the parameters' device: CUDA, and the CPU since torch 2.4. On the CPU torch's default is otherwise the
    per-tensor Python loop: a ViT-B/32 CLIP step's update took 349 ms that way and 107 ms fused (2-core
    Xeon; same updates to float rounding, tested)."""
    groups = param_groups(model, weight_decay)
    try:
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=eps, fused=True)
    except (RuntimeError, TypeError, ValueError):  # no fused kernel for this device / torch
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=eps)


def cosine_lr(step: int, total_steps: int, warmup_steps: int, min_ratio: float = 0.0) -> float:
    """Multiplier of the base learning rate at ``step`` (0-based)."""
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    progress = min(1.0, max(0.0, progress))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def make_scheduler(optimizer, total_steps, warmup_steps: int, min_ratio: float = 0.0):
    """Cosine with linear warm-up. ``total_steps`` is an int, or a function returning it at every step (a
    run sized by a time budget learns its length only after the warm-up: :mod:`kizuna.train.budget`)."""
    total = total_steps if callable(total_steps) else (lambda: total_steps)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: cosine_lr(s, total(), warmup_steps, min_ratio))


def use_config_settings(optimizer, scheduler, lr: float, weight_decay: float, **settings) -> None:
    """After a resume loaded an optimizer's and a scheduler's state: the run's learning rate, weight decay and
    ``settings`` (betas, eps, momentum) instead of the checkpoint's. The state carries the saved ones, so a
    resume given another --lr or --weight-decay went on with the old values while its config.json showed the
    new. A resume that changes nothing sets what was saved (the config came from the checkpoint).

    Group 0 is the decayed one (:func:`param_groups`); the rate now is the new base times the schedule's
    multiplier at the step reached, so the schedule goes on from where it stood."""
    for i, group in enumerate(optimizer.param_groups):
        group["initial_lr"] = lr
        if i == 0:
            group["weight_decay"] = weight_decay
        for key, value in settings.items():
            if key in group:
                group[key] = value
    scheduler.base_lrs = [lr] * len(optimizer.param_groups)
    rates = [lr * multiplier(scheduler.last_epoch) for multiplier in scheduler.lr_lambdas]
    for group, rate in zip(optimizer.param_groups, rates):
        group["lr"] = rate
    scheduler._last_lr = rates


def cpu_bf16_native(flags: set[str] | None = None) -> bool:
    """Whether this CPU multiplies bf16 matrices in hardware: AMX (Intel Xeons since Sapphire Rapids) or
    AVX-512 BF16 (AMD Zen 4 and later, Intel Cooper Lake). ``flags``: the CPU's /proc/cpuinfo flags (read
    when None).

    There bf16 autocast trains faster than fp32 and learns as well, so ``auto`` picks it. A 2-core Xeon with
    AMX: the `flickr8k` config 1.48x, a ViT-B/32 CLIP step 2.6x; over three seeds of `flickr8k`, Flickr8k
    test R@10 within 0.2 points of fp32 in both directions (docs/TRAINING.md). A 2-core Zen 4 EPYC (AVX-512
    BF16): the `demo` and `flickr8k` configs 1.5x, `vit_cifar10` 1.3x, a ViT-B/32 CLIP step 1.76x
    (docs/TRAINING.md). Elsewhere bf16 matmuls are emulated and slower than fp32."""
    if flags is None:
        from kizuna.models.layers import cpu_info

        flags = set(cpu_info("flags").split())
    if not _isa_caps_allow_bf16():
        return False
    is_amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    try:
        hardware = bool(is_amx is not None and is_amx()) or bool({"avx512_bf16", "amx_bf16"} & flags)
        return hardware and torch.backends.mkldnn.is_available() and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


# oneDNN's ISAs from which on bf16 runs in hardware (ONEDNN_MAX_CPU_ISA names one), and ATen's kernel levels
_ONEDNN_BF16_ISAS = ("AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX512_CORE_AMX", "AVX512_CORE_AMX_FP16",
                     "AVX10_1_512", "AVX10_1_512_AMX", "AVX10_1_512_AMX_FP16", "AVX10_2_512", "AVX10_2_512_AMX_2", "ALL")


def _isa_caps_allow_bf16() -> bool:
    """False when the environment caps the kernels below bf16 hardware: ``ONEDNN_MAX_CPU_ISA`` (or
    ``DNNL_MAX_CPU_ISA``) under AVX512_CORE_BF16 makes oneDNN emulate bf16 (a training step 3.6x slower than
    fp32 here, while "auto" chose bf16 for the CPU's flags), and ``ATEN_CPU_CAPABILITY`` below avx512 sends bf16
    attention into a torch kernel that fails beyond 64 keys ("pack_vnni2 is only supported when avx512 is
    supported")."""
    for name in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"):
        isa = os.environ.get(name, "").strip().upper()
        if isa and isa not in _ONEDNN_BF16_ISAS:
            return False
    aten = os.environ.get("ATEN_CPU_CAPABILITY", "").strip().lower()
    return not aten or aten.startswith("avx512")


PRECISIONS = ("auto", "fp32", "bf16")


def gpu_bf16_native(device: torch.device) -> bool:
    """Whether the GPU ``device`` multiplies bf16 in hardware: compute capability 8.0 or later (Ampere, Hopper,
    Blackwell; AMD's Instinct cards report 9.x). A T4 or V100 (7.x) emulates it, slower than fp32, and torch's
    ``is_bf16_supported()`` says True for them all the same."""
    return torch.cuda.get_device_capability(device)[0] >= 8


def resolve_precision(precision: str, device: torch.device) -> str:
    """"auto" -> "bf16" on a GPU and a CPU with bf16 in hardware (:func:`gpu_bf16_native`,
    :func:`cpu_bf16_native`), else "fp32"."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be auto, fp32 or bf16, got {precision!r}")
    if precision == "auto":
        native = ((device.type == "cuda" and gpu_bf16_native(device)) or
                  (device.type == "cpu" and cpu_bf16_native()))
        return "bf16" if native else "fp32"
    return precision


def bf16_note(precision: str, device: torch.device) -> str | None:
    """A one-line note for the user, else None: when bf16 was asked for on a CPU or GPU that only emulates it
    (slower than fp32), when "auto" chose bf16 on a CPU (so a run's numbers differ from an fp32 machine's), and
    when "auto" chose fp32 on a GPU (one before Ampere: :func:`gpu_bf16_native`)."""
    device = torch.device(device)
    on_cpu = device.type == "cpu"
    if device.type == "cuda" and precision in ("auto", "bf16") and not gpu_bf16_native(device):
        capability = ".".join(map(str, torch.cuda.get_device_capability(device)))
        if precision == "bf16":
            return (f"note: bf16 on this GPU (compute capability {capability}, before Ampere's 8.0) is emulated and "
                    "runs slower than fp32; --precision fp32 is the faster choice here")
        return (f"precision: fp32 (auto: this GPU, compute capability {capability}, has no bf16 in hardware; "
                "--precision bf16 asks for it all the same)")
    if precision == "bf16" and on_cpu and not cpu_bf16_native():
        return ("note: bf16 on this CPU is emulated (no AMX or AVX-512 BF16) and runs slower than fp32; "
                "--precision fp32 is the faster choice here")  # not "or auto": the inference commands have no auto
    if precision == "auto" and on_cpu and resolve_precision(precision, torch.device(device)) == "bf16":
        return "precision: bf16 autocast (auto: this CPU does bf16 in hardware); --precision fp32 trains in fp32"
    return None


def announce_precision(precision: str, device: torch.device, is_main: bool = True) -> str:
    """At the start of a trainer or an inference command: the precision ``precision`` resolves to here (an
    unknown one fails now, before any work), with :func:`bf16_note`'s line on stderr from the main process."""
    resolved = resolve_precision(precision, device)
    note = bf16_note(precision, device)
    if note and is_main:
        print(note, file=sys.stderr)
    return resolved


def tune_for_training(device: torch.device) -> None:
    """Backend settings for a training run on ``device``. On CUDA: cuDNN times its convolution algorithms
    once per input shape and keeps the fastest (a trainer's shapes are fixed, so this pays at the first
    steps; the hybrid and conv stems are convolutions). Bitwise-identical reruns on a GPU were never
    promised (cuDNN's weight gradients use atomics); on the CPU nothing changes."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True


def autocast_for(precision: str, device: torch.device):
    """bf16 autocast or nothing, as :func:`resolve_precision` resolves ``precision``; weights and the
    optimizer stay fp32 either way."""
    if resolve_precision(precision, device) == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
