"""Shared pieces of the benchmark suite: interleaved timing, machine description, data and model set-up,
Markdown tables.

Timing rules (every benchmark follows them):
  * each figure is the median over >= 5 timed runs, after warm-up runs that are not counted; when the
    middle runs of a contender still disagree by more than 25%, whole rounds are added (up to 9), and a
    timing still that noisy when they run out is marked "(noisy)" in its table (``spread_text``);
  * contenders are measured alternately in the same process (A, B, A, B, ...), so a change in machine
    load (the machine may be shared) hits both alike; the ratio is taken of the two medians;
  * everything is fp32 on the CPU with torch's default (all-core) thread count unless a section says
    otherwise.
"""
from __future__ import annotations

import contextlib
import gc
import os
import platform
import shutil
import statistics
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("KIZUNA_SHARED", REPO.parent / "shared"))
FLICKR = SHARED / "data" / "flickr8k"
CIFAR10 = SHARED / "data" / "cifar10"


# ================================================================================================
# Run settings
# ================================================================================================
@dataclass
class Settings:
    quick: bool = False  # tiny sizes for the smoke test: the numbers are not measurements
    reps: int = 5  # timed runs per figure (>= 5)
    max_reps: int = 9  # up to this many when a contender's runs are noisy (see `interleaved`)
    warmup: int = 2  # untimed runs per contender before timing
    log: Callable[[str], None] = print
    extra: dict = field(default_factory=dict)  # results of earlier benchmarks in this process

    @classmethod
    def make(cls, quick: bool, log=print) -> "Settings":
        return cls(quick=quick, reps=5, max_reps=5 if quick else 9, warmup=1 if quick else 2, log=log)


# ================================================================================================
# Timing
# ================================================================================================
@dataclass
class Timing:
    """Seconds per call of one contender, one entry per timed run."""

    runs: list[float]
    items: int = 1  # items (images, texts, captions...) processed per call
    faults: list[float] = field(default_factory=list)  # minor page faults per call, one entry per timed run

    @property
    def faults_per_call(self) -> float | None:
        """Median minor page faults per call (fresh memory from the OS, zero-filled on first touch: a cost
        that depends on the allocator's state, not on the model); None where it cannot be read."""
        return statistics.median(self.faults) if self.faults else None

    @property
    def median(self) -> float:
        return statistics.median(self.runs)

    @property
    def rate(self) -> float:
        """Items per second at the median time."""
        return self.items / self.median

    @property
    def spread(self) -> float:
        """(max - min) / median of the timed runs: how noisy the figure is."""
        return (max(self.runs) - min(self.runs)) / self.median

    @property
    def noisy(self) -> bool:
        """Whether the runs were still noisy (:func:`_noisy`) when timing stopped: extra rounds ran out, or the
        section allowed none. Such a median is less certain than the others; the tables mark it."""
        return _noisy(self.runs)

    def as_dict(self) -> dict:
        return {"runs_s": [round(r, 6) for r in self.runs], "median_s": round(self.median, 6),
                "items_per_call": self.items, "items_per_s": round(self.rate, 3), "spread": round(self.spread, 4),
                "noisy": self.noisy, "minor_faults_per_call": self.faults_per_call}


def spread_text(t: Timing) -> str:
    """A table cell: ``t``'s spread, marked "noisy" where its middle runs still disagreed at the end."""
    return f"{t.spread:.0%}" + (" (noisy)" if t.noisy else "")


def faults_text(t: Timing) -> str:
    """A table cell: ``t``'s median minor page faults per call, "-" where they could not be read."""
    return "-" if t.faults_per_call is None else f"{t.faults_per_call:,.0f}"


def minor_faults() -> int | None:
    """Minor page faults of this process so far (None where ``resource`` does not exist, e.g. Windows)."""
    try:
        import resource
    except ImportError:
        return None
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


NOISY = 0.25  # a contender whose middle runs differ by more than this share of their median is "noisy"


def _noisy(runs: list[float], limit: float = NOISY) -> bool:
    """Whether the runs left after dropping the fastest and the slowest still spread by more than ``limit``.

    One outlier (a neighbour's burst) does not move a median of five; two or more can, and then the
    middle runs disagree too. Extra rounds are what makes the median trustworthy again.
    """
    mid = sorted(runs)[1:-1] if len(runs) > 2 else runs
    return (max(mid) - min(mid)) / statistics.median(runs) > limit


def interleaved(contenders: dict[str, Callable[[], Any]], reps: int, warmup: int, inner: int = 1,
                items: int | dict[str, int] = 1, max_reps: int | None = None) -> dict[str, Timing]:
    """Time each contender ``reps`` times, alternating between them: A, B, A, B, ...

    Every contender first runs ``warmup`` untimed calls (also alternating). A timed run is ``inner``
    consecutive calls; its time is the mean per call. ``items`` is what one call processes (for rates).
    When after ``reps`` rounds any contender is noisy (:func:`_noisy`), whole rounds (every contender
    again, still alternating) are added, up to ``max_reps``: on a shared machine a burst of load can
    hit two of five runs, and the median of five is then off.
    """
    if reps < 5:
        raise ValueError(f"reps must be >= 5 (got {reps}): every figure is a median over >= 5 runs")
    max_reps = max(reps, max_reps or reps)
    names = list(contenders)
    for _ in range(warmup):
        for n in names:
            contenders[n]()
    runs: dict[str, list[float]] = {n: [] for n in names}
    faults: dict[str, list[float]] = {n: [] for n in names}
    while True:
        for n in names:
            fn = contenders[n]
            gc.collect()
            f0 = minor_faults()
            t0 = time.perf_counter()
            for _ in range(inner):
                fn()
            runs[n].append((time.perf_counter() - t0) / inner)
            if f0 is not None:
                faults[n].append((minor_faults() - f0) / inner)
        done = len(runs[names[0]])
        if done >= max_reps or (done >= reps and not any(_noisy(r) for r in runs.values())):
            break
    per = items if isinstance(items, dict) else {n: items for n in names}
    return {n: Timing(runs[n], per[n], faults[n]) for n in names}


def inner_for(fn: Callable[[], Any], target_s: float = 0.5, max_inner: int = 50) -> int:
    """How many calls make a timed run of about ``target_s`` (short calls are noisy on their own)."""
    t0 = time.perf_counter()
    fn()
    dt = time.perf_counter() - t0
    return int(max(1, min(max_inner, round(target_s / max(dt, 1e-6)))))


# ================================================================================================
# kizuna's GEMM library and fusion switch
# ================================================================================================
PLAIN_LABEL = "kizuna, plain F.linear (unfused)"
GEMM_NAMES = {"onednn": "oneDNN (`torch.ops.mkldnn._linear_pointwise`)", "mkl": "MKL (`torch.addmm`)"}


def shipped_gemm() -> str:
    """The library kizuna as shipped runs its CPU fp32 GEMMs on here (``kizuna.models.layers.GEMM``: oneDNN
    on AMD, MKL on Intel or where the oneDNN op is unavailable; ``KIZUNA_GEMM`` overrides)."""
    from kizuna.models import layers

    return layers.GEMM


def shipped_note() -> str:
    """One sentence on what "kizuna as shipped" runs on this machine."""
    from kizuna.models import layers

    small = (f" (inference of fewer than {layers.MKL_MIN_ROWS} rows, batch x tokens, on oneDNN: "
             "`layers.MKL_MIN_ROWS`)" if shipped_gemm() == "mkl" and layers.ONEDNN and layers.MKL_MIN_ROWS else "")
    return (f"\"kizuna\" is kizuna as shipped: CPU fp32 linears on {GEMM_NAMES[shipped_gemm()]}{small} "
            f"(`kizuna.models.layers.GEMM`, chosen by CPU vendor), bias/activation/residual fused into the GEMMs "
            "of each block at inference.")


def onednn_matmul():
    """``torch.ops.mkldnn._linear_pointwise`` (oneDNN's matmul, what kizuna's linears call on AMD), or None."""
    from kizuna.models import layers

    return layers._LP


@contextlib.contextmanager
def plain_linears():
    """kizuna as a plain PyTorch model for the duration: every linear is ``F.linear`` (MKL sgemm for fp32
    on the CPU; ``kizuna.models.layers.GEMM = "mkl"``) and blocks take the unfused path
    (``layers.FUSE = False``): what kizuna's GEMM and fusion choices are measured against. The previous
    values are restored afterwards."""
    from kizuna.models import layers

    saved = layers.GEMM, layers.FUSE, layers.MKL_MIN_ROWS
    layers.GEMM, layers.FUSE, layers.MKL_MIN_ROWS = "mkl", False, 0  # MKL at every size, even batch 1
    try:
        yield
    finally:
        layers.GEMM, layers.FUSE, layers.MKL_MIN_ROWS = saved


def other_library() -> str:
    """The GEMM library kizuna does not ship with on this machine."""
    return "mkl" if shipped_gemm() == "onednn" else "onednn"


def other_label() -> str:
    """The label of kizuna on the library it does not ship with here (see :func:`other_gemm`)."""
    return f"kizuna on {'MKL' if other_library() == 'mkl' else 'oneDNN'}, fused"


@contextlib.contextmanager
def other_gemm():
    """kizuna on the GEMM library it does not ship with on this machine, still fused, for the duration: what
    the choice of library alone is worth. Needs a working oneDNN op (:func:`onednn_usable`)."""
    from kizuna.models import layers

    saved = layers.GEMM, layers.MKL_MIN_ROWS
    layers.GEMM = other_library()
    layers.MKL_MIN_ROWS = 0  # on MKL at every size (as shipped, small MKL blocks run on oneDNN)
    try:
        yield
    finally:
        layers.GEMM, layers.MKL_MIN_ROWS = saved


def onednn_usable() -> bool:
    """Whether kizuna can run its linears on oneDNN here (``kizuna.models.layers.ONEDNN``: the op exists,
    passed its start-up check, and ``KIZUNA_ONEDNN`` is not 0)."""
    from kizuna.models import layers

    return bool(layers.ONEDNN)


PAD_LABEL = "kizuna, padding kept"
FULL_LABEL = "kizuna, last block full"


@contextlib.contextmanager
def _flags(pairs: list[tuple[Any, str]], value) -> Any:
    """Set attribute ``name`` of each object to ``value`` for the duration; restore the old values."""
    saved = [(obj, name, getattr(obj, name)) for obj, name in pairs]
    try:
        for obj, name in pairs:
            setattr(obj, name, value)
        yield
    finally:
        for obj, name, old in saved:
            setattr(obj, name, old)


def padding_kept(model):
    """``model``'s text tower with its padding trim off for the duration: every call runs all the
    positions of the token batch (77 here), as HF does; the previous setting is restored afterwards."""
    return _flags([(model.text, "trim_padding")], False)


def last_block_full(model):
    """``model``'s towers with the pruned last block off for the duration: the last block runs for every
    token, as HF and OpenCLIP run it (``prune_last_block``, see ``kizuna.models.layers.Block.forward_rows``)."""
    return _flags([(t, "prune_last_block") for t in (model.visual, model.text) if hasattr(t, "prune_last_block")],
                  False)


def within(context: Callable[[Any], Any], fn: Callable[[], Any], model) -> Callable[[], Any]:
    """``fn`` wrapped so every call runs inside ``context(model)`` (for ``interleaved``)."""
    def call():
        with context(model):
            return fn()
    return call


def positions_run(model, tokens) -> int:
    """How many of the batch's token positions kizuna's text tower runs (its own rule)."""
    return model.text.positions_run(tokens)


def step_optimizer(model):
    """The optimizer every training-step contender gets: kizuna's AdamW (decay on matrices), CLIP's betas/eps."""
    from kizuna.train.optim import make_optimizer

    return make_optimizer(model, lr=1e-5, weight_decay=0.2, betas=(0.9, 0.98), eps=1e-6)


def clip_train_step(features: Callable[[], tuple], opt, autocast=None, sync: Callable[[], None] | None = None):
    """One contrastive training step, the same for every contender: ``features()`` gives (image features,
    text features, exp(logit scale)) under ``autocast``, then CLIP loss, backward, optimizer step and
    zeroed gradients; ``sync`` waits for an asynchronous device before the time is taken."""
    from kizuna.models.losses import clip_loss

    with autocast if autocast is not None else contextlib.nullcontext():
        loss = clip_loss(*features())
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    if sync is not None:
        sync()
    return loss.detach()


def with_plain_linears(fn: Callable[[], Any]) -> Callable[[], Any]:
    """``fn`` wrapped so every call runs inside :func:`plain_linears` (for ``interleaved``)."""
    def call():
        with plain_linears():
            return fn()
    return call


# ================================================================================================
# The machine
# ================================================================================================
def cpu_model() -> str:
    from kizuna.models.layers import cpu_info

    return cpu_info("model name") or platform.processor() or "unknown"


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):  # AttributeError: Windows has no os.getloadavg
        return []


def machine_info() -> dict:
    import numpy

    info = {
        "cpu_model": cpu_model(),
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "mkldnn": torch.backends.mkldnn.is_available(),
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "platform": platform.platform(),
    }
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:
        info["transformers"] = None
    try:
        import tokenizers

        info["tokenizers"] = tokenizers.__version__
    except ImportError:
        info["tokenizers"] = None
    try:
        mem = Path("/proc/meminfo").read_text().split("\n")[0].split()
        info["memory_gib"] = round(int(mem[1]) / 2**20, 1)
    except (OSError, IndexError, ValueError):
        pass
    return info


# ================================================================================================
# Data
# ================================================================================================
def flickr_shards() -> list[Path]:
    return sorted(FLICKR.glob("*/*.tar")) if FLICKR.is_dir() else []


def flickr_captions() -> list[str]:
    """All Flickr8k captions (40,455): the ``.txt`` members of every shard, one caption per line."""
    captions: list[str] = []
    for shard in flickr_shards():
        with tarfile.open(shard) as tar:
            for m in tar:
                if m.isfile() and m.name.endswith(".txt"):
                    text = tar.extractfile(m).read().decode("utf-8")
                    captions.extend(line.strip() for line in text.split("\n") if line.strip())
    return captions


def synthetic_captions(n: int, seed: int = 0) -> list[str]:
    """Caption-like English strings for machines without the shared data."""
    import random

    rng = random.Random(seed)
    words = ("a dog runs on the grass while two children play with a red ball near the water in a park "
             "man woman black white wearing shirt street city snow mountain bike riding jumps over").split()
    return [" ".join(rng.choice(words) for _ in range(rng.randint(6, 18))) + " ." for _ in range(n)]


def caption_source() -> tuple[list[str], str]:
    caps = flickr_captions()
    if caps:
        return caps, f"Flickr8k ({len(caps):,} captions from {FLICKR})"
    return synthetic_captions(40455), "synthetic captions (shared Flickr8k data not found)"


# ================================================================================================
# Models with identical weights
# ================================================================================================
SHAPES = {
    # OpenAI's ViT-B/32 and ViT-B/16 (text tower: 12 x 512, 8 heads; QuickGELU as OpenAI trained them).
    "ViT-B/32": dict(patch_size=32),
    "ViT-B/16": dict(patch_size=16),
}


# A two-block model at width 64 and 64 px: for --quick smoke runs of sections that need no ViT-B.
TINY = "tiny"


def hf_clip_config(variant: str):
    import transformers

    if variant == TINY:
        small = dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2,
                     hidden_act="quick_gelu")
        return transformers.CLIPConfig(vision_config=dict(image_size=64, patch_size=16, **small),
                                       text_config=dict(max_position_embeddings=77, **small), projection_dim=64)
    return transformers.CLIPConfig(
        vision_config=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                           image_size=224, hidden_act="quick_gelu", **SHAPES[variant]),
        text_config=dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8,
                         max_position_embeddings=77, hidden_act="quick_gelu"),
        projection_dim=512,
    )


def build_pair(variant: str, seed: int = 0):
    """(kizuna ClipModel, transformers CLIPModel) with identical random weights, both in eval mode.

    A random-init HF ``CLIPModel`` is saved with ``save_pretrained`` and loaded by ``kizuna.create_model``
    (the path the interop tests check for identical numbers). HF keeps its default attention
    implementation; ``hf.config._attn_implementation`` says which it is.
    """
    import transformers

    import kizuna

    torch.manual_seed(seed)
    hf = transformers.CLIPModel(hf_clip_config(variant)).eval()
    tmp = Path(tempfile.mkdtemp(prefix="kizuna-bench-"))
    try:
        hf.save_pretrained(tmp)
        k = kizuna.create_model(str(tmp)).eval()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return k, hf


def hf_attention(hf) -> str:
    return str(getattr(hf.config, "_attn_implementation", None) or getattr(
        hf.config.vision_config, "_attn_implementation", "unknown"))


def pooled(out) -> torch.Tensor:
    """transformers 5.x returns a model output from get_*_features; 4.x a tensor."""
    return out.pooler_output if hasattr(out, "pooler_output") else out


# ================================================================================================
# Markdown
# ================================================================================================
def md_table(headers: list[str], rows: list[list[Any]], align: str | None = None) -> str:
    align = align or ("l" + "r" * (len(headers) - 1))
    sep = ["---:" if a == "r" else ":---:" if a == "c" else "---" for a in align]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(sep) + " |"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)
