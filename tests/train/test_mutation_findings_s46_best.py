"""Mutation testing of stop 46's CheckpointManager._carry_best (a resume from another folder's checkpoint brings
the source's best/ only when it is the model of the best value carried): each condition of "that value's model"
loosened, or the copy made where the folder needs none, went unnoticed."""
import shutil

import pytest

import kizuna
from kizuna.analysis.report import read_extra
from kizuna.train.checkpointing import CheckpointManager


@pytest.fixture(scope="module")
def model():
    return kizuna.create_vit("mu/4", image_size=8, num_classes=2, width=16, depth=1, heads=2, mlp_dim=32)


def _source(folder, model, best_step, best_metrics, resumed_step, resumed_best, best_by=("val_top1", "max")):
    """A run folder whose best/ was saved at ``best_step`` by a manager ranking ``best_by``, and a checkpoint at
    ``resumed_step`` carrying ``resumed_best`` as its best val_top1 (max)."""
    ranker = CheckpointManager(folder, keep_last=5, metric=best_by[0], mode=best_by[1])
    ranker.update_best(best_step, model, best_metrics)
    manager = CheckpointManager(folder, keep_last=5, metric="val_top1", mode="max")
    manager.best_value = resumed_best
    state = {"step": resumed_step, "best_value": resumed_best, "best_metric": "val_top1", "best_mode": "max"}
    manager.save(resumed_step, model, state)
    return next(p for p in manager.dir.glob("step_*") if p.name.endswith(str(resumed_step)))


def _resume(folder, step, model):
    manager = CheckpointManager(folder, metric="val_top1", mode="max")
    manager.load_into(step, model)
    return manager


def test_a_best_saved_at_the_very_step_resumed_is_carried(tmp_path, model, capsys):
    step = _source(tmp_path / "a", model, best_step=2, best_metrics={"val_top1": 0.5}, resumed_step=2, resumed_best=0.5)
    manager = _resume(tmp_path / "new", step, model)
    assert manager.best_value == 0.5 and read_extra(manager.dir / "best")["step"] == 2
    assert "copied from" in capsys.readouterr().err


@pytest.mark.parametrize("best_metrics, best_by", [
    ({"val_top1": 0.7}, ("val_top1", "max")),  # another value: not the model of 0.5
    ({"val_top1": 0.5, "val_top5": 0.9}, ("val_top5", "max")),  # ranked by another metric
    ({"val_top1": 0.5}, ("val_top1", "min")),  # ranked the other way
])
def test_a_best_that_is_not_the_carried_values_model_is_not_copied(tmp_path, model, capsys, best_metrics, best_by):
    step = _source(tmp_path / "a", model, best_step=1, best_metrics=best_metrics, resumed_step=2, resumed_best=0.5,
                   best_by=best_by)
    manager = _resume(tmp_path / "new", step, model)
    assert manager.best_value is None and not (manager.dir / "best").exists()
    assert "best/ starts afresh in this folder" in capsys.readouterr().err


def test_a_folder_with_a_best_of_its_own_keeps_it(tmp_path, model, capsys):
    step = _source(tmp_path / "a", model, best_step=1, best_metrics={"val_top1": 0.5}, resumed_step=2, resumed_best=0.5)
    own = CheckpointManager(tmp_path / "new", metric="val_top1", mode="max")
    own.update_best(7, model, {"val_top1": 0.4})
    capsys.readouterr()
    manager = _resume(tmp_path / "new", step, model)
    assert read_extra(manager.dir / "best")["step"] == 7  # not replaced by the source's
    assert "copied from" not in capsys.readouterr().err


def test_a_resume_in_its_own_folder_keeps_its_best_value_without_a_best_folder(tmp_path, model, capsys):
    """Its own checkpoint: nothing to carry (a best/ deleted by hand is not "another model": the value stays)."""
    step = _source(tmp_path / "a", model, best_step=1, best_metrics={"val_top1": 0.5}, resumed_step=2, resumed_best=0.5)
    shutil.rmtree(step.parent / "best")
    capsys.readouterr()
    manager = _resume(tmp_path / "a", step, model)
    assert manager.best_value == 0.5
    assert "starts afresh" not in capsys.readouterr().err
