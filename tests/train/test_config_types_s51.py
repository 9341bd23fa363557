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
                                          ("batch_size", 8.5), ("steps", "3")])
def test_a_whole_number_field_refuses_a_fraction_a_bool_or_text(make, base, field, value, tmp_path):
    with pytest.raises(ValueError, match=f"--{field.replace('_', '-')} .*must be"):
        make(**base, out=str(tmp_path), **{field: value})


@pytest.mark.parametrize("make, base", BOTH)
def test_numbers_from_numpy_and_tensors_become_python_numbers(make, base, tmp_path):
    cfg = make(**base, out=str(tmp_path), steps=np.int64(5), warmup_steps=2.0, batch_size=np.int32(8),
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
