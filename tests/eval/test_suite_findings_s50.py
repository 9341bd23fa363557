"""A suite file read as its docs describe it (session 50): an empty task list ran nothing and replaced the report;
"corruptions": [] ran all four; an "act" beside a preset's name, and a "defaults" typo (said of "run 0"), failed
late or in the wrong words; a .py suite could not import a module beside it; run_entry called "zeroshot" an unknown
task; the advice for caption data named a command, not the run's task key."""
from __future__ import annotations

import json

import pytest

from kizuna.apps.cli import main
from kizuna.eval.suite import normalise_suite, run_entry


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


def test_the_eval_commands_keep_their_own_words_and_probes_need_no_dataset(tmp_path, capsys, monkeypatch):
    """run_entry normalised its run as a suite file's, briefly: `eval probes` without --dataset (relation swap
    alone) was refused, and the single commands spoke of "the run: run 0" and lost their hints."""
    monkeypatch.chdir(tmp_path)
    assert main(["eval", "probes", "--model", "ViT-mu-8", "--relation-groups", "1", "--progress", "false"]) == 0
    capsys.readouterr()
    assert main(["eval", "zeroshot", "--model", "ViT-mu-8", "--dataset", "../shared/data/cifar10x"]) == 2
    err = capsys.readouterr().err
    assert "run 0" not in err and "KIZUNA_SHARED" in err
    assert main(["eval", "zeroshot", "--model", "ViT-mu-8", "--dataset", "x" * 300]) == 2  # not an OSError


def test_a_defaults_device_gives_way_to_the_command_lines(colours, tmp_path, monkeypatch):
    import kizuna.eval.suite as suite_mod

    seen = []
    monkeypatch.setattr(suite_mod, "run_entry", lambda r, ctx, **k: seen.append(ctx.model_args(r)[1]) or [])
    suite = {"defaults": {"device": "cuda:7"}, "runs": [_run(colours)]}
    suite_mod.run_suite(suite, device="cpu", progress=False, echo=None)
    assert seen == ["cpu"]


def test_compare_runs_table_keeps_rows_and_columns_for_any_label():
    from kizuna.analysis.runs import format_table as runs_table
    from kizuna.apps.common import display_width

    def run(label):
        return {"label": label, "final": 0.5, "best": 0.6, "best_step": 10, "final_train_top1": 0.7,
                "generalisation_gap": 0.1, "lower_is_better": False}

    text = runs_table({"metric": "val/acc", "runs": [run("日本語の実行"), run("run_a"), run("new\nline\trun"),
                                                       run("長" * 50)], "groups": []})
    lines = text.splitlines()
    assert len(lines) == 5 and "new\\nline\\trun" in lines[3]
    assert len({display_width(line) for line in lines}) == 1  # every row as wide: the numbers line up
