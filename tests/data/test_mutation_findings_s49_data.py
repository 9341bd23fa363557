"""Mutation-testing round (stop 49): helpers of the data stage and the analysis (a bool inside a grid pair, a
preprocess config's nested lists)."""
import pytest
import torch

from kizuna.analysis.position import position_similarity
from kizuna.data.transforms import preprocess_from_config


@pytest.mark.parametrize("grid", [(True, 4), (4, False)])
def test_a_bool_inside_a_grid_pair_is_refused(grid):
    with pytest.raises(TypeError, match="whole numbers"):
        position_similarity(torch.randn(17, 8), grid)


@pytest.mark.parametrize("train", [False, True])
def test_a_transform_does_not_share_the_configs_lists(train):
    cfg = {"image_size": 8, "mean": [0.1, 0.2, 0.3], "std": [0.5, 0.5, 0.5]}
    pp = preprocess_from_config(cfg, train=train)
    pp.mean[:] = [0.0, 0.0, 0.0]
    pp.std[0] = 9.0
    assert cfg["mean"] == [0.1, 0.2, 0.3] and cfg["std"] == [0.5, 0.5, 0.5]


def test_the_crop_fallback_keeps_a_pixel_for_a_tall_ratio():
    """The other side of the fallback: an image wider than ``ratio`` allows (1 x 1 at ratios (0.25, 0.4))."""
    import random

    from kizuna.data.transforms import TrainTransform

    box = TrainTransform(image_size=8, scale=(1.0, 1.0), ratio=(0.25, 0.4)).crop_box(1, 1, random.Random(0))
    assert box[2] > box[0] and box[3] > box[1]
