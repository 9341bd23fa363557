"""torchrun's ranks as one run (session 50): rank 0 failing alone to write (a full disk, a checkpoints.prev that is a
file) left rank 1 to die in its next collective with a gloo traceback under rank 0's one line;
--synthetic-hard-negatives paired other positions when a rank's share was odd; --print-config printed one JSON
document per rank; the demo's torchrun advice dropped its flags; --resume latest into a folder a running run holds
said "no checkpoint"."""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from kizuna.apps.cli import main

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from _tiny import tiny_config  # noqa: E402


def _as_rank(monkeypatch, rank: int, world: int = 2) -> None:
    """The environment torchrun gives a rank (no process group: the code under test runs before one)."""
    monkeypatch.setenv("RANK", str(rank))
    monkeypatch.setenv("WORLD_SIZE", str(world))


@pytest.mark.parametrize("command", [["train", "--data", "synthetic"], ["vit", "train", "--data", "DATA"]])
def test_print_config_prints_one_document_under_torchrun(tmp_path, capsys, monkeypatch, command):
    (tmp_path / "data" / "a").mkdir(parents=True)
    argv = [str(tmp_path / "data") if a == "DATA" else a for a in command]
    argv += ["--out", str(tmp_path / "run"), "--print-config"]
    _as_rank(monkeypatch, 1)
    assert main(argv) == 0
    assert capsys.readouterr().out == ""
    _as_rank(monkeypatch, 0)
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["out"] == str(tmp_path / "run")


def test_the_demos_torchrun_advice_keeps_its_flags(tmp_path, capsys, monkeypatch):
    _as_rank(monkeypatch, 0)
    assert main(["demo", "--out", str(tmp_path / "demo"), "--steps", "30", "--batch-size", "32"]) == 2
    err = capsys.readouterr().err
    assert "train --config demo --out" in err and "--steps 30" in err and "--batch-size 32" in err
    assert "--warmup-steps 4" in err  # the demo's warm-up, shortened with its steps (50 of 400 -> 4 of 30)


def test_hard_negatives_with_an_odd_share_per_rank_are_refused(tmp_path, monkeypatch):
    import kizuna.train.trainer as trainer_module
    from kizuna.train.contrastive import ContrastiveTrainer
    from kizuna.train.distributed import DistInfo

    monkeypatch.setattr(trainer_module, "init_distributed", lambda device=None: DistInfo(rank=0, world_size=2))
    with pytest.raises(ValueError, match=r"--batch-size 6 over 2 ranks leaves each an odd 3; give a batch size "
                                         r"divisible by 4"):
        ContrastiveTrainer(tiny_config(tmp_path / "run", batch_size=6, synthetic_hard_negatives=True))


def test_resume_latest_into_a_folder_another_run_holds_names_it(tmp_path, capsys):
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; "
         "from kizuna.train.checkpointing import hold_run_lock; hold_run_lock(Path(sys.argv[1])); "
         "print('held', flush=True); time.sleep(60)", str(out)],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(HERE.parents[1] / "src")})
    try:
        assert holder.stdout.readline().strip() == "held"
        code = main(["train", "--data", "synthetic", "--out", str(out), "--resume", "latest"])
    finally:
        holder.kill()
        holder.wait()
    assert code == 2
    err = capsys.readouterr().err
    assert f"another kizuna run (pid {holder.pid}) is writing there" in err
    # once it is gone: the plain "no checkpoint"
    assert main(["train", "--data", "synthetic", "--out", str(out), "--resume", "latest"]) == 2
    assert "no checkpoint under" in capsys.readouterr().err


def _torchrun_train(tmp_path, out, *extra, limit_bytes=None):
    logs = tmp_path / f"logs-{out.name}"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--log-dir", str(logs),
           "--redirects", "3", "--standalone", "-m", "kizuna.apps.cli", "train", "--model", "ViT-mu-8",
           "--data", "synthetic", "--synthetic-length", "64", "--synthetic-image-size", "32", "--batch-size",
           "8", "--warmup-steps", "1", "--workers", "0", "--device", "cpu", "--progress", "false",
           "--out", str(out), *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE.parents[1] / "src")}

    def limit():
        if limit_bytes:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, resource.RLIM_INFINITY))

    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240, start_new_session=True,
                          preexec_fn=limit)
    return done, {p.parent.name: p.read_text() for p in logs.rglob("stderr.log")}


@pytest.mark.skipif(not hasattr(resource, "RLIMIT_FSIZE"), reason="needs a file-size limit (POSIX)")
def test_rank_zero_failing_to_write_stops_every_rank_in_one_line(tmp_path):
    # a checkpoint larger than the file-size limit: rank 0 alone writes it
    done, said = _torchrun_train(tmp_path, tmp_path / "full", "--steps", "2", "--save-every", "1",
                                 limit_bytes=200_000)
    assert done.returncode != 0 and set(said) == {"0", "1"}, said
    # rank 0's own error keeps its traceback (a failing disk is not a mistyped path); rank 1 says it in one line
    assert "writing the checkpoint" in said["0"] and "ulimit -f" in said["0"], said["0"][-3000:]
    assert "Traceback" not in said["1"] and "Connection closed" not in said["1"], said["1"][-3000:]
    assert "rank 0 refused the checkpoint of step 1 (writing it failed)" in said["1"], said["1"][-3000:]
    # a fresh run into a finished run's folder whose checkpoints.prev is a file: rank 0 fails to set them aside
    out = tmp_path / "prev"
    (out / "checkpoints" / "step_0000001").mkdir(parents=True)
    (out / "checkpoints.prev").write_text("not a folder")
    done, said = _torchrun_train(tmp_path, out, "--steps", "1")
    assert done.returncode != 0 and len(said) == 2, said
    for text in said.values():
        assert "Traceback" not in text and "Connection closed" not in text, text[-3000:]
    assert sum("rank 0 refused the run's folder" in text for text in said.values()) == 1, said


def test_train_without_an_evaluation_prints_an_empty_json_object(tmp_path, capsys):
    """stdout carries the final metrics as JSON (TRAINING.md): without an evaluation it carried nothing, and
    `kizuna train ... > final.json` wrote an empty file no JSON reader takes."""
    from PIL import Image

    rows = ["filepath,title"]
    for i in range(8):
        Image.new("RGB", (32, 32), (30 * i, 80, 200 - 20 * i)).save(tmp_path / f"{i}.png")
        rows.append(f"{i}.png,a photo of thing {i}")
    (tmp_path / "pairs.csv").write_text("\n".join(rows) + "\n")
    assert main(["train", "--model", "ViT-mu-8", "--data", str(tmp_path / "pairs.csv"), "--batch-size", "8",
                 "--steps", "1", "--warmup-steps", "0", "--workers", "0", "--progress", "false",
                 "--out", str(tmp_path / "run")]) == 0
    assert json.loads(capsys.readouterr().out) == {}
