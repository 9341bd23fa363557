"""Advice followed as written (session 50): each message's "what to do" must work on the command that printed it.
--allow-jit was advised on `kizuna train`, `vit finetune` and `eval suite`, which have none; the `kizuna vit`
commands sent retrieval data to `kizuna eval retrieval`, which sent the ViT back; the vocabulary refusal's
"--tokenizer train" ran into a second refusal; a finished budgeted run was told to raise --steps, which only
raised its cap."""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from kizuna.apps.cli import main


class _Box(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


@pytest.fixture(scope="module")
def torchscript_archive(tmp_path_factory) -> Path:
    """A TorchScript archive holding an OpenAI-layout state dict, as OpenAI's released ViT-B-32.pt does."""
    import kizuna
    from kizuna.models.convert_openai import kizuna_to_openai

    root = _Box()
    for name, tensor in kizuna_to_openai(kizuna.create_model("ViT-mu-8"), strict=False).items():
        *parents, leaf = name.split(".")
        module = root
        for part in parents:
            if not hasattr(module, part):
                module.add_module(part, _Box())
            module = getattr(module, part)
        module.register_buffer(leaf, tensor.clone())
    path = tmp_path_factory.mktemp("jit") / "ViT-B-32.pt"
    with warnings.catch_warnings():  # deprecated in favour of torch.export; OpenAI's .pt files are these
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(root), str(path))
    return path


def test_train_advises_converting_a_torchscript_archive(tmp_path, capsys, torchscript_archive):
    assert main(["train", "--model", str(torchscript_archive), "--data", "synthetic", "--steps", "1",
                 "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "--allow-jit" not in err and "kizuna train loads none" in err
    assert "give the folder ViT-B-32-kizuna instead" in err
    # the printed line, run in a shell as printed, makes that folder (a path with ": ", quotes and $ included)
    odd = tmp_path / "d: it's $x" / "ViT-B-32.pt"
    odd.parent.mkdir()
    odd.write_bytes(torchscript_archive.read_bytes())
    assert main(["train", "--model", str(odd), "--data", "synthetic", "--steps", "1",
                 "--out", str(tmp_path / "run")]) == 2
    line = capsys.readouterr().err.split("convert it once: ", 1)[1].split(", and give the folder", 1)[0]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")}
    subprocess.run(["bash", "-c", line.replace("python -c", f"{shlex.quote(sys.executable)} -c", 1)], cwd=tmp_path,
                   env=env, check=True, capture_output=True)
    assert (tmp_path / "ViT-B-32-kizuna" / "config.json").exists()


def test_an_eval_suite_advises_its_runs_allow_jit_key(tmp_path, capsys, torchscript_archive):
    from PIL import Image

    for name in ("a", "b"):
        (tmp_path / "imgs" / name).mkdir(parents=True)
        Image.new("RGB", (16, 16), (200, 10, 10)).save(tmp_path / "imgs" / name / "1.png")
    suite = tmp_path / "suite.json"
    suite.write_text(json.dumps({"runs": [{"model": str(torchscript_archive), "dataset": str(tmp_path / "imgs"),
                                           "task": "zeroshot"}]}))
    assert main(["eval", "suite", str(suite), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert 'set the run\'s "allow_jit": true and pass --allow-jit, only if you trust its source' in err


def test_a_command_with_allow_jit_keeps_the_flag_advice(tmp_path, capsys, torchscript_archive):
    (tmp_path / "t.txt").write_text("a cat\n")
    assert main(["embed", "--model", str(torchscript_archive), "--texts", str(tmp_path / "t.txt"),
                 "--out", str(tmp_path / "e.npy")]) == 2
    assert "(CLI: --allow-jit)" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["vit", "train", "--model", "mu/8", "--image-size", "32", "--data", "DATA", "--out", "OUT",
                                   "--steps", "1"],
                                  ["vit", "eval", "ViT", "--data", "DATA"]])
def test_vit_commands_do_not_send_caption_data_to_eval_retrieval(tmp_path, capsys, argv):
    import kizuna

    data = tmp_path / "captions"
    (data / "test").mkdir(parents=True)
    (data / "train").mkdir()
    (data / "dataset_type.txt").write_text("retrieval\n")
    kizuna.save_model(kizuna.create_vit("mu/8", image_size=32, num_classes=2), tmp_path / "vit")
    argv = [{"DATA": str(data), "OUT": str(tmp_path / "run"), "ViT": str(tmp_path / "vit")}.get(a, a) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "says 'retrieval', not 'classification'" in err
    assert "evaluate it with `kizuna eval retrieval`" not in err and "need images with class labels" in err


def test_the_vocabulary_advice_names_both_ways_whole(tmp_path, capsys):
    base = ["train", "--model", "ViT-mu-8", "--data", "synthetic", "--synthetic-image-size", "32", "--steps", "1",
            "--out", str(tmp_path / "run")]
    assert main([*base, "--model-overrides", '{"text": {"vocab_size": 1000}}']) == 2
    err = capsys.readouterr().err
    assert "--tokenizer train --tokenizer-vocab-size 1000 (and drop text.vocab_size from --model-overrides)" in err
    # followed as written: accepted
    assert main([*base, "--tokenizer", "train", "--tokenizer-vocab-size", "1000", "--print-config"]) == 0
    capsys.readouterr()
    # a tower smaller than any BPE kizuna learns (514): that way is not offered
    assert main([*base, "--model-overrides", '{"text": {"vocab_size": 300}}']) == 2
    err = capsys.readouterr().err
    assert "vocab_size >= 49408" in err and "--tokenizer train" not in err


@pytest.mark.parametrize("budget,advice", [(0.5, "Resume with a --time-budget-minutes other than its 0.5 (the time "
                                                  "for the rest)"),
                                            (0.0, "Resume with a larger --steps to extend it")])
def test_a_finished_run_is_told_how_to_extend_it(capsys, budget, advice):
    from types import SimpleNamespace

    from kizuna.train.trainer import resumed_at_the_end

    closed = []
    trainer = SimpleNamespace(resume_from="run/checkpoints/latest", step=25, total_steps=25,
                              dist=SimpleNamespace(is_main=True), cfg=SimpleNamespace(time_budget_minutes=budget),
                              logger=SimpleNamespace(close=lambda: closed.append(True)))
    assert resumed_at_the_end(trainer) and closed
    err = capsys.readouterr().err
    assert "the run is complete (25 of 25 steps)" in err and advice in err
    assert ("larger --steps" in err) == (budget == 0)
