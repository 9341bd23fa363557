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
        tokenizer_module.clean_text("ﬁsh", for_ids=True)


def test_without_ftfy_the_uses_that_make_no_clip_ids_go_on(monkeypatch, tmp_path):
    """The refusal is the CLIP BPE's: a ViT dataset with a class "crème brûlée" and a caption "fish & chips" were
    refused too (the repeated-name check and the blank-caption filter clean text, and make no ids)."""
    from kizuna.data.sources import build_index

    monkeypatch.setattr(tokenizer_module, "ftfy", None)
    assert tokenizer_module.clean_text("Crème  Brûlée") == "crème brûlée"
    (tmp_path / "a.png").write_bytes(b"")
    (tmp_path / "d.csv").write_text("filepath,title\na.png,fish & chips\n", encoding="utf-8")
    index = build_index(str(tmp_path / "d.csv"), require="caption", check_files=False)
    assert list(index.captions[0]) == ["fish & chips"]
