"""bf16 models for inference: fp32 pixels in, features close to fp32's, fused blocks on oneDNN where bf16 is native."""
import pytest
import torch
import torch.nn.functional as F

import kizuna
from kizuna.models import layers
from kizuna.models.clip import ClipConfig, ClipModel

needs_bf16 = pytest.mark.skipif(not layers.ONEDNN_BF16, reason="oneDNN bf16 linear unavailable on this CPU / torch")


def _block(act: str, seed: int = 0) -> layers.Block:
    torch.manual_seed(seed)
    block = layers.Block(64, 4, 256, act=act).eval()
    for p in block.parameters():  # non-trivial LayerNorm affine and biases
        p.data.normal_(0, 0.1)
    return block


def _worst(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().max().item()


@needs_bf16
@pytest.mark.parametrize("act", ["gelu", "quick_gelu", "gelu_tanh"])
@pytest.mark.parametrize("tokens", [5, 40])  # QuickGELU's 1/1.702 scales the activations (5) or fc2's weight (40)
def test_fused_bf16_block_is_as_close_to_fp32_as_the_unfused_one(act, tokens):
    block32 = _block(act)
    block16 = _block(act).to(torch.bfloat16)
    x = torch.randn(2, tokens, 64)
    with torch.no_grad():
        ref, _ = block32(x)
        assert layers._block_gemm(x.bfloat16(), block16.attn.qkv.weight) == "onednn"
        fused, _ = block16(x.bfloat16(), workspace={})
        unfused, _ = block16(x.bfloat16(), return_attention=True)  # the plain path
    assert fused.dtype == torch.bfloat16
    # bf16 keeps 8 bits of mantissa: both bf16 paths sit ~1e-2 from fp32; fusion must not add to that.
    assert _worst(fused, ref) <= 1.5 * _worst(unfused, ref) + 1e-3
    assert _worst(fused, ref) < 0.1


def test_bf16_blocks_fuse_only_on_native_bf16_outside_autocast(monkeypatch):
    w16, x16 = torch.randn(96, 32).bfloat16(), torch.randn(2, 9, 32).bfloat16()
    assert layers._block_gemm(x16, w16) == ("onednn" if layers.ONEDNN_BF16 else None)
    assert layers._block_gemm(x16, w16.float()) is None  # mixed dtypes: F.linear decides
    monkeypatch.setattr(layers, "ONEDNN_BF16", False)
    assert layers._block_gemm(x16, w16) is None
    monkeypatch.setattr(layers, "ONEDNN_BF16", True)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast casts F.linear's fp32 weights; no fusion
        assert layers._block_gemm(torch.randn(2, 9, 32), torch.randn(96, 32)) is None


@pytest.mark.parametrize("name", ["ViT-mu-8", "ViT-mu-8-quickgelu"])
def test_bf16_model_takes_float_pixels_and_agrees_with_fp32(name):
    torch.manual_seed(0)
    model32 = kizuna.create_model(name).eval()
    model16 = kizuna.create_model(name, precision="bf16").eval()
    model16.load_state_dict(model32.state_dict())  # same weights, rounded to bf16
    assert all(p.dtype == torch.bfloat16 for n, p in model16.named_parameters() if not n.startswith("logit_"))
    size = model32.cfg.vision.image_size
    pixels = torch.randn(4, 3, size, size)  # float32, as every transform gives them
    tokens = kizuna.get_tokenizer(model32)(["a red circle", "two blue squares", "a photo", "x"])
    with torch.inference_mode():
        for encode in ("encode_image", "encode_text"):
            x = pixels if encode == "encode_image" else tokens
            a, b = getattr(model32, encode)(x), getattr(model16, encode)(x)
            assert b.dtype == torch.bfloat16
            assert F.cosine_similarity(a, b.float(), dim=-1).min() > 0.99, encode


def test_hybrid_stem_takes_float_pixels_in_bf16():
    cfg = kizuna.clip_config("ViT-mu-8")
    cfg.vision.stem, cfg.vision.stem_channels, cfg.vision.patch_size = "conv", [8, 16], 1
    model = ClipModel(ClipConfig.from_dict(cfg.to_dict())).to(torch.bfloat16).eval()
    size = model.cfg.vision.image_size
    with torch.inference_mode():
        out = model.encode_image(torch.randn(2, 3, size, size))
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()


def test_create_model_rejects_an_unknown_precision():
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16"):
        kizuna.create_model("ViT-mu-8", precision="fp16")


def test_normalised_features_of_a_bf16_model_are_float32_unit_vectors():
    """Normalised in bf16, `kizuna embed` stored rows with norms from 0.996 to 1.004 under --precision bf16."""
    torch.manual_seed(0)
    model = kizuna.create_model("ViT-mu-8", precision="bf16").eval()
    size = model.cfg.vision.image_size
    tokens = kizuna.get_tokenizer(model)(["a red circle", "two blue squares"] * 8)
    with torch.inference_mode():
        for x in (model.encode_image(torch.randn(16, 3, size, size), normalize=True),
                  model.encode_text(tokens, normalize=True)):
            assert x.dtype == torch.float32
            torch.testing.assert_close(x.norm(dim=-1), torch.ones(16), atol=1e-6, rtol=0)
        assert model.encode_image(torch.randn(1, 3, size, size)).dtype == torch.bfloat16  # unnormalised: as run
