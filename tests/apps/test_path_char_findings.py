"""Paths and names with characters that mean something to a shell or to matplotlib: "~" where no shell expands
it, "$" in a run's or model's name, a run given as ".", an --out with spaces in a pasted hint."""
from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from kizuna.apps.cli import build_parser
from kizuna.apps.common import home_path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "analysis"))


@pytest.fixture
def home(tmp_path, monkeypatch):
    folder = tmp_path / "home"
    folder.mkdir()
    monkeypatch.setenv("HOME", str(folder))
    return folder


def test_a_tilde_no_shell_expanded_is_the_home_folder_for_every_flag(home, tmp_path, monkeypatch):
    """--out=~/run (bash expands no "~" after "="; nor in quotes) made a folder named "~" in the working folder,
    while --data=~/... in the same command was expanded; --model=~/... and --resume=~/... failed."""
    from kizuna.apps.cli import _expand_home

    args = build_parser().parse_args(["train", "--out=~/run", "--resume=~/run/checkpoints/latest", "--data=~/d"])
    _expand_home(args)
    assert (args.out, args.resume, args.data) == (f"{home}/run", f"{home}/run/checkpoints/latest", f"{home}/d")
    args = build_parser().parse_args(["eval", "zeroshot", "--model=~/m", "--dataset", "~/c", "--out", "~"])
    _expand_home(args)
    assert (args.model, args.dataset, args.out) == (f"{home}/m", f"{home}/c", str(home))
    assert home_path("~cat") == "~cat" and home_path(["~/a", "b"]) == [f"{home}/a", "b"]  # not a path: as it is


def test_a_config_files_tilde_is_the_home_folder(home, tmp_path):
    from kizuna.train.config import load_config_file

    path = tmp_path / "c.py"
    path.write_text('def get_config():\n    return {"out": "~/runs/a", "data": "synthetic", "steps": 1}\n')
    from kizuna.train.config import TrainConfig

    assert load_config_file(str(path), TrainConfig)["out"] == f"{home}/runs/a"


def test_a_suites_model_under_the_home_folder_is_the_one_it_checked(home):
    """The suite's check expanded "~" and found the model; the run then failed on the path as written."""
    from kizuna.eval.suite import normalise_suite

    (home / "m").mkdir()
    suite = normalise_suite({"runs": [{"model": "~/m", "task": "relation_swap"}]})
    assert suite["runs"][0]["model"] == f"{home}/m"


def test_dollar_signs_in_names_are_drawn_as_dollars_and_a_log_axis_keeps_its_powers(tmp_path):
    """"$MODEL_$SEED" (two shell variables left unexpanded) was read as mathtext: a parse error after the
    evaluation, and neither results.json nor the figure was written."""
    from matplotlib.figure import Figure

    from kizuna.eval.classification import plot_confusion
    from kizuna.models.checkpoint import save_figure

    path = plot_confusion(np.eye(2, dtype=np.int64) * 3, ["$a$b", "c"], tmp_path / "cm.png", title="$MODEL_$SEED")
    assert path.is_file()
    fig = Figure()
    ax = fig.add_subplot()
    ax.plot([1, 2, 4, 8], [1, 2, 3, 4], label="v$LR_$WD")
    ax.set_xscale("log", base=2)
    ax.set_yticks([1, 2], ["$x$y", "c"])
    ax.set_title("$MODEL_$SEED")
    ax.legend()
    save_figure(fig, tmp_path / "f.png")
    assert ax.get_title() == r"\$MODEL_\$SEED" and ax.get_legend().get_texts()[0].get_text() == r"v\$LR_\$WD"
    assert [t.get_text() for t in ax.get_yticklabels()] == [r"\$x\$y", "c"]
    assert all("mathdefault" in t.get_text() for t in ax.get_xticklabels() if t.get_text())  # 2^k, as maths


def test_a_run_given_as_dot_is_named_after_its_folder(tmp_path, monkeypatch):
    """compare-runs . other: the run's label (table, legend, runs.json) was empty."""
    from test_runs import _write_run

    from kizuna.analysis.runs import compare_runs

    run = _write_run(tmp_path / "plain", [(50, 0.3), (100, 0.4)], [(50, 0.2), (100, 0.5)])
    _write_run(tmp_path / "other", [(50, 0.2), (100, 0.3)], [(50, 0.2), (100, 0.4)])
    monkeypatch.chdir(run)
    compare_runs([".", "../other"], tmp_path / "cmp")
    labels = [r["label"] for r in json.loads((tmp_path / "cmp" / "runs.json").read_text())["runs"]]
    assert labels == ["plain", "other"]


def test_the_hint_after_a_stop_pastes_into_a_shell(tmp_path, capsys):
    """"continue with --out my run (v2) --resume latest" was a syntax error pasted into bash, and --out 'runs/sp '
    resumed runs/sp."""
    from kizuna.train.trainer import stop_and_save

    out = tmp_path / "my run (v2) "
    trainer = SimpleNamespace(resume_command=None, cfg=SimpleNamespace(out=str(out)), step=7,
                              ckpt=SimpleNamespace(dir=out / "checkpoints"), logger=SimpleNamespace(close=lambda: None))
    with pytest.raises(KeyboardInterrupt):
        stop_and_save(trainer, saved=True)
    hint = capsys.readouterr().err.split("continue with ", 1)[1].strip()
    assert shlex.split(hint) == ["--out", str(out), "--resume", "latest"]
    assert os.fspath(out).endswith(" ")
