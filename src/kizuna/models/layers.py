"""Transformer building blocks shared by the image and text towers.

A block is two lines, as in the ViT paper: ``x = x + attn(norm1(x))``, ``x = x + mlp(norm2(x))``.
Attention uses one fused qkv projection and ``F.scaled_dot_product_attention``; a plain path that
materialises the attention matrix exists for analysis (attention maps) and as a numerical reference.

On the CPU in fp32 the GEMMs run on the faster of two libraries (``GEMM``). On AMD that is oneDNN
(``torch.ops.mkldnn._linear_pointwise``, the op Inductor lowers ``nn.Linear`` to): ``F.linear``'s fp32
path is MKL's sgemm, which takes its slow non-AVX-512 path on non-Intel CPUs (AMD EPYC: ~100 vs ~215
GFLOP/s). On Intel it is MKL (``torch.addmm``), the faster one there (a 2-core Xeon: matmul peak 365-404
vs 330-349 GFLOP/s, docs/benchmarks/XEON.md). Without an autograd graph a block also fuses bias, activation and residual
adds into the GEMMs (``FUSE``): oneDNN as post-ops, MKL by accumulating into a tensor that already
holds bias or residual (``addmm_``), with fc1's activation in place and the large qkv/fc1 outputs
written into buffers reused from block to block (a fresh tensor that large is page-faulted in each time).
A bf16 model (``model.to(torch.bfloat16)``) fuses its inference blocks on oneDNN where the CPU does bf16
natively (``ONEDNN_BF16``: AVX-512 BF16 or AMX), about 4x faster than fp32 for images on a Xeon with AMX
(docs/PERFORMANCE.md). ``KIZUNA_GEMM=onednn|mkl`` picks the fp32 library, ``KIZUNA_FUSE=0`` switches
fusion off, ``KIZUNA_ONEDNN=0`` keeps oneDNN out entirely.
"""
from __future__ import annotations

import contextlib
import math
import numbers
import os

import torch
import torch.autograd.forward_ad as _forward_ad
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import _get_current_dispatch_mode


class QuickGELU(nn.Module):
    """OpenAI CLIP's GELU approximation, x * sigmoid(1.702 x); its released weights were trained with it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


ACTIVATIONS = {
    "gelu": lambda: nn.GELU(),
    "quick_gelu": QuickGELU,
    "gelu_tanh": lambda: nn.GELU(approximate="tanh"),
}


def building_on_meta() -> bool:
    """True inside `with torch.device("meta")`, where a checkpoint's tensors will replace a module's init.

    There are no values to draw there, and nn.init.normal_ on meta imports torch._dynamo: about 1 s of every
    command that loads a model."""
    return torch.empty(()).is_meta


@contextlib.contextmanager
def float32_default():
    """torch's default dtype float32 inside, the caller's after: under a host's float64 default (a notebook's)
    a run built, trained and saved a float64 model under precision fp32, and its first loss differed; create_model
    and load_model gave a float64 model (and save_model wrote it, twice the size). The default dtype is the
    process's: a host thread making tensors meanwhile gets float32 ones too. Also a decorator."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


def python_int(value):
    """A numpy (or other) integer as a Python int, anything else as it is: sizes computed with numpy
    (``y.max() + 1``, ``np.unique(y).size``) were refused as "must be a positive int", and a config holding one was
    no JSON. A 2-element size is converted element by element."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, (list, tuple)):  # (a namedtuple pair as a plain tuple: its type takes no generator)
        return (list if isinstance(value, list) else tuple)(python_int(v) for v in value)
    return value


def python_ints(config, names) -> None:
    """:func:`python_int` on a config's fields ``names``, in place (the model configs' __post_init__)."""
    for name in names:
        setattr(config, name, python_int(getattr(config, name)))


def check_optional_size(name: str, value) -> None:
    """A config's layer width that may be left out (None, or 0 for none): any other value a positive int (-8 was
    torch's "negative dimension" traceback at the first Linear, and ``--print-config`` passed it)."""
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
        raise ValueError(f"{name} must be a positive int (or 0/None for none), got {value!r}")


#: the words of an on/off setting, an environment switch's and a true/false flag's (train.config.parse_flag_value)
SWITCH_WORDS = {"0": False, "false": False, "off": False, "no": False, "1": True, "true": True, "on": True,
                "yes": True}


def env_switch(name: str, default: bool) -> bool:
    """A kizuna on/off switch from the environment: 0/false/off/no, 1/true/on/yes (any case, spaces around);
    unset or empty: ``default``; another value is warned about and ``default`` taken, as docs/PERFORMANCE.md
    says (only "0" was off: KIZUNA_ONEDNN=false, the escape hatch from a misbehaving oneDNN, did nothing, and an
    empty KIZUNA_FUSE_ACTIVATION turned on what is off by default)."""
    value = os.environ.get(name, "").strip().lower()
    if not value:
        return default
    if value not in SWITCH_WORDS:
        import warnings

        warnings.warn(f"{name}={os.environ[name]!r} is not a switch value (0 or 1, false or true, off or on, no or "
                      f"yes): ignored, {name} stays {'on' if default else 'off'}", RuntimeWarning, stacklevel=2)
        return default
    return SWITCH_WORDS[value]


# ----- oneDNN linears (CPU fp32) ---------------------------------------------------------------------
_LP = getattr(torch.ops.mkldnn, "_linear_pointwise", None) if torch.backends.mkldnn.is_available() else None
_LP_BINARY = getattr(_LP, "binary", None) if _LP is not None else None


def _onednn_works(dtype: torch.dtype = torch.float32) -> bool:
    """The private op exists *and* computes ``F.linear`` in ``dtype`` (its signature has changed between
    torch releases before): checked once on a tiny input, so a torch without it falls back instead of failing."""
    if _LP is None or _LP_BINARY is None or not env_switch("KIZUNA_ONEDNN", True):
        return False
    try:
        g = torch.Generator().manual_seed(0)
        x, w, b = (torch.randn(*s, generator=g).to(dtype) for s in ((2, 3, 8), (5, 8), (5,)))
        other = torch.randn(2, 3, 5, generator=g).to(dtype)
        atol = 1e-5 if dtype == torch.float32 else 0.1
        with torch.no_grad():
            ref = F.linear(x.float(), w.float(), b.float())
            ok = torch.allclose(_LP(x, w, b, "none", [], "").float(), ref, atol=atol)
            ok &= torch.allclose(_LP_BINARY(x, other, w, b, "add").float(), ref + other.float(), atol=atol)
        return bool(ok)
    except Exception:  # noqa: BLE001 - any failure means "do not use it"
        return False


ONEDNN = _onednn_works()
# bf16 models (``model.to(torch.bfloat16)``) fuse their inference blocks on oneDNN where the CPU does bf16
# natively (AVX-512 BF16, AMX): F.linear's bf16 path reaches oneDNN too, but without the fused bias,
# residual and activation - on a 2-core Xeon with AMX a ViT-B block at 1,600 rows took 35 ms unfused and
# 25 ms fused (QuickGELU), 28 vs 24 ms (GELU).
ONEDNN_BF16 = bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
                   and _onednn_works(torch.bfloat16))
_QUICK = 1.702


def _fuse_activation_default() -> bool:
    """Whether fc1's activation runs inside oneDNN's GEMM (a post-op) or in place right after it.

    A post-op is applied in the GEMM's inner loop. With AVX-512's 32 vector registers that is the cheap
    choice (kizuna's inference path was built and benchmarked so on an AVX-512 EPYC). With AVX2's 16 it
    slowed ViT-B/16's fc1 (6,304 x 768 -> 3,072) on a Zen 2 EPYC from 203 ms to 254 ms (SiLU, for
    QuickGELU) and 261 ms (GELU), while the in-place activation afterwards costs ~10 ms (the benchmark
    section ``fusion``, docs/benchmarks/AVX2.md). ``KIZUNA_FUSE_ACTIVATION=0/1`` overrides.
    """
    return env_switch("KIZUNA_FUSE_ACTIVATION", "AVX512" in torch.backends.cpu.get_cpu_capability())


FUSE_ACTIVATION = _fuse_activation_default()


def cpu_info(field: str, cpuinfo: str | None = None) -> str:
    """A field of /proc/cpuinfo ("vendor_id": "GenuineIntel", "AuthenticAMD", ...; "model name"); "" when unknown."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as f:
                cpuinfo = f.read(65536)
        except OSError:
            return ""
    for line in cpuinfo.splitlines():
        if line.startswith(field):
            return line.split(":", 1)[1].strip()
    return ""


GEMM_LIBRARIES = ("onednn", "mkl")


def _gemm_default(vendor: str | None = None, onednn: bool | None = None) -> str:
    """The library that runs CPU fp32 linears, for training and inference alike: "onednn" or "mkl".

    On AMD, MKL's sgemm takes its slow non-AVX-512 path, so oneDNN wins. On Intel, MKL uses AVX-512 and
    is the faster one (docs/benchmarks/XEON.md: the ViT-B/32 training step 1.14x faster on MKL, ViT-B/16
    image encoding 1.11x). MKL too where the oneDNN op is unavailable. ``KIZUNA_GEMM=onednn|mkl`` overrides.
    """
    forced = os.environ.get("KIZUNA_GEMM", "").strip()
    usable = ONEDNN if onednn is None else onednn
    if not usable:
        chosen = "mkl"
    else:
        chosen = "mkl" if (cpu_info("vendor_id") if vendor is None else vendor) == "GenuineIntel" else "onednn"
    if forced.lower() == "onednn" and not usable:  # it claimed oneDNN, ran MKL unfused, and a benchmark said oneDNN
        _env_warning("KIZUNA_GEMM=onednn, but oneDNN's op is unusable here (KIZUNA_ONEDNN=0, or this build lacks it): "
                     "using mkl")
        return "mkl"
    if forced.lower() in GEMM_LIBRARIES:
        return forced.lower()
    if forced:  # read at import: a ValueError there was a traceback from every command, `kizuna --help` too
        _env_warning(f"KIZUNA_GEMM={forced!r} is none of {', '.join(GEMM_LIBRARIES)}: ignored, using {chosen}")
    return chosen


def _env_warning(message: str) -> None:
    import warnings

    warnings.warn(message, RuntimeWarning, stacklevel=3)


GEMM = _gemm_default()


def _env_rows(name: str, default: int) -> int:
    """A row count from the environment; unset or empty: ``default``. A bad value is warned about and ignored
    (read at import, a ValueError was a traceback from every command)."""
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        rows = int(value)
    except ValueError:
        rows = -1
    if rows < 0:
        _env_warning(f"{name}={value!r} is no row count >= 0: ignored, using the default {default}")
        return default
    return rows


# Where MKL is the library, inference with fewer rows (batch x tokens) than this runs on oneDNN: on the Xeon
# oneDNN's fused block was as fast or up to 1.15x faster up to ~400 rows (a ViT-B/16 image is 197), MKL's
# 1.06x faster at 1,600 rows and 1.13x at 6,304 (section gemm_library, docs/benchmarks/XEON.md); a plain
# linear up to 1.16x faster on oneDNN at 16-197 rows, even at 400.
# ``KIZUNA_MKL_MIN_ROWS`` overrides (0: MKL at every size).
MKL_MIN_ROWS = _env_rows("KIZUNA_MKL_MIN_ROWS", 512)
# Inference blocks fuse bias, activation and residual adds into their GEMMs (see Block._forward_fused).
FUSE = env_switch("KIZUNA_FUSE", True)


def _fast_path_ok(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether a CPU fp32 call may leave ``F.linear`` (for oneDNN, or for a fused MKL block).

    Not while torch.compile traces (Inductor lowers F.linear to oneDNN itself, and cannot lower oneDNN's
    op with trainable weights) nor under a dispatch mode (FlopCounterMode, FakeTensorMode: they know
    aten::addmm, not oneDNN). is_compiling() comes first: Dynamo folds it to True and so never traces
    _get_current_dispatch_mode, which it cannot (a graph break, after which the check ran eagerly and
    said yes, and Inductor failed on the oneDNN op).
    Nor under CPU autocast: oneDNN's op is not on autocast's lists, so it would run in fp32 and meet
    the bf16 outputs of the ops that are (SDPA), a dtype clash; F.linear is cast as autocast says.
    """
    return _cpu_eager(x, weight, torch.float32)


def capturing_graph() -> bool:
    """Under torch.compile, or torch.jit.trace (and the legacy ONNX export, which traces): the graph keeps what a
    Python branch or a read-back saw once. Data-dependent shortcuts (a padding trim sized by the longest caption)
    froze to the example's size, and oneDNN ops failed to trace ("unsupported input list type: Scalar?")."""
    return torch.compiler.is_compiling() or torch.jit.is_tracing()


def _cpu_eager(x: torch.Tensor, weight: torch.Tensor, dtype: torch.dtype) -> bool:
    """CPU tensors of ``dtype``, outside torch.compile (and tracing), autocast and dispatch modes (see
    ``_fast_path_ok``)."""
    if capturing_graph() or _transforming():
        return False
    return (x.device.type == "cpu" and x.dtype == dtype and weight.dtype == dtype
            and not _cpu_autocast() and _get_current_dispatch_mode() is None)


def _transforming() -> bool:
    """Under a torch.func transform (vmap, grad, jacrev, jvp) or forward-mode AD: oneDNN's op has no forward
    derivative (a frozen encoder's jvp tangent came out as exactly 0, without a word) and _OneDNNLinear no
    setup_context (vmap and per-sample gradients failed on AMD, where oneDNN is the library, and ran on Intel's
    MKL). F.linear supports them all."""
    active = getattr(torch._C, "_are_functorch_transforms_active", None)
    return bool(active is not None and active()) or _forward_ad._current_level >= 0


def _onednn_ok(x: torch.Tensor, weight: torch.Tensor, library: str | None = None) -> bool:
    """Whether this call may run on oneDNN: it is the chosen library (``library``, by default ``GEMM``),
    works here, and the call may leave F.linear."""
    return ((library or GEMM) == "onednn" and ONEDNN and torch.backends.mkldnn.enabled
            and _fast_path_ok(x, weight))


def _cpu_autocast() -> bool:
    try:
        return torch.is_autocast_enabled("cpu")
    except TypeError:  # torch < 2.4
        return torch.is_autocast_cpu_enabled()


def _needs_grad(*tensors) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def autocast_off(device_type: str):
    """A context with autocast off on ``device_type`` (float32 work inside a caller's autocast); nothing to leave
    on a device without autocast (meta: torch.autocast("meta") raises)."""
    try:
        return torch.autocast(device_type, enabled=False)
    except RuntimeError:
        return contextlib.nullcontext()


def unit_rows(x: torch.Tensor) -> torch.Tensor:
    """``x`` L2-normalised along its last dimension in float32, autocast off (the features of every tower and
    evaluator). A finite row whose norm overflows float32 (entries past ~1e19) is divided by its largest entry
    first: ``F.normalize`` divided it by an infinite norm into all zeros, which passed every NaN/inf check (a
    zero-shot of such a model called every image the first class; retrieval scored R@1 100% on the ties). Other
    rows are ``F.normalize``'s, bit for bit."""
    with autocast_off(x.device.type):
        x = x.float()
        plain = F.normalize(x, dim=-1)
        overflowed = torch.isinf(torch.linalg.vector_norm(x, dim=-1, keepdim=True))
        peak = x.abs().amax(dim=-1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)
        return torch.where(overflowed, F.normalize(x / peak, dim=-1), plain)


def weight_dtype(module: nn.Module) -> torch.dtype:
    """The dtype to feed ``module``: its floating ``weight``'s, else float32 (a dynamically quantized Linear's
    ``weight`` is a method and takes float32 input)."""
    weight = getattr(module, "weight", None)
    return weight.dtype if isinstance(weight, torch.Tensor) and weight.is_floating_point() else torch.float32


def hooked(module: nn.Module) -> bool:
    """Whether ``module`` itself has a forward, forward-pre or backward hook (``torch.nn.utils.prune`` and the
    old ``weight_norm`` are forward-pre hooks that recompute ``weight``)."""
    return bool(module._forward_hooks or module._forward_pre_hooks or module._backward_hooks
                or module._backward_pre_hooks)


def watched(module: nn.Module) -> bool:
    """Whether a hook (:func:`hooked`) is registered on ``module`` or any module inside it. The fused and
    row-only paths skip the inner modules' calls, so they must step aside for a hook on, say, ``mlp.fc1`` as
    much as for one on the block. Global hooks (``register_module_forward_hook``: profilers, FLOP counters that
    attribute work to modules) do not count: they measure the path that runs, and must not change it."""
    return any(hooked(m) for m in module.modules())


class _OneDNNLinear(torch.autograd.Function):
    """y = x W^T + b; the forward and the input-gradient GEMMs run on oneDNN."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return _LP(x, weight, bias, "none", [], "")

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        g2, x2 = grad.reshape(-1, grad.shape[-1]), x.reshape(-1, x.shape[-1])
        if not ctx.needs_input_grad[0]:
            gx = None
        elif torch.is_grad_enabled():  # create_graph=True (a second derivative): oneDNN's op has no derivative
            gx = grad @ weight  # and gave zeros there, silently; torch's matmul has one
        else:
            gx = _LP(g2, weight.t(), None, "none", [], "").view(x.shape)
        # The weight gradient stays on torch.mm: oneDNN would first copy both transposed operands into
        # contiguous memory (measured 2-3x slower for this GEMM on a Zen 3 CPU).
        gw = g2.t() @ x2 if ctx.needs_input_grad[1] else None
        gb = g2.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return gx, gw, gb


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear``, on oneDNN for CPU fp32 tensors where oneDNN is the library (``_inference_library``)."""
    if not _needs_grad(x, weight, bias):
        if _onednn_ok(x, weight, _inference_library(x)):
            return _LP(x, weight, bias, "none", [], "")
    elif _onednn_ok(x, weight):
        return _OneDNNLinear.apply(x, weight, bias)
    return F.linear(x, weight, bias)


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters and state-dict names) that runs on oneDNN for CPU fp32 inputs."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)


def make_activation(name: str) -> nn.Module:
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}") from None


# Activations a block can fuse into fc1 (name -> GELU approximation, oneDNN's and aten's spelling alike;
# QuickGELU goes through SiLU).
_FUSED_ACTS = {"gelu": "none", "gelu_tanh": "tanh", "quick_gelu": ""}


def _activation_kind(act: nn.Module) -> tuple:
    return type(act), getattr(act, "approximate", None)  # nn.GELU is exact or tanh by its attribute


_ACTIVATION_KINDS = {name: _activation_kind(make()) for name, make in ACTIVATIONS.items()}


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden_dim: int, act: str = "gelu"):
        super().__init__()
        self.fc1 = Linear(dim, hidden_dim)
        self.act_name = act
        self.act = make_activation(act)
        self.fc2 = Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


# CPU training runs attention materialised (scores, softmax, @ v; autograd's backward is a few batched GEMMs)
# up to this many keys, and SDPA's flash kernel above: flash's CPU backward is slow at short sequences.
# Forward and backward on a 2-core Xeon (batch 32, head dim 64), flash vs materialised: fp32 17.4 vs 11.0 ms at
# 50 keys, 18.3 vs 15.1 at 77, but 24.6 vs 25.4 at 96 (head dim 32) and 107 vs 170 at 197; bf16 46 vs 8.7 ms at
# 50 keys, 43 vs 10 at 77, 127 vs 68 at 197. On a 2-core Zen 4 EPYC (AVX-512; section ``cpu_switches``): fp32
# within noise at 22-77 keys (materialised 0.88-1.23x as fast over three runs), 143 vs 293 ms at 197; bf16 52 vs
# 12 ms at 50 keys, 59 vs 16 at 77, 215 vs 146 at 197. Inference keeps SDPA: its forward was as fast or faster.
# On a 2-core AVX2 EPYC (docs/benchmarks/AVX2.md) SDPA won or tied everywhere: materialised fp32 0.91-0.96x as
# fast at 50-65 keys, 0.70x at 77 (causal), 0.67x at 197; bf16 0.08-0.18x. So only AVX-512 CPUs materialise.
# ``KIZUNA_MATERIALISED_ATTENTION=0/1`` overrides.
INTEL = cpu_info("vendor_id") == "GenuineIntel"


def _materialised_keys_default() -> dict:
    on = env_switch("KIZUNA_MATERIALISED_ATTENTION", "AVX512" in torch.backends.cpu.get_cpu_capability())
    return {torch.float32: 80, torch.bfloat16: 200} if on else {}


MATERIALISED_TRAINING_KEYS = _materialised_keys_default()


def _materialise_for_training(q: torch.Tensor, k: torch.Tensor) -> bool:
    """Whether this attention runs materialised (see ``MATERIALISED_TRAINING_KEYS``): CPU, with a graph."""
    if q.device.type != "cpu" or not _needs_grad(q, k) or capturing_graph():
        return False
    return k.shape[-2] <= MATERIALISED_TRAINING_KEYS.get(q.dtype, 0)


def materialised_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False,
                           keep: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(q k^T / sqrt(d)) v and the attention weights. ``keep``: a boolean mask, True where a query may
    attend (broadcast to [B, heads, queries, keys]); ``causal``: each query sees keys up to its own position.
    The softmax runs in float32 (bf16 probabilities lose too much), its weights in the inputs' dtype."""
    scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(q.shape[-1]))
    if causal:
        T = q.shape[-2]
        keep = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
    if keep is not None:
        scores = scores.masked_fill(~keep, float("-inf"))
    attn = scores.softmax(dim=-1, dtype=torch.float32).to(q.dtype)
    return attn @ v, attn


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.head_dim = dim // heads
        self.qkv = Linear(dim, 3 * dim)
        self.proj = Linear(dim, dim)
        # The plain path is the reference; tests switch it on to compare with SDPA.
        self.use_sdpa = True

    def forward(
        self, x: torch.Tensor, causal: bool = False, return_attention: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        if self.use_sdpa and not return_attention and not _materialise_for_training(q, k):
            out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
            attn = None
        else:
            out, attn = materialised_attention(q, k, v, causal=causal)
            attn = attn if return_attention else None
        out = out.transpose(1, 2).reshape(B, T, C)
        return self.proj(out), attn


class Block(nn.Module):
    """Pre-LN Transformer block."""

    def __init__(self, dim: int, heads: int, mlp_dim: int, act: str = "gelu", eps: float = 1e-5):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, mlp_dim, act)

    def forward(
        self, x: torch.Tensor, causal: bool = False, return_attention: bool = False,
        workspace: dict | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``workspace``: a dict the fused path keeps its large scratch buffers in, shared by the blocks of
        one forward pass (:class:`Transformer` passes one), so they are allocated once, not per block."""
        lib = None if return_attention else self._fused_library(x)
        if lib is not None:
            return self._forward_fused(x, causal, lib, workspace), None
        h, attn = self.attn(self.norm1(x), causal=causal, return_attention=return_attention)
        x = x + h
        x = x + self.mlp(self.norm2(x))
        return x, attn

    def _fusable(self, x: torch.Tensor) -> bool:
        return self._fused_library(x) is not None

    def as_built(self) -> bool:
        """Whether the block's parts are the ones it was built with, so that the fused and row-only paths,
        which read their weights rather than call them, compute what calling them would: not where a user
        swapped one (a LoRA or other adapter wrapping ``attn.qkv``, another activation in ``mlp.act``, a
        parametrization, a quantized layer: those ran as if nothing had changed) or hooks watch one."""
        a, m = self.attn, self.mlp
        return (type(a) is Attention and type(m) is Mlp and type(self.norm1) is nn.LayerNorm
                and type(self.norm2) is nn.LayerNorm
                and all(type(lin) is Linear for lin in (a.qkv, a.proj, m.fc1, m.fc2))
                and _activation_kind(m.act) == _ACTIVATION_KINDS.get(m.act_name) and not watched(self))

    def _fused_library(self, x: torch.Tensor) -> str | None:
        """The library the fused inference path runs this block on for input ``x`` (``_block_gemm``), or None
        when the block must run unfused (fusion off, hooks watching, an autograd graph, ...)."""
        a, m = self.attn, self.mlp
        if not (FUSE and a.use_sdpa and m.act_name in _FUSED_ACTS):
            return None
        if _needs_grad(x, *self.parameters()) or not self.as_built():
            return None
        return _block_gemm(x, a.qkv.weight)

    def forward_rows(self, x: torch.Tensor, rows: torch.Tensor, causal: bool = False) -> torch.Tensor:
        """The block's output at a few positions only, ``[B, k, D]`` for ``rows`` ``[B, k]`` (token indices).

        A pooled model reads one token of its last block (the class token, the end-of-text token): the
        other rows of that block's attention output, projection and MLP are never used. Keys and values
        still come from every token; a causal query at position p sees keys 0..p. Same numbers as
        ``forward(x)[rows]`` up to float rounding, for outputs and gradients alike.
        """
        a = self.attn
        B, T, C = x.shape
        h = self.norm1(x)
        q = linear(gather_rows(h, rows), a.qkv.weight[:C], a.qkv.bias[:C])
        q = q.view(B, rows.shape[1], a.heads, a.head_dim).transpose(1, 2)  # not -1: an empty batch has no size
        kv = linear(h, a.qkv.weight[C:], a.qkv.bias[C:]).view(B, T, 2, a.heads, a.head_dim)
        k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)
        mask = None
        if causal:  # query at position p attends to keys 0..p: [B, 1, k, T]
            mask = (torch.arange(T, device=x.device) <= rows.unsqueeze(-1)).unsqueeze(1)
        if a.use_sdpa and not _materialise_for_training(q, k):
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        else:  # the materialised path, as in Attention.forward
            out, _ = materialised_attention(q, k, v, keep=mask)
        out = out.transpose(1, 2).reshape(B, rows.shape[1], C)
        x = gather_rows(x, rows)
        lib = self._fused_library(x)
        if lib is not None:
            return self._mlp_fused(_linear_add(out, x, a.proj.weight, a.proj.bias, lib), lib)
        x = x + a.proj(out)
        return x + self.mlp(self.norm2(x))

    def _forward_fused(self, x: torch.Tensor, causal: bool, lib: str, workspace: dict | None = None) -> torch.Tensor:
        """Inference with fused GEMMs: qkv + bias, proj + bias + residual, fc1 + bias + activation, fc2 + bias +
        residual are one GEMM call each (same numbers as the unfused path up to float rounding)."""
        a = self.attn
        B, T, C = x.shape
        qkv = _linear_act(self.norm1(x), a.qkv.weight, a.qkv.bias, lib,
                          out=_scratch(workspace, "qkv", x, 3 * C, lib))
        q, k, v = qkv.view(B, T, 3, a.heads, a.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        h = F.scaled_dot_product_attention(q, k, v, is_causal=causal).transpose(1, 2).reshape(B, T, C)
        return self._mlp_fused(_linear_add(h, x, a.proj.weight, a.proj.bias, lib), lib, workspace)

    def _mlp_fused(self, x: torch.Tensor, lib: str, workspace: dict | None = None) -> torch.Tensor:
        """``x + mlp(norm2(x))`` with fc1 and its activation, then fc2 with the residual add, one GEMM call each."""
        m, n2 = self.mlp, self.norm2
        out = _scratch(workspace, "hidden", x, m.fc1.weight.shape[0], lib)
        w2 = m.fc2.weight
        if m.act_name == "quick_gelu":
            # x * sigmoid(1.702 x) == silu(1.702 x) / 1.702; the 1.702 goes into LayerNorm's affine and fc1's
            # bias (768 numbers each), the 1 / 1.702 into fc2's GEMM (see _linear_add).
            y = F.layer_norm(x, n2.normalized_shape, n2.weight * _QUICK, n2.bias * _QUICK, n2.eps)
            h = _linear_act(y, m.fc1.weight, m.fc1.bias * _QUICK, lib, "swish", out=out)
            return _linear_add(h, x, w2, m.fc2.bias, lib, scale=1.0 / _QUICK)
        h = _linear_act(n2(x), m.fc1.weight, m.fc1.bias, lib, "gelu", _FUSED_ACTS[m.act_name], out=out)
        return _linear_add(h, x, w2, m.fc2.bias, lib)


def inference_library(rows: int) -> str:
    """The library for an inference call (no autograd graph) of ``rows`` rows: ``GEMM``, except that where
    that is MKL, calls of fewer than ``MKL_MIN_ROWS`` rows go to oneDNN (if it works here), the faster one there."""
    return "onednn" if GEMM == "mkl" and rows < MKL_MIN_ROWS else GEMM


def _inference_library(x: torch.Tensor) -> str:
    return inference_library(x.numel() // max(x.shape[-1], 1))


def _block_gemm(x: torch.Tensor, weight: torch.Tensor) -> str | None:
    """The library a fused inference block runs on for input ``x`` (``_inference_library``, MKL where oneDNN
    does not work; oneDNN for bf16 where ``ONEDNN_BF16``), or None when it may not fuse (see ``_fast_path_ok``)."""
    if _onednn_ok(x, weight, _inference_library(x)):
        return "onednn"
    if GEMM == "mkl" and _fast_path_ok(x, weight):
        return "mkl"
    if ONEDNN_BF16 and torch.backends.mkldnn.enabled and _cpu_eager(x, weight, torch.bfloat16):
        return "onednn"
    return None


def _scratch(workspace: dict | None, name: str, x: torch.Tensor, features: int, lib: str) -> torch.Tensor | None:
    """A ``[rows of x, features]`` buffer from ``workspace``, reused while the shape stays; None without one.
    Only MKL writes into it (oneDNN's op allocates its own output)."""
    if workspace is None or lib != "mkl":
        return None
    shape = (x.numel() // x.shape[-1], features)
    buf = workspace.get(name)
    if buf is None or buf.shape != shape or buf.dtype != x.dtype or buf.device != x.device:
        buf = workspace[name] = x.new_empty(shape)
    return buf


def _linear_act(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, lib: str, act: str | None = None,
                approximate: str = "none", out: torch.Tensor | None = None) -> torch.Tensor:
    """``act(x W^T + b)`` for the fused inference path on ``lib`` ("onednn" or "mkl"); ``act`` is None, "swish"
    or "gelu" (with ``approximate``). oneDNN applies it as a post-op where that is cheap
    (``FUSE_ACTIVATION``, fp32 only), otherwise it runs in place. MKL writes into ``out`` when given (see
    ``_scratch``). In bf16 the in-place activation won on the Xeon with AMX: a ViT-B block at 1,600 rows
    took 24.7 ms against 28.9 ms with the post-op (QuickGELU), 23.9 against 27.2 ms (GELU)."""
    if lib == "onednn":
        if act is not None and FUSE_ACTIVATION and x.dtype == torch.float32:
            return _LP(x, weight, bias, act, [], approximate if act == "gelu" else "")
        y = _LP(x, weight, bias, "none", [], "")
    else:
        # (the width named: a 0-row batch has no size to give a -1)
        y = torch.addmm(bias, x.reshape(-1, x.shape[-1]), weight.t(), out=out).view(*x.shape[:-1], weight.shape[0])
    if act == "swish":
        return F.silu(y, inplace=True)
    if act == "gelu":
        return torch.ops.aten.gelu_(y, approximate=approximate)
    return y


def _linear_add(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                lib: str, scale: float = 1.0) -> torch.Tensor:
    """``residual + scale * x W^T + b`` in one GEMM call on ``lib``, as a new tensor (callers may keep
    ``residual``). MKL's GEMM takes ``scale`` as its alpha, for free; oneDNN's op has no alpha, so there it
    multiplies the smaller of ``x`` and ``weight`` (a temporary copy, not in place: ``x`` may be reused)."""
    if lib == "onednn":
        if scale != 1.0:
            if x.numel() > weight.numel():
                weight = weight * scale
            else:
                x = x * scale
        return _LP_BINARY(x, residual, weight, bias, "add")
    y = torch.add(residual, bias).contiguous()  # MKL accumulates into it: beta = 1
    y.view(-1, y.shape[-1]).addmm_(x.reshape(-1, x.shape[-1]), weight.t(), alpha=scale)
    return y


def gather_rows(x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``x[b, rows[b, i]]`` for tokens ``x`` [B, T, D] and indices ``rows`` [B, k] -> [B, k, D]."""
    return x.gather(1, rows.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


class Transformer(nn.Module):
    """A stack of blocks with optional per-block gradient checkpointing and intermediates."""

    def __init__(self, dim: int, depth: int, heads: int, mlp_dim: int, act: str, eps: float):
        super().__init__()
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_dim, act, eps) for _ in range(depth))
        self.grad_checkpointing = False

    def forward(
        self,
        x: torch.Tensor,
        causal: bool = False,
        return_tokens: bool = False,
        return_attention: bool = False,
        rows: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """``rows`` ([B, k] token indices): the last block computes only these positions
        (:meth:`Block.forward_rows`) and the output is ``[B, k, D]``; for pooled outputs. Not while hooks
        watch the last block (they expect its full output) or one of its parts was swapped (the row-only path
        reads their weights: :meth:`Block.as_built`), then the output is ``x[rows]`` of the full run."""
        last = self.blocks[-1] if len(self.blocks) else None
        if rows is not None and last is not None and not last.as_built():
            x, _, _ = self._run(self.blocks, x, causal)
            return gather_rows(x, rows), [], []
        if rows is not None and not (return_tokens or return_attention) and last is not None:
            x, _, _ = self._run(self.blocks[:-1], x, causal)
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                x = torch.utils.checkpoint.checkpoint(last.forward_rows, x, rows, causal, use_reentrant=False)
                return x, [], []
            return last.forward_rows(x, rows, causal), [], []
        return self._run(self.blocks, x, causal, return_tokens, return_attention)

    def _run(self, blocks, x, causal, return_tokens=False, return_attention=False):
        tokens, attentions = [], []
        workspace = {}  # the fused blocks' scratch buffers, shared for this pass only
        for block in blocks:
            if self.grad_checkpointing and self.training and torch.is_grad_enabled() and not return_attention:
                x, attn = torch.utils.checkpoint.checkpoint(block, x, causal, False, use_reentrant=False)
            else:
                x, attn = block(x, causal=causal, return_attention=return_attention, workspace=workspace)
            if return_tokens:
                tokens.append(x)
            if return_attention:
                attentions.append(attn)
        return x, tokens, attentions


class AttentionPool(nn.Module):
    """Multi-head attention pooling with a learned probe (SigLIP's "MAP" head)."""

    def __init__(self, dim: int, heads: int, mlp_dim: int, act: str = "gelu", eps: float = 1e-5):
        super().__init__()
        self.probe = nn.Parameter(torch.randn(1, 1, dim) * dim**-0.5)
        self.heads = heads
        self.q = Linear(dim, dim)
        self.kv = Linear(dim, 2 * dim)
        self.proj = Linear(dim, dim)
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, mlp_dim, act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        hd = C // self.heads
        # repeat, not expand: under no_grad an expanded view of the parameter requires grad with no grad_fn,
        # which torch's module tracker (FlopCounterMode) cannot handle; B x C values cost nothing
        q = self.q(self.probe.repeat(B, 1, 1)).view(B, 1, self.heads, hd).transpose(1, 2)
        k, v = self.kv(x).view(B, T, 2, self.heads, hd).permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, 1, C)
        out = self.proj(out)
        out = out + self.mlp(self.norm(out))
        return out[:, 0]
