"""Figures that misled or crashed on unusual inputs: a diverged (NaN) model, a NaN metric, many curves,
long labels, thin patch grids."""
from __future__ import annotations

import math

import matplotlib.colors
import numpy as np
import pytest
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from PIL import Image

import kizuna.analysis.figures as F
from kizuna.analysis.attention import mean_attention_distance
from kizuna.analysis.filters import patch_filter_pca

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def drawn(monkeypatch):
    """The Figure each plot_* call of kizuna.analysis.figures saves, in order (they are still written)."""
    figs = []
    save = F._save

    def grab(fig, path):
        figs.append(fig)
        return save(fig, path)

    monkeypatch.setattr(F, "_save", grab)
    return figs


def _png(path):
    assert path.read_bytes()[:8] == PNG_MAGIC
    with Image.open(path) as im:
        return im.size


# ------------------------------------------------------------------ 1. a diverged (NaN) model
def test_nan_attention_has_nan_distance_not_zero():
    nan = torch.full((1, 2, 1 + 64, 1 + 64), float("nan"))  # a NaN model's softmax
    assert torch.isnan(mean_attention_distance(nan, (8, 8), 4, 1)).all()
    # only the head that went NaN loses its distance
    attn = torch.full((1, 2, 65, 65), 1 / 65)
    attn[0, 1, 3, 5] = float("inf")
    d = mean_attention_distance(attn, (8, 8), 4, 1)
    assert math.isfinite(d[0]) and d[0] > 10 and torch.isnan(d[1])


def test_filter_pca_of_nan_weights_is_a_clear_value_error():
    w = torch.randn(8, 3, 4, 4)
    w[2, 0, 1, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN/Inf weights"):
        patch_filter_pca(w)


def test_attention_distance_figure_of_an_all_nan_model(tmp_path):
    nan = [torch.full((4,), float("nan"))] * 3
    _png(F.plot_attention_distance(nan, 4, 32, tmp_path / "ad.png"))


# ------------------------------------------------------------------ 2. a NaN metric over training
def test_over_training_with_a_nan_metric_writes_the_figure(tmp_path, drawn):
    per_layer = np.array([[5.0, 6.0], [7.0, 8.0], [9.0, 10.0]])
    p = F.plot_over_training([1, 2, 3], per_layer, 12.0, tmp_path / "ot.png", row_column_ratio=[1.0, 1.1, 1.2],
                             metric=[0.1, float("nan"), 0.3])
    _png(p)
    twin = drawn[-1].axes[-1]
    assert twin.get_ylim() == pytest.approx((0.0, 0.33))  # from the finite values; the NaN is a gap
    # none at all finite: still a figure
    _png(F.plot_over_training([1, 2], per_layer[:2], 12.0, tmp_path / "ot2.png", row_column_ratio=[1.0, 1.1],
                              metric=[float("nan"), float("nan")]))


# ------------------------------------------------------------------ 3. compare-runs table labels
def _table(labels):
    from kizuna.analysis.runs import format_table

    runs = [{"label": lab, "final": 0.5, "best": 0.5, "best_step": 10, "final_train_top1": 0.6,
             "generalisation_gap": 0.1, "lower_is_better": False} for lab in labels]
    return format_table({"metric": "val_top1", "runs": runs, "groups": []}).splitlines()


def test_table_keeps_labels_that_differ_only_at_the_end_apart():
    stem = "vit-mu-8_c10_lr3e-4_wd0.05_bs128"  # 32 characters, longer than the old 28-character column
    rows = _table([stem + "_seed0", stem + "_seed1"])
    assert rows[1].split()[0] == stem + "_seed0" and rows[2].split()[0] == stem + "_seed1"
    # very long ones are cut in the middle: still distinct, and the columns still line up
    long = ["x" * 90 + "_seed0", "x" * 90 + "_seed1"]
    rows = _table(long)
    assert rows[1].split()[0] != rows[2].split()[0] and rows[1].split()[0].endswith("_seed0")
    assert len({len(r) for r in rows}) == 1


# ------------------------------------------------------------------ 4. more than ten curves
def _styles(lines):
    return [(tuple(np.round(matplotlib.colors.to_rgba(ln.get_color()), 3)), str(ln.get_linestyle()),
             ln.get_marker()) for ln in lines]


def test_more_than_ten_runs_get_distinct_styles(tmp_path, drawn):
    runs = [{"label": f"lr-{i}", "eval_steps": [1, 2], "eval": [0.1, 0.2], "train_steps": [1, 2],
             "train_top1": [0.2, 0.3]} for i in range(13)]
    F.plot_runs({"": runs}, tmp_path / "runs.png")
    lines = drawn[-1].axes[0].get_lines()
    val = [ln for ln in lines if ln.get_linestyle() == "-"]
    train = [ln for ln in lines if ln.get_linestyle() != "-"]
    assert len(val) == len(train) == 13
    assert len(set(_styles(val))) == 13 and len(set(_styles(train))) == 13


def test_demo_curves_with_fifteen_probes_get_distinct_styles(tmp_path, monkeypatch):
    import json

    from kizuna.train import report

    rows = [{"kind": "train", "step": s, "loss": 1.0, "train_top1": 0.5} for s in (1, 2)]
    rows += [{"kind": "eval", "step": 2, **{f"probe/p{k:02d}": 0.5 for k in range(15)}}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    figures = []
    monkeypatch.setattr(report, "_figure", lambda *a, _f=report._figure, **k: figures.append(_f(*a, **k)) or figures[-1])
    _png(report.plot_curves(tmp_path))
    lines = figures[0].axes[1].get_lines()
    assert len(lines) == 16  # 15 probes and train_top1
    assert len({s[:2] for s in _styles(lines)}) == 16  # (colour, line style): apart without the markers


# ------------------------------------------------------------------ 5. long run names in the legend
def test_runs_legend_sits_below_the_axes_with_long_names_cut_in_the_middle(tmp_path, drawn):
    names = ["2026-12-01_vit-mu4_cifar10_subset0.01_randaug2x9_mixup0.8_cutmix1.0_lr1e-3_wd0.05_seed" + s
             for s in "01"]
    runs = [{"label": n, "eval_steps": [1, 2], "eval": [0.1, 0.2]} for n in names]
    _png(F.plot_runs({"": runs}, tmp_path / "runs.png"))
    fig = drawn[-1]
    ax = fig.axes[0]
    canvas = FigureCanvasAgg(fig)
    canvas.draw()  # lays the figure out as the saved PNG
    renderer = canvas.get_renderer()
    legend = ax.get_legend().get_window_extent(renderer)
    assert legend.y1 <= ax.get_window_extent(renderer).y0  # not on top of the curves
    assert fig.bbox.contains(legend.x0, legend.y0) and fig.bbox.contains(legend.x1, legend.y1)
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert all(max(len(line) for line in t.splitlines()) <= 60 for t in texts)
    assert [t.split(" (final")[0][-5:] for t in texts] == ["seed0", "seed1"]


# ------------------------------------------------------------------ 6. thin patch grids
@pytest.mark.parametrize("grid", [(1, 8), (16, 2)])
def test_positions_figure_of_a_thin_grid_keeps_its_title(tmp_path, drawn, grid):
    from kizuna.analysis.position import position_similarity

    h, w = grid
    sim = position_similarity(torch.randn(1, 1 + h * w, 16, generator=torch.Generator().manual_seed(0)), grid, 1)
    title = f"Position embedding similarity ({h}x{w} patches)"
    width, height = _png(F.plot_position_similarity(sim, grid, tmp_path / "pos.png", title=title))
    assert width >= 3 * F.DPI and height >= 3 * F.DPI  # the 1x8 one was about 1 inch high
    fig = drawn[-1]
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    text = next(t for t in [fig._suptitle, *(ax.title for ax in fig.axes)] if t is not None and t.get_text())
    assert text.get_text().split() == title.split()
    box = text.get_window_extent(canvas.get_renderer())
    assert fig.bbox.x0 <= box.x0 and box.x1 <= fig.bbox.x1 and box.y1 <= fig.bbox.y1  # not cut off


# ------------------------------------------------------------------ 7. which model an eval figure shows
def test_robustness_plot_names_the_model_and_has_whole_severities(tmp_path, monkeypatch):
    import matplotlib.figure

    from kizuna.eval.probes import RobustnessResult

    figs = []
    save = matplotlib.figure.Figure.savefig
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", lambda self, *a, **k: figs.append(self) or save(self, *a, **k))
    rows = [{"corruption": c, "severity": s, "acc": 0.5 - 0.1 * s, "drop": 0.1 * s, "relative": 1.0}
            for c in ("noise", "blur") for s in (1, 2, 3)]
    res = RobustnessResult(clean_acc=0.6, rows=rows, dataset="cifar10")
    _png(res.plot(tmp_path / "rob.png", model="runA/best"))
    ax = figs[-1].axes[0]
    assert ax.get_title().startswith("runA/best: cifar10")
    assert all(float(t).is_integer() for t in ax.get_xticks())


# ------------------------------------------------------------------ 8. zero-shot vs probe legend and axis
def _probe_figure(tmp_path, monkeypatch, few_shot):
    import matplotlib.figure

    from kizuna.eval.linear_probe import ProbeResult, plot_zeroshot_vs_probe

    figs = []
    save = matplotlib.figure.Figure.savefig
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", lambda self, *a, **k: figs.append(self) or save(self, *a, **k))
    r = ProbeResult(metrics={"lp_acc1": 0.55}, l2=1.0, sweep=[], few_shot=few_shot, zeroshot_acc=0.45,
                    num_train=500, dataset="cifar10")
    _png(plot_zeroshot_vs_probe(r, tmp_path / "lp.png"))
    fig = figs[-1]
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return fig, canvas.get_renderer()


def test_zeroshot_vs_probe_legend_is_off_the_lines(tmp_path, monkeypatch):
    fig, renderer = _probe_figure(tmp_path, monkeypatch, {1: [0.2, 0.25], 4: [0.35, 0.4], 16: [0.5, 0.52]})
    ax = fig.axes[0]
    legend = (ax.get_legend() or fig.legends[0]).get_window_extent(renderer)
    assert not legend.overlaps(ax.get_window_extent(renderer))
    assert fig.bbox.y0 <= legend.y0


def test_zeroshot_vs_probe_without_few_shot_has_no_meaningless_x_scale(tmp_path, monkeypatch):
    fig, _ = _probe_figure(tmp_path, monkeypatch, {})
    assert len(fig.axes[0].get_xticks()) == 0
