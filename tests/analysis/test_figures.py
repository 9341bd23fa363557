import numpy as np
import pytest
import torch
from PIL import Image

from kizuna.analysis.attention import attention_rollout, cls_rollout_map
from kizuna.analysis.figures import (
    DPI,
    plot_attention_distance,
    plot_attention_overlay,
    plot_filter_components,
    plot_position_similarity,
    plot_prediction_panel,
)
from kizuna.analysis.filters import patch_filter_pca
from kizuna.analysis.position import position_similarity, sincos_2d_position_embedding

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _check_png(path, min_bytes=5_000):
    assert path.exists()
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert min_bytes < len(data) < 3_000_000
    with Image.open(path) as im:
        w, h = im.size
    assert 300 <= w <= 3000 and 200 <= h <= 3000
    return w, h


@pytest.fixture(scope="module")
def image():
    y, x = np.mgrid[0:64, 0:64]
    rgb = np.stack([x * 4, y * 4, np.full_like(x, 128)], -1).astype(np.uint8)
    return Image.fromarray(rgb)


def test_plot_filter_components(tmp_path):
    g = torch.Generator().manual_seed(0)
    comps, ratio = patch_filter_pca(torch.randn(64, 3, 4, 4, generator=g), k=14)
    out = plot_filter_components(comps, tmp_path / "sub" / "pca.png", explained_variance=ratio)
    assert out == tmp_path / "sub" / "pca.png"
    _check_png(out)
    # greyscale filters too
    comps1, _ = patch_filter_pca(torch.randn(32, 1, 4, 4, generator=g), k=5)
    _check_png(plot_filter_components(comps1, tmp_path / "pca1.png"))


def test_plot_position_similarity_dimensions(tmp_path):
    grid = (4, 4)
    sim = position_similarity(sincos_2d_position_embedding(grid, 32, num_prefix=1), grid)
    out = plot_position_similarity(sim, grid, str(tmp_path / "pos.png"))
    w, h = _check_png(out)
    # fixed size: the mosaic fits a 6.4 in box, plus 1.6 in (colour bar) x 0.9 in (title)
    assert (w, h) == (round(8.0 * DPI), round(7.3 * DPI))
    # non-square grids keep square tiles: a wide grid gives a wide, shorter figure
    wide = plot_position_similarity(
        position_similarity(torch.randn(1 + 3 * 6, 16), (3, 6)), (3, 6), tmp_path / "wide.png"
    )
    w2, h2 = _check_png(wide)
    assert w2 == w and h2 < h


def test_plot_attention_distance(tmp_path):
    g = torch.Generator().manual_seed(0)
    dists = [torch.rand(4, generator=g) * 20 * (i + 1) for i in range(6)]
    _check_png(plot_attention_distance(dists, patch_size=16, image_size=96, path=tmp_path / "d.png"))
    _check_png(plot_attention_distance(torch.stack(dists), 16, (96, 128), tmp_path / "d2.png"))


def test_plot_attention_overlay(tmp_path, image):
    h = w = 4
    T = 1 + h * w
    att = [torch.randn(1, 2, T, T, generator=torch.Generator().manual_seed(s)).softmax(-1) for s in range(2)]
    rollout = cls_rollout_map(attention_rollout(att), (h, w))[0]
    maps = {"rollout": rollout, "head 1": att[-1][0, 0, 0, 1:].reshape(h, w)}
    _check_png(plot_attention_overlay(image, maps, tmp_path / "ov.png"))
    # array and CHW-tensor inputs
    arr = np.array(image)
    _check_png(plot_attention_overlay(arr, {"m": rollout.numpy()}, tmp_path / "ov2.png"))
    chw = torch.from_numpy(arr).permute(2, 0, 1).float() / 255
    _check_png(plot_attention_overlay(chw, {"m": rollout[None]}, tmp_path / "ov3.png"))


def test_plot_prediction_panel(tmp_path, image):
    labels = ["cat", "dog", "a very long label that will need to be shortened somewhere", "car", "tree", "boat"]
    probs = [0.05, 0.6, 0.1, 0.2, 0.03, 0.02]
    _check_png(plot_prediction_panel(image, labels, probs, tmp_path / "p.png", true_label="car"))
    # true label outside the top-5 and no true label at all
    _check_png(plot_prediction_panel(image, labels, torch.tensor(probs), tmp_path / "p2.png", true_label="boat"))
    _check_png(plot_prediction_panel(image, labels, probs, tmp_path / "p3.png"))
    with pytest.raises(ValueError):
        plot_prediction_panel(image, labels[:2], probs, tmp_path / "bad.png")


def test_figures_do_not_import_pyplot():
    # figures draw on Figure/Agg directly: importing them must not load pyplot (global
    # backend state, GUI windows). Checked in a fresh interpreter.
    import subprocess
    import sys

    code = "import sys, kizuna.analysis.figures; assert 'matplotlib.pyplot' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# --------------------------------------------------------------------------- bug hunt: geometry and text
def _keep_figure(monkeypatch):
    """Record the Figure each plot_* function saves, to look at what it drew."""
    import kizuna.analysis.figures as F

    figures, save = [], F._save
    monkeypatch.setattr(F, "_save", lambda fig, path: (figures.append(fig), save(fig, path))[1])
    return figures


def test_overlay_covers_only_the_pixels_the_grid_saw(tmp_path, monkeypatch):
    """A 36 px image of 8 px patches is a 4x4 grid over 32x32 px; the map was stretched over all 36 px
    (patch (0, 3), columns 24-31, was drawn at columns 27-35)."""
    m = torch.zeros(4, 4)
    m[0, 3] = 1.0
    figures = _keep_figure(monkeypatch)
    _check_png(plot_attention_overlay(np.zeros((36, 36, 3)), {"m": m}, tmp_path / "ov.png", patch_size=8))
    up = figures[-1].axes[1].get_images()[1].get_array()  # the overlay drawn over the image
    assert up.shape == (36, 36)
    assert up.mask[32:].all() and up.mask[:, 32:].all() and not up.mask[:32, :32].any()  # uncovered: transparent
    assert up[:8, :32].argmax(axis=1).min() >= 24  # the patch's peak stays in its own columns
    assert up[4, 24:32].min() > up[4, :16].max()
    # without patch_size (any other map) the whole image is covered, as before
    plot_attention_overlay(np.zeros((36, 36, 3)), {"m": m}, tmp_path / "ov2.png")
    assert not np.ma.getmaskarray(figures[-1].axes[1].get_images()[1].get_array()).any()


def test_overlay_titles_clear_the_colour_bars(tmp_path, monkeypatch, image):
    """rollout.png's "last layer, class token (mean of heads)" ran into the previous panel's colour bar."""
    figures = _keep_figure(monkeypatch)
    maps = {"attention rollout": torch.rand(4, 4), "last layer, class token (mean of heads)": torch.rand(4, 4)}
    plot_attention_overlay(image, maps, tmp_path / "ov.png", title="Attention rollout (mean over heads, discard 0)")
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = figures[-1]
    canvas = FigureCanvasAgg(fig)
    canvas.draw()  # lays the figure out again, as savefig did
    renderer = canvas.get_renderer()
    panels = [ax for ax in fig.axes if ax.get_images()]
    bars = [ax for ax in fig.axes if not ax.get_images()]
    for left_bar, right in zip(bars, panels[2:]):
        bar_right = left_bar.get_tightbbox(renderer).x1  # with its label
        assert right.title.get_window_extent(renderer).x0 > bar_right


def test_attention_distance_figure_of_a_hybrid(tmp_path, monkeypatch):
    """A hybrid's tokens are stem features: "patch 4" read as a 4 px patch size; and a 30 px image of a
    stride-4 ResNet stem has an 8x8 grid (rounded up), not 30 // 4 = 7."""
    from kizuna.analysis.attention import grid_mean_pairwise_distance

    figures = _keep_figure(monkeypatch)
    dists = torch.rand(2, 3) * 10
    plot_attention_distance(dists, 4, 30, tmp_path / "d.png", grid=(8, 8), stem=True)
    ax = figures[-1].axes[0]
    assert "4 px per token" in ax.get_title() and "image 30x30" in ax.get_title() and "patch" not in ax.get_title()
    uniform = [line for line in ax.get_lines() if line.get_linestyle() == "--"][0]
    assert uniform.get_ydata()[0] == pytest.approx(grid_mean_pairwise_distance((8, 8), 4))
    plot_attention_distance(dists, 16, 96, tmp_path / "p.png")
    assert "patch 16" in figures[-1].axes[0].get_title()  # a plain ViT's tokens are patches


def test_prediction_panel_keeps_long_labels_apart_and_on_the_figure(tmp_path, monkeypatch, image):
    """textwrap.shorten(label, 32) made one long word "[...]" and two labels that share their first words the
    same "a photo of a northern [...]"; the "true: ..." title over the image ran off the figure's left edge."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    labels = ["a photo of a northern cardinal bird, male", "a photo of a northern cardinal bird, female",
              "great_white_shark_carcharodon_carcharias", "tiger_shark_galeocerdo_cuvier_the_big_one",
              "a very long label that has to lose its middle somewhere to fit in two lines, the end", "person"]
    figures = _keep_figure(monkeypatch)
    plot_prediction_panel(image, labels, [0.3, 0.25, 0.2, 0.15, 0.06, 0.04], tmp_path / "p.png",
                          true_label=labels[2], top_k=6)
    fig = figures[-1]
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    ax_img, ax = fig.axes
    ticks = [t.get_text() for t in ax.get_yticklabels()]  # highest probability first
    assert len(set(ticks)) == len(labels)
    for label, tick in zip(labels, ticks):
        assert "[...]" not in tick and tick.count("\n") <= 1
        flat = tick.replace("\n", " " if " " in label else "")
        assert flat.startswith(label[:18]) and flat.endswith(label[-18:])  # both ends shown
    assert ticks[4].endswith("…fit in two lines, the end")  # too long for two lines: the middle goes
    figure_box = fig.bbox
    for text in [ax_img.title, ax.title, *ax.get_yticklabels()]:
        box = text.get_window_extent(renderer)
        assert figure_box.x0 <= box.x0 and box.x1 <= figure_box.x1, text.get_text()
    assert ax_img.title.get_text().replace("\n", "") == f"true: {labels[2]}"
    boxes = sorted((t.get_window_extent(renderer) for t in ax.get_yticklabels()), key=lambda b: b.y0)
    assert all(low.y1 <= high.y0 for low, high in zip(boxes, boxes[1:]))  # two-line labels do not overlap
