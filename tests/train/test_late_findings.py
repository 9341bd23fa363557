"""Errors found too late (found by timing each bad input to its error): a run that trained to its end and then
could not save, a best metric no evaluation gives, validation data checked after the training set was decoded."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _tiny import tiny_config  # noqa: E402

from kizuna.train.contrastive import ContrastiveTrainer  # noqa: E402


def _never(*a, **k):
    raise AssertionError("the run started its work before the check")


@pytest.mark.parametrize("place", ["checkpoints", "checkpoints/best"])
def test_a_run_whose_checkpoint_folder_cannot_be_made_is_refused_before_training(tmp_path, monkeypatch, place):
    """A link to an unmounted disk (or a file) at OUT/checkpoints: 20 steps trained, then "[Errno 17] File exists"
    at the first save, after the last step by default, and the run was lost."""
    out = tmp_path / "run"
    (out / place).parent.mkdir(parents=True, exist_ok=True)
    (out / place).symlink_to(tmp_path / "not-mounted" / "ckpts")
    monkeypatch.setattr(ContrastiveTrainer, "train", _never)
    with pytest.raises(ValueError, match=rf"{place} is a symbolic link to .*not-mounted.*which does not exist"):
        ContrastiveTrainer(tiny_config(out))
    (out / place).unlink()
    (out / place).write_text("x")
    with pytest.raises(ValueError, match=rf"{place} is a file, where the run writes a folder"):
        ContrastiveTrainer(tiny_config(out))


def test_a_vit_run_whose_model_folder_is_a_file_is_refused_before_training(tmp_path):
    """vit train writes OUT/model before its final checkpoint: a file there lost the checkpoint and best/ too."""
    from _labelled import odd_even_shards

    from kizuna.train.supervised import SupervisedTrainer, make_supervised_config

    data = odd_even_shards(tmp_path / "oe", 8, 8)
    out = tmp_path / "run"
    out.mkdir()
    (out / "model").write_text("not a folder")
    with pytest.raises(ValueError, match="model is a file, where the run writes a folder"):
        SupervisedTrainer(make_supervised_config(data=str(data / "train"), model="mu/4", image_size=8, steps=1,
                                                 batch_size=4, workers=0, out=str(out), progress=False))


@pytest.mark.parametrize("settings, message", [
    ({"data": "synthetic", "best_metric": "probe/shap"}, None),  # a probe's name is only known when it runs
    ({"data": "synthetic", "best_metric": "zeroshot/top1"}, r"this run's evaluations give probe/\.\.\. metrics "
                                                            r"\(--eval-zeroshot would give zeroshot/\.\.\.\)"),
    ({"data": "synthetic", "eval_zeroshot": "x", "best_metric": "zeroshot/top"},
     "the zeroshot evaluation gives zeroshot/mean_per_class_recall, zeroshot/top1, zeroshot/top5"),
    ({"data": "synthetic", "eval_zeroshot": "synthetic", "eval_retrieval": "x",
      "best_metric": "retrieval/R@1"}, "the retrieval evaluation gives retrieval/image_to_text_R@1"),
])
def test_a_best_metric_no_evaluation_gives_is_refused_before_training(settings, message):
    """A typo was a warning at the first evaluation (the run's end by default) and the run ended without best/."""
    from kizuna.train.config import make_config
    from kizuna.train.contrastive import check_best_metric

    cfg = make_config(**settings)
    if message is None:
        check_best_metric(cfg)
        return
    with pytest.raises(ValueError, match=message):
        check_best_metric(cfg)


def test_a_run_that_evaluates_nothing_takes_no_best_metric(tmp_path):
    from kizuna.train.config import make_config
    from kizuna.train.contrastive import check_best_metric

    with pytest.raises(ValueError, match="this run evaluates nothing to pick best/ by; pass --eval-zeroshot"):
        check_best_metric(make_config(data=str(tmp_path / "shards"), best_metric="zeroshot/top1"))


def test_vit_trains_validation_data_is_checked_before_the_model_and_the_training_images(tmp_path, monkeypatch):
    """`vit train --val-data nope` failed after the training set was decoded onto the device (6-9 s on CIFAR-10),
    as "dataset not found: nope", naming no flag."""
    import kizuna
    from _labelled import odd_even_shards

    from kizuna.train.supervised import SupervisedTrainer, make_supervised_config

    data = odd_even_shards(tmp_path / "oe", 8, 8)
    monkeypatch.setattr(kizuna, "create_vit", _never)
    base = dict(data=str(data / "train"), model="mu/4", image_size=8, steps=1, batch_size=4, workers=0,
                out=str(tmp_path / "run"), progress=False)
    with pytest.raises(FileNotFoundError, match=r"--val-data .*nope: dataset not found"):
        SupervisedTrainer(make_supervised_config(**base, val_data=str(tmp_path / "nope")))
    shutil.copytree(data / "train", data / "test")
    with pytest.raises(ValueError, match="no split 'nosuch'"):
        SupervisedTrainer(make_supervised_config(**base, val_data=str(data / "test"), val_split="nosuch"))


def test_a_device_name_is_taken_whole():
    """--device cpux (any prefix of cpu or cuda) ran on the CPU without a word."""
    from kizuna.train.distributed import init_distributed

    for bad in ("cpux", "cudas", "cpu0"):
        with pytest.raises(ValueError, match=f"--device {bad}: expected auto, cpu, cuda or cuda:N"):
            init_distributed(bad)
    assert init_distributed("cpu:0").device.type == "cpu"


def test_a_resume_that_changes_a_fixed_setting_is_refused_before_the_model_and_data(tmp_path, monkeypatch):
    """`vit train --resume latest --batch-size 32` was refused after the model was built and the training images
    decoded (8 s on CIFAR-10 onto the device)."""
    from _labelled import odd_even_shards

    import kizuna.train.supervised as supervised
    from kizuna.train.supervised import SupervisedTrainer, make_supervised_config

    data = odd_even_shards(tmp_path / "oe", 8, 8)
    base = dict(data=str(data / "train"), model="mu/4", image_size=8, steps=2, save_every=1, batch_size=4,
                workers=0, out=str(tmp_path / "run"), progress=False)
    SupervisedTrainer(make_supervised_config(**base)).train()
    monkeypatch.setattr(supervised, "load_classification", _never)
    with pytest.raises(ValueError, match="the run's batch size is 4, .* --batch-size 2 cannot continue it"):
        SupervisedTrainer(make_supervised_config(**{**base, "batch_size": 2, "resume": "latest"}))
