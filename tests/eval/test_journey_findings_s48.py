"""A notebook's ways of holding a model: created under torch.inference_mode(), or a ViT saved from Python."""
from __future__ import annotations

import pytest
import torch

import kizuna
from _evalhelpers import image_folder


def test_a_model_created_in_inference_mode_evaluates(tmp_path):
    """Its tensors are inference tensors, which have no version counter: evaluate_zeroshot's class cache read it
    and raised "Inference tensors do not track version counter"."""
    from kizuna.eval.classification import class_embeddings, evaluate_zeroshot
    from kizuna.eval.datasets import load_dataset

    image_folder(tmp_path / "d", per_class=2, classes=("cat", "dog"))
    torch.manual_seed(0)
    kizuna.save_model(kizuna.create_model("ViT-mu-8"), tmp_path / "m")
    with torch.inference_mode():
        model = kizuna.create_model(str(tmp_path / "m"))
    tok = kizuna.get_tokenizer(model)
    ds = load_dataset(str(tmp_path / "d"))
    first = evaluate_zeroshot(model, tok, ds, progress=False).metrics["acc1"]
    with torch.inference_mode():
        assert evaluate_zeroshot(model, tok, ds, progress=False).metrics["acc1"] == first
    # a change of the weights (in inference mode, the only place it may be made) is still seen
    weights = class_embeddings(model, tok, ["cat", "dog"], ["a {c}"])
    with torch.inference_mode():
        model.text.token_embed.weight.mul_(2.0).add_(0.5)
    assert not torch.equal(class_embeddings(model, tok, ["cat", "dog"], ["a {c}"]), weights)


def test_a_vit_saved_from_python_is_told_what_to_pass(tmp_path):
    """The message said to read the checkpoint's stored preprocessing, which a ViT saved from Python has none of
    (a KeyError followed)."""
    vit = kizuna.create_vit("mu/4", image_size=32, num_classes=2)
    kizuna.save_model(vit, tmp_path / "vit")
    with pytest.raises(ValueError) as raised:
        kizuna.get_preprocess(kizuna.create_model(str(tmp_path / "vit")))
    message = str(raised.value)
    assert "read_extra" not in message and "created in Python" in message
    assert "vit_preprocess(model.cfg.image_size)" in message
