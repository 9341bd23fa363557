"""Checkpoints, resume, best/ and the run's log, checked against the files on disk and numbers worked out
independently (a mutation hunt over trainer.py, checkpointing.py and models/checkpoint.py found each of these
unchecked: the existing tests passed with the behaviour changed)."""
from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _tiny import tiny_config  # noqa: E402

from kizuna.train.checkpointing import (CheckpointManager, lower_is_better, read_train_state,  # noqa: E402
                                        rng_state, set_rng_state)


def _tiny_vit():
    from kizuna.models.vit import VisionConfig, VisionTransformer

    return VisionTransformer(VisionConfig(image_size=8, patch_size=4, width=8, depth=1, heads=2, num_classes=2))


def _state():
    return {"step": 0, "t": torch.zeros(1)}


def _best_extra(out: Path) -> dict:
    return json.loads((out / "checkpoints" / "best" / "config.json").read_text())["kizuna"]["extra"]


# ----------------------------------------------------------------------------------------------- best/
@pytest.mark.parametrize("metric", ["retrieval/i2t_median_rank", "t2i_mean_rank", "val/Loss", "top1_error"])
def test_ranks_losses_and_errors_are_best_at_their_lowest(metric):
    """Kills lower_is_better without its ``endswith("rank")``: best/ kept the model with the worst (highest)
    median rank."""
    assert lower_is_better(metric)
    assert CheckpointManager("unused", metric=metric).mode == "min"
    assert not lower_is_better("retrieval/i2t_R@1") and not lower_is_better(metric, "max")
    assert lower_is_better("val_top1", "min")


def test_a_first_evaluation_that_is_nan_is_never_best(tmp_path):
    """Kills update_best without its NaN check: with no best yet, a diverged first evaluation (NaN) was
    written to best/ and became the value every later evaluation had to beat (NaN: none ever did)."""
    manager = CheckpointManager(tmp_path, metric="val_top1")
    model = _tiny_vit()
    assert not manager.update_best(1, model, {"val_top1": float("nan")})
    assert manager.best_value is None and not (tmp_path / "checkpoints" / "best").exists()
    assert manager.update_best(2, model, {"val_top1": 0.25})
    assert _best_extra(tmp_path)["step"] == 2 and manager.best_value == 0.25


# ----------------------------------------------------------------------------------------------- RNG
def test_the_rng_state_restores_every_generator():
    """Kills set_rng_state without its numpy (or Python) restore: a resumed run drew other augmentations."""
    before = random.getstate(), np.random.get_state(), torch.get_rng_state()  # the process's, put back after
    try:
        random.seed(1), np.random.seed(2), torch.manual_seed(3)
        np.random.standard_normal()  # a cached Gaussian is part of numpy's state
        saved = rng_state()
        expected = (random.random(), np.random.standard_normal(3).tolist(), torch.rand(3).tolist())
        random.seed(10), np.random.seed(20), torch.manual_seed(30)
        set_rng_state(saved)
        assert (random.random(), np.random.standard_normal(3).tolist(), torch.rand(3).tolist()) == expected
    finally:
        random.setstate(before[0]), np.random.set_state(before[1]), torch.set_rng_state(before[2])


# ----------------------------------------------------------------------------------------------- damaged checkpoints
def test_a_damaged_checkpoint_names_the_newest_earlier_one(tmp_path):
    """Kills _earlier_checkpoint_hint naming the oldest earlier checkpoint (``earlier[0]``): with three kept,
    the advice resumed from the first and threw away a checkpoint's worth of training."""
    from kizuna.models.checkpoint import CheckpointError

    manager = CheckpointManager(tmp_path, keep_last=5)
    model = _tiny_vit()
    for step in (2, 10, 30):
        manager.save(step, model, _state())
    damaged = tmp_path / "checkpoints" / "step_0000030"
    (damaged / "train_state.pt").write_bytes(b"")
    with pytest.raises(CheckpointError) as caught:
        read_train_state(damaged)
    assert f"--resume {tmp_path / 'checkpoints' / 'step_0000010'}" in str(caught.value)
    assert "step_0000002" not in str(caught.value)


# ----------------------------------------------------------------------------------------------- model files
def test_a_loaded_model_is_in_eval_mode(tmp_path):
    """Kills load_model without its ``.eval()``: a loaded ViT kept dropout and patch dropout on, and its
    embeddings changed from call to call."""
    from kizuna.models.checkpoint import load_model, save_model

    model = _tiny_vit().train()
    save_model(model, tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert not loaded.training and not any(m.training for m in loaded.modules())


def test_a_model_loaded_at_another_resolution_preprocesses_at_it(tmp_path):
    """Kills _change_resolution without the preprocessing's image_size: the model took 48-pixel images
    and its own transform made 32-pixel ones."""
    import kizuna
    from kizuna.models.checkpoint import load_model, save_model

    save_model(kizuna.create_model("ViT-mu-8"), tmp_path / "m")
    loaded = load_model(tmp_path / "m", image_size=48)
    assert loaded.cfg.vision.image_size == 48 and loaded.cfg.preprocess["image_size"] == 48


def test_non_finite_metrics_are_saved_as_strict_json(tmp_path):
    """Kills save_model without json_safe: a diverged run's NaN metric was written as the bare word NaN, which
    strict JSON readers (jq, JavaScript) refuse."""
    from kizuna.models.checkpoint import save_model

    save_model(_tiny_vit(), tmp_path / "m", extra={"metrics": {"val_loss": float("nan"), "x": float("inf")}})

    def refuse(name):
        raise ValueError(f"not strict JSON: {name}")

    saved = json.loads((tmp_path / "m" / "config.json").read_text(), parse_constant=refuse)
    assert saved["kizuna"]["extra"]["metrics"]["val_loss"] is None


# ----------------------------------------------------------------------------------------------- the trainer
def test_the_epoch_is_saved_and_restored(tmp_path):
    """Kills a checkpoint saving epoch 0: two steps an epoch, saved at step 3 (in epoch 1, 3 // 2), a resume
    went on in epoch 0 and repeated its data order."""
    from kizuna.train.contrastive import ContrastiveTrainer

    cfg = dict(synthetic_length=32, steps=3, save_every=3, eval_max_samples=0)
    ContrastiveTrainer(tiny_config(tmp_path, **cfg)).train()
    assert read_train_state(tmp_path / "checkpoints" / "step_0000003")["epoch"] == 1
    resumed = ContrastiveTrainer(tiny_config(tmp_path, **{**cfg, "steps": 4}, resume="latest"))
    assert (resumed.step, resumed.epoch) == (3, 1)


def test_without_a_latest_pointer_the_numerically_newest_step_is_taken(tmp_path):
    """Kills step_folders sorted by name and latest() taking the first folder: with the pointer gone,
    `--resume latest` took step_9999999 (or the oldest step) over step_10000000."""
    manager = CheckpointManager(tmp_path, keep_last=5)
    model = _tiny_vit()
    for step in (5, 9_999_999, 10_000_000):
        manager.save(step, model, _state())
    (tmp_path / "checkpoints" / "latest").unlink()
    assert [p.name for p in manager.step_folders()] == ["step_0000005", "step_9999999", "step_10000000"]
    assert manager.latest().name == "step_10000000"
    assert manager.resolve("latest").name == "step_10000000"


def _colour_shard(path: Path, n: int = 16) -> Path:
    """A tar shard of ``n`` 16-pixel JPEGs of two colours, labelled 0 and 1 (.cls)."""
    import io
    import tarfile

    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tf:
        for i in range(n):
            buf = io.BytesIO()
            Image.new("RGB", (16, 16), (200, 40, 40) if i % 2 else (40, 40, 200)).save(buf, format="JPEG")
            for name, data in ((f"{i:06d}.cls", str(i % 2).encode()), (f"{i:06d}.jpg", buf.getvalue())):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return path


def test_a_failed_last_evaluation_still_exports_the_final_model(tmp_path):
    """Kills _save_after_failure without its finish(): the ViT trainer's last evaluation failing saved the last
    step's checkpoint, a finished run (a resume trains nothing), but OUT/model was never written."""
    from kizuna.train.supervised import SupervisedTrainer, make_supervised_config

    shard = _colour_shard(tmp_path / "data" / "000000.tar")
    out = tmp_path / "run"
    trainer = SupervisedTrainer(make_supervised_config(
        model="mu/4", model_overrides={"width": 16, "mlp_dim": 32, "depth": 1, "heads": 2}, image_size=16,
        data=str(shard.parent), val_data=str(shard.parent), batch_size=8, steps=2, workers=0, warmup_steps=1,
        out=str(out), progress=False, threads=1))

    def broken():
        raise RuntimeError("the evaluation data went away")

    trainer.evaluate = broken
    with pytest.raises(RuntimeError, match="went away"):
        trainer.train()
    assert read_train_state(out / "checkpoints" / "step_0000002")["step"] == 2
    exported = json.loads((out / "model" / "config.json").read_text())["kizuna"]["extra"]
    assert exported["step"] == 2
