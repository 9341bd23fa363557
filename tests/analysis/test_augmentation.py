"""`kizuna vit augment`: the recipe's augmentation through both paths, as a figure and statistics."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from _labelled import odd_even_shards

from kizuna.analysis.augmentation import pixel_stats
from kizuna.apps.cli import main


def test_pixel_stats_count_what_they_name():
    grey = np.full((2, 4, 4, 3), 128, dtype=np.uint8)
    grey[0, 0, :] = 0  # one row of black in the first image
    grey[1, 0, 0] = (255, 10, 10)  # one saturated pixel
    st = pixel_stats(grey)
    assert st["images"] == 2
    assert st["grey_fill"] == pytest.approx(27 / 32) and st["black"] == pytest.approx(4 / 32)
    assert st["saturated"] == pytest.approx(1 / 32)
    assert st["mean"] == pytest.approx(grey.mean()) and st["std"] == pytest.approx(grey.std())


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    return odd_even_shards(tmp_path_factory.mktemp("aug"), 40, 20)


def test_cli_writes_the_grid_and_both_paths_statistics(shards, tmp_path, capsys):
    out = tmp_path / "aug"
    rc = main(["vit", "augment", "--data", str(shards / "train"), "--image-size", "16", "--randaug-ops", "2",
               "--images", "3", "--draws", "2", "--stats-images", "40", "--out", str(out)])
    assert rc == 0
    assert (out / "augment.png").stat().st_size > 5000
    record = json.loads((out / "augment.json").read_text())
    assert record["image_size"] == 16 and "RandAugment 2 ops" in record["recipe"]
    assert record["figure"] == "augment.png"  # beside the JSON (was the path as typed: broke when moved)
    for path in ("original", "loader", "device"):
        assert record[path]["images"] == 40
    # the augmentation adds grey fill and black padding the originals do not have, on both paths alike
    assert record["original"]["black"] < 0.01
    for path in ("loader", "device"):
        assert record[path]["black"] > 0.03 and record[path]["grey_fill"] > 0.03
    assert abs(record["loader"]["mean"] - record["device"]["mean"]) < 10
    assert "grey fill" in capsys.readouterr().out


def test_cli_says_a_random_resized_crop_has_no_device_path(shards, tmp_path, capsys):
    out = tmp_path / "rrc"
    rc = main(["vit", "augment", "--data", str(shards / "train"), "--image-size", "16", "--crop", "rrc",
               "--images", "2", "--draws", "1", "--stats-images", "8", "--out", str(out)])
    assert rc == 0
    record = json.loads((out / "augment.json").read_text())
    assert record["device"] is None and "no device path" in record["device_note"]
    assert "no device path" in capsys.readouterr().out


def _recipe_cfg(**changes):
    """The training settings as `vit augment` reads them, without make_supervised_config's checks (which
    may refuse e.g. a magnitude of 30 that the preview must still describe honestly)."""
    import dataclasses
    from types import SimpleNamespace

    from kizuna.train.supervised import SupervisedConfig

    return SimpleNamespace(**{**dataclasses.asdict(SupervisedConfig()), **changes})


def test_the_recipe_names_the_settings_that_act():
    """It printed 'crop rrc (padding 4)' (padding is unused by a random resized crop; the scale is what
    acts), the magnitude as given rather than as clamped, and nothing of mixup, cutmix or label smoothing."""
    from kizuna.analysis.augmentation import describe_recipe

    rrc = describe_recipe(_recipe_cfg(crop="rrc", crop_scale=(0.25, 1.0)))
    assert "scale 0.25-1" in rrc and "padding" not in rrc
    assert describe_recipe(_recipe_cfg()).startswith("pad-and-crop (padding 4), flip 0.5, no RandAugment")
    strong = describe_recipe(_recipe_cfg(randaug_ops=2, randaug_magnitude=30))
    assert "RandAugment 2 ops at magnitude 10 (30 clamped to 0..10)" in strong
    mixed = describe_recipe(_recipe_cfg(mixup=0.8, cutmix=1.0, mix_prob=0.5, label_smoothing=0.1))
    assert "mixup alpha 0.8 or cutmix alpha 1 (one per batch) on 0.5 of batches" in mixed
    assert "label smoothing 0.1 (targets only, not shown)" in mixed
    assert describe_recipe(_recipe_cfg(crop="none", hflip=0.0)).startswith("no random crop, no flip")


def test_cli_shows_mixup_and_cutmix(shards, tmp_path):
    """--mixup/--cutmix were accepted and ignored: the grid showed no mixed image."""
    from kizuna.analysis.augmentation import augmentation_samples
    from kizuna.train.supervised import make_supervised_config

    out = tmp_path / "mix"
    rc = main(["vit", "augment", "--data", str(shards / "train"), "--image-size", "16", "--mixup", "0.8",
               "--cutmix", "1.0", "--images", "4", "--draws", "6", "--stats-images", "8", "--out", str(out)])
    assert rc == 0
    record = json.loads((out / "augment.json").read_text())
    assert "mixup alpha 0.8 or cutmix alpha 1" in record["recipe"]
    assert len(record["mixed_draws"]) == 6 and {d["method"] for d in record["mixed_draws"]} <= {"mixup", "cutmix"}
    assert record["loader"]["images"] == 8  # statistics: the paths before mixing

    cfg = make_supervised_config(data=str(shards / "train"), image_size=16, cutmix=1.0)
    shown = augmentation_samples(cfg, 4, 3)
    for draw, mixed, how in zip(shown["loader"], shown["mixed"], shown["mix_info"]):
        assert how["method"] == "cutmix" and 0 <= how["lam"] <= 1
        # CutMix pastes row n-1-i's pixels into row i: every pixel comes from one of the two
        from_self = (mixed == draw).all(-1)
        from_partner = (mixed == draw[::-1]).all(-1)
        assert (from_self | from_partner).all()
        # lambda is the box's share left to the image (more pixels match where the two agree, e.g. padding)
        assert from_self.mean() >= how["lam"] - 1e-9
        assert how["lam"] == 1.0 or (mixed != draw).any()
    assert augmentation_samples(cfg, 4, 1, mix=False)["mixed"] is None


def test_mixing_needs_two_images_and_says_so(shards, tmp_path):
    out = tmp_path / "one"
    assert main(["vit", "augment", "--data", str(shards / "train"), "--image-size", "16", "--mixup", "0.8",
                 "--images", "1", "--draws", "1", "--stats-images", "2", "--out", str(out)]) == 0
    record = json.loads((out / "augment.json").read_text())
    assert "mixing not shown" in record["recipe"] and "mixed_draws" not in record


def test_a_training_subset_previews_its_own_images(shards):
    """--subset-fraction was ignored: the preview took the first images of the full set."""
    from kizuna.analysis.augmentation import augmentation_samples
    from kizuna.train.supervised import load_classification, make_supervised_config, stratified_subset

    full = augmentation_samples(make_supervised_config(data=str(shards / "train"), image_size=16), 40, 1)
    cfg = make_supervised_config(data=str(shards / "train"), image_size=16, subset_fraction=0.5, subset_seed=3)
    rows = stratified_subset(load_classification(cfg.data)[0].labels, 0.5, 3)[:4]
    assert list(rows) != [0, 1, 2, 3]  # else the test could not tell the two apart
    subset = augmentation_samples(cfg, 4, 1)
    assert np.array_equal(subset["original"], full["original"][rows])


@pytest.mark.parametrize("flag", ["--num-images", "--images", "--draws", "--stats-images"])
def test_cli_refuses_zero_counts(shards, tmp_path, capsys, flag):
    """0 ended in numpy's 'need at least one array to stack'. Refused as the flags are read."""
    with pytest.raises(SystemExit) as e:
        main(["vit", "augment", "--data", str(shards / "train"), "--image-size", "16", flag, "0",
              "--out", str(tmp_path / "zero")])
    assert e.value.code == 2
    assert "must be >= 1, got 0" in capsys.readouterr().err
    assert not (tmp_path / "zero").exists()


def test_the_library_refuses_zero_counts_too(shards, tmp_path):
    from kizuna.analysis.augmentation import preview_augmentation
    from kizuna.train.supervised import SupervisedConfig

    cfg = SupervisedConfig(data=str(shards / "train"), image_size=16)
    with pytest.raises(ValueError, match="--draws must be at least 1, got 0"):
        preview_augmentation(cfg, tmp_path / "zero", 2, 0, 4)


def test_the_title_fits_a_narrow_grid():
    """With 2 images x 2 draws the title was cut at both edges of the figure."""
    from kizuna.analysis.augmentation import augmentation_figure

    rng = np.random.default_rng(0)
    samples = {"original": rng.integers(0, 255, (2, 8, 8, 3), dtype=np.uint8),
               "loader": rng.integers(0, 255, (2, 2, 8, 8, 3), dtype=np.uint8), "device": None,
               "labels": [0, 1], "classnames": ["odd", "even"]}
    title = ("/work/shared/data/cifar10/test: pad-and-crop (padding 4), flip 0.5, RandAugment 2 ops at "
             "magnitude 9, mixup alpha 0.8 or cutmix alpha 1 (one per batch)")
    fig = augmentation_figure(samples, title)
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    box, page = fig._suptitle.get_window_extent(renderer), fig.bbox
    assert box.x0 >= page.x0 and box.x1 <= page.x1 and box.y1 <= page.y1
    assert fig._suptitle.get_text().split() == title.split() or fig._suptitle.get_text().replace("\n", " ") == title
    top_of_images = max(ax.get_window_extent(renderer).y1 for ax in fig.axes)
    assert box.y0 > top_of_images  # above the column titles' row of images, not over them
