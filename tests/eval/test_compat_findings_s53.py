"""Files an older kizuna wrote, read by today's (session 53)."""
from __future__ import annotations

import torch

import kizuna
from kizuna.eval.classification import class_embeddings, clear_class_cache


def test_a_class_cache_file_is_keyed_on_the_prompts_token_ids(tmp_path, monkeypatch):
    """A fix to how a text tokenizes (surrogate pairs, 67ddbd9) kept the tokenizer's config and the weights: the
    files written before it served the old ids' embeddings (0.035 off the new ones)."""
    model = kizuna.create_model("ViT-mu-8")
    tok = kizuna.get_tokenizer(model)
    names, templates = ["dog", "cat"], ["a photo of a {}."]
    clear_class_cache()
    class_embeddings(model, tok, names, templates, cache_dir=tmp_path)  # the older tokenizer's file
    assert len(list(tmp_path.glob("classes-*.pt"))) == 1
    tokenize = type(tok).__call__

    def fixed(self, texts, *a, **k):  # the same tokenizer, "fixed": another id for one word
        ids = tokenize(self, texts, *a, **k)
        return torch.where(ids == ids[0, 5], torch.full_like(ids, 320), ids)

    monkeypatch.setattr(type(tok), "__call__", fixed)
    clear_class_cache()
    cached = class_embeddings(model, tok, names, templates, cache_dir=tmp_path)
    clear_class_cache()
    fresh = class_embeddings(model, tok, names, templates, cache=False)
    torch.testing.assert_close(cached, fresh, rtol=0, atol=0)
    assert len(list(tmp_path.glob("classes-*.pt"))) == 2
