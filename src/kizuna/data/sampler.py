"""Seeded, resumable, rank-aware batch sampler.

``EpochSampler`` is a *batch* sampler (pass it as ``batch_sampler=``; :func:`kizuna.data.loader.
make_loader` does). Each epoch is one permutation of ``range(num_samples)`` drawn from
``(seed, epoch)`` - identical on every rank - and cut into global batches of
``batch_size * world_size``; step ``s`` of rank ``r`` is ``perm[(s*W + r)*B : (s*W + r + 1)*B]``.
Hence the ranks' batches are disjoint and together cover each sample of the epoch exactly once, and
the global batch at step ``s`` does not depend on ``world_size`` (only on ``B*W``).

``drop_last=True``: the ``num_samples % (B*W)`` samples at the tail of the permutation are dropped -
the same samples on every rank, different ones each epoch; see ``num_dropped`` /
``dropped_indices()``. ``drop_last=False``: the tail is spread over the ranks as one last, smaller
batch (``tail[r::W]``); a rank whose share is empty still gets an (empty) last batch, so every rank
runs the same number of steps (a DDP requirement); the collate function turns it into a batch of
size 0.

``resampled=True``: sampling with replacement across batches: global batch ``b`` of epoch ``e`` is drawn from
``(seed, e, b)``, its samples distinct (a repeat inside a contrastive batch is a false negative of itself), and
cut into the ranks' slices as above; infinite unless ``steps_per_epoch`` is given. Any batch can be computed
directly, so resumption costs nothing.

Resumption: ``state_dict() -> {"epoch", "batches_consumed", ...config}``; a fresh sampler given
``load_state_dict(state)`` continues at the next batch. A position counts indices, which mean the same samples
only over the same data in the same order: a sampler given ``data_fingerprint`` (what identifies its samples
and their order, e.g. :meth:`kizuna.data.sources.SampleIndex.fingerprint`) saves it in its state and refuses a
state saved over other data (:func:`describe_data_change` says what differs); a state without one (written
before fingerprints were saved), or a sampler without one, is not checked. ``set_epoch(e)`` starts epoch ``e`` from its
first batch, except right after ``load_state_dict`` for the loaded epoch, where it keeps the
position - so the usual ``for e in range(start, E): sampler.set_epoch(e)`` loop resumes exactly,
whether the checkpoint was taken mid-epoch or at its end. Iterating again without ``set_epoch``
replays the same epoch from the start (as torch samplers do).

When iterated directly, ``batches_consumed`` counts batches handed out. Through a DataLoader the
sampler runs ahead of the training loop (prefetch); :class:`kizuna.data.loader.Loader` therefore
overwrites the position with the batches actually delivered (it counts them from
``iteration_start``: the DataLoader hands batches out in the sampler's order).

Public API
----------
``EpochSampler(num_samples, batch_size, rank=0, world_size=1, seed=0, shuffle=True,
drop_last=True, *, resampled=False, steps_per_epoch=None, with_epoch=True, data_fingerprint=None)``
    ``iter`` -> :class:`IndexBatch` lists of ``(sample_index, epoch)`` tuples (resampled:
    ``(sample_index, epoch, draw)``, ``draw`` the draw's number in the epoch across ranks, so a sample
    drawn twice is seeded twice; plain ``int`` with ``with_epoch=False``), each list tagged with ``.epoch`` and ``.position`` (batch number within
    the epoch). ``len`` = batches per epoch for this rank (``TypeError`` when infinite).
    ``set_epoch(e)``, ``epoch``, ``batches_consumed``, ``batches_remaining``, ``batch(epoch, b)``,
    ``permutation(epoch)``, ``num_dropped``, ``dropped_indices(epoch=None)``, ``state_dict()``,
    ``load_state_dict(state)``.
``describe_data_change(saved, current) -> str | None``
    What differs between two data fingerprints, in words (``None``: the same samples in the same order, or
    either fingerprint missing or of another version).
"""

from __future__ import annotations

import hashlib
import itertools
from collections import Counter
from collections.abc import Iterator

import numpy as np
import torch

__all__ = ["EpochSampler", "IndexBatch", "describe_data_change", "with_undecoded_rows"]

_M64 = (1 << 64) - 1
RESAMPLED_DRAWS = 2  # the resampled draw's version, saved in a sampler's state (see EpochSampler.resampled_draws)
_CONFIG_KEYS = ("num_samples", "batch_size", "world_size", "seed", "shuffle", "drop_last",
                "resampled", "steps_per_epoch")


class IndexBatch(list):
    """A list of sample keys tagged with the epoch and the batch's position within it. Being a
    list subclass it pickles with its attributes through the DataLoader's index queue."""

    epoch: int = 0
    position: int = 0


def _rng(*words: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([w & _M64 for w in words])))


class EpochSampler(torch.utils.data.Sampler):
    def __init__(self, num_samples: int, batch_size: int, rank: int = 0, world_size: int = 1,
                 seed: int = 0, shuffle: bool = True, drop_last: bool = True, *,
                 resampled: bool = False, steps_per_epoch: int | None = None,
                 with_epoch: bool = True, data_fingerprint: dict | None = None):
        if num_samples < 0 or batch_size <= 0 or world_size <= 0:
            raise ValueError("need num_samples >= 0, batch_size > 0, world_size > 0")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} out of range for world_size {world_size}")
        if resampled and num_samples == 0:
            raise ValueError("resampled mode needs num_samples > 0")
        if steps_per_epoch is not None and not resampled:
            raise ValueError("steps_per_epoch only applies to resampled=True")
        self.num_samples = int(num_samples)
        self.batch_size = int(batch_size)
        self.rank, self.world_size = int(rank), int(world_size)
        self.seed = int(seed)
        self.shuffle, self.drop_last = bool(shuffle), bool(drop_last)
        self.resampled = bool(resampled)
        self.steps_per_epoch = steps_per_epoch
        self.with_epoch = with_epoch
        self.data_fingerprint = data_fingerprint
        self._epoch = 0
        self._consumed = 0
        self._resume = False  # a loaded position is waiting for its epoch to be iterated
        self._perm: tuple[int, np.ndarray] | None = None
        # how resampled batches are drawn: 2, distinct samples in a global batch; 1, each rank's samples drawn one
        # by one with replacement (a state saved before 2 carries no version: its run resumes with its own draws)
        self.resampled_draws = RESAMPLED_DRAWS

    # ------------------------------------------------------------------ epoch layout
    @property
    def epoch(self) -> int:
        return self._epoch

    @property
    def _global(self) -> int:
        return self.batch_size * self.world_size

    @property
    def _full_steps(self) -> int:
        return self.num_samples // self._global

    def __len__(self) -> int:
        if self.resampled:
            if self.steps_per_epoch is None:
                raise TypeError("an infinite resampled EpochSampler has no length")
            return self.steps_per_epoch
        tail = self.num_samples - self._full_steps * self._global
        return self._full_steps + (1 if tail and not self.drop_last else 0)

    @property
    def num_dropped(self) -> int:
        if self.resampled or not self.drop_last:
            return 0
        return self.num_samples - self._full_steps * self._global

    def permutation(self, epoch: int | None = None) -> np.ndarray:
        epoch = self._epoch if epoch is None else epoch
        if self._perm is None or self._perm[0] != epoch:
            if self.shuffle:
                perm = _rng(self.seed, epoch).permutation(self.num_samples)
            else:
                perm = np.arange(self.num_samples)
            self._perm = (epoch, perm)
        return self._perm[1]

    def dropped_indices(self, epoch: int | None = None) -> list[int]:
        """Samples left out of ``epoch`` by ``drop_last`` (identical on every rank)."""
        if not self.num_dropped:
            return []
        return self.permutation(epoch)[self._full_steps * self._global:].tolist()

    def batch(self, epoch: int, b: int) -> list[int]:
        """Sample indices of batch ``b`` of ``epoch`` for this rank (random access)."""
        if self.resampled:
            if self.steps_per_epoch is not None and not 0 <= b < self.steps_per_epoch:
                raise IndexError(b)
            if self.resampled_draws == 1:  # a run started before distinct draws: resumed exactly as it began
                draw = _rng(self.seed, epoch, self.rank, b, 0x5EED)
                return draw.integers(0, self.num_samples, size=self.batch_size).tolist()
            first = self.rank * self.batch_size
            return self._resampled_global_batch(epoch, b)[first:first + self.batch_size].tolist()
        if not 0 <= b < len(self):
            raise IndexError(f"batch {b} out of range for {len(self)} batches")
        perm = self.permutation(epoch)
        if b < self._full_steps:
            start = (b * self.world_size + self.rank) * self.batch_size
            return perm[start:start + self.batch_size].tolist()
        return perm[self._full_steps * self._global:][self.rank::self.world_size].tolist()

    def _resampled_global_batch(self, epoch: int, b: int) -> np.ndarray:
        """The global batch ``b`` of a resampled ``epoch``: distinct samples (drawn with replacement one by one,
        a batch of 128 from Flickr8k's 6,091 held a sample twice two times in three: for a contrastive loss the
        copy, with another caption of the same image, is a false negative of itself), every sample once per
        ``num_samples`` where the batch is larger than the data. Batches are drawn independently, so a sample
        recurs across them; each rank takes its slice, so the ranks' batches are disjoint too."""
        draw = _rng(self.seed, epoch, b, 0x5EED)
        if self._global <= self.num_samples:
            return draw.choice(self.num_samples, size=self._global, replace=False)
        rounds = -(-self._global // self.num_samples)
        return np.concatenate([draw.permutation(self.num_samples) for _ in range(rounds)])[: self._global]

    # ------------------------------------------------------------------ iteration / state
    def set_epoch(self, epoch: int) -> None:
        epoch = int(epoch)
        if self._resume and epoch == self._epoch:
            return
        self._epoch, self._consumed, self._resume = epoch, 0, False

    @property
    def batches_consumed(self) -> int:
        return self._consumed

    @property
    def batches_remaining(self) -> int:
        return len(self) - self._consumed

    @property
    def iteration_start(self) -> int:
        """The batch an iteration begun now starts at: the loaded position right after ``load_state_dict``,
        else the epoch's first."""
        return self._consumed if self._resume else 0

    def __iter__(self) -> Iterator[IndexBatch]:
        # Decided eagerly (not inside the generator) so the position is fixed when iter() is called.
        # The resume flag is cleared only once a batch is produced: DataLoader calls iter() twice
        # when it starts workers (__init__ and _reset), and the second call must resume as well.
        start = self.iteration_start
        self._consumed = start
        return self._generate(self._epoch, start)

    def _generate(self, epoch: int, start: int) -> Iterator[IndexBatch]:
        stop = None if (self.resampled and self.steps_per_epoch is None) else len(self)
        steps = itertools.count(start) if stop is None else range(start, stop)
        for b in steps:
            self._resume = False
            ids = self.batch(epoch, b)
            if not self.with_epoch:
                out = IndexBatch(ids)
            elif self.resampled:  # a sample drawn twice in an epoch: each draw gets its own caption and augmentation
                first = (b * self.world_size + self.rank) * self.batch_size
                out = IndexBatch([(i, epoch, first + j) for j, i in enumerate(ids)])
            else:
                out = IndexBatch([(i, epoch) for i in ids])
            out.epoch, out.position = epoch, b
            if epoch == self._epoch:
                self._consumed = b + 1
            yield out

    def state_dict(self) -> dict:
        state = {k: getattr(self, k) for k in _CONFIG_KEYS}
        state.update(epoch=self._epoch, batches_consumed=self._consumed, rank=self.rank)
        if self.resampled:
            state["resampled_draws"] = self.resampled_draws
        if self.data_fingerprint is not None:
            state["data_fingerprint"] = self.data_fingerprint
        return state

    def load_state_dict(self, state: dict) -> None:
        # rank may differ: all ranks share (epoch, batches_consumed), so rank 0's state serves all.
        diff = {k: (state[k], getattr(self, k)) for k in _CONFIG_KEYS
                if k in state and state[k] != getattr(self, k)}
        if diff:
            raise ValueError("sampler state does not match this sampler (saved, current): "
                             + ", ".join(f"{k}={v[0]!r}/{v[1]!r}" for k, v in diff.items()))
        change = describe_data_change(state.get("data_fingerprint"), self.data_fingerprint)
        if change:  # the same count of other samples, or of the same in another order: index i is another sample
            raise ValueError(f"sampler state does not match this sampler's data, which has {change}")
        consumed = int(state["batches_consumed"])
        if consumed < 0 or (not (self.resampled and self.steps_per_epoch is None)
                            and consumed > len(self)):
            raise ValueError(f"batches_consumed={consumed} out of range")
        self._epoch, self._consumed, self._resume = int(state["epoch"]), consumed, True
        self.resampled_draws = int(state.get("resampled_draws", 1)) if self.resampled else RESAMPLED_DRAWS


# ---------------------------------------------------------------------------- data fingerprints
FINGERPRINT_VERSION = 2  # 2: a CSV's rows digested as paths inside the folder they share


def _part_id(part) -> tuple:
    """What a fingerprint part is compared by: kind, file name (a folder's own name is left out: its samples' keys
    are paths inside it, and the folder may move or be mounted under another name), count and keys' digest."""
    kind, name, count, digest = part
    return str(kind), "" if kind == "folder" else str(name), int(count), str(digest)


def _names(parts, limit: int = 6) -> str:
    names = [str(p[1]) for p in parts]
    more = len(names) - limit
    return ", ".join(names[:limit]) + (f", ... ({more} more)" if more > 0 else "")


def with_undecoded_rows(fingerprint: dict, rows, total: int) -> dict:
    """The fingerprint of a training set decoded onto the device (``vit train --augment-on device``), whose data
    position counts only the ``rows`` (of the index's ``total``) that decoded: which rows did not is kept too (one
    image repaired and another broken kept the count and the samples, and a resume went on at shifted indices)."""
    kept = np.zeros(total, dtype=bool)
    kept[np.asarray(rows, dtype=np.int64)] = True
    missing = np.flatnonzero(~kept).astype("<i8")
    digest = hashlib.blake2b(missing.tobytes(), digest_size=8).hexdigest()
    return {**fingerprint, "undecoded": [int(len(missing)), digest]}


def describe_data_change(saved: dict | None, current: dict | None) -> str | None:
    """What differs between the fingerprint a run saved and the current one, in words: ``"the same 11 files
    in another order (...)"`` or ``"other samples than the run's (...)"``; ``None`` when they match, or when either is missing
    or of another version (a checkpoint written before fingerprints, or by a kizuna that fingerprints
    otherwise, is not refused)."""
    if not saved or not current or saved.get("version") != FINGERPRINT_VERSION \
            or current.get("version") != FINGERPRINT_VERSION:
        return None
    was, now = list(saved.get("parts") or []), list(current.get("parts") or [])
    was_ids, now_ids = [_part_id(p) for p in was], [_part_id(p) for p in now]
    if was_ids == now_ids:
        undecoded = saved.get("undecoded"), current.get("undecoded")
        if None not in undecoded and list(undecoded[0]) != list(undecoded[1]):
            return f"other images that do not decode than the run's ({undecoded[1][0]}, at other rows)"
        return None
    if Counter(was_ids) == Counter(now_ids):
        at = next(i for i, (a, b) in enumerate(zip(was_ids, now_ids)) if a != b)
        start = max(0, at - 1)
        lead = "..., " if start else ""
        return (f"the same {len(was)} source(s) in another order (the run read {lead}{_names(was[start:])}; "
                f"now {lead}{_names(now[start:])})")
    gone, new = Counter(was_ids) - Counter(now_ids), Counter(now_ids) - Counter(was_ids)
    by_name: dict[tuple, list[tuple]] = {}  # (kind, name) -> the current parts of that name not in the run's
    for part_id in new.elements():
        by_name.setdefault(part_id[:2], []).append(part_id)
    changed, missing = [], []
    name_of: dict[tuple, str] = {}  # once: looked up per part, 8,000 changed shards took 5 s
    for p, part_id in zip(was, was_ids):
        name_of.setdefault(part_id, str(p[1]))
    for part_id in gone.elements():
        name = name_of[part_id]
        same_name = by_name.get(part_id[:2])
        if not same_name:
            missing.append(f"the run's {name}")
            continue
        other = same_name.pop(0)
        new[other] -= 1
        changed.append(f"{name} has {other[2]} samples, the run's {part_id[2]}" if other[2] != part_id[2] else
                       f"{name} has as many samples as the run's, with other keys or its keys in another "
                       "order")
    added = []
    for p, part_id in zip(now, now_ids):
        if new[part_id] > 0:
            new[part_id] -= 1
            added.append(f"{p[1]} (new)")

    def some(items: list[str]) -> str:
        return ", ".join(items[:3]) + (f" and {len(items) - 3} more" if len(items) > 3 else "")

    what = ([some(changed)] if changed else []) + ([some(missing) + " not given now"] if missing else []) \
        + ([some(added)] if added else [])
    return "other samples than the run's (" + "; ".join(what or ["other sources"]) + ")"
