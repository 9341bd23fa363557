"""Finite weights whose outputs are NaN or inf (training at extreme learning rates, stop 42): such a checkpoint was
saved, exported as model/ and named as the one to resume from, which diverged again at once. And the numbers at
float32's edges: features past 1e19 normalised to zeros, a logit scale whose exp() is inf, an eps that rounds to 0."""
import dataclasses
import math
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import kizuna
from kizuna.models.layers import unit_rows
from kizuna.train.config import make_config
from kizuna.train.contrastive import ContrastiveTrainer
from kizuna.train.supervised import SupervisedTrainer, make_supervised_config
from kizuna.train.trainer import TrainingDiverged

sys.path.insert(0, str(Path(__file__).parent))
from _tiny import tiny_config  # noqa: E402
from test_diverged_eval import _tree  # noqa: E402


def _steps_saved(out: Path) -> list[str]:
    return sorted(p.name for p in (out / "checkpoints").glob("step_*"))


@pytest.mark.parametrize("loss", ["clip", "siglip"])
def test_a_contrastive_checkpoint_whose_outputs_overflow_is_not_saved(tmp_path, loss):
    tr = ContrastiveTrainer(tiny_config(tmp_path / "run", steps=2, loss=loss, eval_every=0))
    tr.train()
    assert _steps_saved(tmp_path / "run") == ["step_0000002"]
    with torch.no_grad():
        if loss == "siglip":  # no clamp: a finite parameter of 999 is a scale of exp(999) = inf
            tr.model.logit_scale.fill_(999.0)
        else:
            tr.model.visual.proj.weight.fill_(3e38)  # finite weights (< 3.4e38) whose features are inf
    assert tr._non_finite_weight() is None
    tr.step += 1
    with pytest.raises(TrainingDiverged, match="outputs on the last batch are NaN or inf .* at step 3.*"
                                               "the last checkpoint, .*step_0000002, is from before it"):
        tr.save()
    assert _steps_saved(tmp_path / "run") == ["step_0000002"]


def test_the_output_check_draws_no_random_numbers_and_leaves_modes_alone(tmp_path):
    # patch dropout draws random numbers in train mode: the check must run in eval mode
    tr = ContrastiveTrainer(tiny_config(tmp_path / "run", steps=2, eval_every=0, lock_text=True, patch_dropout=0.5))
    tr.train()
    tr._set_training_modes()  # as during the run (train() leaves the model in eval mode)
    modes = {name: m.training for name, m in tr.model.named_modules()}
    state = torch.get_rng_state()
    assert tr._non_finite() is None
    assert torch.equal(torch.get_rng_state(), state)
    assert {name: m.training for name, m in tr.model.named_modules()} == modes
    assert tr.model.visual.training and not tr.model.text.training  # the locked tower stays in eval mode


def test_a_vit_run_whose_logits_overflow_exports_no_model(tmp_path):
    """`vit train --steps 1 --lr 1e30`: the evaluation warned NaN, yet the run exited 0 and exported model/, which
    `vit eval` then refused."""
    cfg = make_supervised_config(
        model="mu/4", model_overrides={"width": 32, "mlp_dim": 64, "depth": 1, "heads": 2}, image_size=16,
        data=_tree(tmp_path / "train", [4, 4]), batch_size=8, steps=2, workers=0, warmup_steps=1, lr=1e-3,
        out=str(tmp_path / "run"), progress=False, log_every=1, threads=1, save_every=1)
    tr = SupervisedTrainer(cfg)
    real = tr.fit_batch

    def fit_then_blow_up(batch):
        numbers = real(batch)
        if tr.step == 1:  # the second step's weights: finite, logits inf
            with torch.no_grad():
                tr.model.head.weight.fill_(3e38)
        return numbers

    tr.fit_batch = fit_then_blow_up
    with pytest.raises(TrainingDiverged, match="outputs on the last batch are NaN or inf .* at step 2"):
        tr.train()
    assert _steps_saved(tmp_path / "run") == ["step_0000001"]
    assert not (tmp_path / "run" / "model").exists()


def test_unit_rows_normalises_rows_whose_norm_overflows_and_leaves_others_bit_for_bit():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 16, generator=g)
    big = x.clone()
    big[2] *= 1e20  # sum of squares past float32's max: F.normalize gave a row of zeros
    assert torch.count_nonzero(F.normalize(big, dim=-1)[2]) == 0
    out = unit_rows(big)
    assert torch.allclose(out[2], F.normalize(x[2], dim=-1), atol=1e-6)
    keep = [0, 1, 3, 4]
    assert torch.equal(out[keep], F.normalize(x, dim=-1)[keep])
    assert torch.equal(unit_rows(torch.zeros(2, 4)), torch.zeros(2, 4))  # zero rows stay zero, as F.normalize
    inf = x.clone()
    inf[0, 0] = float("inf")
    assert torch.isnan(unit_rows(inf)[0]).all()  # an inf entry stays unusable (the NaN/inf checks refuse it)


def test_a_logit_scale_whose_exp_is_infinite_is_refused_unless_clamped():
    """--model-overrides '{"init_logit_scale": 100}' with --loss siglip: NaN at step 1, blamed on the lr."""
    preset = kizuna.clip_config("ViT-mu-8")
    with pytest.raises(ValueError, match="init_logit_scale 100: its exp.. is infinite in float32"):
        dataclasses.replace(preset, init_logit_scale=100.0, max_logit_scale=None)
    clamped = dataclasses.replace(preset, init_logit_scale=100.0, max_logit_scale=math.log(100))
    assert clamped.init_logit_scale == 100.0


@pytest.mark.parametrize("make", [make_config, make_supervised_config])
def test_an_eps_that_rounds_to_zero_in_float32_is_refused(make):
    with pytest.raises(ValueError, match="--eps must be > 0 and representable in float32"):
        make(eps=1e-50, out="/tmp/unused-run")
    assert make(eps=1e-45, out="/tmp/unused-run").eps == 1e-45
