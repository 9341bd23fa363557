"""Zero-shot classification with prompt ensembles (CLIP paper, Sec. 3.1.4).

    ds = load_dataset("/data/cifar10", split="test")
    res = evaluate_zeroshot(model, tokenizer, ds)            # ClassificationResult
    res.metrics    # {"acc1", "acc5", "mean_per_class_recall"} as fractions (CLIP_benchmark names);
                   # acc5 is NaN (JSON null) for fewer than 5 classes, as CLIP_benchmark reports it
    print(res.table()); res.plot_confusion("confusion.png")

    res = evaluate_classifier(vit, ds)                       # a trained classifier's own head, same result type

A class's weight is the normalised mean over the templates of the normalised text embeddings of
``template.format(c=classname)``; an image is assigned the class with the highest cosine similarity.
Ranking uses the cosine similarities themselves (the logit scale and SigLIP bias do not change the
order); ties go to the lower class index (stable sort), deterministically.

Class embeddings are cached in memory, keyed by the text tower's identity, weights version (any
in-place update, e.g. an optimizer step, invalidates it) and config, the tokenizer's config, the class
names and the templates; ``cache_dir`` adds an on-disk ``.pt`` cache keyed by a SHA-256 of the text tower's
weights and config. A tokenizer without ``to_config`` (a plain function) is never cached: nothing says what
it does. The texts are encoded in eval mode whatever mode the model is in, so the mode is no part of the key.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from kizuna.data.sources import SkipCounter
from kizuna.models.checkpoint import atomic_write, first_line, load_tensors, save_figure
from kizuna.models.layers import watched
from kizuna.models.losses import similarity

from .encode import (as_tensor, check_finite, check_no_zero_rows, content_hash, encode_images, encode_texts_sharded,
                     gather_object, is_count, is_main, model_fingerprint, module_structure, row_mask)
from .zeroshot import fill_template, same_prompts, text_list

__all__ = [
    "ClassificationResult", "ZeroShotResult", "class_embeddings", "classify_features", "classify_scores",
    "clear_class_cache", "evaluate_classifier", "evaluate_zeroshot", "plot_confusion", "rank_classes",
]

_MEMORY_CACHE: "OrderedDict[tuple, torch.Tensor]" = OrderedDict()
_MEMORY_CACHE_SIZE = 32
_FILE_NAMES: "OrderedDict[tuple, Path]" = OrderedDict()  # (memory key, cache folder) -> the cache file's path
_MEMORY_CACHE_LOCK = threading.Lock()
# the key each text tower's weights were last remembered under, by the module's id and what they were computed for
# (classes, prompts, tokenizer, config): a tower that has changed since
# (a training run's, between its evaluations) drops its old entry, which nothing can hit again; kept, 32 of them
# (C x D each: 40 MB for 5,000 classes at D=1024) stayed in a training process for nothing
_LAST_KEY_OF: "OrderedDict[tuple, tuple]" = OrderedDict()
# 2: the text tower's config is part of the key; 3: so are the filled prompts (a fix to filling "{{x}}" in a
# template left the files keyed on the raw templates serving the old prompts' embeddings)
_CACHE_VERSION = 4  # 4: the prompts' token ids too (a tokenizer fix served the old ids' embeddings)


def _token_ids_digest(tokenizer, prompts: list[str]) -> bytes:
    """The prompts' token ids, hashed, for the cache file's name: a change to how a text is tokenized (a fix to a
    tokenizer's cleaning, its surrogate pairs) keeps the tokenizer's config and every weight, and the files written
    before it were served as the new ids' embeddings."""
    from .zeroshot import PROMPTS_A_CHUNK

    digest, rows, widths = hashlib.sha256(), 0, set()
    for start in range(0, len(prompts), PROMPTS_A_CHUNK):  # (all at once: GBs for ImageNet-21k's prompts)
        try:
            ids = tokenizer(prompts[start:start + PROMPTS_A_CHUNK])
        except ValueError:  # (a prompt it rejects: said where the prompts are encoded)
            return b"rejected"
        if not isinstance(ids, torch.Tensor):  # (a tokenizer of another kind: its config keys it, as before)
            return b"other"
        digest.update(ids.cpu().numpy().tobytes())
        rows += ids.shape[0]
        widths.add(tuple(ids.shape[1:]))
    # the ids and their shape hashed as they were in one piece (the files written before keep their names)
    digest.update(repr((rows, *(widths.pop() if len(widths) == 1 else ("mixed",)))).encode())
    return digest.digest()


def clear_class_cache() -> None:
    with _MEMORY_CACHE_LOCK:
        _MEMORY_CACHE.clear()
        _FILE_NAMES.clear()
        _LAST_KEY_OF.clear()


def _tokenizer_id(tokenizer) -> str | None:
    """The tokenizer's config as JSON; None for one without a config. Its ``id()`` was no identity: tokenizers
    made one after another (lambdas, partials) reuse the address, and later ones got the first's weights."""
    try:
        return json.dumps(tokenizer.to_config(), sort_keys=True, default=str)
    except Exception:  # noqa: BLE001 - any tokenizer without a config: nothing to key the cache on
        return None


def _text_module(model):
    return getattr(model, "text", model)


def _text_config(model) -> str:
    """The text tower's config as JSON: its weights alone do not say how it computes (an OpenAI-layout file
    loaded with QuickGELU and with act="gelu" has one state dict, and shared one cache file)."""
    cfg = getattr(getattr(model, "cfg", None), "text", None) or getattr(_text_module(model), "cfg", None)
    to_dict = getattr(cfg, "to_dict", None)
    return json.dumps(to_dict() if to_dict else cfg, sort_keys=True, default=str)


def _autocast_state() -> str:
    """The autocast in force ("cpu:torch.bfloat16"; "" for none): the class weights computed under it differ
    from fp32's (by ~3e-3), and the cache handed them to later fp32 calls, and to fp32 processes from disk."""
    on = []
    for device in ("cpu", "cuda"):
        try:
            if torch.is_autocast_enabled(device):
                on.append(f"{device}:{torch.get_autocast_dtype(device)}")
        except (TypeError, AttributeError, RuntimeError):  # torch < 2.4: the device-less spellings
            enabled = torch.is_autocast_cpu_enabled() if device == "cpu" else torch.is_autocast_enabled()
            if enabled:
                dtype = torch.get_autocast_cpu_dtype() if device == "cpu" else torch.get_autocast_gpu_dtype()
                on.append(f"{device}:{dtype}")
    return ",".join(on)


def _warn_names_tokenized_alike(tokenizer, classnames: list[str], templates: list) -> None:
    """Class names of different text that the model's tokenizer reads alike in every prompt (cut at its context
    length; MiniLM's vocabulary maps 12 of 16 one-character Chinese animal names, and emoji, to one unknown
    token) get one weight: only the first is ever predicted, and `kizuna eval` said nothing (`kizuna zeroshot`
    refuses them). Names that differ only as CLIP's text cleaning reads them are warned of when a dataset loads
    (kizuna.eval.datasets); a tokenizing pass, where the prompts are encoded anyway."""
    from kizuna.data.tokenizer import clean_text

    from .datasets import RepeatedClassNamesWarning

    if any(callable(t) for t in templates):
        return
    try:
        groups = [g for g in same_prompts(tokenizer, classnames, templates)
                  if len({clean_text(classnames[k]) for k in g}) > 1]
    except ValueError:  # a prompt the tokenizer rejects: the encoding below says which, in words of its own
        return
    if groups:
        import warnings

        def short(name: str) -> str:  # names told apart past the context length: their ends show it
            return repr(name if len(name) <= 60 else f"{name[:28]}...{name[-28:]}")

        shown = "; ".join(" = ".join(short(classnames[k]) for k in g) + f" (classes {', '.join(map(str, g))})"
                          for g in groups[:5])
        warnings.warn(f"the class names {shown}{'; ...' if len(groups) > 5 else ''} are one text to the model's "
                      "tokenizer in every prompt (cut at its context length, or unknown characters), so they get one "
                      "zero-shot weight and only the first of each is ever predicted: rename them, or use a model "
                      "whose tokenizer tells them apart", RepeatedClassNamesWarning, stacklevel=3)


def class_embeddings(model, tokenizer, classnames: Sequence[str], templates: Sequence[str], batch_size: int = 256,
                     device=None, cache: bool = True, cache_dir: str | os.PathLike | None = None,
                     progress: bool = False, encode_text_fn=None) -> torch.Tensor:
    """Zero-shot class weights ``[C, D]`` (float32, CPU): batched (and sharded under torchrun) text
    encoding of every ``template x class`` prompt, averaged over templates. Equals
    :func:`kizuna.eval.zeroshot.build_classifier`."""
    classnames, templates = text_list(classnames, "class names"), text_list(templates, "templates")
    if not classnames:
        raise ValueError("no class names given")
    if not templates:
        raise ValueError("no prompt templates given")
    tokenizer_id, text_module = _tokenizer_id(tokenizer), _text_module(model)
    # (hooks on the text tower, a probe ablating an MLP say, change what it computes and no key sees them)
    cacheable = (cache and encode_text_fn is None and tokenizer_id is not None
                 and not any(callable(t) for t in templates) and not watched(text_module))
    key = path = None
    if cacheable:
        text_config, autocast = _text_config(model), _autocast_state()
        key = (model_fingerprint(text_module), text_config, tokenizer_id, tuple(classnames), tuple(templates),
               autocast)
        if cache_dir is not None:  # (without autocast, the files of earlier versions keep their names)
            folder = Path(cache_dir).expanduser()  # (as the index cache's: a suite's "~/cache" was a folder named
            # "~" in the working directory). The file's name hashes every weight (0.2 s for ViT-B/32's text tower):
            # kept with the key, so that a suite's repeated hits (zero-shot, probe, robustness, typographic on one
            # dataset) do not hash the tower again each time
            with _MEMORY_CACHE_LOCK:
                path = _FILE_NAMES.get((key, folder))
            if path is None:
                prompts = [fill_template(t, c) for c in classnames for t in templates]
                digest = hashlib.sha256(json.dumps([_CACHE_VERSION, text_config, tokenizer_id, classnames,
                                                    templates, prompts] + ([autocast] if autocast else [])).encode())
                digest.update(content_hash(text_module, extra=repr(module_structure(text_module))).encode())
                digest.update(_token_ids_digest(tokenizer, prompts))
                path = folder / f"classes-{digest.hexdigest()[:24]}.pt"
                with _MEMORY_CACHE_LOCK:
                    _FILE_NAMES[(key, folder)] = path
                    while len(_FILE_NAMES) > _MEMORY_CACHE_SIZE:
                        _FILE_NAMES.popitem(last=False)
        with _MEMORY_CACHE_LOCK:  # threads: another's eviction between get and move_to_end raised KeyError
            hit = _MEMORY_CACHE.get(key)
            if hit is not None:
                _MEMORY_CACHE.move_to_end(key)
        if hit is not None:
            if path is not None and not path.is_file():
                _save(path, hit, classnames, templates)
            return hit.clone()
    if path is not None:
        # every rank must take the same branch (the miss branch all-gathers). gather_object, not an all_reduce of
        # a CPU tensor: NCCL reduces CUDA tensors only, and every rank of a GPU run failed here
        have = all(gather_object(path.is_file()))
        if have:
            weights = _load(path, classnames, templates, getattr(getattr(model, "cfg", None), "embed_dim", None))
            # a rank that could not read it computes, which all-gathers: every rank does
            weights = weights if all(gather_object(weights is not None)) else None
            if weights is not None:
                _remember(key, weights, text_module)
                return weights.clone()
            if path.exists():  # one this process may not read, or damaged and not its to remove (another user's
                path = None  # in a shared folder): left as it is, not overwritten
    _warn_names_tokenized_alike(tokenizer, classnames, templates)
    texts = [fill_template(t, c) for c in classnames for t in templates]
    enc = encode_texts_sharded(model, tokenizer, texts, batch_size=batch_size, device=device, progress=progress,
                               desc="encoding class prompts", encode_fn=encode_text_fn)
    if not bool(enc.valid.all()):
        bad = texts[int((~enc.valid).nonzero()[0])]
        raise ValueError(f"the tokenizer rejected the prompt {bad!r} (empty class name or template?)")
    emb = enc.features.view(len(classnames), len(templates), -1).mean(dim=1)
    weights = F.normalize(emb, dim=-1)
    if key is not None:
        _remember(key, weights, text_module)
    if path is not None:
        _save(path, weights, classnames, templates)
    return weights


def _load(path: Path, classnames: list[str], templates: list[str], width: int | None) -> torch.Tensor | None:
    """A cache file's weights, or None for one that cannot be used. A damaged one (empty or cut off by a full
    disk or a kill: it crashed the evaluation with a bare EOFError naming no file) or one holding other weights
    is warned about and removed (by rank 0), and the class embeddings are computed again. One that cannot be
    opened (another user's in a shared --cache-dir) is no damage: warned about and left alone. Every rank reads
    the same file, so all of them take the miss branch together."""
    import warnings

    try:
        data = load_tensors(path)  # a TorchScript archive planted in a shared cache is refused, not run
    except OSError as error:  # a PermissionError was taken for damage: another user's file was deleted
        warnings.warn(f"the class-embedding cache {path} cannot be read ({type(error).__name__}: "
                      f"{first_line(error, 200)}); the class embeddings are computed without it", RuntimeWarning,
                      stacklevel=3)
        return None
    except Exception as error:  # noqa: BLE001 - EOFError, a zip or unpickling error: a damaged file
        why = f"cannot be read ({type(error).__name__}: {first_line(error, 200)})"
        if path.is_file() and path.stat().st_size == 0:  # torch says "EOFError: " and no more
            why = "cannot be read (the file is empty (0 bytes))"
    else:
        why = _mismatch(data, classnames, templates, width)
        if why is None:
            return data["weights"].float()
    done = "removed, and the class embeddings are computed again"
    if is_main():
        try:
            path.unlink(missing_ok=True)
        except OSError as error:  # another user's, in a shared folder with the sticky bit: it ended the evaluation
            done = f"not removed ({first_line(error, 200)}); the class embeddings are computed without it"
    warnings.warn(f"the class-embedding cache {path} {why}; {done}", RuntimeWarning, stacklevel=3)
    return None


def _mismatch(data, classnames: list[str], templates: list[str], width: int | None) -> str | None:
    """Why a loaded cache file does not hold the class embeddings of ``classnames`` x ``templates`` (``width``
    wide; None: any), or None when it does. Unchecked, a [3, 7] file ended in a matmul traceback and a file of
    other classes was used silently."""
    weights = data.get("weights") if isinstance(data, dict) else None
    if not isinstance(weights, torch.Tensor) or not weights.is_floating_point():
        return "holds no class weights"
    if weights.dim() != 2 or weights.shape[0] != len(classnames) or width not in (None, weights.shape[1]):
        return f"holds weights of shape {list(weights.shape)}, not [{len(classnames)}, {width or 'D'}]"
    if data.get("classnames") != classnames or data.get("templates") != templates:
        return "holds the weights of other class names or templates"
    if not bool(torch.isfinite(weights).all()):
        return "holds weights that are not finite"
    return None


def _save(path: Path, weights: torch.Tensor, classnames, templates) -> None:
    """Rank 0 writes the cache. A cache that cannot be written is a warning, not an error: raised on rank 0
    alone it left the other ranks waiting in their next collective. torch.save on a full disk raises a
    RuntimeError ("[enforce fail at inline_container.cc ..."), not an OSError: it ended the evaluation and
    left the temp file behind. The temp file is a fresh one of mkstemp's (atomic_write): written through the
    predictable classes-<hash>.tmp<pid>, a symlink another user of a shared folder planted there had its target
    overwritten."""
    if not is_main():
        return
    record = {"weights": weights, "classnames": list(classnames), "templates": list(templates)}
    try:
        atomic_write(path, lambda tmp: torch.save(record, tmp))  # it removes the temp file when the writing fails
    except (OSError, RuntimeError) as error:
        import warnings

        why = first_line(error, 200)
        warnings.warn(f"could not write the class-embedding cache {path} ({why}); going on without it",
                      RuntimeWarning, stacklevel=2)


def _forget(computed_for: tuple) -> None:
    # not under the lock: a finalizer may run in the thread that holds it (a collection inside _remember), and
    # would wait for itself; each pop is one step under the GIL
    key = _LAST_KEY_OF.pop(computed_for, None)
    if key is not None:
        _MEMORY_CACHE.pop(key, None)


def _remember(key, weights: torch.Tensor, text_module=None) -> None:
    """``key``'s weights kept in memory; the same tower's entry for the same classes and prompts under weights it
    no longer has dropped (key[0] is the weights' fingerprint; the rest, what they were computed for)."""
    weights = weights.clone()
    with _MEMORY_CACHE_LOCK:
        if text_module is not None:
            computed_for = (id(text_module), key[1:])
            before = _LAST_KEY_OF.pop(computed_for, None)
            if before is not None and before != key:
                _MEMORY_CACHE.pop(before, None)
            elif before is None:  # gone with the tower: its key (its id, its tensors' addresses) is never met again,
                # and a service loading a model per request filled the cache with 32 entries nothing could hit
                weakref.finalize(text_module, _forget, computed_for)
            _LAST_KEY_OF[computed_for] = key
            while len(_LAST_KEY_OF) > _MEMORY_CACHE_SIZE:
                _LAST_KEY_OF.popitem(last=False)
        _MEMORY_CACHE[key] = weights
        while len(_MEMORY_CACHE) > _MEMORY_CACHE_SIZE:
            _MEMORY_CACHE.popitem(last=False)


def rank_classes(scores: torch.Tensor, k: int, chunk: int = 8192) -> torch.Tensor:
    """Top-k class indices per row, ties to the lower index (stable descending sort)."""
    k = min(k, scores.shape[1])
    out = [torch.sort(scores[i : i + chunk], dim=1, descending=True, stable=True).indices[:, :k]
           for i in range(0, scores.shape[0], chunk)]
    return torch.cat(out) if out else torch.empty(0, k, dtype=torch.long)


# ----------------------------------------------------------------------------------- results
@dataclass
class ClassificationResult:
    metrics: dict[str, float]
    classnames: list[str]
    confusion: np.ndarray  # [C, C] counts, rows = true class, columns = predicted
    predictions: torch.Tensor  # [N] top-1 class (-1 for skipped images)
    topk: torch.Tensor  # [N, k]
    labels: torch.Tensor  # [N]
    valid: torch.Tensor  # [N] bool
    keys: list[str] = field(default_factory=list)
    scores: torch.Tensor | None = None  # [N, C] cosine similarities, or a classifier's logits (keep_scores=True)
    skipped: SkipCounter = field(default_factory=SkipCounter)
    templates: list[str] = field(default_factory=list)
    dataset: str = ""
    method: str = "zero-shot"  # or "classifier": a model's own head (evaluate_classifier)

    @property
    def n(self) -> int:
        return int(self.valid.sum())

    @property
    def per_class(self) -> list[dict]:
        """Per class: images, correct, recall, precision and the class it is most often mistaken for. Sums and
        the off-diagonal argmax are taken a block of rows at a time (a Python loop over rows and columns took 4 s
        at ImageNet-21k's 21,841 classes, twice per result)."""
        cm = np.asarray(self.confusion)
        c = cm.shape[0]
        n, correct, predicted = cm.sum(axis=1), np.diagonal(cm).copy(), cm.sum(axis=0)
        confused, count = np.full(c, -1, dtype=np.int64), np.zeros(c, dtype=np.int64)
        for lo in range(0, c, 1024):
            wrong = cm[lo:lo + 1024].copy()
            rows = np.arange(wrong.shape[0])
            wrong[rows, lo + rows] = 0
            j = wrong.argmax(axis=1)
            top = wrong[rows, j]
            confused[lo:lo + len(rows)] = np.where(top > 0, j, -1)
            count[lo:lo + len(rows)] = np.where(top > 0, top, 0)
        nan = float("nan")
        return [{"class": name, "n": int(n[k]), "correct": int(correct[k]),
                 "recall": int(correct[k]) / int(n[k]) if n[k] else nan,
                 "precision": int(correct[k]) / int(predicted[k]) if predicted[k] else nan,
                 "most_confused_with": self.classnames[confused[k]] if confused[k] >= 0 else "",
                 "confused_count": int(count[k])} for k, name in enumerate(self.classnames)]

    def table(self, max_rows: int = 60) -> str:
        from kizuna.apps.common import format_table

        rows = [[r["class"], r["n"], f"{100 * r['recall']:.1f}" if r["n"] else "-",
                 f"{100 * r['precision']:.1f}" if r["precision"] == r["precision"] else "-",
                 f"{r['most_confused_with']} ({r['confused_count']})" if r["most_confused_with"] else ""]
                for r in self.per_class]
        note = ""
        if len(rows) > max_rows:  # said: a 62-class table of 60 rows re-sorted read as complete
            rows = sorted(rows, key=lambda r: float(r[2]) if r[2] != "-" else 1e9)[:max_rows]
            note = (f"\n({max_rows} of {len(self.per_class)} classes shown, lowest recall first; every class is in "
                    "the results JSON's per_class)")
        return format_table(rows, ["class", "n", "recall %", "precision %", "most confused with (count)"]) + note

    def summary(self) -> str:
        m = self.metrics
        k = next((key for key in m if key.startswith("acc") and key != "acc1"), None)
        topk = f"  top-{k[3:]} {_pct(m[k])}" if k else ""
        loss = f"  loss {m['loss']:.4f}" if "loss" in m else ""
        prompts = f", {len(self.templates)} templates" if self.method == "zero-shot" else ""
        s = (f"{self.method} {self.dataset}: top-1 {_pct(m['acc1'])}{topk}  "
             f"mean per-class recall {_pct(m['mean_per_class_recall'])}{loss}  ({self.n} images, "
             f"{len(self.classnames)} classes{prompts})")
        return s + (f"; {self.skipped.report()}" if self.skipped else "")

    def to_dict(self, with_confusion: bool = True) -> dict:
        d = {"metrics": self.metrics, "n": self.n, "num_classes": len(self.classnames),
             **({"num_templates": len(self.templates)} if self.method == "zero-shot" else {"method": self.method}),
             "skipped": self.skipped.as_dict(),
             "skip_report": self.skipped.report() if self.skipped else "",
             "per_class": self.per_class}
        if with_confusion and len(self.classnames) <= 200:
            d["confusion"] = self.confusion.tolist()
        return d

    def plot_confusion(self, path, model: str = "", **kw) -> Path:
        """``model``: who was evaluated, said in the title (two checkpoints' figures read alike)."""
        who = f"{model}: " if model else ""
        return plot_confusion(self.confusion, self.classnames, path,
                              title=f"{who}{self.dataset} {self.method}, top-1 {100 * self.metrics['acc1']:.1f}%", **kw)


ZeroShotResult = ClassificationResult  # the name it had before classifiers shared it


def _pct(v: float) -> str:
    """A fraction as a percentage; NaN (top-5 of fewer than 5 classes) as "n/a", not "nan%"."""
    return f"{100 * v:.2f}%" if v == v else "n/a"


def whole_labels(labels, name: str = "") -> np.ndarray:
    """``labels`` as int64 of shape [N] (a column [N, 1] is flattened), refused where a value is not a whole number
    (1.5 was truncated to class 1; NaN was class 0), is past int64 (1e20 wrapped to -9.2e18) or is no number, or where
    the shape is another; ``name`` begins the message."""
    where = f"{name}: " if name else ""
    y = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
    if y.ndim == 2 and y.shape[1] == 1:  # a column of labels (df[["label"]].to_numpy(), y[:, None])
        y = y[:, 0]
    elif y.ndim != 1:  # ([N, 1] had broadcast against [N] predictions: an N x N comparison, a wrong accuracy)
        raise ValueError(f"{where}labels must be one class index per sample (shape [N]), got shape {tuple(y.shape)}")
    if y.dtype.kind == "f":
        if not np.all(np.isfinite(y)) or not np.array_equal(y, np.round(y)):
            raise ValueError(f"{where}labels must be whole class indices, got values such as "
                             f"{y[~np.isfinite(y) | (y != np.round(y))][:3].tolist()}")
        if y.size and float(np.abs(y).max()) >= 2 ** 62:  # (1e20 wrapped to -9.2e18 in the int64 cast's message)
            raise ValueError(f"{where}labels must be class indices, got {np.abs(y).max():g}")
    elif y.dtype.kind not in "iub" and y.size:
        raise ValueError(f"{where}labels must be class indices (integers), got {y.dtype} values")
    return y.astype(np.int64)


def classify_features(image_features: torch.Tensor, labels, class_weights: torch.Tensor, classnames: Sequence[str],
                      valid: torch.Tensor | None = None, k: int = 5, keep_scores: bool = False,
                      keys: Sequence[str] = (), skipped: SkipCounter | None = None, templates=(),
                      dataset: str = "") -> ClassificationResult:
    """Metrics from normalised image features ``[N, D]`` and class weights ``[C, D]`` (tensors or arrays)."""
    image_features = as_tensor(image_features, "image_features")
    if image_features.dim() == 2:
        check_no_zero_rows(image_features.float(), row_mask(valid, len(image_features), "valid"), "image_features")
    scores = similarity(image_features, as_tensor(class_weights, "class_weights"))
    return classify_scores(scores, labels, classnames, valid=valid, k=k, keep_scores=keep_scores, keys=keys,
                           skipped=skipped, templates=templates, dataset=dataset)


def classify_scores(scores: torch.Tensor, labels, classnames: Sequence[str], valid: torch.Tensor | None = None,
                    k: int = 5, keep_scores: bool = False, keys: Sequence[str] = (),
                    skipped: SkipCounter | None = None, templates=(), dataset: str = "",
                    method: str = "zero-shot") -> ClassificationResult:
    """Metrics from class scores ``[N, C]`` (similarities or logits; the highest wins). For a classifier
    (``method="classifier"``) the scores are logits and the metrics add the mean cross-entropy ``loss``."""
    labels = torch.as_tensor(whole_labels(labels))
    scores = as_tensor(scores, "scores").float().cpu()  # (a GPU's scores: the confusion matrix is numpy's)
    n, c = scores.shape
    if len(labels) != n:
        raise ValueError(f"{n} rows of scores but {len(labels)} labels")
    if len(classnames) != c:  # fewer names dropped a class from the table (or failed in it), more shifted none
        raise ValueError(f"{c} classes scored but {len(classnames)} class names: pass one name per class, in the "
                         "order of the scores' columns")
    if not is_count(k):
        # k=0 ranked no class: every prediction was -1, counted as the last class
        raise ValueError(f"k must be a whole number >= 1 (the top-k accuracy reported beside top-1), got {k!r}")
    valid, keys = row_mask(valid, n, "valid"), list(keys)  # (keys read once: a generator had no len())
    if len(keys) not in (0, n):  # (stored as given: the predictions' table named other images' rows)
        raise ValueError(f"{len(keys)} keys for {n} rows of scores: give one key per row, or none")
    # NaN scores rank anywhere (a NaN row predicted class 0): a diverged model is refused, not scored
    check_finite(scores, valid, "class scores", kind="scores")
    top = rank_classes(scores, k)
    pred = top[:, 0].clone() if top.numel() else torch.full((n,), -1, dtype=torch.long)
    pred[~valid] = -1
    v = valid.nonzero().squeeze(1)
    y, p = labels[v], pred[v]
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= c):  # -1 was counted as the last class (np.add.at wraps)
        raise ValueError(f"labels must be class indices 0..{c - 1} for the {c} classes (mark rows without a label "
                         f"invalid with valid=), got values {int(y.min())}..{int(y.max())}")
    cm = np.zeros((c, c), dtype=np.int64)
    np.add.at(cm, (y.numpy(), p.numpy()), 1)
    if len(v):
        acc1 = float((p == y).double().mean())
        # CLIP_benchmark: top-k of fewer than k classes is NaN, not a trivial 100% (JSON null, "n/a" in tables)
        acc5 = float((top[v] == y[:, None]).any(dim=1).double().mean()) if k <= c else float("nan")
        per = cm.diagonal() / np.maximum(cm.sum(1), 1)
        present = cm.sum(1) > 0
        mpcr = float(per[present].mean())
    else:
        acc1 = acc5 = mpcr = float("nan")
    metrics = {"acc1": acc1, "acc5": acc5, "mean_per_class_recall": mpcr}
    if k != 5:
        topk = metrics.pop("acc5")
        if k != 1:  # (top-1 is acc1: k=1 overwrote it with itself and left no acc5 for summary())
            metrics[f"acc{k}"] = topk
    if method == "classifier":
        metrics["loss"] = float(F.cross_entropy(scores[v].detach(), y)) if len(v) else float("nan")
    return ClassificationResult(metrics, list(classnames), cm, pred, top, labels, valid, list(keys),
                                scores if keep_scores else None, skipped or SkipCounter(), list(templates), dataset,
                                method)


def refuse_one_class(dataset, task: str) -> None:
    """A dataset of one class scores 100% whatever the model (a CSV's folder read as one class): refused, for
    zero-shot, the linear probe and the robustness probe alike (the last two printed 100.00 on random weights)."""
    if len(dataset.classnames) >= 2:
        return
    tables = sorted(p.name for ext in ("*.csv", "*.tsv") for p in Path(dataset.source).glob(ext)) \
        if Path(dataset.source).is_dir() else []
    from .datasets import DatasetError  # (a ValueError: a suite words its advice in its own keys)

    raise DatasetError(f"{dataset.source}: {len(dataset.classnames)} class ({', '.join(dataset.classnames)}): "
                       f"{task} needs at least two to choose between (--classnames FILE names them all)"
                       + (f"; to read its table, pass the file ({', '.join(tables)})" if tables else ""))


def evaluate_zeroshot(model, tokenizer, dataset, *, templates: Sequence[str] | None = None, transform=None,
                      batch_size: int = 64, text_batch_size: int = 256, device=None, num_workers: int = 0,
                      progress: bool = True, cache_dir=None, keep_scores: bool = False,
                      image_features=None) -> ClassificationResult:
    """Zero-shot top-1/top-5/mean per-class recall of ``model`` on a classification
    :class:`~kizuna.eval.datasets.EvalDataset`. ``image_features`` (an
    :class:`~kizuna.eval.encode.ImageFeatures`) skips the image encoding (e.g. reused for a probe)."""
    if dataset.task != "classification":
        raise ValueError(f"{dataset.name} is a {dataset.task} dataset; zero-shot classification needs class labels")
    refuse_one_class(dataset, "zero-shot")
    model = getattr(model, "module", model)
    templates = text_list(templates, "templates") or list(dataset.templates or ("a photo of a {c}.",))
    weights = class_embeddings(model, tokenizer, dataset.classnames, templates, batch_size=text_batch_size,
                               device=device, cache_dir=cache_dir, progress=progress)
    feats = image_features or encode_images(model, dataset, transform=transform, batch_size=batch_size, device=device,
                                            num_workers=num_workers, progress=progress,
                                            desc=f"zero-shot {dataset.name}")
    skipped = SkipCounter()
    skipped.update(dataset.skips)
    skipped.update(feats.skips)
    return classify_features(feats.features, dataset.labels, weights, dataset.classnames, valid=feats.valid,
                             keep_scores=keep_scores, keys=dataset.keys, skipped=skipped, templates=templates,
                             dataset=dataset.name)


def evaluate_classifier(model, dataset, *, transform=None, batch_size: int = 128, device=None, num_workers: int = 0,
                        progress: bool = True, keep_scores: bool = False) -> ClassificationResult:
    """Top-1/top-5/mean per-class recall and loss of a classifier's own head (``model(images)`` are
    logits, e.g. a ViT from ``kizuna vit train``) on a classification
    :class:`~kizuna.eval.datasets.EvalDataset`; images that do not decode are skipped and counted. The
    dataset's labels must index the model's classes. Sharded under torchrun like the zero-shot path.
    ``transform`` defaults to the preprocessing a ViT loaded by path carries (its checkpoint's), else the
    trainer's for a model trained from scratch (mean = std = 0.5)."""
    if dataset.task != "classification":
        raise ValueError(f"{dataset.name} is a {dataset.task} dataset; a classifier needs class labels")
    model = getattr(model, "module", model)
    num_classes = getattr(getattr(model, "cfg", None), "num_classes", None)
    if not num_classes:
        # (`kizuna eval` zero-shot and linear probes take image-text models only: it pointed a ViT there)
        raise ValueError("the model has no classification head (num_classes 0): train one on the data's classes "
                         "(kizuna vit finetune MODEL --data ...); a CLIP model is evaluated with kizuna eval "
                         "zeroshot or linear-probe")
    if num_classes != len(dataset.classnames):
        raise ValueError(f"the model has {num_classes} classes but {dataset.name} has {len(dataset.classnames)}")
    if transform is None:
        from kizuna.data.transforms import Preprocess
        from kizuna.train.supervised import vit_preprocess

        # the checkpoint's own (a ViT from kizuna.create_model(path): a fine-tuned CLIP tower's mean/std), else
        # what `kizuna vit train` evaluates a model trained from scratch with
        stored = getattr(model, "preprocess_config", None)
        transform = Preprocess(**(stored if isinstance(stored, dict) else vit_preprocess(model.cfg.image_size)))
    logits = encode_images(model, dataset, transform=transform, batch_size=batch_size, device=device,
                           num_workers=num_workers, progress=progress, desc=f"classifying {dataset.name}",
                           normalize=False, encode_fn=model)
    skipped = SkipCounter()
    skipped.update(dataset.skips)
    skipped.update(logits.skips)
    return classify_scores(logits.features, dataset.labels, dataset.classnames, valid=logits.valid,
                           keep_scores=keep_scores, keys=dataset.keys, skipped=skipped, dataset=dataset.name,
                           method="classifier")


# ----------------------------------------------------------------------------------- plot
MAX_PLOTTED_CLASSES = 1000  # a confusion matrix of more classes is drawn in blocks of consecutive classes


def _summed_blocks(confusion: np.ndarray, blocks: int) -> np.ndarray:
    """``confusion`` [C, C] summed into [blocks, blocks] cells of consecutive classes (as float64), a block of rows
    at a time, so no copy of the whole matrix is made."""
    c = len(confusion)
    starts = np.linspace(0, c, blocks + 1).astype(np.int64)[:-1]
    ends = list(starts[1:]) + [c]
    return np.stack([np.add.reduceat(np.asarray(confusion[lo:hi]).sum(axis=0, dtype=np.float64), starts)
                     for lo, hi in zip(starts, ends)])


def plot_confusion(confusion: np.ndarray, classnames: Sequence[str], path, title: str = "", normalize: bool = True,
                   max_annotated: int = 25, max_ticks: int = 60) -> Path:
    """Confusion matrix as a heat map (rows: true class, normalised to recall; columns: predicted).
    Cells are annotated up to ``max_annotated`` classes; tick labels shown up to ``max_ticks``."""
    from matplotlib.figure import Figure  # no pyplot: no global backend state, nothing to close

    c = len(confusion)
    binned = c > MAX_PLOTTED_CLASSES
    # more classes than the figure has pixels (it is at most ~3,100 px wide): consecutive classes summed into
    # blocks first; a float copy of ImageNet-21k's 21,841^2 cells (and matplotlib's of it) took 40 GB
    cm = _summed_blocks(confusion, MAX_PLOTTED_CLASSES) if binned else np.asarray(confusion, dtype=np.float64)
    shown = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1) if normalize else cm
    side = float(min(max(6.0, 0.42 * c + 3.0), 28.0))
    fig = Figure(figsize=(side + 1.2, side), dpi=110)
    ax = fig.subplots()
    # blocks span their classes on the axes: the ticks count classes, not blocks (class 2500 of 3000 sat at 833)
    extent = (-0.5, c - 0.5, c - 0.5, -0.5) if binned else None
    im = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalize else None, interpolation="nearest", extent=extent)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of true class" if normalize else "count")
    if c <= max_ticks:
        from kizuna.analysis.figures import fit_lines

        fs = max(5, min(10, int(300 / max(c, 1))))
        # at most two lines of ~28 characters (the middle elided): 80-character names took the whole figure and
        # left the matrix a few pixels wide, with its title and colour-bar label cut off
        names = [fit_lines(str(n), 28, 2) for n in classnames]
        ax.set_xticks(range(c), names, rotation=60, ha="right", rotation_mode="anchor", fontsize=fs)
        ax.set_yticks(range(c), names, fontsize=fs)
    if c <= max_annotated:
        fs = max(5, min(9, int(220 / max(c, 1))))
        for i in range(c):
            for j in range(c):
                if cm[i, j]:
                    dark = shown[i, j] > (0.55 if normalize else 0.55 * shown.max())
                    ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center", fontsize=fs,
                            color="white" if dark else "black")
    block = f" (in blocks of about {c / MAX_PLOTTED_CLASSES:.1f} consecutive classes)" if binned else ""
    ax.set_xlabel(f"predicted class{block}")
    ax.set_ylabel(f"true class{block}")
    if title:
        ax.set_title(title)
    fig.set_layout_engine("tight")  # laid out as it is saved, once save_figure has made every "$" a dollar
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, path)  # (in place, Ctrl-C left a cut-off PNG)
    return path
