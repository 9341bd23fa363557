"""Mutation findings (stop 47's mutation test of the training transforms' checks): mutants that no test killed.

References: torchvision's RandomResizedCrop (``scale`` is a range LOW <= HIGH: it warns "Scale and ratio should be
of kind (min, max)"), and the command line's own refusals, which ``check_augmentation`` mirrors; a
ClassificationTrainTransform takes the same normalisation as ``get_preprocess`` (``check_normalisation``)."""
import random

import pytest
from PIL import Image

import kizuna
import kizuna.data.transforms
from kizuna.data.augment import ClassificationTrainTransform


def test_a_scale_given_high_to_low_is_refused():
    """Kills check_augmentation's ``s[0] <= s[1]`` dropped (each bound only checked in (0, 1]): (0.9, 0.5) drew
    areas between the two, read as a range it is not."""
    with pytest.raises(ValueError, match=r"^scale "):
        kizuna.get_preprocess("ViT-B-32", train=True, scale=(0.9, 0.5))
    with pytest.raises(ValueError, match=r"^scale "):
        ClassificationTrainTransform(image_size=32, scale=(0.9, 0.5))
    ClassificationTrainTransform(image_size=32, scale=(0.5, 0.5))  # equal bounds: one area share, accepted


@pytest.mark.parametrize("std", [(0.0, 0.0, 0.0), (0.5, 0.5)])
def test_the_classification_transform_refuses_a_bad_std(std):
    """Kills ClassificationTrainTransform's ``check_normalisation`` dropped: a std of 0 gave inf/NaN pixels, two
    numbers a reshape traceback at the first image."""
    with pytest.raises(ValueError, match=r"^preprocess std "):
        ClassificationTrainTransform(image_size=32, std=std)


def test_a_colour_jitter_of_zero_is_off_not_refused():
    """Kills check_augmentation's ``color_jitter >= 0`` made ``> 0``: 0 is the documented "off"."""
    t = kizuna.get_preprocess("ViT-B-32", train=True, color_jitter=0.0)
    assert t(Image.new("RGB", (50, 40), (10, 200, 30)), rng=random.Random(0)).shape == (3, 224, 224)


@pytest.mark.parametrize("overrides, field", [({"image_size": "32"}, "image_size"),
                                              ({"image_size": [32]}, "image_size"),
                                              ({"interpolation": "lanczos"}, "interpolation")])
def test_the_classification_transform_refuses_a_bad_geometry(overrides, field):
    """Kills ClassificationTrainTransform's ``check_geometry`` dropped: "32" was read as 3 x 2 pixels, [32] and an
    unknown filter failed at the first image (IndexError, KeyError) rather than where the transform is made."""
    with pytest.raises(ValueError, match=rf"^preprocess {field}"):
        ClassificationTrainTransform(**{"image_size": 32, **overrides})


def test_an_infinite_ratio_is_refused():
    """Kills check_augmentation's ``math.isfinite`` dropped: a ratio (1, inf) passed ``min(r) > 0`` and drew
    exp(uniform(0, inf)) aspects (inf: every draw fell back), as the command line refuses it."""
    with pytest.raises(ValueError, match=r"^ratio "):
        ClassificationTrainTransform(image_size=32, ratio=(1.0, float("inf")))


def test_the_fallback_crop_of_a_tall_image_is_torchvisions():
    """Kills the fallback's ``in_ratio < low`` branch read with ``high`` (the s47 test only has a wide image): a
    200x1000 image, whose every draw of scale (0.9, 1) fails, is torchvision's w = 200, h = round(200 / (3/4)) =
    267, centred; with ``high`` it was 200 x 150."""
    for ratio in ((3 / 4, 4 / 3), (4 / 3, 3 / 4)):
        t = kizuna.data.transforms.TrainTransform(image_size=32, scale=(0.9, 1.0), ratio=ratio)
        assert t.crop_box(200, 1000, random.Random(0)) == (0, 366, 200, 633)
