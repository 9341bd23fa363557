"""Mutation-testing round 48 (tokenizer): without ftfy only a text ftfy might change is refused, for CLIP ids."""
from __future__ import annotations

import pytest

from kizuna.data import tokenizer
from kizuna.extras import MissingExtra


def test_plain_text_is_cleaned_without_ftfy(monkeypatch):
    """Kills: the ftfy refusal reached for every text (plain ASCII, which ftfy leaves as it is, was refused
    without it: a --no-deps install could tokenize nothing)."""
    monkeypatch.setattr(tokenizer, "ftfy", None)
    assert tokenizer.clean_text("  A Photo of a  CAT ", for_ids=True) == "a photo of a cat"
    with pytest.raises(MissingExtra, match="needs the ftfy package"):
        tokenizer.clean_text("caf\u00c3\u00a9 au lait", for_ids=True)
