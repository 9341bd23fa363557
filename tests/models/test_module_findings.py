"""The models used as researchers use timm's and OpenCLIP's: parts swapped or adapted, hooks and pruning on any
module, configs shared between models, ids in narrow integer types, scores under a caller's autocast, DDP at
one image per process (findings of a review of the models as nn.Modules, 2026-12-06)."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.utils.prune
from torch import nn

import kizuna
from kizuna.eval.classification import classify_features
from kizuna.eval.retrieval import retrieval_from_features
from kizuna.models.checkpoint import load_model, save_model


class LoRA(nn.Module):
    """What peft's LoRA layers look like to the model: the base layer's weight and bias exposed, a low-rank
    update added in forward."""

    def __init__(self, base: nn.Linear, rank: int = 2):
        super().__init__()
        self.base = base
        self.down = nn.Parameter(torch.randn(rank, base.in_features) * 0.2)
        self.up = nn.Parameter(torch.randn(base.out_features, rank) * 0.2)

    @property
    def weight(self):
        return self.base.weight

    @property
    def bias(self):
        return self.base.bias

    def forward(self, x):
        return self.base(x) + x @ self.down.T @ self.up.T

    def merged(self) -> nn.Linear:
        out = copy.deepcopy(self.base)
        with torch.no_grad():
            out.weight += self.up @ self.down
        return out


def _tiny():
    torch.manual_seed(0)
    return kizuna.create_model("ViT-mu-8").eval()


def _encode(model, grad=False):
    torch.manual_seed(1)
    images, tokens = torch.randn(2, 3, 32, 32), torch.randint(1, 400, (2, 12))
    tokens[:, 0], tokens[0, 5], tokens[1, 11] = 49406, 49407, 49407
    with torch.set_grad_enabled(grad):
        return model.encode_image(images), model.encode_text(tokens)


def test_an_adapter_wrapping_qkv_is_used_on_every_path():
    """Under no_grad the fused path read attn.qkv.weight and the row-only last block sliced it: a LoRA-wrapped
    model gave exactly the model without its adapters (and the last block's adapter got no gradient)."""
    adapted, merged = _tiny(), _tiny()
    for tower_a, tower_m in ((adapted.visual, merged.visual), (adapted.text, merged.text)):
        for block_a, block_m in zip(tower_a.transformer.blocks, tower_m.transformer.blocks):
            block_a.attn.qkv = LoRA(block_a.attn.qkv)
            block_m.attn.qkv = block_a.attn.qkv.merged()  # the same function as plain weights: fast paths
    plain = _encode(_tiny())
    for grad in (False, True):
        got, want = _encode(adapted, grad), _encode(merged, grad)
        for g, w, p in zip(got, want, plain):
            torch.testing.assert_close(g, w, atol=2e-5, rtol=2e-5)
            assert (g - p).abs().max() > 1e-2  # the adapters changed something
    image, text = _encode(adapted, grad=True)
    (image.sum() + text.sum()).backward()
    for tower in (adapted.visual, adapted.text):
        assert tower.transformer.blocks[-1].attn.qkv.down.grad.abs().sum() > 0


def test_a_swapped_activation_is_used_under_no_grad():
    model = _tiny()
    for block in model.visual.transformer.blocks:
        block.mlp.act = nn.ReLU()
    fast, slow = _encode(model)[0], _encode(model, grad=True)[0]
    torch.testing.assert_close(fast, slow.detach(), atol=2e-5, rtol=2e-5)
    assert (fast - _encode(_tiny())[0]).abs().max() > 1e-3


def test_hooks_on_the_patch_embedding_the_head_and_inside_the_last_block_fire():
    model = _tiny()
    fired = []
    model.visual.patch_embed.proj.register_forward_hook(lambda *a: fired.append("patch"))
    model.visual.transformer.blocks[-1].attn.qkv.register_full_backward_hook(lambda *a: fired.append("qkv back"))
    image, _ = _encode(model, grad=True)
    image.sum().backward()
    assert fired == ["patch", "qkv back"]
    vit = kizuna.create_vit("mu/4", image_size=16, num_classes=3, width=32, depth=1, heads=2, mlp_dim=64).eval()
    vit.head.register_forward_hook(lambda *a: fired.append("head"))
    with torch.no_grad():
        logits = vit(torch.randn(2, 3, 16, 16))
    assert fired[-1] == "head" and logits.dtype == torch.float32


@pytest.mark.filterwarnings("ignore:torch.ao.quantization is deprecated:DeprecationWarning")
@pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor:UserWarning")
def test_pruning_and_dynamic_quantization_of_a_supervised_vit():
    """prune's forward-pre hook recomputes weight: the conv never called, step 1 reused a freed graph
    ("backward through the graph a second time"); quantize_dynamic's head has a weight() method: AttributeError."""
    vit = kizuna.create_vit("mu/4", image_size=16, num_classes=3, width=32, depth=1, heads=2, mlp_dim=64)
    torch.nn.utils.prune.l1_unstructured(vit.patch_embed.proj, "weight", 0.5)
    opt = torch.optim.SGD(vit.parameters(), lr=0.1)
    for _ in range(2):
        opt.zero_grad()
        vit(torch.randn(2, 3, 16, 16)).sum().backward()
        opt.step()
    pruned = vit.patch_embed.proj.weight
    assert (pruned == 0).float().mean() >= 0.5
    quantized = torch.ao.quantization.quantize_dynamic(
        kizuna.create_vit("mu/4", image_size=16, num_classes=3, width=32, depth=1, heads=2, mlp_dim=64).eval(),
        {nn.Linear})
    assert quantized(torch.randn(2, 3, 16, 16)).shape == (2, 3)


@pytest.mark.parametrize("where", ["visual.transformer", "visual.norm", "text.transformer", "text.norm"])
def test_a_hook_on_the_transformer_or_final_norm_sees_every_token(where):
    """They saw the pooled row alone ([B, 1, D]): the row-only last block stepped aside for hooks on that block
    only."""
    model = _tiny()
    seen = []
    model.get_submodule(where).register_forward_hook(
        lambda mod, args, out: seen.append(tuple((out[0] if isinstance(out, tuple) else out).shape)))
    plain = _encode(_tiny())
    image, text = _encode(model)
    expected_tokens = 17 if where.startswith("visual") else 12  # 16 patches + class token; text up to its EOT
    assert seen[0][1] == expected_tokens
    torch.testing.assert_close(image, plain[0])
    torch.testing.assert_close(text, plain[1])


def test_reset_classifier_leaves_a_model_sharing_the_config_alone(tmp_path):
    cfg = kizuna.vit_config("mu/4", image_size=16, num_classes=10, width=32, depth=1, heads=2, mlp_dim=64)
    teacher = kizuna.models.vit.VisionTransformer(cfg)
    student = kizuna.models.vit.VisionTransformer(cfg)
    student.reset_classifier(100)
    assert teacher.cfg.num_classes == 10 and cfg.num_classes == 10
    save_model(teacher, tmp_path / "teacher")
    assert load_model(tmp_path / "teacher").head.out_features == 10  # its saved config named a 100-wide head
    clip = _tiny()  # a CLIP model's config and its towers' stay the same objects
    assert clip.cfg.vision is clip.visual.cfg and clip.cfg.text is clip.text.cfg


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int16, torch.uint16, torch.uint32])
def test_token_ids_in_a_narrow_integer_type_encode_as_int64(dtype):
    """uint16 holds CLIP's 49,408 ids; these failed inside torch (aminmax / Embedding)."""
    model = _tiny()
    tokens = torch.tensor([[49406 if dtype not in (torch.uint8, torch.int16) else 1, 7, 200, 2, 0, 0]])
    tokens[0, 3] = model.cfg.text.eot_token_id if dtype not in (torch.uint8, torch.int16) else 3
    with torch.no_grad():
        torch.testing.assert_close(model.encode_text(tokens.to(dtype)), model.encode_text(tokens))


def test_scores_under_a_callers_bf16_autocast_are_the_float32_ones():
    """Retrieval raised (float32 buffers given bf16 scores), zero-shot top-1 fell from 1.0 to 0.99 on its own
    labels, and ClipModel.logits came out bf16, when a caller evaluated inside torch.autocast."""
    torch.manual_seed(0)
    images = nn.functional.normalize(torch.randn(300, 64), dim=-1)
    texts = nn.functional.normalize(images.repeat_interleave(2, 0) + 0.3 * torch.randn(600, 64), dim=-1)
    t2i = torch.arange(300).repeat_interleave(2)
    weights = nn.functional.normalize(torch.randn(40, 64), dim=-1)
    labels = (images @ weights.T).argmax(1)
    names = [str(i) for i in range(40)]
    plain_r = retrieval_from_features(images, texts, t2i)
    plain_c = classify_features(images, labels, weights, names)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto_r = retrieval_from_features(images, texts, t2i)
        auto_c = classify_features(images, labels, weights, names)
        model = _tiny()
        torch.manual_seed(1)
        logits, _ = model.logits(torch.randn(2, 3, 32, 32), torch.randint(1, 400, (3, 12)))
    assert auto_r.metrics == plain_r.metrics
    assert auto_c.metrics == plain_c.metrics and plain_c.metrics["acc1"] == 1.0
    assert logits.dtype == torch.float32


def test_the_class_tokens_gradient_has_plain_strides_at_batch_one():
    """At batch 1 it was a slice of the concatenation's gradient ([T*D, D, 1]); DDP warned "Grad strides do not
    match bucket view strides" on every rank of a run with one image per process."""
    model = kizuna.create_model("ViT-mu-8").visual
    model(torch.randn(1, 3, 32, 32)).sum().backward()
    assert model.cls_token.grad.stride() == model.cls_token.stride()


def test_logits_and_scores_on_the_meta_device():
    """torch.autocast("meta") raises: the float32 scoring's autocast-off context broke ClipModel.logits on meta
    (shape inference), which worked before it (the review)."""
    from kizuna.models.losses import similarity

    with torch.device("meta"):
        model = kizuna.create_model("ViT-mu-8")
        logits, _ = model.logits(torch.randn(2, 3, 32, 32), torch.randint(1, 400, (3, 12)))
        assert logits.shape == (2, 3) and similarity(torch.randn(3, 4), torch.randn(5, 4)).shape == (3, 5)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor:UserWarning")
def test_cached_text_embeddings_of_another_dtype_are_cast_like_pixels():
    """A float32 cache of a locked text tower's outputs, given to a bf16 model, failed inside F.linear."""
    model = kizuna.create_model("ViT-mu-8", precision="bf16")
    # a tower with outputs before its projection (MiniLM's, which needs its package; stood in for: kizuna's own
    # tower has none, and refuses text_embeddings)
    model.text.sentence_embeddings = lambda tokens: None
    width = model.text.proj.weight.shape[1]
    cached = torch.randn(3, width)
    with torch.no_grad():
        out = model(text_embeddings=cached)
        want = model(text_embeddings=cached.to(torch.bfloat16))
    torch.testing.assert_close(out["text_features"], want["text_features"])
    with pytest.raises(TypeError, match="text_embeddings must be a float tensor"):
        model(text_embeddings=torch.ones(3, width, dtype=torch.long))
    # a dynamically quantized projection (its weight is a method) takes float32, as before the cast (the review)
    fp32 = kizuna.create_model("ViT-mu-8").eval()
    fp32.text.sentence_embeddings = lambda tokens: None
    fp32.text.proj = torch.ao.nn.quantized.dynamic.Linear(width, fp32.text.proj.out_features, bias_=False)
    with torch.no_grad():
        assert fp32(text_embeddings=cached)["text_features"].shape == (3, fp32.text.proj.out_features)
