"""Attention rollout / distance, position similarity, patch-filter PCA, the augmentation preview, the over-training
report and the figures' numbers, checked against references worked out by hand or with numpy (a mutation hunt
found each of these unchecked: a changed line left the existing tests passing)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from kizuna.analysis.attention import (
    attention_rollout,
    cls_rollout_map,
    grid_mean_pairwise_distance,
    last_layer_cls_attention,
    mean_attention_distance,
    upsample_map,
)
from kizuna.analysis.position import position_similarity


def _softmax_attention(B, H, T, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, H, T, T, generator=g).softmax(dim=-1)


# ----------------------------------------------------------------------------- attention
def test_discard_drops_the_weakest_keys_of_each_row():
    """Kills: the discard keeping the weakest keys (topk largest=True dropped the strongest). The reference: numpy
    keeps each row's 6 largest of 10 entries, renormalised (one layer, no residual)."""
    a = _softmax_attention(1, 1, 10, seed=3)
    r = attention_rollout([a], discard_ratio=0.4, add_residual=False)[0].numpy()
    row = a[0, 0].double().numpy()
    keep = np.argsort(row, axis=1)[:, 4:]  # the 6 largest of every row
    expected = np.zeros_like(row)
    np.put_along_axis(expected, keep, np.take_along_axis(row, keep, axis=1), axis=1)
    expected /= expected.sum(1, keepdims=True)
    np.testing.assert_allclose(r, expected, rtol=1e-5, atol=1e-7)


def test_half_precision_attention_is_analysed_in_float32():
    """Kills: half-precision maps kept in float16 (the rollout and distances came back in float16, rounded to
    3 significant digits). The reference: the same maps in float64."""
    a = [_softmax_attention(1, 2, 5, seed=s).half() for s in range(3)]
    r = attention_rollout(a)
    assert r.dtype == torch.float32
    ref = attention_rollout([x.double() for x in a])
    torch.testing.assert_close(r.double(), ref, rtol=1e-6, atol=1e-7)
    d = mean_attention_distance(a[0], (2, 2), 16)
    assert d.dtype == torch.float32
    torch.testing.assert_close(d.double(), mean_attention_distance(a[0].double(), (2, 2), 16), rtol=1e-6, atol=1e-6)


def test_cls_rollout_map_without_a_class_token_is_refused():
    """Kills: num_prefix=0 accepted by cls_rollout_map (row 0 is then a patch, not a class token: a map of
    patch 0's attention was returned as the class token's)."""
    r = attention_rollout([_softmax_attention(1, 1, 4)])
    with pytest.raises(ValueError, match="class token"):
        cls_rollout_map(r, (2, 2), num_prefix=0)


def test_last_layer_cls_attention_of_a_list_is_the_last_block():
    """Kills: the first block taken from a list of blocks. The reference: indexing the last map by hand."""
    first, last = _softmax_attention(1, 2, 7, seed=1), _softmax_attention(1, 2, 7, seed=2)
    m = last_layer_cls_attention([first, last], (2, 3))
    torch.testing.assert_close(m, last[:, :, 0, 1:].reshape(1, 2, 2, 3))


def test_a_nan_batch_item_makes_its_head_nan():
    """Kills: a head's NaN check taken over any batch item instead of all (a head that went NaN on one image
    averaged that image in as distance 0 and came out finite and too local)."""
    a = torch.full((2, 2, 5, 5), 1 / 5)
    a[1, 1] = float("nan")
    d = mean_attention_distance(a, (2, 2), 1)
    assert math.isfinite(d[0]) and torch.isnan(d[1])
    # head 0: uniform over the 4 patches; (0 + 1 + 1 + sqrt 2) / 4 for every query patch
    assert d[0].item() == pytest.approx((2 + math.sqrt(2)) / 4, rel=1e-6)


def test_an_empty_grid_is_refused():
    """Kills: a 0-row grid accepted (the uniform reference of a 0 x 4 grid was NaN, not an error)."""
    with pytest.raises(ValueError, match="grid must be positive"):
        grid_mean_pairwise_distance((0, 4))


def test_upsample_map_is_bilinear_by_default():
    """Kills: the default mode changed from bilinear (blocky overlays). The reference: bilinear with half-pixel
    centres from 2 to 4 columns is 0, 1/4, 3/4, 1 (by hand)."""
    up = upsample_map(torch.tensor([[0.0, 1.0]]), (1, 4))
    torch.testing.assert_close(up, torch.tensor([[0.0, 0.25, 0.75, 1.0]]))


# ----------------------------------------------------------------------------- position
def test_a_batch_of_position_tables_is_refused():
    """Kills: a [2, T, D] pos_embed silently analysed as its first table."""
    with pytest.raises(ValueError, match="batch size 1"):
        position_similarity(torch.randn(2, 5, 8), (2, 2))


# ----------------------------------------------------------------------------- filters
def test_filter_pca_of_half_weights_is_float32():
    """Kills: half-precision weights giving float16 components and ratios (the docstring promises float32). The
    reference: the PCA of the same weights as float32."""
    from kizuna.analysis.filters import patch_filter_pca

    w = torch.randn(12, 3, 2, 2, generator=torch.Generator().manual_seed(0)).half()
    comps, ratio = patch_filter_pca(w, k=4)
    assert comps.dtype == torch.float32 and ratio.dtype == torch.float32
    ref_c, ref_r = patch_filter_pca(w.float(), k=4)
    torch.testing.assert_close(comps, ref_c)
    torch.testing.assert_close(ratio, ref_r)


# ----------------------------------------------------------------------------- figures
@pytest.fixture
def drawn(monkeypatch):
    """The Figure each plot_* call of kizuna.analysis.figures saves, in order (they are still written)."""
    import kizuna.analysis.figures as F

    figs, save = [], F._save

    def grab(fig, path):
        figs.append(fig)
        return save(fig, path)

    monkeypatch.setattr(F, "_save", grab)
    return figs


def test_attention_distance_figure_of_a_wide_image_uses_its_width(tmp_path, drawn):
    """Kills: the default token grid taken as (height, height) (a 32x64 image of 16 px patches drew the uniform
    line of a 2x2 grid). The reference: the mean pairwise distance of a 2x4 grid, by hand with numpy."""
    from kizuna.analysis.figures import plot_attention_distance

    plot_attention_distance([torch.tensor([5.0, 9.0])], 16, (32, 64), tmp_path / "ad.png")
    ax = drawn[-1].axes[0]
    rr, cc = np.divmod(np.arange(8), 4)
    expected = 16 * np.hypot(rr[:, None] - rr[None], cc[:, None] - cc[None]).mean()
    (line,) = [ln for ln in ax.get_lines() if ln.get_label() == "uniform attention"]
    assert line.get_ydata()[0] == pytest.approx(expected)
    assert "2x4 tokens" in ax.get_title()


@pytest.mark.parametrize("kind", ["uint8", "float 0..255", "CHW tensor"])
def test_the_panel_shows_the_image_in_0_1(tmp_path, drawn, kind):
    """Kills: uint8 images not divided by 255 (clipped to 1: any non-black pixel drawn white), 0..255 floats not
    recognised as such, and a CxHxW tensor not moved to HxWxC. The reference: the array / 255 with numpy."""
    from kizuna.analysis.figures import plot_prediction_panel

    rgb = np.random.default_rng(0).integers(0, 256, (6, 5, 3), dtype=np.uint8)
    image = {"uint8": rgb, "float 0..255": rgb.astype(np.float64),
             "CHW tensor": torch.from_numpy(rgb.astype(np.float32) / 255).permute(2, 0, 1)}[kind]
    plot_prediction_panel(image, ["a", "b"], [0.3, 0.7], tmp_path / "p.png")
    shown = np.asarray(drawn[-1].axes[0].get_images()[0].get_array())
    np.testing.assert_allclose(shown, rgb / 255.0, rtol=1e-6, atol=1e-6)


def test_an_infinite_distance_does_not_set_the_axis(tmp_path, drawn):
    """Kills: only NaN (not Inf) left out of the axis limits (an Inf head, a diverged model, failed the figure
    with "Axis limits cannot be NaN or Inf"). The reference: the largest finite value x 1.08, by hand."""
    from kizuna.analysis.figures import plot_attention_distance

    plot_attention_distance([torch.tensor([30.0, float("inf")]), torch.tensor([50.0, 2.0])], 4, 8,
                            tmp_path / "ad.png", show_uniform=False)
    assert drawn[-1].axes[0].get_ylim() == pytest.approx((0.0, 50.0 * 1.08))


# ----------------------------------------------------------------------------- over-training
def test_over_training_counts_the_images_it_read(tmp_path, write_noise_images):
    """Kills: num_images written as --max-images (32) when the folder has fewer (3). The reference: the number of
    files written, and the JSON file on disk."""
    import json

    import kizuna
    from kizuna.analysis.over_training import over_training_report
    from kizuna.train.checkpointing import CheckpointManager

    images = tmp_path / "imgs"
    images.mkdir()
    write_noise_images(images, 3, 16)
    torch.manual_seed(0)
    model = kizuna.create_vit("mu/4", image_size=16, num_classes=3, width=16, depth=2, heads=2, mlp_dim=32)
    CheckpointManager(tmp_path / "run", keep_last=5).save(7, model, {"step": 7}, metrics={"val_top1": 0.5})
    rep = over_training_report(tmp_path / "run", [str(images)], tmp_path / "ot", max_images=32, progress=False)
    on_disk = json.loads((tmp_path / "ot" / "over_training.json").read_text())
    assert rep["num_images"] == on_disk["num_images"] == 3
    assert [r["step"] for r in on_disk["checkpoints"]] == [7] and on_disk["checkpoints"][0]["val_top1"] == 0.5


# ----------------------------------------------------------------------------- augmentation recipe
def _recipe_cfg(**changes):
    """The training settings as `vit augment` reads them, without make_supervised_config's checks."""
    import dataclasses
    from types import SimpleNamespace

    from kizuna.train.supervised import SupervisedConfig

    return SimpleNamespace(**{**dataclasses.asdict(SupervisedConfig()), **changes})


def test_recipe_says_only_what_acts():
    """Kills: a flip probability above 1 printed as given (it acts as 1), "on 1 of batches" added when every batch
    is mixed, "(one per batch)" added to a single mixing method, a pad crop with 0 padding named a pad-and-crop
    (it is no random crop), and a negative mix probability printed as given (it acts as 0)."""
    from kizuna.analysis.augmentation import describe_recipe

    assert describe_recipe(_recipe_cfg(hflip=1.5)).startswith("pad-and-crop (padding 4), flip 1, ")
    mixup = describe_recipe(_recipe_cfg(mixup=0.8, cutmix=0.0, mix_prob=1.0))
    assert mixup.endswith(", mixup alpha 0.8")
    assert describe_recipe(_recipe_cfg(crop="pad", crop_padding=0)).startswith("no random crop, ")
    assert describe_recipe(_recipe_cfg(cutmix=1.0, mixup=0.0, mix_prob=-0.5)).endswith("cutmix alpha 1 on 0 of batches")


def test_pixel_stats_grey_needs_every_channel_and_spread_is_per_image():
    """Kills: a pixel counted as grey fill when any one channel is 128 (not all three), and the per-image spread
    taken over all images at once. The reference: counts and numpy std by hand."""
    from kizuna.analysis.augmentation import pixel_stats

    x = np.zeros((2, 2, 2, 3), dtype=np.uint8)
    x[1] = 255  # image 0 all black, image 1 all white: each image is flat
    x[0, 0, 0] = (128, 0, 0)  # one channel at 128: not grey fill
    x[0, 0, 1] = (128, 128, 128)  # grey fill
    st = pixel_stats(x)
    assert st["grey_fill"] == pytest.approx(1 / 8)
    assert st["black"] == pytest.approx(2 / 8) and st["saturated"] == pytest.approx(4 / 8)
    per_image = np.mean([x[0].astype(float).std(), x[1].astype(float).std()])
    assert st["per_image_std"] == pytest.approx(per_image) and st["per_image_std"] < 60 < st["std"]


def test_prediction_panel_title_gives_the_true_labels_rank_from_one(tmp_path, drawn):
    """Kills: the true label's rank counted from 0 (the second most probable class read "rank 1"). The
    reference: 0.5 > 0.3 > 0.2 by hand, "b" is second."""
    from kizuna.analysis.figures import plot_prediction_panel

    plot_prediction_panel(np.zeros((4, 4, 3)), ["a", "b", "c"], [0.2, 0.3, 0.5], tmp_path / "p.png",
                          true_label="a", top_k=2)
    assert "(true label rank 3)" in drawn[-1].axes[1].get_title()
    plot_prediction_panel(np.zeros((4, 4, 3)), ["a", "b", "c"], [0.2, 0.3, 0.5], tmp_path / "p.png",
                          true_label="b", top_k=3)
    ax = drawn[-1].axes[1]
    assert "(true label rank 2)" in ax.get_title()
    # highest on top: bar y positions 2, 1, 0 for c, b, a
    heights = {t.get_text(): y for t, y in zip(ax.get_yticklabels(), ax.get_yticks())}
    assert heights["c"] > heights["b"] > heights["a"]


def test_filter_tiles_are_numbered_from_one_with_percentages(tmp_path, drawn):
    """Kills: tiles labelled from "PC 0", and the explained-variance ratio printed as a fraction, not a percentage.
    The reference: the ratios given, times 100 by hand."""
    from kizuna.analysis.figures import plot_filter_components

    comps = torch.randn(3, 3, 2, 2, generator=torch.Generator().manual_seed(0))
    plot_filter_components(comps, tmp_path / "f.png", explained_variance=[0.5, 0.25, 0.125])
    labels = [ax.get_xlabel() for ax in drawn[-1].axes[:3]]
    assert labels == ["PC 1 (50.0%)", "PC 2 (25.0%)", "PC 3 (12.5%)"]
    assert "first 3 explain 87.5% of the variance" in drawn[-1]._suptitle.get_text()


# ----------------------------------------------------------------------------- augmentation preview
@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    from _labelled import odd_even_shards

    return odd_even_shards(tmp_path_factory.mktemp("aug2"), 8, 16)


def test_every_draw_is_a_new_draw(shards):
    """Kills: the loader's draws seeded per image only, the device path's per call only, and the mixing generator
    the same for every draw (the draws of each path were copies of one another, and every mixed column had one
    lambda). The reference: comparing the returned arrays with numpy."""
    from kizuna.analysis.augmentation import augmentation_samples
    from kizuna.train.supervised import make_supervised_config

    cfg = make_supervised_config(data=str(shards / "train"), image_size=16, cutmix=1.0)
    s = augmentation_samples(cfg, 4, 4)
    for path in ("loader", "device"):
        draws = s[path]
        assert draws.shape == (4, 4, 16, 16, 3)
        assert not any(np.array_equal(draws[0], draws[d]) for d in range(1, 4)), path
    assert len({round(m["lam"], 6) for m in s["mix_info"]}) > 1


def test_preview_records_the_subset_and_titles_each_group_once(shards, tmp_path, drawn):
    """Kills: subset_fraction left out of augment.json, and every column titled with its group's name (not just
    the group's first). The reference: the JSON file on disk and the figure's column titles."""
    import json

    from kizuna.analysis.augmentation import preview_augmentation
    from kizuna.train.supervised import make_supervised_config

    cfg = make_supervised_config(data=str(shards / "train"), image_size=16, subset_fraction=0.5)
    preview_augmentation(cfg, tmp_path / "aug", n_images=2, draws=2, stats_images=2)
    record = json.loads((tmp_path / "aug" / "augment.json").read_text())
    assert record["subset_fraction"] == 0.5
    titles = [ax.get_title(loc="left") for ax in drawn[-1].axes[:5]]
    assert titles == ["original", "PIL loader", "", "device batches", ""]


# ----------------------------------------------------------------------------- attention-distance figure
def test_attention_distance_figure_puts_layer_one_at_x_one_and_keeps_a_floor(tmp_path, drawn):
    """Kills: layers drawn from x = 0 (off the axis, which starts at 0.4), and the y-axis floor of one patch dropped
    (an all-local model, distances 0, got an empty 0..0 axis). The reference: the positions by hand."""
    from kizuna.analysis.figures import plot_attention_distance

    plot_attention_distance([torch.zeros(2), torch.zeros(2)], 16, 32, tmp_path / "ad.png", show_uniform=False)
    ax = drawn[-1].axes[0]
    xs = sorted({float(x) for coll in ax.collections for x in coll.get_offsets()[:, 0]})
    assert xs == [1.0, 2.0]
    assert ax.get_ylim() == pytest.approx((0.0, 16.0))


def test_over_training_figure_draws_the_uniform_level_given(tmp_path, drawn):
    """Kills: the uniform-attention line drawn at another height than the value passed. The reference: the
    number passed in, and each layer's curve against the rows of the array passed in."""
    from kizuna.analysis.figures import plot_over_training

    per_layer = np.array([[3.0, 4.0], [5.0, 7.0]])
    plot_over_training([10, 20], per_layer, 9.5, tmp_path / "ot.png")
    ax = drawn[-1].axes[0]
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    assert list(lines["uniform attention"].get_ydata()) == [9.5, 9.5]
    assert list(lines["Layer 2"].get_ydata()) == [4.0, 7.0] and list(lines["Layer 2"].get_xdata()) == [10, 20]
    assert ax.get_ylim() == pytest.approx((0.0, 9.5 * 1.08))


def test_mixup_draws_are_rounded_not_truncated(shards):
    """Kills: the mixed uint8 images truncated (every mixed pixel up to 1 darker, 0.5 on average). The reference:
    lam * image + (1 - lam) * partner (row n-1-i) in float64 with numpy, for the lambda the preview reports."""
    from kizuna.analysis.augmentation import augmentation_samples
    from kizuna.train.supervised import make_supervised_config

    cfg = make_supervised_config(data=str(shards / "train"), image_size=16, mixup=0.8)
    s = augmentation_samples(cfg, 4, 2)
    for draw, mixed, how in zip(s["loader"], s["mixed"], s["mix_info"]):
        assert how["method"] == "mixup"
        exact = how["lam"] * draw.astype(np.float64) + (1 - how["lam"]) * draw[::-1].astype(np.float64)
        diff = mixed.astype(np.float64) - exact
        assert np.abs(diff).max() <= 0.5 + 1e-3 and abs(diff.mean()) < 0.1


def test_normalised_map_of_uniform_attention_is_zero_not_nan():
    """Kills: the min-max scaling without its guard (uniform attention, e.g. all-zero queries and keys, gave a
    map of NaN: 0 / 0). The reference: a constant map scales to 0 everywhere."""
    uniform = torch.full((1, 1, 5, 5), 1 / 5)
    m = cls_rollout_map(attention_rollout([uniform, uniform]), (2, 2), normalize=True)
    torch.testing.assert_close(m, torch.zeros(1, 2, 2))


def test_a_run_with_an_empty_checkpoints_folder_names_that_folder(tmp_path):
    """Kills: the error naming RUN/step_* when RUN/checkpoints exists but is empty (the folder looked in is
    RUN/checkpoints)."""
    from kizuna.analysis.over_training import find_checkpoints

    (tmp_path / "checkpoints").mkdir()
    with pytest.raises(FileNotFoundError, match=r"expected \S*checkpoints/step_\*"):
        find_checkpoints(tmp_path)
