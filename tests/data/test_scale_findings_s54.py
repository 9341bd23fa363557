"""The BPE word cache is bounded by what it holds as well as by its count of chunks (stop 54's scale hunt): long
junk chunks (a web caption's base64) of 10^4 characters each filled GBs in every loader worker before the count
of 200,000 was reached."""
import random

from kizuna.data import tokenizer as ktok
from kizuna.data.tokenizer import ClipTokenizer, clean_text


def test_long_chunks_clear_the_word_cache_by_size(monkeypatch):
    rng = random.Random(0)
    junk = ["a photo of a dog data:image/png;base64," + "".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=2000))
            for _ in range(40)]
    tok = ClipTokenizer(77)
    expected = tok._encode_rust([clean_text(t) for t in junk])
    monkeypatch.setattr(ktok, "_WORD_CACHE_BYTES", 20_000)  # (some ten of these chunks)
    most = 0
    for i in range(0, len(junk), 4):
        assert tok.encode_batch(junk[i:i + 4]) == expected[i:i + 4]
        most = max(most, tok._words.chars + 8 * tok._words.n_ids)
    assert most < 20_000 + 4 * 12_000  # (it held all 40: some 400,000)
    assert tok.encode_batch(junk) == expected
