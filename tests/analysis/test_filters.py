import pytest
import torch

from kizuna.analysis.filters import patch_filter_pca


def test_random_filters_spread_variance_evenly():
    # D = 256 filters of n = C*P*P = 3*4*4 = 48 i.i.d. Gaussian dims. Every direction has
    # the same true variance (1/n of the total). The top sample eigenvalue is inflated by
    # at most ~(1 + sqrt(n/D))^2 ≈ 2.05 (Marchenko-Pastur edge), so the first ratio is
    # ≈ 2.05/48 ≈ 0.043; bound it by 3/n = 0.0625, far below a structured first component.
    D, C, P = 256, 3, 4
    n = C * P * P
    g = torch.Generator().manual_seed(0)
    w = torch.randn(D, C, P, P, generator=g)
    comps, ratio = patch_filter_pca(w, k=28)
    assert comps.shape == (28, C, P, P) and ratio.shape == (28,)
    assert comps.dtype == torch.float32 and ratio.dtype == torch.float32
    assert ratio[0] < 3.0 / n
    assert ratio[27] > 0.3 / n  # the tail is not empty either
    assert torch.all(ratio[:-1] >= ratio[1:])
    # the components are orthonormal
    flat = comps.reshape(28, -1).double()
    torch.testing.assert_close(flat @ flat.T, torch.eye(28, dtype=torch.float64), atol=1e-5, rtol=0)
    # all n components explain everything
    _, full = patch_filter_pca(w, k=1000)  # k is clamped to n
    assert full.shape == (n,)
    assert full.sum().item() == pytest.approx(1.0, abs=1e-5)


def test_structured_filters_three_components():
    D, C, P = 200, 3, 8
    n = C * P * P
    g = torch.Generator().manual_seed(1)
    basis = torch.randn(3, n, generator=g)
    coef = torch.randn(D, 3, generator=g) * torch.tensor([3.0, 2.0, 1.0]) + 0.5
    noise = 1e-3 * torch.randn(D, n, generator=g)
    w = (coef @ basis + noise).reshape(D, C, P, P)
    comps, ratio = patch_filter_pca(w, k=28)
    assert ratio[:3].sum() > 0.99
    assert ratio[3] < 1e-3
    # the top-3 components span the basis: projecting the basis onto them keeps it
    V = comps[:3].reshape(3, n).double()
    B = basis.double()
    proj = (B @ V.T) @ V
    torch.testing.assert_close(proj, B, atol=1e-3 * B.abs().max().item(), rtol=0)


def test_sign_convention_and_centering():
    g = torch.Generator().manual_seed(2)
    w = torch.randn(64, 1, 3, 3, generator=g)
    c1, r1 = patch_filter_pca(w, k=5)
    c2, r2 = patch_filter_pca(-w, k=5)  # same PCA up to sign -> same output
    torch.testing.assert_close(c1, c2, atol=1e-5, rtol=0)
    torch.testing.assert_close(r1, r2)
    flat = c1.reshape(5, -1)
    idx = flat.abs().argmax(1)
    assert (flat.gather(1, idx[:, None]) > 0).all()
    # a constant offset shared by all filters is removed by centring
    c3, r3 = patch_filter_pca(w + 5.0, k=5)
    torch.testing.assert_close(c3, c1, atol=1e-5, rtol=0)
    _, r_unc = patch_filter_pca(w + 5.0, k=5, center=False)
    assert r_unc[0] > 0.9  # without centring the mean dominates
    with pytest.raises(ValueError):
        patch_filter_pca(w.reshape(64, 9))


def test_centred_filters_give_one_component_fewer_than_there_are_filters():
    """8 centred filters span 7 directions: an 8th component (variance 1e-33) was drawn as a tile of noise."""
    w = torch.randn(8, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    comps, ratios = patch_filter_pca(w, k=16)
    assert comps.shape[0] == 7 and ratios.min() > 1e-6
    assert patch_filter_pca(w, k=16, center=False)[0].shape[0] == 8
