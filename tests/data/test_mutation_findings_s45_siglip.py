"""Mutation testing of stop 45's long-text cut in SigLIP's tokenizer (SiglipTokenizer._beginning): a text over
MAX_TRUNCATED_CHARS reaches the sentencepiece encoder cut when truncating, and whole when an overflow is an error
(its message counts the whole text's tokens)."""
import pytest

pytest.importorskip("sentencepiece")

from kizuna.data.siglip_tokenizer import SiglipTokenizer  # noqa: E402
from kizuna.data.tokenizer import MAX_TRUNCATED_CHARS  # noqa: E402


def _spied(spiece_model, monkeypatch):
    tok = SiglipTokenizer(spiece_model, context_length=8)
    seen = []

    def encode(text):
        seen.append(len(text))
        return [5] * (len(text) // 2 + 1)  # (as many ids as words of "a ")

    monkeypatch.setattr(tok, "encode", encode)
    return tok, seen


def test_a_very_long_text_is_cut_before_encoding_when_truncated(spiece_model, monkeypatch):
    """Kills: the cut skipped (``if False``: 2 M characters encoded for 8 tokens)."""
    tok, seen = _spied(spiece_model, monkeypatch)
    out = tok(["a " * MAX_TRUNCATED_CHARS])
    assert out.shape == (1, 8) and len(seen) == 1 and MAX_TRUNCATED_CHARS // 2 <= seen[0] <= MAX_TRUNCATED_CHARS


def test_a_very_long_text_is_encoded_whole_when_an_overflow_is_an_error(spiece_model, monkeypatch):
    """on_overflow="error" counts the whole text's tokens. Kills: the cut applied whatever on_overflow is (the
    message counted the cut text's tokens)."""
    tok, seen = _spied(spiece_model, monkeypatch)
    text = "a " * MAX_TRUNCATED_CHARS
    with pytest.raises(ValueError, match=rf"is {MAX_TRUNCATED_CHARS + 2} tokens long"):
        tok([text], on_overflow="error")
    assert seen == [len(text)]
