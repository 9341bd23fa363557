"""The CPU paths taken on an AMD EPYC without AVX-512 (stop 46), where oneDNN runs the linears: a torch.func
transform or forward-mode AD through them gave a frozen encoder's tangent as exactly 0, or failed (vmap, per-sample
gradients: "must override the setup_context staticmethod") where Intel's MKL path ran; a forced KIZUNA_GEMM=onednn
where oneDNN is unusable claimed oneDNN and ran MKL unfused."""
import pytest
import torch
import torch.autograd.forward_ad as forward_ad

import kizuna
from kizuna.models import layers


@pytest.fixture
def frozen_linear():
    torch.manual_seed(0)
    return layers.Linear(8, 4).requires_grad_(False)


def test_a_jvp_through_a_linear_is_its_tangent(frozen_linear):
    x, t = torch.randn(3, 8), torch.randn(3, 8)
    _, tangent = torch.func.jvp(frozen_linear, (x,), (t,))
    assert torch.allclose(tangent, t @ frozen_linear.weight.T, atol=1e-6)  # (it was all zeros)
    with forward_ad.dual_level():
        out = frozen_linear(forward_ad.make_dual(x, t))
        assert torch.allclose(forward_ad.unpack_dual(out).tangent, t @ frozen_linear.weight.T, atol=1e-6)


def test_vmap_and_per_sample_gradients_run_through_the_towers():
    torch.manual_seed(0)
    model = kizuna.create_model("ViT-mu-8")
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        batched = model.encode_image(images)
    assert torch.allclose(torch.func.vmap(lambda x: model.encode_image(x[None])[0])(images), batched, atol=1e-5)
    params = {k: v.detach() for k, v in model.visual.named_parameters()}

    def loss(p, x):
        return torch.func.functional_call(model.visual, p, (x[None],)).pow(2).sum()

    grads = torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0))(params, images)
    assert all(g.shape[0] == 2 for g in grads.values())
    saliency = torch.func.jacrev(lambda x: model.encode_image(x[None]).sum())(images[0])
    assert saliency.shape == (3, 32, 32) and saliency.abs().sum() > 0


def test_a_forced_onednn_where_it_is_unusable_is_said_and_mkl_taken(monkeypatch):
    monkeypatch.setenv("KIZUNA_GEMM", "onednn")
    with pytest.warns(RuntimeWarning, match="oneDNN's op is unusable here"):
        assert layers._gemm_default(onednn=False) == "mkl"
    assert layers._gemm_default(onednn=True) == "onednn"
