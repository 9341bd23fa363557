"""Mutation-test findings for resample_pos_embed's checks, the ResNet stem's size warning and _linear_act
(session 44): each test pins one behaviour a hand-made mutant broke without any existing test failing."""
from __future__ import annotations

import warnings

import pytest
import torch

from kizuna.models.vit import VisionConfig, resample_pos_embed


def _resnet_cfg(size):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        VisionConfig(image_size=size, patch_size=2, width=8, depth=1, heads=2, stem="resnet", stem_channels=[8, 16])
    return " ".join(str(w.message) for w in caught)


def test_resnet_stem_feature_map_that_rounds_to_the_grid_warns_of_unseen_rows():
    """36 px, stride 8: the stem's 9x9 map holds the 4x4 grid of 2-px patches, its last row and column unseen."""
    text = _resnet_cfg(36)
    assert "last 1 rows and 1 columns of the stem's 9x9 feature map are never seen" in text
    assert "resized on every forward pass" not in text


def test_resnet_stem_feature_map_rounded_up_past_the_grid_warns_of_resizing():
    """30 px: the padded convolutions round up (30->15->8), a 4x4 map of patches for a 3x3 grid: resized."""
    text = _resnet_cfg(30)
    assert "larger than the 3x3 grid of position embeddings" in text and "never seen" not in text


def test_resample_refuses_a_batch_of_tables():
    """A [2, tokens, dim] table is not one table of position embeddings."""
    with pytest.raises(ValueError, match=r"must be \[1, tokens, dim\]"):
        resample_pos_embed(torch.zeros(2, 4, 3), (3, 3), num_prefix_tokens=0)


def test_resample_refuses_a_four_dimensional_table():
    """A [1, tokens, dim, 1] tensor is refused by shape before any arithmetic on it."""
    with pytest.raises(ValueError, match=r"must be \[1, tokens, dim\]"):
        resample_pos_embed(torch.zeros(1, 4, 3, 1), (3, 3), num_prefix_tokens=0)


@pytest.mark.parametrize("prefix", [-1, 6])
def test_resample_refuses_a_prefix_outside_the_table(prefix):
    """num_prefix_tokens below 0 or past the table's 5 tokens is named, not sliced into nonsense."""
    with pytest.raises(ValueError, match=r"num_prefix_tokens .* is not within the table's 5 tokens"):
        resample_pos_embed(torch.zeros(1, 5, 3), (3, 3), num_prefix_tokens=prefix, old_grid=(2, 2))


def test_resample_refuses_an_empty_new_grid():
    """A 0-row new grid is refused (interpolating to it gave an empty table)."""
    with pytest.raises(ValueError, match="at least one row and one column"):
        resample_pos_embed(torch.zeros(1, 5, 3), (0, 2), num_prefix_tokens=1)


@pytest.mark.parametrize("old_grid", [2, [2, 2]])
def test_resample_same_grid_given_as_int_or_list_returns_the_input(old_grid):
    """old_grid as an int or a list is the same grid as the tuple new_grid: the table comes back untouched."""
    pe = torch.randn(1, 5, 3)
    assert resample_pos_embed(pe, (2, 2), num_prefix_tokens=1, old_grid=old_grid) is pe


def test_linear_act_on_a_zero_row_batch_keeps_the_output_width():
    """A 0-row batch through the addmm path: the width is named, a -1 in view has nothing to infer from."""
    from kizuna.models.layers import _linear_act

    out = _linear_act(torch.zeros(0, 4), torch.randn(3, 4), torch.zeros(3), "torch", "none")
    assert out.shape == (0, 3)
