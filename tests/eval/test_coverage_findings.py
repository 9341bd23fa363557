"""Code no test ran (found by running the suite under coverage and driving each untested line)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from _evalhelpers import image_folder
import torch

import kizuna.eval.suite as suite_mod
from kizuna.eval.suite import check_run_values, normalise_suite, run_suite


def _image_folder(root, classes=("cat", "dog"), per_class=2):
    return image_folder(root, per_class=per_class, classes=classes)


def test_a_task_named_twice_runs_once(tmp_path, monkeypatch):
    """["probes", "probes"] ran all three probes, then died in the "no cover" branch as "unknown task 'probes'"
    with the run's records lost; ["zeroshot", "classification"] evaluated (and wrote) everything twice."""
    tree = _image_folder(tmp_path / "tree")
    suite = normalise_suite([{"model": "ViT-mu-8", "dataset": str(tree),
                              "task": ["robustness", "probes", "zeroshot", "classification", "probes"]}])
    assert suite["runs"][0]["task"] == ["robustness", "probes", "zeroshot_classification"]
    import kizuna.eval.probes as probes

    ran = []

    class Result:
        n, skipped, metrics = 4, None, {"acc1": 0.5}

        def table(self):
            return ""

        def to_dict(self):
            return {"metrics": self.metrics}

    def fake(name, result):
        return lambda *a, **k: ran.append(name) or result

    monkeypatch.setattr(probes, "evaluate_robustness", fake("robustness", Result()))
    monkeypatch.setattr(probes, "typographic_attack", fake("typographic", Result()))
    monkeypatch.setattr(probes, "relation_swap_probe", fake("relation_swap", {
        "groups": 2, "text_score": 0.5, "image_score": 0.5, "group_score": 0.5}))
    records = suite_mod.run_entry({"model": "ViT-mu-8", "dataset": str(tree),
                                   "task": ["probes", "probes", "robustness"]}, progress=False, echo=None)
    assert ran == ["robustness", "typographic", "relation_swap"]
    assert [r["task"] for r in records] == ran


def test_a_suites_counts_are_whole_numbers(tmp_path):
    """"few_shot": [2.5, 4.9] ran as [2, 4] (int() of them) and [true, 2] as [1, 2]; the command line refuses them."""
    for value in ([2.5, 4.9], [True, 2]):
        with pytest.raises(ValueError, match="few_shot and severities take integers .* is not a whole number"):
            check_run_values({"few_shot": value}, "s.json: run 0")
    r = {"few_shot": [2.0, "4"], "severities": "1,3"}
    check_run_values(r, "s.json: run 0")
    assert r == {"few_shot": [2, 4], "severities": [1, 3]}


def test_a_suites_classnames_and_templates_files_are_checked_before_any_run(tmp_path, monkeypatch):
    """A typo failed only when its run came up, after the runs before it."""
    tree = _image_folder(tmp_path / "tree")
    monkeypatch.setattr(suite_mod, "run_entry", lambda *a, **k: pytest.fail("a run started"))
    good = {"model": "ViT-mu-8", "dataset": str(tree), "task": "zeroshot"}
    for key in ("classnames", "templates"):
        with pytest.raises(FileNotFoundError, match=f"run 1: {key} file not found: nosuch.txt"):
            run_suite([good, {**good, key: "nosuch.txt"}], progress=False, echo=None)
    normalise_suite([{**good, "templates": "a photo of a {c}."}])  # one template, not a file


def test_the_command_lines_device_replaces_the_suite_files(tmp_path, monkeypatch):
    """A file's "device": "cuda" won over --device cpu, and on a machine without a GPU the error advised the
    --device cpu just given (under torchrun every rank went to cuda:0)."""
    tree = _image_folder(tmp_path / "tree")
    seen = []
    monkeypatch.setattr(suite_mod, "run_entry", lambda r, ctx, **k: seen.append(ctx.model_args(r)[1]) or [])
    suite = {"defaults": {"device": "cuda:7"}, "runs": [{"model": "ViT-mu-8", "dataset": str(tree),
                                                         "task": "zeroshot", "device": "cuda:3"}]}
    f = tmp_path / "s.json"
    f.write_text(json.dumps(suite))
    run_suite(f, device="cpu", progress=False, echo=None)
    run_suite(suite, device="cpu", progress=False, echo=None)
    assert seen == ["cpu", "cpu"]
    if not torch.cuda.is_available():
        # without --device the file's is checked: its defaults' first (named as defaults, session 50)
        with pytest.raises(ValueError, match="defaults: device 'cuda:7'"):
            run_suite(f, progress=False, echo=None)


def test_a_cut_per_class_table_says_so():
    """More than 60 classes: the printed table (and vit eval's results.md) was the 60 lowest-recall rows,
    re-sorted, with nothing saying so."""
    from kizuna.eval.classification import classify_scores

    n = 62
    labels = np.arange(n)
    scores = torch.eye(n)[[(i + 1) % n for i in range(n)]]  # every image wrong...
    scores[9] = torch.eye(n)[9]  # ...but class 9's
    res = classify_scores(scores, labels, [f"c{i:02d}" for i in range(n)])
    table = res.table()
    assert "(60 of 62 classes shown, lowest recall first; every class is in the results JSON's per_class)" in table
    assert not any(line.startswith("c09 ") for line in table.splitlines())  # the one class right: cut
    assert "classes shown" not in classify_scores(scores[:5, :5], labels[:5], list("abcde")).table()


def test_a_csv_datasets_missing_classnames_file_names_the_file(tmp_path):
    """A CSV of class names with --classnames missing.txt said "[Errno 2] No such file or directory"."""
    from kizuna.eval.datasets import DatasetError, load_dataset

    _image_folder(tmp_path / "imgs", per_class=1)
    (tmp_path / "d.csv").write_text("filepath,label\nimgs/cat/0.png,cat\nimgs/dog/0.png,dog\n")
    with pytest.raises(DatasetError, match="class names file .*missing.txt not found"):
        load_dataset(str(tmp_path / "d.csv"), classnames=str(tmp_path / "missing.txt"))
    with pytest.raises(DatasetError, match="is a folder"):
        load_dataset(str(tmp_path / "d.csv"), classnames=str(tmp_path / "imgs"))
    with pytest.raises(DatasetError, match=r"no image column 'path'.*\(name yours with --image-column\)"):
        load_dataset(str(tmp_path / "d.csv"), image_column="path")


def test_compare_runs_names_a_damaged_train_state(tmp_path):
    """An empty train_state.pt was "cannot be read as a kizuna training state ()", junk a bare KeyError's number."""
    from kizuna.analysis.runs import _train_config

    step = tmp_path / "run" / "checkpoints" / "step_0000010"
    step.mkdir(parents=True)
    (step.parent / "latest").write_text("step_0000010")
    (step / "train_state.pt").write_bytes(b"")
    with pytest.raises(ValueError, match=r"train_state.pt: cannot be read \(the file is empty \(0 bytes\)\)"):
        _train_config(tmp_path / "run")
    (step / "train_state.pt").write_bytes(b"junk")
    with pytest.raises(ValueError, match=r"train_state.pt: cannot be read \(not a torch zip archive"):
        _train_config(tmp_path / "run")


def test_a_grid_side_below_one_is_refused():
    from kizuna.analysis.attention import cls_rollout_map
    from kizuna.analysis.position import position_similarity

    with pytest.raises(ValueError, match=r"grid must be positive, got \(-2, -2\)"):
        position_similarity(torch.randn(4, 8), -2)
    with pytest.raises(ValueError, match="grid must be positive"):
        cls_rollout_map(torch.eye(5)[None], -2)


def test_a_python_suite_takes_a_torch_device_and_any_name(tmp_path, monkeypatch):
    """run_suite(device=torch.device("cpu")) and a run's "name": 3 ran before the type checks refused them (review)."""
    tree = _image_folder(tmp_path / "tree")
    seen = []
    monkeypatch.setattr(suite_mod, "run_entry", lambda r, ctx, **k: seen.append((ctx.model_args(r)[1], r["name"])) or [])
    run = {"model": "ViT-mu-8", "dataset": str(tree), "task": "zeroshot", "name": 3}
    run_suite([run], device=torch.device("cpu"), progress=False, echo=None)
    run_suite([{**run, "device": torch.device("cpu")}], progress=False, echo=None)
    assert seen == [("cpu", 3), ("cpu", 3)]
