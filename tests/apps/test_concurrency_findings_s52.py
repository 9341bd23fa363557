"""Two commands on one folder at once (session 52): `vit eval --out` and `analyze --out` hold the folder as every
`kizuna eval` does; `latest` is read again when a live run prunes the folder it named; over-training's
abandoned-branch check does not take a save in progress for one."""
import os
import subprocess
import sys
import time

import pytest

from kizuna.apps.cli import main

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="no fcntl: folders are not locked there")

HOLD = """
import fcntl, os, sys, time
os.makedirs(sys.argv[1], exist_ok=True)
f = open(os.path.join(sys.argv[1], ".kizuna-run.lock"), "a+")
fcntl.lockf(f, fcntl.LOCK_EX)
f.write(str(os.getpid())); f.flush()
print("held", flush=True)
time.sleep(60)
"""


@pytest.fixture
def held(tmp_path):
    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    yield out
    holder.kill()
    holder.wait()


def test_vit_eval_into_a_held_folder_is_refused(held, monkeypatch, capsys):
    from kizuna.train import vit_cli

    called = []
    monkeypatch.setattr(vit_cli, "_evaluate", lambda *a: called.append(a) or 0)
    data = held.parent / "data"
    data.mkdir()
    assert main(["vit", "eval", "model", "--data", str(data), "--out", str(held), "--device", "cpu"]) == 2
    assert "another kizuna run (pid" in capsys.readouterr().err and not called


def test_vit_eval_into_a_free_folder_evaluates(tmp_path, monkeypatch):
    from kizuna.train import vit_cli

    called = []
    monkeypatch.setattr(vit_cli, "_evaluate", lambda *a: called.append(a) or 0)
    (tmp_path / "data").mkdir()
    assert main(["vit", "eval", "model", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "o"),
                 "--device", "cpu"]) == 0
    assert called


def test_analyze_into_a_held_folder_is_refused(held, monkeypatch, capsys):
    from kizuna.analysis import cli as analysis_cli

    called = []
    monkeypatch.setattr(analysis_cli, "_run_action", lambda args: called.append(args) or 0)
    assert main(["analyze", "positions", "model", "--out", str(held)]) == 2
    assert "another kizuna run (pid" in capsys.readouterr().err and not called


def test_latest_is_read_again_when_the_run_pruned_the_folder_it_named(tmp_path, monkeypatch):
    import kizuna
    from kizuna.models import checkpoint

    checkpoints = tmp_path / "checkpoints"
    kizuna.save_model(kizuna.create_model("ViT-mu-8"), checkpoints / "step_0000002")
    (checkpoints / "step_0000001").mkdir()  # being pruned: its files gone first, the folder still there
    (checkpoints / "latest").write_text("step_0000001")
    real = checkpoint._load_model

    def loading(path, *args):
        if path.name == "step_0000001":  # the run names its next checkpoint meanwhile
            (checkpoints / "latest").write_text("step_0000002")
        return real(path, *args)

    monkeypatch.setattr(checkpoint, "_load_model", loading)
    assert kizuna.load_model(checkpoints / "latest") is not None
    # a folder that `latest` still names and cannot be read is damaged: said at once
    (checkpoints / "latest").write_text("step_0000001")
    monkeypatch.setattr(checkpoint, "_load_model", real)
    started = time.monotonic()
    with pytest.raises(checkpoint.CheckpointError):
        kizuna.load_model(checkpoints / "latest")
    assert time.monotonic() - started < 5


def test_a_save_in_progress_is_no_abandoned_branch(tmp_path, recwarn, monkeypatch):
    from kizuna.analysis.over_training import find_checkpoints
    from kizuna.train import checkpointing

    monkeypatch.setattr(checkpointing, "run_lock_holder", lambda out: "4242")  # the run is training now
    checkpoints = tmp_path / "checkpoints"
    for step in (2, 4, 6, 8):
        (checkpoints / f"step_{step:07d}").mkdir(parents=True)
    old = time.time() - 100
    for step in (6, 8):  # an abandoned branch: saved before the resume, which wrote `latest` after
        os.utime(checkpoints / f"step_{step:07d}", (old, old))
    (checkpoints / "latest").write_text("step_0000004")
    os.utime(checkpoints / "latest", (old + 50, old + 50))
    (checkpoints / "step_0000005").mkdir()  # the run's new step, swapped in before `latest` names it
    found = [p.name for _, p in find_checkpoints(tmp_path)]
    assert found == ["step_0000002", "step_0000004", "step_0000005"]
    said = [str(w.message) for w in recwarn if "abandoned branch" in str(w.message)]
    assert len(said) == 1 and "step_0000006, step_0000008 come after latest" in said[0]
    assert "step_0000005" not in said[0]


def test_a_run_at_rest_copied_in_name_order_keeps_its_branch_left_out(tmp_path, recwarn):
    """A copy that writes `latest` first (as download tools do) makes every step newer than the pointer: only a
    live run's newer steps are taken for a save in progress."""
    from kizuna.analysis.over_training import find_checkpoints

    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    (checkpoints / "latest").write_text("step_0000003")
    old = time.time() - 100
    os.utime(checkpoints / "latest", (old, old))
    for step in (2, 3, 4, 6):
        (checkpoints / f"step_{step:07d}").mkdir()
    assert [p.name for _, p in find_checkpoints(tmp_path)] == ["step_0000002", "step_0000003"]
    assert any("step_0000004, step_0000006 come after latest" in str(w.message) for w in recwarn)
