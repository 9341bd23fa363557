"""Extensibility findings: configs built outside the presets' paths (a custom tokenizer, overrides given to the
trainer, a suite's single template, hand-written config files, an HF folder with its own vocabulary)."""
from __future__ import annotations

import json
import sys
import warnings

import pytest
import torch

import kizuna
from kizuna.data.tokenizer import train_bpe_tokenizer
from kizuna.eval.datasets import read_templates, template_arguments
from kizuna.models.convert_hf import export_hf_clip
from kizuna.train.config import TrainConfig, load_config_file
from kizuna.train.contrastive import model_config


@pytest.fixture(scope="module")
def tok():
    return train_bpe_tokenizer(["a photo of a cat", "a dog on the grass", "a red truck"] * 20, vocab_size=600,
                               context_length=16)


# ----- 1. a trained BPE tokenizer given to create_model --------------------------------------------------------
def test_a_trained_tokenizer_gives_the_tower_its_end_of_text_id(tok):
    """The tower kept OpenAI's EOT id (49407), which the trained BPE never emits: it pooled at the padding."""
    model = kizuna.create_model("ViT-mu-8", tokenizer=tok.to_config(), text={"vocab_size": tok.vocab_size})
    assert model.cfg.text.eot_token_id == tok.eot_token_id
    ids = kizuna.get_tokenizer(model)(["a dog", "a red truck"])
    assert model.text.pool_positions(ids).tolist() == (ids == tok.eot_token_id).int().argmax(-1).tolist()


def test_a_saved_model_keeps_its_recorded_end_of_text_id(tok, tmp_path):
    """A model saved before the fit (trained BPE, the default 49407, pooled at the padding and maybe fine-tuned so)
    loads as it was saved: only a new config takes the tokenizer's id."""
    from kizuna.models.clip import ClipConfig, ClipModel
    from kizuna.models.checkpoint import save_model

    d = kizuna.clip_config("ViT-mu-8").to_dict()
    d["tokenizer"], d["text"]["vocab_size"] = tok.to_config(), tok.vocab_size
    assert ClipConfig.from_dict(d).text.eot_token_id == 49407  # the constructor leaves a record as it is
    with pytest.warns(UserWarning, match="text features are taken at the padding"):
        save_model(ClipModel(ClipConfig.from_dict(d)), tmp_path / "old")
    with pytest.warns(UserWarning, match="text features are taken at the padding"):  # loaded as saved, and said
        assert kizuna.create_model(str(tmp_path / "old")).cfg.text.eot_token_id == 49407


@pytest.mark.parametrize("overrides, match", [
    (dict(tokenizer={"context_length": 100}), "context_length 100 is longer than the text tower's 77"),
    ("small_vocab", "the tokenizer has .* ids but the text tower embeds 500"),
    ("other_eot", "text.eot_token_id 5 is not the tokenizer's end-of-text id"),
])
def test_a_tokenizer_the_tower_cannot_read_is_refused(tok, overrides, match):
    if overrides == "small_vocab":
        overrides = dict(tokenizer=tok.to_config(), text={"vocab_size": 500})
    elif overrides == "other_eot":
        overrides = dict(tokenizer=tok.to_config(), text={"vocab_size": tok.vocab_size, "eot_token_id": 5})
    with pytest.raises(ValueError, match=match):
        kizuna.clip_config("ViT-mu-8", **overrides)


# ----- 2. --model-overrides as create_model takes them ---------------------------------------------------
def test_the_trainer_keeps_a_preprocess_image_size_override():
    """model_config replaced it with the vision size (the run saved 32 while train_config.json said 40)."""
    overrides = {"preprocess": {"image_size": 40}}
    assert kizuna.clip_config("ViT-mu-8", **overrides).preprocess["image_size"] == 40
    assert model_config(TrainConfig(data="caps.csv", model_overrides=overrides)).preprocess["image_size"] == 40
    synthetic = model_config(TrainConfig(data="synthetic", synthetic_image_size=48))  # still follows the scenes
    assert synthetic.vision.image_size == synthetic.preprocess["image_size"] == 48


# ----- 3. one template string ----------------------------------------------------------------------------------
def test_one_template_string_is_one_template_in_a_suite_and_load_dataset():
    """read_templates (a suite's "templates", load_dataset(templates=)) took it for a file name."""
    one = "a blurry photo of a {c}."
    assert read_templates(one) == [one] == template_arguments([one])
    with pytest.raises(Exception, match="templates file nothere.txt not found"):
        read_templates("nothere.txt")


# ----- 4. and 7. config files ----------------------------------------------------------------------------------
def test_a_json_configs_resume_is_ignored_with_a_warning(tmp_path):
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"resume": "latest", "out": str(tmp_path / "run"), "steps": 3}))
    with pytest.warns(UserWarning, match=r"mine.json.*\"resume\": 'latest' is not used.*pass --resume"):
        values = load_config_file(str(path))
    assert values == {"out": str(tmp_path / "run"), "steps": 3}
    path.write_text(json.dumps({"resume": "", "steps": 3}))  # a run's own start, not resumed: nothing to say
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_config_file(str(path)) == {"steps": 3}
        # a run's own train_config.json (it records precision_used) of a resumed run: replayed as documented
        path.write_text(json.dumps({"resume": "latest", "precision_used": "fp32", "steps": 3}))
        assert load_config_file(str(path)) == {"steps": 3}


def test_a_py_config_imports_a_module_beside_it_and_its_errors_are_one_line(tmp_path):
    (tmp_path / "ext_findings_base.py").write_text("BASE = dict(steps=2, batch_size=8)\n")
    (tmp_path / "exp.py").write_text("from ext_findings_base import BASE\n\n"
                                     "def get_config():\n    return dict(BASE, lr=1e-3)\n")
    assert load_config_file(str(tmp_path / "exp.py")) == {"steps": 2, "batch_size": 8, "lr": 1e-3}
    assert str(tmp_path) not in sys.path  # put back as it was
    (tmp_path / "bad.py").write_text("x = 1\nimport ext_findings_no_such_module\n")
    with pytest.raises(ValueError, match=r"bad.py' \(bad.py, line 2\): ModuleNotFoundError: No module named "
                                         "'ext_findings_no_such"):
        load_config_file(str(tmp_path / "bad.py"))


def test_two_py_configs_each_get_the_module_beside_them(tmp_path):
    """The first config's `ext_findings_shared.py` stayed in sys.modules, and the second config got its values."""
    for name, steps in (("a", 111), ("b", 222)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "ext_findings_shared.py").write_text(f"STEPS = {steps}\n")
        (tmp_path / name / "exp.py").write_text("from ext_findings_shared import STEPS\n\n"
                                                "def get_config():\n    return dict(steps=STEPS)\n")
    assert load_config_file(str(tmp_path / "a" / "exp.py")) == {"steps": 111}
    assert load_config_file(str(tmp_path / "b" / "exp.py")) == {"steps": 222}
    assert "ext_findings_shared" not in sys.modules


def test_a_preprocess_size_other_than_the_scenes_is_refused_on_synthetic_data():
    """It resized the scenes for a ViT of the scenes' size (the vision size is refused so already)."""
    from kizuna.train.config import make_config

    with pytest.raises(ValueError, match="preprocess.image_size 40 disagrees with --synthetic-image-size 32"):
        make_config(data="synthetic", synthetic_image_size=32, model_overrides={"preprocess": {"image_size": 40}})


# ----- 6. an HF CLIP folder with its own vocabulary and no tokenizer files --------------------------------------
def test_an_hf_clip_folder_with_another_vocabulary_and_no_tokenizer_has_none(tok, tmp_path):
    """It was given OpenAI's BPE without a word, and every encode_text failed."""
    export_hf_clip(kizuna.create_model("ViT-mu-8", tokenizer=tok.to_config(), text={"vocab_size": tok.vocab_size}),
                   tmp_path)
    for name in ("vocab.json", "merges.txt"):  # its tokenizer not shipped
        (tmp_path / name).unlink()
    with pytest.warns(UserWarning, match=f"{tok.vocab_size} tokens, not the 49,408 of OpenAI's BPE.*no BPE of its own"):
        model = kizuna.create_model(str(tmp_path))
    with pytest.raises(ValueError, match=f"not bundled with kizuna.*{tok.vocab_size} tokens"):
        kizuna.get_tokenizer(model)
    assert model.encode_image(torch.zeros(1, 3, 32, 32)).shape == (1, model.cfg.embed_dim)


def test_an_hf_export_with_a_padded_openai_vocabulary_keeps_openais_bpe(tmp_path):
    """Its folder has OpenAI's vocab.json + merges.txt: the "no BPE of its own" rule took its tokenizer away."""
    model = kizuna.create_model("ViT-mu-8", text={"vocab_size": 49664})
    export_hf_clip(model, tmp_path / "hf")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "only its image tower can be used"
        loaded = kizuna.create_model(str(tmp_path / "hf"))
    assert loaded.cfg.tokenizer["type"] == "clip_bpe"
    assert loaded.encode_text(kizuna.get_tokenizer(loaded)(["a dog"])).shape == (1, loaded.cfg.embed_dim)


def test_create_model_embed_dim_moves_both_projections_as_kizuna_train_does():
    """create_model("ViT-mu-8", embed_dim=48) was refused while `--model-overrides '{"embed_dim": 48}'` trained."""
    model = kizuna.create_model("ViT-mu-8", embed_dim=48)
    assert model.cfg.vision.output_dim == model.cfg.text.output_dim == 48
    with torch.no_grad():
        assert model.encode_image(torch.zeros(1, 3, 32, 32)).shape == (1, 48)


def test_a_hand_made_config_whose_tower_pools_at_the_padding_is_warned_about(tok):
    """ClipConfig(...) built by hand skips check_tokenizer: the tower keeps OpenAI's 49407, which a trained BPE
    never emits."""
    from kizuna.models.clip import ClipConfig, ClipModel

    d = kizuna.clip_config("ViT-mu-8").to_dict()
    d["tokenizer"], d["text"]["vocab_size"] = tok.to_config(), tok.vocab_size
    with pytest.warns(UserWarning, match=f"pools at token id 49407.*end-of-text id is {tok.eot_token_id}"):
        ClipModel(ClipConfig.from_dict(d))
    cfg = ClipConfig.from_dict(d)
    cfg.check_tokenizer()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ClipModel(cfg)


def test_helper_packages_beside_py_configs_do_not_leak_either(tmp_path):
    for name, lr in (("a", 0.1), ("b", 0.2)):
        (tmp_path / name / "ext_findings_pkg").mkdir(parents=True)
        (tmp_path / name / "ext_findings_pkg" / "__init__.py").write_text(f"LR = {lr}\n")
        (tmp_path / name / "exp.py").write_text("from ext_findings_pkg import LR\n\n"
                                                "def get_config():\n    return dict(lr=LR)\n")
    assert load_config_file(str(tmp_path / "a" / "exp.py")) == {"lr": 0.1}
    assert load_config_file(str(tmp_path / "b" / "exp.py")) == {"lr": 0.2}


def test_an_hf_export_with_a_vocabulary_smaller_than_openais_bpe_has_no_tokenizer(tmp_path):
    """OpenAI's files with a 1,000-id tower: OpenAI's BPE cannot be embedded (every encode failed)."""
    export_hf_clip(kizuna.create_model("ViT-mu-8", text={"vocab_size": 1000}), tmp_path / "hf")
    with pytest.warns(UserWarning, match="1,000 tokens, not the 49,408"):
        assert kizuna.create_model(str(tmp_path / "hf")).cfg.tokenizer["type"] == "unavailable"
