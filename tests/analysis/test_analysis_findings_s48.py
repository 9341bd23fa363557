"""row_column_ratio counts locality too (pairs sharing a line are closer on average): an embedding whose similarity
falls with straight-line distance alone scored 1.2, read as "rows and columns show up". The equal-distance
contrast takes locality out."""
from __future__ import annotations

import math

import torch

from kizuna.analysis.position import row_column_score


def _grid_distance(h, w):
    r = torch.arange(h).repeat_interleave(w).double()
    c = torch.arange(w).repeat(h).double()
    return ((r[:, None] - r[None]) ** 2 + (c[:, None] - c[None]) ** 2).sqrt()


def test_similarity_by_distance_alone_has_no_excess_though_its_ratio_is_over_one():
    d = _grid_distance(8, 8)
    score = row_column_score(torch.exp(-d ** 2 / 8), (8, 8))
    assert score["ratio"] > 1.1  # what the ratio said of an embedding with no rows or columns
    assert abs(score["equal_distance_excess"]) < 1e-12
    assert math.isclose(score["equal_distance_line"], math.exp(-25 / 8))  # only d = 5 on 8 x 8
    assert math.isclose(score["equal_distance_other"], math.exp(-25 / 8))


def test_rows_and_columns_show_in_the_excess():
    h = w = 14
    r = torch.arange(h).repeat_interleave(w)
    c = torch.arange(w).repeat(h)
    stripes = ((r[:, None] == r[None]) | (c[:, None] == c[None])).double()
    d = _grid_distance(h, w)
    score = row_column_score(torch.exp(-d / 4) + 0.5 * stripes, (h, w))
    # distances 5, 10 and 13 on 14 x 14: each line pair 0.5 above its equal-distance other pair
    assert abs(score["equal_distance_excess"] - 0.5) < 1e-12
    noise = torch.randn(h * w, 64, generator=torch.Generator().manual_seed(0))
    noise = torch.nn.functional.normalize(noise, dim=-1)
    assert abs(row_column_score(noise @ noise.T, (h, w))["equal_distance_excess"]) < 0.05


def test_a_grid_too_small_for_equal_distances_says_nan():
    score = row_column_score(torch.eye(16), (4, 4))
    assert math.isnan(score["equal_distance_excess"]) and math.isfinite(score["ratio"])
    assert not math.isnan(row_column_score(torch.eye(24), (4, 6))["equal_distance_excess"])  # (0, 5) and (3, 4)
    assert math.isnan(row_column_score(torch.eye(25), (5, 5))["equal_distance_excess"])
