"""Feature extraction for evaluation: batched, with progress bars, optionally sharded over ranks.

Under ``torch.distributed`` (``torchrun``) every rank encodes a disjoint contiguous shard of the
items and the features are gathered (:func:`kizuna.train.distributed.gather_no_grad`, padded to
equal length), so every rank ends up with the same full feature matrix and computes the same
metrics. Shards are cut on the *global batch grid* (rank ``r`` gets batches
``[r*B/W, (r+1)*B/W)`` of the single-process run), so each batch the model sees is the very batch a
single process would see - the features, and hence the metrics, are identical to one process.

Public API
----------
``dist_info() -> (rank, world_size)``; ``is_main()``.
``shard_bounds(n, batch_size, world_size) -> list[(start, end)]`` one contiguous range per rank.
``gather_shards(x, bounds)``: each rank's ``x`` (rows ``bounds[rank]``) -> the full ``[n, ...]``.
``encode_images(model, dataset, transform=None, batch_size=64, device=None, num_workers=0,
progress=True, desc=...) -> ImageFeatures(features, valid, skips)`` for an
:class:`~kizuna.eval.datasets.EvalDataset`; undecodable images are counted skips (``valid`` False,
zero features), never a crash.
``encode_texts_sharded(model, tokenizer, texts, batch_size=256, device=None, progress=False)
-> TextFeatures(features, valid, skips)``: L2-normalised text embeddings; a text the tokenizer
rejects is a counted ``bad_caption`` skip.
``eval_mode(model)``: a context with every module of ``model`` in eval mode, each module's own mode restored
after (the encoders above run under it: dropout in a model left in train mode made its features noise).
``model_fingerprint(module)``: cheap in-memory identity (object id, submodule classes, storage, version
counters and checksums of parameters and buffers - changes whenever the weights are updated in place),
``content_hash(module)``: SHA-256 of the state dict (for on-disk caches).
"""
from __future__ import annotations

import hashlib
import numbers
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist

from kizuna.data.sources import SkipCounter
from kizuna.models.layers import unit_rows

__all__ = [
    "ImageFeatures", "TextFeatures", "content_hash", "dist_info", "encode_images", "encode_texts_sharded", "eval_mode",
    "gather_object", "gather_shards", "is_main", "model_fingerprint", "progress_bar", "shard_bounds",
]


# ----------------------------------------------------------------------------------- distribution
def dist_info() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    return dist_info()[0] == 0


def shard_bounds(n: int, batch_size: int, world_size: int) -> list[tuple[int, int]]:
    """Contiguous ``[start, end)`` per rank, cut on multiples of ``batch_size`` (the batch grid of a
    single process) and as balanced as whole batches allow."""
    if not is_count(batch_size):  # (every encoder cuts its batches here: 0 divided by zero, -1 blamed the data)
        raise ValueError(f"batch_size must be a whole number >= 1, got {batch_size!r}")
    nb = -(-n // batch_size) if n else 0
    out = []
    for r in range(world_size):
        b0, b1 = r * nb // world_size, (r + 1) * nb // world_size
        out.append((min(b0 * batch_size, n), min(b1 * batch_size, n)))
    return out


def gather_shards(x: torch.Tensor, bounds: list[tuple[int, int]]) -> torch.Tensor:
    """Concatenate every rank's rows (rank r holds ``bounds[r]``); padded to equal length for the
    all-gather, since ``gather_no_grad`` needs equal shapes."""
    rank, world = dist_info()
    if world == 1:
        return x
    from kizuna.train.distributed import gather_no_grad

    longest = max(e - s for s, e in bounds)
    n_local = bounds[rank][1] - bounds[rank][0]
    if x.shape[0] != n_local:
        raise ValueError(f"rank {rank} has {x.shape[0]} rows, expected {n_local}")
    pad = x.new_zeros((longest - n_local, *x.shape[1:]))
    dtype = x.dtype
    y = torch.cat([x, pad]) if longest > n_local else x
    if y.dtype == torch.bool:  # gloo does not all-gather bool
        y = y.to(torch.uint8)
    backend = dist.get_backend()
    dev = y.device
    if backend == "nccl" and dev.type != "cuda":
        y = y.cuda()
    elif backend == "gloo" and dev.type != "cpu":
        y = y.cpu()
    g = gather_no_grad(y).to(dev)
    parts = [g[r * longest : r * longest + (e - s)] for r, (s, e) in enumerate(bounds)]
    return torch.cat(parts).to(dtype)


def gather_object(obj) -> list:
    rank, world = dist_info()
    if world == 1:
        return [obj]
    out = [None] * world
    dist.all_gather_object(out, obj)
    return out


def summed_skips(skips: SkipCounter) -> SkipCounter:
    """Every rank's skipped samples in one SkipCounter (counts summed, examples from the first ranks on), on
    every rank; one process: ``skips`` itself. A collective (the trainers' epoch reports use it too)."""
    if dist_info()[1] == 1:
        return skips
    merged = SkipCounter(max_examples=skips.max_examples)
    for counts, examples in gather_object((skips.counts, skips.examples)):
        merged.update(counts, examples)
    return merged


def progress_bar(iterable=None, total=None, desc=None, enabled=True, unit: str = "batch"):
    # tqdm's plain bar, as every other kizuna bar: tqdm.auto's asyncio one calls iter() on what it wraps when it
    # is made, so every encoding pass started its DataLoader's workers twice and kept the first set prefetching
    # (2-3x slower under spawn, macOS's start method)
    if not (enabled and is_main()):
        # no tqdm object at all (its class lock fixed multiprocessing's start method in a host that then set
        # its own); without a bar a long pass says where it is every HEARTBEAT_SECONDS, as the training
        # commands print a line per logged step (a linear probe's log was silent for two minutes)
        if iterable is None:  # a bar updated by hand
            return _Heartbeat(total, desc, unit, quiet=not is_main())
        return _heartbeat(iterable, total, desc, unit) if is_main() else iterable
    from tqdm import tqdm

    # (the unit: "images: 157/157" counted batches of 64 images)
    return tqdm(iterable, total=total, desc=desc, unit=unit, leave=False, file=sys.stderr, dynamic_ncols=True)


HEARTBEAT_SECONDS = 30.0


class _Heartbeat:
    """What a disabled bar updated by hand is (update, close, a with block): a line every HEARTBEAT_SECONDS."""

    def __init__(self, total, desc, unit, quiet=False):
        self.total, self.desc, self.quiet, self.n = total, desc, quiet, 0
        self.units = unit + ("es" if unit.endswith(("ch", "s")) else "s")
        self.start = self.last = time.monotonic()

    def update(self, n=1):
        self.n += n
        now = time.monotonic()
        if not self.quiet and now - self.last >= HEARTBEAT_SECONDS:
            self.last = now
            print(f"{self.desc or 'working'}: {self.n}{f'/{self.total}' if self.total else ''} {self.units} after "
                  f"{now - self.start:.0f} s", file=sys.stderr, flush=True)

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _heartbeat(iterable, total, desc, unit):
    beat = _Heartbeat(total, desc, unit)
    for item in iterable:
        yield item
        beat.update()


# ----------------------------------------------------------------------------------- mode
@contextmanager
def eval_mode(model):
    """Every module of ``model`` in eval mode inside the block; afterwards each module gets its own ``training``
    flag back. The evaluators encode under it: a model left in train mode (a MiniLM tower's dropout 0.1) gave
    noisy features, and the class-embedding cache kept them. ``model.train(was)`` is no restore: it is
    recursive, and a caller's frozen tower kept in eval mode came back in train mode. Anything that is not
    a module is left as it is. Threads may share a model in eval mode (as create_model and load_model give it:
    nothing changes); one in train mode is switched by each call, so put it in eval mode before sharing it."""
    modules = list(model.modules()) if isinstance(model, torch.nn.Module) else []
    modes = [(m, m.training) for m in modules]
    if modules:
        model.eval()
    try:
        yield model
    finally:
        for m, training in modes:
            m.training = training


# ----------------------------------------------------------------------------------- identity
def _checksums(t: torch.Tensor) -> torch.Tensor:
    """The sum of ``t``, and its row and column sums weighted by their index (float64): a write that keeps
    the sum (two token embeddings swapped through ``.data``) still changes the weighted ones."""
    rows_n = t.shape[0] if t.dim() else 1
    flat = t.detach().reshape(rows_n, t.numel() // rows_n if rows_n else 0)
    rows, cols = flat.sum(1, dtype=torch.float64), flat.sum(0, dtype=torch.float64)
    at = torch.arange(max(len(rows), len(cols)), dtype=torch.float64, device=t.device)
    return torch.stack([rows.sum(), rows @ at[:len(rows)], cols @ at[:len(cols)]])


def module_structure(module: torch.nn.Module) -> tuple:
    """What a module's weights do not say about how it computes: every submodule's name and class, with an
    activation's variant (``nn.GELU``'s ``approximate``). An activation swapped for another, or a layer
    wrapped by an adapter, kept the weights, and the class-embedding cache served the old model's."""
    return tuple((name, f"{type(m).__module__}.{type(m).__qualname__}", str(getattr(m, "approximate", "")))
                 for name, m in module.named_modules())


def model_fingerprint(module: torch.nn.Module) -> tuple:
    """In-memory identity of a module's current weights and buffers: changes when any is updated in place
    (optimizer steps, ``load_state_dict``), moved or replaced, or a submodule is swapped
    (:func:`module_structure`).

    Checksums are part of it, not only the version counters: torch's fused AdamW (the trainers')
    and writes through ``.data`` update weights without bumping the counter, and the class embeddings of
    every evaluation during training were the first one's. Three float64 reductions per tensor, read back at
    once: about 0.2 s for a ViT-B/32 text tower (63 M parameters) on 2 CPU cores, per zero-shot evaluation."""
    tensors = list(module.parameters()) + list(module.buffers())
    with torch.no_grad():
        sums = torch.stack([_checksums(t) for t in tensors]).tolist() if tensors else []
    # (a model created under torch.inference_mode() holds inference tensors, which have no version counter: reading
    # it raised "Inference tensors do not track version counter"; their checksums still see a change)
    return (id(module), module_structure(module)) + tuple(
        (t.data_ptr(), -1 if t.is_inference() else t._version, tuple(t.shape), str(t.dtype), tuple(total))
        for t, total in zip(tensors, sums))


def content_hash(module: torch.nn.Module, extra: str = "") -> str:
    """SHA-256 of ``module``'s state dict (names, dtypes, shapes and bytes), after ``extra``: the key of
    on-disk caches."""
    h = hashlib.sha256(extra.encode())
    for name, t in module.state_dict().items():
        h.update(name.encode())
        t = t.detach().cpu().contiguous()
        h.update(str(t.dtype).encode() + str(tuple(t.shape)).encode())
        # (reshape: a 0-dim tensor, a CLIP model's logit_scale, has no byte view of its own)
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


# ----------------------------------------------------------------------------------- images
@dataclass
class ImageFeatures:
    features: torch.Tensor  # [N, D] float32, CPU; zero rows where not valid
    valid: torch.Tensor  # [N] bool: image decoded and encoded
    skips: SkipCounter  # load-time skips (corrupt_image, read_error, ...)


def _device_of(model, device):
    if device is not None:
        return torch.device(device)
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def _positions_in_batch(rows: list[int], kept: list[int], offset: int) -> list[int]:
    """Where each sample the collate kept (dataset rows, in order; corrupt ones dropped) sits in the shard: a
    subset may name one row twice, and a row -> position map gave both copies one slot and lost the other."""
    positions, j = [], 0
    for row in kept:
        while rows[j] != row:
            j += 1
        positions.append(offset + j)
        j += 1
    return positions


@torch.no_grad()  # not inference_mode: its tensors cannot be trained on or changed in place outside it
def encode_images(model, dataset, transform=None, batch_size: int = 64, device=None, num_workers: int = 0,
                  progress: bool = True, desc: str = "encoding images", normalize: bool = True,
                  seed_transform: bool = False, seed: int = 0, encode_fn=None) -> ImageFeatures:
    """Encode every image of ``dataset`` (an :class:`~kizuna.eval.datasets.EvalDataset`).

    ``transform`` defaults to the model's evaluation preprocessing. ``seed_transform``: seed the RNGs
    per sample from ``(seed, index)`` around the transform (random corruptions). ``encode_fn(images)``
    replaces ``model.encode_image`` (e.g. a transformers model in tests).
    """
    from kizuna.data.loader import Collate, before_workers_start, loader_timeout, watched_batches, worker_init

    if transform is None:
        import kizuna

        transform = kizuna.get_preprocess(model)
    device = _device_of(model, device)
    rank, world = dist_info()
    n = len(dataset)
    if n == 0:  # the same on every rank: safe to raise under torchrun
        from .datasets import DatasetError

        raise DatasetError(f"{getattr(dataset, 'name', 'the dataset')}: no images to encode (an empty split or "
                           "subset)")
    bounds = shard_bounds(n, batch_size, world)
    start, end = bounds[rank]
    pair_ds = dataset.pair_dataset(transform, seed_transform=seed_transform, seed=seed)
    rows = dataset.positions[start:end].tolist()
    batches = [rows[i : i + batch_size] for i in range(0, len(rows), batch_size)]
    before_workers_start(num_workers)
    # a generator of its own: the loader's base seed was drawn from the caller's global RNG (a host's training
    # stream shifted by every evaluation)
    loader = torch.utils.data.DataLoader(pair_ds, batch_sampler=batches, num_workers=num_workers,
                                         collate_fn=Collate(), worker_init_fn=worker_init() if num_workers else None,
                                         generator=torch.Generator(), timeout=loader_timeout(num_workers))
    feats: torch.Tensor | None = None
    valid = torch.zeros(len(rows), dtype=torch.bool)
    skips = SkipCounter()
    encode = encode_fn or (lambda x: model.encode_image(x, normalize=False))
    with eval_mode(model):
        # (waits polled: a worker hung on one file waited for ever; see watched_batches)
        for b, batch in enumerate(progress_bar(watched_batches(loader), total=len(batches), desc=desc,
                                               enabled=progress)):
            if batch["skipped"]:
                skips.update(batch["skipped"], batch["skip_examples"])
            if batch["images"].numel() == 0:
                continue
            out = encode(batch["images"].to(device)).float()
            if normalize:
                out = unit_rows(out)
            out = out.cpu()
            if feats is None:  # (float32: under a host's float64 default dtype the index-put failed)
                feats = torch.zeros(len(rows), out.shape[1], dtype=out.dtype)
            local = torch.tensor(_positions_in_batch(batches[b], batch["indices"].tolist(), b * batch_size))
            feats[local] = out
            valid[local] = True
    # A rank with an empty shard (or only corrupt images) still has to learn the feature width.
    dim = feats.shape[1] if feats is not None else -1
    if world > 1:
        dim = max(gather_object(dim))
    if feats is None:
        feats = torch.zeros(len(rows), max(dim, 0), dtype=torch.float32)
    feats = gather_shards(feats, bounds)
    valid = gather_shards(valid, bounds)
    skips = summed_skips(skips)
    if n and not bool(valid.any()):  # every rank sees the gathered mask, so all raise together
        from .datasets import DatasetError

        raise DatasetError(f"{dataset.source}: none of its {n} images could be used: {skips.report()}")
    check_finite(feats, valid, f"{dataset.source}: images")
    return ImageFeatures(feats, valid, skips)


def is_count(value, minimum: int = 1) -> bool:
    """Whether ``value`` is a whole number (a Python or numpy integer; not a bool, not 2.0) of at least ``minimum``:
    the evaluators' counts (k, seeds, shots, severities, max_samples)."""
    return not isinstance(value, bool) and isinstance(value, numbers.Integral) and value >= minimum


def as_tensor(x, name: str, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``x`` as a tensor, also where it is a numpy array (``np.load`` of `kizuna embed`'s .npy) or a list: the
    functions taking features or masks failed on them deep inside ("'numpy.ndarray' object has no attribute
    'float'"); anything else is refused naming ``name``."""
    if isinstance(x, torch.Tensor):
        return x if dtype is None else x.to(dtype)
    try:
        import numpy as np

        return torch.as_tensor(np.asarray(x), dtype=dtype)
    except (TypeError, ValueError, RuntimeError) as e:
        raise TypeError(f"{name} must be a tensor or an array, got {type(x).__name__} ({e})") from None


class NonFiniteFeatures(ValueError):
    """The model gave NaN or inf features: every metric computed from them would be meaningless."""


def row_mask(valid, n: int, name: str) -> torch.Tensor:
    """``valid`` (a mask over ``n`` rows, or None for all of them) as a CPU bool tensor of length ``n``; another
    length is refused naming ``name`` (a short one was an IndexError about a mask's shape, or "index 5 is out of
    bounds")."""
    if valid is None:
        return torch.ones(n, dtype=torch.bool)
    mask = as_tensor(valid, name, torch.bool).cpu()
    if mask.shape == (n, 1):  # a column, as whole_labels takes the labels
        mask = mask[:, 0]
    if mask.shape != (n,):
        raise ValueError(f"{name} has shape {tuple(mask.shape)} for {n} rows: give one true/false per row")
    return mask


def check_finite(features: torch.Tensor, valid: torch.Tensor | None, what: str, kind: str = "features") -> None:
    """Refuse NaN/inf features (gathered: every rank raises together) among the ``valid`` rows (None: every row).
    A NaN similarity compares neither above nor equal, so retrieval ranked it first: a model with NaN weights
    scored R@1 100%."""
    if not features.numel() or torch.isfinite(features.sum()):  # NaN and inf carry into the sum: all finite
        return
    # counted a block of rows at a time: the whole matrix's isfinite (and a copy of its valid rows) took 2.75
    # times the features at once, and an evaluation of 80,000 images ran out of memory after all its encoding
    bad, step = 0, max(1, (1 << 22) // max(1, features[0].numel()))
    for start in range(0, len(features), step):
        finite = torch.isfinite(features[start:start + step]).flatten(1).all(dim=1)
        if valid is not None:
            finite |= ~valid[start:start + step].to(finite.device)
        bad += int((~finite).sum())
    if bad:
        rows = len(features) if valid is None else int(valid.sum())
        raise NonFiniteFeatures(f"{what}: the model gave NaN or inf {kind} for {bad} of {rows}; its "
                                "weights hold NaN or inf, or it overflowed (a diverged run?)")


def check_no_zero_rows(features: torch.Tensor, valid: torch.Tensor | None, what: str) -> None:
    """Refuse rows of zeros among the ``valid`` rows (None: every row): the rows :class:`ImageFeatures` and
    :class:`TextFeatures` hold where an image or caption was unusable. Scored, each tied every class (counted as
    the first: acc1 0.75 with 3 of 4 rows zero, all of class 0) and ranked its own item first by the tie order."""
    if not features.numel() or features.dim() != 2:
        return
    zero = torch.linalg.vector_norm(features, dim=1) == 0  # (no copy of the features: a norm per row)
    if valid is not None:
        zero &= valid.to(zero.device)
    if bool(zero.any()):
        rows = len(features) if valid is None else int(valid.sum())
        raise ValueError(f"{what}: {int(zero.sum())} of {rows} rows are all zeros, the rows the encoders leave "
                         "where an image or caption was unusable: pass their valid= mask (the features' .valid)")


# ----------------------------------------------------------------------------------- texts
@dataclass
class TextFeatures:
    features: torch.Tensor  # [M, D] float32 CPU, L2-normalised; zero rows where not valid
    valid: torch.Tensor  # [M] bool
    skips: SkipCounter  # bad_caption: rejected by the tokenizer


def _tokenize(tokenizer, texts: list[str], skips: SkipCounter, numbers: list[int]):
    """-> (tokens of the accepted texts, their positions in ``texts``); ``numbers`` name the texts in skips."""
    try:
        return tokenizer(texts), list(range(len(texts)))
    except ValueError:
        pass
    rows, ok = [], []
    for k, t in enumerate(texts):
        try:
            rows.append(tokenizer([t]))
            ok.append(k)
        except ValueError:
            skips.add("bad_caption", f"text {numbers[k]} ({t[:40]!r})")
    return (torch.cat(rows) if rows else None), ok


@torch.no_grad()  # (see encode_images)
def encode_texts_sharded(model, tokenizer, texts, batch_size: int = 256, device=None, progress: bool = False,
                         desc: str = "encoding texts", encode_fn=None) -> TextFeatures:
    from .zeroshot import text_list

    device = _device_of(model, device)
    texts = text_list(texts, "texts")  # "dog" was three texts
    rank, world = dist_info()
    bounds = shard_bounds(len(texts), batch_size, world)
    start, end = bounds[rank]
    encode = encode_fn or (lambda t: model.encode_text(t, normalize=False))
    skips = SkipCounter()
    feats, valid = None, torch.zeros(end - start, dtype=torch.bool)
    # in order of length (characters, stably): the text tower runs a batch to its longest text, and in the
    # dataset's order every batch of Flickr8k's captions held one near the longest (1.8x the positions run).
    # Sorted whole, then sharded: each rank's batches are the ones one process runs (sorted per shard, they were
    # others, and a text's features differed in their last bits with what shared its batch)
    order = sorted(range(len(texts)), key=lambda j: len(texts[j]))
    steps = range(0, end - start, batch_size)
    with eval_mode(model):
        for b in progress_bar(steps, total=len(steps), desc=desc, enabled=progress):
            at = range(start + b, min(start + b + batch_size, end))  # positions in the sorted order
            numbers = [order[p] for p in at]
            tokens, ok = _tokenize(tokenizer, [texts[j] for j in numbers], skips, numbers)
            if tokens is None:
                continue
            out = unit_rows(encode(tokens.to(device))).cpu()
            if feats is None:
                feats = torch.zeros(end - start, out.shape[1], dtype=out.dtype)
            # one process: each text's own row at once (no order to undo: the un-permutation copied the features)
            local = torch.tensor([numbers[k] if world == 1 else at[k] - start for k in ok], dtype=torch.long)
            feats[local] = out
            valid[local] = True
    dim = feats.shape[1] if feats is not None else -1
    if world > 1:
        dim = max(gather_object(dim))
    if feats is None:
        feats = torch.zeros(end - start, max(dim, 0), dtype=torch.float32)
    if world > 1:  # the ranks' rows are sorted positions: sorted position p holds text order[p]
        gathered, valid_sorted = gather_shards(feats, bounds), gather_shards(valid, bounds)
        place = torch.tensor(order, dtype=torch.long)
        feats, valid = torch.empty_like(gathered), torch.empty_like(valid_sorted)
        feats[place], valid[place] = gathered, valid_sorted
        del gathered
    check_finite(feats, valid, "texts")
    return TextFeatures(feats, valid, summed_skips(skips))
