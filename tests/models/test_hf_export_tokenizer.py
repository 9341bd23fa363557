"""export_hf_clip writes the model's tokenizer (HF CLIPTokenizer's vocab.json + merges.txt + settings).

It wrote config.json, model.safetensors and preprocessor_config.json only: transformers' AutoProcessor and
AutoTokenizer then built a CLIPTokenizer with a 2-token vocabulary, every text came out as [0, 2, 2, ...] and all
texts got one embedding, without a word. Now AutoTokenizer (slow and fast) and AutoProcessor on an export give
kizuna's ids (up to the padding: HF pads with <|endoftext|>, kizuna with 0) and CLIPModel's text features from
them equal encode_text, for OpenAI's BPE and for a BPE trained by kizuna, which kizuna reads back as well."""
import json

import pytest
import torch

import kizuna
from kizuna.data.tokenizer import TrainedBpeTokenizer, _build_tokenizer, _clip_layout_vocab, train_bpe_tokenizer
from kizuna.models.checkpoint import CheckpointError, load_model
from kizuna.models.convert_hf import export_hf_clip, export_hf_siglip

transformers = pytest.importorskip("transformers")

# ordinary captions; the last is longer than 16 tokens (cut by a 16-token tokenizer, EOT kept last)
TEXTS = ["a photo of a dog.", "A photo of a CAT", "two children play football on the beach",
         "It's a red car, isn't it? 3 people wait.",
         "a man in a red jacket climbs a steep rock wall while two friends watch from the grass below"]
LOADERS = ["AutoTokenizer-slow", "AutoTokenizer-fast", "AutoProcessor"]


@pytest.fixture(scope="module")
def trained_tokenizer(caption_corpus):
    return train_bpe_tokenizer(caption_corpus[:400], vocab_size=800, context_length=16)


def _model(kind: str, trained=None, seed: int = 0):
    torch.manual_seed(seed)
    if kind == "clip_bpe":
        return kizuna.create_model("ViT-mu-8").eval()
    return kizuna.create_model("ViT-mu-8", tokenizer=trained.to_config(), text={
        "vocab_size": trained.vocab_size, "eot_token_id": trained.eot_token_id, "context_length": 16}).eval()


def _hf_ids(folder, loader: str) -> torch.Tensor:
    if loader == "AutoProcessor":
        processor = transformers.AutoProcessor.from_pretrained(folder)
        assert type(processor).__name__ == "CLIPProcessor"
        return processor(text=TEXTS, return_tensors="pt", padding=True, truncation=True)["input_ids"]
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder, use_fast=loader.endswith("fast"))
    return tokenizer(TEXTS, return_tensors="pt", padding=True, truncation=True)["input_ids"]


def _text_features(hf, ids: torch.Tensor) -> torch.Tensor:
    out = hf.get_text_features(input_ids=ids)
    return out if torch.is_tensor(out) else out.pooler_output


@pytest.mark.parametrize("loader", LOADERS)
@pytest.mark.parametrize("kind", ["clip_bpe", "trained_bpe"])
def test_hf_tokenizer_of_an_export_gives_kizunas_ids_and_features(kind, loader, trained_tokenizer, tmp_path):
    model = _model(kind, trained_tokenizer)
    export_hf_clip(model, tmp_path)
    ours = kizuna.get_tokenizer(model)(TEXTS)
    theirs = _hf_ids(tmp_path, loader)
    eot = kizuna.get_tokenizer(model).eot_token_id
    assert theirs.shape[1] <= ours.shape[1] and len(set(theirs[:, 0].tolist())) == 1
    for row_ours, row_theirs in zip(ours, theirs):
        n = int((row_ours == eot).int().argmax()) + 1  # [SOT, ids..., EOT]
        assert row_theirs[:n].tolist() == row_ours[:n].tolist()
        assert (row_theirs[n:] == eot).all()  # HF's padding
    if kind == "trained_bpe":
        assert ours.shape[1] == 16 and ours[-1, -1] == eot  # the long caption cut at the context written
    hf = transformers.CLIPModel.from_pretrained(tmp_path).eval()
    with torch.inference_mode():
        torch.testing.assert_close(_text_features(hf, theirs), model.encode_text(ours), atol=1e-5, rtol=1e-5)
        assert torch.cdist(model.encode_text(ours), model.encode_text(ours)).triu(1).sum() > 0  # distinct texts
    settings = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert settings["tokenizer_class"] == "CLIPTokenizer" and settings["model_max_length"] == ours.shape[1]
    assert (tmp_path / "merges.txt").read_text().startswith("#version: 0.2\n")


@pytest.mark.parametrize("kind", ["clip_bpe", "trained_bpe"])
def test_kizuna_reads_an_export_with_its_tokenizer_back(kind, trained_tokenizer, tmp_path):
    model = _model(kind, trained_tokenizer)
    export_hf_clip(model, tmp_path)
    back = load_model(tmp_path)
    assert back.cfg.tokenizer == model.cfg.tokenizer
    ids = kizuna.get_tokenizer(model)(TEXTS)
    assert torch.equal(kizuna.get_tokenizer(back)(TEXTS), ids)
    with torch.inference_mode():
        torch.testing.assert_close(back.encode_text(ids), model.encode_text(ids), atol=1e-6, rtol=1e-6)


def test_a_reexport_replaces_the_tokenizer(trained_tokenizer, tmp_path):
    """One folder, exported with one tokenizer and then another: the later model's, for kizuna and transformers
    (a tokenizer.json left there, which transformers reads first, goes)."""
    for kind in ("trained_bpe", "clip_bpe", "trained_bpe"):
        (tmp_path / "tokenizer.json").write_text("{}")
        model = _model(kind, trained_tokenizer)
        export_hf_clip(model, tmp_path)
        assert not (tmp_path / "tokenizer.json").exists()
        assert load_model(tmp_path).cfg.tokenizer == model.cfg.tokenizer
        tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path)
        assert len(tokenizer) == model.cfg.text.vocab_size
        ours = kizuna.get_tokenizer(model)(TEXTS[:1])
        assert tokenizer(TEXTS[:1])["input_ids"][0] == ours[0, : int(ours[0].argmax()) + 1].tolist()


def test_a_siglip_export_removes_an_earlier_clip_exports_tokenizer(tmp_path):
    """export_hf_siglip writes no CLIP tokenizer: vocab.json and merges.txt of an earlier export_hf_clip in the
    folder would be read as the SigLIP model's; they go, with the CLIPTokenizer settings beside them."""
    export_hf_clip(_model("clip_bpe"), tmp_path)
    assert (tmp_path / "vocab.json").is_file() and (tmp_path / "special_tokens_map.json").is_file()
    siglip = kizuna.create_model("siglip-mu-8")
    export_hf_siglip(siglip, tmp_path)
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"):
        assert not (tmp_path / name).exists(), name
    assert load_model(tmp_path).cfg.tokenizer == siglip.cfg.tokenizer


def test_a_siglip_export_with_sentencepiece_over_a_clip_export(spiece_model, tmp_path):
    src = export_hf_siglip(kizuna.create_model("siglip-mu-8"), tmp_path / "src")
    (src / "spiece.model").write_bytes(spiece_model)
    (src / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "SiglipTokenizer"}))
    siglip = load_model(src)
    folder = export_hf_clip(_model("clip_bpe"), tmp_path / "out")
    assert (folder / "vocab.json").is_file()
    export_hf_siglip(siglip, folder)
    assert not (folder / "vocab.json").exists() and not (folder / "special_tokens_map.json").exists()
    assert (folder / "spiece.model").is_file()
    assert type(transformers.AutoTokenizer.from_pretrained(folder)).__name__.startswith("Siglip")
    assert load_model(folder).cfg.tokenizer == siglip.cfg.tokenizer


def test_export_refuses_a_trained_tokenizer_hf_clip_cannot_reproduce(trained_tokenizer, tmp_path):
    from tokenizers import normalizers

    # a tokenizers JSON from elsewhere (with a normaliser): CLIPTokenizer splits and merges otherwise
    merges = [tuple(m) for m in json.loads(trained_tokenizer.tokenizer.to_str())["model"]["merges"]]
    other = _build_tokenizer(_clip_layout_vocab(merges), merges)
    other.normalizer = normalizers.NFKC()
    tok = TrainedBpeTokenizer(other, 16)
    model = kizuna.create_model("ViT-mu-8", tokenizer=tok.to_config(), text={
        "vocab_size": tok.vocab_size, "eot_token_id": tok.eot_token_id, "context_length": 16})
    with pytest.raises(ValueError, match="HF CLIPModel cannot express this model: the trained_bpe tokenizer is "
                                         "not a CLIP-style BPE"):
        export_hf_clip(model, tmp_path / "a")
    # more merges than transformers' CLIPTokenizer reads (48,894)
    symbols = list(_clip_layout_vocab([]))[:256]
    merges = [(a, b + "</w>") for a in symbols for b in symbols][:48895]
    big = TrainedBpeTokenizer(_build_tokenizer(_clip_layout_vocab(merges), merges), 16)
    with torch.device("meta"):
        model = kizuna.create_model("ViT-mu-8", tokenizer=big.to_config(), text={
            "vocab_size": big.vocab_size, "eot_token_id": big.eot_token_id, "context_length": 16})
    with pytest.raises(ValueError, match="has 48895 merges, and transformers' CLIPTokenizer reads at most 48894"):
        export_hf_clip(model, tmp_path / "b")
    with pytest.raises(ValueError, match="the tokenizer is 'sentencepiece', and an HF CLIP folder carries a CLIP"):
        export_hf_clip(kizuna.create_model("ViT-mu-8", tokenizer={"type": "sentencepiece"}), tmp_path / "c")
    assert not any(tmp_path.iterdir())


def test_the_reader_names_tokenizer_files_that_are_not_a_clip_bpe(tmp_path):
    export_hf_clip(_model("clip_bpe"), tmp_path)
    vocab = json.loads((tmp_path / "vocab.json").read_text(encoding="utf-8"))
    merges = (tmp_path / "merges.txt").read_text(encoding="utf-8")
    (tmp_path / "merges.txt").write_text(merges + "a b c\n", encoding="utf-8")
    with pytest.raises(CheckpointError, match=r"merges\.txt: line 48896 is not a merge"):
        load_model(tmp_path)
    (tmp_path / "merges.txt").write_text(merges, encoding="utf-8")
    del vocab["<|startoftext|>"]
    (tmp_path / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    with pytest.raises(CheckpointError, match=r"vocab\.json: has no <\|startoftext\|>: not a CLIP tokenizer"):
        load_model(tmp_path)
