"""Figures for model inspection (ViT paper Fig. 6/7, CLIP-style prediction panels).

Everything is drawn on :class:`matplotlib.figure.Figure` objects rendered with the Agg
canvas: pyplot is never imported, so no global backend is switched, no window opens and
nothing leaks between calls. Every ``plot_*`` function writes a PNG (parent folders are
created) and returns its path as a :class:`pathlib.Path`.

Inputs are plain tensors / arrays, e.g. from :mod:`kizuna.analysis.attention`,
:mod:`kizuna.analysis.position` and :mod:`kizuna.analysis.filters`.
"""

from __future__ import annotations

import math
import os
import textwrap
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .attention import grid_mean_pairwise_distance, upsample_map

__all__ = [
    "plot_filter_components",
    "plot_position_similarity",
    "plot_attention_distance",
    "plot_over_training",
    "plot_attention_overlay",
    "plot_prediction_panel",
]

DPI = 120
MAX_MOSAIC_DPI = 600  # a 64x64 grid's position mosaic (4,159 px) at most ~3,800 px wide
_TRUE_COLOR = "#2ca02c"
_OTHER_COLOR = "#7f9fbf"


def _np(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.dtype in (torch.bfloat16, torch.float16):
            x = x.float()
        return x.numpy()
    return np.asarray(x)


def _to_image(image: Any) -> np.ndarray:
    """PIL image / HxWx3 / HxW / CxHxW (tensor or array) -> float HxWx3 in [0, 1]."""
    if hasattr(image, "convert") and hasattr(image, "size"):  # PIL.Image
        from kizuna.data.transforms import to_rgb

        arr = np.asarray(to_rgb(image))  # as the model saw it: convert("RGB") drew transparency black
    else:
        arr = _np(image)
        if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3):
            arr = np.moveaxis(arr, 0, -1)  # CHW -> HWC
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    if arr.ndim != 3 or arr.shape[-1] not in (3, 4):
        raise ValueError(f"image must be HxWx3, HxW or CxHxW, got shape {arr.shape}")
    arr = arr[..., :3]
    if arr.dtype == np.uint8:
        out = arr.astype(np.float32) / 255.0
    else:
        out = arr.astype(np.float32)
        if out.size and out.max() > 1.0 + 1e-6:  # 0..255 floats
            out = out / 255.0
    return np.clip(out, 0.0, 1.0)


def _finite_max(values: Any, default: float = 0.0) -> float:
    """Largest finite value (``default`` when there is none): a NaN/Inf value (a diverged model, a
    metric saved as NaN) is drawn as a gap and must not set the axis limits, which cannot be NaN."""
    arr = np.asarray([np.nan if v is None else v for v in np.ravel(_np(values))], dtype=np.float64)
    arr = arr[np.isfinite(arr)]
    return float(arr.max()) if arr.size else default


def _save(fig: Figure, path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    from kizuna.models.checkpoint import save_figure

    save_figure(fig, p, dpi=fig.dpi, format="png", facecolor="white")  # (in place, Ctrl-C left a cut-off PNG)
    return p


# --------------------------------------------------------------------------- filters


def plot_filter_components(
    components: Any,
    path: str | os.PathLike[str],
    explained_variance: Any | None = None,
    ncols: int = 7,
    title: str = "Principal components of the patch-embedding filters",
) -> Path:
    """Grid of PCA components ``[k, C, P, P]`` (ViT Fig. 7 left; 28 comps -> 4 x 7).

    Each component is min-max scaled on its own (the sign and scale of a principal
    component are arbitrary), shown as RGB for ``C == 3``, greyscale for ``C == 1`` and as
    the channel mean otherwise. ``explained_variance`` (``[k]`` ratios from
    :func:`~kizuna.analysis.filters.patch_filter_pca`) adds a percentage under each tile.
    """
    comps = _np(components).astype(np.float64)
    if comps.ndim != 4:
        raise ValueError(f"components must be [k, C, P, P], got shape {comps.shape}")
    k, C = comps.shape[:2]
    evr = None if explained_variance is None else _np(explained_variance).astype(float)
    ncols = max(1, min(ncols, k))
    nrows = math.ceil(k / ncols)
    fig = Figure(figsize=(1.25 * ncols + 0.4, 1.35 * nrows + 0.9), dpi=DPI, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if i >= k:
            ax.set_axis_off()
            continue
        c = comps[i]
        lo, hi = c.min(), c.max()
        c = (c - lo) / (hi - lo) if hi > lo else np.full_like(c, 0.5)
        if C == 3:
            ax.imshow(np.moveaxis(c, 0, -1), interpolation="nearest")
        else:
            ax.imshow(c.mean(axis=0), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        label = f"PC {i + 1}"
        if evr is not None and i < len(evr):
            label += f" ({100 * evr[i]:.1f}%)"
        ax.set_xlabel(label, fontsize=8)
    sub = "RGB" if C == 3 else ("greyscale" if C == 1 else f"mean of {C} channels")
    if evr is not None:
        sub += f"; first {k} explain {100 * float(np.sum(evr[:k])):.1f}% of the variance"
    fig.suptitle(f"{title}\n({sub}, each component min-max scaled)", fontsize=10)
    return _save(fig, path)


# --------------------------------------------------------------------------- position


def plot_position_similarity(
    sim: Any,
    grid: int | Sequence[int],
    path: str | os.PathLike[str],
    title: str = "Position embedding similarity",
    vmin: float | None = -1.0,
    vmax: float | None = 1.0,
    cmap: str = "viridis",
) -> Path:
    """ViT Fig. 7 (centre): one small heatmap per patch position.

    ``sim`` is ``[h*w, h, w]`` from :func:`~kizuna.analysis.position.position_similarity`.
    The tile at (row ``r``, column ``c``) shows the cosine similarity of that patch's
    position embedding with every other patch's. Tiles are drawn as one mosaic (fast even
    for 14 x 14 or larger grids) separated by thin white gaps, with one shared colour bar.
    ``vmin``/``vmax`` default to the full cosine range ``[-1, 1]``; pass ``None`` to fit
    the data.
    """
    h, w = (grid, grid) if isinstance(grid, int) else (int(grid[0]), int(grid[1]))
    s = _np(sim).astype(np.float64)
    if s.shape == (h * w, h * w):
        s = s.reshape(h * w, h, w)
    if s.shape != (h * w, h, w):
        raise ValueError(f"sim must be [{h * w}, {h}, {w}], got shape {s.shape}")
    gap = 1 if max(h, w) > 1 else 0
    H, W = h * h + (h - 1) * gap, w * w + (w - 1) * gap
    mosaic = np.full((H, W), np.nan)
    for i in range(h * w):
        r, c = divmod(i, w)
        y0, x0 = r * (h + gap), c * (w + gap)
        mosaic[y0 : y0 + h, x0 : x0 + w] = s[i]
    cm = colormaps[cmap].with_extremes(bad="white")
    side, aspect = 6.4, W / H  # the mosaic fits a side x side box; margins for labels
    # at least 4 x 3 in: a 1x8 grid's mosaic is one tile high, and a figure sized to it (about 1 in) cut off
    # its title and axis labels
    figsize = (max(4.0, side * min(1.0, aspect) + 1.6), max(3.0, side * min(1.0, 1.0 / aspect) + 0.9))
    # a screen pixel or more per mosaic pixel (the axes take ~80% of the side): from a 27x27 grid on, "nearest"
    # dropped every other row of tiles, with their white gaps and one-pixel self-similarity peaks, unevenly
    dpi = min(MAX_MOSAIC_DPI, max(DPI, math.ceil(max(H, W) / (0.8 * side))))
    fig = Figure(figsize=figsize, dpi=dpi, layout="constrained")
    ax = fig.add_subplot()
    im = ax.imshow(mosaic, cmap=cm, vmin=vmin, vmax=vmax, interpolation="nearest")
    step_r = max(1, math.ceil(h / 16))
    step_c = max(1, math.ceil(w / 16))
    ax.set_yticks([r * (h + gap) + (h - 1) / 2 for r in range(0, h, step_r)])
    ax.set_yticklabels([str(r + 1) for r in range(0, h, step_r)])
    ax.set_xticks([c * (w + gap) + (w - 1) / 2 for c in range(0, w, step_c)])
    ax.set_xticklabels([str(c + 1) for c in range(0, w, step_c)])
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_xlabel("Input patch column")
    ax.set_ylabel("Input patch row")
    # over the whole figure (the axes of a tall grid sit left of the colour bar), wrapped to its width
    fig.suptitle(textwrap.fill(title, int(figsize[0] * 8)))
    cb = fig.colorbar(im, ax=ax, shrink=0.8)
    cb.set_label("Cosine similarity")
    return _save(fig, path)


# --------------------------------------------------------------------------- attention


def plot_attention_distance(
    distances: Sequence[Any] | Any,
    patch_size: int,
    image_size: int | Sequence[int],
    path: str | os.PathLike[str],
    title: str = "Mean attention distance per head",
    show_uniform: bool = True,
    grid: Sequence[int] | None = None,
    stem: bool = False,
) -> Path:
    """ViT Fig. 7 (right): x = network depth (layer), y = mean attention distance
    (pixels), one dot per head, coloured by head index.

    ``distances`` is a list (one per layer) of ``[heads]`` tensors, e.g. from
    :func:`~kizuna.analysis.attention.attention_distance_by_layer`, or an ``[L, H]``
    array. With ``show_uniform`` a dashed line marks what uniform attention over the token
    ``grid`` would give (default ``image_size // patch_size``; pass the model's own grid when
    the image is not a multiple of the patch, as a padded ResNet stem rounds it up).
    ``patch_size`` is the pixels between neighbouring tokens; with ``stem`` (a hybrid, whose
    tokens are stem features, not patches) the title says "px per token" instead of "patch".
    """
    if isinstance(distances, (torch.Tensor, np.ndarray)):
        arr = _np(distances)
        layers = [arr[i].reshape(-1) for i in range(arr.shape[0])] if arr.ndim == 2 else [arr.reshape(-1)]
    else:
        layers = [_np(d).astype(np.float64).reshape(-1) for d in distances]
    if not layers:
        raise ValueError("distances is empty")
    ih, iw = (image_size, image_size) if isinstance(image_size, int) else map(int, image_size)
    grid = (ih // patch_size, iw // patch_size) if grid is None else (int(grid[0]), int(grid[1]))
    max_heads = max(len(d) for d in layers)
    cmap = colormaps["tab20" if max_heads > 10 else "tab10"]
    fig = Figure(figsize=(6.4 if max_heads <= 16 else 5.6, 4.4), dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    for h in range(max_heads):
        xs = [li + 1 for li, d in enumerate(layers) if h < len(d)]
        ys = [d[h] for d in layers if h < len(d)]
        ax.scatter(xs, ys, s=22, color=cmap(h % cmap.N), label=f"Head {h + 1}", alpha=0.9,
                   edgecolors="none")
    ymax = max(_finite_max(d) for d in layers)  # a NaN head (a diverged model) has no dot
    if show_uniform:
        u = grid_mean_pairwise_distance(grid, patch_size)
        ax.axhline(u, color="0.4", ls="--", lw=1, label="uniform attention")
        ymax = max(ymax, u)
    ax.set_ylim(0, max(ymax * 1.08, patch_size))
    L = len(layers)
    ax.set_xlim(0.4, L + 0.6)
    step = max(1, math.ceil(L / 16))
    ax.set_xticks(range(1, L + 1, step))
    ax.set_xlabel("Network depth (layer)")
    ax.set_ylabel("Mean attention distance (pixels)")
    tokens = f"{patch_size} px per token" if stem else f"patch {patch_size}"
    ax.set_title(f"{title}\n(image {ih}x{iw}, {grid[0]}x{grid[1]} tokens, {tokens})", fontsize=10)
    ax.grid(alpha=0.3)
    if max_heads <= 16:
        ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=7, frameon=False)
    elif show_uniform:  # too many heads to list, but the dashed line still needs saying what it is
        ax.legend(handles=[ax.get_lines()[-1]], loc="best", fontsize=7, frameon=False)
    return _save(fig, path)


def plot_over_training(
    steps: Sequence[int],
    per_layer: Any,
    uniform: float,
    path: str | os.PathLike[str],
    row_column_ratio: Sequence[float] | None = None,
    metric: Sequence[float | None] | None = None,
    metric_name: str = "val_top1",
    title: str = "What the ViT learns over training",
) -> Path:
    """Left: mean attention distance of every layer (one line each, light = first layer) against the
    training step, with the uniform-attention level dashed. Right (when given): the position
    embeddings' row/column ratio against the step, and ``metric`` on a second axis."""
    arr = _np(per_layer).astype(np.float64)
    if arr.ndim != 2 or arr.shape[0] != len(steps) or not len(steps):
        raise ValueError(f"per_layer must be [checkpoints, layers] with one row per step, got {arr.shape}")
    L = arr.shape[1]
    right = row_column_ratio is not None
    fig = Figure(figsize=(11.5 if right else 6.4, 4.4), dpi=DPI, layout="constrained")
    axes = fig.subplots(1, 2 if right else 1, squeeze=False)[0]
    ax = axes[0]
    cmap = colormaps["viridis"]
    for li in range(L):
        ax.plot(steps, arr[:, li], marker="o", ms=3, lw=1.4, color=cmap(0.9 - 0.8 * li / max(L - 1, 1)),
                label=f"Layer {li + 1}")
    ax.axhline(uniform, color="0.4", ls="--", lw=1, label="uniform attention")
    ax.set_ylim(0, max(_finite_max(arr), uniform) * 1.08)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))  # steps are whole numbers (not 2.85..3.15)
    ax.set_xlabel("Training step")
    ax.set_ylabel("Mean attention distance (pixels)")
    ax.set_title("Mean attention distance per layer", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2 if L > 8 else 1, loc="lower left", frameon=False)
    if right:
        ax = axes[1]
        ax.plot(steps, list(row_column_ratio), marker="s", ms=3, color="#d62728", label="row/column ratio")
        ax.axhline(1.0, color="#d62728", ls=":", lw=1)
        ratios = [v for v in row_column_ratio if v is not None and math.isfinite(v)]  # none for a 1xN grid
        ax.set_ylim(min([0.9, *ratios]), max([1.1, *ratios]) * 1.05)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        ax.set_xlabel("Training step")
        ax.set_ylabel("Position embeddings: row/column ratio", color="#d62728")
        ax.set_title("Position embeddings and accuracy", fontsize=10)
        ax.grid(alpha=0.3)
        if metric is not None and any(m is not None for m in metric):
            twin = ax.twinx()
            # a missing metric is left out; a NaN one (a diverged checkpoint) stays as a gap in the line,
            # and neither sets the limits
            pts = [(s, m) for s, m in zip(steps, metric) if m is not None]
            twin.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, color="#1f77b4")
            twin.set_ylim(0, _finite_max([p[1] for p in pts]) * 1.1 or 1.0)
            twin.set_ylabel(metric_name, color="#1f77b4")
    fig.suptitle(title, fontsize=11)
    return _save(fig, path)


def plot_attention_overlay(
    image: Any,
    maps: Mapping[str, Any],
    path: str | os.PathLike[str],
    alpha: float = 0.55,
    cmap: str = "jet",
    normalize: bool = True,
    title: str | None = None,
    patch_size: int | None = None,
) -> Path:
    """The input image followed by one overlay per map (e.g. rollout, last-layer heads).

    Each ``[h, w]`` map is upsampled bilinearly to the pixels it covers, min-max scaled to
    ``[0, 1]`` when ``normalize`` (so maps of different scales are comparable), and drawn
    over the image with a colour bar. With ``patch_size`` (pixels per map cell) a map covers
    the top-left ``h * patch_size`` x ``w * patch_size`` pixels (cropped to the image) and
    the rest, which a grid rounded down never saw, is left uncovered; without it, the whole image.
    """
    img = _to_image(image)
    H, W = img.shape[:2]
    n = 1 + len(maps)
    panel = 3.0
    fig = Figure(figsize=(panel * n + 0.5 * len(maps), panel + 0.7), dpi=DPI, layout="constrained")
    axes = fig.subplots(1, n, squeeze=False)[0]
    axes[0].imshow(img)
    axes[0].set_title("Input", fontsize=10)
    axes[0].set_axis_off()
    for ax, (name, m) in zip(axes[1:], maps.items()):
        t = torch.as_tensor(_np(m), dtype=torch.float32)
        while t.dim() > 2 and t.shape[0] == 1:
            t = t[0]
        if t.dim() != 2:
            raise ValueError(f"map {name!r} must be [h, w], got shape {tuple(t.shape)}")
        up = _overlay_map(t, (H, W), patch_size)
        finite = up[np.isfinite(up)]  # an all-NaN map (a diverged model, warned about by its report) is blank,
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)  # not numpy's warning
        if normalize:
            up = (up - lo) / (hi - lo) if hi > lo else np.where(np.isnan(up), np.nan, 0.0)
            vmin, vmax = 0.0, 1.0
        else:
            vmin, vmax = lo, hi
        ax.imshow(img)
        im = ax.imshow(up, cmap=cmap, alpha=alpha, vmin=vmin, vmax=vmax)
        # wrapped and smaller: a long title ran into the previous panel's colour bar
        ax.set_title(textwrap.fill(str(name), 26), fontsize=10)
        ax.set_axis_off()
        cb = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
        cb.set_label("relative attention" if normalize else "attention", fontsize=8)
        cb.ax.tick_params(labelsize=7)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def _overlay_map(m: torch.Tensor, image_hw: tuple[int, int], patch_size: int | None) -> np.ndarray:
    """A ``[h, w]`` map -> ``[H, W]`` over the image: stretched over all of it without ``patch_size``; else
    over the top-left ``h * patch_size`` x ``w * patch_size`` pixels the grid covers (cropped to the image)
    and NaN (transparent) elsewhere. Stretched, patch (0, 3) of 8 px at 36 px was drawn at columns 27-35,
    not 24-31."""
    H, W = image_hw
    if patch_size is None:
        return upsample_map(m, (H, W)).numpy()
    cover = upsample_map(m, (m.shape[-2] * patch_size, m.shape[-1] * patch_size)).numpy()[:H, :W]
    up = np.full((H, W), np.nan, dtype=np.float32)
    up[: cover.shape[0], : cover.shape[1]] = cover
    return up


# --------------------------------------------------------------------------- predictions


def fit_lines(text: str, width: int, lines: int) -> str:
    """``text`` on at most ``lines`` lines of about ``width`` characters, wrapped at spaces and after "_"
    (ImageNet-style names are one long word: great_white_shark_...). Longer text loses its middle, not its
    end: the last line is "…" and the text's end, so labels that share their first words (a northern
    cardinal bird, male / ..., female) stay told apart."""
    text = text.strip()
    if len(text) <= width:
        return text
    # a tab after each "_" lets textwrap break there; the tabs are taken out of the lines again
    wrapped = [line.replace("\t", "") for line in textwrap.wrap(text.replace("\t", " ").replace("_", "_\t"), width,
                                                                 expand_tabs=False, replace_whitespace=False)]
    if len(wrapped) <= lines:
        return "\n".join(wrapped)
    tail = text[len(text) - (width - 1):]
    cut = max(tail.find(" ") + 1, tail.find("_") + 1)
    if 0 < cut <= len(tail) // 2:  # start the end at a word, when that keeps most of it
        tail = tail[cut:]
    return "\n".join(wrapped[: lines - 1] + ["…" + tail])


def plot_prediction_panel(
    image: Any,
    labels: Sequence[str],
    probs: Sequence[float] | Any,
    path: str | os.PathLike[str],
    true_label: str | None = None,
    top_k: int = 5,
    title: str | None = None,
    scores: Sequence[float] | Any | None = None,
) -> Path:
    """CLIP-paper style panel: the image on the left, a horizontal bar chart of the top-k
    class probabilities on the right (highest on top), the true label's bar in green.

    ``labels``/``probs`` need not be sorted or truncated; the ``top_k`` most probable are
    shown. When ``true_label`` is given its rank is reported (also when it is not among
    the bars). ``scores`` (the logits), where given, rank the classes instead of ``probs``:
    SigLIP's sigmoids saturate to 1.0 in float32, and classes tied there came out in label order.
    """
    p = _np(probs).astype(np.float64).reshape(-1)
    labels = [str(s) for s in labels]
    if len(labels) != len(p):
        raise ValueError(f"{len(labels)} labels but {len(p)} probabilities")
    if not labels:
        raise ValueError("labels is empty")
    rank_by = p if scores is None else _np(scores).astype(np.float64).reshape(-1)
    if len(rank_by) != len(p):
        raise ValueError(f"{len(p)} probabilities but {len(rank_by)} scores")
    order = np.argsort(-rank_by, kind="stable")
    top = order[: max(1, top_k)]
    img = _to_image(image)
    # a taller figure for many bars: a label may take two lines
    fig = Figure(figsize=(8.0, max(3.4, 1.0 + 0.5 * len(top))), dpi=DPI, layout="constrained")
    gs = fig.add_gridspec(1, 2, width_ratios=[1.0, 1.35])
    ax_img = fig.add_subplot(gs[0, 0])
    ax_img.imshow(img)
    ax_img.set_axis_off()
    if true_label is not None:  # a title wider than the image ran off the figure's left edge
        ax_img.set_title(fit_lines(f"true: {true_label}", 28, 3), fontsize=10)
    ax = fig.add_subplot(gs[0, 1])
    ys = np.arange(len(top))[::-1]  # highest probability on top
    names = [labels[i] for i in top]
    vals = [p[i] for i in top]
    colors = [_TRUE_COLOR if (true_label is not None and n == true_label) else _OTHER_COLOR for n in names]
    ax.barh(ys, vals, color=colors, height=0.7)
    for y, v in zip(ys, vals):
        ax.text(min(v, 1.0) + 0.01, y, f"{100 * v:.1f}%", va="center", fontsize=8)
    ax.set_yticks(ys)
    ax.set_yticklabels([fit_lines(n, 28, 2) for n in names], fontsize=9)
    for tick, c in zip(ax.get_yticklabels(), colors):
        if c == _TRUE_COLOR:
            tick.set_color(_TRUE_COLOR)
            tick.set_fontweight("bold")
    ax.set_xlim(0, 1.12)
    ax.set_xlabel("Probability")
    ax.spines[["top", "right"]].set_visible(False)
    head = fit_lines(title or f"Top-{len(top)} predictions", 40, 2)
    if true_label is not None:
        if true_label in labels:
            rank = next(r for r, i in enumerate(order, 1) if labels[i] == true_label)
            note = f"(true label rank {rank})"
        else:
            note = "(true label not among the classes)"
        # on a line of its own when long: wide tick labels narrow the panel, and its title ran off the figure
        head += (" " if len(head.split("\n")[-1]) + len(note) < 40 else "\n") + note
    ax.set_title(head, fontsize=10)
    return _save(fig, path)


# --------------------------------------------------------------------------- runs side by side


def plot_runs(
    panels: Mapping[str, Sequence[Mapping[str, Any]]],
    path: str | os.PathLike[str],
    metric_name: str = "val_top1",
    title: str = "Runs side by side",
) -> Path:
    """One panel per key of ``panels`` (its title; "" for a single untitled panel), each with its runs'
    validation metric against the step (solid, markers) and training accuracy (dashed, same colour).
    A run is a mapping with ``label``, ``eval_steps``, ``eval`` and optionally ``train_steps``/``train_top1``
    and ``colour_key`` (runs with the same key share a colour in every panel, e.g. the same model)."""
    if not panels or not any(panels.values()):
        raise ValueError("plot_runs needs at least one run")
    n = len(panels)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    # the legend goes under each panel: its rows (two names a row past 4 runs, a name up to two lines) add height,
    # or 30 runs squeezed the plot to an inch and covered its axis label, and longer names collapsed it away
    most = max(len(runs) for runs in panels.values())
    legend_rows = math.ceil(most / (2 if most > 4 else 1)) * 1.6
    fig = Figure(figsize=(5.2 * cols, (4.0 + 0.13 * legend_rows) * rows + 0.4), dpi=DPI, layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    colours = colormaps["tab10"]
    # each pass through the ten colours changes the marker (and the training curve's dashes): an 11th run
    # shared colour, line and marker with the first. Validation stays solid and training dashed.
    passes = [("o", "--"), ("s", ":"), ("^", "-."), ("D", (0, (6, 1, 1, 1, 1, 1)))]
    shown = [v for runs in panels.values() for r in runs for v in [*r["eval"], *(r.get("train_top1") or [])]
             if v is not None and math.isfinite(v)]  # a diverged run's NaN is a gap in its curve
    top = max(shown, default=1.0)
    keys = list(dict.fromkeys(r["colour_key"] for runs in panels.values() for r in runs if "colour_key" in r))
    for ax, (panel, runs) in zip(axes, panels.items()):
        for i, r in enumerate(runs):
            k = keys.index(r["colour_key"]) if "colour_key" in r else i
            marker, dashes = passes[k // 10 % len(passes)]
            c = colours(k % 10)
            ax.plot(r["eval_steps"], r["eval"], marker=marker, ms=3.5, lw=1.6, color=c,
                    label=f"{fit_lines(r['label'], 40, 2)} (final {r['eval'][-1]:.3f})")
            if r.get("train_top1"):  # (a marker where it is one point: a line through one point draws nothing)
                lone = {"marker": marker, "ms": 3} if len(r["train_top1"]) == 1 else {}
                ax.plot(r["train_steps"], r["train_top1"], ls=dashes, lw=1.0, alpha=0.7, color=c, **lone)
        ax.set_ylim(0, min(1.02, top * 1.1) if top <= 1.0 else top * 1.1)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        ax.set_xlabel("Training step")
        dashed = any(r.get("train_top1") for r in runs)
        ax.set_ylabel(f"{metric_name} (solid), train accuracy (dashed)" if dashed else metric_name)
        if panel:
            ax.set_title(panel, fontsize=10)
        ax.grid(alpha=0.3)
        # below the axes, not in them: long run names squashed the curves or ran off the figure
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2 if len(runs) > 4 else 1,
                  frameon=False)
    for ax in axes[n:]:
        ax.set_axis_off()
    fig.suptitle(title, fontsize=11)
    return _save(fig, path)
