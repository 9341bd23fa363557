"""A fine-tune configured from Python gets `kizuna vit finetune`'s recipe for the fields it does not set: the
from-scratch defaults trained it with AdamW at 32 px, a 64-px checkpoint's position grid interpolated down."""
from __future__ import annotations

import pytest

from kizuna.train.supervised import FINETUNE_RECIPE, SupervisedConfig, make_supervised_config
from kizuna.train.vit_cli import FINETUNE_DEFAULTS


def test_a_config_with_an_init_takes_the_fine_tuning_recipe():
    cfg = make_supervised_config(init="runs/clip64", data="d/train")
    assert (cfg.optimizer, cfg.lr, cfg.weight_decay, cfg.warmup_steps, cfg.image_size) == ("sgd", 0.01, 0.0, 100, 0)
    assert {k: getattr(cfg, k) for k in FINETUNE_RECIPE} == FINETUNE_RECIPE
    # what is given wins, from the overrides or a config file's base
    given = make_supervised_config({"lr": 0.003}, init="runs/clip64", image_size=48, optimizer="adamw")
    assert (given.lr, given.image_size, given.optimizer, given.weight_decay) == (0.003, 48, "adamw", 0.0)
    # from scratch: the training defaults, as before
    scratch = make_supervised_config(data="d/train")
    assert (scratch.optimizer, scratch.image_size, scratch.lr) == (SupervisedConfig.optimizer, 32, SupervisedConfig.lr)
    assert FINETUNE_DEFAULTS == {**FINETUNE_RECIPE, "out": "runs/vit-finetune"}  # the command's: one recipe


def test_the_python_fine_tune_keeps_the_checkpoints_size(tmp_path):
    import kizuna
    from kizuna.train.supervised import SupervisedTrainer

    kizuna.save_model(kizuna.create_model("ViT-mu-8", image_size=48), tmp_path / "clip48")
    from PIL import Image

    for k, cls in enumerate(["a", "b"]):
        (tmp_path / "data" / "train" / cls).mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (20, 20), (120 * k, 30 * i, 50)).save(tmp_path / "data" / "train" / cls / f"{i}.png")
    cfg = make_supervised_config(init=str(tmp_path / "clip48"), data=str(tmp_path / "data" / "train"), steps=1,
                                 batch_size=4, warmup_steps=0, workers=0, out=str(tmp_path / "run"),
                                 progress=False, threads=1, val_data="")
    SupervisedTrainer(cfg).train()
    assert kizuna.create_model(str(tmp_path / "run" / "model")).cfg.image_size == 48


def test_the_minilm_refusal_names_where_the_tokenizer_came_from():
    """`--config demo --text-tower minilm` was told to "drop --tokenizer", which the user never typed (the demo
    config learns a BPE)."""
    from kizuna.train.config import load_config_file, make_config

    with pytest.raises(ValueError, match=r"--tokenizer train \(set by the config\): .* add --tokenizer model"):
        make_config(load_config_file("demo"), text_tower="minilm")
    with pytest.raises(ValueError, match=r"--tokenizer train: .* drop --tokenizer"):
        make_config(load_config_file("demo"), text_tower="minilm", tokenizer="train")
