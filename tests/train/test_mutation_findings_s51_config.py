"""Mutation findings (session 51) on ``python_numbers`` and ``typed_file_values``: a number field holds the
field's own type whichever way the number came, and a .py config's bad number is refused naming the file."""
from __future__ import annotations

import json

import pytest
import torch

from kizuna.train.config import TrainConfig, load_config_file, make_config


def test_a_python_config_files_fraction_for_a_whole_number_field_is_refused_naming_the_file(tmp_path):
    """``steps = 2.5`` in mycfg.py: the message names the file it is in (as a JSON or YAML file's does), not only
    ``--steps``, a flag the user never typed."""
    f = tmp_path / "mycfg.py"
    f.write_text("def get_config():\n    return dict(steps=2.5, model='ViT-mu-8', data='synthetic')\n")
    with pytest.raises(ValueError, match=r"mycfg\.py.*steps must be a whole number, got 2\.5"):
        load_config_file(str(f), TrainConfig)


@pytest.mark.parametrize("lr", [1, torch.tensor(1)], ids=["int", "int-tensor"])
def test_a_float_field_given_a_whole_number_holds_a_float(tmp_path, lr):
    """``lr=1`` (or a 0-d integer tensor) is the float 1.0, as ``--lr 1`` and a config file's ``lr: 1`` give:
    the int went on into the run's config (and train_config.json) where the same run from the command line holds
    1.0."""
    cfg = make_config(model="ViT-mu-8", data="synthetic", lr=lr, out=str(tmp_path / "run"))
    assert type(cfg.lr) is float and cfg.lr == 1.0
    assert json.dumps(cfg.lr) == "1.0"
