"""Mutation-testing round (stop 49): training modes after an evaluation and for `vit train`, a checkpoint's fixed
settings without the typed flags, and overrides on a resume."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _tiny import tiny_config  # noqa: E402

import kizuna  # noqa: E402
from kizuna.models.checkpoint import save_model  # noqa: E402
from kizuna.train.config import make_config  # noqa: E402
from kizuna.train.contrastive import ContrastiveTrainer, refuse_settings_a_checkpoint_fixes  # noqa: E402


def test_the_steps_after_an_evaluation_train_in_train_mode(tmp_path):
    tr = ContrastiveTrainer(tiny_config(tmp_path, steps=3, warmup_steps=1))
    tr.model.eval()
    tr.evaluate()  # (the probes' scenes on --data synthetic)
    assert tr.model.training


def test_a_vit_run_trains_in_train_mode_whatever_mode_the_model_was_left_in(tmp_path):
    from test_supervised import CLASSES, _cfg, _shard

    from kizuna.train.supervised import SupervisedTrainer

    root = tmp_path / "data"
    _shard(root / "train" / "000000.tar", 0, 48)
    (root / "classnames.txt").write_text("\n".join(CLASSES) + "\n")
    trainer = SupervisedTrainer(_cfg(root, tmp_path / "run", val_data="", steps=2))
    trainer.model.eval()
    modes = []
    trainer.model.register_forward_pre_hook(
        lambda module, args: modes.append(module.training) if torch.is_grad_enabled() else None)
    trainer.train()
    assert modes and all(modes)
    assert not trainer.model.training


def test_without_named_flags_every_fixed_setting_off_its_default_is_refused(tmp_path):
    ckpt = save_model(kizuna.create_model("ViT-mu-8"), tmp_path / "m")
    with pytest.raises(ValueError, match="--loss would be ignored"):
        refuse_settings_a_checkpoint_fixes(make_config(model=str(ckpt), loss="siglip"), None)
    refuse_settings_a_checkpoint_fixes(make_config(model=str(ckpt)), None)  # the defaults: the model's own


def test_an_empty_tokenizer_is_the_models_own(tmp_path):
    ckpt = save_model(kizuna.create_model("ViT-mu-8"), tmp_path / "m")
    refuse_settings_a_checkpoint_fixes(make_config(model=str(ckpt), tokenizer=""), frozenset({"tokenizer"}))


def test_a_tokenizer_override_with_more_than_a_length_is_to_be_dropped():
    with pytest.raises(ValueError, match="makes the tokenizer, in its place; drop it from --model-overrides"):
        make_config(model="ViT-mu-8", tokenizer="clip_bpe",
                    model_overrides={"tokenizer": {"context_length": 16, "type": "clip_bpe"}})


def test_a_minilm_towers_text_length_override_gets_the_minilm_refusal():
    with pytest.raises(ValueError, match="pretrained MiniLM sentence encoder"):
        make_config(model="ViT-mu-8", text_tower="minilm", context_length=24,
                    model_overrides={"text": {"context_length": 64}})


def test_overrides_pass_where_no_flag_sets_their_field():
    # --context-length 0 (the tokenizer's own) and --loss model set nothing: the override stands
    assert make_config(model="ViT-mu-8", model_overrides={"text": {"context_length": 16}}).context_length == 0
    assert make_config(model="ViT-mu-8", loss="model", model_overrides={"loss": "siglip"}).loss == "model"


def test_a_resume_is_not_refused_for_its_runs_overrides_nor_has_its_augmentation_set_back():
    """A resume's model and data are its run's (checked against its checkpoint, not here)."""
    cfg = make_config(model="ViT-mu-8", resume="latest", context_length=24,
                      model_overrides={"text": {"context_length": 64}})
    assert cfg.resume == "latest"
    # (a number: True is refused as one since session 51, as the command line and get_preprocess refuse it)
    assert make_config(base={"model": "ViT-mu-8", "aug_hflip": 0.5}, resume="latest").aug_hflip == 0.5


def test_eval_every_on_synthetic_data_spaces_the_probes():
    from kizuna.train.config import unused_flags

    def unused(cfg):
        return {name for name, off, _ in unused_flags(cfg) if off}

    assert "eval_every" not in unused(make_config(model="ViT-mu-8", data="synthetic", eval_every=5))
    assert "eval_every" in unused(make_config(model="ViT-mu-8", data="/some/shards", eval_every=5))
