"""Round-5 mutation findings for the checkpoint reader/writer, the HF and OpenAI converters, the training config,
`kizuna embed` and the apps' shared helpers: each test below failed on a hand-made mutant of code added since the
earlier rounds (a sort key, a dropped JSON cleaning, a comparison, a skipped branch) that every older test
passed. Each docstring names the mutant it kills."""
from __future__ import annotations

import json
import math
import os

import pytest
import torch


def _tiny_vit():
    from kizuna.models.vit import VisionConfig, VisionTransformer

    return VisionTransformer(VisionConfig(image_size=8, patch_size=4, width=8, depth=1, heads=2, num_classes=2))


def _strict_json(text: str):
    """JSON as a strict reader (JavaScript, jq) takes it: NaN and Infinity are errors."""
    def refuse(constant):
        raise ValueError(f"not strict JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


# ----- checkpoint.py -----------------------------------------------------------------------------------------
def test_a_dangling_latest_pointer_names_the_newest_step_by_number_not_by_name(tmp_path):
    """Kills _refuse_dangling_latest sorting the step_* folders by name: step_9 sorts after step_10 as text, and
    the error sent the user to the older checkpoint."""
    from kizuna.models.checkpoint import CheckpointError, load_model

    checkpoints = tmp_path / "checkpoints"
    for name in ("step_9", "step_10", "step_2"):
        (checkpoints / name).mkdir(parents=True)
    (checkpoints / "latest").write_text("step_11")
    with pytest.raises(CheckpointError, match=r"the newest checkpoint beside it is step_10: pass .*step_10$"):
        load_model(checkpoints / "latest")


def test_save_model_writes_nan_metrics_in_extra_as_strict_json_null(tmp_path):
    """Kills save_model storing ``extra`` without json_safe: a diverged run's NaN metric was written as a bare
    NaN into config.json and the safetensors metadata, which strict JSON readers refuse."""
    from safetensors import safe_open

    from kizuna.models.checkpoint import save_model

    folder = save_model(_tiny_vit(), tmp_path / "m", extra={"metrics": {"loss": float("nan"), "acc": 0.5},
                                                             "best": float("inf")})
    record = _strict_json((folder / "config.json").read_text(encoding="utf-8"))["kizuna"]
    assert record["extra"]["metrics"] == {"loss": None, "acc": 0.5}
    assert record["extra"]["best"] is None
    file = save_model(_tiny_vit(), tmp_path / "m.safetensors", extra={"loss": float("nan")})
    with safe_open(str(file), "pt") as f:
        assert _strict_json(f.metadata()["kizuna"])["extra"] == {"loss": None}


def _openai_state_dict(**changes):
    """ViT-mu-8 in the OpenAI layout (random weights, seed 0), with ``changes`` to its state dict."""
    import kizuna
    from kizuna.models.convert_openai import kizuna_to_openai

    torch.manual_seed(0)
    sd = kizuna_to_openai(kizuna.create_model("ViT-mu-8"), strict=False)
    sd.update(changes)
    return sd


def test_a_one_element_logit_scale_of_shape_1_is_read_as_the_scalar(tmp_path):
    """Kills TensorTaker dropping its one-element allowance (shape (1,) taken where () is asked): a logit_scale
    saved as a 1-element vector was refused as mis-shaped."""
    from kizuna.models.checkpoint import load_model

    path = tmp_path / "s.pt"
    torch.save(_openai_state_dict(logit_scale=torch.tensor([math.log(42.0)])), path)
    model = load_model(path, act="quick_gelu")
    assert model.logit_scale.shape == ()
    assert math.isclose(float(model.logit_scale.detach().exp()), 42.0, rel_tol=1e-5)


def test_a_json_file_with_leading_whitespace_given_as_a_model_is_named_json(tmp_path):
    """Kills load_weights_only matching the file signatures without stripping leading whitespace: a pretty-printed
    or newline-first JSON file was "not a torch checkpoint" with no word of what it is."""
    from kizuna.models.checkpoint import CheckpointError, load_model

    path = tmp_path / "model.pt"
    path.write_bytes(b'\n  {"model": "ViT-B-32"}\n')
    with pytest.raises(CheckpointError, match=r"model.pt: not a torch checkpoint \(JSON text\)"):
        load_model(path)


def test_a_ddp_prefixed_openai_layout_safetensors_file_loads(tmp_path):
    """Kills _foreign_safetensors looking at the raw names: an OpenCLIP state dict saved from
    DistributedDataParallel ("module.visual.conv1.weight", ...) as .safetensors was refused as "not an
    OpenAI/OpenCLIP-layout state dict", where the same .pt loads."""
    from safetensors.torch import save_file

    from kizuna.models.checkpoint import load_model

    sd = _openai_state_dict()
    path = tmp_path / "open_clip_model.safetensors"
    save_file({f"module.{k}": v.contiguous().clone() for k, v in sd.items()}, str(path))
    model = load_model(path, act="quick_gelu")
    torch.testing.assert_close(model.state_dict()["visual.patch_embed.proj.weight"], sd["visual.conv1.weight"])
    torch.testing.assert_close(model.state_dict()["text.proj.weight"], sd["text_projection"].T)


def test_a_vit_loaded_at_another_size_carries_preprocessing_of_that_size(tmp_path):
    """Kills load_model carrying a ViT's stored preprocessing as saved: loaded with image_size=16, the model's
    preprocess_config still said 8, so get_preprocess fed it 8-pixel images (a position-embedding error)."""
    import kizuna
    from kizuna.models.checkpoint import load_model, save_model

    stored = {"image_size": 8, "mean": [0.4, 0.4, 0.4], "std": [0.2, 0.2, 0.2], "interpolation": "bicubic",
              "resize_mode": "shortest"}
    save_model(_tiny_vit(), tmp_path / "vit", extra={"preprocess": stored})
    model = load_model(tmp_path / "vit", image_size=16)
    assert model.preprocess_config["image_size"] == 16 and model.preprocess_config["mean"] == [0.4] * 3
    from PIL import Image

    pixels = kizuna.get_preprocess(model)(Image.new("RGB", (40, 30), (200, 10, 10)))
    assert tuple(pixels.shape) == (3, 16, 16)
    assert model(pixels[None]).shape == (1, 2)


def test_act_is_refused_for_a_kizuna_checkpoint_folder(tmp_path):
    """Kills load_model skipping its act= check for folders: a kizuna folder (which records its own activation)
    loaded with act="gelu" silently ignored the argument; only the .safetensors file was refused."""
    from kizuna.models.checkpoint import load_model, save_model

    folder = save_model(_tiny_vit(), tmp_path / "vit")
    with pytest.raises(ValueError, match=r"--act \(act=\) applies to OpenAI-layout state dicts"):
        load_model(folder, act="gelu")
    assert load_model(folder).cfg == _tiny_vit().cfg



def test_an_image_size_of_zero_is_refused_as_the_argument_not_as_a_size_that_does_not_fit(tmp_path):
    """Kills _is_image_size taking 0 as a size: load_model(path, image_size=0) then said the model "does not fit"
    image_size=0, blaming the checkpoint's patch grid, where the argument itself is no size."""
    from kizuna.models.checkpoint import load_model, save_model

    path = save_model(_tiny_vit(), tmp_path / "vit.safetensors")
    for size in (0, (8, 0)):
        with pytest.raises(ValueError, match=r"^image_size must be a positive int or two \(height, width\), got"):
            load_model(path, image_size=size)

# ----- convert_hf.py ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("tokenizer_class", ["CLIPTokenizerFast", "SplinterTokenizer"])
def test_a_siglip_export_keeps_tokenizer_settings_it_did_not_write(tokenizer_class, tmp_path):
    """Kills _remove_stale_clip_tokenizer removing CLIPTokenizer settings without the vocab.json/merges.txt it
    wrote beside them (a folder's own tokenizer_config.json and special_tokens_map.json, no BPE files of an
    earlier export, were deleted by export_hf_siglip), and _remove_stale_sentencepiece taking any class that
    starts like "Siglip" (an "S...") for a stale sentencepiece one."""
    import kizuna
    from kizuna.models.convert_hf import export_hf_siglip

    folder = tmp_path / "hf"
    folder.mkdir()
    settings = {"tokenizer_class": tokenizer_class, "model_max_length": 64}
    special = {"eos_token": "<|endoftext|>"}
    (folder / "tokenizer_config.json").write_text(json.dumps(settings))
    (folder / "special_tokens_map.json").write_text(json.dumps(special))
    torch.manual_seed(0)
    export_hf_siglip(kizuna.create_model("siglip-mu-8"), folder)
    assert json.loads((folder / "tokenizer_config.json").read_text()) == settings
    assert json.loads((folder / "special_tokens_map.json").read_text()) == special
    assert (folder / "model.safetensors").is_file()


def test_an_hf_merges_file_without_a_version_line_keeps_its_first_merge(caption_corpus, tmp_path):
    """Kills _read_clip_tokenizer skipping line 1 of merges.txt whatever it holds: a merges.txt without the
    "#version" header (a valid file for transformers) lost its first merge, and kizuna tokenized otherwise."""
    import kizuna
    from kizuna.data.tokenizer import train_bpe_tokenizer
    from kizuna.models.convert_hf import export_hf_clip

    trained = train_bpe_tokenizer(caption_corpus[:200], vocab_size=700, context_length=16)
    torch.manual_seed(0)
    model = kizuna.create_model("ViT-mu-8", tokenizer=trained.to_config(), text={
        "vocab_size": trained.vocab_size, "eot_token_id": trained.eot_token_id, "context_length": 16})
    export_hf_clip(model, tmp_path / "hf")
    merges = tmp_path / "hf" / "merges.txt"
    lines = merges.read_text(encoding="utf-8").splitlines(keepends=True)
    assert lines[0].startswith("#version")
    merges.write_text("".join(lines[1:]), encoding="utf-8")
    texts = caption_corpus[:50]
    back = kizuna.get_tokenizer(kizuna.load_model(tmp_path / "hf"))
    assert torch.equal(back(texts), trained(texts))


@pytest.mark.parametrize("preset, export", [("ViT-mu-8", "export_hf_clip"), ("siglip-mu-8", "export_hf_siglip")])
def test_an_hf_export_of_a_bf16_model_records_bfloat16(preset, export, tmp_path):
    """Kills _dtype_name reading the model's first parameter: that is the logit scale, which stays float32 in a
    bf16 model, and config.json said "float32" for weights stored in bfloat16."""
    import kizuna
    from kizuna.models import convert_hf
    from safetensors import safe_open

    model = kizuna.create_model(preset, precision="bf16")
    getattr(convert_hf, export)(model, tmp_path / "hf")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    with safe_open(str(tmp_path / "hf" / "model.safetensors"), "pt") as f:
        stored = f.get_tensor("vision_model.embeddings.patch_embedding.weight").dtype
    assert stored == torch.bfloat16 and config["dtype"] == "bfloat16"


# ----- train/config.py --------------------------------------------------------------------------------------------
def _parsed(argv):
    import argparse

    from kizuna.train.config import add_config_arguments

    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    return parser.parse_args(argv)


def test_a_resume_by_path_does_not_count_the_config_files_out_as_asked_for(tmp_path):
    """Kills named_fields keeping the --config file's ``out`` when --resume names a checkpoint by path: the
    resumed run (which goes on in its own folder) was refused for an --out the user never typed. With
    --resume latest, or --out given, it is named."""
    from kizuna.train.config import named_fields

    config = tmp_path / "recipe.json"
    config.write_text(json.dumps({"out": str(tmp_path / "runs" / "demo"), "lr": 0.001}))
    by_path = str(tmp_path / "runs" / "a" / "checkpoints" / "step_0000010")
    names = named_fields(_parsed(["--config", str(config), "--resume", by_path, "--progress", "false"]))
    assert {"lr", "resume"} <= names and "out" not in names
    assert "out" in named_fields(_parsed(["--config", str(config), "--resume", "latest", "--progress", "false"]))
    assert "out" in named_fields(_parsed(["--config", str(config), "--resume", by_path, "--out", str(tmp_path / "o"),
                                          "--progress", "false"]))


def test_the_smallest_trained_vocabulary_is_the_one_the_bpe_trainer_takes():
    """Kills make_config's --tokenizer-vocab-size bound off by one: 513 passed the config check and failed only
    after the data was indexed, in train_bpe_tokenizer ("vocab_size must be >= 514")."""
    from kizuna.data.tokenizer import train_bpe_tokenizer
    from kizuna.train.config import make_config

    captions = ["a dog runs on the grass", "two children play football on the beach"] * 4
    with pytest.raises(ValueError):
        train_bpe_tokenizer(captions, vocab_size=513, context_length=16)
    train_bpe_tokenizer(captions, vocab_size=514, context_length=16)
    with pytest.raises(ValueError, match="--tokenizer-vocab-size must be >= 514 with --tokenizer train"):
        make_config(tokenizer="train", tokenizer_vocab_size=513)
    assert make_config(tokenizer="train", tokenizer_vocab_size=514).tokenizer_vocab_size == 514


@pytest.mark.parametrize("field", ["context_length", "tokenizer_vocab_size", "lock_image_unlocked_blocks",
                                   "lock_text_unlocked_blocks"])
def test_negative_counts_are_refused_by_the_config_naming_the_flag(field):
    """Kills check_common leaving a field out of its ">= 0" list: --context-length -1 was taken (a negative slice
    of every caption's tokens), and the others went on to fail, or do nothing, far from the flag."""
    from kizuna.train.config import make_config

    with pytest.raises(ValueError, match=f"--{field.replace('_', '-')} must be >= 0, got -1"):
        make_config(**{field: -1})


# ----- apps/common.py ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("device", ["meta", "mps"])
def test_a_device_kizuna_does_not_run_on_is_refused_by_the_flag(device):
    """Kills device_name accepting any torch device type: --device meta (or mps) passed the flag and failed later
    in .to(device) with a traceback."""
    import argparse

    from kizuna.apps.common import device_name

    with pytest.raises(argparse.ArgumentTypeError, match=f"'{device}': kizuna runs on cpu or cuda"):
        device_name(device)
    assert device_name("cpu") == "cpu"


# ----- apps/embed.py ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mu():
    """ViT-mu-8's random weights from seed 0, as the commands build a preset (do not modify it)."""
    import kizuna

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return kizuna.create_model("ViT-mu-8").eval()


def test_embed_texts_names_every_blank_line_between_texts(tmp_path, mu, capsys):
    """Kills the blank-line range stopping one short: of the blank lines 2 and 3 before the last text (line 4),
    only line 2 was named, and the count said 1."""
    from kizuna.apps.embed import embed_texts

    (tmp_path / "t.txt").write_text("a cat\n\n  \na dog\n\n", encoding="utf-8")  # line 5: after the last text
    texts, emb = embed_texts(mu, tmp_path / "t.txt", progress=False)
    assert texts == ["a cat", "a dog"] and emb.shape[0] == 2
    note = capsys.readouterr().err.splitlines()[0]
    assert note.startswith("skipped 2 blank line(s)") and note.endswith("line 2, 3")


def test_embed_texts_counts_one_added_token_for_a_tokenizer_without_a_start_token(tmp_path, mu, capsys,
                                                                                  monkeypatch):
    """Kills embed_texts counting CLIP's two added tokens for every tokenizer: a SigLIP-style tokenizer (an end
    token only) that fits a text exactly was noted as cutting it."""
    import kizuna
    from kizuna.apps import embed

    clip = kizuna.get_tokenizer(mu)

    class EndTokenOnly:
        """CLIP's BPE ids followed by the end token only, padded with 0 to the context (as SigLIP's)."""
        context_length = clip.context_length
        sot_token_id = None

        def encode_batch(self, texts):
            return clip.encode_batch(texts)

        def __call__(self, texts):
            out = torch.zeros(len(texts), self.context_length, dtype=torch.long)
            for row, ids in enumerate(self.encode_batch(texts)):
                ids = (list(ids) + [clip.eot_token_id])[: self.context_length]
                out[row, : len(ids)] = torch.tensor(ids)
            return out

    monkeypatch.setattr(kizuna, "get_tokenizer", lambda model: EndTokenOnly())
    n = clip.context_length - 1  # one token a word: the text and its end token fill the context exactly
    (tmp_path / "fits.txt").write_text("cat " * n + "\n", encoding="utf-8")
    assert len(clip.encode_batch(["cat " * n])[0]) == n
    embed.embed_texts(mu, tmp_path / "fits.txt", progress=False)
    assert "longer than" not in capsys.readouterr().err
    (tmp_path / "cut.txt").write_text("cat " * (n + 1) + "\n", encoding="utf-8")
    embed.embed_texts(mu, tmp_path / "cut.txt", progress=False)
    assert "note: 1 of 1 texts are longer than" in capsys.readouterr().err


def test_an_image_path_that_is_not_utf8_is_written_as_escapes_in_the_row_list(tmp_path):
    """Kills write_embeddings writing path names as they are: a Latin-1 file name (lone surrogates in Python)
    failed to encode once the .npy was written, leaving no row list."""
    import os

    import numpy as np

    from kizuna.apps.embed import write_embeddings

    name = os.fsdecode(b"photos/caf\xe9.jpg")
    emb = np.eye(2, 4, dtype=np.float32)
    write_embeddings(tmp_path / "e.npy", [name, "photos/tea.jpg"], emb, "path")
    assert (tmp_path / "e.txt").read_bytes() == b"photos/caf\\xe9.jpg\nphotos/tea.jpg\n"
    assert np.array_equal(np.load(tmp_path / "e.npy"), emb)


def test_embed_texts_refuses_nan_features(tmp_path, mu):
    """Kills embed_texts dropping its finite check: a model with NaN weights had its NaN rows written and
    reported as "wrote N text embeddings"."""
    import copy

    from kizuna.apps.embed import embed_texts
    from kizuna.eval.encode import NonFiniteFeatures

    broken = copy.deepcopy(mu)
    with torch.no_grad():
        broken.text.proj.weight.fill_(float("nan"))
    (tmp_path / "t.txt").write_text("a cat\na dog\n", encoding="utf-8")
    with pytest.raises(NonFiniteFeatures, match=r"t.txt: texts: the model gave NaN or inf features for 2 of 2"):
        embed_texts(broken, tmp_path / "t.txt", progress=False)


def test_embed_images_takes_one_image_file(tmp_path, mu):
    """Kills embed_images listing nothing for a file: --images photo.png said "no images found"; its one row is
    the image's own embedding."""
    import numpy as np
    from PIL import Image

    import kizuna
    from kizuna.apps.embed import embed_images

    path = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(path)
    names, emb, errors = embed_images(mu, str(path), batch_size=4, workers=0, progress=False)
    assert names == [str(path)] and errors == []
    with torch.no_grad():
        ref = mu.encode_image(kizuna.get_preprocess(mu)(Image.open(path).convert("RGB"))[None], normalize=False)
    np.testing.assert_allclose(emb[0], torch.nn.functional.normalize(ref, dim=-1)[0].numpy(), atol=1e-5)


def test_home_path_expands_only_the_home_folder_itself(tmp_path, monkeypatch):
    """Kills home_path expanding any leading "~": "~user/x" (another user's home to a shell, a label such as
    "~cat" to kizuna) became that user's home folder."""
    import pwd

    from kizuna.apps.common import home_path

    monkeypatch.setenv("HOME", str(tmp_path))
    user = pwd.getpwuid(os.getuid()).pw_name
    assert home_path(["~", "~/runs/a", f"~{user}/x", "~cat", "a~/b"]) == [
        str(tmp_path), str(tmp_path / "runs" / "a"), f"~{user}/x", "~cat", "a~/b"]
