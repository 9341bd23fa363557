"""Mutation-test findings for scenes_at_model_size and the fine-tune pos_embed rule (session 44): each test pins
one behaviour a hand-made mutant broke without any existing test failing."""
from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest

from kizuna.train.config import NamedFields, TrainConfig
from kizuna.train.contrastive import scenes_at_model_size


def _model(size):
    return SimpleNamespace(cfg=SimpleNamespace(vision=SimpleNamespace(image_size=size)))


TYPED = NamedFields({"model", "synthetic_image_size"}, typed={"model", "synthetic_image_size"})


def test_scenes_size_is_left_alone_off_synthetic_data():
    """Only --data synthetic draws scenes: a pairs CSV keeps its typed --synthetic-image-size, nothing refused."""
    cfg = TrainConfig(data="pairs.csv", synthetic_image_size=96)
    assert scenes_at_model_size(cfg, _model(32), TYPED) is cfg


def test_a_typed_size_equal_to_the_checkpoints_is_accepted():
    """--synthetic-image-size 32 typed for a 32-px checkpoint agrees with it: not refused."""
    cfg = TrainConfig(synthetic_image_size=32)
    assert scenes_at_model_size(cfg, _model(32), TYPED) is cfg


def test_a_non_square_checkpoint_keeps_the_configured_scene_size():
    """A 32x48 checkpoint's scenes are drawn square at --synthetic-image-size and resized: the size is kept."""
    cfg = TrainConfig(synthetic_image_size=96)
    assert scenes_at_model_size(cfg, _model((32, 48)), TYPED) is cfg


def test_without_named_a_non_default_size_is_taken_as_typed():
    """named=None: a non-default size counts as typed and is refused; the default gives way to the checkpoint's."""
    with pytest.raises(ValueError, match="is a checkpoint of 32-px input"):
        scenes_at_model_size(TrainConfig(synthetic_image_size=96), _model(32), None)
    cfg = scenes_at_model_size(TrainConfig(), _model((32, 32)), None)
    assert cfg.synthetic_image_size == 32 and dataclasses.replace(cfg, synthetic_image_size=64) == TrainConfig()


def test_pos_embed_is_an_unused_flag_only_without_an_image_size():
    """--pos-embed places the table at a new --image-size: unused at 0 (the checkpoint's size), used otherwise."""
    from kizuna.train.supervised import SupervisedConfig, unused_flags

    def pos_embed_unused(image_size):
        return next(unused for name, unused, _ in unused_flags(SupervisedConfig(image_size=image_size))
                    if name == "pos_embed")

    assert pos_embed_unused(0) is True and pos_embed_unused(64) is False


def test_finetune_at_a_size_keeping_the_grid_warns_that_pos_embed_does_nothing(tmp_path):
    """A new size on the same patch grid: a non-default pos_embed warns that it does nothing, the default is silent."""
    import warnings

    import torch

    import kizuna
    from kizuna.models.vit import VisionConfig, VisionTransformer
    from kizuna.train.supervised import load_for_finetune

    torch.manual_seed(0)
    kizuna.save_model(VisionTransformer(VisionConfig(image_size=8, patch_size=4, width=8, depth=1, heads=2,
                                                     num_classes=3)), tmp_path / "m")
    for mode, said in (("sequence", True), ("interpolate", False)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            vit = load_for_finetune(str(tmp_path / "m"), 3, image_size=9, pos_embed=mode)
        assert any("does nothing" in str(w.message) for w in caught) is said and vit.cfg.grid == (2, 2)


def test_vit_eval_classnames_naming_a_class_the_model_lacks_blames_the_file(tmp_path, capsys):
    """vit eval --classnames names the data's labels: a name the model lacks is refused, naming that file."""
    import numpy as np
    import torch
    from PIL import Image

    import kizuna
    from kizuna.apps.cli import main
    from kizuna.models.vit import VisionConfig, VisionTransformer

    torch.manual_seed(0)
    kizuna.save_model(VisionTransformer(VisionConfig(image_size=8, patch_size=4, width=8, depth=1, heads=2,
                                                     num_classes=3)), tmp_path / "m",
                      extra={"classnames": ["cat", "dog", "car"]})
    (tmp_path / "img").mkdir()
    for i in range(3):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "img" / f"{i}.png")
    (tmp_path / "data.csv").write_text("filepath,label\n" + "".join(f"img/{i}.png,{i}\n" for i in range(3)))
    names = tmp_path / "names.txt"
    names.write_text("bird\ndog\ncar\n")
    code = main(["vit", "eval", str(tmp_path / "m"), "--data", str(tmp_path / "data.csv"), "--classnames", str(names),
                 "--no-progress", "--threads", "1", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code != 0 and f"bird of --classnames {names} are not" in err
