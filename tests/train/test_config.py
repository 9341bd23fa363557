"""Config files plus command-line flags: what a run actually gets."""
import pytest

from kizuna.train.config import load_config_file, make_config
from kizuna.train.contrastive import model_config


def test_model_overrides_flag_changes_one_leaf_and_keeps_the_rest_of_the_config():
    base = load_config_file("demo")
    cfg = make_config(base, model_overrides={"vision": {"depth": 2}})
    vision, text = cfg.model_overrides["vision"], cfg.model_overrides["text"]
    assert vision["depth"] == 2
    assert vision["stem"] == base["model_overrides"]["vision"]["stem"] == "conv"
    assert vision["width"] == base["model_overrides"]["vision"]["width"]
    assert text == base["model_overrides"]["text"]
    assert base["model_overrides"]["vision"]["depth"] == 1  # the file's dict is not mutated


def test_demo_config_builds_the_hybrid_tower_it_documents():
    mc = model_config(make_config(load_config_file("demo")))
    v = mc.vision
    assert (v.stem, v.pool, v.depth, tuple(v.image_size) if not isinstance(v.image_size, int) else v.image_size) in (
        ("conv", "max", 1, 48), ("conv", "max", 1, (48, 48)))
    assert v.grid == (12, 12)
    assert v.output_dim == mc.text.output_dim == mc.embed_dim == 128


def test_a_text_context_length_override_is_the_tokenizers_too():
    """--model-overrides '{"text": {"context_length": 32}}' kept a 77-token tokenizer: the run died at step 1."""
    mc = model_config(make_config(model="ViT-mu-8", model_overrides={"text": {"context_length": 32}}))
    assert mc.text.context_length == mc.tokenizer["context_length"] == 32


def test_unknown_option_is_named():
    with pytest.raises(ValueError, match="unknown training option.*bogus"):
        make_config({}, bogus=1)
    # a value outside a field's choices (both used to train a CLIP run silently)
    with pytest.raises(ValueError, match="loss must be 'model', 'clip' or 'siglip', got 'sigmoid'"):
        make_config({}, loss="sigmoid")
    with pytest.raises(ValueError, match="text_tower must be 'model' or 'minilm', got 'bert'"):
        make_config({}, text_tower="bert")


def test_a_config_that_is_no_python_file_or_has_no_get_config_is_named(tmp_path):
    (tmp_path / "notes.txt").write_text("lr = 1\n")
    (tmp_path / "empty.py").write_text("lr = 1\n")
    with pytest.raises(ValueError, match="notes.txt.*expected a Python file"):
        load_config_file(str(tmp_path / "notes.txt"))
    with pytest.raises(ValueError, match="empty.py.*defines no get_config"):
        load_config_file(str(tmp_path / "empty.py"))
    with pytest.raises(FileNotFoundError, match="built-in configs: .*vit_cifar10"):
        load_config_file("nonesuch")


def test_a_flag_that_takes_json_says_what_it_expected():
    import argparse

    from kizuna.train.config import parse_flag_value

    assert parse_flag_value(dict, '{"depth": 2}') == {"depth": 2}
    assert parse_flag_value(tuple, "0.5,0.25") == (0.5, 0.25)
    with pytest.raises(argparse.ArgumentTypeError, match="expected a JSON object.*'{bad'"):
        parse_flag_value(dict, "{bad")
    with pytest.raises(argparse.ArgumentTypeError, match="comma-separated numbers, got '1,x'"):
        parse_flag_value(tuple, "1,x")


@pytest.mark.parametrize("name, grid, params", [("vit_cifar10", (8, 8), 0.68e6), ("vit_cifar10_hybrid", (8, 8), 0.76e6),
                                                ("vit_cifar10_gpu", (8, 8), 5.1e6)])
def test_vit_configs_build_the_models_they_document(name, grid, params):
    import kizuna
    from kizuna.train.supervised import make_supervised_config

    cfg = make_supervised_config(load_config_file(name))
    assert cfg.time_budget_minutes > 0 and cfg.data.endswith("cifar10/train") and cfg.val_data.endswith("cifar10/test")
    vit = kizuna.create_vit(cfg.model, image_size=cfg.image_size, num_classes=10, **cfg.model_overrides)
    assert vit.cfg.grid == grid
    assert sum(p.numel() for p in vit.parameters()) == pytest.approx(params, rel=0.02)


def test_every_config_flag_has_its_comment_as_help():
    import argparse

    from kizuna.train.config import TrainConfig, add_config_arguments, field_help

    import dataclasses

    explain = field_help(TrainConfig)
    assert explain["time_budget_minutes"].startswith("plan the steps") and explain["lock_image"].startswith("LiT")
    assert all(f.name in explain for f in dataclasses.fields(TrainConfig))

    @dataclasses.dataclass
    class Bare:
        commented: int = 0  # says what it does
        bare: int = 0

    assert field_help(Bare) == {"commented": "says what it does"}  # a field without a comment has no text
    p = argparse.ArgumentParser()
    add_config_arguments(p)
    help_text = " ".join(p.format_help().split())
    assert "--time-budget-minutes FLOAT plan the steps so the schedule ends in this time" in help_text


def test_a_builtin_config_name_wins_over_a_folder_of_that_name(tmp_path, monkeypatch):
    """A `demo` folder in the current directory made every kizuna command fail ("expected a Python file"):
    `kizuna demo` reads the demo config to build its flags. A .py file given by path still wins."""
    from kizuna.apps.cli import main
    from kizuna.train.config import load_config_file

    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo").mkdir()
    (tmp_path / "flickr8k").write_text("not a config")
    assert load_config_file("flickr8k")["model"] and load_config_file("demo")
    assert main(["info", "ViT-mu-8"]) == 0
    (tmp_path / "mine.py").write_text("def get_config():\n    return {'steps': 3}\n")
    assert load_config_file("mine.py") == {"steps": 3}


@pytest.mark.parametrize("overrides, message", [
    ({"aug_scale": (0.5,)}, "--aug-scale must be two area shares"),  # failed at the first batch, in a worker
    ({"aug_scale": (1.5, 3.0)}, "--aug-scale must be"),  # no draw fitted: the random crop was off
    ({"aug_hflip": 2.0}, "--aug-hflip must be a probability"),
    ({"aug_color_jitter": -0.1}, "--aug-color-jitter must be >= 0"),
    # these two ascended the loss: the clip scaled gradients by a negative factor, the cosine went below zero
    ({"grad_clip": -1.0}, "--grad-clip must be >= 0"),
    ({"min_lr_ratio": -1.0}, r"--min-lr-ratio must be in \[0, 1\]"),
    ({"min_lr_ratio": 3.0}, r"--min-lr-ratio must be in \[0, 1\]"),
    ({"eps": -1e-8}, "--eps must be > 0"),
    ({"model": ""}, "--model must be a preset name or a checkpoint path"),  # "" trained from the current folder
])
def test_the_contrastive_trainers_augmentation_is_checked_before_the_run(overrides, message):
    with pytest.raises(ValueError, match=message):
        make_config(**overrides)


def test_a_siglip_preset_keeps_its_loss_unless_told_otherwise():
    """The default loss was "clip", which turned siglip-mu-8 into a CLIP model (no bias, ln(1/0.07)) silently."""
    import math

    from kizuna.train.contrastive import model_config

    own = model_config(make_config(model="siglip-mu-8"))
    assert (own.loss, own.init_logit_bias, own.init_logit_scale) == ("siglip", -10.0, math.log(10))
    assert model_config(make_config(model="ViT-mu-8")).loss == "clip"
    told = model_config(make_config(model="siglip-mu-8", loss="clip"))
    assert (told.loss, told.init_logit_bias) == ("clip", None)
    assert model_config(make_config(model="ViT-mu-8", loss="siglip")).loss == "siglip"


def test_another_loss_keeps_the_scale_and_bias_the_overrides_name():
    """--loss siglip replaced --model-overrides' logit scale, bias and clamp with the paper's (bias -5 trained from
    -10), while the same overrides with {"loss": "siglip"} kept them: two ways to ask, two starting points."""
    import math

    overrides = {"init_logit_bias": -5.0, "init_logit_scale": 1.0, "max_logit_scale": math.log(100)}
    by_flag = model_config(make_config(model="ViT-mu-8", loss="siglip", model_overrides=overrides))
    by_key = model_config(make_config(model="ViT-mu-8", model_overrides={**overrides, "loss": "siglip"}))
    assert (by_flag.loss, by_flag.init_logit_bias, by_flag.init_logit_scale, by_flag.max_logit_scale) == \
        ("siglip", -5.0, 1.0, math.log(100)) == (by_key.loss, by_key.init_logit_bias, by_key.init_logit_scale,
                                                by_key.max_logit_scale)
    partly = model_config(make_config(model="siglip-mu-8", loss="clip", model_overrides={"init_logit_scale": 3.0}))
    assert (partly.loss, partly.init_logit_scale, partly.init_logit_bias) == ("clip", 3.0, None)  # the rest: CLIP's
    assert partly.max_logit_scale == math.log(100)


def test_augmentation_flags_on_synthetic_scenes_are_refused():
    """The scenes are drawn at the model's size and never augmented: --aug-hflip 1 trained to the same losses."""
    from kizuna.train.config import make_config

    for flags in ({"aug_hflip": 0.5}, {"aug_color_jitter": 0.4}, {"aug_scale": (0.2, 0.4)}):
        with pytest.raises(ValueError, match="synthetic scenes are drawn at the model's size and not augmented"):
            make_config(**flags)
        make_config(data="runs/some_folder", **flags)  # files are augmented
    make_config(aug_scale=[0.9, 1.0])  # the default, as a config file's list
