"""Tokenizers on text with UTF-16 surrogates (stop 47's review against OpenAI's tokenizer): a valid pair (a
character above U+FFFF kept as its two halves: a JSON-escaped emoji) became two U+FFFD in ``__call__``, unlike
OpenAI's ids and the same tokenizer's ``encode``; SigLIP's ``encode`` failed on a lone half inside SentencePiece."""
import codecs

import torch

from kizuna.data.siglip_tokenizer import SiglipTokenizer
from kizuna.data.tokenizer import ClipTokenizer

PAIRED = codecs.decode(r"a dog \ud83d\udc36 on grass", "unicode_escape")  # "a dog 🐶 on grass", as two halves


def test_a_surrogate_pair_is_its_character_as_openais_tokenizer_has_it():
    tok = ClipTokenizer(context_length=16)
    real = "a dog \U0001F436 on grass"
    assert torch.equal(tok([PAIRED]), tok([real]))
    assert tok.encode(PAIRED) == tok([PAIRED])[0][1:6].tolist()
    # a half still alone is U+FFFD, as before (and a pair beside it is still joined)
    lone = "caf\udce9 " + PAIRED
    assert torch.equal(tok([lone]), tok(["caf\ufffd " + real]))


def test_siglips_encode_takes_a_lone_surrogate_as_its_call_does(spiece_model):
    tok = SiglipTokenizer(spiece_model, context_length=16)
    assert tok.encode_batch(["caf\udce9"]) == tok.encode_batch(["caf\ufffd"])
    assert torch.equal(tok([PAIRED]), tok(["a dog \U0001F436 on grass"]))
