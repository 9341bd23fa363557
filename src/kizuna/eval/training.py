"""Evaluation during training: flat metric names for the trainer's log.

    metrics = evaluate_for_training(model, tokenizer, preprocess, "/data/cifar10", "/data/flickr8k",
                                    max_samples=1000)
    # {"zeroshot/top1": 0.41, "zeroshot/top5": ..., "zeroshot/mean_per_class_recall": ...,
    #  "retrieval/image_to_text_R@1": ..., "retrieval/text_to_image_R@10": ...,
    #  "retrieval/image_to_text_median_rank": ..., ...}

Runs on one process, or sharded over every rank when ``torch.distributed`` is initialised (call it
on *all* ranks: they take part in the feature all-gathers and all return the same dict). With ``datasets`` (a
dict the caller keeps, as a trainer does for its run) the datasets are indexed once and reused; class
embeddings are recomputed only when the text tower's weights changed since the last call.
"""
from __future__ import annotations

import os
import warnings

from .classification import evaluate_zeroshot
from .datasets import EvalDataset, load_dataset
from .encode import NonFiniteFeatures, eval_mode
from .retrieval import evaluate_retrieval

__all__ = ["evaluate_for_training"]

def _dataset(path: str, task: str, split: str | None, max_samples: int, datasets: dict | None) -> EvalDataset:
    """The dataset, from ``datasets`` where it was loaded before. Kept per caller, not per process: a second run
    in one process (a notebook) was scored on the first run's names after classnames.txt had changed."""
    key = (os.path.abspath(os.path.expanduser(str(path))), task, split, int(max_samples or 0))
    ds = datasets.get(key) if datasets is not None else None
    if ds is None:
        ds = load_dataset(path, split=split, task=task, max_samples=max_samples)
        if datasets is not None:
            datasets[key] = ds
    return ds


def evaluate_for_training(model, tokenizer, preprocess, zeroshot_dir: str | None, retrieval_dir: str | None,
                          max_samples: int = 0, split: str | None = None, batch_size: int = 64, device=None,
                          progress: bool = False, num_workers: int = 0,
                          datasets: dict | None = None) -> dict[str, float]:
    """Zero-shot classification and/or retrieval metrics (fractions, ranks 1-based) with flat names.

    ``split=None``: the dataset's ``test`` split, else ``val``/``validation`` (whichever exists), else
    the folder itself. ``max_samples``: first N images of each dataset (0 = all). ``datasets``: a dict that
    keeps the loaded datasets between calls (None: each call loads them)."""
    model = getattr(model, "module", model)
    out: dict[str, float] = {}
    common = dict(transform=preprocess, batch_size=batch_size, device=device, progress=progress,
                  num_workers=num_workers)
    # each module's own mode restored after: model.train(was) put a caller's frozen tower in train mode too
    with eval_mode(model):
        for kind, folder in (("zeroshot", zeroshot_dir), ("retrieval", retrieval_dir)):
            if not folder:
                continue
            try:
                if kind == "zeroshot":
                    ds = _dataset(folder, "classification", split, max_samples, datasets)
                    r = evaluate_zeroshot(model, tokenizer, ds, **common)
                    out["zeroshot/top1"] = r.metrics["acc1"]
                    top5 = r.metrics.get("acc5", float("nan"))
                    if top5 == top5:  # NaN with fewer than 5 classes: left out of the log, as no best/ could pick it
                        out["zeroshot/top5"] = top5
                    out["zeroshot/mean_per_class_recall"] = r.metrics["mean_per_class_recall"]
                else:
                    ds = _dataset(folder, "retrieval", split, max_samples, datasets)
                    r = evaluate_retrieval(model, tokenizer, ds, **common)
                    out.update({k: r.metrics[k.removeprefix("retrieval/")] for k in _MAIN_KEYS["retrieval"]})
            except NonFiniteFeatures as e:  # a diverging run: its metrics are NaN (never best/), and the run goes on
                warnings.warn(str(e), stacklevel=2)
                out.update({k: float("nan") for k in _MAIN_KEYS[kind]})
                continue
            if r.skipped:
                out[f"{kind}/skipped"] = float(r.skipped.total)
    return out


_MAIN_KEYS = {"zeroshot": ("zeroshot/top1", "zeroshot/mean_per_class_recall"),
              "retrieval": tuple(f"retrieval/{d}_{m}" for d in ("image_to_text", "text_to_image")
                                 for m in ("R@1", "R@5", "R@10", "median_rank"))}
