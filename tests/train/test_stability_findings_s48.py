"""Training that goes wrong says so usefully: the logit scale keeps OpenCLIP's floor of 1, and a divergence names
the saved checkpoint from before the loss grew, not only the last one (finite but already blown up)."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

from kizuna.train.contrastive import ContrastiveTrainer
from kizuna.train.trainer import TrainingDiverged

sys.path.insert(0, str(Path(__file__).parent))
from _tiny import tiny_config  # noqa: E402


@pytest.mark.parametrize("loss", ["clip", "siglip"])
def test_the_logit_scale_stays_at_or_above_one(tmp_path, loss):
    """A learning rate of 10 drove a CLIP run's scale to 4e-18 (ln: -40): its features got no gradient and it
    went on at the loss of chance to its end. Started below the floor here, one step puts it on it."""
    cfg = tiny_config(tmp_path / "run", steps=1, warmup_steps=1, loss=loss)
    trainer = ContrastiveTrainer(cfg)
    with torch.no_grad():
        trainer.model.logit_scale.fill_(-3.0)
    trainer.train()
    assert trainer.model.logit_scale.item() == 0.0
    if loss == "clip":  # and the ceiling is still there
        assert trainer.model.cfg.max_logit_scale == pytest.approx(math.log(100))
    with pytest.raises(ValueError, match=r"init_logit_scale=-1.0: a scale under 1, which training raises"):
        ContrastiveTrainer(tiny_config(tmp_path / "neg", loss=loss, model_overrides={"init_logit_scale": -1.0}))


def test_a_divergence_names_the_checkpoint_before_the_loss_grew(tmp_path, monkeypatch):
    """A run that diverged slowly: step 4's checkpoint had finite weights and a loss of 4000 (against 1.5 at
    step 2). The message advised resuming step 4, which diverged again; it says its loss and names step 2."""
    script = {1: 2.0, 2: 1.5, 3: 60.0, 4: 4000.0, 5: float("nan")}
    real = ContrastiveTrainer.fit_batch

    def scripted(self, batch):
        numbers = real(self, batch)
        return {**numbers, "loss": script[self.step + 1]}  # (self.step counts the steps done before this one)

    monkeypatch.setattr(ContrastiveTrainer, "fit_batch", scripted)
    cfg = tiny_config(tmp_path / "run", steps=5, save_every=1, keep_last=5, eval_every=0)
    with pytest.raises(TrainingDiverged) as raised:
        ContrastiveTrainer(cfg).train()
    message = str(raised.value)
    assert "the loss is nan by step 5" in message
    assert "step_0000004" in message and "its training loss was 4000" in message
    assert "its training loss was 4000, step_0000002's 1.5)" in message
    assert message.rstrip(".").endswith(f"resume {tmp_path / 'run' / 'checkpoints' / 'step_0000002'} with them")


def test_a_divergence_after_a_falling_loss_names_the_last_checkpoint(tmp_path, monkeypatch):
    script = {1: 2.0, 2: 1.5, 3: 1.2, 4: float("inf")}
    real = ContrastiveTrainer.fit_batch
    monkeypatch.setattr(ContrastiveTrainer, "fit_batch",
                        lambda self, batch: {**real(self, batch), "loss": script[self.step + 1]})
    cfg = tiny_config(tmp_path / "run", steps=4, save_every=1, keep_last=5, eval_every=0)
    with pytest.raises(TrainingDiverged) as raised:
        ContrastiveTrainer(cfg).train()
    message = str(raised.value)
    assert "is from before it; its training loss was 1.2)" in message and "'s " not in message
    assert f"resume {tmp_path / 'run' / 'checkpoints' / 'step_0000003'} with them" in message


def test_a_warmup_of_all_steps_but_one_is_warned_about(tmp_path):
    """The step after the warm-up is at the peak (the cosine starts there): `--steps 3 --warmup-steps 2` ran at
    lr/2, lr, lr, and nothing was said (a warm-up of 3 was warned about)."""
    from kizuna.train.logging import read_metrics

    with pytest.warns(UserWarning, match=r"the warm-up \(2 steps\) leaves one step of the run \(3 steps\), at the peak: "
                                         r"the learning rate never decays\. Lower --warmup-steps"):
        ContrastiveTrainer(tiny_config(tmp_path / "a", steps=3, warmup_steps=2, lr=1e-3)).train()
    lrs = [r["lr"] for r in read_metrics(tmp_path / "a" / "metrics.jsonl", "train")]
    assert lrs == pytest.approx([5e-4, 1e-3, 1e-3])  # what the warning says
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # two steps after it: the last decays; and no warm-up, nothing to blame
        ContrastiveTrainer(tiny_config(tmp_path / "b", steps=4, warmup_steps=2, eval_every=0)).train()
        ContrastiveTrainer(tiny_config(tmp_path / "c", steps=1, warmup_steps=0, eval_every=0)).train()


def test_a_short_demo_keeps_two_steps_after_its_warmup():
    import argparse

    from kizuna.train import demo
    from kizuna.train.config import load_config_file

    parser = argparse.ArgumentParser()
    demo.add_arguments(parser)
    base = load_config_file("demo")
    warmup = {n: demo.demo_overrides(parser.parse_args(["--steps", str(n)]), base)["warmup_steps"]
              for n in (1, 2, 3, 4, 30)}
    assert warmup == {1: 0, 2: 0, 3: 1, 4: 1, 30: 4}


def test_a_resampled_run_on_fewer_samples_than_a_batch_is_refused(tmp_path):
    """--resampled went past the refusal: 8 samples in batches of 16 trained on repeats (false negatives), one
    sample trained on four copies of one pair at the loss of chance."""
    with pytest.raises(ValueError, match="8 samples do not fill one global batch of 16; lower --batch-size"):
        ContrastiveTrainer(tiny_config(tmp_path / "run", resampled=True, synthetic_length=8, batch_size=16))
