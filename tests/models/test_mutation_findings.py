"""Numbers of the ViT and text towers and of two analysis helpers, checked against references computed
here (hand-built inputs, F.interpolate, numpy), where the older tests checked only shapes or counts."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from kizuna.analysis.attention import attention_rollout
from kizuna.analysis.augmentation import pixel_stats
from kizuna.models.text import TextConfig, TextTransformer
from kizuna.models.vit import VisionConfig, VisionTransformer, resample_pos_embed


def _vit(**kw) -> VisionTransformer:
    cfg = dict(image_size=32, patch_size=8, width=16, depth=1, heads=2, mlp_dim=32)
    cfg.update(kw)
    return VisionTransformer(VisionConfig(**cfg))


# ----- FLIP patch dropout -----------------------------------------------------------------------

def _labelled_patch_vit() -> VisionTransformer:
    """A 4x4-grid ViT whose tokens entering the blocks say which patch they are: the patch embedding and
    the class token are zero and channel 0 of patch i's position embedding is i + 1 (the class token's 0)."""
    vit = _vit()
    with torch.no_grad():
        vit.patch_embed.proj.weight.zero_()
        vit.patch_embed.proj.bias.zero_()
        vit.cls_token.zero_()
        vit.pos_embed.zero_()
        vit.pos_embed[0, 1:, 0] = torch.arange(1, 17, dtype=torch.float32)
    return vit


def _blocks_input(vit: VisionTransformer, x: torch.Tensor) -> torch.Tensor:
    seen = []
    handle = vit.transformer.register_forward_pre_hook(lambda mod, args: seen.append(args[0].detach().clone()))
    try:
        with torch.no_grad():
            vit(x)
    finally:
        handle.remove()
    assert len(seen) == 1
    return seen[0]


def test_patch_dropout_keeps_the_share_one_minus_p_of_the_patches():
    """FLIP's ratio is the share of patches *dropped*: at 0.75 a 16-patch image keeps round(16 * 0.25) = 4
    patch tokens (plus the class token), not 12; 0.5 (the only share tested before) cannot tell them apart."""
    vit = _labelled_patch_vit()
    vit.train()
    x = torch.randn(3, 3, 32, 32)
    for p, kept in ((0.75, 4), (0.25, 12), (0.9, 2)):  # round(16 * 0.1) = round(1.6) = 2
        vit.patch_dropout = p
        torch.manual_seed(0)
        tokens = _blocks_input(vit, x)
        assert tokens.shape == (3, 1 + kept, 16), (p, tokens.shape)
        # the class token first, then distinct real patches
        assert (tokens[:, 0, 0] == 0).all()
        ids = tokens[:, 1:, 0].round().long()
        assert ((ids >= 1) & (ids <= 16)).all()
        assert all(len(set(row.tolist())) == kept for row in ids)
    vit.eval()
    assert _blocks_input(vit, x).shape == (3, 1 + 16, 16)


def test_patch_dropout_draws_a_random_set_for_each_image():
    """Each image keeps its own random subset of patches, not the first `keep` of every image."""
    vit = _labelled_patch_vit()
    vit.train()
    vit.patch_dropout = 0.5
    torch.manual_seed(1234)
    ids = _blocks_input(vit, torch.randn(6, 3, 32, 32))[:, 1:, 0].round().long()
    sets = [frozenset(row.tolist()) for row in ids]
    assert all(len(s) == 8 for s in sets)
    assert len(set(sets)) > 1, "every image kept the same patches"
    assert any(s != frozenset(range(1, 9)) for s in sets)
    # over several images every patch is kept by some image (a fixed prefix would never keep 9..16)
    assert set().union(*sets) == set(range(1, 17))


# ----- pooling ----------------------------------------------------------------------------------

def test_gap_and_max_pooling_leave_out_the_class_token():
    """gap is the mean and max the per-channel max of the patch tokens only (tokens[:, 1:]); a class token
    far off both must not move them."""
    tokens = torch.zeros(2, 1 + 4, 16)
    tokens[:, 0] = 100.0  # class token
    tokens[:, 1:, :] = torch.tensor([0.0, 1.0, 2.0, 5.0])[None, :, None]
    tokens[1, 1:] *= -1
    gap = _vit(pool="gap")
    torch.testing.assert_close(gap.pool(tokens), tokens[:, 1:].mean(1))
    torch.testing.assert_close(gap.pool(tokens)[0], torch.full((16,), 2.0))
    mx = _vit(pool="max")
    torch.testing.assert_close(mx.pool(tokens)[0], torch.full((16,), 5.0))
    torch.testing.assert_close(mx.pool(tokens)[1], torch.zeros(16))


def test_gap_and_max_forward_pool_the_final_normed_patch_tokens():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    for pool, reduce in (("gap", lambda t: t.mean(1)), ("max", lambda t: t.amax(1))):
        vit = _vit(pool=pool).eval()
        with torch.no_grad():
            feats = vit.forward_features(x)  # [B, 1 + 16, D] after the final LayerNorm
            assert feats.shape == (2, 17, 16)
            torch.testing.assert_close(vit(x), reduce(feats[:, 1:]))
            assert not torch.allclose(vit(x), reduce(feats), atol=1e-4)


# ----- position-embedding resampling ------------------------------------------------------------

def test_resample_pos_embed_of_a_non_square_grid_keeps_rows_and_columns():
    """A 2x3 table (row-major: patch (r, c) is token 1 + 3r + c) resampled to 4x6 is F.interpolate of the
    [D, 2, 3] image (bicubic, align_corners=False, no antialias, as documented); the class token kept."""
    torch.manual_seed(0)
    D = 5
    pe = torch.randn(1, 1 + 6, D)
    image = torch.empty(1, D, 2, 3)
    for r in range(2):
        for c in range(3):
            image[0, :, r, c] = pe[0, 1 + 3 * r + c]
    ref = F.interpolate(image, size=(4, 6), mode="bicubic", align_corners=False, antialias=False)
    out = resample_pos_embed(pe, (4, 6), old_grid=(2, 3))
    assert out.shape == (1, 1 + 24, D)
    torch.testing.assert_close(out[0, 0], pe[0, 0])
    for r in range(4):
        for c in range(6):
            torch.testing.assert_close(out[0, 1 + 6 * r + c], ref[0, :, r, c])
    # bilinear too; and a table that varies by row only resamples to one that varies by row only
    lin = resample_pos_embed(pe, (4, 6), old_grid=(2, 3), mode="bilinear")
    ref = F.interpolate(image, size=(4, 6), mode="bilinear", align_corners=False)
    torch.testing.assert_close(lin[0, 1:], ref[0].permute(1, 2, 0).reshape(24, D))
    rows = torch.zeros(1, 1 + 6, 1)
    rows[0, 1:, 0] = torch.tensor([0.0, 0.0, 0.0, 1.0, 1.0, 1.0])  # row r of the 2x3 grid holds r
    grid = resample_pos_embed(rows, (4, 6), old_grid=(2, 3))[0, 1:, 0].reshape(4, 6)
    assert torch.allclose(grid, grid[:, :1].expand(4, 6))
    assert grid[0, 0] < grid[1, 0] < grid[2, 0] < grid[3, 0]


# ----- text tower: the padding trim is for causal towers only -----------------------------------

def test_bidirectional_eot_tower_is_not_trimmed():
    """A non-causal tower pooled at the end-of-text token sees the padding after it, so cutting the batch
    to the last EOT would change its output: forward must equal the untrimmed features at the EOT."""
    torch.manual_seed(0)
    cfg = TextConfig(vocab_size=50, context_length=8, width=16, depth=2, heads=2, mlp_dim=32, causal=False,
                     pool="eot", eot_token_id=49, output_dim=8)
    tower = TextTransformer(cfg).eval()
    tokens = torch.tensor([[3, 7, 9, 49, 0, 0, 0, 0],
                           [4, 49, 0, 0, 0, 0, 0, 0]])
    eot = torch.tensor([3, 1])
    assert tower.positions_run(tokens) == 8
    with torch.no_grad():
        feats = tower.forward_features(tokens)  # the whole length, bidirectional
        ref = tower.proj(feats[torch.arange(2), eot])
        for prune in (True, False):
            tower.prune_last_block = prune
            torch.testing.assert_close(tower(tokens), ref)
        # the trim would have changed it (the check above is not vacuous)
        short = tower.forward_features(tokens[:, :4])
        assert not torch.allclose(tower.proj(short[torch.arange(2), eot]), ref, atol=1e-4)


# ----- attention rollout: discard_ratio drops each row's weakest attention ----------------------

def test_rollout_discard_zeroes_each_rows_smallest_entries():
    """One layer, no residual: the floor(ratio * T) smallest entries of every row (any column, the class
    token's included) are zeroed and the row renormalised."""
    a = torch.tensor([[0.50, 0.30, 0.15, 0.05],
                      [0.10, 0.20, 0.30, 0.40],
                      [0.05, 0.60, 0.25, 0.10],
                      [0.25, 0.35, 0.28, 0.12]])
    out = attention_rollout([a[None, None]], add_residual=False, discard_ratio=0.5)[0]  # 2 of 4 dropped
    ref = a.numpy().copy()
    for row in ref:
        row[np.argsort(row)[:2]] = 0.0
    ref /= ref.sum(-1, keepdims=True)
    torch.testing.assert_close(out, torch.from_numpy(ref))
    torch.testing.assert_close(out[0], torch.tensor([0.625, 0.375, 0.0, 0.0]))
    # with the residual: row [.78, .22, 0] drops its 0 (floor(0.34 * 3) = 1)
    b = torch.tensor([[0.78, 0.22, 0.0], [0.1, 0.2, 0.7], [0.3, 0.3, 0.4]])
    r = attention_rollout([b[None, None]], discard_ratio=0.34)[0]
    torch.testing.assert_close(r[0], torch.tensor([0.89, 0.11, 0.0]))


# ----- augmentation pixel statistics ------------------------------------------------------------

def test_pixel_stats_on_hand_built_images():
    """Grey fill is (128, 128, 128) in all three channels (a pure-red-ish (128, 0, 0) is not); the per-image
    spread is each image's own std, averaged (two flat images of different levels have 0)."""
    x = np.zeros((2, 2, 2, 3), dtype=np.uint8)
    x[0] = 128           # image 0: flat grey, all 4 pixels grey fill
    x[1] = (128, 0, 0)   # image 1: flat, no grey fill
    st = pixel_stats(x)
    assert st["images"] == 2
    assert st["grey_fill"] == 0.5
    # each image's spread over all its values (channels included): 0 and std(128, 0, 0), averaged
    assert np.isclose(st["per_image_std"], (0.0 + np.std([128.0, 0.0, 0.0])) / 2)
    # global spread over all values of both images: 128 x 16, 0 x 8
    vals = x.astype(np.float64).ravel()
    assert np.isclose(st["std"], vals.std()) and np.isclose(st["std"], 128 * np.sqrt(2) / 3)
    y = np.zeros((2, 1, 2, 3), dtype=np.uint8)
    y[0, 0, 1] = 255     # image 0: 3 values of 255 among 6 -> std 127.5; image 1: flat black -> 0
    assert np.isclose(pixel_stats(y)["per_image_std"], 127.5 / 2)
    assert np.isclose(pixel_stats(y)["std"], np.sqrt(0.25 * 0.75) * 255)
    assert pixel_stats(y)["black"] == 0.75 and pixel_stats(y)["saturated"] == 0.25


def test_resample_pos_embed_takes_every_interpolate_mode():
    """mode="nearest" (also "area", "nearest-exact") raised: align_corners was passed for every mode."""
    table = torch.randn(1, 1 + 2 * 3, 4)
    for mode in ("nearest", "nearest-exact", "area"):
        out = resample_pos_embed(table, (4, 6), old_grid=(2, 3), mode=mode)
        grid = table[0, 1:].reshape(2, 3, 4).permute(2, 0, 1)[None]
        expected = F.interpolate(grid, size=(4, 6), mode=mode)[0].permute(1, 2, 0).reshape(24, 4)
        torch.testing.assert_close(out[0, 1:], expected)
