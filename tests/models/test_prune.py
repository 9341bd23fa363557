"""The pruned last block: a pooled tower runs its last block for the pooled token only (exact)."""
import pytest
import torch

import kizuna
from kizuna.models import layers


def _randomise(module, std=0.3):
    for p in module.parameters():
        p.data.normal_(0, std)
    return module


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("grad", [False, True])
@pytest.mark.parametrize("act", ["gelu", "quick_gelu"])
def test_forward_rows_equals_the_full_block_at_those_rows(causal, grad, act):
    torch.manual_seed(0)
    block = _randomise(layers.Block(32, 4, 64, act=act)).eval()
    x = torch.randn(3, 11, 32, requires_grad=grad)
    rows = torch.tensor([[0, 4], [10, 2], [7, 7]])
    with torch.set_grad_enabled(grad):
        full, _ = block(x, causal=causal)
        ref = full.gather(1, rows.unsqueeze(-1).expand(-1, -1, 32))
        out = block.forward_rows(x, rows, causal=causal)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    if grad:
        g = torch.randn_like(out)
        gx, *gp = torch.autograd.grad(out, [x, *block.parameters()], g)
        gx_ref, *gp_ref = torch.autograd.grad(ref, [x, *block.parameters()], g)
        torch.testing.assert_close(gx, gx_ref, atol=1e-5, rtol=1e-5)
        for a, b in zip(gp, gp_ref):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def _both(model, fn):
    """fn() with the pruned last block and with it switched off (the full block, the reference)."""
    towers = [t for t in (getattr(model, "visual", None), getattr(model, "text", None), model)
              if hasattr(t, "prune_last_block")]
    pruned = fn()
    for t in towers:
        t.prune_last_block = False
    try:
        return pruned, fn()
    finally:
        for t in towers:
            t.prune_last_block = True


@pytest.mark.parametrize("preset", ["ViT-mu-8", "ViT-mu-8-quickgelu", "siglip-mu-8"])
def test_clip_features_and_gradients_are_unchanged(preset):
    torch.manual_seed(1)
    model = _randomise(kizuna.create_model(preset), 0.1).train()
    images = torch.randn(4, 3, 32, 32)
    tokens = torch.randint(1, 400, (4, model.text.cfg.context_length if preset.startswith("siglip") else 16))
    if not preset.startswith("siglip"):
        tokens[:, 9] = model.text.cfg.eot_token_id
        tokens[1, 4] = model.text.cfg.eot_token_id  # pools at its first EOT: row 4

    def run():
        model.zero_grad()
        img, txt = model.encode_image(images), model.encode_text(tokens)
        (img.square().sum() + (img @ txt.T).sum()).backward()
        return img.detach(), txt.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]

    (i1, t1, g1), (i0, t0, g0) = _both(model, run)
    torch.testing.assert_close(i1, i0, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(t1, t0, atol=1e-5, rtol=1e-5)
    assert len(g1) == len(g0)
    for a, b in zip(g1, g0):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    with torch.inference_mode():  # the fused oneDNN inference path too
        (i1, t1), (i0, t0) = _both(model, lambda: (model.encode_image(images), model.encode_text(tokens)))
    torch.testing.assert_close(i1, i0, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(t1, t0, atol=1e-5, rtol=1e-5)


def test_supervised_vit_logits_and_grad_checkpointing():
    torch.manual_seed(2)
    vit = _randomise(kizuna.create_vit("mu/4", image_size=16, num_classes=5), 0.1)
    vit.set_grad_checkpointing(True)
    x = torch.randn(2, 3, 16, 16)
    pruned, full = _both(vit, lambda: vit(x))
    torch.testing.assert_close(pruned, full, atol=1e-5, rtol=1e-5)
    pruned.sum().backward()  # checkpointed pruned block backpropagates
    assert vit.transformer.blocks[-1].mlp.fc1.weight.grad is not None


def test_a_hook_on_the_last_block_sees_its_full_output():
    torch.manual_seed(3)
    vit = _randomise(kizuna.create_vit("mu/4", image_size=16, num_classes=5), 0.1).eval()
    seen = []
    vit.transformer.blocks[-1].register_forward_hook(lambda mod, args, out: seen.append(out[0].shape))
    x = torch.randn(2, 3, 16, 16)
    pruned, full = _both(vit, lambda: vit(x))
    assert seen == [(2, 17, 64), (2, 17, 64)]  # both calls ran the whole block
    torch.testing.assert_close(pruned, full, atol=1e-5, rtol=1e-5)
