"""Line-by-line review of data/ (stop 45): SigLIP cuts a very long text by its own canonical form, a kizuna
tokenizer config given to TrainedBpeTokenizer.load is named, a reordered CSV is described as possibly reordered."""
import json

import pytest

from kizuna.data.tokenizer import MAX_TRUNCATED_CHARS


@pytest.mark.parametrize("before", [".", "!?", ". "])
def test_siglip_keeps_the_words_after_a_million_characters_it_deletes(spiece_model, before):
    """Measured by CLIP's cleaning (which keeps punctuation), a million dots were the text's beginning: cut
    there, SigLIP deleted them all and kept none of the words."""
    from kizuna.data.siglip_tokenizer import SiglipTokenizer

    tok = SiglipTokenizer(spiece_model, context_length=16)
    text = before * (MAX_TRUNCATED_CHARS // len(before) + 1000) + " a photo of a cat"
    expected = tok(["a photo of a cat"])[0].tolist()
    assert tok([text])[0].tolist() == expected == tok([text], on_overflow="error")[0].tolist()
    long_words = "a photo of a cat " * (MAX_TRUNCATED_CHARS // 8)  # cut at a space: the first tokens stay
    assert tok([long_words])[0].tolist() == tok([long_words[:2000]])[0].tolist()


def test_trained_bpe_load_names_a_kizuna_config(tmp_path):
    from kizuna.data.tokenizer import TrainedBpeTokenizer, load_tokenizer, train_bpe_tokenizer

    tok = train_bpe_tokenizer(["a photo of a cat", "a dog on the grass"] * 20, vocab_size=530)
    (tmp_path / "cfg.json").write_text(json.dumps(tok.to_config()))
    assert load_tokenizer(tmp_path / "cfg.json")("a cat").shape[-1] == 77
    with pytest.raises(ValueError, match="is a kizuna tokenizer config.*load_tokenizer"):
        TrainedBpeTokenizer.load(tmp_path / "cfg.json")
    (tmp_path / "bad.json").write_text('{"model": 1}')
    with pytest.raises(ValueError, match=r"TrainedBpeTokenizer\.save$"):  # no advice it cannot take
        TrainedBpeTokenizer.load(tmp_path / "bad.json")


def test_a_reordered_source_is_said_to_be_maybe_reordered():
    from kizuna.data.sampler import FINGERPRINT_VERSION, describe_data_change

    saved = {"version": FINGERPRINT_VERSION, "parts": [["csv", "d.csv", 4, "aaaa"]]}
    now = {"version": FINGERPRINT_VERSION, "parts": [["csv", "d.csv", 4, "bbbb"]]}
    assert "its keys in another order" in describe_data_change(saved, now)


def test_siglip_does_not_refuse_a_very_long_text_of_punctuation(spiece_model):
    """Cut to its canonical form first, a million dots were "" and refused as empty: a caption the training filter
    keeps (clean_text keeps dots) stopped the run. As the ten-dot text: EOS only."""
    from kizuna.data.siglip_tokenizer import SiglipTokenizer

    tok = SiglipTokenizer(spiece_model, context_length=8)
    assert tok(["." * (MAX_TRUNCATED_CHARS + 10)])[0].tolist() == tok(["." * 10])[0].tolist()
