"""Paths and streams around a command: an --out inside the data it reads, a folder named like a preset, an
empty or stale RANK, a closed stderr, a reader that leaves the pipe early."""
from __future__ import annotations

import errno
import io
import json
import sys
from pathlib import Path

import pytest

from kizuna.apps.cli import main

TINY_VIT = ["--model", "Ti/16", "--model-overrides", '{"width": 32, "depth": 1, "heads": 2, "mlp_dim": 64}',
            "--image-size", "32", "--batch-size", "2", "--steps", "1", "--warmup-steps", "1", "--workers", "0",
            "--threads", "1", "--progress", "false"]


def _image_folder(root: Path, per_class: int = 2) -> Path:
    from PIL import Image

    for c, colour in (("cat", (200, 40, 40)), ("dog", (40, 40, 200))):
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", (32, 32), tuple(min(255, v + 20 * i) for v in colour)).save(root / c / f"{i}.jpg")
    return root


# --- an --out equal to or inside a folder given as data ---------------------------------------------------------

def _commands(data: Path, out: Path) -> dict[str, list[str]]:
    d, o = str(data), str(out)
    return {
        "eval zeroshot": ["eval", "zeroshot", "--model", "ViT-mu-8", "--dataset", d, "--out", o],
        "vit eval": ["vit", "eval", str(data.parent / "no-model"), "--data", d, "--out", o],
        "analyze": ["analyze", "attention-distance", "ViT-mu-8", "--images", str(data / "cat" / "0.jpg"), d,
                    "--out", o],
        "vit train": ["vit", "train", *TINY_VIT, "--data", d, "--out", o],
        "vit finetune": ["vit", "finetune", "ViT-mu-8", *TINY_VIT[4:], "--data", str(data.parent / "other"),
                         "--val-data", d, "--out", o],
        "train": ["train", "--model", "ViT-mu-8", "--data", d, "--out", o, "--steps", "1", "--workers", "0"],
    }


FLAGS = {"eval zeroshot": "--dataset", "vit eval": "--data", "analyze": "--images", "vit train": "--data",
         "vit finetune": "--val-data", "train": "--data"}


@pytest.mark.parametrize("inside", [True, False], ids=["inside", "equal"])
@pytest.mark.parametrize("command", list(FLAGS))
def test_an_out_in_a_data_folder_is_refused_before_the_work(tmp_path, capsys, command, inside):
    """`eval zeroshot --dataset d --out d/ev` found a class "ev" (its own confusion PNG) the second time, `analyze
    --images d --out d/fig` measured its figure, `vit train --data d --out d` resumed with model/, checkpoints/
    and tensorboard/ as classes."""
    data = _image_folder(tmp_path / "imf")
    _image_folder(tmp_path / "other")
    out = data / "ev" if inside else data
    assert main(_commands(data, out)[command]) == 2
    err = capsys.readouterr().err
    assert f"--out {out} is {'inside ' if inside else ''}{FLAGS[command]} {data}" in err, err
    assert "read back as data" in err and "choose another --out" in err
    assert not (data / "ev").exists() and sorted(p.name for p in data.iterdir()) == ["cat", "dog"]


def test_the_overlap_is_found_through_symlinks_and_dots_and_a_trainer_resume_config(tmp_path):
    from kizuna.apps.common import check_out_outside_data
    from kizuna.train.supervised import make_supervised_config

    data = _image_folder(tmp_path / "imf")
    (tmp_path / "link").symlink_to(data)
    with pytest.raises(ValueError, match="is inside --data"):
        check_out_outside_data(str(tmp_path / "link" / "run"), "--data", str(data))
    with pytest.raises(ValueError, match="itself"):
        check_out_outside_data(f"{tmp_path}/x/../imf/", "--data", str(tmp_path / "link"))
    with pytest.raises(ValueError, match="is inside --images"):  # one folder among several --images
        check_out_outside_data(str(data / "fig"), "--images", [str(data / "cat" / "0.jpg"), str(data)])
    with pytest.raises(ValueError, match="is inside --data"):  # the trainers' config, whatever built it
        make_supervised_config(data=str(data), out=str(data / "run"))


def test_an_out_that_holds_the_data_or_sits_beside_it_is_fine(tmp_path):
    from kizuna.apps.common import check_out_outside_data

    data = _image_folder(tmp_path / "run" / "imf")
    check_out_outside_data(str(tmp_path / "run"), "--data", str(data))  # the data inside --out
    check_out_outside_data(str(tmp_path / "imf2"), "--data", str(data.parent))  # a sibling sharing a prefix
    check_out_outside_data(str(tmp_path / "imf-out"), "--data", str(data))
    (data / "pairs.csv").write_text("filepath,title\n")
    check_out_outside_data(str(data / "ev"), "--dataset", str(data / "pairs.csv"))  # a file reads what it names
    check_out_outside_data(str(data / "ev"), "--data", str(data / "{000000..000001}.tar"))  # a shard spec too
    check_out_outside_data(str(data / "ev"), "--data", "synthetic")
    check_out_outside_data(None, "--dataset", str(data))


# --- a folder that shadows a preset name ------------------------------------------------------------------------

def test_a_folder_named_like_a_preset_keeps_the_random_weights_note(tmp_path, capsys, monkeypatch):
    """`eval zeroshot --model ViT-mu-8 --out ViT-mu-8` a second time built the preset (create_model: a folder
    without a model only shadows its name) but dropped the note, as the folder existed."""
    import kizuna
    from kizuna.apps.common import checked_clip_model

    monkeypatch.chdir(tmp_path)
    model = kizuna.create_model("ViT-mu-8")
    (tmp_path / "ViT-mu-8").mkdir()
    (tmp_path / "ViT-mu-8" / "results.json").write_text("{}")  # the first run's --out
    checked_clip_model(model, "ViT-mu-8")
    assert "note: ViT-mu-8 is a preset name: its weights are random" in capsys.readouterr().err
    (tmp_path / "mine").mkdir()  # a checkpoint folder (create_model loads it): no note
    checked_clip_model(model, "mine")
    assert "note" not in capsys.readouterr().err


# --- RANK empty, or stale outside torchrun ---------------------------------------------------------------------

@pytest.mark.parametrize("rank", ["", "1"], ids=["empty", "stale"])
@pytest.mark.parametrize("trainer", ["vit", "clip"])
def test_the_summary_is_printed_whatever_rank_says_outside_torchrun(tmp_path, capsys, monkeypatch, rank, trainer):
    """`RANK= kizuna vit train` trained, then failed with "invalid literal for int() with base 10: ''"; a stale
    RANK=1 (no torchrun, no WORLD_SIZE) dropped the final summary. The trainers read both as one process."""
    from kizuna.train import contrastive, supervised

    monkeypatch.setenv("RANK", rank)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    done = {"val_top1": 0.5}
    if trainer == "vit":  # the run itself is not what is tested: its summary is
        monkeypatch.setattr(supervised, "train_supervised", lambda cfg, named: done)
        argv = ["vit", "train", *TINY_VIT, "--data", str(_image_folder(tmp_path / "imf")),
                "--out", str(tmp_path / "run")]
    else:
        monkeypatch.setattr(contrastive, "train", lambda cfg, named: done)
        argv = ["train", "--model", "ViT-mu-8", "--out", str(tmp_path / "run"), "--steps", "1", "--workers", "0"]
    assert main(argv) == 0
    printed = capsys.readouterr()
    assert json.loads(printed.out) == done and f"{tmp_path / 'run'}/" in printed.err


# --- stderr closed, a reader that leaves early ------------------------------------------------------------------

def _zeroshot(tmp_path, *extra):
    return ["eval", "zeroshot", "--model", "ViT-mu-8", "--dataset", str(_image_folder(tmp_path / "imf")),
            "--out", str(tmp_path / "ev"), "--threads", "1", *extra]


def test_a_closed_stderr_does_not_stop_the_progress_bar(tmp_path, monkeypatch):
    """`kizuna eval zeroshot ... 2>&-`: tqdm's bar failed with "'NoneType' object has no attribute 'write'"."""
    monkeypatch.setattr(sys, "stderr", None)  # what Python makes of a closed descriptor 2
    # a bar asked for: by default there is none where stderr is no terminal (a closed one is none)
    assert main(_zeroshot(tmp_path, "--progress", "true")) == 0
    assert (tmp_path / "ev" / "results.json").is_file()
    assert sys.stderr is None  # as it was


class _Pipe(io.StringIO):
    """A pipe whose reader leaves after ``lines`` lines (`| head -N`)."""

    def __init__(self, lines: int):
        super().__init__()
        self.lines, self.writes_after = lines, 0

    def write(self, text):
        if self.getvalue().count("\n") >= self.lines:
            self.writes_after += 1
            raise BrokenPipeError(errno.EPIPE, "Broken pipe")
        return super().write(text)

    def fileno(self):
        raise io.UnsupportedOperation("fileno")


def test_a_reader_leaving_stdout_early_lets_the_evaluation_write_its_files(tmp_path, monkeypatch):
    """`kizuna eval zeroshot --out X | head -1` stopped at the second line: X was never written."""
    pipe = _Pipe(1)
    monkeypatch.setattr(sys, "stdout", pipe)
    assert main(_zeroshot(tmp_path, "--progress", "false")) == 141  # the output was cut, as a shell would say
    assert (tmp_path / "ev" / "results.json").is_file() and pipe.writes_after == 1  # then nothing more
    assert sys.stdout is pipe


def test_a_reader_leaving_stderr_early_lets_the_training_save_its_checkpoint(tmp_path, monkeypatch):
    """`kizuna train ... 2>&1 | head -2` stopped the run at the next log line, with no checkpoint."""
    monkeypatch.setattr(sys, "stderr", _Pipe(1))
    out = tmp_path / "run"
    argv = ["train", "--model", "ViT-mu-8", "--synthetic-image-size", "32", "--synthetic-length", "32",
            "--batch-size", "8", "--steps", "2", "--warmup-steps", "1", "--context-length", "16", "--workers", "0",
            "--threads", "1", "--precision", "fp32", "--progress", "false", "--log-every", "1", "--out", str(out)]
    assert main(argv) == 141
    assert (out / "checkpoints" / "latest").exists()
    assert len([line for line in (out / "metrics.jsonl").read_text().splitlines() if '"train"' in line]) == 2


def test_an_error_after_the_reader_left_keeps_its_own_status(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "stdout", _Pipe(0))
    assert main(["eval", "zeroshot", "--model", "ViT-mu-8", "--dataset", str(tmp_path / "nowhere")]) == 2


def test_main_called_from_two_threads_leaves_the_process_as_it_was(monkeypatch):
    """Each main() swaps sys.stdout/stderr and warnings.showwarning and puts them back: two at once in one program
    put back each other's (the host's later warnings read "kizuna ...: warning:"). One call at a time now."""
    import threading
    import time
    import warnings

    from kizuna.apps import cli

    def slow_command(argv):
        time.sleep(0.3)
        return 0

    monkeypatch.setattr(cli, "_main", slow_command)
    streams, show = (sys.stdout, sys.stderr), warnings.showwarning
    first = threading.Thread(target=cli.main, args=(["info"],))
    second = threading.Thread(target=cli.main, args=(["info"],))
    first.start()
    time.sleep(0.1)  # the second starts while the first runs
    second.start()
    first.join()
    second.join()
    assert (sys.stdout, sys.stderr) == streams and warnings.showwarning is show


def test_a_preset_gives_the_same_numbers_every_run_and_leaves_the_callers_rng(tmp_path, capsys):
    """A preset's random weights were drawn from the global RNG: two `kizuna zeroshot --model ViT-mu-8` runs printed
    different probabilities. They are seeded now, without touching the caller's RNG."""
    import torch
    from PIL import Image

    from kizuna.apps.cli import main

    Image.new("RGB", (32, 32), (200, 30, 30)).save(tmp_path / "red.png")
    argv = ["zeroshot", "--model", "ViT-mu-8", "--image", str(tmp_path / "red.png"), "--labels", "red,green,blue"]
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    assert main(argv) == 0
    first = capsys.readouterr().out
    assert torch.equal(torch.rand(3), expected)  # the caller's stream went on as if nothing had drawn from it
    assert main(argv) == 0
    assert capsys.readouterr().out == first
