import math

import pytest
import torch

from kizuna.analysis.attention import (
    attention_distance_by_layer,
    attention_rollout,
    cls_rollout_map,
    fuse_heads,
    grid_mean_pairwise_distance,
    last_layer_cls_attention,
    mean_attention_distance,
    patch_distance_matrix,
    upsample_map,
)


def _random_attention(B, H, T, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, H, T, T, generator=g).softmax(dim=-1)


def _identity_attention(B, H, T):
    return torch.eye(T).expand(B, H, T, T).clone()


# --------------------------------------------------------------------------- rollout


def test_rollout_of_identity_is_identity():
    T = 1 + 3 * 4
    atts = [_identity_attention(2, 3, T) for _ in range(4)]
    for fusion in ("mean", "max", "min"):
        r = attention_rollout(atts, head_fusion=fusion)
        assert r.shape == (2, T, T)
        torch.testing.assert_close(r, torch.eye(T).expand(2, T, T))


def test_rollout_one_layer_is_renormalised_half_residual():
    # Non-stochastic rows so that the renormalisation matters.
    g = torch.Generator().manual_seed(1)
    A = torch.rand(2, 1, 5, 5, generator=g) * 3
    r = attention_rollout([A])
    expected = 0.5 * A[:, 0] + 0.5 * torch.eye(5)
    expected = expected / expected.sum(-1, keepdim=True)
    torch.testing.assert_close(r, expected)
    torch.testing.assert_close(r.sum(-1), torch.ones(2, 5))


def test_rollout_order_two_layer_hand_example():
    # Layer 1: every token attends to token 1; layer 2: every token attends to token 0.
    A1 = torch.tensor([[0.0, 1.0], [0.0, 1.0]]).expand(1, 1, 2, 2)
    A2 = torch.tensor([[1.0, 0.0], [1.0, 0.0]]).expand(1, 1, 2, 2)
    # Without residual: output <- token 0 (layer 2) <- input token 1 (layer 1).
    r = attention_rollout([A1, A2], add_residual=False)
    torch.testing.assert_close(r[0], torch.tensor([[0.0, 1.0], [0.0, 1.0]]))
    # With residual: Â1 = [[.5, .5], [0, 1]], Â2 = [[1, 0], [.5, .5]], Â2 @ Â1:
    r = attention_rollout([A1, A2])
    torch.testing.assert_close(r[0], torch.tensor([[0.5, 0.5], [0.25, 0.75]]))
    # The reverse order is a different answer (so the order is really checked).
    r_rev = attention_rollout([A2, A1])
    torch.testing.assert_close(r_rev[0], torch.tensor([[0.75, 0.25], [0.5, 0.5]]))


def test_rollout_head_fusion_and_stochastic_rows():
    atts = [_random_attention(2, 4, 7, seed=s) for s in range(3)]
    for fusion, fn in (("mean", torch.mean), ("max", torch.amax), ("min", torch.amin)):
        r = attention_rollout(atts, head_fusion=fusion)
        torch.testing.assert_close(r.sum(-1), torch.ones(2, 7))
        # Manual product for comparison.
        eye = torch.eye(7)
        acc = None
        for a in atts:
            f = fn(a, dim=1)
            f = 0.5 * f + 0.5 * eye
            f = f / f.sum(-1, keepdim=True)
            acc = f if acc is None else f @ acc
        torch.testing.assert_close(r, acc)
    torch.testing.assert_close(fuse_heads(atts[0], "max"), atts[0].amax(1))


def test_rollout_discard_ratio():
    atts = [_random_attention(1, 2, 10, seed=s) for s in range(2)]
    r = attention_rollout(atts, discard_ratio=0.5, add_residual=False)
    torch.testing.assert_close(r.sum(-1), torch.ones(1, 10))
    # Single layer without residual: exactly 5 of 10 entries per row survive.
    r1 = attention_rollout(atts[:1], discard_ratio=0.5, add_residual=False)
    assert ((r1 > 0).sum(-1) == 5).all()
    with pytest.raises(ValueError):
        attention_rollout(atts, discard_ratio=1.0)
    with pytest.raises(ValueError):
        attention_rollout(atts, head_fusion="median")
    with pytest.raises(ValueError):
        attention_rollout([])


def test_cls_maps():
    h, w = 2, 3
    T = 1 + h * w
    A = _random_attention(2, 3, T)
    m = last_layer_cls_attention([A, A], (h, w))
    assert m.shape == (2, 3, h, w)
    torch.testing.assert_close(m[1, 2, 1, 0], A[1, 2, 0, 1 + 1 * w + 0])
    r = attention_rollout([A])
    cm = cls_rollout_map(r, (h, w))
    assert cm.shape == (2, h, w)
    torch.testing.assert_close(cm.flatten(1), r[:, 0, 1:])
    cmn = cls_rollout_map(r, (h, w), normalize=True)
    torch.testing.assert_close(cmn.flatten(1).amin(1), torch.zeros(2))
    torch.testing.assert_close(cmn.flatten(1).amax(1), torch.ones(2))
    with pytest.raises(ValueError):
        cls_rollout_map(r, (3, 3))


# --------------------------------------------------------------------------- distance


def test_grid_mean_pairwise_distance_2x2():
    # 16 ordered pairs: 4 self (0), 8 neighbours (1), 4 diagonals (sqrt 2).
    expected = (8 + 4 * math.sqrt(2)) / 16 * 16
    assert grid_mean_pairwise_distance((2, 2), 16) == pytest.approx(expected)
    d = patch_distance_matrix((2, 3), 4)
    assert d[0, 5].item() == pytest.approx(4 * math.sqrt(1 + 4))  # (0,0) -> (1,2)


def test_mean_attention_distance_self_is_zero():
    h, w = 3, 4
    A = _identity_attention(2, 3, 2 + h * w)
    d = mean_attention_distance(A, (h, w), patch_size=16, num_prefix=2)
    assert d.shape == (3,)
    torch.testing.assert_close(d, torch.zeros(3))


def test_mean_attention_distance_uniform_equals_grid_mean():
    h, w, P = 3, 5, 8
    N, T = h * w, 1 + h * w
    A = torch.zeros(1, 2, T, T)
    A[..., 1:] = 1.0 / N
    # Head 1 also puts half its mass on the class token: renormalisation must remove it.
    A[:, 1] *= 0.5
    A[:, 1, :, 0] = 0.5
    d = mean_attention_distance(A, (h, w), patch_size=P)
    expected = grid_mean_pairwise_distance((h, w), P)
    torch.testing.assert_close(d, torch.full((2,), expected), atol=1e-5, rtol=1e-5)


def test_mean_attention_distance_neighbour_is_patch_size():
    h, w, P = 3, 5, 16  # non-square: a row/column mix-up would change the answer
    N, T = h * w, 1 + h * w
    A = torch.zeros(1, 3, T, T)
    A[:, :, 0, 0] = 1.0  # class token row, ignored
    for q in range(N):
        r, c = divmod(q, w)
        # head 0: right neighbour, left neighbour on the last column -> always one patch
        k0 = q + 1 if c < w - 1 else q - 1
        # head 1: right neighbour, itself on the last column -> (w-1)/w patches on average
        k1 = q + 1 if c < w - 1 else q
        # head 2: patch below, patch above on the last row -> always one patch
        k2 = q + w if r < h - 1 else q - w
        for head, k in enumerate((k0, k1, k2)):
            A[0, head, 1 + q, 1 + k] = 1.0
    d = mean_attention_distance(A, (h, w), patch_size=P)
    torch.testing.assert_close(d, torch.tensor([P, P * (w - 1) / w, P], dtype=torch.float32))
    layers = attention_distance_by_layer([A, _identity_attention(1, 3, T)], (h, w), P)
    assert len(layers) == 2 and layers[1].abs().max() == 0


def test_mean_attention_distance_ignores_rows_without_patch_mass():
    h, w = 2, 2
    T = 1 + h * w
    A = torch.zeros(1, 1, T, T)
    A[0, 0, 1:, 0] = 1.0  # every patch looks only at the class token ...
    A[0, 0, 1, 1 + 3] = 1.0  # ... except patch 0, which looks at its diagonal partner
    d = mean_attention_distance(A, (h, w), patch_size=1)
    torch.testing.assert_close(d, torch.tensor([math.sqrt(2)]))


def test_mean_attention_distance_shape_checks():
    A = torch.rand(1, 2, 10, 10)
    assert mean_attention_distance(A, (3, 3), 16).shape == (2,)  # 1 + 3*3 tokens
    with pytest.raises(ValueError):
        mean_attention_distance(A, (3, 4), 16)
    with pytest.raises(ValueError):
        mean_attention_distance(A, (3, 3), 16, num_prefix=0)
    with pytest.raises(ValueError):
        mean_attention_distance(A[0], (3, 3), 16)


def test_upsample_map():
    m = torch.full((2, 3), 0.25)
    up = upsample_map(m, (8, 12))
    assert up.shape == (8, 12)
    torch.testing.assert_close(up, torch.full((8, 12), 0.25))
    batch = upsample_map(torch.rand(4, 2, 2), 6, mode="nearest")
    assert batch.shape == (4, 6, 6)
    # nearest upsampling of a 2x2 map gives 3x3 constant blocks
    assert torch.equal(batch[:, :3, :3], batch[:, :1, :1].expand(4, 3, 3))


def test_rollout_discards_floor_of_ratio_times_keys_without_a_floating_point_shortfall():
    """0.29 * 100 is 28.999999999999996 in floating point: int() zeroed 28 keys per row, not the 29 the
    docstring's floor(discard_ratio * T) promises."""
    from kizuna.analysis.attention import _discard_lowest

    a = torch.arange(1.0, 101.0).repeat(2, 1)  # two query rows over 100 keys, all distinct
    for ratio, zeroed in ((0.29, 29), (0.57, 57), (0.5, 50), (0.299, 29), (1 - 1e-12, 99)):
        assert int((_discard_lowest(a, ratio) == 0).sum(-1)[0]) == zeroed
