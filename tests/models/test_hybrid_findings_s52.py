"""A hybrid (ResNet stem) loaded at an image size that is not a multiple of its stride (session 52): the stem's map
rounds up where the grid rounds down, and the trained position table was resampled down to the grid, then back up
to the map on every forward (and saved so by a fine-tune). Refused, with the multiple to use."""
import warnings

import pytest
import torch

import kizuna
from kizuna.models.presets import vit_config
from kizuna.models.vit import VisionTransformer


def test_the_stem_map_is_what_the_stem_gives():
    for size in (30, 32, 33, 36):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cfg = vit_config("hybrid-mu/1", image_size=size, num_classes=3, stem_channels=[16, 32])
        stem = VisionTransformer(cfg).stem
        assert tuple(stem(torch.zeros(1, 3, size, size)).shape[-2:]) == cfg.stem_map


def test_a_hybrid_at_a_size_off_its_stride_is_refused_and_a_multiple_loads(tmp_path):
    torch.manual_seed(0)
    model = VisionTransformer(vit_config("hybrid-mu/1", image_size=32, num_classes=3, stem_channels=[16, 32]))
    kizuna.save_model(model, tmp_path / "hybrid")
    with pytest.raises(ValueError, match=r"image_size=30 is not a multiple of this hybrid's stride 4: its ResNet "
                                         r"stem gives a 8x8 grid there, its position embeddings a 7x7 one"):
        kizuna.load_model(tmp_path / "hybrid", image_size=30)
    assert kizuna.load_model(tmp_path / "hybrid", image_size=40).cfg.grid == (10, 10)


def test_a_hybrid_built_at_a_size_off_its_stride_loads_at_that_size(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = VisionTransformer(vit_config("hybrid-mu/1", image_size=38, num_classes=3, stem_channels=[16, 32]))
        kizuna.save_model(model, tmp_path / "h38")
        assert kizuna.load_model(tmp_path / "h38", image_size=38).cfg.grid == model.cfg.grid
