"""Without ftfy (a --no-deps install), CLIP's cleaning gave other token ids than OpenAI's and said nothing."""
from __future__ import annotations

import pytest

import kizuna
from kizuna.data import tokenizer as tokenizer_module
from kizuna.extras import MissingExtra


def test_text_ftfy_would_change_is_refused_without_it(monkeypatch):
    tok = kizuna.get_tokenizer("clip_bpe")
    with_ftfy = tok(["café au lait".encode().decode("latin-1"), "a photo of a dog"])
    monkeypatch.setattr(tokenizer_module, "ftfy", None)
    # plain ASCII, which ftfy leaves as it is: the same ids
    assert tok(["a photo of a dog"]).equal(with_ftfy[1:])
    with pytest.raises(MissingExtra, match=r"needs the ftfy package .* pip install 'ftfy>=6'"):
        tok(["café au lait".encode().decode("latin-1")])
    with pytest.raises(ValueError):  # (a one-line error on the command line)
        tokenizer_module.clean_text("ﬁsh")
