"""Config files, presets and flags: what a command line asks for is what runs, or a one-line error."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from _labelled import odd_even_shards

from kizuna.apps.cli import main
from kizuna.train.config import load_config_file, make_config
from kizuna.train.contrastive import model_config
from kizuna.train.supervised import make_supervised_config

# a tiny contrastive run on the shapes world (kizuna train)
TINY_TRAIN = ["--model", "ViT-mu-8", "--synthetic-image-size", "32", "--synthetic-length", "64", "--batch-size", "16",
              "--steps", "1", "--warmup-steps", "1", "--context-length", "24", "--workers", "0", "--threads", "1",
              "--precision", "fp32", "--progress", "false", "--eval-max-samples", "4"]


def _error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    """Eight labelled 16-px images in one CLIP_benchmark shard."""
    return odd_even_shards(tmp_path_factory.mktemp("cls"), 8, 16)


# ----- 1. `kizuna vit augment`: its own --out, and --print-config ------------------------------------------------
def test_vit_augment_writes_to_its_own_folder_not_the_configs_run_and_print_config_writes_nothing(
        shards, tmp_path, monkeypatch, capsys):
    """The preview wrote into runs/vit (vit train's default), with --config into the config's training run folder
    (runs/c10-gpu); --print-config was listed and ignored (it ran and wrote files)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "recipe.py").write_text(f"def get_config():\n    return dict(data={str(shards / 'train')!r}, "
                                        "image_size=16, randaug_ops=2, out='runs/c10-gpu', lr=1e-3)\n")
    aug = ["vit", "augment", "--config", "recipe.py", "--num-images", "1", "--draws", "1", "--stats-images", "2",
           "--threads", "1"]
    assert main([*aug, "--print-config"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["out"] == "runs/augment" and shown["randaug_ops"] == 2 and "lr" not in shown
    assert not (tmp_path / "runs").exists()
    assert main(aug) == 0
    assert (tmp_path / "runs" / "augment" / "augment.png").is_file()
    assert not (tmp_path / "runs" / "c10-gpu").exists() and not (tmp_path / "runs" / "vit").exists()
    assert main([*aug, "--out", "fig"]) == 0  # --out still says where
    assert (tmp_path / "fig" / "augment.json").is_file()


# ----- 2. a config file's values are checked as flags are ----------------------------------------------------------
def test_config_file_values_are_read_as_their_fields_types(tmp_path):
    """resampled="false" (a true string) drew with replacement; lr="1e-3" failed as a raw TypeError."""
    path = tmp_path / "strings.py"
    path.write_text("def get_config():\n    return dict(resampled='false', lr='1e-3', steps='5', epochs=2, "
                    "aug_scale=[0.5, 1], data='shards', model_overrides='{\"embed_dim\": 64}')\n")
    from kizuna.train.config import TrainConfig

    cfg = make_config(load_config_file(str(path), TrainConfig))
    assert cfg.resampled is False and cfg.lr == 1e-3 and cfg.steps == 5
    assert cfg.epochs == 2 and cfg.aug_scale == (0.5, 1)  # an int for a float, a list for a tuple
    assert cfg.model_overrides == {"embed_dim": 64}
    assert load_config_file(str(path))["resampled"] == "false"  # without a config class: as the file has it


@pytest.mark.parametrize("body, message", [
    ("dict(progress=1)", "progress must be true or false, got 1"),
    ("dict(compile='maybe')", "compile: expected true/false, got 'maybe'"),
    ("dict(lr='fast')", "lr: expected float, got 'fast'"),
    ("dict(steps=2.5)", "steps must be a whole number, got 2.5"),
    ("dict(lr=True)", "lr must be a number, got True"),
    ("dict(out=3)", "out must be a string, got 3"),
    ("dict(betas=[0.9, 'x'])", r"betas must be a list of numbers, got \[0.9, 'x'\]"),
    ("dict(model_overrides=[1])", r"model_overrides must be a dict \(JSON object\), got \[1\]"),
])
@pytest.mark.parametrize("command", [["train"], ["vit", "train"]])
def test_a_config_file_value_of_the_wrong_kind_names_the_file_and_key(tmp_path, capsys, body, message, command):
    path = tmp_path / "bad.py"
    path.write_text(f"def get_config():\n    return {body}\n")
    assert main([*command, "--config", str(path), "--print-config"]) == 2
    err = _error(capsys)
    assert "bad.py" in err
    assert re.search(message, err), err


def test_a_get_config_without_return_is_named(tmp_path, capsys):
    """It failed as "TypeError: 'NoneType' object is not iterable" (named_fields)."""
    path = tmp_path / "noreturn.py"
    path.write_text("def get_config():\n    cfg = dict(steps=5)\n")
    for command in (["train"], ["vit", "train"]):
        assert main([*command, "--config", str(path), "--print-config"]) == 2
        assert "noreturn.py': get_config() must return a dict of settings, got None" in _error(capsys)
    with pytest.raises(ValueError, match="must return a dict of settings, got a list"):
        path.write_text("def get_config():\n    return [('steps', 5)]\n")
        load_config_file(str(path))


# ----- 3. `kizuna train --model-overrides` that is no object of the right kinds --------------------------------------
@pytest.mark.parametrize("overrides, message", [
    ("[1,2]", "--model-overrides must be a JSON object of ClipConfig fields.*got \\[1, 2\\]"),
    ("2", "--model-overrides must be a JSON object of ClipConfig fields.*got 2$"),
    ('{"vision": 3}', "--model-overrides: vision must be a JSON object of its fields.*got 3"),
    ('{"text": [1]}', "--model-overrides: text must be a JSON object"),
    ('{"embed_dim": "64"}', '--model-overrides: embed_dim must be a whole number .*got "64"'),
    ('{"vision": {"eps": "1e-6"}}', '--model-overrides: vision.eps must be a number .*got "1e-6"'),
    ('{"init_logit_bias": -5.0}', "init_logit_bias=-5.0 is for the sigmoid loss.*--loss siglip"),  # untrained bias
])
def test_train_model_overrides_of_the_wrong_shape_are_one_line_errors(tmp_path, capsys, overrides, message):
    """Each was a traceback (AttributeError / TypeError in deep_merge, or torch's while building the model)."""
    assert main(["train", *TINY_TRAIN, "--out", str(tmp_path / "run"), "--model-overrides", overrides]) == 2
    err = _error(capsys).strip()
    assert re.search(message, err), err


def test_override_types_follow_the_model_and_allow_what_the_config_allows():
    mc = model_config(make_config(model="ViT-mu-8", data="some/shards", model_overrides={
        "loss": "siglip", "init_logit_scale": 2, "init_logit_bias": -5.0,
        "vision": {"image_size": [32, 32], "stem_channels": []}}))
    assert mc.init_logit_scale == 2 and mc.init_logit_bias == -5.0  # an int for a float; any value for a None
    with pytest.raises(ValueError, match="--model-overrides: depth must be a whole number"):
        make_supervised_config(model="mu/4", model_overrides={"depth": 2.0})  # `kizuna vit train`'s alike


# ----- 4. --model-overrides over a config's: merged for its model, not carried to another -------------------------
def test_vit_model_overrides_merge_into_the_configs_for_its_model(capsys):
    """`vit train` replaced them: --config vit_cifar10 --model-overrides '{"depth": 4}' lost width 96 / 3 heads."""
    assert main(["vit", "train", "--config", "vit_cifar10", "--model-overrides", '{"depth": 4}', "--print-config"]) == 0
    assert json.loads(capsys.readouterr().out)["model_overrides"] == {"width": 96, "depth": 4, "heads": 3,
                                                                      "mlp_dim": 384}
    # --model naming the config's own model is the same model: still merged
    cfg = make_supervised_config(load_config_file("vit_cifar10"), model="mu/4", model_overrides={"depth": 4})
    assert cfg.model_overrides["width"] == 96 and cfg.model_overrides["depth"] == 4


def test_another_model_on_the_command_line_leaves_the_configs_overrides_behind(capsys):
    """docs/RESULTS.md's plain ViT: `--config vit_cifar10_gpu --model S/4 --model-overrides '{"depth": 7}'` is S/4
    at depth 7 (width 384, 12.5 M parameters), not S/4 with the hybrid's width 256."""
    gpu = load_config_file("vit_cifar10_gpu")
    assert make_supervised_config(gpu, model="S/4", model_overrides={"depth": 7}).model_overrides == {"depth": 7}
    assert make_supervised_config(gpu, model="S/4").model_overrides == {}
    # `kizuna train` alike: the demo's hybrid tower belongs to its ViT-mu-8
    assert make_config(load_config_file("demo"), model="siglip-mu-8").model_overrides == {}
    demo = make_config(load_config_file("demo"), model="siglip-mu-8", model_overrides={"vision": {"depth": 2}})
    assert demo.model_overrides == {"vision": {"depth": 2}}
    assert main(["vit", "train", "--config", "vit_cifar10_gpu", "--model", "S/4", "--model-overrides",
                 '{"depth": 7}', "--print-config"]) == 0
    assert json.loads(capsys.readouterr().out)["model_overrides"] == {"depth": 7}


# ----- 5. --synthetic-image-size against an override of the image size ---------------------------------------------
def test_synthetic_image_size_and_an_image_size_override_must_agree():
    """The synthetic size replaced the override silently: a 32-px model, with 64 in train_config.json."""
    with pytest.raises(ValueError, match="vision.image_size 64 disagrees with --synthetic-image-size 32.*"
                                         "--synthetic-image-size 64"):
        make_config(data="synthetic", synthetic_image_size=32, model_overrides={"vision": {"image_size": 64}})
    same = make_config(data="synthetic", synthetic_image_size=48, model_overrides={"vision": {"image_size": 48}})
    assert model_config(same).vision.image_size == 48
    assert make_config(data="synthetic", synthetic_image_size=48, model_overrides={"vision": {"image_size": [48, 48]}})
    other = make_config(data="some/shards", synthetic_image_size=32, model_overrides={"vision": {"image_size": 64}})
    assert model_config(other).vision.image_size == 64  # the synthetic size means nothing on other data


# ----- 6. a run's train_config.json as --config ------------------------------------------------------------------
def test_a_runs_saved_settings_run_again_as_a_config(tmp_path, capsys):
    """`--config RUN/train_config.json` was refused (only .py) and, read by a .py, failed on precision_used."""
    first, second = tmp_path / "first", tmp_path / "second"
    assert main(["train", *TINY_TRAIN, "--seed", "3", "--lr", "2e-3", "--out", str(first)]) == 0
    assert main(["train", "--config", str(first / "train_config.json"), "--out", str(second)]) == 0
    capsys.readouterr()
    a, b = (json.loads((run / "train_config.json").read_text()) for run in (first, second))
    assert a.pop("out") == str(first) and b.pop("out") == str(second)
    assert a == b and a["seed"] == 3 and a["lr"] == 2e-3 and a["precision_used"] == "fp32"
    # a fine-tune of a checkpoint too: its saved loss, tokenizer, ... are recorded, not asked for (review)
    tuned = tmp_path / "tuned"
    flags = [f for f in TINY_TRAIN if f not in ("--context-length", "24")]  # the checkpoint's own
    assert main(["train", *flags, "--model", str(first / "checkpoints" / "latest"), "--out", str(tuned)]) == 0
    assert main(["train", "--config", str(tuned / "train_config.json"), "--out", str(tmp_path / "again")]) == 0


def test_a_json_config_is_checked_and_vit_train_reads_one(tmp_path, capsys):
    saved = make_supervised_config(model="mu/4", model_overrides={"depth": 3}, lr=3e-3, crop_scale=(0.5, 1.0)).to_dict()
    (tmp_path / "vit.json").write_text(json.dumps({**saved, "precision_used": "bf16", "resume": "latest"}))
    assert main(["vit", "train", "--config", str(tmp_path / "vit.json"), "--print-config"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown == json.loads(json.dumps(saved))  # "resume": a recorded start, not a setting of the run
    (tmp_path / "bad.json").write_text(json.dumps({"steps": "many"}))
    assert main(["train", "--config", str(tmp_path / "bad.json"), "--print-config"]) == 2
    assert "bad.json': steps: expected a whole number, got 'many'" in _error(capsys)
    (tmp_path / "list.json").write_text("[1]")
    with pytest.raises(ValueError, match="list.json.*expected a JSON object of settings"):
        load_config_file(str(tmp_path / "list.json"))


# ----- 7. an empty --out -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", [["train", *TINY_TRAIN], ["vit", "train", "--data", "x", "--steps", "1"],
                                     ["vit", "augment", "--data", "x"]])
def test_an_empty_out_is_refused(tmp_path, monkeypatch, capsys, command):
    """It trained into the current folder and said "checkpoints: /checkpoints/latest"."""
    monkeypatch.chdir(tmp_path)
    assert main([*command, "--out", ""]) == 2
    assert "--out must be a folder for the run, got ''" in _error(capsys)
    assert not list(tmp_path.iterdir())


# ----- 8. vit_cifar10_gpu's epoch --------------------------------------------------------------------------------
def test_vit_cifar10_gpu_logs_once_an_epoch_of_its_training_set():
    """It logged every 49 steps, "an epoch": 25,000 // 512 is 48 (the last partial batch is dropped)."""
    from kizuna.data.sampler import EpochSampler

    cfg = load_config_file("vit_cifar10_gpu")
    assert cfg["log_every"] == len(EpochSampler(25_000, cfg["batch_size"])) == 48
    assert "48 steps" in (Path(__file__).parents[2] / "src/kizuna/train/configs/vit_cifar10_gpu.py").read_text()


def test_config_files_keep_lists_of_data_and_class_names_and_none(tmp_path):
    """The type checks refused what the readers take: a list of data specs, the class names as a list, and None
    for an unset optional setting (review)."""
    from kizuna.train.config import TrainConfig
    from kizuna.train.supervised import SupervisedConfig

    path = tmp_path / "lists.py"
    path.write_text("def get_config():\n    return dict(data=['a.tar', 'b.tar'], best_metric=None)\n")
    cfg = make_config(load_config_file(str(path), TrainConfig))
    assert cfg.data == ["a.tar", "b.tar"] and cfg.best_metric == ""
    path.write_text("def get_config():\n    return dict(data='d', classnames=['bird', 'cat'])\n")
    assert make_supervised_config(load_config_file(str(path), SupervisedConfig)).classnames == ["bird", "cat"]
    from kizuna.train.data import _refuse_a_root_with_held_out_splits

    assert _refuse_a_root_with_held_out_splits(["a.tar", "b.tar"]) is None  # a list: it was a TypeError in Path()


def test_a_json_config_nested_thousands_deep_is_a_one_line_error(tmp_path, capsys):
    """A RecursionError traceback came out of the JSON reader (security review: any JSON kizuna reads)."""
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    assert main(["train", "--config", str(deep), "--print-config"]) == 2
    assert "not JSON" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse's usage error, the value cut short
        main(["train", "--model-overrides", "[" * 100_000 + "]" * 100_000, "--print-config"])
    err = capsys.readouterr().err
    assert "expected a JSON object" in err and len(err) < 5000  # the usage, and the value cut short


def test_a_saved_clip_loss_model_with_a_bias_trains_with_its_bias_left_as_it_is(tmp_path, capsys):
    """Training refuses a fresh one (model_config); a saved one loads, and GradCache failed on its bias's missing
    gradient (the softmax loss never uses it): the bias is frozen, a shift of every logit alike."""
    import kizuna
    from kizuna.models.checkpoint import load_model, save_model
    from kizuna.models.clip import ClipConfig, ClipModel

    cfg = kizuna.clip_config("ViT-mu-8").to_dict()
    cfg["vision"]["image_size"] = 32
    cfg["preprocess"]["image_size"] = 32
    saved = save_model(ClipModel(ClipConfig.from_dict({**cfg, "init_logit_bias": -5.0})), tmp_path / "with_bias")
    args = [a if a != "ViT-mu-8" else str(saved) for a in TINY_TRAIN]
    at = args.index("--context-length")  # the checkpoint brings its own
    del args[at:at + 2]
    assert main(["train", *args, "--accum-steps", "2", "--out", str(tmp_path / "run")]) == 0, _error(capsys)
    trained = load_model(tmp_path / "run" / "checkpoints" / "latest")
    assert float(trained.logit_bias) == -5.0


def test_a_recipe_continues_a_checkpoint_given_as_model(tmp_path):
    """`kizuna train --config flickr8k --model CHECKPOINT` was always refused: the recipe's own model settings
    (tokenizer, vocabulary size, model_overrides) counted as flags the user gave, and the error said to drop flags
    never typed. They are dropped with a warning; flags the user does type are still refused."""
    from kizuna.apps.cli import build_parser
    from kizuna.train.config import config_from_args, named_fields
    from kizuna.train.contrastive import CHECKPOINT_FIXED, refuse_settings_a_checkpoint_fixes

    checkpoint = tmp_path / "run" / "checkpoints" / "latest"
    checkpoint.mkdir(parents=True)
    args = build_parser().parse_args(["train", "--config", "flickr8k", "--model", str(checkpoint)])
    with pytest.warns(UserWarning, match=r"is a checkpoint.*the config's .*tokenizer.* are not used"):
        cfg = config_from_args(args)
    assert cfg.tokenizer == "model" and cfg.model_overrides == {} and cfg.model == str(checkpoint)
    assert not set(CHECKPOINT_FIXED) & named_fields(args) and "lr" in named_fields(args)
    refuse_settings_a_checkpoint_fixes(cfg, named_fields(args))  # nothing asked of the model: no refusal
    typed = build_parser().parse_args(["train", "--config", "flickr8k", "--model", str(checkpoint), "--loss", "siglip"])
    with pytest.warns(UserWarning):
        cfg = config_from_args(typed)
    with pytest.raises(ValueError, match="--loss would be ignored"):
        refuse_settings_a_checkpoint_fixes(cfg, named_fields(typed))
