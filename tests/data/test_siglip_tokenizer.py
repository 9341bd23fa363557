"""SigLIP's sentencepiece tokenizer against transformers' SiglipTokenizer (the reference), on a model
trained in the session (tests/conftest.py: spiece_model)."""
import pytest
import torch

pytest.importorskip("sentencepiece")
transformers = pytest.importorskip("transformers")

from kizuna.data.siglip_tokenizer import SiglipTokenizer, siglip_tokenizer_config  # noqa: E402
from kizuna.data.tokenizer import get_tokenizer  # noqa: E402

TRICKY = ["A photo of a dog.", " hello  world ", "Two dogs, playing! In the SNOW?", "UPPER lower MiXeD",
          "émoji 😀 and ✓ unicode", "tabs\tand\nnewlines", "a " * 100, "x", "!!!", "don't stop",
          "\u2581weird\u2581boundary", "numbers 123 4.5", "end with space ", "  leading", "a-b_c/d", "Ünïcödé çafé"]


@pytest.fixture
def hf_and_ours(spiece_models, tmp_path):
    path = tmp_path / "spiece.model"
    path.write_bytes(spiece_models)
    try:
        hf = transformers.SiglipTokenizer(vocab_file=str(path))
    except ImportError as e:  # transformers' tokenizer also needs protobuf
        pytest.skip(f"transformers.SiglipTokenizer unavailable: {e}")
    return hf, SiglipTokenizer(spiece_models, context_length=64)


def test_ids_equal_transformers_siglip_tokenizer(hf_and_ours, caption_corpus):
    """Padded to the context (SigLIP pools the last position), EOS last, punctuation and case dropped."""
    hf, ours = hf_and_ours
    texts = TRICKY + caption_corpus[::7]
    ref = hf(texts, padding="max_length", truncation=True, max_length=64, return_tensors="pt")["input_ids"]
    got = ours(texts)
    assert got.shape == ref.shape == (len(texts), 64) and got.dtype == torch.long
    mismatched = [t for t, a, b in zip(texts, ref, got) if not torch.equal(a, b)]
    assert not mismatched, mismatched[:5]
    assert ours.eot_token_id == hf.eos_token_id and ours.pad_token_id == hf.pad_token_id == 1
    long = ours(["a " * 100])[0]  # cut so that EOS stays last, no padding left
    assert long[-1] == ours.eot_token_id and (long != ours.pad_token_id).sum() >= 63 - 1


def test_canonicalisation_and_refusals(hf_and_ours):
    _, ours = hf_and_ours
    assert ours.canonicalize("  Hello,   World!! ") == "hello world"
    assert torch.equal(ours(["A DOG."]), ours(["a dog"]))  # case and punctuation do not reach the ids
    assert ours.decode(ours(["a photo of a dog"])[0]) == "a photo of a dog"
    with pytest.raises(ValueError, match="empty text at index 1"):
        ours(["fine", "  "])
    with pytest.raises(ValueError, match="over the context length 4"):
        ours(["a photo of a dog"], context_length=4, on_overflow="error")


def test_config_round_trip_and_hf_folder_settings(spiece_model, tmp_path):
    (tmp_path / "spiece.model").write_bytes(spiece_model)
    (tmp_path / "tokenizer_config.json").write_text(
        '{"do_lower_case": false, "eos_token": {"content": "</s>", "special": true}, "model_max_length": 64}')
    cfg = siglip_tokenizer_config(tmp_path, 16)
    assert cfg["type"] == "sentencepiece" and cfg["context_length"] == 16 and cfg["lower"] is False
    tok = get_tokenizer(cfg)
    assert isinstance(tok, SiglipTokenizer) and tok.context_length == 16 and not tok.lower
    assert torch.equal(get_tokenizer(tok.to_config())(["Mixed Case"]), tok(["Mixed Case"]))
    assert not torch.equal(tok(["Mixed Case"]), tok(["mixed case"]))  # do_lower_case false is kept
    assert siglip_tokenizer_config(tmp_path / "nowhere", 16) is None


def test_context_length_and_inputs_that_are_not_text_are_refused(spiece_model):
    tok = SiglipTokenizer(spiece_model, context_length=16)
    for ctx in (0, -3):  # numpy's broadcasting errors before
        with pytest.raises(ValueError, match=f"context_length must be >= 1.*got {ctx}"):
            tok(["a photo"], context_length=ctx)
    # None, numbers and bytes were all reported as "empty text"
    with pytest.raises(TypeError, match=r"texts\[1\] is not text: expected a str, got NoneType"):
        tok(["a photo", None])
    with pytest.raises(TypeError, match=r"texts\[0\] is not text: expected a str, got int"):
        tok([5])
    with pytest.raises(TypeError, match="texts must be a str or a list of str, got bytes"):
        tok(b"a photo")
    with pytest.raises(ValueError, match="empty text at index 0"):
        tok(["  "])
    assert tok(("a photo", "a dog")).shape == (2, 16)


def test_a_corrupt_spiece_model_fails_at_load_naming_the_file(spiece_model, tmp_path):
    """Before, the folder loaded (and saved) and the first text failed inside sentencepiece, naming no file."""
    from kizuna.models.checkpoint import CheckpointError

    (tmp_path / "spiece.model").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match=r"spiece\.model: not a sentencepiece model"):
        siglip_tokenizer_config(tmp_path, 16)
    cfg = SiglipTokenizer(spiece_model, 16).to_config()
    with pytest.raises(ValueError, match="'model' is not a sentencepiece model"):  # a kizuna config holding one
        SiglipTokenizer.from_config({**cfg, "model": "Z2FyYmFnZQ=="})  # base64 of b"garbage"


def test_a_caption_training_keeps_is_not_refused_as_empty(hf_and_ours):
    """Training keeps a caption when clean_text leaves something (kizuna.data.sources._with_text); "\\x85" (NEL)
    cleans to "…" but strips to "", and stopped a run mid-epoch with "empty text"."""
    from kizuna.data.tokenizer import clean_text

    hf, ours = hf_and_ours
    kept = ["\x85", " \x85 ", "a dog\x85"]
    assert all(clean_text(t) and not t.strip() for t in kept[:2])
    texts = kept + ["&nbsp;"]  # blank to clean_text (training drops it), but "nbsp" to SigLIP, as to HF: not refused
    ref = hf(texts, padding="max_length", truncation=True, max_length=64, return_tensors="pt")["input_ids"]
    assert torch.equal(ours(texts), ref)
    with pytest.raises(ValueError, match="empty text at index 1"):  # blank by both is still refused
        ours(["a dog", " \t\u3000 "])


def test_bad_context_lengths_and_a_2d_decode_are_named(spiece_model):
    """"16" and None were a TypeError comparing with an int, 16.9 silently 16, a config's null an int() TypeError,
    and decode of a batch a TypeError from int() of a list."""
    tok = SiglipTokenizer(spiece_model, context_length=16)
    for bad in ("16", None, 16.9, True):
        with pytest.raises(ValueError, match=rf"^context_length must be an integer >= 1 .*got {bad!r}"):
            SiglipTokenizer(spiece_model, context_length=bad)
        if bad is not None:  # None is the tokenizer's own length
            with pytest.raises(ValueError, match=r"^context_length must be an integer"):
                tok(["a photo"], context_length=bad)
    with pytest.raises(ValueError, match=r"^the tokenizer config's context_length must be an integer.*got None"):
        get_tokenizer({**tok.to_config(), "context_length": None})
    assert get_tokenizer({k: v for k, v in tok.to_config().items() if k != "context_length"}).context_length == 64
    with pytest.raises(ValueError, match=r"decode takes one sequence \(1-D\), got shape \(2, 16\)"):
        tok.decode(tok(["a photo", "a dog"]))
    assert tok.decode(tok(["a photo"])[0]) == "a photo"


def test_a_lone_surrogate_is_the_replacement_character_as_for_clip(spiece_model):
    """Bytes of --labels that are not UTF-8 (a Latin-1 "café") reach Python as a lone surrogate: SentencePiece
    failed on it deep inside ("Unable to cast Python instance"); CLIP's tokenizer (ftfy) makes it U+FFFD."""
    from kizuna.data.tokenizer import ClipTokenizer

    tok = SiglipTokenizer(spiece_model, context_length=16)
    assert torch.equal(tok(["caf\udce9", "dog"]), tok(["caf\ufffd", "dog"]))
    assert torch.equal(tok("caf\udce9"), tok("caf\ufffd"))
    clip = ClipTokenizer(context_length=16)
    assert torch.equal(clip(["caf\udce9"]), clip(["caf\ufffd"]))  # unchanged: ftfy did this already
