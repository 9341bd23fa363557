"""Files kizuna writes atomically (checkpoints, configs, logs) keep ordinary permissions."""
import os
import stat
from pathlib import Path

import pytest
import torch

from kizuna.models.checkpoint import atomic_write


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_an_atomically_written_file_is_not_left_private_to_its_owner(tmp_path):
    """The temp file behind the rename is created 0600: train_config.json, `latest` and the model files were
    unreadable to a group that shares the run folder."""
    umask = os.umask(0o022)
    try:
        new = tmp_path / "new.json"
        atomic_write(new, lambda tmp: Path(tmp).write_text("{}"))
        assert stat.S_IMODE(new.stat().st_mode) == 0o644
        kept = tmp_path / "kept.json"
        kept.write_text("old")
        kept.chmod(0o640)
        atomic_write(kept, lambda tmp: Path(tmp).write_text("new"))
        assert kept.read_text() == "new" and stat.S_IMODE(kept.stat().st_mode) == 0o640
        with pytest.raises(RuntimeError):  # a failed write leaves the old file and no temp file behind
            atomic_write(kept, lambda tmp: (_ for _ in ()).throw(RuntimeError("disk full")))
        assert kept.read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["kept.json", "new.json"]
    finally:
        os.umask(umask)


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_checkpoint_folders_have_a_new_folders_permissions(tmp_path):
    """Step folders and best/ are filled under a mkdtemp name (0700) and renamed into place."""
    import torch

    from kizuna.models.vit import VisionConfig, VisionTransformer
    from kizuna.train.checkpointing import CheckpointManager

    umask = os.umask(0o022)
    try:
        model = VisionTransformer(VisionConfig(image_size=8, patch_size=4, width=8, depth=1, heads=2, num_classes=2))
        manager = CheckpointManager(tmp_path, metric="val_top1")
        manager.save(1, model, {"step": 1, "optimizer": {}, "rng": {}, "t": torch.zeros(1)}, {"val_top1": 0.5})
        for folder in (tmp_path / "checkpoints" / "step_0000001", tmp_path / "checkpoints" / "best"):
            assert stat.S_IMODE(folder.stat().st_mode) == 0o755, folder
            assert stat.S_IMODE((folder / "model.safetensors").stat().st_mode) == 0o644, folder
    finally:
        os.umask(umask)


def _tiny_vit():
    from kizuna.models.vit import VisionConfig, VisionTransformer

    return VisionTransformer(VisionConfig(image_size=8, patch_size=4, width=8, depth=1, heads=2, num_classes=2))


def _state():
    import torch

    return {"step": 0, "t": torch.zeros(1)}


def test_a_step_that_is_the_new_best_saves_that_best_for_a_resume(tmp_path):
    """train_state.pt was written before best/ was updated: a resume from that step restored the previous
    best value, and a worse evaluation then replaced best/."""
    from kizuna.train.checkpointing import CheckpointManager, read_train_state

    manager = CheckpointManager(tmp_path, keep_last=5, metric="val_top1")
    model = _tiny_vit()
    manager.save(1, model, _state(), {"val_top1": 0.5})
    path = manager.save(2, model, _state(), {"val_top1": 0.9})
    assert read_train_state(path)["best_value"] == 0.9
    resumed = CheckpointManager(tmp_path, keep_last=5, metric="val_top1")
    resumed.load_into(path, _tiny_vit())
    assert not resumed.update_best(3, model, {"val_top1": 0.7})  # 0.7 is worse than the 0.9 of step 2


def test_pruning_keeps_the_checkpoint_just_written_and_counts_steps_as_numbers(tmp_path):
    from kizuna.train.checkpointing import CheckpointManager

    manager = CheckpointManager(tmp_path, keep_last=1)
    model = _tiny_vit()
    for step in (650, 700):
        manager.save(step, model, _state())
    # resumed from 650 (say 700 was damaged): saving 650 again kept the later 700 and deleted 650
    assert manager.save(650, model, _state()).is_dir()
    assert manager.latest().name == "step_0000650"
    (tmp_path / "checkpoints" / "step_keep").mkdir()  # not a checkpoint: neither pruned nor counted
    (tmp_path / "checkpoints" / ".step_0000660.x1y2").mkdir()  # left by a save a kill interrupted
    big = CheckpointManager(tmp_path / "big", keep_last=1)
    big.save(9_999_999, model, _state())
    assert big.save(10_000_000, model, _state()).is_dir()  # sorted by name, the new one was pruned
    assert [p.name for p in big.step_folders()] == ["step_10000000"]
    manager.save(660, model, _state())
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["latest", "step_0000660", "step_0000700", "step_keep"]


def test_saving_a_step_again_keeps_the_old_folder_until_the_new_one_is_in(tmp_path, monkeypatch):
    from kizuna.train import checkpointing
    from kizuna.train.checkpointing import CheckpointManager

    manager = CheckpointManager(tmp_path, metric="val_top1")
    model = _tiny_vit()
    manager.save(5, model, _state(), {"val_top1": 0.5})
    real_replace = os.replace

    def failing(src, dst):
        if Path(src).name.startswith(".step_0000005.") and ".old." not in Path(src).name:  # the new folder
            raise OSError("simulated: rename failed")
        return real_replace(src, dst)

    monkeypatch.setattr(checkpointing.os, "replace", failing)
    monkeypatch.setattr(checkpointing, "_exchange", lambda a, b: False)  # the two-rename path (no renameat2)
    with pytest.raises(OSError, match="simulated"):
        manager.save(5, model, _state(), {"val_top1": 0.4})
    monkeypatch.undo()
    assert (tmp_path / "checkpoints" / "step_0000005" / "train_state.pt").is_file()  # the old one is back
    assert manager.latest().name == "step_0000005"


def test_a_failed_best_write_leaves_the_best_value_and_no_temp_folder(tmp_path, monkeypatch):
    from kizuna.train import checkpointing
    from kizuna.train.checkpointing import CheckpointManager

    manager = CheckpointManager(tmp_path, metric="val_top1")
    model = _tiny_vit()
    assert manager.update_best(1, model, {"val_top1": 0.5})

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpointing, "save_model", full_disk)
    with pytest.raises(OSError):
        manager.update_best(2, model, {"val_top1": 0.9})
    monkeypatch.undo()
    assert manager.best_value == 0.5 and not list((tmp_path / "checkpoints").glob(".best.*"))
    assert manager.update_best(3, model, {"val_top1": 0.7})  # better than what best/ holds


def test_a_fresh_run_sets_an_earlier_runs_checkpoints_aside(tmp_path, capsys):
    from kizuna.train.checkpointing import CheckpointManager

    model = _tiny_vit()
    CheckpointManager(tmp_path).save(4, model, _state())
    fresh = CheckpointManager(tmp_path)
    assert fresh.set_aside_earlier_run() == tmp_path / "checkpoints.prev"
    assert "moved to checkpoints.prev" in capsys.readouterr().err
    fresh.save(1, model, _state())
    assert fresh.latest().name == "step_0000001" and (tmp_path / "checkpoints.prev" / "step_0000004").is_dir()
    assert CheckpointManager(tmp_path / "empty").set_aside_earlier_run() is None


@pytest.mark.parametrize("pointer", ["", ".", "..", "step_0000009"])
def test_a_latest_pointer_that_names_no_checkpoint_falls_back_to_the_newest(tmp_path, pointer):
    from kizuna.train.checkpointing import CheckpointManager

    manager = CheckpointManager(tmp_path)
    manager.save(3, _tiny_vit(), _state())
    (tmp_path / "checkpoints" / "latest").write_text(pointer)
    with pytest.warns(RuntimeWarning, match="not a checkpoint folder; taking the newest, step_0000003"):
        assert manager.latest().name == "step_0000003"


def test_records_from_another_version_are_named_errors(tmp_path):
    import json

    import kizuna
    from kizuna.models.checkpoint import CheckpointError, save_model

    save_model(_tiny_vit(), tmp_path / "m")
    config = tmp_path / "m" / "config.json"
    record = json.loads(config.read_text())
    record["kizuna"]["config"]["a_field_from_a_newer_version"] = 1
    config.write_text(json.dumps(record))
    with pytest.raises(CheckpointError, match="m: its kizuna record does not describe a model"):
        kizuna.load_model(tmp_path / "m")
    config.write_text('"just a string"')
    with pytest.raises(CheckpointError, match="expected a JSON object"):
        kizuna.load_model(tmp_path / "m")
    config.write_bytes(b"\xff\xfe not utf-8")
    with pytest.raises(CheckpointError, match="invalid JSON"):
        kizuna.load_model(tmp_path / "m")


def test_a_train_state_that_is_not_a_dict_is_named(tmp_path):
    import torch

    from kizuna.models.checkpoint import CheckpointError
    from kizuna.train.checkpointing import read_train_state

    (tmp_path / "step_0000002").mkdir()
    torch.save([1, 2], tmp_path / "step_0000002" / "train_state.pt")
    with pytest.raises(CheckpointError, match="train_state.pt: cannot be read .TypeError: a list"):
        read_train_state(tmp_path / "step_0000002")


def test_an_unreadable_weights_file_is_not_reported_as_missing(tmp_path, monkeypatch):
    """safetensors reports a file it may not read as "No such file or directory". (Simulated: the tests run
    as root here, who reads any file.)"""
    import kizuna
    from kizuna.models import checkpoint
    from kizuna.models.checkpoint import CheckpointError, save_model

    save_model(_tiny_vit(), tmp_path / "m")
    weights = tmp_path / "m" / "model.safetensors"
    real_access = os.access
    monkeypatch.setattr(checkpoint.os, "access", lambda p, mode: False if Path(p) == weights else real_access(p, mode))
    with pytest.raises(CheckpointError, match="model.safetensors: permission denied"):
        kizuna.load_model(tmp_path / "m")


def test_a_latest_pointer_naming_a_removed_checkpoint_says_so(tmp_path):
    """It fell through to the OpenAI loader: "cannot be read as a weights-only torch file (IndexError: pop from
    empty list)"."""
    import kizuna
    from kizuna.models.checkpoint import CheckpointError, save_model

    checkpoints = tmp_path / "checkpoints"
    (checkpoints / "latest").parent.mkdir()
    (checkpoints / "latest").write_text("step_0000009")
    with pytest.raises(CheckpointError, match=r"latest: a 'latest' pointer naming 'step_0000009', which is not a "
                                              r"checkpoint folder beside it .*holds no step_\* checkpoint folder"):
        kizuna.load_model(checkpoints / "latest")
    save_model(_tiny_vit(), checkpoints / "step_0000002")
    save_model(_tiny_vit(), checkpoints / "step_0000010")
    with pytest.raises(CheckpointError, match=r"the newest checkpoint beside it is step_0000010: pass .*step_0000010"):
        kizuna.load_model(checkpoints / "latest")
    (checkpoints / "latest").write_text("step_0000002")
    assert kizuna.load_model(checkpoints / "latest").cfg == _tiny_vit().cfg


@pytest.mark.parametrize("content, kind", [(b"\x89PNG\r\n\x1a\n" + bytes(40), "a PNG image"),
                                           (b'{"model": "ViT-B-16"}', "JSON text")])
def test_a_file_that_is_no_checkpoint_says_what_it_is_without_torchs_unsafe_advice(tmp_path, content, kind):
    """An image given where the model goes printed torch's advice to re-run torch.load with
    weights_only=False, which runs a file's code."""
    import kizuna
    from kizuna.models.checkpoint import CheckpointError

    path = tmp_path / "x.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as info:
        kizuna.load_model(path)
    assert f"not a torch checkpoint ({kind})" in str(info.value) and "weights_only" not in str(info.value)


class _Opaque:  # a class of the saver's own: a weights-only load refuses to build it
    pass


def test_a_pickle_a_weights_only_load_refuses_is_named_so(tmp_path):
    import kizuna
    from kizuna.models.checkpoint import CheckpointError

    path = tmp_path / "x.pt"
    torch.save({"w": torch.zeros(1), "extra": _Opaque()}, path)
    with pytest.raises(CheckpointError, match="a torch file that a weights-only load refuses .*never unpickles") as info:
        kizuna.load_model(path)
    assert "weights_only=False" not in str(info.value)


def test_a_truncated_torch_file_is_called_damaged(tmp_path):
    """It was "a torch file that a weights-only load refuses", with advice to save a state_dict."""
    import kizuna
    from kizuna.models.checkpoint import CheckpointError

    path = tmp_path / "x.pt"
    torch.save({"w": torch.zeros(1000)}, path)
    path.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(CheckpointError, match="x.pt: a damaged or truncated torch file"):
        kizuna.load_model(path)


def test_text_files_are_written_in_utf8_whatever_the_locale(tmp_path):
    """Under an ASCII locale (or Windows' cp1252) a results.md naming "café" failed after the work."""
    import os
    import subprocess
    import sys

    script = tmp_path / "w.py"
    script.write_text("import sys\nfrom kizuna.models.checkpoint import atomic_write_text\n"
                      "atomic_write_text(sys.argv[1], 'caf\\u00e9 \\u65e5\\u672c')\n")
    env = {**os.environ, "PYTHONUTF8": "0", "LC_ALL": "C", "LANG": "C", "PYTHONCOERCECLOCALE": "0"}
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "r.md")], env=env, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "r.md").read_bytes() == "café 日本".encode("utf-8")
