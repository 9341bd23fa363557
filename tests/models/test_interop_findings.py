"""Interop findings: HF export of a tokenizer context shorter than the text positions, OpenAI-layout .safetensors
files, a stale processor_class after export, crop_pct kept exact through HF, and a run's checkpoints folder given
as a model."""
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

import kizuna
from kizuna.models.checkpoint import CheckpointError, load_model, save_model
from kizuna.models.convert_hf import export_hf_clip, export_hf_siglip
from kizuna.models.convert_openai import kizuna_to_openai

transformers = pytest.importorskip("transformers")

# the first is longer than 16 tokens: cut at 16 by the model's tokenizer, not at 64 or 77
CAPTIONS = ["a man in a red jacket climbs a steep rock wall while two friends watch from the grass below",
            "a dog", "two children play football on the grass ."]


def _jitter(model, seed: int):
    """Perturb the 1-D tensors (LayerNorms at 1/0, biases at 0), where a swapped name would go unnoticed."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1 and "logit" not in name:
                p.add_(torch.randn(p.shape, generator=g) * 0.1)


def _short_context_model(preset: str, seed: int, tokenizer=None):
    torch.manual_seed(seed)
    model = kizuna.create_model(preset, tokenizer=tokenizer or {"context_length": 16}).eval()
    _jitter(model, seed)
    return model


def _text(model, captions=CAPTIONS):
    with torch.no_grad():
        return model.encode_text(kizuna.get_tokenizer(model)(captions))


# ----- 1: a tokenizer context shorter than the text tower's positions ------------------------------------
@pytest.mark.parametrize("preset, export, hf_cls", [
    ("siglip-mu-8", export_hf_siglip, "SiglipModel"), ("ViT-mu-8", export_hf_clip, "CLIPModel")])
def test_export_with_a_tokenizer_shorter_than_the_text_positions_keeps_the_text_embeddings(preset, export, hf_cls,
                                                                                          tmp_path):
    """The folder said max_position_embeddings 64 (77), the tower's, and the reader built the tokenizer from it:
    SigLIP pools the last position, so ids padded to 64, not 16, changed every text embedding; CLIP no longer
    cut captions at 16 tokens. Now the folder has the tokenizer's 16 positions (the others are never used)."""
    model = _short_context_model(preset, 5)
    assert model.cfg.text.context_length > 16
    export(model, tmp_path)
    back = kizuna.create_model(str(tmp_path))
    torch.testing.assert_close(_text(back), _text(model), atol=1e-5, rtol=1e-5)
    assert json.loads((tmp_path / "config.json").read_text())["text_config"]["max_position_embeddings"] == 16
    assert back.cfg.tokenizer["context_length"] == 16 and back.cfg.text.context_length == 16
    # transformers, given the model's own ids (input_ids only), has the same numbers
    hf = getattr(transformers, hf_cls).from_pretrained(tmp_path).eval()
    ids = kizuna.get_tokenizer(model)(CAPTIONS)
    with torch.no_grad():
        theirs = hf.get_text_features(input_ids=ids)
    theirs = getattr(theirs, "pooler_output", theirs)
    torch.testing.assert_close(theirs, _text(model), atol=1e-5, rtol=1e-5)


def test_export_hf_siglip_writes_the_sentencepiece_tokenizer_at_its_own_context(spiece_model, tmp_path):
    """write_hf_tokenizer was given the tower's 64 positions as model_max_length, not the tokenizer's 16."""
    pytest.importorskip("sentencepiece")
    from kizuna.data.siglip_tokenizer import siglip_tokenizer_config

    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "spiece.model").write_bytes(spiece_model)
    tokenizer = siglip_tokenizer_config(tmp_path / "src", 16)
    model = _short_context_model("siglip-mu-8", 6, tokenizer=tokenizer)
    export_hf_siglip(model, tmp_path / "out")
    assert json.loads((tmp_path / "out" / "tokenizer_config.json").read_text())["model_max_length"] == 16
    back = kizuna.create_model(str(tmp_path / "out"))
    assert back.cfg.tokenizer["type"] == "sentencepiece" and back.cfg.tokenizer["context_length"] == 16
    torch.testing.assert_close(_text(back), _text(model), atol=1e-5, rtol=1e-5)


# ----- 2: an OpenAI/OpenCLIP-layout .safetensors ----------------------------------------------------------
def _openai_layout_files(tmp_path: Path):
    model = kizuna.create_model("ViT-mu-8-quickgelu", vision={"heads": 1}, text={"heads": 1}).eval()
    sd = {k: v.contiguous() for k, v in kizuna_to_openai(model).items()}
    torch.save(sd, tmp_path / "oc.pt")
    save_file(sd, tmp_path / "open_clip_model.safetensors")
    return model, tmp_path / "oc.pt", tmp_path / "open_clip_model.safetensors"


def test_openai_layout_safetensors_loads_as_its_pt_does(tmp_path):
    """OpenCLIP's hub repos ship open_clip_model.safetensors (the .pt's tensors, no kizuna metadata): it was
    refused with "save it with kizuna.save_model", advice that needs the model loaded first."""
    model, pt, st = _openai_layout_files(tmp_path)
    with pytest.warns(UserWarning, match=r"QuickGELU.*act=\"gelu\""):
        from_st = load_model(st)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from_pt = load_model(pt)
    assert from_st.cfg.to_dict() == from_pt.cfg.to_dict()
    for k, v in from_pt.state_dict().items():
        assert torch.equal(from_st.state_dict()[k], v), k
    # act= applies as to the .pt, and names no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_model(st, act="gelu").cfg.vision.act == "gelu"
    # a kizuna .safetensors still refuses act=
    with pytest.raises(ValueError, match=r"--act \(act=\) applies to OpenAI-layout"):
        load_model(save_model(model, tmp_path / "k.safetensors"), act="gelu")


def test_safetensors_without_kizuna_metadata_says_what_it_looks_like(tmp_path):
    hf = tmp_path / "model.safetensors"
    save_file({"vision_model.embeddings.patch_embedding.weight": torch.zeros(2, 3, 4, 4),
               "text_model.embeddings.token_embedding.weight": torch.zeros(5, 2)}, hf)
    with pytest.raises(CheckpointError, match=r"model\.safetensors: the weights of a Hugging Face .*pass the folder"):
        load_model(hf)
    bare = tmp_path / "bare.safetensors"
    save_file({k: v.contiguous() for k, v in kizuna.create_model("ViT-mu-8").state_dict().items()}, bare)
    with pytest.raises(CheckpointError, match=r"bare\.safetensors: a kizuna state dict without kizuna metadata"):
        load_model(bare)
    other = tmp_path / "other.safetensors"
    save_file({"encoder.weight": torch.zeros(2)}, other)
    with pytest.raises(CheckpointError, match=r"other\.safetensors: .*not an OpenAI/OpenCLIP-layout.*encoder\.weight"):
        load_model(other)
    # an OpenAI-layout file short of a tensor: openai_to_kizuna's own error, naming the file
    sd = kizuna_to_openai(kizuna.create_model("ViT-mu-8-quickgelu"), strict=False)
    sd = {k: v.contiguous() for k, v in sd.items()}
    del sd["visual.proj"]
    save_file(sd, tmp_path / "short.safetensors")
    with pytest.raises(CheckpointError, match=r"short\.safetensors: not an OpenAI CLIP .*visual\.proj"):
        load_model(tmp_path / "short.safetensors")


# ----- 3: processor_class after an export into another model's folder -------------------------------------
def _siglip_processor_config(folder: Path):
    """processor_config.json as transformers 5 saves a SiglipProcessor (image settings nested, processor_class)."""
    image = transformers.SiglipImageProcessor(size={"height": 32, "width": 32}).to_dict()
    (folder / "processor_config.json").write_text(
        json.dumps({"image_processor": image, "processor_class": "SiglipProcessor"}))


def test_export_rewrites_a_stale_processor_class(tmp_path):
    """export_hf_clip rewrote processor_config.json's image settings but kept "processor_class": "SiglipProcessor",
    which AutoProcessor reads first: it built a SiglipProcessor for a CLIP model."""
    export_hf_siglip(kizuna.create_model("siglip-mu-8"), tmp_path)
    _siglip_processor_config(tmp_path)
    export_hf_clip(kizuna.create_model("ViT-mu-8"), tmp_path)
    processor = json.loads((tmp_path / "processor_config.json").read_text())
    assert processor["processor_class"] == "CLIPProcessor"
    assert processor["image_processor"]["image_processor_type"] == "CLIPImageProcessor"
    assert type(transformers.AutoProcessor.from_pretrained(tmp_path)).__name__ == "CLIPProcessor"
    # and the other way round
    export_hf_siglip(kizuna.create_model("siglip-mu-8"), tmp_path)
    assert json.loads((tmp_path / "processor_config.json").read_text())["processor_class"] == "SiglipProcessor"


# ----- 4: crop_pct through HF --------------------------------------------------------------------------
def _pixels(model, folder: Path):
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for h, w in ((60, 80), (96, 48))]
    theirs = transformers.AutoImageProcessor.from_pretrained(folder)(images=images, return_tensors="pt")
    ours = torch.stack([kizuna.get_preprocess(model)(im) for im in images])
    return ours, theirs["pixel_values"]


@pytest.mark.parametrize("preset, export", [("ViT-mu-8", export_hf_clip), ("siglip-mu-8", export_hf_siglip)])
def test_crop_pct_comes_back_exact_from_an_hf_export(preset, export, tmp_path):
    """32 / 0.875 = 36.6 is written as a resize to 37, which read back as crop_pct 32 / 37 = 0.865: reloaded at
    image_size=224 the model resized to 259 where the original resizes to 256. The exact value is written beside
    the sizes (transformers' image processors ignore it: same pixels) and read back when it gives them."""
    model = kizuna.create_model(preset, preprocess={"crop_pct": 0.875})
    export(model, tmp_path)
    ours, theirs = _pixels(kizuna.create_model(str(tmp_path)), tmp_path)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    assert kizuna.create_model(str(tmp_path), image_size=224).cfg.preprocess["crop_pct"] == 0.875
    # sizes edited since the export: the key no longer gives them, and the sizes win
    pp_file = tmp_path / "preprocessor_config.json"
    pp = json.loads(pp_file.read_text())
    pp["size"] = {"shortest_edge": 40} if "shortest_edge" in pp["size"] else {"height": 40, "width": 40}
    pp_file.write_text(json.dumps(pp))
    assert kizuna.create_model(str(tmp_path)).cfg.preprocess["crop_pct"] == pytest.approx(0.8)


# ----- 5: a run's checkpoints folder given as a model ----------------------------------------------------
def test_a_runs_checkpoints_folder_points_to_latest_and_best(tmp_path):
    """`kizuna info runs/x/checkpoints` said "folder has no config.json", where the run folder itself is told
    which checkpoints to pass."""
    checkpoints = tmp_path / "run" / "checkpoints"
    model = kizuna.create_model("ViT-mu-8")
    save_model(model, checkpoints / "step_0000010")
    save_model(model, checkpoints / "best")
    (checkpoints / "latest").write_text("step_0000010")
    with pytest.raises(CheckpointError, match=r"checkpoints is a training run's checkpoints folder, not a model; "
                                              r"pass .*checkpoints/best or .*checkpoints/latest"):
        load_model(checkpoints)
    assert isinstance(load_model(checkpoints / "latest"), type(model))


# ----- the OpenAI/OpenCLIP layout against open_clip's own CLIP (a hunt of 2026-12-05) ------------------------------
def _openai_file(tmp_path, name, **changes):
    """ViT-mu-8 in the OpenAI layout, with ``changes`` to its state dict, saved as a .pt."""
    sd = kizuna_to_openai(kizuna.create_model("ViT-mu-8"), strict=False)
    for key, value in changes.items():
        sd[key] = value
    torch.save(sd, tmp_path / name)
    return tmp_path / name


def test_a_logit_scale_trained_past_ln100_keeps_its_value(tmp_path):
    """OpenCLIP's forward does not clamp: a file with exp(t) = 150 read back at 100 (every logit 2/3 of open_clip's),
    and export -> reload changed an unclamped kizuna model's numbers. The clamp goes, as the HF reader does."""
    import math

    model = load_model(_openai_file(tmp_path, "s.pt", logit_scale=torch.tensor(math.log(150))))
    assert abs(float(model.scale()) - 150) < 1e-3 and model.cfg.max_logit_scale is None
    assert load_model(_openai_file(tmp_path, "t.pt")).cfg.max_logit_scale is not None  # at or under 100: kept


def test_openclips_sigmoid_loss_file_with_a_logit_bias_loads_and_writes_back(tmp_path):
    """OpenCLIP's `--siglip` training of a CLIP ViT stores logit_bias beside the OpenAI tensors: it was refused
    as "1 unexpected [logit_bias]", and the writer said the layout has none."""
    path = _openai_file(tmp_path, "b.pt", logit_bias=torch.tensor(-7.5), logit_scale=torch.tensor(2.3))
    model = load_model(path)
    assert model.cfg.loss == "siglip" and float(model.bias()) == -7.5 and model.cfg.max_logit_scale is None
    with pytest.raises(ValueError, match="OpenAI's reader has no logit bias"):
        kizuna_to_openai(model)
    assert float(kizuna_to_openai(model, strict=False)["logit_bias"]) == -7.5
    with pytest.raises(CheckpointError, match=r"c.pt: logit_bias has shape \(2,\), not one number"):
        load_model(_openai_file(tmp_path, "c.pt", logit_bias=torch.tensor([-7.5, 1.0])))


def test_a_vocabulary_other_than_openais_bpe_has_no_tokenizer(tmp_path):
    """A MetaCLIP 2 worldwide file (mT5's 250,100 tokens) in the OpenAI layout was given OpenAI's BPE and argmax
    pooling without a word: every text feature wrong. Its image tower loads; its tokenizer is said to be unknown."""
    sd = kizuna_to_openai(kizuna.create_model("ViT-mu-8"), strict=False)
    emb = sd["token_embedding.weight"]
    path = _openai_file(tmp_path, "w.pt", **{"token_embedding.weight": torch.cat([emb, emb[:100]])})
    with pytest.warns(UserWarning, match="49,508 tokens, not the 49,408 of OpenAI's BPE"):
        model = load_model(path)
    with pytest.raises(ValueError, match="not bundled with kizuna.*49,508 tokens"):
        kizuna.get_tokenizer(model)
    assert model.encode_image(torch.zeros(1, 3, 32, 32)).shape == (1, model.cfg.embed_dim)


# ------------------------------------------------------------------------------------------------
# Round trips in both directions (a review of 2026-12-06)
def _own_bpe_model():
    import json as _json
    from importlib import resources

    from kizuna.data.tokenizer import train_bpe_tokenizer

    names = _json.loads(resources.files("kizuna.data").joinpath("assets", "en_classnames.json").read_text())
    corpus = [f"a photo of a {c}." for k in sorted(names) for c in names[k]]
    tok = train_bpe_tokenizer(corpus[:300], vocab_size=700, context_length=16)
    return kizuna.create_model("ViT-mu-8", tokenizer=tok.to_config(),
                               text={"vocab_size": tok.vocab_size, "eot_token_id": tok.eot_token_id,
                                     "context_length": 16})


def test_a_folder_transformers_saved_again_keeps_the_trained_bpe(tmp_path):
    """transformers 5 re-saves a processor with tokenizer.json alone (no vocab.json, merges.txt): the reader
    found no BPE, loaded no tokenizer and said the folder had none."""
    model = _own_bpe_model()
    export_hf_clip(model, tmp_path / "a")
    transformers.logging.set_verbosity_error()
    transformers.AutoModel.from_pretrained(tmp_path / "a").save_pretrained(tmp_path / "b")
    transformers.AutoProcessor.from_pretrained(tmp_path / "a").save_pretrained(tmp_path / "b")
    assert not (tmp_path / "b" / "vocab.json").exists() and (tmp_path / "b" / "tokenizer.json").exists()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = load_model(tmp_path / "b")
    assert again.cfg.tokenizer["type"] == "trained_bpe"
    assert torch.equal(kizuna.get_tokenizer(again)(CAPTIONS), kizuna.get_tokenizer(model)(CAPTIONS))
    # the same for a model with OpenAI's BPE: it stays OpenAI's, with no warning
    plain = kizuna.create_model("ViT-mu-8")
    export_hf_clip(plain, tmp_path / "c")
    transformers.AutoProcessor.from_pretrained(tmp_path / "c").save_pretrained(tmp_path / "d")
    transformers.AutoModel.from_pretrained(tmp_path / "c").save_pretrained(tmp_path / "d")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_model(tmp_path / "d").cfg.tokenizer["type"] == "clip_bpe"


def test_the_hf_reader_takes_a_shorter_model_max_length_as_the_tokenizers(tmp_path):
    """A folder whose tokenizer_config.json cuts at 8 tokens, with 77 positions: kizuna tokenized to 77, so a long
    caption embedded otherwise than through transformers' own tokenizer."""
    export_hf_clip(kizuna.create_model("ViT-mu-8"), tmp_path / "hf")
    config = tmp_path / "hf" / "tokenizer_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "model_max_length": 8}))
    model = load_model(tmp_path / "hf")
    assert model.cfg.tokenizer["context_length"] == 8
    hf_ids = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")(CAPTIONS, padding="max_length",
                                                                          truncation=True)["input_ids"]
    ours = kizuna.get_tokenizer(model)(CAPTIONS)
    assert ours.shape == (3, 8)

    def to_end(ids):  # up to the end-of-text token (HF pads with it, kizuna with 0)
        ids = list(ids)
        return ids[: ids.index(49407) + 1]

    assert [to_end(ids) for ids in hf_ids] == [to_end(row.tolist()) for row in ours]
    assert len(to_end(hf_ids[0])) == 8  # the long caption is cut at 8 by both


def test_the_openai_layout_cuts_text_positions_to_a_shorter_tokenizer(tmp_path):
    """All 77 positions were written: the reader rebuilt a 77-token tokenizer, and a caption past 8 tokens
    embedded otherwise (cosine 0.88)."""
    model = kizuna.create_model("ViT-mu-8-quickgelu", vision={"heads": 1}, text={"heads": 1},
                                tokenizer={"context_length": 8})
    torch.save(kizuna_to_openai(model), tmp_path / "m.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "QuickGELU assumed"
        again = load_model(tmp_path / "m.pt")
    assert again.cfg.tokenizer["context_length"] == 8
    with torch.no_grad():
        torch.testing.assert_close(again.encode_text(kizuna.get_tokenizer(again)(CAPTIONS)),
                                   model.encode_text(kizuna.get_tokenizer(model)(CAPTIONS)))


def test_the_strict_openai_layout_refuses_a_padded_vocabulary_and_takes_the_openai_alias():
    padded = kizuna.create_model("ViT-mu-8-quickgelu", vision={"heads": 1}, text={"heads": 1, "vocab_size": 49664,
                                                                                  "pool": "argmax"})
    with pytest.raises(ValueError, match="embeds 49664 ids, not OpenAI's 49408"):
        kizuna_to_openai(padded)
    alias = kizuna.create_model("ViT-mu-8-quickgelu", vision={"heads": 1}, text={"heads": 1},
                                tokenizer={"type": "openai", "context_length": 77})
    assert "positional_embedding" in kizuna_to_openai(alias)  # the same BPE as clip_bpe: not refused


def test_a_bf16_export_loads_in_transformers_with_the_exact_scale_at_float32(tmp_path):
    """What INTEROP.md says: transformers loads the bf16 export in bf16 (scale rounded), and at float32 exact."""
    model = kizuna.create_model("ViT-mu-8", precision="bf16")
    export_hf_clip(model, tmp_path / "hf")
    transformers.logging.set_verbosity_error()
    as_bf16 = transformers.AutoModel.from_pretrained(tmp_path / "hf")
    as_fp32 = transformers.AutoModel.from_pretrained(tmp_path / "hf", dtype=torch.float32)
    assert as_bf16.logit_scale.dtype == torch.bfloat16 and as_bf16.logit_scale.exp().item() != pytest.approx(100)
    assert as_fp32.logit_scale.exp().item() == pytest.approx(model.scale().item(), rel=1e-7)


# ------------------------------------------------------------------------------------------------
# Hand-written processor files (migration hunt, stop 42): transformers' defaults fill what they leave out

def _photos():
    # sizes whose centre crops start on a whole pixel: transformers' PIL fallback (no torchvision here) floors an
    # odd margin's half where its torchvision backend, OpenCLIP and kizuna round it
    rng = np.random.default_rng(3)
    return [Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for h, w in ((300, 451), (451, 300),
                                                                                          (64, 64))]


@pytest.mark.parametrize("model_type, pp", [
    ("clip", {"size": {"shortest_edge": 256}}),  # short side 256, crop 224 (kizuna: 224, no crop_pct)
    ("clip", {"size": {"height": 256, "width": 256}}),  # squash to 256, crop 224 (kizuna: shortest-side, 224)
    ("siglip", {"size": {"height": 256, "width": 256}}),
    ("clip", {"image_processor_type": "SiglipImageProcessor"}),  # a CLIP model with SigLIP's processor: squash, 0.5
    ("siglip", {"image_processor_type": "CLIPImageProcessor", "size": {"shortest_edge": 240}}),  # crop 224, not 240
])
def test_processor_fields_left_out_take_the_named_processors_defaults(model_type, pp):
    import transformers

    from kizuna.data.transforms import Preprocess
    from kizuna.models.convert_hf import preprocess_from_hf

    named = pp.get("image_processor_type") or ("SiglipImageProcessor" if model_type == "siglip" else
                                               "CLIPImageProcessor")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (the PIL fallback's note that torchvision is not installed)
        proc = getattr(transformers, named)(**{k: v for k, v in pp.items() if k != "image_processor_type"})
        theirs = proc(images=_photos(), return_tensors="pt")["pixel_values"]
    ours = Preprocess(**preprocess_from_hf(dict(pp), model_type, 224))
    torch.testing.assert_close(torch.stack([ours(im) for im in _photos()]), theirs, atol=2e-5, rtol=1e-5)


def test_a_size_field_kizuna_does_not_read_is_refused():
    from kizuna.models.convert_hf import preprocess_from_hf

    with pytest.raises(CheckpointError, match="size.longest_edge is not read"):
        preprocess_from_hf({"size": {"shortest_edge": 224, "longest_edge": 300}}, "clip", 224, "pp.json")


def test_a_presets_name_gives_its_tokenizer_and_preprocessing_as_in_openclip(tmp_path):
    """OpenCLIP's get_tokenizer("ViT-B-32") was "unknown tokenizer ... expected 'clip_bpe'", and 'clip_bpe' gave a
    siglip-* preset 77 tokens for its 64 positions; get_preprocess(name or path) was a TypeError."""
    siglip = kizuna.get_tokenizer("siglip-B-16")
    assert siglip(["a cat"]).shape == (1, kizuna.clip_config("siglip-B-16").text.context_length)
    assert kizuna.get_tokenizer("ViT-B/32")(["a cat"]).shape == (1, 77)
    expected = kizuna.get_preprocess(kizuna.clip_config("siglip-B-16"))
    assert kizuna.get_preprocess("siglip-B-16") == expected
    model = kizuna.create_model("ViT-mu-8")
    save_model(model, tmp_path / "m")
    assert kizuna.get_preprocess(tmp_path / "m") == kizuna.get_preprocess(model)
    with pytest.raises(TypeError, match="a preset name or a checkpoint's path, got 'ViT-nope'"):
        kizuna.get_preprocess("ViT-nope")


def test_a_processor_without_crop_size_for_a_model_of_another_size_is_refused():
    """The default 224 crop for a 64-px model: transformers refuses the folder; kizuna ran it at 224 silently."""
    from kizuna.models.convert_hf import preprocess_from_hf

    with pytest.raises(CheckpointError, match=r"no crop_size: .*default 224x224.*\(64x64 pixels\).*\"height\": 64"):
        preprocess_from_hf({"size": {"shortest_edge": 256}}, "clip", 64, "pp.json")


def test_a_presets_name_shadowed_by_an_output_folder_builds_no_model(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ViT-mu-8").mkdir()  # a run's output folder, no model in it

    def no_model(*args, **kwargs):
        raise AssertionError("a whole random model was built for its tokenizer")

    monkeypatch.setattr(kizuna, "create_model", no_model)
    assert kizuna.get_tokenizer("ViT-mu-8")(["a cat"]).shape[0] == 1
    assert kizuna.get_preprocess("ViT-mu-8") == kizuna.get_preprocess(kizuna.clip_config("ViT-mu-8"))
