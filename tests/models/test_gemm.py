"""The CPU fp32 GEMM paths (oneDNN, and MKL with fused blocks) compute what F.linear and the unfused block compute.

Both libraries are tested on every machine (where the oneDNN op exists): ``layers.GEMM`` picks one by the
CPU vendor, and a path only one kind of machine takes by default must not rot on the others.
"""
import os

import pytest
import torch
import torch.nn.functional as F

from kizuna.models import layers

needs_onednn = pytest.mark.skipif(not layers.ONEDNN, reason="oneDNN linear op unavailable in this torch build")
LIBRARIES = [pytest.param("onednn", marks=needs_onednn), "mkl"]


@pytest.fixture(params=LIBRARIES)
def gemm(request, monkeypatch):
    """Run the test with ``layers.GEMM`` set to each library (MKL at every size: the tests' blocks are small)."""
    monkeypatch.setattr(layers, "GEMM", request.param)
    monkeypatch.setattr(layers, "MKL_MIN_ROWS", 0)
    return request.param


def _random_block(seed: int, act: str = "gelu", dim: int = 32, heads: int = 4, mlp_dim: int = 96) -> layers.Block:
    torch.manual_seed(seed)
    block = layers.Block(dim, heads, mlp_dim, act=act).eval()
    for p in block.parameters():  # non-trivial LayerNorm affine and biases
        p.data.normal_(0, 0.3)
    return block


def test_linear_forward_and_gradients_match_f_linear(gemm):
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


def test_second_derivatives_through_the_linear_match_f_linear(gemm):
    """A gradient penalty (create_graph=True) differentiates the input gradient again: oneDNN's op has no
    derivative, and the weight's second-order gradient came out as zeros, silently."""
    torch.manual_seed(0)
    lin = layers.Linear(24, 40)
    x = torch.randn(3, 7, 24, requires_grad=True)

    def penalty_grads(forward):
        (gx,) = torch.autograd.grad(forward(x).square().sum(), x, create_graph=True)
        return torch.autograd.grad(gx.square().sum(), (lin.weight, lin.bias))

    ours = penalty_grads(lin)
    reference = penalty_grads(lambda t: F.linear(t, lin.weight, lin.bias))
    assert ours[0].norm() > 0
    for a, b in zip(ours, reference):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_linear_on_a_non_contiguous_input(gemm):
    torch.manual_seed(1)
    lin = layers.Linear(16, 8)
    x = torch.randn(16, 5, 4).permute(2, 1, 0)  # [4, 5, 16], not contiguous
    with torch.no_grad():
        torch.testing.assert_close(lin(x), F.linear(x, lin.weight, lin.bias), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("act", ["gelu", "quick_gelu", "gelu_tanh"])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("tokens", [9, 40])  # on oneDNN QuickGELU's 1/1.702 scales the activations (9) or fc2's weight (40)
def test_fused_block_equals_the_unfused_block(gemm, act, causal, tokens):
    block = _random_block(2, act)
    x = torch.randn(2, tokens, 32)
    with torch.no_grad():
        assert block._fusable(x)
        fused, _ = block(x, causal=causal, workspace={})
        # return_attention takes the plain (unfused, materialised-attention) path: the reference
        ref, attn = block(x, causal=causal, return_attention=True)
    assert attn is not None
    torch.testing.assert_close(fused, ref, atol=1e-5, rtol=1e-5)


def test_fused_stack_keeps_every_block_output_intact(gemm):
    """The fused blocks share scratch buffers within a pass; the outputs they hand back (kept by
    ``return_tokens``) must be their own, equal to the unfused stack's block by block."""
    torch.manual_seed(5)
    stack = layers.Transformer(32, 3, 4, 96, "quick_gelu", 1e-5).eval()
    for p in stack.parameters():
        p.data.normal_(0, 0.3)
    x = torch.randn(2, 40, 32)
    x_before = x.clone()
    with torch.no_grad():
        out, tokens, _ = stack(x, return_tokens=True)
        ref, ref_tokens, attentions = stack(x, return_tokens=True, return_attention=True)  # unfused
    assert len(attentions) == 3 and torch.equal(x, x_before)
    assert len({t.data_ptr() for t in tokens}) == 3
    for t, r in zip(tokens, ref_tokens):
        torch.testing.assert_close(t, r, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_mkl_scratch_buffers_are_reused_across_blocks_and_resized(monkeypatch):
    monkeypatch.setattr(layers, "GEMM", "mkl")
    monkeypatch.setattr(layers, "MKL_MIN_ROWS", 0)
    block = _random_block(6)
    workspace = {}
    with torch.no_grad():
        block(torch.randn(2, 9, 32), workspace=workspace)
        assert workspace["qkv"].shape == (18, 96) and workspace["hidden"].shape == (18, 96)
        ptrs = {k: v.data_ptr() for k, v in workspace.items()}
        block(torch.randn(2, 9, 32), workspace=workspace)
        assert {k: v.data_ptr() for k, v in workspace.items()} == ptrs  # same buffers, not new ones
        block(torch.randn(3, 5, 32), workspace=workspace)
        assert workspace["qkv"].shape == (15, 96)
    assert layers._scratch({}, "qkv", torch.randn(2, 3, 4), 12, "onednn") is None  # oneDNN allocates its own output
    assert layers._scratch(None, "qkv", torch.randn(2, 3, 4), 12, "mkl") is None


def test_small_mkl_blocks_run_on_onednn(monkeypatch):
    """Where MKL is the library, blocks under MKL_MIN_ROWS rows (batch x tokens) take oneDNN when it works."""
    monkeypatch.setattr(layers, "GEMM", "mkl")
    monkeypatch.setattr(layers, "MKL_MIN_ROWS", 64)
    w = torch.randn(96, 32)
    small, large = torch.randn(2, 31, 32), torch.randn(2, 32, 32)
    assert layers._block_gemm(small, w) == ("onednn" if layers.ONEDNN else "mkl")
    assert layers._block_gemm(large, w) == "mkl"
    monkeypatch.setattr(layers, "ONEDNN", False)
    assert layers._block_gemm(small, w) == "mkl"
    monkeypatch.setattr(layers, "GEMM", "onednn")
    assert layers._block_gemm(large, w) is None  # oneDNN chosen but unavailable: unfused


def test_mkl_residual_add_leaves_the_residual_alone():
    torch.manual_seed(7)
    x, w, b = torch.randn(2, 5, 16), torch.randn(8, 16), torch.randn(8)
    residual = torch.randn(8, 5, 2).permute(2, 1, 0)  # [2, 5, 8], not contiguous
    kept = residual.clone()
    out = layers._linear_add(x, residual, w, b, "mkl")
    torch.testing.assert_close(out, kept + F.linear(x, w, b), atol=1e-5, rtol=1e-5)
    assert torch.equal(residual, kept)


@pytest.mark.parametrize("lib", LIBRARIES)
@pytest.mark.parametrize("rows", [3, 40])  # oneDNN scales the activations (3 x 16 < 8 x 16) or the weight (40)
def test_scaled_residual_add_leaves_its_inputs_alone(lib, rows):
    torch.manual_seed(8)
    x, w, b, residual = torch.randn(1, rows, 16), torch.randn(8, 16), torch.randn(8), torch.randn(1, rows, 8)
    kept = [t.clone() for t in (x, w, residual)]
    with torch.no_grad():
        out = layers._linear_add(x, residual, w, b, lib, scale=0.25)
    torch.testing.assert_close(out, residual + 0.25 * (x @ w.t()) + b, atol=1e-5, rtol=1e-5)
    assert all(torch.equal(t, k) for t, k in zip((x, w, residual), kept))


def test_fused_path_is_not_taken_with_grad_hooks_or_off(monkeypatch, gemm):
    block = layers.Block(16, 2, 32)
    x = torch.randn(1, 4, 16)
    assert not block._fusable(x)  # parameters require grad and grad mode is on
    with torch.no_grad():
        assert block._fusable(x)
        handle = block.mlp.register_forward_hook(lambda *a: None)
        assert not block._fusable(x)
        handle.remove()
        monkeypatch.setattr(layers, "FUSE", False)
        assert not block._fusable(x)
        monkeypatch.setattr(layers, "FUSE", True)
        monkeypatch.setattr(layers, "ONEDNN", False)
        assert block._fusable(x) == (gemm == "mkl")  # MKL's fused path needs no oneDNN
        lin = layers.Linear(16, 3)
        torch.testing.assert_close(lin(x), F.linear(x, lin.weight, lin.bias))


@needs_onednn
def test_training_step_gradients_match_the_f_linear_path(monkeypatch):
    torch.manual_seed(3)
    block = layers.Block(32, 4, 64, act="quick_gelu")
    x = torch.randn(2, 6, 32)

    def grads():
        block.zero_grad()
        out, _ = block(x, causal=True)
        out.square().sum().backward()
        return [p.grad.clone() for p in block.parameters()]

    monkeypatch.setattr(layers, "GEMM", "onednn")
    onednn = grads()
    monkeypatch.setattr(layers, "GEMM", "mkl")
    mkl = grads()
    for a, b in zip(onednn, mkl):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-5)


@needs_onednn
@pytest.mark.parametrize("fuse", [False, True])
@pytest.mark.parametrize("act", ["gelu", "quick_gelu", "gelu_tanh"])
def test_activation_fused_or_in_place_gives_the_same_block(monkeypatch, act, fuse):
    """fc1's activation as a oneDNN post-op (AVX-512 default) or in place after the GEMM (AVX2 default)."""
    monkeypatch.setattr(layers, "GEMM", "onednn")
    monkeypatch.setattr(layers, "FUSE_ACTIVATION", fuse)
    block = _random_block(3, act)
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


def test_cpu_autocast_takes_the_plain_path(gemm):
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
        assert block._fusable(x)  # and back on the fused path outside autocast


def test_gemm_library_follows_the_cpu_vendor_unless_forced(monkeypatch):
    monkeypatch.delenv("KIZUNA_GEMM", raising=False)
    assert layers.cpu_info("vendor_id", "processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t: avx512f\n") == "GenuineIntel"
    assert layers.cpu_info("vendor_id", "no vendor line\n") == ""
    assert layers._gemm_default("GenuineIntel", onednn=True) == "mkl"  # MKL's AVX-512 GEMM is the faster one there
    assert layers._gemm_default("AuthenticAMD", onednn=True) == "onednn"
    assert layers._gemm_default("", onednn=True) == "onednn"
    assert layers._gemm_default("AuthenticAMD", onednn=False) == "mkl"  # no oneDNN op in this torch
    monkeypatch.setenv("KIZUNA_GEMM", "onednn")
    assert layers._gemm_default("GenuineIntel", onednn=True) == "onednn"
    monkeypatch.setenv("KIZUNA_GEMM", "mkl")
    assert layers._gemm_default("AuthenticAMD", onednn=True) == "mkl"
    monkeypatch.setenv("KIZUNA_GEMM", "MKL")  # any case
    assert layers._gemm_default("AuthenticAMD", onednn=True) == "mkl"
    monkeypatch.setenv("KIZUNA_GEMM", "")  # empty: unset
    assert layers._gemm_default("AuthenticAMD", onednn=True) == "onednn"
    monkeypatch.setenv("KIZUNA_GEMM", "openblas")  # warned about and ignored (read at import: not a traceback)
    with pytest.warns(RuntimeWarning, match="KIZUNA_GEMM='openblas' is none of onednn, mkl: ignored, using onednn"):
        assert layers._gemm_default("AuthenticAMD", onednn=True) == "onednn"


@needs_onednn
def test_linears_go_where_gemm_says(monkeypatch):
    """oneDNN: a graph-building call through its autograd function, inference straight to the op;
    MKL: ``F.linear`` (aten::addmm) for both, except inference under MKL_MIN_ROWS rows (on oneDNN)."""
    torch.manual_seed(0)
    lin = layers.Linear(8, 4)
    x = torch.randn(2, 8)
    calls = []
    real_lp = layers._LP
    monkeypatch.setattr(layers, "_LP", lambda *a: calls.append(1) or real_lp(*a))
    monkeypatch.setattr(layers, "GEMM", "onednn")
    assert type(lin(x).grad_fn).__name__ == "_OneDNNLinearBackward"
    with torch.no_grad():
        lin(x)
    assert len(calls) == 2
    monkeypatch.setattr(layers, "GEMM", "mkl")
    monkeypatch.setattr(layers, "MKL_MIN_ROWS", 0)
    assert type(lin(x).grad_fn).__name__ == "AddmmBackward0"
    with torch.no_grad():
        lin(x)
    assert len(calls) == 2
    monkeypatch.setattr(layers, "MKL_MIN_ROWS", 3)  # inference under 3 rows: oneDNN; training stays on MKL
    with torch.no_grad():
        lin(x)
        lin(torch.randn(3, 8))
    assert len(calls) == 3
    assert type(lin(x).grad_fn).__name__ == "AddmmBackward0"


def test_row_threshold_from_the_environment(monkeypatch):
    monkeypatch.delenv("KIZUNA_MKL_MIN_ROWS", raising=False)
    assert layers._env_rows("KIZUNA_MKL_MIN_ROWS", 512) == 512
    monkeypatch.setenv("KIZUNA_MKL_MIN_ROWS", "0")
    assert layers._env_rows("KIZUNA_MKL_MIN_ROWS", 512) == 0
    monkeypatch.setenv("KIZUNA_MKL_MIN_ROWS", "")  # empty: unset
    assert layers._env_rows("KIZUNA_MKL_MIN_ROWS", 512) == 512
    for bad in ("many", "-3"):
        monkeypatch.setenv("KIZUNA_MKL_MIN_ROWS", bad)
        with pytest.warns(RuntimeWarning, match=f"KIZUNA_MKL_MIN_ROWS='{bad}' is no row count >= 0: ignored"):
            assert layers._env_rows("KIZUNA_MKL_MIN_ROWS", 512) == 512


def test_a_bad_gemm_setting_in_the_environment_does_not_stop_a_command():
    """Read at import: a ValueError there ended `kizuna --help` (and `import kizuna`) in a traceback."""
    import subprocess
    import sys

    env = {**os.environ, "KIZUNA_GEMM": "MKLX", "KIZUNA_MKL_MIN_ROWS": "many"}
    done = subprocess.run([sys.executable, "-m", "kizuna.apps.cli", "--version"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert "KIZUNA_GEMM='MKLX'" in done.stderr and "KIZUNA_MKL_MIN_ROWS='many'" in done.stderr


@pytest.mark.parametrize("causal", [False, True])
def test_cpu_training_attention_materialised_gives_sdpas_outputs_and_gradients(monkeypatch, causal):
    """CPU training runs short attention materialised (``layers.MATERIALISED_TRAINING_KEYS``): the same loss and
    gradients as SDPA, for whole blocks and for the pruned last block (``forward_rows``, a causal key mask)."""
    monkeypatch.setattr(layers, "MATERIALISED_TRAINING_KEYS", {torch.float32: 80})  # Intel's default
    torch.manual_seed(4)
    stack = layers.Transformer(32, 2, 4, 64, "quick_gelu", 1e-5)
    x = torch.randn(2, 9, 32, requires_grad=True)
    rows = torch.tensor([[8], [5]])

    def run():
        stack.zero_grad()
        x.grad = None
        out, _, _ = stack(x, causal=causal, rows=rows)
        out.square().sum().backward()
        return [out.detach(), x.grad.clone()] + [p.grad.clone() for p in stack.parameters()]

    assert layers._materialise_for_training(torch.randn(1, 1, 9, 8, requires_grad=True), torch.randn(1, 1, 9, 8))
    materialised = run()
    monkeypatch.setattr(layers, "MATERIALISED_TRAINING_KEYS", {})  # SDPA everywhere
    assert not layers._materialise_for_training(torch.randn(1, 1, 9, 8, requires_grad=True), torch.randn(1, 1, 9, 8))
    sdpa = run()
    for a, b in zip(materialised, sdpa):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_attention_is_materialised_only_for_short_cpu_training(monkeypatch):
    monkeypatch.setattr(layers, "MATERIALISED_TRAINING_KEYS", {torch.float32: 80, torch.bfloat16: 200})
    q = torch.randn(1, 2, 50, 8, requires_grad=True)
    long_k = torch.randn(1, 2, layers.MATERIALISED_TRAINING_KEYS[torch.float32] + 1, 8)
    assert layers._materialise_for_training(q, q)
    assert not layers._materialise_for_training(q, long_k)  # flash's backward is faster on long sequences
    with torch.no_grad():
        assert not layers._materialise_for_training(q, q)  # inference keeps SDPA
    assert layers._materialise_for_training(q.detach().bfloat16().requires_grad_(), long_k.bfloat16())


def test_the_training_attention_and_patch_gemm_rules_follow_what_was_measured(monkeypatch):
    """Materialised training attention where measured faster (CPUs with AVX-512: a Xeon and a Zen 4 EPYC),
    the patch GEMM on Intel only (it lost at ViT-B/16 and at CIFAR sizes on the EPYC); the environment
    overrides both."""
    from kizuna.models import vit

    assert layers.INTEL == (layers.cpu_info("vendor_id") == "GenuineIntel")
    avx512 = "AVX512" in torch.backends.cpu.get_cpu_capability()
    assert bool(layers.MATERIALISED_TRAINING_KEYS) == avx512 and vit.PATCH_GEMM == layers.INTEL
    for value, on in (("0", False), ("1", True)):
        monkeypatch.setenv("KIZUNA_MATERIALISED_ATTENTION", value)
        monkeypatch.setenv("KIZUNA_PATCH_GEMM", value)
        assert bool(layers._materialised_keys_default()) is on and vit._patch_gemm_default() is on


@pytest.mark.parametrize("library", LIBRARIES)
def test_an_empty_batch_passes_the_fused_path_on_either_library(library, monkeypatch):
    """MKL's fused linear viewed its output as ``(*x.shape[:-1], -1)``: a 0-row batch has no size for -1, and
    ``encode_image`` of an empty batch raised under KIZUNA_MKL_MIN_ROWS=0 or KIZUNA_ONEDNN=0 (found by Hypothesis)."""
    monkeypatch.setattr(layers, "GEMM", library)
    monkeypatch.setattr(layers, "MKL_MIN_ROWS", 0)
    block = _random_block(7)
    with torch.no_grad():
        assert block._fused_library(torch.zeros(0, 5, 32)) == library
        assert block(torch.zeros(0, 5, 32))[0].shape == (0, 5, 32)
