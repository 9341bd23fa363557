"""Fine-tune and resume combinations: a resume that spells the checkpoint path otherwise than the run did, and a
--config recipe given to `vit finetune`, whose architecture the checkpoint fixes."""
from __future__ import annotations

import dataclasses
import json
import os
import warnings
from pathlib import Path

import pytest

from kizuna.apps.cli import build_parser, main
from kizuna.train.checkpointing import check_resume_settings

from test_supervised import CLASSES, TINY, _shard

FAST = ["--batch-size", "16", "--workers", "0", "--threads", "1", "--progress", "false", "--log-every", "1",
        "--warmup-steps", "1", "--eval-every", "0"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """A tiny base model (base/model) and a fine-tune of it with a checkpoint half way (ft/checkpoints/step_0000002)."""
    root = tmp_path_factory.mktemp("combo")
    _shard(root / "data" / "train" / "000000.tar", 0, 32)
    (root / "data" / "classnames.txt").write_text("\n".join(CLASSES) + "\n")
    assert main(["vit", "train", "--data", str(root / "data" / "train"), "--model", "mu/4", "--model-overrides",
                 json.dumps(TINY), "--image-size", "16", "--steps", "2", *FAST, "--out", str(root / "base")]) == 0
    here = os.getcwd()
    os.chdir(root)  # the run records its checkpoint as the relative base/model, as a user types it
    try:
        assert main(["vit", "finetune", "base/model", "--data", "data/train", "--steps", "4", "--save-every", "2",
                     "--keep-last", "5", *FAST, "--out", "ft"]) == 0
    finally:
        os.chdir(here)
    assert json.loads((root / "ft" / "train_config.json").read_text())["init"] == "base/model"
    return root


@pytest.mark.parametrize("spelling", ["trailing slash", "dot slash", "absolute"])
def test_a_finetune_resumes_with_its_checkpoint_spelt_otherwise(runs, monkeypatch, capsys, spelling):
    """`vit finetune base/model/ --resume ...` (or ./base/model, or the absolute path) was refused as asking for
    another model than the run's base/model, and the checkpoint is a required argument that cannot be dropped."""
    monkeypatch.chdir(runs)
    init = {"trailing slash": "base/model/", "dot slash": "./base/model", "absolute": str(runs / "base" / "model")}
    out = f"resumed-{spelling.replace(' ', '-')}"
    rc = main(["vit", "finetune", init[spelling], "--resume", "ft/checkpoints/step_0000002", "--out", out,
               "--progress", "false"])
    assert rc == 0, capsys.readouterr().err
    assert (runs / out / "model").is_dir()


def test_a_finetune_resume_refused_for_another_checkpoint_names_the_way_that_works(runs, monkeypatch, capsys):
    """Another checkpoint is still refused; the message names `vit train --out OUT --resume latest`, which
    continues a fine-tune without its checkpoint argument (it said "Drop the flag", which finetune cannot)."""
    monkeypatch.chdir(runs)
    assert main(["vit", "finetune", "ft/model", "--resume", "ft/checkpoints/step_0000002", "--out", "other",
                 "--progress", "false"]) == 2
    err = capsys.readouterr().err
    assert "init='ft/model'" in err and "kizuna vit train --out ft --resume latest" in err


def test_path_settings_compare_by_place_and_presets_by_name(tmp_path, monkeypatch):
    """`kizuna train --model X/ --resume` alike: a path-valued model compares by where it leads; a preset name
    that is no path here still compares as a string."""
    @dataclasses.dataclass
    class Cfg:
        model: str = "S/4"
        init: str = ""

    (tmp_path / "ckpt").mkdir()
    monkeypatch.chdir(tmp_path)
    where = tmp_path / "checkpoints" / "step_1"
    for spelt in ("ckpt/", "./ckpt", str(tmp_path / "ckpt"), "ckpt/../ckpt"):
        check_resume_settings({"model": "ckpt", "init": "ckpt"}, Cfg(model=spelt, init=spelt), ("model", "init"),
                              where, frozenset({"model", "init"}))
    with pytest.raises(ValueError, match=r"model='B/16' \(the run has 'S/4'\)"):
        check_resume_settings({"model": "S/4"}, Cfg(model="B/16"), ("model",), where, frozenset({"model"}))
    with pytest.raises(ValueError, match=r"model='S/4/' \(the run has 'S/4'\)"):  # no folder of that name here
        check_resume_settings({"model": "S/4"}, Cfg(model="S/4/"), ("model",), where, frozenset({"model"}))


def test_a_finetune_drops_its_config_files_architecture(runs, tmp_path, capsys):
    """`vit finetune CKPT --config RECIPE` recorded the recipe's model and model_overrides in train_config.json,
    while the checkpoint's model trained; compare-runs then listed model_overrides as a difference."""
    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps({"model": "B/16", "model_overrides": {"depth": 3}, "lr": 0.02}))
    out = tmp_path / "ft-recipe"
    assert main(["vit", "finetune", str(runs / "base" / "model"), "--config", str(recipe), "--data",
                 str(runs / "data" / "train"), "--steps", "1", *FAST, "--save-every", "0", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "model and model_overrides are not used" in err
    saved = json.loads((out / "train_config.json").read_text())
    assert saved["model"] == "S/4" and saved["model_overrides"] == {} and saved["lr"] == 0.02
    built = json.loads((out / "model" / "config.json").read_text())["kizuna"]["config"]
    assert built["depth"] == TINY["depth"] and built["width"] == TINY["width"]
    # a resume with the same --config takes the run's own architecture: the file's is no request for another
    args = build_parser().parse_args(["vit", "finetune", "base/model", "--config", str(recipe)])
    from kizuna.train.vit_cli import named_fields

    assert not {"model", "model_overrides"} & named_fields(args) and "lr" in named_fields(args)


def test_make_supervised_config_with_init_warns_and_keeps_the_command_lines_own():
    from kizuna.train.config import load_config_file
    from kizuna.train.supervised import make_supervised_config

    with pytest.warns(UserWarning, match=r"model and model_overrides are not used.*base/model"):
        cfg = make_supervised_config(load_config_file("vit_cifar10"), init="base/model")
    assert cfg.model == "S/4" and cfg.model_overrides == {}
    with warnings.catch_warnings():  # a from-scratch recipe keeps its architecture, without a word
        warnings.simplefilter("error")
        scratch = make_supervised_config(load_config_file("vit_cifar10"))
    assert scratch.model == load_config_file("vit_cifar10")["model"]


def test_compare_runs_settings_of_a_finetune_leave_out_its_model_overrides():
    from kizuna.analysis.runs import _settings

    ft = _settings({"init": "base/model", "model": "B/16", "model_overrides": {"depth": 3}}, "x", "")
    assert ft["model"] == "base/model" and ft["model_overrides"] == {}
    scratch = _settings({"model": "mu/4", "model_overrides": {"depth": 3}}, "x", "")
    assert scratch["model_overrides"] == {"depth": 3}
