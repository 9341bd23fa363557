"""Mutation findings (session 50b), suggested commands: each path pasted into a command the user is told to run
is shell-quoted (a path with a space was two arguments): `vit train --out` after a refused --init on resume, the
new run from a checkpoint's weights after its optimizer state did not fit, and the evaluation after a failure at
a run's end."""
from __future__ import annotations

import shlex
from types import SimpleNamespace

import pytest

from kizuna.train.checkpointing import check_resume_settings
from kizuna.train.trainer import Trainer


def test_continuing_a_fine_tune_names_its_out_quoted(tmp_path):
    out = tmp_path / "run b (2)"
    ckpt = out / "checkpoints" / "step_0000010"
    cfg = SimpleNamespace(init="other.safetensors", out=str(out))
    with pytest.raises(ValueError) as e:
        check_resume_settings({"init": "base.safetensors"}, cfg, ("init",), ckpt, named=frozenset({"init"}))
    assert f"`kizuna vit train --out {shlex.quote(str(out))} --resume latest`" in str(e.value)


def test_a_new_run_from_a_checkpoints_weights_names_it_quoted(tmp_path):
    class Optimizer:
        param_groups = [{"params": [1]}]

        def load_state_dict(self, saved):
            raise ValueError("loaded state dict contains a parameter group that doesn't match")

    path = tmp_path / "my run" / "checkpoints" / "step_0000010"
    stub = SimpleNamespace(optimizer=Optimizer(), resume_from=path)
    with pytest.raises(ValueError) as e:
        Trainer._load_optimizer_state(stub, {"param_groups": [{"params": [1, 2]}]})
    assert f"`kizuna train --model {shlex.quote(str(path))}`" in str(e.value)


def test_a_failure_at_a_runs_end_names_the_evaluation_with_out_quoted(tmp_path):
    out = tmp_path / "run b"
    said = []
    bar = SimpleNamespace(write=lambda text, file=None: said.append(text))
    stub = SimpleNamespace(dist=SimpleNamespace(enabled=False, is_main=True), _non_finite=lambda: None,
                           finish=lambda metrics: None, save=lambda x: None, step=7,
                           ckpt=SimpleNamespace(dir=out / "checkpoints"), resume_command=None,
                           cfg=SimpleNamespace(out=str(out)),
                           evaluate_command="kizuna vit eval {out}/model --data DATA")
    Trainer._save_after_failure(stub, "the evaluation", True, bar)
    assert f"`kizuna vit eval {shlex.quote(str(out))}/model --data DATA`" in said[0]
