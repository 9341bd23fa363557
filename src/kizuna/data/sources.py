"""Image-caption sources as one map-style index, and the dataset that decodes them.

Every source is turned into a :class:`SampleIndex` once, up front: a columnar list of every usable
sample with where its image bytes live (tar member offset/size, or a file path) and its captions /
class label. Random access is then one positioned read plus a JPEG decode, which is what makes exact
resumption, per-rank slicing and exactly-once epochs (see :mod:`kizuna.data.sampler`) possible;
streaming readers cannot seek.

Sources
-------
* WebDataset tar shards as img2dataset / CLIP_benchmark write them: ``KEY.jpg|jpeg|png|webp`` with
  ``KEY.txt`` (one caption, or several separated by newlines - all are kept) and/or ``KEY.cls``
  (class index); ``KEY.json`` is ignored.
* CSV/TSV files with an image-path column and a caption column (``filepath``/``title`` by default,
  as OpenCLIP), relative paths resolved against the CSV's folder. Fields keep csv's quoting, but for a
  tab-separated file where it would swallow rows (a caption starting with '"'), which is read without
  quoting (:func:`table_reader`).
* A folder of images with side-car captions (``a.jpg`` + ``a.txt``, optional ``a.cls``), recursive.

Spec syntax (:func:`expand_spec` / :func:`resolve_spec`)
------------------------------------------------------
``"train/{000000..000002}.tar"`` (zero-padded or ``{0..9}`` ranges, ``{a,b}`` alternatives, several
braces), specs joined by ``"::"`` or given as a list/tuple, shell globs (``shards/*.tar``), a
directory holding ``*.tar`` (a glob's matches and a directory's shards both sorted with digit runs as numbers,
:func:`natural_key`: ``2.tar`` before ``10.tar``, whichever way the shards are spelled; if it has ``nshards.txt`` the count is checked and the
``%06d.tar`` / ``%d.tar`` names are used), a directory without tars (image folder), a ``.csv`` /
``.tsv`` file. ``~`` is expanded. A spec, list item or ``::`` piece that exists as written is that path (a
folder named ``x{a,b}``, ``exp[1]`` or ``"d "``); only one that does not loses the whitespace around it, and a
pattern's leading folders that exist are taken literally, braces and glob characters alike (``exp[1]/*.tar`` is
the files in ``exp[1]/``, ``x{a,b}/*.tar`` those in ``x{a,b}/``). A folder's hidden ``.tar`` files (macOS's
``._000000.tar``) are no shards. A missing
path raises :class:`FileNotFoundError` - a silently missing shard would change the epoch.

Public API
----------
``build_index(spec, *, require="any", image_column="filepath", caption_column="title",
label_column=None, sep=None, cache_dir=None, check_files=True) -> SampleIndex``
    ``require``: ``"caption"`` (skip samples without a non-blank caption), ``"label"`` (skip
    samples without a valid ``.cls``/label column), ``"any"`` (caption or label), ``"image"``
    (keep every readable image). ``cache_dir``: folder for the per-shard JSON tar index (keyed by
    real path + mtime + size); default ``$KIZUNA_INDEX_CACHE`` if set, else in-memory only.
    Samples dropped while indexing are counted in ``index.skips`` by reason: ``missing_image``,
    ``empty_image`` (zero bytes), ``missing_caption``, ``empty_caption``, ``missing_label``,
    ``bad_label``, ``duplicate_key`` (a folder's second image of one name, e.g. ``a.png`` beside
    ``a.jpg``: the one a tar sample would use is kept), ``duplicate_member`` (a tar member name repeated within one
    sample), ``sparse_member`` (a GNU sparse tar member), ``dotted_key`` (a tar image ``photo.000.jpg``: WebDataset keys
    end at the first dot, so its key is ``photo``), ``unsupported_image`` (a tar sample whose only image is of a type shards are not read for: .gif, .bmp, .tif, ...), ``truncated`` (partial sample at the cut of a damaged tar; the shard is named in
    a one-time :class:`RuntimeWarning` and listed in ``index.damaged``). Whole samples lost past
    the cut (or past a corrupt or zeroed header, or in a second tar joined on with cat) cannot be counted:
    nothing says how many there were.
``SampleIndex``
    ``len(index)``; ``index[i] -> SampleRef(source, kind, key, offset, size, path, captions,
    label)``; ``index.where(i)`` (``"key 000000012 in shard x.tar"``); ``index.read_bytes(i)``;
    columns ``keys``, ``captions`` (tuples, ``()`` when none; these two and ``paths`` packed in one buffer each,
    :mod:`kizuna.data.columns`, read as sequences), ``labels`` (int64, ``-1`` none),
    ``source_ids``, ``offsets``/``sizes`` (int64; a file sample's offset is ``-1`` and its size the file's
    bytes, ``-1`` where ``check_files=False`` did not look), ``paths``,
    ``sources``; ``num_captions``; ``skips``; ``damaged``; ``summary()``; ``fingerprint()`` (which samples,
    in which order: for each run of samples from one source its kind, file name, count and a digest of the
    keys - no path, so the data may move; saved with a run's data position, see
    :func:`kizuna.data.sampler.describe_data_change`).
    ``SampleIndex.concat([...])`` joins indices.
``PairDataset(index, transform=None, tokenizer=None, caption_sampling="random", seed=0, *,
draft_size=None, seed_transform=True)``
    ``ds[i]``, ``ds[(i, epoch)]`` or ``ds[(i, epoch, draw)]`` (resampled) -> ``{"image": transform(PIL
    RGB), "caption": str | None, "label": int, "key": str, "index": int}`` or ``None`` for an
    undecodable image (counted in ``ds.skips`` as ``corrupt_image`` / ``image_too_large`` /
    ``read_error``). The caption is ``captions[0]`` (``"first"``) or a pick that is a pure function of
    (seed, epoch, index[, draw]) (``"random"``), and with ``seed_transform`` the torch and ``random`` RNGs are seeded from the
    same triple around ``transform`` (a transform with ``needs_rng = True`` is instead called as
    ``transform(img, rng=random.Random(...))``) - so a resumed run, or any number of workers, sees
    the very same pairs and augmentations. ``draft_size`` lets the JPEG decoder downscale by 1/2,
    1/4 or 1/8 while keeping both sides >= ``draft_size`` (much faster for large photos); set it to
    what the transform needs (for a random resized crop, allow for the crop's zoom). ``transform=None`` gives a ``uint8`` CHW tensor. ``ds.__getitems__`` is the
    batched path used by :func:`kizuna.data.loader.make_loader`: it carries skip reasons to the
    collate function instead of ``ds.skips`` (worker copies of ``ds`` are invisible to the
    trainer). The tokenizer is not applied per sample; the loader's collate uses it per batch.
``SkipCounter``
    reason -> count plus the first few example locations; ``add``, ``update``, ``total``,
    ``report()`` -> ``"skipped 3 samples: corrupt_image=2, empty_caption=1 (e.g. key 000000012 in
    shard x.tar)"``.
``decode_image(data, draft_size=None) -> PIL.Image``, ``expand_braces(pattern)``,
``expand_spec(spec)``, ``resolve_spec(spec)``.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import glob
import hashlib
import os
import random
import re
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Callable, NamedTuple

import numpy as np
import torch
from PIL import Image

from . import images
from .columns import PackedCaptions, PackedStrings
from .sampler import FINGERPRINT_VERSION
from .tar_index import (IMAGE_EXTS, decoded_text, index_tar, not_utf8_said, parse_captions, parse_label, read_range,
                        shard_warnings_summed)
from .transforms import to_rgb

__all__ = [
    "PairDataset",
    "SampleIndex",
    "SampleRef",
    "SkipCounter",
    "build_index",
    "decode_image",
    "expand_braces",
    "expand_spec",
    "natural_key",
    "open_table",
    "resolve_spec",
    "table_reader",
]

_REQUIRE = ("any", "caption", "label", "image")
# a folder's images: the extensions every command reads (`kizuna embed` listed .bmp/.gif/.tif files that a
# training folder skipped), a tar sample's first when one stem has several
_FILE_IMAGE_EXTS = tuple("." + e for e in IMAGE_EXTS) + tuple(e for e in images.IMAGE_EXTENSIONS
                                                              if e[1:] not in IMAGE_EXTS)


# ----------------------------------------------------------------------------------- skip counts
class SkipCounter:
    """Counts of skipped samples by reason, with the first few locations of each reason."""

    def __init__(self, counts: Mapping[str, int] | None = None,
                 examples: Mapping[str, Sequence[str]] | None = None, max_examples: int = 3):
        self.max_examples = max_examples
        self.counts: dict[str, int] = {}
        self.examples: dict[str, list[str]] = {}
        if counts:
            self.update(counts, examples)

    def add(self, reason: str, where: str | None = None, n: int = 1) -> None:
        if n <= 0:
            return
        self.counts[reason] = self.counts.get(reason, 0) + n
        if where is not None:
            ex = self.examples.setdefault(reason, [])
            if len(ex) < self.max_examples:
                ex.append(where)

    def update(self, other: "SkipCounter | Mapping[str, int]",
               examples: Mapping[str, Sequence[str]] | None = None) -> None:
        if isinstance(other, SkipCounter):
            counts, examples = other.counts, other.examples
        else:
            counts, examples = other, examples or {}
        for reason, n in counts.items():
            self.counts[reason] = self.counts.get(reason, 0) + int(n)
            ex = self.examples.setdefault(reason, [])
            for w in examples.get(reason, ()):
                if len(ex) >= self.max_examples:
                    break
                ex.append(w)
            if not ex:
                del self.examples[reason]

    def rename(self, reason: str, to: str) -> None:
        """Count ``reason``'s samples as ``to`` (merged with any already counted there)."""
        if reason in self.counts:
            self.update({to: self.counts.pop(reason)}, {to: self.examples.pop(reason, [])})

    def drop_last(self, reason: str, n: int) -> None:
        """Un-count the last ``n`` samples skipped for ``reason`` (those past a cut; the examples are the first
        few, so only those beyond the count that is left go)."""
        left = self.counts.get(reason, 0) - n
        if left > 0:
            self.counts[reason] = left
            if reason in self.examples:
                del self.examples[reason][left:]
        else:
            self.counts.pop(reason, None)
            self.examples.pop(reason, None)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def __getitem__(self, reason: str) -> int:
        return self.counts.get(reason, 0)

    def __bool__(self) -> bool:
        return self.total > 0

    def __eq__(self, other: object) -> bool:
        if isinstance(other, SkipCounter):
            return self.counts == other.counts
        if isinstance(other, Mapping):
            return self.counts == dict(other)
        return NotImplemented

    def as_dict(self) -> dict[str, int]:
        return dict(self.counts)

    def reset(self) -> None:
        self.counts.clear()
        self.examples.clear()

    def report(self, noun: str = "samples") -> str:
        if not self.counts:
            return f"skipped 0 {noun}"
        order = sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0]))
        # a damaged shard is counted as one, but it is a shard, not a sample: "skipped 2 samples: damaged_shard=1,
        # truncated=1" skipped one sample (and an unknown number past the damage)
        samples = [(r, n) for r, n in order if r != "damaged_shard"]
        # the example beside its own reason (after the last one, "empty_caption=6, missing_image=5 (e.g. key 1
        # ...)" read as a missing image of key 1, whose caption was empty)
        shown = next((r for r, _ in order if self.examples.get(r)), None)

        def with_example(reason: str) -> str:
            return f" (e.g. {self.examples[reason][0]})" if reason == shown else ""

        text = f"skipped {sum(n for _, n in samples)} {noun}" + (
            ": " + ", ".join(f"{r}={n}{with_example(r)}" for r, n in samples) if samples else "")
        if "damaged_shard" in self.counts:
            n = self.counts["damaged_shard"]
            text += (f"; damaged_shard={n} ({'a shard' if n == 1 else 'shards'}: the samples past the damage "
                     f"are not counted){with_example('damaged_shard')}")
        return text

    __str__ = report

    def __repr__(self) -> str:
        return f"SkipCounter({self.counts!r})"


# ----------------------------------------------------------------------------------- spec parsing
_RANGE = re.compile(r"(-?\d+)\.\.(-?\d+)(?:\.\.(-?\d+))?")


def _range_items(a: str, b: str, step: str | None) -> list[str]:
    lo, hi = int(a), int(b)
    st = abs(int(step)) if step else 1
    st = st or 1
    padded = any(len(s.lstrip("-")) > 1 and s.lstrip("-").startswith("0") for s in (a, b))
    width = max(len(a), len(b)) if padded else 0
    seq = range(lo, hi + 1, st) if lo <= hi else range(lo, hi - 1, -st)
    if len(seq) > MAX_BRACE_NAMES:
        raise _too_many_names(f"{{{a}..{b}{'..' + step if step else ''}}}")
    return [f"{i:0{width}d}" for i in seq]


# A brace pattern's names are made before any is looked for: a digit too many in a range ({0000000..9999999}) took
# 27 s and 2.5 GB to say that the first shard is missing. More than any dataset has shards (LAION-5B: ~600k)
MAX_BRACE_NAMES = 4_000_000


class _TooManyNames(ValueError):
    pass


def _too_many_names(pattern: str) -> ValueError:
    return _TooManyNames(f"{pattern} expands to more than {MAX_BRACE_NAMES:,} names: check its ranges (a digit too "
                         "many?)")


def expand_braces(pattern: str) -> list[str]:
    """Bash-style brace expansion: ``{000..002}``, ``{0..9}``, ``{0..8..2}``, ``{a,b}``, nested.
    Braces that are neither a range nor a list stay literal, as in bash, and so does a ``{`` with no ``}`` to
    close it: ``data{old/{0..1}.tar`` -> ``data{old/0.tar``, ``data{old/1.tar``."""
    search = 0
    while True:
        start = pattern.find("{", search)
        if start < 0:
            return [pattern]
        depth, commas, end = 0, [], -1
        for j in range(start, len(pattern)):
            c = pattern[j]
            if c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
                if depth == 0:
                    end = j
                    break
            elif c == "," and depth == 1:
                commas.append(j)
        if end < 0:  # a lone "{" (a folder "data{old"): the braces after it still expand, as in bash
            search = start + 1
            continue
        body = pattern[start + 1 : end]
        rng = _RANGE.fullmatch(body)
        if commas:
            cuts = [start] + commas + [end]
            items = [pattern[a + 1 : b] for a, b in zip(cuts, cuts[1:])]
        elif rng:
            items = _range_items(*rng.groups())
        else:
            search = start + 1
            continue
        head, tail = pattern[:start], pattern[end + 1 :]
        names: list[str] = []
        for it in items:
            names += expand_braces(head + it + tail)
            if len(names) > MAX_BRACE_NAMES:  # (nested ones: {0..999}{0..9999})
                raise _too_many_names(pattern)
        return names


def natural_key(name: str) -> tuple:
    """Sort key comparing digit runs as numbers: unpadded 0.tar, 1.tar, 2.tar, ..., 10.tar (as text 10.tar came
    before 2.tar, and "the first N samples" came from shards 0, 1, 10, 11). The one order of every spelling of a
    set of shards - a folder, a glob (``DIR/*.tar`` read 0, 1, 10, 2, ... where ``DIR`` read 0, 1, 2, ...: another
    run for the same shards and seed), and so of a brace range. re.split alternates text and digits, so each
    position compares like with like; the name breaks ties (01 vs 1)."""
    parts = re.split(r"(\d+)", name)
    return tuple(int(p) if k % 2 else p for k, p in enumerate(parts)), name


_GLOB_CHARS = "*?["


def _as_written(piece: str) -> str | None:
    """``piece`` (``~`` expanded) where it names a path that exists: as written first, then without the
    whitespace before it, after it (``"a :: d "``: a folder "d " after a separator written with spaces), around
    it (``"a.tar :: b.tar"``); else None. Stripped first, a folder "d " beside "d" read "d"'s data without a word
    (and without "d", named "d" as the one not found)."""
    for p in dict.fromkeys((piece, piece.lstrip(), piece.rstrip(), piece.strip())):
        p = os.path.expanduser(p)
        if p and os.path.exists(p):
            return p
    return None


def _existing_head(path: str) -> str:
    """The longest leading folder of ``path`` that exists ("" where none does): a prefix of ``path`` as written,
    so ``path[len(head):]`` is the rest."""
    head = os.path.dirname(path)
    while head and not os.path.isdir(head):
        up = os.path.dirname(head)
        head = "" if up == head else up
    return head


def _glob_pattern(path: str) -> str | None:
    """The glob pattern to match ``path`` by, or None for a path to take as it is: one that exists, or whose glob
    characters all lie in its leading folders that exist. Those folders are escaped, so only the rest is a
    pattern: ``exp[1]/*.tar`` matched exp1/ and ``cc3m [v2]/*.tar`` nothing, and a brace range's missing
    ``exp[1]/000001.tar`` was filled from exp1/ (it is a missing shard: the epoch must not change)."""
    if not any(c in path for c in _GLOB_CHARS) or os.path.exists(path):
        return None
    head = _existing_head(path)
    rest = path[len(head):]
    if not any(c in rest for c in _GLOB_CHARS):
        return None
    return glob.escape(head) + rest


def _spec_parts(spec: Any) -> list[tuple[str, str | None]]:
    """A spec's paths as written (braces expanded, ``~`` too), each with the glob pattern to match it by (None:
    the path itself, :func:`_glob_pattern`). The whole spec, each list item (a config's list, a saved
    train_config.json) and each ``::`` piece that exists as written is itself - a folder named "br{a,b}", "x::y",
    "exp[1]" or "d " is not a spec; only one that does not exist loses the whitespace around it."""
    if isinstance(spec, (list, tuple)):
        return [part for s in spec for part in _spec_parts(s)]
    spec = os.fspath(spec)
    if not spec.strip():
        return []
    whole = _as_written(spec)
    if whole is not None:
        return [(whole, None)]
    parts: list[tuple[str, str | None]] = []
    for piece in spec.split("::"):
        if not piece.strip():
            continue
        lit = _as_written(piece)
        if lit is not None:
            parts.append((lit, None))
        else:
            # braces in the leading folders that exist are theirs (a folder "d{a,b}"), as glob characters are:
            # expanded, d{a,b}/*.tar read da/ and db/
            path = os.path.expanduser(piece.strip())
            head = _existing_head(path)
            try:
                names = expand_braces(path[len(head):])
            except _TooManyNames:  # named as typed (the recursion's piece lacked the folders before it)
                raise _too_many_names(piece.strip()) from None
            parts.extend((head + p, _glob_pattern(head + p)) for p in names)
    return parts


def expand_spec(spec: Any) -> list[str]:
    """Spec -> concrete paths (shards, CSV files, folders), in order; globs sorted as a folder's shards are
    (:func:`natural_key`)."""
    paths: list[str] = []
    for p, pattern in _spec_parts(spec):
        if pattern is not None:
            hits = sorted(glob.glob(pattern), key=natural_key)  # as a folder's shards: 2.tar before 10.tar
            if not hits:
                raise FileNotFoundError(f"no files match {p!r}")
            paths.extend(hits)
        else:
            paths.append(p)
    return paths


def globs_read_otherwise_before(spec: Any) -> list[str]:
    """The globs of ``spec`` whose matches :func:`expand_spec` orders otherwise than kizuna did before it sorted
    them with :func:`natural_key` (as text: ``10.tar`` before ``2.tar``): a run that started on one of them, and
    whose checkpoint has no data fingerprint to tell, read its shards in that other order."""
    out = []
    for p, pattern in _spec_parts(spec):
        hits = glob.glob(pattern) if pattern is not None else []
        if sorted(hits) != sorted(hits, key=natural_key):
            out.append(p)
    return out


def _shards_in_dir(d: str) -> list[str]:
    nfile = os.path.join(d, "nshards.txt")
    # not hidden files: macOS's AppleDouble ._000000.tar beside 000000.tar (a copy through a Mac onto FAT, SMB or NFS)
    # was read as a damaged shard, and made nshards.txt's count look wrong
    # (".TAR" too: a copy through a FAT volume or Windows upper-cases names, and those shards were left out unsaid)
    tars = sorted((f for f in os.listdir(d) if f.lower().endswith(".tar") and not f.startswith(".")), key=natural_key)
    if os.path.isfile(nfile):
        with open(nfile, encoding="utf-8", errors="replace") as f:
            text = f.read(64).strip()  # (a count; a huge file is no count)
        # ASCII digits (str.isdigit took "٣" for 3, and 5,000 digits failed as Python's int-conversion limit)
        if not (text.isascii() and text.isdigit()) or len(text) > 18 or int(text) < 1:
            raise ValueError(f"{nfile}: expected the number of shards (a whole number >= 1), got {text[:40]!r}")
        n = int(text)
        if n < len(tars):  # the rest would be dropped without a word (more is a missing shard, below)
            raise ValueError(f"{nfile} says {n} shards but {d} holds {len(tars)} .tar files; fix the count "
                             "or the folder")
        if n > len(tars):  # missing shards, said before n names are made (10^11 of them filled the memory)
            raise FileNotFoundError(f"{nfile} says {n} shards but {d} holds {len(tars)} .tar files: "
                                    f"{n - len(tars)} missing; fix the count or the folder")
        for fmt in ("{:06d}.tar", "{:d}.tar"):
            names = [fmt.format(i) for i in range(n)]
            if all(os.path.isfile(os.path.join(d, x)) for x in names):
                return [os.path.join(d, x) for x in names]
        raise FileNotFoundError(
            f"{nfile} says {n} shards but {d} has {len(tars)} tar files named neither "
            f"000000.tar.. nor 0.tar..")
    return [os.path.join(d, f) for f in tars]


def shared_data_hint(path) -> str:
    """What to add to "not found" for a path under ``../shared``, where the built-in configs look for the shared
    data relative to the current folder (``kizuna vit train --config vit_cifar10`` from another folder stopped at
    "dataset not found: ../shared/data/cifar10/train", naming neither the variable nor the flags); else ""."""
    # by path parts: as text, ../shared_backup/x matched too
    if os.environ.get("KIZUNA_SHARED") or os.path.normpath(str(path)).split(os.sep)[:2] != ["..", "shared"]:
        return ""
    # no flag names: they differ by command (eval has no --val-data), and a typed path does not read the variable
    return (f" (read relative to the current folder, {os.getcwd()}; for a built-in config's data, set KIZUNA_SHARED "
            "to the folder that holds data/, or give the data's paths yourself)")


# names of compressed tars, which a folder of shards does not read (shards are read by byte position)
COMPRESSED_SHARD_EXTS = (".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".tar.zst", ".tar.zstd")


def compressed_shards(folder: str | os.PathLike) -> list[str]:
    """The compressed tars in ``folder`` (not hidden), in name order."""
    return sorted((f for f in os.listdir(folder) if f.lower().endswith(COMPRESSED_SHARD_EXTS)
                   and not f.startswith(".")), key=natural_key)


def _holds_images(folder: str) -> bool:
    """Whether ``folder`` holds image files or sub-folders (an image folder, or class folders), not only archives:
    a download kept beside its extracted images is no folder of compressed shards."""
    return any(not f.startswith(".") and (f.lower().endswith(_FILE_IMAGE_EXTS)
                                          or os.path.isdir(os.path.join(folder, f))) for f in os.listdir(folder))


def _listed(names: list[str], shown: int = 3) -> str:
    return ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")


def _uncompressed_name(name: str) -> str:
    lower = name.lower()
    for ext in COMPRESSED_SHARD_EXTS:
        if lower.endswith(ext):
            return name[: len(name) - len(ext)] + ".tar"
    return name + ".tar"


def resolve_spec(spec: Any, warn: bool = False) -> list[tuple[str, str]]:
    """Spec -> ``[(kind, path)]`` with kind ``"tar"``, ``"csv"`` or ``"folder"``, each source once (by the file
    system's identity: two spellings of one file on macOS are one source): a shard named twice
    (``DIR::DIR/000003.tar``) was read twice, its samples twice an epoch and in one contrastive batch as false
    negatives of themselves (a folder's or a CSV's rows merged by path already).
    ``warn``: say so, and name image files beside a folder's shards, which are not read (as building the
    index does; a config check that only looks at the kinds does not)."""
    out: list[tuple[str, str]] = []
    seen, repeated = set(), []
    for p in expand_spec(spec):
        if os.path.isdir(p):
            tars = _shards_in_dir(p)
            packed = compressed_shards(p)
            if packed and not tars and not _holds_images(p):  # (read as an image folder: "no usable samples")
                raise ValueError(f"{p}: its shards are compressed ({_listed(packed)}); shards are read by position, "
                                 f"so they must be uncompressed tars: `zcat {packed[0]} > "
                                 f"{_uncompressed_name(packed[0])}` for each")
            if packed and tars and warn:  # (two thirds of a folder's data dropped without a word)
                warnings.warn(f"{p}: {len(packed)} compressed shard(s) beside its .tar shards are not read "
                              f"({_listed(packed)}); shards must be uncompressed tars: `zcat {packed[0]} > "
                              f"{_uncompressed_name(packed[0])}`", UserWarning, stacklevel=2)
            if tars:
                found = [("tar", t) for t in tars]
                beside = sum(f.lower().endswith(_FILE_IMAGE_EXTS) and os.path.isfile(os.path.join(p, f))
                             for f in os.listdir(p))
                if beside and warn:  # (a top-up of images dropped into a shards folder never trained, unsaid)
                    warnings.warn(f"{p}: {beside} image file(s) beside its .tar shards are not read (a folder that "
                                  "holds shards is read as shards only); move them into a folder of their own and "
                                  "add it with '::'", UserWarning, stacklevel=2)
            else:
                found = [("folder", p)]
        elif not os.path.exists(p):
            raise FileNotFoundError(f"data source not found: {p}{shared_data_hint(p)}")
        elif p.lower().endswith(".tar"):
            found = [("tar", p)]
        elif p.lower().endswith((".csv", ".tsv")):
            found = [("csv", p)]
        else:
            raise ValueError(f"unsupported data source {p!r} (expected .tar, .csv, .tsv or a folder)")
        for kind, path in found:
            real = _identity(path)
            if kind == "csv":  # its relative image paths are read from the folder it is named in, not its target's
                real = (real, _identity(os.path.dirname(os.path.abspath(path))))
            if real in seen:
                repeated.append(path)
                continue
            seen.add(real)
            out.append((kind, path))
    if repeated and warn:
        shown = ", ".join(repeated[:3]) + (f" and {len(repeated) - 3} more" if len(repeated) > 3 else "")
        warnings.warn(f"data: {len(repeated)} source(s) named more than once are read once: {shown}",
                      UserWarning, stacklevel=2)
    return out


def _identity(path: str):
    """A file's or folder's identity on its file system (device, inode): `Data/a.tar` and `data/a.tar` are one shard
    on macOS and Windows, which their real paths' text did not tell (it was read twice, silently); the real path
    where the system gives no inode (0 on some Windows file systems) or the path cannot be read."""
    try:
        st = os.stat(path)
    except OSError:
        return os.path.realpath(path)
    return (st.st_dev, st.st_ino) if st.st_ino else os.path.realpath(path)


# ----------------------------------------------------------------------------------- the index
class SampleRef(NamedTuple):
    source: str
    kind: str
    key: str
    offset: int
    size: int
    path: str | None
    captions: tuple[str, ...]
    label: int


class SampleIndex:
    """Columnar, picklable list of every usable sample (see module docstring)."""

    def __init__(self, sources: list[str], kinds: list[str], source_ids: np.ndarray, keys: list[str],
                 offsets: np.ndarray, sizes: np.ndarray, paths: list[str | None],
                 captions: list[tuple[str, ...]], labels: np.ndarray,
                 skips: SkipCounter | None = None, damaged: list[str] | None = None,
                 rejected_at: dict[str, np.ndarray] | None = None, source_stamps: dict | None = None):
        """``rejected_at``: for each reason a sample failed ``require`` (a missing caption or label), how many
        usable samples came before each such sample, so a count over the first N (``--max-samples``) leaves out
        those past them. ``source_stamps``: each tar shard's (size, modification time) when it was indexed, which
        the readers check at every read (a shard rewritten since gave other bytes under the index's labels)."""
        n = len(keys)
        if not (len(source_ids) == len(offsets) == len(sizes) == len(paths) == len(captions)
                == len(labels) == n):
            raise ValueError("SampleIndex columns differ in length")
        self.sources, self.kinds = sources, kinds
        self.source_ids = np.asarray(source_ids, dtype=np.int32)
        self.keys = keys  # packed (see the properties below)
        self.offsets = np.asarray(offsets, dtype=np.int64)
        self.sizes = np.asarray(sizes, dtype=np.int64)
        self.paths = paths
        self.captions = captions
        self.labels = np.asarray(labels, dtype=np.int64)
        self.skips = skips if skips is not None else SkipCounter()
        self.damaged = damaged or []
        self.rejected_at = {r: np.asarray(v, dtype=np.int64) for r, v in (rejected_at or {}).items()}
        self.source_stamps = dict(source_stamps or {})

    # The text columns are packed (kizuna.data.columns): as lists of str, a loader worker reading them copied
    # them page by page (each read writes a reference count), about 0.15 KB a sample per worker over an epoch,
    # besides the 0.7 KB a sample the lists held (5 captions of 50 characters; 0.3 KB packed)
    @property
    def keys(self) -> PackedStrings:
        return self._keys

    @keys.setter
    def keys(self, keys: Sequence[str]) -> None:
        self._keys = PackedStrings(keys)

    @property
    def paths(self) -> PackedStrings:
        return self._paths

    @paths.setter
    def paths(self, paths: Sequence[str | None]) -> None:
        self._paths = PackedStrings(paths)

    @property
    def captions(self) -> PackedCaptions:
        return self._captions

    @captions.setter
    def captions(self, captions: Sequence[tuple[str, ...]]) -> None:
        self._captions = PackedCaptions(captions)

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, i: int) -> SampleRef:
        sid = int(self.source_ids[i])
        return SampleRef(self.sources[sid], self.kinds[sid], self.keys[i], int(self.offsets[i]),
                         int(self.sizes[i]), self.paths[i], self.captions[i], int(self.labels[i]))

    @property
    def num_captions(self) -> int:
        return int(self.captions.counts().sum())

    @property
    def has_captions(self) -> bool:
        return bool(self.captions.counts().any())

    @property
    def has_labels(self) -> bool:
        return bool((self.labels >= 0).any()) if len(self) else False

    def where(self, i: int) -> str:
        sid = int(self.source_ids[i])
        return _where(self.kinds[sid], self.keys[i], self.sources[sid])

    def read_bytes(self, i: int) -> bytes:
        if self.offsets[i] >= 0:
            fd = os.open(self.sources[int(self.source_ids[i])], os.O_RDONLY | getattr(os, "O_BINARY", 0))
            try:
                return read_range(fd, int(self.offsets[i]), int(self.sizes[i]))
            finally:
                os.close(fd)
        with open(self.paths[i], "rb") as f:
            return f.read()

    def summary(self) -> str:
        text = (f"{len(self)} samples ({self.num_captions} captions) from {len(self.sources)} "
                f"source(s)")
        if self.skips:
            text += "; index " + self.skips.report()
        if self.damaged:
            text += f"; damaged shards: {', '.join(self.damaged)}"
        return text

    def __repr__(self) -> str:
        return f"SampleIndex({self.summary()})"

    def fingerprint(self) -> dict:
        """Which samples, in which order, from what the index holds (no file is read): for each run of samples
        from one source, ``[kind, file name, count, digest of the keys in order]``. The file name, not its path:
        a folder that moved (or is mounted elsewhere) is the same data; a folder source's own name is not
        compared (:func:`kizuna.data.sampler.describe_data_change`), its keys are paths inside it. The same on
        every process given the same spec. A run saves it with its data position, which counts indices: the
        same shards in another order (``DIR/*.tar`` against ``DIR``, a reordered ``::`` list) or a shard swapped
        for another as large gave the same count, and a resume went on with samples seen twice and others
        never.

        A CSV's keys are its rows' image paths, digested as paths inside the folder all its images share: a CSV of
        absolute paths rewritten for the data's new place is the same data (it was refused). The keys are hashed a
        block at a time (joined at once, a 4M-row CSV's took 384 MB)."""
        parts = []
        ids = self.source_ids
        if len(ids):
            cuts = (np.flatnonzero(ids[1:] != ids[:-1]) + 1).tolist()
            for a, b in zip([0, *cuts], [*cuts, len(ids)]):
                sid = int(ids[a])
                blocks = (("\0".join(block).encode("utf-8", "surrogatepass")
                           for block in _csv_key_blocks(self.keys, a, b, self.sources[sid]))
                          if self.kinds[sid] == "csv" else
                          (self.keys.joined(lo, min(lo + _KEY_BLOCK, b)) for lo in range(a, b, _KEY_BLOCK)))
                digest = hashlib.blake2b(digest_size=8)
                for n, block in enumerate(blocks):  # NUL between keys, as one "\0".join of them all
                    if n:
                        digest.update(b"\0")
                    digest.update(block)
                name = os.path.basename(os.path.abspath(self.sources[sid]))
                parts.append([self.kinds[sid], name, b - a, digest.hexdigest()])
        return {"version": FINGERPRINT_VERSION, "parts": parts}

    @classmethod
    def concat(cls, parts: Sequence["SampleIndex"]) -> "SampleIndex":
        b = _Builder()
        for part in parts:
            base = len(b.sources)
            b.sources.extend(part.sources)
            b.kinds.extend(part.kinds)
            b.source_ids.extend((part.source_ids + base).tolist())
            b.keys.extend(part.keys)
            b.offsets.extend(part.offsets.tolist())
            b.sizes.extend(part.sizes.tolist())
            b.paths.extend(part.paths)
            b.captions.extend(part.captions)
            # where each part rejected samples, counted in the joined index's usable samples (it was dropped:
            # a count over the first N then covered every part's rejections)
            for reason, at in part.rejected_at.items():
                b.rejected_at.setdefault(reason, []).extend((at + len(b.labels)).tolist())
            b.labels.extend(part.labels.tolist())
            b.skips.update(part.skips)
            b.damaged.extend(part.damaged)
        return b.build()


_KEY_BLOCK = 1 << 16  # keys hashed at a time (SampleIndex.fingerprint)


def _csv_key_blocks(keys: list[str], a: int, b: int, csv_path: str):
    """A CSV's keys ``keys[a:b]`` (image paths as written: absolute, or relative to the CSV's folder) as paths
    inside the deepest folder all of them share, a block at a time: the same images in a tree moved elsewhere,
    the CSV's paths rewritten to match, give the same keys. Two passes over the keys, none held whole."""
    base = os.path.join(os.path.dirname(os.path.abspath(csv_path)), "")
    spans = [(lo, min(lo + _KEY_BLOCK, b)) for lo in range(a, b, _KEY_BLOCK)]
    absolute = sum(sum(map(os.path.isabs, keys[lo:hi])) for lo, hi in spans)
    # all relative (or all absolute), the keys are the paths after ``base`` (or ""); else each is made whole
    prefix = base if not absolute else "" if absolute == b - a else None

    def full(block):
        return block if prefix is not None else [k if os.path.isabs(k) else base + k for k in block]

    first = last = None
    for lo, hi in spans:  # the smallest and largest path share the prefix all of them share
        block = full(keys[lo:hi])
        first = min(block) if first is None else min(first, min(block))
        last = max(block) if last is None else max(last, max(block))
    common = (prefix or "") + os.path.commonprefix([first, last]) if spans else ""
    cut = max(common.rfind("/"), common.rfind(os.sep)) + 1  # a whole folder: "img" of img/ and img2/ is not one
    cut -= len(prefix or "")  # within the keys as held (a relative key's folder starts after base)
    for lo, hi in spans:
        yield [k[cut:] for k in full(keys[lo:hi])] if cut else full(keys[lo:hi])


def _where(kind: str, key: str, source: str) -> str:
    from kizuna.apps.common import shown_line  # (a member name's ESC or line break drove the terminal it was said to)

    if kind == "tar":
        return shown_line(f"key {key} in shard {source}")
    if kind == "csv":
        return shown_line(f"{key} in {source}")
    return shown_line(f"{key} in folder {source}")


class _Builder:
    def __init__(self):
        self.sources: list[str] = []
        self.kinds: list[str] = []
        self.source_ids: list[int] = []
        self.keys: list[str] = []
        self.offsets: list[int] = []
        self.sizes: list[int] = []
        self.paths: list[str | None] = []
        self.captions: list[tuple[str, ...]] = []
        self.labels: list[int] = []
        self.skips = SkipCounter()
        self.damaged: list[str] = []
        self.rejected_at: dict[str, list[int]] = {}
        self.stamps: dict[str, tuple[int, int]] = {}

    def reject(self, reason: str, where: str) -> None:
        """A sample that fails ``require``: counted, with how many usable samples came before it."""
        self.skips.add(reason, where)
        self.rejected_at.setdefault(reason, []).append(len(self.keys))

    def source(self, kind: str, path: str) -> int:
        self.sources.append(path)
        self.kinds.append(kind)
        return len(self.sources) - 1

    def add(self, sid: int, key: str, offset: int, size: int, path: str | None,
            captions: tuple[str, ...] | None, label: int) -> None:
        self.source_ids.append(sid)
        self.keys.append(key)
        self.offsets.append(offset)
        self.sizes.append(size)
        self.paths.append(path)
        self.captions.append(captions or ())
        self.labels.append(label if label >= 0 else -1)

    def build(self) -> SampleIndex:
        return SampleIndex(self.sources, self.kinds, np.array(self.source_ids, dtype=np.int32),
                           self.keys, np.array(self.offsets, dtype=np.int64),
                           np.array(self.sizes, dtype=np.int64), self.paths, self.captions,
                           np.array(self.labels, dtype=np.int64), self.skips, self.damaged, self.rejected_at,
                           self.stamps)


def group_rows_by_image(index: SampleIndex) -> SampleIndex:
    """One sample per image file with the captions of every row that names it: a CSV of one row per caption
    (Flickr's and COCO's five) is five images to a reader of rows. Training read it so (an epoch was five passes,
    and a batch held one image several times, its own captions scored as negatives) while evaluation grouped the
    same file. Rows are grouped by the file their path names (the CSV's folder joined, normalised): grouped by
    the text, photos/x.jpg, ./photos/x.jpg and photos//x.jpg were three images sharing the captions. Samples with
    no path (tar members) are left as they are; each group sits where its first row was, with its label."""
    if not any(index.paths):  # tar members only: nothing to group
        return index
    files = [os.path.normpath(p) if p else ("member", i) for i, p in enumerate(index.paths)]
    if len(set(files)) == len(files):  # a folder's images, a CSV of one row per image: nothing to group (each
        return index  # group below costs a dict entry: seconds over millions of samples)
    first: dict[object, int] = {}
    caps: dict[object, list[str]] = {}
    for i, f in enumerate(files):
        first.setdefault(f, i)
        caps.setdefault(f, []).extend(index.captions[i])
    rows = sorted(first.values())
    sel = np.asarray(rows, dtype=np.int64)
    # a row rejected after p rows comes after the images whose first row is before it
    rejected = {r: np.searchsorted(sel, at, side="left") for r, at in index.rejected_at.items()}
    return SampleIndex(index.sources, index.kinds, index.source_ids[sel], index.keys.take(sel),
                       index.offsets[sel], index.sizes[sel], index.paths.take(sel),
                       [tuple(caps[files[i]]) for i in rows], index.labels[sel], index.skips, index.damaged,
                       rejected, index.source_stamps)


def _with_text(captions: tuple[str, ...] | None) -> tuple[str, ...] | None:
    """The captions that keep some text after the tokenizers' cleaning (html-unescape, whitespace): "&nbsp;"
    is not blank but cleans to nothing, and the tokenizer then stopped the run at its batch, again on every
    resume. A sample left with none is an ``empty_caption`` skip."""
    if not captions:
        return captions
    from kizuna.data.tokenizer import clean_text

    return tuple(c for c in captions if clean_text(c))


def _reject(captions: tuple[str, ...] | None, label: int, require: str) -> str | None:
    """Why a sample fails ``require`` (None when it is usable). label: -1 none, -2 unparsable."""
    if require == "image":
        return None
    if require == "caption":
        if captions is None:
            return "missing_caption"
        return None if captions else "empty_caption"
    if require == "label":
        return None if label >= 0 else ("bad_label" if label == -2 else "missing_label")
    if captions or label >= 0:
        return None
    if captions == ():
        return "empty_caption"
    return "bad_label" if label == -2 else "missing_caption"


class ShardChanged(ValueError):
    """A tar shard rewritten in place while a dataset reads it (same path, other bytes)."""


def _stamp(st: os.stat_result) -> tuple[int, int]:
    return st.st_size, st.st_mtime_ns


def _add_tar(b: _Builder, path: str, require: str, cache_dir) -> None:
    stamp = _stamp(os.stat(path))  # (before the scan: a change during it is a change after it)
    shard = index_tar(path, cache_dir=cache_dir)
    sid = b.source("tar", path)
    b.stamps[path] = stamp
    for reason, n in shard.skipped.items():
        where = [_where("tar", k, path) for k in shard.skip_keys.get(reason, [])]
        b.skips.update({reason: n}, {reason: where})
    if shard.truncated:
        b.damaged.append(path)
    for key, off, size, caps, label in zip(shard.keys, shard.offsets, shard.sizes, shard.captions,
                                           shard.labels):
        caps = _with_text(caps)
        reason = _reject(caps, label, require)
        if reason is not None:
            b.reject(reason, _where("tar", key, path))
            continue
        b.add(sid, key, off, size, None, caps, label)


@contextlib.contextmanager
def open_table(path, error: type[Exception] = ValueError):
    """A CSV/TSV file opened for :func:`table_reader`: UTF-8 with Excel's byte-order mark dropped. Bytes that
    are not UTF-8, met anywhere while it is read, raise ``error`` naming the file (Python's message names
    neither the file nor the row)."""
    csv.field_size_limit(max(csv.field_size_limit(), 1 << 26))  # long captions: the 128 KiB default raised
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            yield f
    except UnicodeDecodeError as e:
        raise error(f"{path}: not UTF-8 text ({e.reason}: byte 0x{e.object[e.start]:02x}); save it as UTF-8") \
            from None


def table_reader(f, sep: str | None = None, path=None, error: type[Exception] = ValueError) -> csv.DictReader:
    """Rows of an open CSV/TSV file as dicts. ``sep`` None: tab when the header holds one (OpenCLIP's default
    is tab even for ".csv"), else comma. Fields are read with csv's quoting (a writer that quotes every field,
    a caption quoted over several lines, a tab inside a quoted caption), except in a tab-separated file where
    that quoting swallows rows: a web caption that starts with '"' opened a quoted field that ran on over the
    next rows' tabs (one caption, the rows after it gone). Such a file is read without quoting (the TSV
    convention); a comma-separated one whose quote is never closed raises ``error`` naming ``path`` and the line
    (:func:`_check_quotes`). Both cost one more pass over the file."""
    if sep is None:
        head = f.readline()
        f.seek(0)
        sep = "\t" if "\t" in head else ","
    if sep == "\t":
        start = f.tell()
        try:
            # strict: text after a closing quote ("Best day ever<tab>0.jpg<newline>"Hello" she said) is a stray
            # quote's field that closed at a quote in a later row (csv.writer and pandas never write that)
            swallowed = any(_ran_into_later_rows(field)
                            for row in csv.reader(f, delimiter=sep, strict=True) for field in row)
        except csv.Error:  # that, a quote never closed, or a field past the size limit: a stray quote
            swallowed = True
        f.seek(start)
        if swallowed:
            return _TsvReader(f, delimiter=sep, quoting=csv.QUOTE_NONE, source=path, error=error)
    elif f.seekable():  # (a stream read once, stdin, goes unchecked: as before)
        start = f.tell()
        _check_quotes(f, sep, path or "the table", error)
        f.seek(start)
    return _Rows(f, delimiter=sep, source=path, error=error)


class _Rows(csv.DictReader):
    """csv.DictReader that refuses a row with more fields than the header: its extra text went under the key
    None, unread, without a word (an unquoted comma in a caption: "a dog, running" read as "a dog", and in an
    evaluation CSV the caption's second part became the label, a class of its own). An empty trailing field (a row
    ending in the separator) is no field."""

    def __init__(self, f, *, source=None, error: type[Exception] = ValueError, **kwargs):
        super().__init__(f, **kwargs)
        self.source, self.error = source or "the table", error

    def __next__(self) -> dict:
        row = super().__next__()
        extra = row.get(None)
        if extra and any(str(v).strip() for v in extra):
            count = len(self.fieldnames or [])
            if self.reader.dialect.quoting == csv.QUOTE_NONE:  # (the TSV read without quoting: a stray quote in it)
                how = ("a tab inside a field: this file is read without quoting (a stray '\"' in it opened a field "
                       "that ran on over later rows), so remove the tab, or the stray quote")
            else:
                how = (f"a field holding the separator ({self.reader.dialect.delimiter!r}) must be quoted (\"a dog, "
                       "running\"), as csv.writer and pandas write it")
            raise self.error(f"{self.source}: line {self.line_num} has {count + len(extra)} fields, the header "
                             f"{count}: {how}; the extra text: {', '.join(repr(v) for v in extra[:3])}")
        return row


def _refuse_repeated_columns(columns: list, used, path, error: type[Exception] = ValueError) -> None:
    """A column read (``used``) that the header names twice is refused: DictReader kept the last one's values,
    pandas (and so OpenCLIP) the first's, so merged tables trained on the other captions, without a word. Others
    repeated (Excel's empty trailing names, a column never read) are no matter."""
    repeated = [c for c in dict.fromkeys(u for u in used if u) if columns.count(c) > 1]
    if repeated:
        raise error(f"{path}: the header names the column(s) {', '.join(map(repr, repeated))} more than once "
                    "(this reads the last, pandas and OpenCLIP the first); rename or drop the extra ones")


def _ran_into_later_rows(field: str) -> bool:
    """Whether a quoted TSV field holds a tab after a line break: it ran on over the next rows' columns. A tab
    on the field's first line is a caption's own, which csv.writer and pandas quote (such a file was read
    without quoting: that caption split over two columns, every quoted multi-line caption two rows)."""
    breaks = [i for i in (field.find("\n"), field.find("\r")) if i >= 0]
    return bool(breaks) and "\t" in field[min(breaks):]


def _check_quotes(f, sep: str, path, error: type[Exception]) -> None:
    """A caption that opens a quote and never closes it (a web caption, '"Best day ever') made csv read the
    rest of the file as that one field: the rows after it were gone, and their text was one sample's caption, in
    silence (past 64 MiB, a bare "field larger than field limit"). Found by csv's strict mode, whose other
    complaints (text after a closing quote) are read on as before."""
    reader = csv.reader(f, delimiter=sep, strict=True)
    while True:
        line = reader.line_num + 1  # where the next row starts
        try:
            next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            fix = 'Close or remove the stray quote; a field holding quotes is written "a ""quoted"" caption"'
            if "unexpected end of data" in str(e):
                raise error(f"{path}: the quoted field that starts on line {line} is never closed: csv reads the "
                            f"rest of the file into it (lines {line}-{reader.line_num}). {fix}") from None
            if "field limit" in str(e):
                raise error(f"{path}: a field of the row that starts on line {line} runs past {csv.field_size_limit()} "
                            f"characters (to line {reader.line_num} at least): a quote never closed? {fix}") from None


class _TsvReader(_Rows):
    """Without quoting, a field that is wholly quoted with its inner quotes doubled (``"a ""red"" bus"``, as
    pandas and csv.writer write a caption holding a quote) is unquoted, header names too."""

    @property
    def fieldnames(self):
        names = csv.DictReader.fieldnames.fget(self)
        return [_unquote(n) for n in names] if names else names

    @fieldnames.setter
    def fieldnames(self, value):
        csv.DictReader.fieldnames.fset(self, value)

    def __next__(self) -> dict:
        return {k: _unquote(v) if isinstance(v, str) else v for k, v in super().__next__().items()}


def _unquote(field: str) -> str:
    inner = field[1:-1]
    if len(field) >= 2 and field[0] == field[-1] == '"' and '"' not in inner.replace('""', ""):
        return inner.replace('""', '"')
    return field


def _add_csv(b: _Builder, path: str, require: str, image_column: str, caption_column: str,
             label_column: str | None, sep: str | None, check_files: bool) -> None:
    base = os.path.dirname(os.path.abspath(path))
    with open_table(path) as f:
        _read_csv(b, f, path, base, require, image_column, caption_column, label_column, sep, check_files)


def _read_csv(b: _Builder, f, path: str, base: str, require: str, image_column: str, caption_column: str,
              label_column: str | None, sep: str | None, check_files: bool) -> None:
    reader = table_reader(f, sep, path)
    cols = reader.fieldnames or []
    wanted = [image_column] + ([caption_column] if require in ("any", "caption") else [])
    wanted += [label_column] if label_column else []
    _refuse_repeated_columns(list(cols), wanted, path)
    missing = [c for c in wanted if c not in cols]
    if missing:  # the flags of the missing columns only: `kizuna train` has no --label-column to follow
        flags = {image_column: "--image-column", caption_column: "--caption-column", label_column: "--label-column"}
        named = list(dict.fromkeys(flags[c] for c in missing))
        raise ValueError(f"{path}: missing column(s) {missing}; columns are {cols} (name the ones to read with "
                         f"{' and '.join(named)})")
    sid = b.source("csv", path)
    for row_no, row in enumerate(reader, start=2):  # row 1 is the header
        rel = (row.get(image_column) or "").strip()
        key = f"row {row_no} ({rel})" if rel else f"row {row_no}"
        if not rel:
            b.skips.add("missing_image", _where("csv", key, path))
            continue
        img = rel if os.path.isabs(rel) else os.path.join(base, rel)
        if check_files:
            try:
                size = os.path.getsize(img)
            except OSError:
                # say where it was looked for: paths written relative to the cwd are not relative to the CSV
                why = "" if os.path.isabs(rel) else " (relative paths start at the CSV's folder)"
                b.skips.add("missing_image", f"{_where('csv', key, path)}: no file {img}{why}")
                continue
            if size == 0:
                b.skips.add("empty_image", _where("csv", key, path))
                continue
        else:
            size = -1
        text = row.get(caption_column) if caption_column in cols else None
        caps = None if text is None else _with_text((text.strip(),) if text.strip() else ())
        value = (row.get(label_column) or "").strip() if label_column else ""
        label = parse_label(value) if value else -1  # blank (pandas' NaN): missing, not bad
        reason = _reject(caps, label, require)
        if reason is not None:
            b.reject(reason, _where("csv", key, path) + (f": label {value!r}" if reason == "bad_label" else ""))
            continue
        b.add(sid, rel, -1, size, img, caps, label)


def _read_text(path: str, not_utf8: list[str] | None = None) -> str | None:
    """A side-car's text (None where it went); its path appended to ``not_utf8`` where it is not UTF-8."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except (FileNotFoundError, IsADirectoryError):
        return None
    text, utf8 = decoded_text(data)
    if not_utf8 is not None and not utf8:
        not_utf8.append(path)
    return text


def _add_folder(b: _Builder, root: str, require: str) -> None:
    sid = b.source("folder", root)
    not_utf8: list[str] = []
    for dirpath, dirnames, filenames in images.walk_folder(root):  # sorted, into symlinked folders
        # one image per stem, as a tar sample has (its first by IMAGE_EXTS): "dup.jpg" and "dup.png" were two
        # samples under one key, both paired with "dup.txt"
        chosen: dict[str, str] = {}
        for name in sorted(filenames):  # ties (a.JPG, a.jpg) by name, not by the filesystem's order
            stem, ext = os.path.splitext(name)
            if ext.lower() in _FILE_IMAGE_EXTS and (
                    stem not in chosen or _FILE_IMAGE_EXTS.index(ext.lower()) < _FILE_IMAGE_EXTS.index(
                        os.path.splitext(chosen[stem])[1].lower())):
                chosen[stem] = name
        # side-cars by stem, their extension in any case (IMG_1.JPG + IMG_1.TXT), as a tar's extensions are read
        sidecars: dict[tuple[str, str], str] = {}
        for name in sorted(filenames):
            stem, ext = os.path.splitext(name)
            if ext.lower() in (".txt", ".cls"):
                sidecars.setdefault((stem, ext.lower()), name)
        for name in sorted(filenames):
            stem, ext = os.path.splitext(name)
            if ext.lower() not in _FILE_IMAGE_EXTS:
                continue
            img = os.path.join(dirpath, name)
            key = os.path.relpath(os.path.join(dirpath, stem), root).replace(os.sep, "/")
            # only where a side-car file pairs with the name: in a class folder x.jpg and x.png are two images
            if chosen[stem] != name and ((stem, ".txt") in sidecars or (stem, ".cls") in sidecars):
                b.skips.add("duplicate_key", _where("folder", f"{key}{ext} (beside {chosen[stem]})", root))
                continue
            try:
                size = os.path.getsize(img)
            except OSError:  # a broken symlink, or the file went while we walked
                b.skips.add("missing_image", _where("folder", key, root))
                continue
            if size == 0:
                b.skips.add("empty_image", _where("folder", key, root))
                continue
            text = (_read_text(os.path.join(dirpath, sidecars[stem, ".txt"]), not_utf8)
                    if (stem, ".txt") in sidecars else None)
            caps = None if text is None else _with_text(parse_captions(text))
            cls = _read_text(os.path.join(dirpath, sidecars[stem, ".cls"])) if (stem, ".cls") in sidecars else None
            label = -1 if cls is None else parse_label(cls)
            reason = _reject(caps, label, require)
            if reason is not None:
                b.reject(reason, _where("folder", key, root))
                continue
            b.add(sid, key, -1, size, img, caps, label)
    if not_utf8:  # (as a tar shard's are said: tar_index.index_tar)
        warnings.warn(not_utf8_said(root, len(not_utf8), f"e.g. {not_utf8[0]}"), RuntimeWarning, stacklevel=3)


def build_index(spec: Any, *, require: str = "any", image_column: str = "filepath",
                caption_column: str = "title", label_column: str | None = None,
                sep: str | None = None, cache_dir: str | os.PathLike | None = None,
                check_files: bool = True) -> SampleIndex:
    """Index every sample of ``spec`` (see module docstring for spec syntax and skip reasons)."""
    if require not in _REQUIRE:
        raise ValueError(f"require must be one of {_REQUIRE}, got {require!r}")
    if cache_dir is None:
        cache_dir = os.environ.get("KIZUNA_INDEX_CACHE") or None
    b = _Builder()
    with shard_warnings_summed():  # (the first few damaged shards, then one line: one a shard drowned the summary)
        for kind, path in resolve_spec(spec, warn=True):
            if kind == "tar":
                _add_tar(b, path, require, cache_dir)
            elif kind == "csv":
                _add_csv(b, path, require, image_column, caption_column, label_column, sep, check_files)
            else:
                _add_folder(b, path, require)
    return b.build()


# ----------------------------------------------------------------------------------- decoding
_M64 = (1 << 64) - 1


def _mix64(*xs: int) -> int:
    """splitmix64 over a tuple: a cheap, well-mixed, platform-independent hash of small ints."""
    h = 0x9E3779B97F4A7C15
    for x in xs:
        h = ((h ^ (int(x) & _M64)) + 0x9E3779B97F4A7C15) & _M64
        h = ((h ^ (h >> 30)) * 0xBF58476D1CE4E5B9) & _M64
        h = ((h ^ (h >> 27)) * 0x94D049BB133111EB) & _M64
        h ^= h >> 31
    return h


def decode_image(data: bytes, draft_size: int | None = None, name: str = "<bytes>") -> Image.Image:
    """Bytes -> fully loaded RGB image. Raises :class:`~kizuna.data.images.ImageError` on corrupt data,
    truncated JPEGs included (:class:`~kizuna.data.images.ImageTooLarge` past Pillow's pixel limit)."""
    img = images.decode_image(data, name, draft_size)
    img.load()  # surfaces truncated/corrupt data here, whatever the mode
    # the one conversion every command uses (transparency onto white, 16-bit scaled by its depth), so an
    # image trains and evaluates as `kizuna embed` and `zeroshot --image` see it
    return to_rgb(img)


def _to_uint8_chw(img: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1).contiguous()


class _SeededRNG:
    """Seed torch's CPU RNG and ``random`` for one call, then restore them (the trainer's RNG
    stream must not depend on how many samples were decoded in-process)."""

    __slots__ = ("seed", "_torch", "_py")

    def __init__(self, seed: int):
        self.seed = seed

    def __enter__(self):
        self._torch = torch.get_rng_state()
        self._py = random.getstate()
        # default_generator.manual_seed, not torch.manual_seed: the latter also (re)seeds every
        # accelerator and costs ~100 us per call, as much as decoding a small JPEG.
        torch.default_generator.manual_seed(self.seed & ((1 << 63) - 1))
        random.seed(self.seed)

    def __exit__(self, *exc):
        torch.set_rng_state(self._torch)
        random.setstate(self._py)


class _Fetched(list):
    """A batch of samples (None for skipped ones) that also carries why they were skipped and the
    sampler position, from the worker to the collate function."""

    skips: SkipCounter
    epoch: int | None = None
    position: int | None = None


class TooManyOpenFiles(OSError):
    """The process's open-file limit (``ulimit -n``) was reached reading the data: a setting to raise, never a
    sample to skip."""


def _open_file_budget() -> int:
    """How many shard files a dataset keeps open in this process: an eighth of the open-file limit (loader
    workers, an evaluation set beside the training set, torch's shared-memory handles need the rest)."""
    try:
        import resource
    except ImportError:  # (Windows)
        return PairDataset._MAX_OPEN
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return PairDataset._MAX_OPEN if soft == resource.RLIM_INFINITY else max(2, soft // 8)


def too_many_open_files_message(where: str) -> str:
    try:
        import resource

        limit = f" ({resource.getrlimit(resource.RLIMIT_NOFILE)[0]} here)"
    except ImportError:
        limit = ""
    return (f"too many open files reading {where}: the process's limit{limit} is reached, not a bad file; raise it "
            "(`ulimit -n 4096`) or pass fewer --workers")


class PairDataset(torch.utils.data.Dataset):
    """Map-style image-caption(-label) dataset over a :class:`SampleIndex` (see module docstring)."""

    # shard file descriptors kept open per process, within an eighth of its open-file limit (_open_file_budget): at
    # 64, a shuffled epoch over 1,000 shards opened a shard for 94% of its samples (a server round trip each on
    # NFS or Lustre), whatever `ulimit -n` allowed
    _MAX_OPEN = 1024

    def __init__(self, index: SampleIndex | Any, transform: Callable | None = None,
                 tokenizer: Callable | None = None, caption_sampling: str = "random", seed: int = 0,
                 *, draft_size: int | None = None, seed_transform: bool = True):
        if caption_sampling not in ("random", "first"):
            raise ValueError(f"caption_sampling must be 'random' or 'first', got {caption_sampling!r}")
        self.index = index if isinstance(index, SampleIndex) else build_index(index)
        self.transform = transform
        self.tokenizer = tokenizer
        self.caption_sampling = caption_sampling
        self.seed = int(seed)
        self.draft_size = draft_size
        self.seed_transform = seed_transform
        self.skips = SkipCounter()
        self._fds: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.index)

    def fingerprint(self) -> dict:
        """The index's (:meth:`SampleIndex.fingerprint`): what a resume checks its data position against."""
        return self.index.fingerprint()

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_fds"] = {}  # descriptors are per process
        return state

    def __del__(self):
        for fd in getattr(self, "_fds", {}).values():
            try:
                os.close(fd)
            except OSError:
                pass

    def _fd(self, path: str) -> int:
        fd = self._fds.get(path)
        if fd is None:
            if len(self._fds) >= min(self._MAX_OPEN, _open_file_budget()):
                old = next(iter(self._fds))
                os.close(self._fds.pop(old))
            try:
                fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))  # binary on Windows
            except OSError as e:
                if e.errno not in (errno.EMFILE, errno.ENFILE):
                    raise
                for cached in self._fds.values():  # the process's limit, not the shard: free ours and retry once
                    os.close(cached)
                self._fds.clear()
                try:
                    fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
                except OSError as again:
                    if again.errno not in (errno.EMFILE, errno.ENFILE):  # (another cause: read_error, as before)
                        raise
                    raise TooManyOpenFiles(again.errno, too_many_open_files_message(path)) from None
            self._fds[path] = fd
        # at every read (an fstat: a microsecond beside a decode), as a shard rewritten in place keeps its open fd
        stamp = getattr(self.index, "source_stamps", {}).get(path)
        if stamp is not None and _stamp(os.fstat(fd)) != tuple(stamp):
            raise ShardChanged(f"tar shard {path} changed since it was indexed (its size or modification time: "
                               "rewritten, or touched): "
                               "the index's offsets, labels and captions are not its samples' now. Start the "
                               "command again once nothing writes the data (a training run in one process saved "
                               "its last step; under torchrun, its last checkpoint is where it resumes)")
        return fd

    def _read(self, i: int) -> bytes:
        idx = self.index
        off = int(idx.offsets[i])
        if off >= 0:
            size = int(idx.sizes[i])
            data = read_range(self._fd(idx.sources[int(idx.source_ids[i])]), off, size)
            if len(data) != size:
                raise OSError(f"short read: {len(data)} of {size} bytes")
            return data
        with open(idx.paths[i], "rb") as f:
            return f.read()

    def caption_for(self, i: int, epoch: int = 0, draw: int | None = None) -> str | None:
        caps = self.index.captions[i]
        if not caps:
            return None
        if self.caption_sampling == "first" or len(caps) == 1:
            return caps[0]
        return caps[self._seed(epoch, i, 0, draw) % len(caps)]

    def _seed(self, epoch: int, i: int, purpose: int, draw: int | None) -> int:
        # a resampled draw (keys with a draw number) mixes it in: the same sample twice in an epoch got
        # the same caption and the same augmentation
        return _mix64(self.seed, epoch, i, purpose) if draw is None else _mix64(self.seed, epoch, i, purpose, draw)

    @staticmethod
    def _parse_key(key) -> tuple[int, int, int | None]:
        """``i``, ``(i, epoch)`` or a resampled ``(i, epoch, draw)``."""
        if not isinstance(key, tuple):
            return int(key), 0, None
        if len(key) == 3:
            return int(key[0]), int(key[1]), int(key[2])
        return int(key[0]), int(key[1]), None

    def _load(self, key) -> tuple[dict | None, str | None, str | None]:
        """-> (item, skip_reason, where)."""
        i, epoch, draw = self._parse_key(key)
        if not 0 <= i < len(self.index):
            raise IndexError(f"sample index {i} out of range for {len(self.index)} samples")
        try:
            data = self._read(i)
        except OSError as e:
            if e.errno in (errno.EMFILE, errno.ENFILE):  # (TooManyOpenFiles from _fd carries one of them)
                # the process's limit (ulimit -n), not a bad file: counted as read_error, an evaluation scored a
                # third of its set and a run trained on it, both exiting 0
                raise TooManyOpenFiles(e.errno, too_many_open_files_message(self.index.where(i))) from None
            if e.errno == errno.ENOMEM:
                raise
            return None, "read_error", self.index.where(i)
        try:
            img = decode_image(data, self.draft_size)
        except images.ImageTooLarge:
            return None, "image_too_large", self.index.where(i)
        except MemoryError:  # the machine's memory, not the image: it was counted as corrupt
            raise
        except Exception:  # PIL raises many types for bad data (OSError, SyntaxError, ValueError...)
            return None, "corrupt_image", self.index.where(i)
        if self.transform is None:
            image = _to_uint8_chw(img)
        elif getattr(self.transform, "needs_index", False):  # one that differs by sample (the typographic attack
            image = self.transform(img, index=i)  # writes each image's own class name: one pass, not one per class)
        elif self.seed_transform and getattr(self.transform, "needs_rng", False):
            # Transforms that take their randomness explicitly (kizuna.data.transforms.TrainTransform)
            # get a private generator: no global RNG state to save and restore.
            image = self.transform(img, rng=random.Random(self._seed(epoch, i, 1, draw)))
        elif self.seed_transform:
            with _SeededRNG(self._seed(epoch, i, 1, draw)):
                image = self.transform(img)
        else:
            image = self.transform(img)
        item = {"image": image, "caption": self.caption_for(i, epoch, draw),
                "label": int(self.index.labels[i]), "key": self.index.keys[i], "index": i}
        return item, None, None

    def __getitem__(self, key) -> dict | None:
        item, reason, where = self._load(key)
        if item is None:
            self.skips.add(reason, where)
        return item

    def __getitems__(self, keys: Sequence) -> _Fetched:
        out = _Fetched()
        out.skips = SkipCounter()
        out.epoch = getattr(keys, "epoch", None)
        out.position = getattr(keys, "position", None)
        for key in keys:
            item, reason, where = self._load(key)
            if item is None:
                out.skips.add(reason, where)
            out.append(item)
        return out
