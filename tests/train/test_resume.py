"""A run killed with SIGKILL mid-epoch and resumed ends with exactly the parameters of a run that was
never interrupted (CPU, deterministic, with patch dropout and caption sampling in play)."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

SRC = Path(__file__).parents[2] / "src"
ARGS = ["--model", "ViT-mu-8", "--data", "synthetic", "--synthetic-image-size", "32", "--synthetic-length", "96",
        "--batch-size", "16", "--steps", "14", "--save-every", "3", "--warmup-steps", "2", "--lr", "1e-3",
        "--workers", "1", "--patch-dropout", "0.25", "--context-length", "24", "--threads", "1",
        "--eval-every", "0", "--eval-max-samples", "4", "--progress", "false", "--log-every", "1"]


def launch(out: Path, *extra) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "kizuna.apps.cli", "train", *ARGS, "--out", str(out), *extra],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def final_params(out: Path) -> dict:
    return load_file(out / "checkpoints" / "step_0000014" / "model.safetensors")


def test_sigkill_mid_epoch_then_resume_is_exact(tmp_path):
    ref = launch(tmp_path / "ref")
    assert ref.wait(timeout=300) == 0, ref.stdout.read()

    victim = launch(tmp_path / "killed")
    latest = tmp_path / "killed" / "checkpoints" / "latest"
    deadline = time.time() + 300
    while time.time() < deadline:  # kill right after the step-6 checkpoint, i.e. mid-epoch (6 steps/epoch)
        if latest.exists() and latest.read_text() >= "step_0000006":
            break
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert not (tmp_path / "killed" / "checkpoints" / "step_0000014").exists()

    resumed = launch(tmp_path / "killed", "--resume", "latest")
    log = resumed.stdout.read()
    assert resumed.wait(timeout=300) == 0, log
    assert "resumed from" in log
    a, b = final_params(tmp_path / "ref"), final_params(tmp_path / "killed")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    steps = [line for line in (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines() if '"train"' in line]
    assert len(steps) == 14  # the killed run's extra log lines were dropped on resume
