"""The oneDNN GEMM path (CPU fp32) computes what F.linear and the unfused block compute."""
import pytest
import torch
import torch.nn.functional as F

from kizuna.models import layers

pytestmark = pytest.mark.skipif(not layers.ONEDNN, reason="oneDNN linear op unavailable in this torch build")


@pytest.fixture(autouse=True)
def onednn_for_training_too(monkeypatch):
    """Intel CPUs train on F.linear by default (ONEDNN_TRAIN); the oneDNN training path is tested on every machine."""
    monkeypatch.setattr(layers, "ONEDNN_TRAIN", True)


def test_linear_forward_and_gradients_match_f_linear():
    torch.manual_seed(0)
    lin = layers.Linear(24, 40)
    x = torch.randn(3, 7, 24, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_(True)
    y = lin(x)
    y_ref = F.linear(x_ref, lin.weight, lin.bias)
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-5)
    g = torch.randn_like(y)
    gw, gb, gx = torch.autograd.grad(y, (lin.weight, lin.bias, x), g)
    gw_ref, gb_ref, gx_ref = torch.autograd.grad(y_ref, (lin.weight, lin.bias, x_ref), g)
    for a, b in ((gw, gw_ref), (gb, gb_ref), (gx, gx_ref)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_linear_on_a_non_contiguous_input():
    torch.manual_seed(1)
    lin = layers.Linear(16, 8)
    x = torch.randn(16, 5, 4).permute(2, 1, 0)  # [4, 5, 16], not contiguous
    torch.testing.assert_close(lin(x), F.linear(x, lin.weight, lin.bias), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("act", ["gelu", "quick_gelu", "gelu_tanh"])
@pytest.mark.parametrize("causal", [False, True])
def test_fused_block_equals_the_unfused_block(act, causal):
    torch.manual_seed(2)
    block = layers.Block(32, 4, 96, act=act).eval()
    for p in block.parameters():  # non-trivial LayerNorm affine and biases
        p.data.normal_(0, 0.3)
    x = torch.randn(2, 9, 32)
    with torch.no_grad():
        assert block._fusable(x)
        fused, _ = block(x, causal=causal)
        # return_attention takes the plain (unfused, materialised-attention) path: the reference
        ref, attn = block(x, causal=causal, return_attention=True)
    assert attn is not None
    torch.testing.assert_close(fused, ref, atol=1e-5, rtol=1e-5)


def test_fused_path_is_not_taken_with_grad_hooks_or_off(monkeypatch):
    block = layers.Block(16, 2, 32)
    x = torch.randn(1, 4, 16)
    assert not block._fusable(x)  # parameters require grad and grad mode is on
    with torch.no_grad():
        assert block._fusable(x)
        handle = block.mlp.register_forward_hook(lambda *a: None)
        assert not block._fusable(x)
        handle.remove()
        monkeypatch.setattr(layers, "ONEDNN", False)
        assert not block._fusable(x)
        lin = layers.Linear(16, 3)
        torch.testing.assert_close(lin(x), F.linear(x, lin.weight, lin.bias))


def test_training_step_gradients_match_the_mkl_path(monkeypatch):
    torch.manual_seed(3)
    block = layers.Block(32, 4, 64, act="quick_gelu")
    x = torch.randn(2, 6, 32)

    def grads():
        block.zero_grad()
        out, _ = block(x, causal=True)
        out.square().sum().backward()
        return [p.grad.clone() for p in block.parameters()]

    onednn = grads()
    monkeypatch.setattr(layers, "ONEDNN", False)
    mkl = grads()
    for a, b in zip(onednn, mkl):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("fuse", [False, True])
@pytest.mark.parametrize("act", ["gelu", "quick_gelu", "gelu_tanh"])
def test_activation_fused_or_in_place_gives_the_same_block(monkeypatch, act, fuse):
    """fc1's activation as a oneDNN post-op (AVX-512 default) or in place after the GEMM (AVX2 default)."""
    monkeypatch.setattr(layers, "FUSE_ACTIVATION", fuse)
    torch.manual_seed(3)
    block = layers.Block(32, 4, 96, act=act).eval()
    for p in block.parameters():
        p.data.normal_(0, 0.3)
    x = torch.randn(2, 9, 32)
    with torch.no_grad():
        fused, _ = block(x)
        ref, _ = block(x, return_attention=True)
    torch.testing.assert_close(fused, ref, atol=1e-5, rtol=1e-5)


def test_activation_placement_follows_the_isa_unless_forced(monkeypatch):
    monkeypatch.delenv("KIZUNA_FUSE_ACTIVATION", raising=False)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    assert layers._fuse_activation_default()
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    assert not layers._fuse_activation_default()
    monkeypatch.setenv("KIZUNA_FUSE_ACTIVATION", "1")
    assert layers._fuse_activation_default()


def test_cpu_autocast_takes_the_plain_path():
    """Under CPU bf16 autocast the GEMMs are autocast's (bf16), the fused block is not used, and a
    block runs (it once mixed oneDNN's fp32 GEMM with SDPA's bf16 output and raised)."""
    torch.manual_seed(4)
    block = layers.Block(32, 4, 64).eval()
    lin = layers.Linear(32, 16)
    x = torch.randn(2, 5, 32)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert not block._fusable(x)
        assert lin(x).dtype == torch.bfloat16  # as F.linear under autocast
        out, _ = block(x)
        ref, _ = block(x, return_attention=True)  # the materialised reference path
    assert torch.isfinite(out.float()).all()
    torch.testing.assert_close(out.float(), ref.float(), atol=0.05, rtol=0.05)
    with torch.no_grad():
        assert block._fusable(x)  # and back on oneDNN outside autocast


def test_training_linears_follow_the_cpu_vendor_unless_forced(monkeypatch):
    monkeypatch.delenv("KIZUNA_ONEDNN_TRAIN", raising=False)
    assert layers.cpu_info("vendor_id", "processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t: avx512f\n") == "GenuineIntel"
    assert layers.cpu_info("vendor_id", "no vendor line\n") == ""
    assert not layers._onednn_train_default("GenuineIntel")  # MKL's AVX-512 GEMM is the faster one there
    assert layers._onednn_train_default("AuthenticAMD")
    assert layers._onednn_train_default("")
    monkeypatch.setenv("KIZUNA_ONEDNN_TRAIN", "1")
    assert layers._onednn_train_default("GenuineIntel")
    monkeypatch.setenv("KIZUNA_ONEDNN_TRAIN", "0")
    assert not layers._onednn_train_default("AuthenticAMD")


def test_training_on_f_linear_when_onednn_train_is_off(monkeypatch):
    """With ONEDNN_TRAIN off, a graph-building call goes to F.linear; inference still runs on oneDNN."""
    torch.manual_seed(0)
    lin = layers.Linear(8, 4)
    x = torch.randn(2, 8)
    assert type(lin(x).grad_fn).__name__ == "_OneDNNLinearBackward"
    monkeypatch.setattr(layers, "ONEDNN_TRAIN", False)
    assert type(lin(x).grad_fn).__name__ == "AddmmBackward0"
    calls = []
    monkeypatch.setattr(layers, "_LP", lambda *a: calls.append(1) or F.linear(a[0], a[1], a[2]))
    with torch.no_grad():
        lin(x)
    assert calls == [1]

