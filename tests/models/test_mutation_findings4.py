"""Transformer blocks, pooling and the two-tower API checked against float64 computations written out here, for
the options the numerics-vs-HF tests never reach: fused inference blocks with random LayerNorm and fc1 biases
(which start at zero), causal towers under gradient checkpointing or a hook, intermediates, norm_after_pool with
class-token pooling, argmax pooling, the SigLIP logit bias, cached text embeddings, and the names kept out of
weight decay (a mutation hunt found each of these unchecked: a dropped term or argument left every older test
passing)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from kizuna.models import layers
from kizuna.models.clip import ClipConfig, ClipModel
from kizuna.models.text import TextConfig, TextTransformer
from kizuna.models.vit import VisionConfig, VisionTransformer, resample_pos_embed


def _randomise(module, std=0.3, seed=0):
    """Every parameter drawn at random: LayerNorm and linear biases start at zero, hiding terms that scale them."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return module


# ----- float64 references ---------------------------------------------------------------------------------
def _act64(name: str, x: torch.Tensor) -> torch.Tensor:
    if name == "gelu":
        return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))
    if name == "gelu_tanh":
        return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    assert name == "quick_gelu"
    return x * torch.sigmoid(1.702 * x)


def _ln64(x, ln):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + ln.eps) * ln.weight.double() + ln.bias.double()


def _lin64(x, lin):
    y = x @ lin.weight.double().T
    return y if lin.bias is None else y + lin.bias.double()


def _block64(block: layers.Block, x: torch.Tensor, causal: bool) -> torch.Tensor:
    """x + attn(LN1 x), then + mlp(LN2 .), in float64 with the attention matrix written out."""
    x = x.double()
    a = block.attn
    B, T, C = x.shape
    q, k, v = _lin64(_ln64(x, block.norm1), a.qkv).view(B, T, 3, a.heads, a.head_dim).permute(2, 0, 3, 1, 4)
    s = q @ k.transpose(-2, -1) / math.sqrt(a.head_dim)
    if causal:
        s = s.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf"))
    h = (s.softmax(-1) @ v).transpose(1, 2).reshape(B, T, C)
    x = x + _lin64(h, a.proj)
    m = block.mlp
    return x + _lin64(_act64(m.act_name, _lin64(_ln64(x, block.norm2), m.fc1)), m.fc2)


def _tower64(text: TextTransformer, tokens: torch.Tensor) -> torch.Tensor:
    x = text.token_embed.weight.double()[tokens] + text.pos_embed.double()[: tokens.shape[1]]
    for block in text.transformer.blocks:
        x = _block64(block, x, text.cfg.causal)
    return _ln64(x, text.norm)


# ----- blocks ----------------------------------------------------------------------------------------------
# inference (fused: oneDNN at 22 rows, MKL with its scratch buffers at 2 x 260 rows, past MKL_MIN_ROWS) and training
@pytest.mark.parametrize("act", ["gelu", "quick_gelu", "gelu_tanh"])
@pytest.mark.parametrize("causal, grad, tokens", [(True, False, 11), (False, False, 260), (True, True, 11)])
def test_a_block_with_random_biases_equals_the_float64_formula(act, causal, grad, tokens):
    """Kills, in the fused QuickGELU path: norm2's bias or fc1's bias left unscaled by 1.702 (both are zero at
    init, and the older tests compared the fused block with itself); the fused path dropping is_causal."""
    block = _randomise(layers.Block(32, 4, 64, act=act)).eval()
    x = torch.randn(2, tokens, 32, generator=torch.Generator().manual_seed(1), requires_grad=grad)
    ref = _block64(block, x.detach(), causal)
    with torch.set_grad_enabled(grad):
        out, _ = block(x, causal=causal)
        rows = torch.tensor([[0, tokens - 1, 3], [5, 5, tokens // 2]])
        picked = block.forward_rows(x, rows, causal=causal)
    torch.testing.assert_close(out.double(), ref, atol=2e-4, rtol=2e-4)
    torch.testing.assert_close(picked.double(), layers.gather_rows(ref, rows), atol=2e-4, rtol=2e-4)


@pytest.mark.parametrize("causal", [False, True])
def test_the_materialised_attention_and_its_maps_equal_the_float64_formula(causal):
    """The plain path (attention maps; CPU training up to 80 keys on AVX-512): softmax(q k^T / sqrt(d)) v. Kills
    a 1 / d scale, which the older tests missed: at init (std 0.02) every score is near 0 and softmax uniform."""
    attn = _randomise(layers.Attention(32, 4))
    attn.use_sdpa = False
    x = torch.randn(2, 7, 32, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        out, maps = attn(x, causal=causal, return_attention=True)
    B, T, C = x.shape
    q, k, v = _lin64(x.double(), attn.qkv).view(B, T, 3, 4, 8).permute(2, 0, 3, 1, 4)
    s = q @ k.transpose(-2, -1) / math.sqrt(8)
    if causal:
        s = s.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf"))
    p = s.softmax(-1)
    torch.testing.assert_close(maps.double(), p, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.double(), _lin64((p @ v).transpose(1, 2).reshape(B, T, C), attn.proj),
                               atol=1e-5, rtol=1e-5)


def test_attention_pool_equals_the_float64_formula():
    """SigLIP's MAP head: probe query, keys and values from the tokens, then out + mlp(norm(out))."""
    pool = _randomise(layers.AttentionPool(32, 4, 64, act="gelu_tanh")).eval()
    x = torch.randn(3, 9, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        out = pool(x)
    x64 = x.double()
    B, T, C = x.shape
    hd = C // 4
    q = _lin64(pool.probe.double().expand(B, 1, C), pool.q).view(B, 1, 4, hd).transpose(1, 2)
    k, v = _lin64(x64, pool.kv).view(B, T, 2, 4, hd).permute(2, 0, 3, 1, 4)
    h = ((q @ k.transpose(-2, -1) / math.sqrt(hd)).softmax(-1) @ v).transpose(1, 2).reshape(B, 1, C)
    h = _lin64(h, pool.proj)
    ref = (h + _lin64(_act64("gelu_tanh", _lin64(_ln64(h, pool.norm), pool.mlp.fc1)), pool.mlp.fc2))[:, 0]
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=1e-5)


# ----- the causal text tower -----------------------------------------------------------------------------
def _text(**kw) -> TextTransformer:
    cfg = dict(vocab_size=50, context_length=12, width=32, depth=2, heads=4, mlp_dim=64, eot_token_id=49,
               output_dim=16)
    cfg.update(kw)
    return _randomise(TextTransformer(TextConfig(**cfg)), 0.2)


def _ids():
    """EOTs at 3 and 8: the batch is cut to 9 positions, and row 0's EOT has five padding tokens after it."""
    t = torch.tensor([[1, 7, 9, 49, 0, 0, 0, 0, 0, 0, 0, 0],
                      [2, 5, 11, 13, 17, 19, 23, 29, 49, 0, 0, 0]])
    t[0, 4:9] = torch.tensor([31, 37, 41, 43, 47])  # padding the causal mask must hide from row 0's EOT
    return t


def _pooled64(text: TextTransformer, tokens: torch.Tensor, positions) -> torch.Tensor:
    x = _tower64(text, tokens)
    pooled = x[torch.arange(len(tokens)), torch.as_tensor(positions)]
    return _lin64(pooled, text.proj)


@pytest.mark.parametrize("prune", [True, False])
def test_gradient_checkpointing_keeps_the_text_tower_causal(prune):
    """Kills: the checkpointed block (Transformer._run) or the checkpointed pruned last block (forward_rows)
    called with causal=False: a training step under --grad-checkpointing let each token see the ones after it."""
    text = _text().train()
    text.prune_last_block = prune
    tokens = _ids()
    ref = _pooled64(text, tokens, [3, 8])
    plain = text(tokens)
    g_plain = torch.autograd.grad(plain.square().sum(), list(text.parameters()), allow_unused=True)
    text.set_grad_checkpointing(True)
    ckpt = text(tokens)
    g_ckpt = torch.autograd.grad(ckpt.square().sum(), list(text.parameters()), allow_unused=True)
    torch.testing.assert_close(plain.double(), ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ckpt.double(), ref, atol=1e-5, rtol=1e-5)
    for a, b in zip(g_ckpt, g_plain):
        if b is not None:
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_a_hook_on_the_last_text_block_keeps_the_tower_causal():
    """Kills: the watched-last-block path (the full run, then the pooled rows) running its blocks without the
    causal mask: a forward hook on the last block (an activation probe) changed every text embedding."""
    text = _text().eval()
    tokens = _ids()
    seen = []
    handle = text.transformer.blocks[-1].register_forward_hook(lambda mod, args, out: seen.append(out[0].shape))
    try:
        with torch.no_grad():
            hooked = text(tokens)
    finally:
        handle.remove()
    assert seen == [(2, 9, 32)]  # the hook saw the block's full output (trimmed to the last EOT)
    torch.testing.assert_close(hooked.double(), _pooled64(text, tokens, [3, 8]), atol=1e-5, rtol=1e-5)


def test_argmax_pooling_reads_each_rows_own_highest_id():
    """OpenAI's pooling: the feature at each row's highest id, not at the batch's highest (a row whose largest id
    is below another row's pooled at position 0)."""
    text = _text(pool="argmax").eval()
    tokens = torch.tensor([[1, 7, 40, 2, 0, 0], [3, 45, 4, 48, 5, 0]])  # row maxima 40 at 2, 48 at 3
    with torch.no_grad():
        out = text(tokens)
    torch.testing.assert_close(out.double(), _pooled64(text, tokens, [2, 3]), atol=1e-5, rtol=1e-5)


def test_a_sequence_without_an_end_of_text_token_pools_at_its_last_position():
    """The documented fallback: no EOT in a row (truncated by hand) pools at its last position, not at 0."""
    text = _text().eval()
    tokens = torch.tensor([[1, 7, 9, 11, 13, 15]])
    with torch.no_grad():
        out = text(tokens)
    torch.testing.assert_close(out.double(), _pooled64(text, tokens, [5]), atol=1e-5, rtol=1e-5)


# ----- the image tower -----------------------------------------------------------------------------------
def _vit(**kw) -> VisionTransformer:
    cfg = dict(image_size=32, patch_size=8, width=32, depth=2, heads=4, mlp_dim=64, output_dim=16)
    cfg.update(kw)
    return _randomise(VisionTransformer(VisionConfig(**cfg)), 0.2).eval()


def test_intermediates_features_are_the_final_normed_tokens():
    """Kills: forward_intermediates' features left before the final LayerNorm (or normed with norm_after_pool):
    they must be forward_features' tokens, LayerNorm applied to the last block's output."""
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    for after in (False, True):
        vit = _vit(norm_after_pool=after, pool="gap")
        with torch.no_grad():
            out = vit.forward_intermediates(x, return_attention=False)
            last = out["tokens"][-1]
            features = vit.forward_features(x)
        expected = last if after else F.layer_norm(last, (32,), vit.norm.weight, vit.norm.bias, vit.norm.eps)
        torch.testing.assert_close(out["features"], expected)
        torch.testing.assert_close(out["features"], features, atol=1e-5, rtol=1e-5)
        pooled = expected[:, 1:].mean(1)
        if after:
            pooled = F.layer_norm(pooled, (32,), vit.norm.weight, vit.norm.bias, vit.norm.eps)
        torch.testing.assert_close(out["pooled"], pooled, atol=1e-5, rtol=1e-5)


def test_class_token_pooling_with_norm_after_pool_normalises_once():
    """Kills: the pruned class-token path LayerNorming the class token before pooling as well (twice in all)
    when norm_after_pool is set."""
    vit = _vit(norm_after_pool=True, pool="cls")
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        out = vit(x)
        tokens = vit.forward_features(x)  # before the LayerNorm with norm_after_pool
    n = vit.norm
    ref = _lin64(_ln64(tokens[:, 0].double(), n), vit.proj)
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=1e-5)


def test_patch_dropout_that_rounds_to_no_patch_keeps_one():
    """Training accepts any share below 1; at 0.97 a 16-patch image would keep round(0.48) = 0 patches (the class
    token alone). Kills: the floor of one kept patch dropped. The patch kept is one of the image's own."""
    vit = _vit()
    vit.train()
    vit.patch_dropout = 0.97
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(10))
    torch.manual_seed(0)
    tokens, _ = vit.embed(x)
    with torch.no_grad():
        vit.eval()
        full, _ = vit.embed(x)
    assert tokens.shape == (2, 2, 32)
    torch.testing.assert_close(tokens[:, 0], full[:, 0])
    for b in range(2):
        assert (tokens[b, 1] - full[b, 1:]).abs().amax(-1).min() < 1e-6


def test_resampling_a_grid_that_keeps_its_height_still_resamples_the_width():
    """Kills: the same-grid shortcut comparing only the heights (4x6 -> 4x8 returned the 4x6 table)."""
    pe = torch.randn(1, 1 + 4 * 6, 8, generator=torch.Generator().manual_seed(5))
    out = resample_pos_embed(pe, (4, 8), old_grid=(4, 6))
    grid = pe[:, 1:].reshape(1, 4, 6, 8).permute(0, 3, 1, 2)
    ref = F.interpolate(grid, size=(4, 8), mode="bicubic", align_corners=False).permute(0, 2, 3, 1).reshape(1, 32, 8)
    assert out.shape == (1, 33, 8)
    torch.testing.assert_close(out[:, 1:], ref)
    torch.testing.assert_close(out[:, :1], pe[:, :1])


# ----- the two-tower model -------------------------------------------------------------------------------
def _clip(loss="clip") -> ClipModel:
    siglip = loss == "siglip"
    cfg = ClipConfig(
        embed_dim=16, loss=loss, init_logit_bias=-3.0 if siglip else None,
        init_logit_scale=math.log(10), max_logit_scale=None if siglip else math.log(100),
        vision=VisionConfig(image_size=16, patch_size=8, width=32, depth=1, heads=4, mlp_dim=64, output_dim=16,
                            class_token=not siglip, pool="map" if siglip else "cls"),
        text=TextConfig(vocab_size=50, context_length=12, width=32, depth=1, heads=4, mlp_dim=64, eot_token_id=49,
                        output_dim=16, causal=not siglip, pool="last" if siglip else "eot", proj_bias=siglip),
    )
    return _randomise(ClipModel(cfg), 0.2).eval()


def test_siglip_logits_add_the_learned_bias():
    """Kills: logits() dropping + bias: SigLIP's logits are exp(t) I T^T + b, b = -3 here."""
    model = _clip("siglip")
    with torch.no_grad():
        model.logit_bias.fill_(-3.0)
        images = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(6))
        tokens = torch.randint(0, 50, (3, 12), generator=torch.Generator().manual_seed(7))
        per_image, per_text = model.logits(images, tokens)
        img = model.encode_image(images).double()
        txt = model.encode_text(tokens).double()
    ref = math.exp(model.logit_scale.item()) * F.normalize(img, dim=-1) @ F.normalize(txt, dim=-1).T - 3.0
    torch.testing.assert_close(per_image.double(), ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(per_text.double(), ref.T, atol=1e-5, rtol=1e-5)


def test_cached_text_embeddings_go_through_the_projection():
    """Kills: forward(text_embeddings=...) normalising the cached tower outputs without the projection (a locked
    text tower's cache is the width-wide pre-projection feature)."""
    model = _clip()
    model.text.sentence_embeddings = lambda tokens: None  # (MiniLM's pre-projection output, stood in for)
    e = torch.randn(3, 32, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        out = model(text_embeddings=e)
    ref = F.normalize(e.double() @ model.text.proj.weight.double().T, dim=-1)
    torch.testing.assert_close(out["text_features"].double(), ref, atol=1e-6, rtol=1e-6)
    assert out["text_features"].dtype == torch.float32 and "image_features" not in out


def test_a_learned_scale_below_one_is_not_clamped_from_below():
    """CLIP clamps exp(t) at 100 from above only: t = -1 gives exp(-1), t = 6 gives 100."""
    model = _clip()
    with torch.no_grad():
        model.logit_scale.fill_(-1.0)
        assert float(model.scale()) == pytest.approx(math.exp(-1.0))
        model.logit_scale.fill_(6.0)
        assert float(model.scale()) == pytest.approx(100.0)


def test_no_weight_decay_names_the_logit_bias_and_the_map_probe():
    """Kills: logit_bias or visual.attn_pool.probe dropped from no_weight_decay (each would then be decayed)."""
    model = _clip("siglip")
    names = model.no_weight_decay()
    params = dict(model.named_parameters())
    for name in ("logit_scale", "logit_bias", "visual.attn_pool.probe", "visual.pos_embed", "text.pos_embed"):
        assert name in names and name in params, name


def test_set_grad_checkpointing_reaches_both_towers():
    """Kills: ClipModel.set_grad_checkpointing switching only the image tower (the text tower kept every
    activation: --grad-checkpointing saved less memory than it says)."""
    model = _clip()
    model.set_grad_checkpointing(True)
    assert model.visual.transformer.grad_checkpointing and model.text.transformer.grad_checkpointing
    model.set_grad_checkpointing(False)
    assert not model.visual.transformer.grad_checkpointing and not model.text.transformer.grad_checkpointing
