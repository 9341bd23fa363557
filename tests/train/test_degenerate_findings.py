"""Settings and data under which a run "works" but means nothing: a diverged run (NaN) ran to its end, exited 0
and saved NaN weights as latest/ and model/ while --keep-last pruned the finite checkpoints; SigLIP at batch 1
(the advice of the CLIP batch-1 refusal) collapsed every embedding to one vector with a loss that looked fine;
`vit train` on one class scored 100% training nothing; a max-samples cut of a class-ordered folder kept one
class; --best-metric zeroshot/top5 on 5 classes or fewer ended without best/; both towers locked trained the
logit scale alone."""
from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from _tiny import tiny_config  # noqa: E402

from kizuna.train.contrastive import ContrastiveTrainer, check_evaluation_data  # noqa: E402
from kizuna.train.trainer import TrainingDiverged  # noqa: E402


def _all_finite(folder: Path) -> bool:
    from safetensors.torch import load_file

    files = list(folder.glob("*.safetensors"))
    assert files, folder
    return all(bool(torch.isfinite(t).all()) for f in files for t in load_file(f).values())


def test_a_run_that_diverges_stops_and_saves_nothing_from_it(tmp_path):
    # a checkpoint every step: where it diverges depends on the CPU's kernels (step 2 on an AMD EPYC, before a
    # save_every=2 checkpoint), and the message names the last finite one
    trainer = ContrastiveTrainer(tiny_config(tmp_path, steps=12, lr=1e3, grad_clip=0.0, warmup_steps=1,
                                             save_every=1, keep_last=1))
    with pytest.raises(TrainingDiverged, match=r"training diverged: .* nothing is saved from it \(the last "
                                               r"checkpoint, .*step_\d+, is from before it; its training loss was [\d.e+]+\)\. Train with a lower "
                                               r"--lr \(now 1000\)"):
        trainer.train()
    steps = sorted((tmp_path / "checkpoints").glob("step_*"))
    assert steps and trainer.step < 12
    assert all(_all_finite(step) for step in steps)  # the finite ones are kept, no NaN one written


def test_a_vit_run_that_diverges_exports_no_model(tmp_path):
    from test_supervised import CLASSES, _cfg, _shard

    from kizuna.train.supervised import SupervisedTrainer

    root = tmp_path / "data"
    _shard(root / "train" / "000000.tar", 0, 48)
    (root / "classnames.txt").write_text("\n".join(CLASSES) + "\n")
    trainer = SupervisedTrainer(_cfg(root, tmp_path / "run", val_data="", steps=4, save_every=2))
    fit = trainer.fit_batch

    def fit_then_break_the_weights(batch):  # an infinite gradient at the last step: its loss was still finite
        out = fit(batch)
        if trainer.step == 3:  # (the step counter moves after fit_batch)
            with torch.no_grad():
                trainer.model.head.weight[0, 0] = float("nan")
        return out

    trainer.fit_batch = fit_then_break_the_weights
    with pytest.raises(TrainingDiverged, match=r"head\.weight holds non-finite weights at step 4"):
        trainer.train()
    assert not (tmp_path / "run" / "model").exists()
    assert [p.name for p in sorted((tmp_path / "run" / "checkpoints").glob("step_*"))] == ["step_0000002"]


def test_siglip_at_batch_one_is_refused_as_clip_is():
    with pytest.raises(ValueError, match=r"--batch-size 1 with the SigLIP loss: the sigmoid loss has no negative "
                                         r"pairs.*use a batch of 2 or more$"):
        ContrastiveTrainer(tiny_config(Path("unused"), batch_size=1, loss="siglip"))
    with pytest.raises(ValueError, match=r"CLIP \(softmax\) loss: .*use a batch of 2 or more$"):  # no siglip advice
        ContrastiveTrainer(tiny_config(Path("unused"), batch_size=1))


def _image_folder(root: Path, classes: dict[str, int]) -> Path:
    for name, n in classes.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(np.full((16, 16, 3), (37 * i) % 255, np.uint8)).save(root / name / f"{i}.png")
    return root


def test_vit_training_on_one_class_is_refused():
    from kizuna.train.supervised import check_training_classes

    with pytest.raises(ValueError, match=r"1 class \(cat\): a classifier needs at least two"):
        check_training_classes("data", ["cat"], np.zeros(8, dtype=np.int64))


def test_classes_no_training_image_has_are_warned_about():
    from kizuna.train.supervised import check_training_classes

    with pytest.warns(UserWarning, match=r"2 of 4 classes have no training image \(dog, fish\): the head never"):
        check_training_classes("data.csv", ["cat", "dog", "bird", "fish"], np.array([0, 0, 2, 2]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_training_classes("data.csv", ["cat", "dog"], np.array([0, 1, 1]))


def test_a_max_samples_cut_that_keeps_fewer_classes_says_so(tmp_path):
    from kizuna.eval.datasets import load_dataset

    folder = _image_folder(tmp_path / "two", {"cat": 6, "dog": 6})
    with pytest.warns(UserWarning, match=r"the first 4 samples, kept by the max-samples cut, hold 1 of the "
                                         r"split's 2 classes"):
        load_dataset(folder, max_samples=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_dataset(folder, max_samples=8)


def test_best_metric_top5_on_five_classes_or_fewer_is_refused_before_training(tmp_path):
    from kizuna.train.config import make_config

    folder = _image_folder(tmp_path / "zs", {"cat": 2, "dog": 2})
    cfg = make_config(model="ViT-mu-8", data="synthetic", eval_zeroshot=str(folder), best_metric="zeroshot/top5",
                      out=str(tmp_path / "run"))
    with pytest.raises(ValueError, match=r"^--best-metric zeroshot/top5: .*zs has 2 classes; top-5") as error:
        check_evaluation_data(cfg)
    assert "--eval-zeroshot" not in str(error.value)  # the flag to change is --best-metric


def test_both_towers_locked_whole_warns_that_only_the_scale_trains(tmp_path):
    with pytest.warns(UserWarning, match="lock both towers whole: only the logit scale trains"):
        ContrastiveTrainer(tiny_config(tmp_path, lock_image=True, lock_text=True))


def test_a_failed_last_evaluation_of_diverged_weights_saves_nothing(tmp_path):
    """The evaluation-failure path exported `vit train`'s model/ (finish) before save() found the weights NaN, and
    the evaluation's own error was hidden behind the divergence."""
    from test_supervised import CLASSES, _cfg, _shard

    from kizuna.train.supervised import SupervisedTrainer

    root = tmp_path / "data"
    _shard(root / "train" / "000000.tar", 0, 48)
    (root / "classnames.txt").write_text("\n".join(CLASSES) + "\n")
    trainer = SupervisedTrainer(_cfg(root, tmp_path / "run", val_data="", steps=4, save_every=2))
    fit = trainer.fit_batch

    def fit_then_break_the_weights(batch):
        out = fit(batch)
        if trainer.step == 3:
            with torch.no_grad():
                trainer.model.head.weight[0, 0] = float("nan")
        return out

    def evaluate():
        raise RuntimeError("the evaluation's own failure")

    trainer.fit_batch, trainer.evaluate = fit_then_break_the_weights, evaluate
    with pytest.raises(RuntimeError, match="the evaluation's own failure"):
        trainer.train()
    assert not (tmp_path / "run" / "model").exists()
    assert [p.name for p in sorted((tmp_path / "run" / "checkpoints").glob("step_*"))] == ["step_0000002"]


def test_a_resume_of_a_checkpoint_holding_nan_weights_names_an_earlier_one(tmp_path):
    """Older kizuna saved a diverged run's NaN weights: resumed, the run stopped at its first record and advised
    resuming the same checkpoint."""
    from safetensors.torch import load_file, save_file

    ContrastiveTrainer(tiny_config(tmp_path, steps=2, save_every=1)).train()
    weights = tmp_path / "checkpoints" / "step_0000002" / "model.safetensors"
    tensors = load_file(str(weights))
    name = next(k for k, v in tensors.items() if v.is_floating_point())
    tensors[name] = torch.full_like(tensors[name], float("nan"))
    save_file(tensors, str(weights), metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"step_0000002: its .* holds non-finite weights .*Resume from an earlier "
                                         r"one: --resume .*step_0000001"):
        ContrastiveTrainer(tiny_config(tmp_path, steps=4, resume="latest"))


def test_the_max_samples_cut_of_a_class_ordered_csv_is_warned_about(tmp_path):
    """A CSV written by walking class folders lists its classes in runs, as an image folder does."""
    from kizuna.eval.datasets import load_dataset

    folder = _image_folder(tmp_path / "imgs", {"cat": 6, "dog": 6})
    rows = [f"{p.relative_to(tmp_path)},{p.parent.name}" for p in sorted(folder.rglob("*.png"))]
    (tmp_path / "val.csv").write_text("filepath,label\n" + "\n".join(rows) + "\n")
    with pytest.warns(UserWarning, match=r"the first 4 samples, kept by the max-samples cut, hold 1 of the "
                                         r"split's 2 classes \(it lists its samples class by class\)"):
        load_dataset(tmp_path / "val.csv", max_samples=4)


def test_the_max_samples_cut_of_a_shard_set_in_mixed_order_is_not_warned_about(tmp_path):
    from test_supervised import CLASSES, _shard

    from kizuna.eval.datasets import load_dataset

    _shard(tmp_path / "test" / "000000.tar", 0, 16)  # labels i % 4: the first 2 hold 2 of 4 classes
    (tmp_path / "classnames.txt").write_text("\n".join(CLASSES) + "\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_dataset(tmp_path, "test", max_samples=2)


def test_a_branch_that_diverges_names_the_checkpoint_it_started_from(tmp_path):
    """A run started from another folder's checkpoint (--out NEW --resume OTHER/...) that diverged before its own
    first checkpoint said "no checkpoint was saved before it", though the one it started from is."""
    ContrastiveTrainer(tiny_config(tmp_path / "a", steps=2, save_every=1)).train()
    start = tmp_path / "a" / "checkpoints" / "step_0000002"
    branch = ContrastiveTrainer(tiny_config(tmp_path / "b", steps=30, resume=str(start), lr=1e3, grad_clip=0.0,
                                            warmup_steps=1, save_every=0))
    with pytest.raises(TrainingDiverged, match=f"the last checkpoint, {start}, is from before it.* or resume {start}"):
        branch.train()
