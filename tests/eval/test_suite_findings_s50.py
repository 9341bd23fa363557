"""A suite file read as its docs describe it (session 50): an empty task list ran nothing and replaced the report;
"corruptions": [] ran all four; an "act" beside a preset's name, and a "defaults" typo (said of "run 0"), failed
late or in the wrong words; a .py suite could not import a module beside it; run_entry called "zeroshot" an unknown
task; the advice for caption data named a command, not the run's task key."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from kizuna.apps.cli import main
from kizuna.eval.suite import normalise_suite, run_entry


@pytest.fixture()
def colours(tmp_path) -> Path:
    root = tmp_path / "colours" / "test"
    for k, name in enumerate(("red", "blue")):
        (root / name).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (16, 16), (200 * (1 - k), 30 * i, 200 * k)).save(root / name / f"{i}.png")
    return tmp_path / "colours"


def _run(colours, **keys) -> dict:
    return {"model": "ViT-mu-8", "dataset": str(colours), "task": "zeroshot", **keys}


@pytest.mark.parametrize("keys,message", [({"task": []}, "'task' is an empty list"),
                                          ({"task": "robustness", "corruptions": []}, "corruptions names no corruption"),
                                          ({"task": "robustness", "corruptions": ""}, "corruptions names no corruption"),
                                          ({"act": "gelu"}, '"act" names the activation of an OpenAI-layout')])
def test_runs_that_would_do_nothing_or_another_thing_are_refused_up_front(colours, keys, message):
    with pytest.raises(ValueError, match=message):
        normalise_suite([_run(colours), _run(colours, **keys)], "s.json")


def test_an_earlier_report_is_kept_when_a_run_names_no_task(colours, tmp_path, capsys):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "results.json").write_text("[1]")
    suite = tmp_path / "s.json"
    suite.write_text(json.dumps({"runs": [_run(colours, task=[])]}))
    assert main(["eval", "suite", str(suite), "--out", str(tmp_path / "out")]) == 2
    assert (tmp_path / "out" / "results.json").read_text() == "[1]"


@pytest.mark.parametrize("defaults,message", [({"batchsize": 8}, r"s.json: defaults: unknown key\(s\) 'batchsize'"),
                                              ({"max_samples": 2.5}, "s.json: defaults: max_samples must be")])
def test_a_defaults_mistake_is_named_as_defaults(colours, defaults, message):
    with pytest.raises(ValueError, match=message):
        normalise_suite({"defaults": defaults, "runs": [_run(colours)]}, "s.json")


def test_a_py_suite_imports_a_module_beside_it(colours, tmp_path, capsys):
    folder = tmp_path / "suites"
    folder.mkdir()
    (folder / "common_runs_s50.py").write_text(f"RUNS = [{_run(colours, max_samples=4)!r}]\n")
    (folder / "suite.py").write_text("from common_runs_s50 import RUNS\n\ndef suite():\n    return RUNS\n")
    assert main(["eval", "suite", str(folder / "suite.py")]) == 0
    import sys

    assert "common_runs_s50" not in sys.modules  # gone again, as a config's are


def test_run_entry_takes_aliases_and_one_task(colours):
    records = run_entry(_run(colours, task="zeroshot", max_samples=4), echo=None, progress=False)
    assert [r["task"] for r in records] == ["zeroshot_classification"]


def test_a_relative_path_not_found_says_where_it_was_looked_for(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"read from the current folder, .*, not the suite file's"):
        normalise_suite([{"model": "ViT-mu-8", "dataset": "data/cifar", "task": "zeroshot"}], "s.json")


def test_caption_data_under_a_classification_task_advises_the_task_key(tmp_path, capsys):
    data = tmp_path / "captions"
    (data / "test").mkdir(parents=True)
    (data / "dataset_type.txt").write_text("retrieval\n")
    suite = tmp_path / "s.json"
    suite.write_text(json.dumps({"runs": [{"model": "ViT-mu-8", "dataset": str(data), "task": "zeroshot"}]}))
    assert main(["eval", "suite", str(suite)]) == 2
    err = capsys.readouterr().err
    assert 'give the run "task": "retrieval"' in err and "kizuna eval retrieval" not in err
