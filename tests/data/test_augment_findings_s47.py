"""The training transforms against their references (stop 47's review): a numpy image size, the augmentation's
settings checked where a transform is made, and a ratio given high to low."""
import random

import numpy as np
import pytest
from PIL import Image

import kizuna
from kizuna.data.augment import ClassificationTrainTransform
from kizuna.data.transforms import Preprocess, TrainTransform


def test_a_numpy_image_size_works_as_an_int():
    """check_geometry took np.int64(32), and the first image failed: "invalid index to scalar variable"."""
    img = Image.new("RGB", (50, 40), (10, 200, 30))
    size = np.int64(32)
    assert Preprocess(image_size=size)(img).shape == (3, 32, 32)
    assert ClassificationTrainTransform(image_size=size)(img, rng=random.Random(0)).shape == (3, 32, 32)
    assert TrainTransform(image_size=size)(img, rng=random.Random(0)).shape == (3, 32, 32)


@pytest.mark.parametrize("overrides, field", [
    ({"hflip": True}, "hflip"),  # mirrored every image
    ({"hflip": 1.5}, "hflip"), ({"hflip": float("nan")}, "hflip"),
    ({"scale": (1.5, 2.0)}, "scale"),  # every draw fell back to the whole image: no random crop
    ({"scale": (0.0, 0.0)}, "scale"), ({"scale": (0.9,)}, "scale"),  # (the last failed at the first image)
    ({"ratio": (0.0, 1.0)}, "ratio"), ({"color_jitter": -0.1}, "color_jitter"),
])
def test_the_training_transforms_refuse_what_the_command_line_refuses(overrides, field):
    with pytest.raises(ValueError, match=rf"^{field} "):
        kizuna.get_preprocess("ViT-B-32", train=True, **overrides)
    if field != "color_jitter":
        with pytest.raises(ValueError, match=rf"^{field} "):
            ClassificationTrainTransform(image_size=32, **overrides)


def test_a_ratio_given_high_to_low_falls_back_as_torchvision_does():
    """The fallback read ratio[0] as the lowest: (4/3, 3/4) on a 1000x200 image gave a 150x200 crop, torchvision's
    min/max 267x200."""
    for ratio in ((3 / 4, 4 / 3), (4 / 3, 3 / 4)):
        t = TrainTransform(image_size=32, scale=(0.9, 1.0), ratio=ratio)
        assert t.crop_box(1000, 200, random.Random(0)) == (366, 0, 633, 200)


@pytest.mark.parametrize("hflip", [True, 2.0])
def test_the_device_augmentation_refuses_a_flip_that_is_no_probability(hflip):
    from kizuna.data.batch_augment import BatchAugment

    with pytest.raises(ValueError, match="^hflip "):
        BatchAugment(hflip=hflip)
