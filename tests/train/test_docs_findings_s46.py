"""docs/TRAINING.md as a specification (stop 46): a resume's flags judged against the defaults, not the run's own
settings (a --tokenizer train run's own vocabulary size, augmentation on a run that trains on files)."""
import numpy as np
import pytest
from PIL import Image

from kizuna.apps.cli import main


def _captioned_folder(folder, n=16):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    words = ["red", "blue", "dog", "cat", "car", "tree", "house", "boat"]
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i:03d}.png")
        (folder / f"{i:03d}.txt").write_text(f"a {words[i % 8]} {words[(i * 3) % 8]} near a {words[(i + 5) % 8]}")
    return str(folder)


@pytest.fixture(scope="module")
def file_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume_flags")
    run = root / "run"
    assert main(["train", "--model", "ViT-mu-8", "--data", _captioned_folder(root / "data"), "--tokenizer", "train",
                 "--tokenizer-vocab-size", "600", "--context-length", "24", "--batch-size", "8", "--steps", "1",
                 "--workers", "0", "--warmup-steps", "0", "--threads", "1", "--progress", "false",
                 "--out", str(run)]) == 0
    return run


@pytest.mark.parametrize("flags", [("--tokenizer-vocab-size", "600"), ("--aug-hflip", "0.5"),
                                   ("--aug-scale", "0.5,1.0"), ("--aug-color-jitter", "0.2")])
def test_a_resume_takes_flags_its_runs_settings_read(file_run, flags, capsys):
    """Refused as "with --tokenizer model it does nothing" and "the synthetic scenes are not augmented": the
    defaults' tokenizer and data, not this run's (a --tokenizer train run on files)."""
    assert main(["train", "--out", str(file_run), "--resume", "latest", "--print-config", *flags]) == 0, \
        capsys.readouterr().err


def test_a_resume_still_refuses_what_its_run_leaves_unused(tmp_path, capsys):
    run = tmp_path / "synthetic"
    assert main(["train", "--model", "ViT-mu-8", "--batch-size", "8", "--steps", "1", "--workers", "0",
                 "--threads", "1", "--progress", "false", "--out", str(run)]) == 0
    capsys.readouterr()
    assert main(["train", "--out", str(run), "--resume", "latest", "--steps", "2", "--aug-hflip", "0.5"]) == 2
    assert "the synthetic scenes are drawn at the model's size and not augmented" in capsys.readouterr().err
    assert main(["train", "--out", str(run), "--resume", "latest", "--steps", "2",
                 "--tokenizer-vocab-size", "700"]) == 2
    assert "--tokenizer-vocab-size 700 does nothing here" in capsys.readouterr().err


def _manager_with_best(folder, model, best_step, value, resumed_step, resumed_best):
    from kizuna.train.checkpointing import CheckpointManager

    manager = CheckpointManager(folder, keep_last=5, metric="val_top1", mode="max")
    state = {"best_value": resumed_best, "best_metric": "val_top1", "best_mode": manager.mode}
    for step in sorted({best_step, resumed_step}):
        if step == best_step:
            manager.update_best(step, model, {"val_top1": value})
        if step == resumed_step:
            manager.best_value = resumed_best  # (the manager writes its own into the state)
        manager.save(step, model, {"step": step, **state})
    return folder / "checkpoints" if (folder / "checkpoints").is_dir() else folder


def test_a_resume_into_another_folder_brings_the_best_model_it_carries_the_value_of(tmp_path, capsys):
    """The best value came with a checkpoint resumed into a new --out, not best/: the folder never had a best/
    unless an evaluation beat that value (docs: best/ for any run that evaluates)."""
    import kizuna
    from kizuna.analysis.report import read_extra
    from kizuna.train.checkpointing import CheckpointManager

    model = kizuna.create_vit("mu/4", image_size=8, num_classes=2, width=16, depth=1, heads=2, mlp_dim=32)
    source = _manager_with_best(tmp_path / "a", model, best_step=1, value=0.5, resumed_step=2, resumed_best=0.5)
    step = next(p for p in source.glob("step_*") if p.name.endswith("2"))
    manager = CheckpointManager(tmp_path / "new", metric="val_top1", mode="max")
    manager.load_into(step, model)
    assert manager.best_value == 0.5 and read_extra(manager.dir / "best")["step"] == 1
    assert "copied from" in capsys.readouterr().err
    # the source's best/ is a later branch's (or another value's): not this checkpoint's model, so afresh
    later = _manager_with_best(tmp_path / "b", model, best_step=3, value=0.7, resumed_step=2, resumed_best=0.5)
    step = next(p for p in later.glob("step_*") if p.name.endswith("2"))
    manager = CheckpointManager(tmp_path / "new2", metric="val_top1", mode="max")
    manager.load_into(step, model)
    assert manager.best_value is None and not (manager.dir / "best").exists()
    assert "best/ starts afresh in this folder" in capsys.readouterr().err
