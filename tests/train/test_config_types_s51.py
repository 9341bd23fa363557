"""Both trainers' Python configs take numbers as a caller computes them (session 51): a fraction where a whole
number is meant is refused (steps 2.5 trained and saved nothing), numpy and 0-d tensor numbers become Python ones
(a tensor lr was written into by the schedule, and recorded its last value)."""
import json

import numpy as np
import pytest
import torch

from kizuna.train.config import make_config
from kizuna.train.supervised import make_supervised_config

BOTH = [(make_config, dict(model="ViT-mu-8", data="synthetic")),
        (make_supervised_config, dict(model="mu/4", data="synthetic"))]


@pytest.mark.parametrize("make, base", BOTH)
@pytest.mark.parametrize("field, value", [("steps", 2.5), ("warmup_steps", 1.5), ("steps", True),
                                          ("batch_size", 8.5), ("steps", "3"), ("steps", 3.0),
                                          ("steps", torch.tensor(2.5))])
def test_a_whole_number_field_refuses_a_fraction_a_bool_or_text(make, base, field, value, tmp_path):
    with pytest.raises(ValueError, match=f"--{field.replace('_', '-')} .*must be"):
        make(**base, out=str(tmp_path), **{field: value})


@pytest.mark.parametrize("make, base", BOTH)
def test_numbers_from_numpy_and_tensors_become_python_numbers(make, base, tmp_path):
    cfg = make(**base, out=str(tmp_path), steps=np.int64(5), warmup_steps=torch.tensor(2), batch_size=np.int32(8),
               lr=torch.tensor(1e-3, dtype=torch.float64), weight_decay=np.float32(0.5))
    assert (cfg.steps, cfg.warmup_steps, cfg.batch_size) == (5, 2, 8)
    assert all(type(v) is int for v in (cfg.steps, cfg.warmup_steps, cfg.batch_size))
    assert type(cfg.lr) is float and cfg.lr == 1e-3
    assert type(cfg.weight_decay) is float and cfg.weight_decay == 0.5
    json.dumps(cfg.to_dict())  # the record train_config.json writes


@pytest.mark.parametrize("make, base", BOTH)
def test_a_number_field_refuses_a_bool(make, base, tmp_path):
    with pytest.raises(ValueError, match="--lr .*must be a number"):
        make(**base, out=str(tmp_path), lr=True)


def test_a_tensor_learning_rate_leaves_the_callers_config_as_given(tmp_path):
    from _tiny import tiny_config
    from kizuna.train.contrastive import ContrastiveTrainer

    cfg = tiny_config(tmp_path, steps=3, warmup_steps=1, lr=torch.tensor(1e-3, dtype=torch.float64),
                      eval_max_samples=0)
    ContrastiveTrainer(cfg).train()
    assert cfg.lr == 1e-3 and type(cfg.lr) is float
    assert json.loads((tmp_path / "train_config.json").read_text())["lr"] == 1e-3


def test_a_config_built_as_the_dataclass_gets_the_same_numbers_at_the_trainer(tmp_path):
    import dataclasses

    from _tiny import tiny_config
    from kizuna.train.contrastive import ContrastiveTrainer

    lr = torch.tensor(1e-3, dtype=torch.float64)
    cfg = dataclasses.replace(tiny_config(tmp_path, steps=2, warmup_steps=1, eval_max_samples=0), lr=lr,
                              seed=np.int64(3))
    trainer = ContrastiveTrainer(cfg)
    trainer.train()
    assert float(lr) == 1e-3  # the caller's tensor was the optimizer's, written to 0 by the schedule
    assert type(trainer.cfg.lr) is float and type(trainer.cfg.seed) is int
    with pytest.raises(ValueError, match="--steps .*must be a whole number"):
        ContrastiveTrainer(dataclasses.replace(cfg, steps=2.5))


def test_a_vit_image_size_pair_passes_as_numbers(tmp_path):
    cfg = make_supervised_config(model="mu/4", data="synthetic", out=str(tmp_path), image_size=(np.int64(48), 32))
    assert cfg.image_size == (48, 32) and all(type(v) is int for v in cfg.image_size)
    with pytest.raises(ValueError, match="image-size .*whole number"):
        make_supervised_config(model="mu/4", data="synthetic", out=str(tmp_path), image_size=(48.5, 32))


def test_a_python_config_file_takes_numpy_numbers_as_the_keywords_do(tmp_path):
    from kizuna.train.config import TrainConfig, load_config_file

    f = tmp_path / "mycfg.py"
    f.write_text("import numpy as np\n\ndef get_config():\n"
                 "    return dict(steps=np.int64(5), lr=np.float32(0.5), model='ViT-mu-8', data='synthetic')\n")
    cfg = make_config(load_config_file(str(f), TrainConfig), out=str(tmp_path / "run"))
    assert (cfg.steps, cfg.lr) == (5, 0.5) and type(cfg.steps) is int and type(cfg.lr) is float
    f.write_text("def get_config():\n    return dict(steps=2.0, model='ViT-mu-8', data='synthetic')\n")
    with pytest.raises(ValueError, match="steps must be a whole number, got 2.0"):
        load_config_file(str(f), TrainConfig)
