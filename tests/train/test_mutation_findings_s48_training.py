"""Mutation-testing round 48 (training): what the existing tests left open in today's changes to the divergence
message, the curves line, the warm-up warning, the preset-shadowing folder checks and the loader's refusal."""
from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest

from kizuna.train.trainer import Trainer

sys.path.insert(0, str(Path(__file__).parent))
from _tiny import tiny_config  # noqa: E402


def test_checkpoints_after_this_step_are_another_branchs_and_left_out(tmp_path):
    """Kills: _losses_before_checkpoints keeping a checkpoint saved after the step the run diverged at (a branch a
    resume from an earlier checkpoint left): its loss was never this run's."""
    for step in (2, 4, 9):
        (tmp_path / f"step_{step:07d}").mkdir()
    (tmp_path / "step_x").mkdir()  # not a checkpoint
    from kizuna.train.checkpointing import CheckpointManager

    fake = SimpleNamespace(logged_losses=[(1, 3.0), (2, 2.0), (3, 1.5), (4, 7.0)], step=5,
                           ckpt=SimpleNamespace(step_folders=lambda: CheckpointManager.step_folders(
                               SimpleNamespace(dir=tmp_path))))
    assert Trainer._losses_before_checkpoints(fake) == {"step_0000002": 2.0, "step_0000004": 7.0}
    fake.step = 9
    assert Trainer._losses_before_checkpoints(fake)["step_0000009"] == 7.0


def test_the_curves_line_is_printed_only_for_a_figure_drawn(tmp_path, monkeypatch, capsys):
    """Kills: the "curves: OUT/curves.png" line printed when no figure was drawn (and not when one was)."""
    from kizuna.train import report

    fake = SimpleNamespace(dist=SimpleNamespace(is_main=True), out=tmp_path)
    monkeypatch.setattr(report, "plot_curves", lambda out: None)  # nothing to draw
    Trainer._draw_curves(fake)
    assert "curves:" not in capsys.readouterr().err
    monkeypatch.setattr(report, "plot_curves", lambda out: Path(out) / "curves.png")
    Trainer._draw_curves(fake)
    assert f"curves: {tmp_path / 'curves.png'}" in capsys.readouterr().err


def test_a_warmup_as_long_as_the_run_says_it_lasts_the_whole_run():
    """Kills: a warm-up of every step worded as one that "leaves one step of the run"."""
    from kizuna.train.budget import warn_if_warmup_fills_the_run

    def fake(warmup, steps):
        return SimpleNamespace(cfg=SimpleNamespace(warmup_steps=warmup, steps=steps), total_steps=steps, planned=True,
                               dist=SimpleNamespace(is_main=True))

    with pytest.warns(UserWarning, match=r"the warm-up \(3 steps\) lasts the whole run \(3 steps\): the learning "
                                         r"rate never decays\. Lower"):
        warn_if_warmup_fills_the_run(fake(3, 3))
    with pytest.warns(UserWarning, match=r"lasts the whole run \(3 steps\): the learning rate never decays and "
                                         r"never reaches --lr"):
        warn_if_warmup_fills_the_run(fake(4, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_if_warmup_fills_the_run(fake(1, 3))


def test_a_folder_shadowing_a_preset_locked_is_said_to_stay_random(tmp_path, monkeypatch):
    """Kills: the random-locked-tower warning judged by Path(model).exists(): a folder named like the preset (which
    the run ignores, building the preset) silenced it."""
    from kizuna.train.contrastive import ContrastiveTrainer

    monkeypatch.chdir(tmp_path)
    (tmp_path / "ViT-mu-8").mkdir()
    with pytest.warns(UserWarning, match=r"--lock-image locks a tower of the preset ViT-mu-8, which is randomly "
                                         r"initialised"):
        ContrastiveTrainer(tiny_config(tmp_path / "run", steps=1, warmup_steps=0, lock_image=True))


def test_a_folder_shadowing_a_preset_is_no_checkpoint_to_a_config(tmp_path, monkeypatch):
    """Kills: _model_is_a_checkpoint judged by Path(model).exists(): `--config X --model ViT-mu-8` beside an empty
    folder of that name dropped the config's model settings as a checkpoint's."""
    from kizuna.train.config import _model_is_a_checkpoint

    monkeypatch.chdir(tmp_path)
    (tmp_path / "ViT-mu-8").mkdir()
    assert not _model_is_a_checkpoint({"model"}, SimpleNamespace(model="ViT-mu-8"))
    assert not _model_is_a_checkpoint(set(), SimpleNamespace(), {"model": "ViT-mu-8"})
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "config.json").write_text("{}")
    assert _model_is_a_checkpoint({"model"}, SimpleNamespace(model="ckpt"))


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16"])
def test_a_runs_record_with_a_byte_order_mark_is_one(tmp_path, encoding):
    """Kills: is_a_runs_record reading the file as UTF-8 text (a BOM: not JSON, so not a record)."""
    from kizuna.train.config import is_a_runs_record

    path = tmp_path / "train_config.json"
    path.write_text(json.dumps({"precision_used": "fp32", "lr": 0.001}), encoding=encoding)
    assert is_a_runs_record(path)


def test_data_of_exactly_one_global_batch_is_accepted(tmp_path):
    """Kills: the loader's refusal at a dataset of exactly one global batch (<= for <)."""
    from kizuna.train.data import build_loader

    cfg = SimpleNamespace(resampled=True, seed=0, data="pairs.csv", workers=0)
    data = list(range(16))
    loader, sampler = build_loader(cfg, data, 8, 0, 2)
    assert len(sampler) == 1
    with pytest.raises(ValueError, match="15 samples do not fill one global batch of 16"):
        build_loader(cfg, data[:15], 8, 0, 2)


def test_a_training_source_inside_the_evaluated_folder_is_named(tmp_path):
    """Kills: training_source_in checking one direction only (a training CSV inside the folder evaluated was
    missed; the evaluated split inside the training folder was caught)."""
    from kizuna.train.data import training_source_in

    (tmp_path / "data" / "train").mkdir(parents=True)
    (tmp_path / "data" / "train" / "pairs.csv").write_text("filepath,title\n")
    source = str(tmp_path / "data" / "train" / "pairs.csv")
    assert training_source_in([source], str(tmp_path / "data")) == source
    assert training_source_in([str(tmp_path / "data")], str(tmp_path / "data" / "train")) == str(tmp_path / "data")
    (tmp_path / "val").mkdir()
    assert training_source_in([source], str(tmp_path / "val")) is None


def test_validation_data_with_classes_the_training_set_lacks_names_the_training_set(tmp_path):
    """Kills: load_validation's refusal saying "the model's classes" (the default of load_under_classes): a
    training run has no model's classes yet, its training set's."""
    from PIL import Image

    from kizuna.eval.datasets import DatasetError
    from kizuna.train.supervised import SupervisedConfig, load_validation

    for k, name in enumerate(["cat", "dog", "bird"]):
        (tmp_path / "val" / name).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (8, 8), (80 * k, 30 * i, 5)).save(tmp_path / "val" / name / f"{i}.png")
    with pytest.raises(DatasetError, match=r"1 of them not among the training set's classes \(bird\); the training "
                                           r"set has 2: cat, dog"):
        load_validation(SupervisedConfig(val_data=str(tmp_path / "val")), ["cat", "dog"])
