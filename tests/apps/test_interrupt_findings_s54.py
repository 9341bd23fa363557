"""SIGHUP (the terminal closed, an SSH session dropped) reaches the command's whole process group: it ended a
training run on the spot with nothing saved and no word, its loader workers' socket folders left in $TMPDIR. Now a
run stops after its step, saves, and exits 129, as SIGTERM stops it with 143 (stop 54's interrupt hunt)."""
import subprocess
import sys
from pathlib import Path

HANGUP_RUN = """
import os, signal, subprocess, sys
signal.signal(signal.SIGHUP, signal.SIG_DFL)  # as in a terminal's session (under nohup, as CI may run, it is ignored)
sys.path.insert(0, {tests!r})
from kizuna.apps.cli import main
from kizuna.train.contrastive import ContrastiveTrainer as T

fit, steps = T.fit_batch, []

def fit_and_hang_up(self, batch):
    steps.append(1)
    if len(steps) == 2:  # the terminal closes: SIGHUP to the foreground group (this process and its worker)
        code = f"import os, signal; os.killpg({{os.getpgid(0)}}, signal.SIGHUP)"
        subprocess.run([sys.executable, "-c", code], start_new_session=True, check=True)
    return fit(self, batch)

T.fit_batch = fit_and_hang_up
sys.exit(main(["train", "--model", "ViT-mu-8", "--data", "synthetic", "--synthetic-image-size", "32",
               "--synthetic-length", "256", "--batch-size", "16", "--steps", "50", "--workers", "1",
               "--warmup-steps", "2", "--threads", "1", "--no-progress", "--out", {out!r}]))
"""


def test_a_hang_up_stops_a_training_run_after_its_step_and_saves(tmp_path):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    code = HANGUP_RUN.format(tests=str(Path(__file__).parents[1] / "train"), out=str(tmp_path / "run"))
    done = subprocess.run([sys.executable, "-c", code], start_new_session=True, capture_output=True, text=True,
                          timeout=300, env={**__import__("os").environ, "TMPDIR": str(tmp)})
    assert done.returncode == 129, done.stderr[-2000:]
    assert "SIGHUP: stopping after this step" in done.stderr and "Traceback" not in done.stderr
    assert "kizuna train: hung up (SIGHUP: the terminal closed)" in done.stderr
    assert (tmp_path / "run" / "checkpoints" / "step_0000002" / "train_state.pt").is_file()
    assert not list(tmp.glob("pymp-*"))  # (the workers' resource-sharer folders, left by a SIGHUP death)


HANGUP_EVAL = """
import os, signal, sys
signal.signal(signal.SIGHUP, signal.SIG_DFL)
from kizuna.apps.cli import main
import kizuna.data.images as I

real = I.load_image

def hang_up_then_go_on(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGHUP)
    return real(*args, **kwargs)

I.load_image = hang_up_then_go_on
sys.exit(main(["zeroshot", "--model", "ViT-mu-8", "--labels", "cat,dog", "--image", {image!r}]))
"""


def test_a_hang_up_ends_another_command_in_one_line(tmp_path):
    from PIL import Image

    Image.new("RGB", (32, 32), "red").save(tmp_path / "x.png")
    done = subprocess.run([sys.executable, "-c", HANGUP_EVAL.format(image=str(tmp_path / "x.png"))],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 129, done.stderr[-2000:]
    assert done.stderr.strip().splitlines()[-1] == "kizuna zeroshot: hung up (SIGHUP: the terminal closed)"


def test_the_console_script_ignores_ctrl_c_once_the_command_is_done(monkeypatch):
    """Torch's finalizers take 1-2 s after the last line: a Ctrl-C there printed a traceback or ended a finished
    command with status -2. main() itself leaves the caller's Ctrl-C alone (a notebook keeps it)."""
    import signal

    from kizuna.apps import cli

    before = signal.getsignal(signal.SIGINT)
    try:
        monkeypatch.setattr(sys, "argv", ["kizuna", "info", "ViT-mu-8"])
        assert cli.console_main() == 0
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        signal.signal(signal.SIGINT, before)
        assert cli.main(["info", "ViT-mu-8"]) == 0 and signal.getsignal(signal.SIGINT) is before
    finally:
        signal.signal(signal.SIGINT, before)
    import importlib.metadata

    (script,) = [e for e in importlib.metadata.entry_points(group="console_scripts") if e.name == "kizuna"]
    assert script.value == "kizuna.apps.cli:console_main"


def test_an_ignored_hang_up_stays_ignored(tmp_path):
    """Under nohup (SIGHUP ignored) a command goes on, as nohup promises: the handler is taken only from the default."""
    from PIL import Image

    Image.new("RGB", (32, 32), "red").save(tmp_path / "x.png")
    code = HANGUP_EVAL.format(image=str(tmp_path / "x.png")).replace("signal.SIG_DFL)", "signal.SIG_IGN)", 1)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "hung up" not in done.stderr, done.stderr[-2000:]
