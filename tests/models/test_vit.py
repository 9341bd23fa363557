import pytest
import torch

import kizuna
from kizuna.models.presets import VIT_SIZES
from kizuna.models.vit import VisionConfig, VisionTransformer, resample_pos_embed


def tiny_vit(**kw) -> VisionTransformer:
    cfg = dict(image_size=32, patch_size=8, width=32, depth=2, heads=2, mlp_dim=64)
    cfg.update(kw)
    return VisionTransformer(VisionConfig(**cfg))


def test_patch_embedding_is_linear_projection_of_flattened_patches():
    vit = tiny_vit()
    x = torch.randn(2, 3, 32, 32)
    conv = vit.patch_embed(x).flatten(2).transpose(1, 2)  # [B, N, D]
    patches = x.unfold(2, 8, 8).unfold(3, 8, 8)  # [B, C, 4, 4, 8, 8]
    patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(2, 16, 3 * 64)
    w = vit.patch_embed.proj.weight.reshape(32, -1)
    torch.testing.assert_close(conv, patches @ w.T + vit.patch_embed.proj.bias, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("size,patch,bias", [(32, 8, True), (35, 8, False), (12, 1, True)])
@pytest.mark.parametrize("gemm", [True, False])
def test_patch_embedding_equals_the_conv_whose_weights_it_holds(size, patch, bias, gemm, monkeypatch):
    """The reshape + GEMM computes what the checkpoint's conv (kernel = stride = P) computes, gradients included;
    rows and columns past the last whole patch (35 px at P = 8) are dropped, as the conv drops them."""
    from kizuna.models import vit
    from kizuna.models.vit import PatchEmbed

    monkeypatch.setattr(vit, "PATCH_GEMM", gemm)  # Intel's path and everyone else's
    torch.manual_seed(0)
    pe = PatchEmbed(patch, 3, 16, bias)
    x = torch.randn(2, 3, size, size, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_(True)
    out = pe(x)
    ref = torch.nn.functional.conv2d(x_ref, pe.proj.weight, pe.proj.bias, stride=patch)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    g = torch.randn_like(ref)
    grads = torch.autograd.grad(out, [x, pe.proj.weight], g)
    ref_grads = torch.autograd.grad(ref, [x_ref, pe.proj.weight], g)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_head_is_zero_initialised_and_reset_classifier():
    vit = tiny_vit(num_classes=10)
    assert torch.all(vit.head.weight == 0) and torch.all(vit.head.bias == 0)
    assert torch.all(vit(torch.randn(2, 3, 32, 32)) == 0)
    vit.head.weight.data.normal_()
    vit.reset_classifier(5)
    assert vit.head.weight.shape == (5, 32) and torch.all(vit.head.weight == 0)


@pytest.mark.parametrize("pool,cls", [("cls", True), ("gap", True), ("gap", False), ("map", False)])
def test_pooling_options(pool, cls):
    vit = tiny_vit(pool=pool, class_token=cls)
    assert vit(torch.randn(3, 3, 32, 32)).shape == (3, 32)


def test_sdpa_matches_plain_attention():
    torch.manual_seed(0)
    vit = tiny_vit().eval()
    x = torch.randn(2, 3, 32, 32)
    fast = vit(x)
    for m in vit.modules():
        if hasattr(m, "use_sdpa"):
            m.use_sdpa = False
    torch.testing.assert_close(vit(x), fast, atol=1e-5, rtol=1e-5)


def test_gradient_checkpointing_same_outputs_and_grads():
    torch.manual_seed(0)
    vit = tiny_vit().train()
    x = torch.randn(2, 3, 32, 32)
    out1 = vit(x)
    out1.square().sum().backward()
    g1 = {n: p.grad.clone() for n, p in vit.named_parameters()}
    vit.zero_grad()
    vit.set_grad_checkpointing(True)
    out2 = vit(x)
    out2.square().sum().backward()
    torch.testing.assert_close(out2, out1, atol=1e-6, rtol=1e-6)
    for n, p in vit.named_parameters():
        torch.testing.assert_close(p.grad, g1[n], atol=1e-6, rtol=1e-5, msg=n)


def test_intermediates_return_every_block_and_attention():
    vit = tiny_vit(depth=3).eval()
    out = vit.forward_intermediates(torch.randn(2, 3, 32, 32))
    assert len(out["tokens"]) == 3 and len(out["attentions"]) == 3
    a = out["attentions"][0]
    assert a.shape == (2, 2, 17, 17)
    torch.testing.assert_close(a.sum(-1), torch.ones(2, 2, 17))
    torch.testing.assert_close(out["pooled"], vit.forward_head(out["features"], pre_logits=True))


def test_resample_same_size_returns_identical_tensor():
    pe = torch.randn(1, 50, 16)
    assert resample_pos_embed(pe, (7, 7)) is pe


def test_resample_7_to_14_then_forward():
    vit = tiny_vit(image_size=56, patch_size=8)  # 7x7 grid
    pe = resample_pos_embed(vit.pos_embed.data, (14, 14))
    assert pe.shape == (1, 1 + 196, 32)
    torch.testing.assert_close(pe[:, :1], vit.pos_embed.data[:, :1])  # class token kept aside
    big = tiny_vit(image_size=112, patch_size=8)
    big.pos_embed.data.copy_(pe)
    assert big(torch.randn(1, 3, 112, 112)).shape == (1, 32)
    # dynamic: the 56-px model takes a 112-px input by resampling on the fly, with the same result
    big.load_state_dict(vit.state_dict() | {"pos_embed": pe})
    x = torch.randn(1, 3, 112, 112)
    torch.testing.assert_close(vit.eval()(x), big.eval()(x))


def test_resample_non_square_grid():
    pe = torch.randn(1, 1 + 4 * 6, 8)
    out = resample_pos_embed(pe, (8, 3), old_grid=(4, 6))
    assert out.shape == (1, 1 + 24, 8)
    vit = tiny_vit(image_size=(32, 48))
    assert vit.cfg.grid == (4, 6) and vit(torch.randn(1, 3, 32, 48)).shape == (1, 32)


def test_patch_dropout_only_in_training():
    vit = tiny_vit()
    vit.patch_dropout = 0.5
    x = torch.randn(2, 3, 32, 32)
    vit.train()
    tokens, _ = vit.embed(x)
    assert tokens.shape[1] == 1 + 8
    vit.eval()
    tokens, _ = vit.embed(x)
    assert tokens.shape[1] == 1 + 16


def test_resnet_stem_normalises_in_fp32_under_autocast_and_in_bf16_in_a_bf16_model():
    """CPU autocast runs group_norm in its input's dtype (CUDA's in fp32), so the stem's statistics would come
    from bf16 convolution outputs; the stem's GroupNorms compute in their float32 parameters' dtype instead."""
    vit = kizuna.create_vit("hybrid-mu/1", image_size=32, num_classes=10, stem_channels=[16, 32])
    norms = [m for m in vit.stem.modules() if isinstance(m, torch.nn.GroupNorm)]
    seen = []
    for m in norms:
        m.register_forward_hook(lambda module, args, out: seen.append((args[0].dtype, out.dtype)))
    x = torch.randn(2, 3, 32, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        vit(x)
    assert len(seen) == len(norms) == 7
    assert {o for _, o in seen} == {torch.float32} and torch.bfloat16 in {i for i, _ in seen}
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the whole stem agrees with fp32 to bf16 rounding
        close = vit.stem(x).float()
    ref = vit.stem(x)
    assert torch.nn.functional.cosine_similarity(close.flatten(1), ref.flatten(1)).min() > 0.999
    seen.clear()
    vit.to(torch.bfloat16)(x)
    assert {o for _, o in seen} == {torch.bfloat16}


def test_hybrid_stem_embeds_feature_map_with_patch_size_one():
    vit = kizuna.create_vit("hybrid-mu/1", image_size=32, num_classes=10, stem_channels=[16, 32])
    assert vit.cfg.grid == (8, 8) and vit.pos_embed.shape[1] == 65
    vit.head.weight.data.normal_()
    vit(torch.randn(2, 3, 32, 32)).sum().backward()
    assert all(p.grad is not None for p in vit.parameters())


def test_conv_stem_pools_between_convs_and_sets_the_grid():
    vit = kizuna.create_vit("mu/1", image_size=48, num_classes=6, stem="conv", stem_channels=[8, 16, 16, 32],
                            class_token=False, pool="max")
    convs = [m for m in vit.stem.modules() if isinstance(m, torch.nn.Conv2d)]
    pools = [m for m in vit.stem.modules() if isinstance(m, torch.nn.MaxPool2d)]
    assert [c.out_channels for c in convs] == [8, 16, 16, 32] and len(pools) == 3
    assert vit.cfg.stem_stride == 8 and vit.cfg.grid == (6, 6) and vit.pos_embed.shape[1] == 36
    assert vit.stem(torch.randn(1, 3, 48, 48)).shape == (1, 32, 6, 6)
    vit.head.weight.data.normal_()
    vit(torch.randn(2, 3, 48, 48)).sum().backward()
    assert all(p.grad is not None for p in vit.parameters())


def test_max_pool_is_the_channelwise_max_over_patch_tokens():
    vit = kizuna.create_vit("mu/8", image_size=32, num_classes=0, class_token=False, pool="max").eval()
    tokens = vit.forward_features(torch.randn(2, 3, 32, 32))
    assert torch.equal(vit.pool(tokens), tokens.max(dim=1).values)
    with pytest.raises(ValueError, match="'max'"):
        VisionConfig(pool="sum")


def test_norm_after_pool_normalises_the_pooled_feature_not_the_tokens():
    x = torch.randn(2, 3, 32, 32)
    before = kizuna.create_vit("mu/8", image_size=32, num_classes=0, class_token=False, pool="max").eval()
    after = kizuna.create_vit("mu/8", image_size=32, num_classes=0, class_token=False, pool="max",
                              norm_after_pool=True).eval()
    after.load_state_dict(before.state_dict())  # same parameters: only the order of LayerNorm and pooling differs
    raw = after.forward_features(x)
    assert torch.allclose(before.forward_features(x), before.norm(raw), atol=1e-6)
    assert torch.allclose(after.pool(raw), after.norm(raw.max(dim=1).values), atol=1e-6)
    assert not torch.allclose(after(x), before(x), atol=1e-3)
    assert torch.allclose(after.forward_intermediates(x)["pooled"], after.pool(raw), atol=1e-6)


@pytest.mark.parametrize("size", [s for s in VIT_SIZES])
def test_vit_variants_decode_and_train_at_tiny_width(size):
    cfg = kizuna.vit_config(f"{size}/8", image_size=16, num_classes=3)
    ref = dict(width=cfg.width, depth=cfg.depth, heads=cfg.heads)
    expected = {"Ti": (192, 12, 3), "S": (384, 12, 6), "B": (768, 12, 12), "L": (1024, 24, 16), "H": (1280, 32, 16)}
    if size in expected:
        assert (ref["width"], ref["depth"], ref["heads"]) == expected[size]
    small = VisionTransformer(VisionConfig(**{**cfg.to_dict(), "width": 8 * cfg.heads, "depth": 2, "mlp_dim": 16 * cfg.heads}))
    small.head.weight.data.normal_()
    small(torch.randn(2, 3, 16, 16)).sum().backward()
    missing = [n for n, p in small.named_parameters() if p.grad is None]
    assert not missing


def test_a_patch_size_that_does_not_divide_the_image_is_named():
    """S/5 at 32 px sees a 6x6 grid of 30 px: the last two rows and columns of pixels are dropped, so say so."""
    with pytest.warns(UserWarning, match=r"image_size 32x32 is not a multiple of patch_size 5: the patch grid is "
                                         r"6x6 and the last 2 pixel rows and 2 columns are never seen"):
        vit = tiny_vit(patch_size=5)
    assert vit(torch.randn(1, 3, 32, 32)).shape[0] == 1
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tiny_vit(patch_size=8, image_size=(32, 16))  # divides: nothing to say
        tiny_vit(patch_size=1, image_size=32, stem="conv", stem_channels=[8, 16])
    # the conv stem's max-pool rounds down as the grid does: 15x15 features, the last pixel row unseen
    with pytest.warns(UserWarning, match=r"not a multiple of the conv stem's stride x patch_size = 2: the patch "
                                         r"grid is 15x15 and the last 1 pixel rows and 1 columns are never seen"):
        conv = tiny_vit(patch_size=1, image_size=31, stem="conv", stem_channels=[8, 16])
    assert tuple(conv.embed(torch.randn(1, 3, 31, 31))[1]) == (15, 15)  # the grid: no resampling
    # the ResNet stem's padded stride-2 convolutions round up: 16x16 features for a 15x15 grid
    with pytest.warns(UserWarning, match=r"resnet stem's stride x patch_size = 2.*larger than the 15x15 grid"):
        tiny_vit(patch_size=1, image_size=31, stem="resnet", stem_channels=[8])


@pytest.mark.parametrize("channels", [[18], [30], [136], [200]])
def test_the_resnet_stem_builds_with_any_channel_count(channels):
    """GroupNorm needs groups that divide the channels: min(32, c // 4) groups failed for these."""
    vit = tiny_vit(patch_size=1, image_size=16, stem="resnet", stem_channels=channels)
    assert vit(torch.randn(1, 3, 16, 16)).shape[0] == 1


def test_bad_image_shape_is_clear():
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        tiny_vit()(torch.randn(2, 1, 32, 32))


@pytest.mark.parametrize("kw", [dict(class_token=False, pool="gap"), dict(stem="conv", stem_channels=[8, 16],
                                                                          patch_size=1, class_token=False, pool="gap")])
def test_residual_stream_stays_fp32_under_autocast_and_bf16_in_a_bf16_model(kw):
    """Autocast runs the patch embedding (or stem) in bf16; without a class token to promote it, the tokens would
    carry bf16 through every residual add. They take the fp32 position embedding's dtype instead, as on GPU
    autocast and as the text tower's do; a bf16 model keeps bf16 throughout."""
    vit = tiny_vit(**kw)
    seen = []
    vit.transformer.register_forward_pre_hook(lambda module, args: seen.append(args[0].dtype))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        pooled = vit(torch.randn(2, 3, 32, 32))
    assert seen == [torch.float32]
    assert pooled.dtype == torch.float32  # the pooled tokens; autocast'd matmuls elsewhere are still bf16
    vit.to(torch.bfloat16)
    vit(torch.randn(2, 3, 32, 32))
    assert seen[-1] == torch.bfloat16


@pytest.mark.parametrize("where", ["blocks.0.mlp.fc1", "blocks.1.attn.qkv", "blocks.1.mlp.act"])
def test_a_forward_hook_inside_a_block_is_honoured_without_gradients(where):
    """The fused inference path ran a block's GEMMs itself and looked for hooks only on the block's
    attention, MLP and norms: a hook on fc1 that zeroes its output changed nothing under no_grad, and the
    pooled last block (class-token row only) skipped hooks on its qkv."""
    torch.manual_seed(0)
    model = VisionTransformer(VisionConfig(image_size=16, patch_size=4, width=32, depth=2, heads=2, num_classes=3)).eval()
    torch.nn.init.normal_(model.head.weight)  # zero-initialised: every input would give the same logits
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        before = model(x)
    calls = []

    def zero(module, args, output):
        calls.append(tuple(output.shape))
        return torch.zeros_like(output)

    handle = model.get_submodule(where.replace("blocks", "transformer.blocks")).register_forward_hook(zero)
    try:
        with torch.no_grad():
            hooked = model(x)
        reference = model(x)  # with gradients: the unfused path, which calls every module
    finally:
        handle.remove()
    assert calls and calls[0][:2] == (2, 17)  # every token of both images went through the hook
    assert not torch.allclose(hooked, before)
    torch.testing.assert_close(hooked, reference.detach())


def test_a_new_head_takes_the_models_dtype():
    model = VisionTransformer(VisionConfig(image_size=16, patch_size=4, width=32, depth=1, heads=2, num_classes=3))
    model = model.to(torch.bfloat16)
    model.reset_classifier(5)
    assert model.head.weight.dtype == torch.bfloat16
    assert model(torch.randn(1, 3, 16, 16, dtype=torch.bfloat16)).shape == (1, 5)  # was a dtype mismatch


@pytest.mark.parametrize("kw, message", [
    (dict(heads=0), "heads must be a positive int"),
    (dict(patch_size=0), "patch_size must be a positive int"),
    (dict(depth=-1), "depth must be a positive int"),
    (dict(width=30, heads=4), "width 30 is not divisible by heads 4"),
    (dict(image_size="16"), "image_size must be an int or two ints"),
    (dict(image_size=4), "smaller than one patch"),
    (dict(stem="vgg"), "stem must be"),
    (dict(stem="resnet", patch_size=1, stem_channels=[]), "stem_channels must be a non-empty list"),  # IndexError
    (dict(stem="conv", patch_size=1, stem_channels=[8, 0]), "stem_channels must be a non-empty list"),
    (dict(stem="resnet", patch_size=1, stem_channels="abc"), "stem_channels must be a non-empty list"),
])
def test_vision_configs_that_cannot_build_a_model_are_refused(kw, message):
    """They failed with a ZeroDivisionError deep inside, built a model with no blocks that trained anyway
    (depth -1), or read "16" as a 1x6 image."""
    with pytest.raises(ValueError, match=message):
        tiny_vit(**kw)


def test_conv_stem_inference_runs_channels_last_with_the_training_path_s_features():
    """The conv stem runs channels-last for CPU inference (1.5x its speed); its features match the NCHW path that
    training takes, and training's own output is untouched (bit for bit the same module call)."""
    from kizuna.models.hybrid import ConvStem

    torch.manual_seed(0)
    stem = ConvStem([8, 16, 32]).eval()
    x = torch.randn(3, 3, 24, 24)
    with torch.enable_grad():
        trained_path = stem(x)
    assert trained_path.is_contiguous()  # NCHW where autograd runs: training is what it was
    with torch.no_grad():
        fast = stem(x)
    assert fast.is_contiguous()  # handed back NCHW, as callers of the stem expect it (.view)
    torch.testing.assert_close(fast, trained_path.detach(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fast, stem.layers(x).detach(), atol=1e-5, rtol=1e-5)
    seen = []  # a hook on a layer sees NCHW outputs it may .view(), as before
    handle = stem.layers[0].register_forward_hook(lambda m, a, out: seen.append(out.view(out.shape[0], -1).shape))
    with torch.no_grad():
        torch.testing.assert_close(stem(x), fast, atol=1e-5, rtol=1e-5)
    handle.remove()
    assert seen == [torch.Size([3, 8 * 24 * 24])]
