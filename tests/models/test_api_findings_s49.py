"""A researcher's notebook calls (stop 49): cached text outputs, a config edited after building, compiled models."""
import dataclasses

import pytest
import torch

import kizuna
from kizuna.models.checkpoint import save_model


def test_text_embeddings_are_refused_for_a_tower_without_sentence_embeddings():
    """encode_text's features are already projected: passed as text_embeddings they were projected again and
    came out unrelated to the tokens' (cosine -0.02 on ViT-S-32, whose widths match, so nothing failed)."""
    torch.manual_seed(0)
    model = kizuna.create_model("ViT-mu-8")
    tokens = kizuna.get_tokenizer(model)(["a dog", "a cat"])
    with torch.no_grad():
        cached = model.encode_text(tokens)
    with pytest.raises(ValueError, match="pass tokens"):
        model(torch.randn(2, 3, 8, 8), text_embeddings=cached)


def test_a_config_changed_into_one_that_cannot_load_is_refused_when_saved(tmp_path):
    """loss='siglip' without a bias saved, then failed to load "from another kizuna version"."""
    model = kizuna.create_model("ViT-mu-8")
    model.cfg.loss = "siglip"
    with pytest.raises(ValueError, match="model.cfg.*logit bias"):
        save_model(model, tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_a_compiled_model_saves_as_the_model_inside(tmp_path):
    model = kizuna.create_model("ViT-mu-8")
    compiled = torch.compile(model)  # (not run: only wrapped)
    save_model(compiled, tmp_path / "m")
    back = kizuna.create_model(tmp_path / "m")
    assert set(back.state_dict()) == set(model.state_dict())  # no "_orig_mod." prefix
    for k, v in model.state_dict().items():
        assert torch.equal(back.state_dict()[k], v), k


def test_edited_config_copy_still_builds_and_saves(tmp_path):
    """dataclasses.replace of a whole config (not an edit in place) is a config like any other."""
    cfg = kizuna.clip_config("ViT-mu-8")
    model = kizuna.models.clip.ClipModel(dataclasses.replace(cfg, init_logit_scale=1.0))
    save_model(model, tmp_path / "m")
    assert float(kizuna.create_model(tmp_path / "m").logit_scale.detach()) == 1.0
