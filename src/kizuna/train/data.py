"""Training data for the contrastive trainer: the built-in shapes world, or real image-text sources.

Both yield the same items, ``{"image", "caption", "key", "index"}`` from ``dataset[(index, epoch)]``,
and go through the same ``EpochSampler`` + ``Loader``, so resume and rank sharding behave alike.
"""
from __future__ import annotations

import os

from kizuna.data.loader import Collate, make_loader
from kizuna.data.sampler import FINGERPRINT_VERSION, EpochSampler
from kizuna.data.sources import PairDataset, SkipCounter, _Fetched, build_index, group_rows_by_image
from kizuna.data.synthetic import SyntheticWorld
from kizuna.data.transforms import crop_draft_size, preprocess_from_config


class SyntheticPairs:
    """The shapes world as a training set. Epoch e draws fresh scenes (index e * length + i), so a
    long run never repeats a caption-image pair while staying exactly reproducible.

    ``hard_negatives``: in every batch, positions are paired (0-1, 2-3, ...), and where the first of a pair
    is a single-object scene the second is replaced by that scene's twin (about half of those scenes: the same
    scene with its shape, or its colour, changed; see ``SyntheticWorld.hard_negative_meta``), so the contrastive
    loss must tell the two apart.
    The idea: without twins a colour-only solution explains most of a random batch (1 in 8
    negatives shares the colour). Measured on the demo, twins alone did not make shape learnable
    (docs/RESULTS.md), so they are off by default."""

    def __init__(self, length: int, image_size: int, transform, seed: int = 0, hard_negatives: bool = False):
        self.length = length
        self.world = SyntheticWorld(seed=seed, image_size=image_size, split="train", length=2**62)
        self.transform = transform
        self.hard_negatives = hard_negatives

    def __len__(self) -> int:
        return self.length

    def _scene(self, key) -> tuple[int, int]:
        """(slot i, scene index in the world) of a sampler key ``i``, ``(i, epoch)`` or ``(i, epoch, draw)``
        (a scene drawn twice is the same scene: the world is already endless)."""
        i, epoch = key[:2] if isinstance(key, tuple) else (key, 0)
        return i, epoch * self.length + i

    def __getitem__(self, key):
        i, n = self._scene(key)
        image, caption = self.world[n]
        return {"image": self.transform(image), "caption": caption, "key": f"synthetic-{n}", "index": i}

    def _twin(self, key, of):
        """The hard-negative twin of sample ``of`` (a key), in the slot of sample ``key``."""
        i, _ = self._scene(key)
        _, n = self._scene(of)
        meta = self.world.hard_negative_meta(n)
        if meta is None:
            return None
        image, caption = self.world.render(meta)
        return {"image": self.transform(image), "caption": caption, "key": f"synthetic-{n}-twin", "index": i}

    def __getitems__(self, keys):
        """Batched fetch that keeps the sampler's (epoch, position) tags for the resumable Loader."""
        items = [self[k] for k in keys]
        if self.hard_negatives:
            for j in range(1, len(keys), 2):
                items[j] = self._twin(keys[j], keys[j - 1]) or items[j]
        out = _Fetched(items)
        out.skips = SkipCounter()
        out.epoch, out.position = getattr(keys, "epoch", None), getattr(keys, "position", None)
        return out

    def captions(self, n: int) -> list[str]:
        return [self.world.sample_meta(i).caption for i in range(n)]

    def fingerprint(self) -> dict:
        """As :meth:`kizuna.data.sources.SampleIndex.fingerprint`: the scenes are the world's (its seed and the
        length are checked on resume already); this tells them from a real training set of as many samples."""
        return {"version": FINGERPRINT_VERSION, "parts": [["synthetic", "synthetic", self.length, ""]]}


def build_dataset(cfg, preprocess_cfg: dict, train: bool = True):
    """-> (dataset, caption iterator for tokenizer training)."""
    if cfg.data == "synthetic":
        transform = preprocess_from_config(preprocess_cfg)  # scenes are drawn at the model's size already
        ds = SyntheticPairs(cfg.synthetic_length, cfg.synthetic_image_size, transform, seed=cfg.seed,
                            hard_negatives=cfg.synthetic_hard_negatives)
        return ds, lambda n: ds.captions(n)
    _refuse_a_root_with_held_out_splits(cfg.data)
    try:
        index = build_index(cfg.data, require="caption", image_column=cfg.csv_image_key,
                            caption_column=cfg.csv_caption_key)
    except FileNotFoundError as e:  # "data source not found: X" said nothing of the flag that named X
        raise FileNotFoundError(f"--data {cfg.data}: {e}") from None
    _refuse_held_out_splits_inside(index, cfg.data)
    index = group_rows_by_image(index)  # a CSV's rows of one image are one sample, its captions drawn per epoch
    if len(index) == 0:
        why = f" ({index.skips.report()})" if index.skips else ""
        raise ValueError(f"{cfg.data}: no usable image-caption samples found{why}{_what_to_pass(cfg.data, index)}")
    transform = preprocess_from_config(
        preprocess_cfg, train=train, scale=tuple(cfg.aug_scale), hflip=cfg.aug_hflip, color_jitter=cfg.aug_color_jitter,
    )
    size = preprocess_cfg["image_size"]
    side = size if isinstance(size, int) else max(size)
    # a JPEG decoded at the model's size would give a random crop fewer pixels than it spans, scaled up
    draft = crop_draft_size(side, cfg.aug_scale[0]) if train else side
    ds = PairDataset(index, transform, caption_sampling="random", seed=cfg.seed, draft_size=draft)
    return ds, lambda n: [c for caps in index.captions[:n] for c in caps]


def build_loader(cfg, dataset, per_rank_batch: int, rank: int, world_size: int, pin_memory: bool | None = None):
    # Resampled "epochs" are as long as a pass over the data, so epoch-level reports stay comparable.
    steps = max(1, len(dataset) // (per_rank_batch * world_size)) if cfg.resampled else None
    # which samples, in which order: saved with the data position, which a resume on other data refuses
    fingerprint = dataset.fingerprint() if hasattr(dataset, "fingerprint") else None
    sampler = EpochSampler(len(dataset), per_rank_batch, rank=rank, world_size=world_size, seed=cfg.seed,
                           resampled=cfg.resampled, steps_per_epoch=steps, data_fingerprint=fingerprint)
    if len(sampler) == 0 or len(dataset) < per_rank_batch * world_size:  # resampled too: its batches of distinct
        # samples then repeat some (one sample: every batch four copies of one pair, and nothing trained)
        raise ValueError(
            f"{cfg.data}: {len(dataset)} samples do not fill one global batch of {per_rank_batch * world_size}; "
            "lower --batch-size"
        )
    loader = make_loader(dataset, sampler, num_workers=cfg.workers, collate=Collate(), pin_memory=pin_memory)
    return loader, sampler


def _refuse_a_root_with_held_out_splits(data: str) -> None:
    """A folder of side-car files (KEY.jpg + KEY.txt) is read recursively: given a dataset root, the run trained on
    its test and val splits too (a tar root is refused, as its shards sit in the split folders). Refused, naming
    the split to pass."""
    from pathlib import Path

    from kizuna.eval.datasets import split_folders

    if not isinstance(data, (str, os.PathLike)):  # a list of specs (from Python or a config file): files named
        return
    root = Path(data)
    # os.path.isdir: a long `::` list of shards raised ENAMETOOLONG from Path.is_dir
    splits = split_folders(root) if os.path.isdir(root) and not any(root.glob("*.tar")) else []
    held_out = [s for s in splits if s.casefold() != "train"]
    if held_out:
        raise ValueError(f"--data {data} is a dataset root with split folders ({', '.join(splits)}): it would train "
                         f"on {' and '.join(held_out)} too; pass one, e.g. --data {root / _train_split(splits)}")


def training_source_in(training_sources, evaluated: str) -> str | None:
    """The training source (a shard, CSV or folder) that is, holds or sits in the folder or file an evaluation
    reads, or None: a run evaluated on the split it trains on measures fit, not held-out accuracy (the linear
    probe refuses it; the trainers said nothing)."""
    from kizuna.apps.common import parts_below

    for source in training_sources:  # (by the file system's identity: `Pets` and `pets` on macOS are one folder)
        if parts_below(source, evaluated) is not None or parts_below(evaluated, source) is not None:
            return str(source)
    return None


def training_places(index) -> list[str]:
    """Where an index's images lie: each shard and folder source, and for a CSV the folders its rows' images sit
    in (the CSV file's own folder said nothing: a caption CSV beside an evaluation set was taken for it; the
    folder they all share, data/ for data/cc3m and data/coco, held every evaluation set beside them)."""
    csv = {sid for sid, kind in enumerate(index.kinds) if kind == "csv"}
    folders: dict[int, set] = {}
    if csv:
        for sid, path in zip(index.source_ids.tolist(), index.paths):
            if sid in csv and path:
                folders.setdefault(sid, set()).add(os.path.dirname(path))
    places = []
    for sid, source in enumerate(index.sources):
        if sid not in csv:
            places.append(source)
        else:
            places.extend(sorted(folders.get(sid, ())))
    return places


def warn_if_evaluated_on_training_data(training_sources, evaluated: str, flag: str, folder: str) -> None:
    """Said once at the start where :func:`training_source_in` finds the evaluation in the training data."""
    import warnings

    source = training_source_in(training_sources, evaluated)
    if source is not None:
        warnings.warn(f"{flag} {folder} reads {evaluated}, which the run trains on ({source}): its numbers "
                      "measure fit on training images, not held-out accuracy; evaluate on another split",
                      stacklevel=2)


def _refuse_held_out_splits_inside(index, data) -> None:
    """Side-car folders are read recursively: a folder holding a dataset root deeper down (``--data photos`` over
    photos/flickr/{train,test}) trained on its test split; the check above looks one level down only. A folder
    named as a held-out split beside a ``train`` folder, anywhere under a folder source, is refused."""
    from kizuna.eval.datasets import SPLIT_NAMES

    held_out = {name for name in SPLIT_NAMES if name != "train"}
    folders = {sid for sid, kind in enumerate(index.kinds) if kind == "folder"}
    if not folders:
        return
    dirs = {(sid, os.path.dirname(path)) for sid, path in zip(index.source_ids.tolist(), index.paths)
            if sid in folders and path}
    trains: dict[str, bool] = {}

    def has_train(parent: str) -> bool:
        if parent not in trains:
            try:
                trains[parent] = any(entry.is_dir() and entry.name.casefold() == "train"
                                     for entry in os.scandir(parent))
            except OSError:
                trains[parent] = False
        return trains[parent]

    for sid, folder in sorted(dirs):
        root = index.sources[sid]
        rel = os.path.relpath(folder, root)
        parts = [] if rel == os.curdir else rel.split(os.sep)
        for j, name in enumerate(parts):
            parent = os.path.join(root, *parts[:j])
            if name.casefold() in held_out and has_train(parent):
                raise ValueError(f"--data {data} holds the dataset root {parent} (split folders train and {name}): "
                                 f"it would train on {name} too; pass its training split, e.g. --data "
                                 f"{os.path.join(parent, 'train')}")


def _train_split(splits: list[str]) -> str:
    """The training split's folder among a root's split folders (``train`` or ``Train``), else the first."""
    return next((s for s in splits if s.casefold() == "train"), splits[0])


def _what_to_pass(data: str, index) -> str:
    """The likely slip behind an empty training set: a dataset root (its shards are in split folders), or a
    classification set (labels, no captions)."""
    from pathlib import Path

    from kizuna.eval.datasets import split_folders

    root = Path(data)
    splits = split_folders(root) if os.path.isdir(root) else []  # (a long `::` list: Path.is_dir raised)
    if splits and not any(root.glob("*.tar")):
        return (f"; it is a dataset root with split folders ({', '.join(splits)}): pass one, e.g. --data "
                f"{root / _train_split(splits)}")
    if index.skips.counts.get("missing_caption") and any(root.glob("*.tar")) and _has_labels(root):
        return ("; its samples carry class labels (.cls), not captions: train a classifier with `kizuna vit "
                "train --data ...`, or evaluate zero-shot on it with `kizuna eval zeroshot`")
    return ""


def _has_labels(folder) -> bool:
    from kizuna.data.tar_index import index_tar

    first = sorted(folder.glob("*.tar"))[0]
    return any(label >= 0 for label in index_tar(first).labels)

