"""How what a ViT learns changes over a run: the analysis of every checkpoint a training run kept.

The ViT paper's Fig. 7 (right) is of a converged model. Whether its findings appear at a small scale
is partly a question of *when*: a single model cannot tell "not learned yet" from "not learned at
all". This report measures, for each ``OUT/checkpoints/step_*`` of a run, the per-layer mean
attention distance (over the same images), the position embeddings' row/column score and the
validation accuracy stored with the checkpoint, and draws them against the training step.

  kizuna analyze over-training runs/c10-long --images ../shared/data/cifar10/test --max-images 64 --out fig/
"""
from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Sequence

import torch

from kizuna.models.checkpoint import follow_latest

from .attention import grid_mean_pairwise_distance
from .figures import plot_over_training
from .position import row_column_score
from .report import (_position_similarity, _write, attention_distance_per_head, load_images, load_target,
                     path_list, read_extra)

__all__ = ["find_checkpoints", "over_training_report"]

_STEP = re.compile(r"^step_(\d+)$")


def find_checkpoints(run: str | Path) -> list[tuple[int, Path]]:
    """(step, folder) of every kept checkpoint of a run folder (``RUN/checkpoints/step_*``, or a
    ``checkpoints`` folder itself), in step order."""
    run = Path(run)
    folder = run / "checkpoints" if (run / "checkpoints").is_dir() else run
    latest = follow_latest(folder / "latest")
    found = sorted((int(m.group(1)), p) for p in folder.iterdir()
                   if p.is_dir() and (m := _STEP.match(p.name))) if folder.is_dir() else []
    if not found:
        raise FileNotFoundError(f"{run}: no checkpoints (expected {folder}/step_*); train with --save-every N "
                                "and --keep-last large enough to keep the steps to compare")
    # steps after the one `latest` names are an abandoned branch's (a run resumed from an earlier step_N keeps
    # them): they were plotted as this run's, with the other branch's accuracies
    if latest != folder / "latest" and (m := _STEP.match(latest.name)):
        # in a run that is training now (its folder's lock held), those saved before `latest` was last written: it
        # swaps its new step_N in, then names it in `latest`, so a step newer than the pointer can be a save in
        # progress (called an abandoned branch). Not in a run at rest: a copy in name order (`latest` first, as
        # many download tools write) makes every step look newer than the pointer
        from kizuna.train.checkpointing import run_lock_holder

        import importlib.util

        locks = importlib.util.find_spec("fcntl") is not None  # (none on Windows: any run may be live, as before)
        live = not locks or (folder.name == "checkpoints" and run_lock_holder(folder.parent) is not None)
        in_progress = (lambda p: live and not _older(p, folder / "latest"))  # noqa: E731
        later = [p.name for step, p in found if step > int(m.group(1)) and not in_progress(p)]
        if later:
            warnings.warn(f"{folder}: {', '.join(later)} come after latest ({latest.name}): an abandoned branch of "
                          "a run resumed from an earlier step; left out", stacklevel=2)
            found = [(step, p) for step, p in found if p.name not in later]
    return found


def _older(path: Path, than: Path) -> bool:
    """Whether ``path`` was last changed no later than ``than`` (one gone meanwhile: not older, it is no branch)."""
    try:
        return path.stat().st_mtime <= than.stat().st_mtime
    except OSError:
        return False


def over_training_report(run: str | Path, image_specs: Sequence[str], out: str | Path, max_images: int = 32,
                         device: str = "cpu", metric: str = "val_top1", progress: bool = True) -> dict:
    """-> over_training.png / over_training.json: per checkpoint, the mean attention distance of every
    layer (mean, min and max over heads), the position row/column ratio and ``metric`` (when the
    checkpoint was saved with it; null otherwise). A ``metric`` that no checkpoint has while they have
    others (a CLIP run saves e.g. ``zeroshot/top1``, not ``val_top1``) is a ValueError naming those."""
    from kizuna.eval.encode import progress_bar  # (no tqdm object without a bar: see there)

    image_specs = path_list(image_specs)  # one folder: recorded as "/ t m p ..." in the JSON
    out = Path(out)
    checkpoints = find_checkpoints(run)
    # checked before any model is loaded: a wrong metric name gave a report with no accuracy at all
    saved = [read_extra(path).get("metrics") or {} for _, path in checkpoints]
    if not any(metric in m for m in saved):
        others = sorted({k for m in saved for k in m})
        if others:
            raise ValueError(f"{run}: no checkpoint was saved with the metric {metric!r}; they have: "
                             f"{', '.join(others)} (pass one of these with --metric)")
    images = grid = px = None
    rows = []
    for (step, path), metrics in progress_bar(list(zip(checkpoints, saved)), desc="checkpoints", unit="ckpt",
                                              enabled=progress):
        try:
            target = load_target(str(path), device=device)
        except Exception:
            if path.exists():
                raise
            # the run is still training and pruned it (--keep-last) since the folders were listed: the report
            # goes on without it (it died part-way with "no such checkpoint ... not a preset name")
            import warnings

            warnings.warn(f"{path} was removed while this report ran (a run still training prunes its older "
                          "checkpoints: --keep-last); left out", UserWarning, stacklevel=2)
            continue
        if images is None:  # one image set for all: the run's preprocessing is the same throughout
            images, _ = load_images(image_specs, target.preprocess, max_images)
        per_head, step_grid, step_px = attention_distance_per_head(target, images, progress)
        if grid is not None and (step_grid, step_px) != (grid, px):
            raise ValueError(f"{path}: patch grid {step_grid} x {step_px} px differs from the run's first "
                             f"checkpoint ({grid} x {px} px); compare checkpoints of one run")
        grid, px = step_grid, step_px
        per_layer_mean = per_head.mean(dim=1)
        rows.append({"step": step, "checkpoint": str(path), "per_layer_mean": per_layer_mean,
                     "per_layer_min": per_head.amin(dim=1), "per_layer_max": per_head.amax(dim=1),
                     "depth_slope": _slope(per_layer_mean),
                     # the position table's own grid (as positions_report): a hybrid's token grid need
                     # not be it (a stride-4 ResNet stem at 30 px gives 8x8 tokens; its 7x7 table is
                     # resampled in the forward pass)
                     "row_column_ratio": row_column_score(_position_similarity(target),
                                                          target.vit.cfg.grid)["ratio"],
                     metric: metrics.get(metric)})
    if not rows:  # every checkpoint pruned while the report ran: it failed on a None grid
        raise ValueError(f"{run}: every checkpoint listed ({len(checkpoints)}) was removed while this report ran "
                         "(a run still training prunes its older ones: --keep-last); run it again, or when the "
                         "run has ended")
    uniform = grid_mean_pairwise_distance(grid, px)
    steps = [r["step"] for r in rows]
    per_layer = torch.stack([r["per_layer_mean"] for r in rows])  # [checkpoints, layers]
    plot_over_training(steps, per_layer, uniform, out / "over_training.png",
                       row_column_ratio=[r["row_column_ratio"] for r in rows],
                       metric=[r[metric] for r in rows], metric_name=metric,
                       title=f"{Path(os.path.abspath(run)).name}: what the ViT learns over training "
                             f"({len(images)} images, {grid[0]}x{grid[1]} patches of {px} px)")
    return _write(out, "over_training", {
        "run": str(run), "images_source": " ".join(map(str, image_specs)), "num_images": len(images),
        "grid": list(grid), "pixels_per_patch": px, "uniform_reference": uniform, "metric": metric,
        "checkpoints": rows, "figure": "over_training.png",
    })


def _slope(per_layer: torch.Tensor) -> float:
    """Least-squares slope of mean attention distance against layer index, in pixels per layer: the
    ViT paper's finding (b) is a positive slope (local low layers, global high ones)."""
    if len(per_layer) < 2:
        return float("nan")
    y = per_layer.double()
    x = torch.arange(len(y), dtype=torch.float64)
    x = x - x.mean()
    return float((x * (y - y.mean())).sum() / (x * x).sum())
