import math

import pytest
import torch

from kizuna.analysis.position import (
    position_similarity,
    row_column_score,
    sincos_1d_position_embedding,
    sincos_2d_position_embedding,
)


def test_sincos_2d_layout():
    h, w, D = 3, 4, 16
    pe = sincos_2d_position_embedding((h, w), D)
    assert pe.shape == (h * w, D) and pe.dtype == torch.float32
    # position (0, 0): sin parts 0, cos parts 1
    torch.testing.assert_close(pe[0], torch.tensor(([0.0] * 4 + [1.0] * 4) * 2))
    # first half encodes the column, second half the row (MAE layout)
    for i in range(h * w):
        r, c = divmod(i, w)
        torch.testing.assert_close(pe[i, : D // 2], pe[c, : D // 2])
        torch.testing.assert_close(pe[i, D // 2 :], pe[r * w, D // 2 :])
    # frequencies: omega_j = 10000^(-j / (D/4)) for the D/4 = 4 pairs
    one_d = sincos_1d_position_embedding(torch.tensor([2.0]), 8)[0]
    omega = torch.tensor([10000 ** (-j / 4) for j in range(4)], dtype=torch.float64)
    torch.testing.assert_close(one_d, torch.cat([torch.sin(2 * omega), torch.cos(2 * omega)]))
    with_cls = sincos_2d_position_embedding((h, w), D, num_prefix=1)
    assert with_cls.shape == (1 + h * w, D)
    assert with_cls[0].abs().sum() == 0
    torch.testing.assert_close(with_cls[1:], pe)
    with pytest.raises(ValueError):
        sincos_2d_position_embedding((h, w), 18)


def test_position_similarity_shapes():
    h, w = 3, 5
    g = torch.Generator().manual_seed(0)
    pe = torch.randn(1, 1 + h * w, 32, generator=g)
    sim = position_similarity(pe, (h, w))
    assert sim.shape == (h * w, h, w)
    flat = sim.reshape(h * w, h * w)
    torch.testing.assert_close(flat.diagonal(), torch.ones(h * w))
    torch.testing.assert_close(flat, flat.T)
    # patch (1, 2) vs patch (2, 4), by hand
    a, b = pe[0, 1 + 1 * w + 2], pe[0, 1 + 2 * w + 4]
    assert sim[1 * w + 2, 2, 4].item() == pytest.approx(
        (a @ b / (a.norm() * b.norm())).item(), abs=1e-5
    )
    torch.testing.assert_close(position_similarity(pe[0], (h, w)), sim)
    with pytest.raises(ValueError):
        position_similarity(pe, (h, w), num_prefix=0)


def test_row_column_score_hand_matrix():
    h, w = 3, 4
    n = h * w
    sim = torch.zeros(n, n)
    for i in range(n):
        for j in range(n):
            ri, ci = divmod(i, w)
            rj, cj = divmod(j, w)
            sim[i, j] = 1.0 if i == j else (0.6 if ri == rj else (0.3 if ci == cj else -0.1))
    s = row_column_score(sim.reshape(n, h, w), (h, w))
    assert s["same_row"] == pytest.approx(0.6)
    assert s["same_col"] == pytest.approx(0.3)
    assert s["other"] == pytest.approx(-0.1)
    # line pairs per query: w-1 = 3 same-row, h-1 = 2 same-column
    line = (3 * 0.6 + 2 * 0.3) / 5
    assert s["line"] == pytest.approx(line)
    assert s["ratio"] == pytest.approx((1 + line) / (1 - 0.1))
    flat = row_column_score(sim, (h, w))  # [N, N] accepted as well
    assert flat.keys() == s.keys() and all(flat[k] == s[k] or (flat[k] != flat[k] and s[k] != s[k]) for k in s)


def test_sincos_shows_row_column_structure():
    grid = (8, 8)
    pe = sincos_2d_position_embedding(grid, 128, num_prefix=1)
    s = row_column_score(position_similarity(pe, grid), grid)
    # sin-cos similarities are high everywhere (low frequencies barely change), but a
    # shared row (or column) makes half of the channels identical: 0.92 vs 0.84 here.
    assert s["same_row"] > s["other"] + 0.05
    assert s["same_col"] > s["other"] + 0.05
    assert s["ratio"] > 1.02  # 1.044


def test_random_embeddings_have_no_row_column_structure():
    grid = (8, 8)
    g = torch.Generator().manual_seed(0)
    pe = torch.randn(1 + 64, 256, generator=g)
    s = row_column_score(position_similarity(pe, grid), grid)
    # cosine of independent Gaussians ~ N(0, 1/256): the means are within a few 1e-3 of 0
    for key in ("same_row", "same_col", "other"):
        assert abs(s[key]) < 0.02, (key, s)
    assert s["ratio"] == pytest.approx(1.0, abs=0.01)
    assert not math.isnan(s["ratio"])
