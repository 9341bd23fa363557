"""Evaluation datasets: CLIP_benchmark WebDataset folders, ImageFolder trees and CSV files.

    ds = load_dataset("/data/cifar10", split="test")          # classification, 10 classes
    ds = load_dataset("/data/flickr8k", split="test")         # retrieval, 5 captions per image
    ds.task, len(ds), ds.classnames, ds.templates, ds.skips

Layouts
-------
* **CLIP_benchmark WebDataset** (``convert_dataset`` / ``build_wds_dataset``): a dataset root with
  split folders (``train/``, ``test/``, ...) holding shards ``000000.tar``.. or ``0.tar``.. (and
  ``nshards.txt``). Classification samples are ``KEY.jpg|webp|png`` + ``KEY.cls`` (class index);
  retrieval samples ``KEY.jpg`` + ``KEY.txt`` (captions, one per line). ``classnames.txt`` and
  ``zeroshot_classification_templates.txt`` sit in the root (or the split folder);
  ``dataset_type.txt`` says ``retrieval`` (absent means classification). A split folder given directly
  (``cifar10/test``) is that split of its parent dataset; ``split=`` another name takes the parent's
  folder of that name (``cifar10/train``), or is an error when it has none.
* **ImageFolder**: ``ROOT[/split]/<class>/*.jpg``; classes are the sorted folder names (as
  torchvision), displayed as the folder name with ``_`` -> space unless ``classnames.txt`` or a
  bundled list gives nicer names.
* **Side-car folder**: ``KEY.jpg`` + ``KEY.cls`` / ``KEY.txt`` files (CLIP_benchmark layout unpacked), at the
  top or in subfolders (``00000/KEY.jpg`` + ``KEY.txt``: img2dataset's ``files`` output).
* **CSV/TSV**: an image-path column (``filepath``) and a label column (``label``: class index or
  class name; indices when most values are whole numbers, ``3.0`` included, the rest ``bad_label``) for classification, or a caption column (``title``) for retrieval (rows with the same
  image file, however its path is spelt, are one image with several captions).

Indexing is :func:`kizuna.data.sources.build_index`; decoding is
:class:`kizuna.data.sources.PairDataset`. Both count what they drop, and the result reports it.

Class names and templates
-------------------------
Class names: ``classnames=`` (list or file) > ``classnames.txt`` in the split folder or root >
the bundled CLIP_benchmark ``en_classnames.json`` entry for the dataset name (``dataset_name=``, else
the root folder name, ``wds_`` prefix dropped) > folder names (ImageFolder). None of these -> a
:class:`DatasetError` naming the file it looked for and what to do.
Text files are UTF-8; a byte-order mark is dropped.
Templates: ``templates=`` (list, .txt with one per line, or .json) >
``zeroshot_classification_templates.txt`` > bundled ``en_zeroshot_classification_templates.json``
entry > ``["a photo of a {c}."]``.

Bad data
--------
A corrupt image is a counted skip (``corrupt_image``) reported with the result; a sample without a
usable label or caption is a counted skip at indexing time; a truncated or corrupt tar shard is a
``damaged_shard`` skip naming the shard (the samples past the damage cannot be counted) and is named
in ``describe()``; a class index outside
``0..len(classnames)-1`` raises :class:`DatasetError` naming the sample (never a silently wrong
accuracy).
"""
from __future__ import annotations

import json
import os
import re
import unicodedata
import warnings
from collections import Counter
from collections.abc import KeysView, Mapping, Sequence, Set
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from kizuna.data.images import IMAGE_EXTENSIONS, SKIPPED_FOLDERS
from kizuna.data.sources import (COMPRESSED_SHARD_EXTS, PairDataset, SampleIndex, SkipCounter, build_index,
                                  group_rows_by_image, open_table, shared_data_hint, table_reader)
from kizuna.data.tar_index import decode_text, parse_label

from .encode import is_count

__all__ = [
    "DatasetError", "EvalDataset", "bundled_classnames", "bundled_templates", "find_split", "load_dataset",
    "read_lines", "read_templates",
]

SPLIT_NAMES = ("test", "val", "validation", "valid", "train", "dev")
CLASSNAMES_FILE = "classnames.txt"
TEMPLATES_FILE = "zeroshot_classification_templates.txt"
DEFAULT_TEMPLATES = ("a photo of a {c}.",)

# torchvision's names; CLIP_benchmark's en_classnames.json has no "cifar10" entry (it reads them
# from torchvision), so a bare cifar10 folder without classnames.txt still works.
_BUILTIN_CLASSNAMES = {
    "cifar10": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
}


class DatasetError(ValueError):
    """A dataset that cannot be evaluated as given; the message names the file or sample."""


def with_caller_flags(error: Exception, split_flag: str, in_training: bool = False) -> str:
    """``error``'s message with the advice in the caller's own flags: the readers advise `kizuna eval`'s
    (``--split``, "evaluate it with `kizuna eval retrieval`"), which `vit train --val-data` (``--val-split``) and
    `kizuna train --eval-zeroshot` (``--eval-split``, ``--eval-retrieval``) do not have: followed as written, the
    advice failed as "unrecognized arguments"."""
    message = str(error).replace("pass split= / --split ", f"pass {split_flag} ")
    message = message.replace("pass --split ", f"pass {split_flag} ")
    if in_training:  # a training run's evaluation takes the folder's own class names and a CSV's default columns
        message = message.replace("evaluate it with `kizuna eval retrieval`", "evaluate it with --eval-retrieval")
        message = message.replace("evaluate it with `kizuna eval zeroshot`", "evaluate it with --eval-zeroshot")
        message = message.replace("Create that file, pass classnames=[...] / --classnames FILE, or --dataset-name KEY "
                                  "to use a bundled CLIP_benchmark list", "Create that file; a bundled CLIP_benchmark "
                                  "list is taken when the folder is named after it")
        # (--caption-column and the others set the training data's columns on `kizuna train`: followed, the advice
        # failed again; and a retrieval CSV's caption column is title, not label)
        message = re.sub(r" \(name (?:yours|the ones to read) with --[a-z-]+(?: and --[a-z-]+)*\)",
                         " (a training run's evaluation reads a CSV's columns filepath and label for --eval-zeroshot, "
                         "filepath and title for --eval-retrieval; no flag renames them)", message)
    return message


def in_suite_words(error: Exception) -> str:
    """``error``'s advice as a suite file's keys, not the eval commands' flags (`eval suite` has no --split)."""
    message = str(error).replace("pass split= / --split ", "pass --split ")
    message = message.replace("pass classnames=[...] / --classnames FILE, or --dataset-name KEY",
                              'set the run\'s "classnames", or its "dataset_name",')
    for flag, key in (("--split", "split"), ("--train-split", "train_split"), ("--classnames", "classnames"),
                      ("--dataset-name", "dataset_name"), ("--image-column", "image_column"),
                      ("--label-column", "label_column")):
        message = message.replace(f"pass {flag} ", f'set the run\'s "{key}" to ')
        message = message.replace(f"with {flag})", f'with the run\'s "{key}")')
    message = message.replace("(--classnames FILE names them all)", '(the run\'s "classnames" names them all)')
    for command, task in (("kizuna eval retrieval", "retrieval"), ("kizuna eval zeroshot", "zeroshot")):
        message = message.replace(f"evaluate it with `{command}`", f'give the run "task": "{task}"')
    for flag, key in (("--max-train-samples", "max_train_samples"), ("--max-samples", "max_samples")):
        message = message.replace(f"raise {flag} (now", f'raise the run\'s "{key}" (now')
    return message


class NoClassNamesError(DatasetError):
    """A classification set whose classes are named nowhere (no names file, no bundled list, no class folders)."""


# ----------------------------------------------------------------------------------- bundled assets
def _asset_json(name: str) -> dict:
    return json.loads(resources.files("kizuna.data").joinpath("assets", name).read_text(encoding="utf-8"))


def _name_variants(name: str) -> list[str]:
    parts = name.strip().lower().rstrip("/").split("/")
    base = parts[-1]
    out = [base]
    # VTAB's and TFDS's exports label some sets in another order, under CLIP_benchmark's "<name>_vtab" key
    # ("vtab/caltech101" took torchvision's caltech101 list: 35 of 102 labels kept their name); prefixes are
    # stripped until none is left (the hub's "wds_vtab-caltech101" found no list)
    vtab = len(parts) > 1 and parts[-2] in ("vtab", "tfds")
    stripped = True
    while stripped:
        stripped = False
        for prefix in ("wds_", "wds-", "vtab_", "vtab-", "tfds_", "tfds-"):
            if base.startswith(prefix):
                vtab = vtab or prefix.startswith(("vtab", "tfds"))
                base = base[len(prefix):]
                out.append(base)
                stripped = True
    if vtab:
        out.insert(0, f"{base}_vtab")
    out += [v.replace("-", "_") for v in out] + [v.replace("_", "-") for v in out]
    # and with no separators at all: "CIFAR-10" is cifar10 (it matched no list, and took the one default template)
    out += [v.replace("-", "").replace("_", "") for v in out]
    return list(dict.fromkeys(out))


def _warn_if_no_bundled_list(dataset_name: str) -> None:
    """A --dataset-name typed that names no bundled list: said, with the closest keys (it fell back to the one
    default template and the folder names without a word)."""
    import difflib

    if bundled_classnames(dataset_name) is not None or bundled_templates(dataset_name) is not None:
        return
    keys = sorted(set(_asset_json("en_classnames.json")) | set(_asset_json("en_zeroshot_classification_templates.json"))
                  | set(_BUILTIN_CLASSNAMES))
    close = difflib.get_close_matches(_name_variants(dataset_name)[0], keys, n=3, cutoff=0.6)
    warnings.warn(f"dataset name {dataset_name!r} names no bundled CLIP_benchmark list"
                  + (f" (did you mean {', '.join(close)}?)" if close else "")
                  + ": its class names and templates are the dataset's own or the defaults", stacklevel=3)


def bundled_classnames(dataset_name: str | None) -> list[str] | None:
    if not dataset_name:
        return None
    table = _asset_json("en_classnames.json")
    for v in _name_variants(dataset_name):
        if v in table:
            return list(table[v])
        if v in _BUILTIN_CLASSNAMES:
            return list(_BUILTIN_CLASSNAMES[v])
    return None


def bundled_templates(dataset_name: str | None) -> list[str] | None:
    if not dataset_name:
        return None
    table = _asset_json("en_zeroshot_classification_templates.json")
    for v in _name_variants(dataset_name):
        if v in table:
            return list(table[v])
    return None


def is_file_argument(value) -> bool:
    """Whether a value that is a file or typed text (labels, templates, texts) names a file: anything there but
    a folder. A pipe (bash's <(...), /dev/stdin, a FIFO) is one, which Path.is_file() is not (it became the
    label "/dev/fd/63"); read it once, as it is empty the second time."""
    import stat

    try:
        return not stat.S_ISDIR(os.stat(value).st_mode)
    except (OSError, ValueError):  # no such file; text too long for a file name, or holding a NUL
        return False


def numbered_lines(path: str | os.PathLike) -> list[tuple[int, str]]:
    """(line number, stripped text) of the non-blank lines of a UTF-8 text file."""
    try:
        text = Path(path).read_bytes().decode("utf-8")  # bytes, so the error's offset is the file's
    except UnicodeDecodeError as e:
        raise DatasetError(f"{path}: not UTF-8 text (byte {e.start}: {e.reason}); save it as UTF-8") from None
    # Notepad's byte-order mark is no text: kept, it became part of the first class name or template
    # ("\ufeffairplane") and changed that class's prompt embedding.
    text = text.removeprefix("\ufeff")
    # Lines end at \n, \r\n or \r only: str.splitlines() also breaks at U+2028, \x0c, \x85 ..., which pasted
    # web text holds, and `kizuna embed --texts` wrote more rows than the file has lines (row N not line N).
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return [(n, line.strip()) for n, line in enumerate(lines, 1) if line.strip()]


def read_lines(path: str | os.PathLike, bundled: list[str] | None = None) -> list[str]:
    """The lines of a class names file (UTF-8, a byte-order mark dropped), stripped: line k names class k, so a
    blank line before the last name is refused (dropped, it moved every later name onto the class before it);
    blank lines after it are not. ``bundled``: the dataset's bundled CLIP_benchmark list, which may name a class
    "" (clevr_closest_object_distance's class 3, as CLIP_benchmark's own export writes it): a file that is that
    list, blank line and all, is read as it (it was refused, and the advice to remove the line shifted labels)."""
    numbered = numbered_lines(path)
    for k, (n, _) in enumerate(numbered, 1):
        if n != k:
            whole = [""] * numbered[-1][0]
            for line_number, line in numbered:
                whole[line_number - 1] = line
            if bundled is not None and whole == [name.strip() for name in bundled]:
                return whole
            raise DatasetError(f"{path}: line {k} is blank, but line k names class k (0-based: k - 1); name that "
                               "class (a line removed moves every later name onto the class before it)")
    return [line for _, line in numbered]


def json_names(path: Path, dataset_name: str | None, what: str) -> list:
    """A .json file of ``what`` (templates, class names): a list, one string, or CLIP_benchmark's object of such
    lists keyed by dataset name (picked by ``dataset_name``'s spellings; a file of one key without a name is that
    key's). A broken file failed naming no file ("Expecting value: line 2 column 1"), null or a number as a
    traceback, a string was read letter by letter, and a class names file was read line by line as text:
    ``{``, ``"cifar10": [``, ``"airplane",`` ... as 14 classes (an indented list shifted every label by one)."""
    try:
        obj = json.loads(path.read_bytes())  # bytes: a byte-order mark (UTF-8's, or UTF-16 as PowerShell
        # writes it) read as json detects it
    except UnicodeDecodeError as e:
        raise DatasetError(f"{path}: not UTF-8 (or UTF-16) text ({e.reason} at byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path}: not JSON ({e.msg}, line {e.lineno} column {e.colno})") from None
    except RecursionError:
        raise DatasetError(f"{path}: not a {what} file (JSON nested too deep to read)") from None
    if isinstance(obj, dict):
        key = next((v for v in _name_variants(dataset_name or "") if v in obj), None)
        if key is None and dataset_name is None and len(obj) == 1:  # no dataset to pick by (kizuna
            key = next(iter(obj))  # zeroshot, analyze predict): a file of one dataset's is that
        if key is None and dataset_name is None:
            raise DatasetError(f"{path} holds {what} keyed by dataset ({', '.join(sorted(obj))}) and "
                               "this command names no dataset to pick one by; pass a .json holding a list, "
                               f"or a .txt, of the {what} to use")
        if key is None:
            raise DatasetError(f"{path} has no {what} for dataset {dataset_name!r} "
                               f"(keys: {', '.join(sorted(obj))})")
        obj = obj[key]
    if isinstance(obj, str):  # one
        obj = [obj]
    if not isinstance(obj, list):
        raise DatasetError(f"{path}: {what} must be a JSON list of strings (or an object of such lists "
                           f"keyed by dataset name), got {json.dumps(obj)[:80]}")
    return obj


def is_one_template(value) -> bool:
    """A templates value that is one template, not a file: braces, and no file of that name (the rule of
    ``--template`` and of a suite's or load_dataset's ``templates``)."""
    return isinstance(value, str) and "{" in value and not is_file_argument(value)


def read_templates(spec, dataset_name: str | None = None) -> list[str]:
    """Templates from a list, one template (``"a photo of a {c}."``), a .txt file (one per line) or a .json file
    (a list, or a dict keyed by dataset name as CLIP_benchmark's)."""
    if is_one_template(spec):  # a suite's "templates" was taken for a file name, which `--template` was not
        spec = [spec]
    if isinstance(spec, (list, tuple)):
        out = list(spec)
        places = [f"the given templates (item {k + 1})" for k in range(len(out))]
    else:
        path = Path(spec)
        if not is_file_argument(path):
            raise DatasetError(f"templates file {path} not found")
        if path.suffix.lower() == ".json":  # T.JSON was one template: the file's text
            obj = json_names(path, dataset_name, "templates")
            out = list(obj)
            places = [f"{path} (item {k + 1})" for k in range(len(out))]
        else:
            numbered = numbered_lines(path)
            out = [t for _, t in numbered]
            places = [f"{path}, line {n}" for n, _ in numbered]
    if not out:
        raise DatasetError(f"no templates in {spec!r}")
    from .zeroshot import _has_a_field, fill_template

    for t, place in zip(out, places):
        if callable(t):
            continue
        if not isinstance(t, str):
            raise DatasetError(f"template {t!r} in {place} is not text")
        if "{c}" not in t and "{}" not in t and "{0}" not in t and not _has_a_field(t):
            # (a field of another form, "a {c!r}", is said below by what fill_template names: it was told it had
            # no {c})
            raise DatasetError(f"{place}: template {t!r} has no '{{c}}' placeholder for the class name; "
                               f"add {{c}} where the class name goes (e.g. 'a photo of a {{c}}.')")
        try:  # filled as str.format fills it: other braces must be doubled
            fill_template(t, "x")
        except ValueError as e:
            why = str(e).partition("cannot be filled (")[2].rpartition("): write")[0]
            raise DatasetError(f"{place}: template {t!r}: other braces must be doubled ({why}); the class name's "
                               "place is {c} or {}") from None
    return out


def default_dataset_name(path) -> str:
    """The name a dataset goes by without ``--dataset-name`` (the key of bundled lists and of a CLIP_benchmark
    templates .json): its root folder's, which for a split folder (cifar10/test) or a CSV is the parent's."""
    path = Path(os.path.abspath(os.path.expanduser(str(path))))
    name = (path.parent if path.is_file() or (path.is_dir() and is_split_folder(path)) else path).name
    if any("\udc80" <= ch <= "\udcff" for ch in name):  # undecodable bytes (LC_ALL=C, a Latin-1 name): text, as
        name = decode_text(os.fsencode(name))  # class folders' (matplotlib failed on the surrogates in a title)
    return name


def template_arguments(values: Sequence[str] | None, dataset_name: str | None = None) -> str | list[str] | None:
    """The values of ``--template``/``--templates``, on any command: each a template file (.txt, .json) or one
    template with ``{c}``, repeatable. A single file stays its path (what a suite records and reads);
    otherwise -> the templates, the files' read in place. A value without braces ending in .txt/.json is
    a file, so a misspelt name says "not found" rather than "has no {c} placeholder". A template typed is text,
    as UTF-8 under any locale (:func:`kizuna.apps.cli.text_argument`); a file's name stays as given."""
    if not values:
        return None
    from kizuna.apps.cli import text_argument

    def is_file(v: str) -> bool:
        return not is_one_template(v) and (is_file_argument(v) or Path(v).suffix.lower() in (".txt", ".json"))

    if len(values) == 1 and is_file(values[0]) and os.path.isfile(values[0]):
        # read where it is used: a CLIP_benchmark .json is keyed by the dataset's name. A pipe is read here, once
        # (a linear probe reads the templates for each split, and the second read found the pipe empty)
        return values[0]
    templates = [t for v in values for t in (read_templates(v, dataset_name) if is_file(v) else [text_argument(v)])]
    return read_templates(templates)


# ----------------------------------------------------------------------------------- the dataset
@dataclass
class EvalDataset:
    """An indexed evaluation split. ``positions`` are the rows of ``index`` evaluated, in order."""

    name: str
    task: str  # "classification" | "retrieval"
    root: str
    split: str | None
    source: str
    layout: str  # "wds" | "imagefolder" | "folder" | "csv"
    index: SampleIndex
    positions: np.ndarray
    classnames: list[str] | None = None
    templates: list[str] | None = None
    classnames_source: str = ""
    templates_source: str = ""
    skips: SkipCounter = field(default_factory=SkipCounter)
    labels_override: np.ndarray | None = None  # per index row (ImageFolder, CSV class names)

    def __len__(self) -> int:
        return len(self.positions)

    @property
    def labels(self) -> np.ndarray:
        col = self.labels_override if self.labels_override is not None else self.index.labels
        return np.asarray(col)[self.positions]

    @property
    def keys(self) -> list[str]:
        return [self.index.keys[i] for i in self.positions]

    @property
    def captions(self) -> list[tuple[str, ...]]:
        return [self.index.captions[i] for i in self.positions]

    @property
    def num_classes(self) -> int:
        return len(self.classnames or ())

    def where(self, k: int) -> str:
        return self.index.where(int(self.positions[k]))

    def pair_dataset(self, transform=None, seed_transform: bool = False, seed: int = 0) -> PairDataset:
        ds = PairDataset(self.index, transform=transform, caption_sampling="first", seed=seed,
                         seed_transform=seed_transform)
        if self.labels_override is not None:
            ds.index = _with_labels(self.index, self.labels_override)
        return ds

    def subset(self, k: np.ndarray | list[int]) -> "EvalDataset":
        """The same dataset restricted to positions ``k`` (indices into this dataset), or to where a boolean mask
        as long as the dataset is true (``ds.subset(ds.labels == 3)``)."""
        import copy

        if hasattr(k, "detach"):  # a torch tensor
            k = k.detach().cpu().numpy()
        k = np.asarray(k)
        if k.dtype == bool:  # as int64 a mask was positions 0 and 1: every sample, from the first two
            if k.shape != (len(self),):
                raise ValueError(f"subset: a boolean mask must have one entry per sample ({len(self)}), got shape "
                                 f"{k.shape}")
            k = np.flatnonzero(k)
        elif k.size and not np.issubdtype(k.dtype, np.integer):
            raise ValueError(f"subset takes integer positions or a boolean mask, got {k.dtype} values")
        out = copy.copy(self)
        out.positions = self.positions[k.astype(np.int64)]
        return out

    def describe(self) -> str:
        what = f"{self.num_classes} classes" if self.task == "classification" else \
            f"{sum(len(c) for c in self.captions)} captions"
        skipped = f"; {self.skips.report()}" if self.skips else ""
        if self.index.damaged:  # the skip report shows one example; name every damaged shard
            skipped += f"; damaged shards (samples past the damage are missing): {', '.join(self.index.damaged)}"
        return f"{self.name} [{self.split or '-'}] {self.task}: {len(self)} images, {what} ({self.layout} {self.source}){skipped}"


def _with_labels(index: SampleIndex, labels: np.ndarray) -> SampleIndex:
    return SampleIndex(index.sources, index.kinds, index.source_ids, index.keys, index.offsets, index.sizes,
                       index.paths, index.captions, np.asarray(labels, dtype=np.int64), index.skips,
                       index.damaged, index.rejected_at, index.source_stamps)


# ----------------------------------------------------------------------------------- layout detection
def _split_dirs(root: Path) -> dict[str, str]:
    """{split: its folder's name} for the split folders of a dataset root that hold data, in SPLIT_NAMES order.
    Matched whatever the case where no folder has the exact name: a root with Train/ and Test/ (as Kaggle ships
    them, and as macOS and Windows match train/ and test/) was one ImageFolder with classes "Test" and "Train"."""
    root = Path(root)
    try:
        names = _split_named_folders(root)
    except OSError:
        return {}
    dirs = {}
    for s in SPLIT_NAMES:
        name = _named(names, s)
        if name is not None and _has_data(root / name):
            dirs[s] = name
    return dirs


def _named(names: list[str], name: str) -> str | None:
    """``name`` if it is among ``names``, else the one of them that is ``name`` in another case (two such: neither,
    not guessed); None where there is none."""
    if name in names:
        return name
    folded = [n for n in names if n.casefold() == name.casefold()]
    return folded[0] if len(folded) == 1 else None


def split_folders(root: Path) -> list[str]:
    """The names of the split folders of a dataset root (``test``, ``Train``, ...) that hold data, in SPLIT_NAMES
    order."""
    return list(_split_dirs(root).values())


def split_folder(root: Path, split: str) -> Path | None:
    """The folder of ``split`` under ``root``: the folder of that name, else a split folder of that name in
    another case (``Test`` for ``test``); None where there is none."""
    root = Path(root)
    if (root / split).is_dir():
        return root / split
    name = _split_dirs(root).get(split.casefold())
    return root / name if name else None


def _has_data(d: Path) -> bool:
    if not d.is_dir():
        return False
    for p in d.iterdir():
        if p.suffix in (".tar",) or p.name == "nshards.txt" or p.suffix.lower() in IMAGE_EXTENSIONS:
            return True
        if p.is_dir():
            return True
    return False


def _holds_images(d: Path) -> bool:
    return any(p.suffix.lower() in IMAGE_EXTENSIONS for p in d.iterdir())


def find_split(root: Path, split: str | None) -> tuple[Path, str | None]:
    """-> (folder to index, split name). ``split=None`` picks test, then val/validation, if present.
    A folder named like a split is a class of an ImageFolder tree when it sits beside class folders
    (other folders of images): CIFAR-100 has a class "train"."""
    dirs = _split_dirs(root)
    # split-named folders that hold images themselves, beside other folders of images, are classes (CIFAR-100's
    # "train"); ones holding class folders or shards stay splits (an examples/ folder of images at a root made
    # its train and test splits two classes of one ImageFolder), also with a stray image at their top. Side-car
    # split folders (KEY.jpg + KEY.cls or .txt) are splits too, but for a train/ among captioned class folders
    # (CIFAR-100 with captions): a test/ or val/ of side-cars beside restval/ is a split (it pooled them)
    classes = False
    if dirs:  # (a file given, a CSV's, has none: not listed)
        others = [d for d in _class_dirs(root) if d.name.casefold() not in SPLIT_NAMES and _holds_images(d)]
        named = [root / name for name in dirs.values()]
        captioned_train = (list(dirs) == ["train"] and not _has_sidecars(named[0], (".cls",))
                           and all(_has_sidecars(d, (".txt",)) for d in others))  # (.cls side-cars: a split)
        classes = bool(others) and all(_holds_images(d) and not _class_dirs(d) for d in named) and (
            not any(_has_sidecars(d) for d in named) or captioned_train)
    if classes:
        dirs = {}
    if split:
        if (root / split).is_dir() and not classes:  # (not a class folder named as the split asked for)
            return root / split, split
        if split.casefold() in dirs:
            return root / dirs[split.casefold()], split.casefold()
        if dirs:
            raise DatasetError(f"{root} has no split {split!r} (splits found: {', '.join(dirs.values())})")
        return root, None  # a dataset without split folders: the folder is the split
    for s in ("test", "val", "validation", "valid", "dev"):
        if s in dirs:
            return root / dirs[s], s
    if dirs:  # only training data: evaluating on it must be asked for
        first = next(iter(dirs.values()))
        raise DatasetError(f"{root} has no test or validation split (found: {', '.join(dirs.values())}); "
                           f"pass split= / --split {first} to evaluate on it anyway")
    return root, None


def _csv_split(path: Path, split: str | None) -> Path:
    """A CSV dataset's file for ``split``: another .csv/.tsv where ``split`` names one (a bare file name beside
    ``path``, else in the current folder; a path as given), else ``path`` itself (a split name such as "train"
    does not pick a file: a CSV is one split). A linear probe on CSVs had no way to name its training file: every
    split was the test CSV."""
    if not split or Path(split).suffix.lower() not in (".csv", ".tsv"):
        return path
    given = Path(os.path.expanduser(split))
    # a bare file name is the one beside the dataset's CSV (as --help says), not one of that name in the current
    # folder; a path is taken as given
    candidates = (path.parent / given, given) if given.name == split else (given,)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise DatasetError(f"split {split!r}: no such CSV file (looked at {' and '.join(map(str, candidates))})")


def is_split_folder(path: Path) -> bool:
    """A split folder of a dataset root given directly (``cifar10/test``): named as a split, holding the data
    itself, with no split folders of its own."""
    path = Path(path)
    return (os.path.isdir(path) and path.name.casefold() in SPLIT_NAMES and _has_data(path)
            and not _split_named_folders(path))


def validation_split(root) -> str | None:
    """The split to pick a model on in a dataset root that has one besides test: val, validation, valid or dev
    (None: it has none, or ``root`` is no dataset root). A trainer's default: on test, its best/ was picked on
    the numbers it would report."""
    root = Path(root).expanduser()
    if not os.path.isdir(root) or is_split_folder(root):
        return None
    dirs = _split_dirs(root)
    split = next((s for s in ("val", "validation", "valid", "dev") if s in dirs), None)
    try:  # as find_split reads the root (a class folder "dev" among classes is no split)
        return split if split is not None and find_split(root, split)[1] == split else None
    except DatasetError:
        return None


def _split_named_folders(folder: Path) -> list[str]:
    """The names of ``folder``'s sub-folders named as a split, in any case. Names are compared before any stat:
    a stat of every entry (100,000 images in a split folder) cost more than indexing them."""
    return [n for n in os.listdir(folder) if n.casefold() in SPLIT_NAMES and (Path(folder) / n).is_dir()]


def _dataset_type(*dirs: Path) -> str | None:
    for d in dirs:
        f = file_in(d, "dataset_type.txt")
        if f is not None:
            t = f.read_text(encoding="utf-8-sig", errors="replace").strip().lower()
            if t in ("zeroshot_classification", "classification"):
                return "classification"
            if t == "retrieval":
                return "retrieval"
            raise DatasetError(f"{f} says {t!r}; supported: classification, retrieval")
    return None


def _is_tar_dir(d: Path) -> bool:
    # (".TAR" too, and a folder of compressed tars only, which the shard reader then refuses with how to unpack
    # them: it was read as an image folder, "no images found"; a download kept beside its images is no shard)
    entries = list(d.iterdir())
    if (d / "nshards.txt").is_file() or any(p.suffix.lower() == ".tar" for p in entries):
        return True
    return any(p.name.lower().endswith(COMPRESSED_SHARD_EXTS) for p in entries) and not any(
        not p.name.startswith(".") and (p.is_dir() or p.suffix.lower() in IMAGE_EXTENSIONS) for p in entries)


def _class_dirs(d: Path) -> list[Path]:
    return sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name not in SKIPPED_FOLDERS)


def _folder_class_name(folder: str) -> str:
    """A class folder's name as a class name: its bytes decoded as caption bytes are (UTF-8, else cp1252: a
    Latin-1 name was a string with a surrogate, which matplotlib and the results.md write failed on after the
    evaluation), in NFC (macOS writes names decomposed: "café" as "cafe" + an accent, which matched no name
    in a names file and swapped two classes), "_" read as a space."""
    if any("\udc80" <= ch <= "\udcff" for ch in folder):  # undecodable bytes of a folder name (surrogateescape)
        folder = decode_text(os.fsencode(folder))
    return unicodedata.normalize("NFC", folder).replace("_", " ")


def _has_sidecars(d: Path, exts: tuple[str, ...] = (".cls", ".txt")) -> bool:
    """KEY.cls / KEY.txt beside KEY.jpg; a README.txt or LICENSE.txt at an ImageFolder root is not one."""
    files = [p for p in d.iterdir() if p.is_file()]
    image_stems = {p.stem for p in files if p.suffix.lower() in IMAGE_EXTENSIONS}
    return any(p.suffix.lower() in exts and p.stem in image_stems for p in files)


def _labelled_by_sidecars(d: Path, task: str | None = None) -> bool:
    """Side-cars at the top, or in the subfolders: shards unpacked one per folder (test/000000/KEY.jpg + KEY.cls)
    were an ImageFolder whose classes were the folder names, and so was img2dataset's "files" output
    (00000/KEY.jpg + KEY.txt, 00001/...), which `kizuna train --data` reads as captioned pairs: retrieval refused
    it as "an ImageFolder tree". Captions in a subfolder are such side-cars unless the task is classification:
    a class tree whose images also carry captions is still classes (a README.txt names no image: none)."""
    sidecars = (".cls",) if task == "classification" else (".cls", ".txt")
    return _has_sidecars(d) or any(_has_sidecars(sub, sidecars) for sub in _class_dirs(d))


def _folder_class_order(dirs: list[Path]) -> list[Path]:
    """Class folders in label order: sorted by name (torchvision's order), or by number when every name is
    one ("0".."99" would sort as 0, 1, 10, 11, ... and pair the classes with the wrong names)."""
    if dirs and all(d.name.isdecimal() for d in dirs):  # (not isdigit: int("²") raises)
        return sorted(dirs, key=lambda d: int(d.name))
    return dirs


def _nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def _plain(name: str) -> str:
    return " ".join(_folder_class_name(name).lower().replace("-", " ").split())


class _ClassNameIndex:
    """Class positions by name: as written first (NFC, "_" read as a space), then loosely (case, "-", spacing:
    folder "golden_retriever" for name "Golden Retriever") where the loose key is one name's alone. By the loose
    key only, classes "A" and "a" (EMNIST's letters) were one: folder a was labelled class A, and a names file
    listing both trained a head on half its classes."""

    def __init__(self, names: Sequence[str]):
        self.exact: dict[str, int] = {}
        loose: dict[str, dict[str, int]] = {}
        for k, name in enumerate(names):
            written = _folder_class_name(str(name))
            self.exact.setdefault(written, k)
            loose.setdefault(_plain(str(name)), {}).setdefault(written, k)
        self.loose = {key: next(iter(same.values())) for key, same in loose.items() if len(same) == 1}

    def get(self, name: str) -> int | None:
        k = self.exact.get(_folder_class_name(str(name)))
        return self.loose.get(_plain(str(name))) if k is None else k

    def __contains__(self, name: str) -> bool:
        return self.get(name) is not None


def _bundled_fits_folders(bundled: list[str], folders: list[str], by_name: bool = False) -> bool:
    """Bundled names label the folders: by name when every folder is named after a bundled class, else by
    position. By position is safe when no folder is named after a bundled class (ImageNet's wnid folders,
    numbered folders), or when every folder that is sits at that class's position; not when, say, folders
    plane, car, bird, ... sort into another order than the list."""
    position = _ClassNameIndex(bundled)
    if by_name and folders and all(f in position for f in folders):
        # every folder named after a class of the list the user named (--dataset-name): matched by name, also
        # in a split that lacks a class (it was scored over its own folders, fewer classes than the same split
        # as shards). Not for a name taken from a folder: a cifar10/ subset of 2 classes trained a 10-way head
        return True
    if (folders and all(f.isdecimal() for f in folders) and not all(f in position for f in folders)
            and (by_name or len(folders) == len(bundled))):
        # numbered folders are the list's classes by number (fewer in a split that lacks one): with fewer folders
        # than the list they fell back to class names "0".."8" under --dataset-name cifar10, prompts "a photo of a
        # 3". Fewer only under a name the user gave, as above (a cifar10/ folder of classes 0 and 1 is 2 classes)
        if max(int(f) for f in folders) <= len(bundled):
            return True
    if len(bundled) != len(folders):
        return False
    return all(position.get(f) in (None, k) for k, f in enumerate(folders))


def _numbered_folder_labels(folders: list[str], classnames: list[str], source: str, data: Path) -> list[int]:
    """Numbered class folders' labels: counted from 0 where a folder 0 is there, from 1 where one is numbered
    as the names are many (1..10 for 10 names); by position where the numbers are no indices but as many as the
    names (years). Read by position, folders 1..10 were right only when complete: without one class they were
    read by number, every class on the next one's name (a linear probe at 0%)."""
    numbers = [int(f) for f in folders]
    n = len(classnames)
    if 0 in numbers and max(numbers) < n:
        return numbers
    if 0 not in numbers and max(numbers) == n:
        return [k - 1 for k in numbers]
    if len(folders) == n:  # numbers that are no class indices (years): the names label them in (numeric) order
        return list(range(n))
    if 0 not in numbers and max(numbers) < n:
        raise DatasetError(
            f"{data}: the numbered class folders ({', '.join(folders[:5])}{' ...' if len(folders) > 5 else ''}) "
            f"have no folder 0 and none numbered {n}, so they may count the {n} classes of {source} from 0 or "
            f"from 1. Add an empty folder 0 (counted from 0) or {n} (from 1), or name the folders after the classes")
    beyond = [f for f in folders if int(f) >= n + (0 not in numbers)]
    raise DatasetError(
        f"{data}: class folder(s) {', '.join(beyond[:5])} number a class beyond the {n} names of {source} "
        f"({len(folders)} numbered folders); fix the names file or the folders")


def _folder_labels(folders: list[str], classnames: list[str], source: str, data: Path) -> list[int]:
    """The class index of each ImageFolder class folder under class names from ``source``: by name where every
    folder is named after a class; by number for numbered folders not named by them (from 0 or from 1, see
    :func:`_numbered_folder_labels`); by position (torchvision's order) where there are as many folders as names
    and no folder named after a class sits elsewhere (wnid folders, "automobile" for "car")."""
    index = _ClassNameIndex(classnames)
    named = [index.get(f) for f in folders]
    if all(k is not None for k in named):  # first: folders 1, 2, 3 named by a list "1", "2", "3" are those classes
        merged: dict[int, list[str]] = {}
        for folder, k in zip(folders, named):
            merged.setdefault(k, []).append(folder)
        merged = {k: group for k, group in merged.items() if len(group) > 1}
        if merged:  # Cat/ and cat/ under one name "cat": one class of both, without a word
            said = "; ".join(f"{', '.join(group)} -> {classnames[k]!r}" for k, group in list(merged.items())[:3])
            warnings.warn(f"{data}: class folders named alike are one class of {source} ({said}): their images "
                          "are scored as that class together; rename or merge the folders if they are not",
                          stacklevel=3)
        return named
    if folders and all(f.isdecimal() for f in folders):
        return _numbered_folder_labels(folders, classnames, source, data)
    if len(folders) == len(classnames) and all(k in (None, j) for j, k in enumerate(named)):
        return list(range(len(folders)))
    unnamed = [f for f, k in zip(folders, named) if k is None]
    raise DatasetError(
        f"{data}: the class folders do not fit the class names from {source} ({len(classnames)} names for "
        f"{len(folders)} folders; folder(s) {', '.join(unnamed[:5])}{' ...' if len(unnamed) > 5 else ''} name no "
        "class there). Folders named after the classes are matched by name; otherwise the names label the "
        "folders in sorted order and must be as many. Fix the names file or the folders")


# ----------------------------------------------------------------------------------- loading
def _names_list(value, what: str):
    """A numpy array or another sequence of names as a list of them (only lists and tuples were: an array was
    taken for a file's path, a TypeError); a file's path as it is. A set or a mapping has no order to number
    classes by (a set of names came out in the hash seed's order: images scored as another class)."""
    if value is None or isinstance(value, (str, os.PathLike, list, tuple)):
        return value
    if isinstance(value, Mapping):  # its keys or its values? (list(d) is its keys, in insertion order)
        raise TypeError(f"{what}: a {type(value).__name__} (a mapping): pass list(d) or the names in class-index "
                        "order")
    if isinstance(value, Set) and not isinstance(value, KeysView):  # dict_keys keep their insertion order
        raise TypeError(f"{what}: a {type(value).__name__} has no order; pass a list (in class-index order)")
    return list(value)


def refuse_csv_columns(data, image_column: str = "filepath", label_column: str = "label",
                       caption_column: str = "title") -> None:
    """A CSV's column names given for ``data``, a folder (shards or images, whose labels and captions come from their
    files), where it is a command's only data: they were ignored without a word (the .cls labels scored for a
    --label-column the user asked for)."""
    asked = [f"--{flag}-column {value}" for flag, value, default in (
        ("image", image_column, "filepath"), ("label", label_column, "label"), ("caption", caption_column, "title"))
        if value != default]
    if asked:
        raise DatasetError(f"{' and '.join(asked)}: {'they name' if len(asked) > 1 else 'it names'} a CSV's "
                           f"column, and {data} is a folder (shards or images, whose labels and captions come "
                           f"from their files); drop {'them' if len(asked) > 1 else 'it'}, or pass a CSV")


def load_dataset(path, split: str | None = None, *, task: str | None = None, dataset_name: str | None = None,
                 classnames=None, templates=None, max_samples: int = 0, image_column: str = "filepath",
                 label_column: str = "label", caption_column: str = "title",
                 cache_dir: str | os.PathLike | None = None, unnamed=None,
                 refuse_columns: bool = False) -> EvalDataset:
    """Index an evaluation split (see the module docstring). ``task``: ``"classification"`` /
    ``"retrieval"`` (default: ``dataset_type.txt``, else what the samples carry). ``max_samples``: keep
    the first N usable samples (0 = all). ``unnamed``: ``f(dataset) -> (classnames, source)`` for a
    classification set whose classes are named nowhere (default: :class:`NoClassNamesError`); it gets the
    dataset as indexed (`kizuna vit train` numbers the classes from its labels without indexing it again).
    ``refuse_columns``: a column name other than the default for a dataset that is no CSV is an error (a
    command whose only data this is: the name was ignored without a word); off where the names are also another
    dataset's (`vit train`'s training and validation data share them)."""
    if task not in (None, "classification", "retrieval"):
        raise ValueError(f"task must be 'classification' or 'retrieval', got {task!r}")
    max_samples = 0 if max_samples is None else max_samples  # None: all, as the suite and eval/training.py pass it
    if not is_count(max_samples, 0):
        raise ValueError(f"max_samples must be a whole number >= 0 (0 = all), got {max_samples!r}")  # -1 was all
    classnames, templates = _names_list(classnames, "classnames"), _names_list(templates, "templates")
    path = Path(os.path.expanduser(str(path)))
    if not os.path.exists(path):  # (Path.exists raised ENAMETOOLONG on a long string)
        raise FileNotFoundError(f"dataset not found: {path}{shared_data_hint(path)}")
    if not path.is_dir():  # a file, or a device/pipe such as /dev/null
        if not path.is_file() or path.suffix.lower() not in (".csv", ".tsv"):
            raise DatasetError(f"{path}: expected a dataset folder or a .csv/.tsv file")
        root, data = path.parent, _csv_split(path, split)
        split_name = split if data != path else None  # a split that named no other file was not read
    elif is_split_folder(path):
        # a split folder given directly (cifar10/test): the dataset is its parent, which holds
        # classnames.txt and the templates and names the bundled lists
        root = path.parent
        if split is None or split.casefold() == path.name.casefold():
            data, split_name = path, path.name.casefold()
        elif (other := split_folder(root, split)) is not None:  # cifar10/test with split="train": cifar10/train,
            data, split_name = other, split.casefold()  # not these images
        else:  # never these images under another split's name
            found = split_folders(root)
            raise DatasetError(f"{path} is the {path.name!r} split of {root}, which has no split {split!r} "
                               f"(splits found: {', '.join(found)}); pass --split {path.name}, or the folder "
                               f"that holds split {split!r}")
    else:
        data, split_name = find_split(path, split)
        root = path
    name = dataset_name or default_dataset_name(path)
    try:
        declared = _dataset_type(data if data.is_dir() else root, root)
    except DatasetError:
        if not task:  # a type this reader does not know matters only when the task is to come from it
            raise
        declared = None
    if task and declared and task != declared:  # it failed later as "no usable samples (missing_label=1000)"
        command = {"retrieval": "kizuna eval retrieval", "classification": "kizuna eval zeroshot"}.get(declared, "")
        raise DatasetError(f"{root}: its dataset_type.txt says {declared!r}, not {task!r}"
                           + (f"; evaluate it with `{command}`" if command else ""))
    task = task or declared

    labels_override = None
    outside = None  # ImageFolder rows counted as image_outside_class_folder, not again as missing_label
    folder_classes: list[str] | None = None
    csv_source = None  # where a CSV's class names came from
    if not data.is_file() and refuse_columns:
        refuse_csv_columns(data, image_column, label_column, caption_column)
    if data.is_file():
        layout = "csv"
        index, task, labels_override, csv_classes, csv_source = _index_csv(
            data, task, image_column, label_column, caption_column, classnames, root, name, cache_dir,
            named=dataset_name is not None)
        folder_classes = csv_classes
    elif _is_tar_dir(data):
        layout = "wds"
        index = build_index(str(data), require=_require(task), cache_dir=cache_dir)
    elif _labelled_by_sidecars(data, task) or not _class_dirs(data):
        layout = "folder"
        index = build_index(str(data), require=_require(task))
    else:
        layout = "imagefolder"
        if task == "retrieval":
            raise DatasetError(f"{data} looks like an ImageFolder tree (one folder per class), "
                               f"which is a classification layout; retrieval needs KEY.jpg + KEY.txt captions")
        task = "classification"
        dirs = _folder_class_order(_class_dirs(data))
        _refuse_split_folders_in_classes(data, dirs)
        index = build_index(str(data), require="image")
        folder_names = [d.name for d in dirs]
        pos = {n: k for k, n in enumerate(folder_names)}
        labels_override = np.array([pos.get(k.split("/")[0], -1) if "/" in k else -1 for k in index.keys],
                                   dtype=np.int64)
        outside = labels_override < 0  # counted below, over the samples read (--max-samples)
        folder_classes = [_folder_class_name(n) for n in folder_names]
        counts = np.bincount(labels_override[labels_override >= 0], minlength=len(folder_names))
        empty = [folder_names[k] for k in np.flatnonzero(counts == 0)]
        if empty:  # kept (a test split may lack a class's images), but said: each is a class all the same
            import warnings

            warnings.warn(f"{data}: class folder(s) {', '.join(empty[:5])}{' ...' if len(empty) > 5 else ''} hold no "
                          "images; they count as classes all the same (zero-shot candidates, a classifier's "
                          "outputs): remove them if they are not classes", UserWarning, stacklevel=2)

    if len(index) == 0 and not index.skips and not index.damaged:  # a damaged shard is reported below
        raise DatasetError(f"no images found in {data}")

    skips = SkipCounter()
    skips.update(index.skips)
    # A truncated/corrupt shard lost every sample past the damage, and nothing says how many: count the
    # shard itself, so the result's skip counts (results.json details.skipped, the printed summary) name it.
    for shard in index.damaged:
        skips.add("damaged_shard", shard)
    rejected = dict(index.rejected_at)
    if task is None:
        has_labels = index.has_labels if labels_override is None else bool((labels_override >= 0).any())
        task = "classification" if has_labels else "retrieval" if index.has_captions else None
        if task is None:
            raise DatasetError(f"{data}: samples carry neither class labels (.cls) nor captions (.txt); "
                               f"{skips.report()}")
        if task == "classification" and "missing_caption" in rejected:
            # indexed for either task, an image with neither a label nor a caption was a missing caption; in a
            # classification set its label is what is missing (as when the task is named)
            skips.rename("missing_caption", "missing_label")
            rejected["missing_label"] = rejected.pop("missing_caption")

    labels_col = labels_override if labels_override is not None else index.labels
    usable = (np.asarray(labels_col) >= 0 if task == "classification"
              else np.array([len(c) > 0 for c in index.captions], dtype=bool))
    keep = np.flatnonzero(usable)
    # with max_samples, the samples without a label or caption among those read up to the last one kept (all
    # of the split's were counted: `--max-samples 5` of 5 clean samples said "missing_caption=2")
    end, cut = len(index), bool(max_samples and max_samples > 0 and len(keep) >= max_samples)
    if cut:
        end = int(keep[max_samples - 1]) + 1
        keep = keep[:max_samples]
    if outside is not None and outside[:end].any():
        skips.add("image_outside_class_folder", index.where(int(np.argmax(outside[:end]))),
                  n=int(outside[:end].sum()))
    lacking = ~usable[:end]
    if outside is not None:  # (an ImageFolder, so classification) counted above, not again as missing_label
        lacking &= ~outside[:end]
    if lacking.any():
        skips.add("missing_label" if task == "classification" else "missing_caption",
                  index.where(int(np.argmax(lacking))), n=int(lacking.sum()))
    if cut:  # and those indexing rejected (no label or caption for the task) past that sample
        for reason, at in rejected.items():
            skips.drop_last(reason, int((at >= end).sum()))
    if len(keep) == 0:
        raise DatasetError(f"{data}: no usable {task} samples ({skips.report()})")

    ds = EvalDataset(name=name, task=task, root=str(root), split=split_name, source=str(data), layout=layout,
                     index=index, positions=keep.astype(np.int64), skips=skips, labels_override=labels_override)
    if task == "classification":
        try:
            ds.classnames, ds.classnames_source = _resolve_classnames(
                classnames, data if data.is_dir() else root, root, name, folder_classes, layout,
                named=dataset_name is not None, csv_source=csv_source)
        except NoClassNamesError:
            if unnamed is None:
                raise
            ds.classnames, ds.classnames_source = unnamed(ds)
        if layout == "imagefolder" and ds.classnames_source != "folder names":
            # the split's folders were numbered by position; names from a file or list may order them otherwise,
            # or hold a class this split lacks (a test split without one class shifted the rest onto others)
            of_folder = np.array(_folder_labels(folder_names, ds.classnames, ds.classnames_source, data),
                                 dtype=np.int64)
            ds.labels_override = np.where(labels_override >= 0, of_folder[np.maximum(labels_override, 0)], -1)
        _check_labels(ds)
        if cut:
            _warn_if_the_cut_drops_classes(data, np.asarray(labels_col), usable, keep)
        _warn_repeated_classnames(ds.classnames, ds.classnames_source)
        ds.templates, ds.templates_source = _resolve_templates(templates, data if data.is_dir() else root, root, name)
        if dataset_name and (ds.templates_source == "default" or ds.classnames_source == "folder names"):
            _warn_if_no_bundled_list(dataset_name)
    return ds


def _refuse_split_folders_in_classes(data: Path, dirs: list[Path]) -> None:
    """Class folders that hold split folders with a train/ beside a held-out one (cat/{train,test}, or datasets
    side by side: outer/{cifar,stl}/{train,test}) were one ImageFolder pooling train and test: `vit train` trained
    on the test images and an evaluation scored the training ones. Refused, saying how to lay them out."""
    for d in dirs:
        inner = _split_dirs(d)
        held_out = [inner[s] for s in inner if s != "train"]
        if "train" in inner and held_out:
            raise DatasetError(
                f"{data}: class folder {d.name} holds split folders ({inner['train']}, {', '.join(held_out)}): read as "
                "one ImageFolder, its training and held-out images are pooled. Give one dataset root with the splits "
                f"at its top (ROOT/train/<class>/, ROOT/test/<class>/), or point at {d} if it is a dataset of its own")


def _warn_if_the_cut_drops_classes(data, labels: np.ndarray, usable: np.ndarray, keep: np.ndarray) -> None:
    """A max-samples cut keeps the split's first samples: an image folder is read class by class (and a CSV or
    shards written from one are in that order), so the first 40 of a 2-class folder were all one class, and `vit
    train --val-max-samples 40` scored an untrained model 100% (best/ picked on it). Said when the kept samples
    hold fewer of the split's classes and come in runs, a class at a time (a split in mixed order, CIFAR's
    shards, keeps fewer classes by chance alone at a small cut: not said)."""
    whole, kept = np.unique(labels[usable]), np.unique(labels[keep])
    cut = labels[keep]
    in_runs = int((cut[1:] != cut[:-1]).sum()) == len(kept) - 1 and len(cut) >= 2 * len(kept)
    if len(kept) < len(whole) and in_runs:
        warnings.warn(f"{data}: the first {len(keep)} samples, kept by the max-samples cut, hold {len(kept)} of the "
                      f"split's {len(whole)} classes (it lists its samples class by class): the numbers are over "
                      "those classes' samples only; keep more samples, or the whole split", UserWarning, stacklevel=3)


class RepeatedClassNamesWarning(UserWarning):
    """Class names that CLIP's tokenizer reads as one: a zero-shot matter, which a classifier head (kizuna vit)
    filters out."""


def _warn_repeated_classnames(classnames, source: str) -> None:
    """Two classes of one name get one zero-shot weight, and ties go to the lower index: the later class is never
    predicted (its recall 0% by construction). Warned, not refused: the bundled imagenet1k list (OpenAI's names,
    as CLIP_benchmark ships them) repeats 'missile' and 'sunglasses'. Names are compared as CLIP's tokenizer reads
    them (lower-cased, whitespace collapsed: "Cat" and "cat", "a cat" and "a  cat" are one text to the model)."""
    from kizuna.data.tokenizer import clean_text

    names = [str(name) for name in classnames or ()]
    seen: dict[str, list[int]] = {}
    for k, name in enumerate(names):
        seen.setdefault(clean_text(name), []).append(k)
    repeated = [where for where in seen.values() if len(where) > 1]
    if repeated:
        import warnings

        def named(where):  # 'cat' for an exact repeat, 'Cat' = 'cat' for names that read alike
            return " = ".join(repr(n) for n in dict.fromkeys(names[k] for k in where))

        shown = "; ".join(f"{named(where)} (classes {', '.join(map(str, where))})" for where in repeated[:5])
        warnings.warn(f"the class names (from {source}) repeat {shown}: zero-shot gives a repeated name one "
                      "weight (CLIP's tokenizer lower-cases and collapses whitespace), so only its first class is "
                      "ever predicted", RepeatedClassNamesWarning, stacklevel=3)


def own_classnames(dataset: EvalDataset) -> list[str] | None:
    """The class names file that came with a split (in its folder or the dataset's root), if any."""
    source, root = Path(dataset.source), Path(dataset.root)
    found = dataset_file(source if source.is_dir() else root, root, CLASSNAMES_FILE)
    return read_lines(found) if found is not None else None


def _numbered(names) -> bool:
    return list(names) == [str(k) for k in range(len(names))]


def load_under_classes(load, target: Sequence[str], dataset_of=lambda loaded: loaded, of: str = "the model"):
    """``load(classnames)``'s result for a split whose labels are to index ``target`` (a model's or training
    split's classes): ``load(target)``, except for an ImageFolder whose own classnames.txt names folders that
    name no class of ``target`` (numbers, wnids): ``load(None)``, for :func:`relabel_by_name` to match by name.
    Read under ``target``, such folders were its classes by position, or refused ("the class folders do not fit
    the class names from given list") where they were fewer. ``dataset_of`` picks the EvalDataset out of what
    ``load`` returns. ``of``: whose classes ``target`` are, for the refusal of data with classes outside them."""
    try:
        loaded, error = load(list(target)), None
    except DatasetError as e:
        loaded, error = None, e
    if loaded is not None:
        # (read by its own names, a broken names file is the error to see: swallowed, the folders were read by
        # position after all)
        return load(None) if folders_name_no_class_of(dataset_of(loaded), target) else loaded
    try:
        own = load(None)
    except DatasetError:
        raise error from None
    if dataset_of(own).layout == "imagefolder" and own_classnames(dataset_of(own)):
        return own
    # read by its own names, the data has classes ``target`` lacks: said so (the error of reading it under
    # ``target`` blamed "the class names from given list", which the user never gave, and said to fix the labels)
    names = list(dataset_of(own).classnames or ())
    known = {str(name).strip().casefold() for name in target}
    unknown = [name for name in names if str(name).strip().casefold() not in known]
    if unknown:
        shown = ", ".join(map(str, unknown[:5])) + (", ..." if len(unknown) > 5 else "")
        raise DatasetError(f"the data has {len(names)} classes (named by {dataset_of(own).classnames_source}), "
                           f"{len(unknown)} of them not among {of}'s classes ({shown}); {of} has "
                           f"{len(target)}: {', '.join(map(str, list(target)[:10]))}"
                           f"{', ...' if len(target) > 10 else ''}. Evaluate on data of those classes only, or "
                           "pass --classnames to name the data's labels otherwise") from None
    raise error


def folders_name_no_class_of(dataset: EvalDataset, target: Sequence[str]) -> bool:
    """Whether ``dataset`` is an ImageFolder with a class names file of its own whose class folders do not all
    name one of ``target``'s classes (numbers, wnids): read under ``target``, folder k was its class k by
    position; read without it, the split's own file names the folders, and :func:`relabel_by_name` then matches
    those names to ``target``'s."""
    if dataset.layout != "imagefolder" or not own_classnames(dataset):
        return False
    index = _ClassNameIndex(target)
    return any(index.get(key.split("/")[0]) is None for key in dataset.index.keys if "/" in key)


def relabel_by_name(dataset: EvalDataset, target: Sequence[str], own: Sequence[str] | None = None,
                    own_source: str = "") -> bool:
    """Make a split's numbered labels (.cls, a CSV of indices), read under ``target`` (a model's or a training
    split's classes), index ``target`` through the split's own class names file, matched by name. Read as
    ``target``'s numbers, every label was another class where the two files order the classes differently (a
    trainer on an ImageFolder's sorted names, validation shards numbered otherwise). Labels read by name (an
    ImageFolder, a CSV of names) index the names they were read under. Returns whether it relabelled: not where
    either side has no names (numbers "0".."n-1"), nor where the orders agree (a second call, a split read under
    ``target``).

    ``own``: the names the split's labels index now, in their order, whatever the layout (a --classnames file
    given for the data: the labels of a model's evaluation were scored as if they indexed the model's classes);
    ``own_source`` names them in errors."""
    given = own is not None
    if given:
        own_source = own_source or "the class names given"
    elif dataset.labels_override is not None:
        # labelled by name when loaded (an ImageFolder's folders, a CSV of names), or relabelled here already: the
        # labels index the names they were read under, not the class names file beside them (a CSV of names read
        # under ``target`` was mapped a second time by that file, every label to another class: 55.7% -> 1.3%)
        own, own_source = list(dataset.classnames), f"its class names ({dataset.classnames_source})"
    else:
        own, own_source = own_classnames(dataset), f"its {CLASSNAMES_FILE}"
    if not own or _numbered(own) or _numbered(target):
        return False
    where = _ClassNameIndex(target)
    # a name written alike at the same position is that class: by name alone, a list that repeats one (ImageNet's
    # "missile" and "sunglasses") sent the later class's images to the first, merging two classes of equal lists
    positions = [k if k < len(target) and _folder_class_name(str(name)) == _folder_class_name(str(target[k]))
                 else where.get(name) for k, name in enumerate(own)]
    if positions == list(range(len(own))):  # the same order (its classes, or the first of them): nothing to map
        dataset.classnames = list(target)
        return False
    missing = [name for name, k in zip(own, positions) if k is None]
    taken = Counter(k for k in positions if k is not None)
    if not missing and any(n > 1 for n in taken.values()):  # a repeated name elsewhere: two classes became one
        twice = sorted({str(own[i]) for i, k in enumerate(positions) if taken[k] > 1})
        raise DatasetError(f"{dataset.source}: {own_source} repeats {', '.join(twice[:5])} at other positions "
                           "than the model's or training split's classes, so a label cannot be matched to one class by "
                           "name; " + ("name each class once" if given else
                                       "pass --classnames FILE to say which class each label number is"))
    if missing:
        named_labels = not given and dataset.labels_override is not None  # folders or CSV names: no numbers
        shown = ", ".join(map(str, list(target)[:5])) + (", ..." if len(target) > 5 else "")
        raise DatasetError(f"{dataset.source}: class(es) {', '.join(missing[:5])} of {own_source} are not "
                           f"among the model's or training split's classes ({shown}); "
                           + ("name them as the model's classes are named (its head predicts only those)" if given else
                              "the model cannot score a class it was not trained on: leave those images out"
                              if named_labels else "pass --classnames FILE to say which class each label number is"))
    base = np.asarray(dataset.labels_override if dataset.labels_override is not None else dataset.index.labels)
    largest = int(base[dataset.positions].max(initial=-1))  # of the samples evaluated (max_samples keeps fewer)
    if largest >= len(own):
        raise DatasetError(f"{dataset.source}: a label is {largest}, beyond the {len(own)} classes {own_source} "
                           "names")
    mapping = np.array(positions, dtype=np.int64)
    dataset.labels_override = np.where(base >= 0, mapping[np.clip(base, 0, len(own) - 1)], -1)
    dataset.classnames = list(target)
    return True


def _require(task: str | None) -> str:
    return {"classification": "label", "retrieval": "caption"}.get(task or "", "any")


def dataset_file(data: Path, root: Path, name: str) -> Path | None:
    """A file that comes with a dataset (classnames.txt, the templates): the split folder's ``data`` (a folder),
    else the dataset root's; None when neither has one."""
    for folder in dict.fromkeys([data, root]):
        found = file_in(folder, name)
        if found is not None:
            return found
    return None


def file_in(folder: Path, name: str) -> Path | None:
    """``folder / name``, else the one file whose name is ``name`` in another case (``Classnames.txt``, as a
    dataset made on macOS or Windows may name it, where it is found as classnames.txt: here it was left out
    without a word, and zero-shot prompted the folder names); None where there is none."""
    if (folder / name).is_file():
        return folder / name
    try:  # names first, a stat for those that match only: a stat of every file (100,000 images beside a CSV)
        # made each lookup, five of them a dataset, take longer than reading the CSV
        alike = [n for n in os.listdir(folder) if n.casefold() == name.casefold()]
        found = _named([n for n in alike if (Path(folder) / n).is_file()], name)
    except OSError:
        return None
    return Path(folder) / found if found else None


def _read_classnames_file(spec, dataset_name: str | None = None) -> list[str]:
    """A --classnames file's names: one per line, or a .json list (or CLIP_benchmark's object keyed by dataset
    name, picked by ``dataset_name``). A folder was "not found", and for a CSV dataset a missing file an
    "[Errno 2]" naming no flag; a pipe (<(...)) is read as --labels' and --templates' are."""
    p = Path(spec)
    if p.is_dir():
        raise DatasetError(f"class names file {p} is a folder; give a file with one class name per line")
    if not is_file_argument(p):
        raise DatasetError(f"class names file {p} not found")
    if p.suffix.lower() == ".json":
        names = json_names(p, dataset_name, "class names")
        for k, n in enumerate(names):
            if not isinstance(n, str) or not n.strip():
                raise DatasetError(f"{p}: class names must be non-empty strings, got {n!r} (item {k + 1})")
        return [n.strip() for n in names]
    return read_lines(p)


def _resolve_classnames(spec, data: Path, root: Path, name: str, folder_classes, layout,
                        named: bool = False, csv_source: str | None = None) -> tuple[list[str], str]:
    """``named``: the dataset name was given (``dataset_name=``), not taken from a folder's name. ``csv_source``:
    where a CSV's label values took their class names from (:func:`_index_csv`)."""
    if spec is not None:
        if isinstance(spec, (list, tuple)):
            out, src = list(spec), "given list"
        else:
            out, src = _read_classnames_file(spec, name), str(spec)
        if not out:
            raise DatasetError(f"no class names in {src}")
        return out, src
    f = dataset_file(data, root, CLASSNAMES_FILE)
    if f is not None:
        out = read_lines(f, bundled_classnames(name))
        if not out:
            raise DatasetError(f"{f} is empty: it needs one class name per line, in label order")
        return out, str(f)
    if layout == "csv" and folder_classes:
        return folder_classes, csv_source or "CSV label values (sorted)"
    bundled = bundled_classnames(name)
    if bundled is not None and (folder_classes is None or _bundled_fits_folders(bundled, folder_classes, named)):
        return bundled, f"bundled CLIP_benchmark classnames[{name!r}]"
    if folder_classes:
        if bundled is not None and named:  # the list asked for, set aside without a word (--dataset-name imagenet1k
            # on 3 wnid folders of ImageNet-A prompted "a photo of a n01498041")
            warnings.warn(f"--dataset-name {name}: its bundled list of {len(bundled)} class names does not fit the "
                          f"{len(folder_classes)} class folders ({', '.join(folder_classes[:3])}"
                          f"{', ...' if len(folder_classes) > 3 else ''}), whose names are the class names; a "
                          f"{CLASSNAMES_FILE} naming them in folder order (or --classnames FILE) gives them words",
                          stacklevel=3)
        return folder_classes, "folder names"
    raise NoClassNamesError(
        f"no class names for dataset {name!r}: expected {root / CLASSNAMES_FILE} (one class name per line, "
        f"in label order, line k = class index k). Create that file, pass classnames=[...] / "
        f"--classnames FILE, or --dataset-name KEY to use a bundled CLIP_benchmark list "
        f"(e.g. {', '.join(sorted(_asset_json('en_classnames.json'))[:6])}, cifar10, ...)")


def _resolve_templates(spec, data: Path, root: Path, name: str) -> tuple[list[str], str]:
    if spec is not None:
        return read_templates(spec, name), (str(spec) if not isinstance(spec, (list, tuple)) else "given list")
    f = dataset_file(data, root, TEMPLATES_FILE)
    if f is not None:
        return read_templates(f), str(f)
    bundled = bundled_templates(name)
    if bundled is not None:
        return bundled, f"bundled CLIP_benchmark templates[{name!r}]"
    return list(DEFAULT_TEMPLATES), "default"


def _check_labels(ds: EvalDataset) -> None:
    labels = ds.labels
    n = len(ds.classnames)
    bad = np.flatnonzero(labels >= n)
    if len(bad):
        k = int(bad[0])
        raise DatasetError(
            f"class index {int(labels[k])} of {ds.where(k)} is out of range: the dataset has {n} class names "
            f"(from {ds.classnames_source}), so indices must be 0..{n - 1}"
            + (f"; {len(bad)} samples are affected" if len(bad) > 1 else "")
            + ". Fix the label or the class names file.")


def _index_csv(path: Path, task, image_column, label_column, caption_column, classnames, root, name, cache_dir,
               named: bool = False):
    """-> (index, task, labels_override, class names the label column's names index or None, their source)."""
    with open_table(path, DatasetError) as f:
        head = f.readline()
        sep = "\t" if "\t" in head or path.suffix.lower() == ".tsv" else ","
        f.seek(0)
        reader = table_reader(f, sep, path, DatasetError)
        cols = reader.fieldnames or []
        if image_column not in cols:
            raise DatasetError(f"{path}: no image column {image_column!r}; columns are {cols} (name yours with "
                               "--image-column)")
        if task is None:
            task = "classification" if label_column in cols else "retrieval" if caption_column in cols else None
        if task is None:
            raise DatasetError(f"{path}: needs a label column {label_column!r} (classification) or a caption "
                               f"column {caption_column!r} (retrieval); columns are {cols}")
        values = [row.get(label_column, "") for row in reader] if task == "classification" else []
    if task == "retrieval":
        index = build_index(str(path), require="caption", image_column=image_column,
                            caption_column=caption_column, sep=sep)
        return group_rows_by_image(index), task, None, None, None  # one sample per image, all its captions
    if label_column not in cols:
        raise DatasetError(f"{path}: no label column {label_column!r}; columns are {cols} (name yours with "
                           "--label-column)")
    # Class indices when most values are whole numbers ("3.0" too: pandas writes an int column holding a NaN
    # as floats); then the rest are bad_label skips. One odd value switched the whole column to class names,
    # and --dataset-name's classes were ignored.
    given = [(row, v.strip()) for row, v in enumerate(values, start=2) if v and v.strip()]  # row 1: the header
    indices = [(row, v) for row, v in given if parse_label(v.removeprefix("-")) >= 0]
    if given and len(indices) * 2 > len(given):
        index = build_index(str(path), require="label", image_column=image_column, label_column=label_column,
                            caption_column=caption_column, sep=sep)
        return index, task, None, None, None
    # Class names in the label column: index with the names as "captions", then map them.
    index = build_index(str(path), require="image", image_column=image_column, caption_column=label_column, sep=sep)
    names = list(classnames) if isinstance(classnames, (list, tuple)) else \
        _read_classnames_file(classnames, name) if classnames else None
    own_file = file_in(root, CLASSNAMES_FILE)
    if names is None and own_file is not None:
        names = read_lines(own_file)
    if names is None:
        if indices:  # names and indices in one column: which ones the column means is not for us to guess
            row, value = indices[0]
            raise DatasetError(f"{path}: label column {label_column!r} mixes class names and class indices "
                               f"({len(indices)} of {len(given)} values are indices, e.g. {value!r} in row {row}); "
                               "write every label one way")
        # in NFC, as folder names and names files are: a CSV written on macOS from file names holds "café" as
        # "cafe" + an accent, which was another class than "café", or no class of a names file
        values = sorted({_nfc(c[0]) for c in index.captions if c})
        names, source, pos = values, "CSV label values (sorted)", {n: k for k, n in enumerate(values)}
        bundled = bundled_classnames(name) if named else None
        by_name = _ClassNameIndex(bundled or ())
        if values and all(v in by_name for v in values):
            # the dataset was named (--dataset-name) and every label is one of its classes: its list, by name (the
            # sorted values of a split lacking a class shifted the rest onto others, scored over fewer classes)
            names, source = bundled, f"bundled CLIP_benchmark classnames[{name!r}]"
            pos = {v: by_name.get(v) for v in values}
    else:
        source = "given list" if isinstance(classnames, (list, tuple)) else str(classnames or own_file)
        pos = {}
        for k, n in enumerate(names):
            pos.setdefault(_nfc(n), k)
    labels = np.full(len(index), -1, dtype=np.int64)
    for i, caps in enumerate(index.captions):
        if not caps:
            continue
        if _nfc(caps[0]) not in pos:
            raise DatasetError(f"class {caps[0]!r} of {index.where(i)} is not one of the {len(names)} class names "
                               f"({', '.join(names[:8])}{', ...' if len(names) > 8 else ''})")
        labels[i] = pos[_nfc(caps[0])]
    index.captions = [()] * len(index)
    return index, task, labels, names, source
