"""Figures at extreme inputs (stop 42): one logged point, 80-character class names, large position grids, forty
runs side by side, 1,499 classes. Each figure is captured as it is saved and its parts are checked."""
import json

import numpy as np
import pytest

import kizuna.analysis.figures as figures
import kizuna.eval.classification as classification
import kizuna.models.checkpoint as checkpoint
import kizuna.train.report as report

LONG = "a photograph, seen at dusk from the north bank, of the rare and particularly photogenic {}"


@pytest.fixture
def saved(monkeypatch):
    """The figures saved, in order (and still written, through the real save_figure)."""
    figs, real = [], checkpoint.save_figure

    def keep(fig, path, **kw):
        figs.append(fig)
        return real(fig, path, **kw)

    for module in (checkpoint, report, classification):
        monkeypatch.setattr(module, "save_figure", keep)
    return figs


def _whole(ticks) -> bool:
    return all(float(t).is_integer() for t in ticks)


def test_a_run_of_one_logged_step_draws_its_point_on_whole_steps(tmp_path, saved):
    """A one-point line draws nothing: the loss panel was empty, train_top1 was in the legend only, and the
    step axis read 1.900..2.100."""
    (tmp_path / "metrics.jsonl").write_text(
        json.dumps({"kind": "train", "step": 2, "loss": 1.5, "train_top1": 0.625}) + "\n"
        + json.dumps({"kind": "eval", "step": 2, "val_top1": 0.5}) + "\n")
    report.plot_curves(tmp_path)
    left, right = saved[-1].axes[:2]
    assert left.lines[0].get_marker() == "o"
    assert any(line.get_label() == "train_top1" and line.get_marker() == "o" for line in right.lines)
    for ax in (left, right):
        assert _whole(ax.get_xticks())
    report.plot_loss([{"step": 1, "loss": 2.0}], tmp_path / "loss.png")
    ax = saved[-1].axes[0]
    assert ax.lines[0].get_marker() == "o" and _whole(ax.get_xticks())


def test_long_class_names_leave_the_confusion_matrix_its_room(tmp_path, saved):
    names = [LONG.format(animal) for animal in ("heron", "otter")]
    classification.plot_confusion(np.array([[3, 1], [2, 2]]), names, tmp_path / "cm.png", title="two classes")
    ax = saved[-1].axes[0]
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert all(len(line) <= 30 for label in labels for line in label.split("\n"))
    assert all(label.count("\n") <= 1 for label in labels) and labels[0] != labels[1]
    box = ax.get_window_extent()  # the matrix keeps most of the figure (it was ~50 px of 790)
    assert box.width > 0.3 * saved[-1].bbox.width


def test_a_binned_matrix_says_how_many_classes_a_block_holds(tmp_path, saved):
    classification.plot_confusion(np.eye(1499, dtype=np.int64), [str(i) for i in range(1499)], tmp_path / "cm.png")
    assert "in blocks of about 1.5 consecutive classes" in saved[-1].axes[0].get_xlabel()


def test_a_large_position_grid_gets_a_pixel_per_mosaic_pixel(tmp_path, saved):
    g = 37
    sim = np.random.default_rng(0).uniform(-1, 1, (g * g, g, g))
    figures.plot_position_similarity(sim, g, tmp_path / "pos.png")
    fig = saved[-1]
    mosaic = g * g + g - 1
    box = fig.axes[0].get_window_extent()  # in pixels at the figure's dpi
    assert min(box.width, box.height) >= mosaic  # "nearest" dropped every other row of tiles below that


def test_forty_runs_side_by_side_keep_their_plot_and_legend(tmp_path, saved):
    runs = [{"label": f"runs/vit-s4-frac0.25-seed{i}", "eval_steps": [10, 20], "eval": [0.3, 0.4 + i / 100],
             "train_steps": [10, 20], "train_top1": [0.5, 0.6]} for i in range(40)]
    figures.plot_runs({"": runs}, tmp_path / "runs.png")
    fig = saved[-1]
    ax = fig.axes[0]
    assert ax.get_window_extent().height > 0.3 * fig.bbox.height
    figures.plot_runs({"": runs[:2]}, tmp_path / "two.png")
    assert saved[-1].get_figheight() < fig.get_figheight()
