"""The benchmarks' stand-ins for kizuna functions keep their signatures (stop 49): the tokenizer section's
``openai_clean`` replaced ``clean_text`` after a keyword was added to it, and `make bench` stopped in its first
section (its test is marked slow, so the default suite never saw it)."""
import inspect
import re

from benchmarks.tokenizer import openai_clean
from kizuna.data.tokenizer import ClipTokenizer, clean_text


def test_openai_clean_takes_what_clean_text_takes():
    assert list(inspect.signature(openai_clean).parameters) == list(inspect.signature(clean_text).parameters)


def test_the_tokenizer_with_openai_clean_in_place_encodes(monkeypatch):
    import kizuna.data.tokenizer as ktok

    monkeypatch.setattr(ktok, "clean_text", openai_clean)
    monkeypatch.setattr(ktok, "_PLAIN_TEXT", re.compile(r"(?!)"))  # as the section does: every text cleaned
    ids = ClipTokenizer(16)(["A  Dog on the beach", "café"])
    assert ids.shape == (2, 16)
