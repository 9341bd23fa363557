"""Round-6 mutation findings for the code changed in kizuna.eval, kizuna.apps and kizuna.analysis since round 5:
the suite's up-front dataset checks, its --device in place of the file's, the plots an earlier results.json
listed, the CLI's flag hints, --out through links, --labels' minimum, a templates JSON's checks and --images
checked before the model loads. Each test checks what a user sees (a refusal naming the run or flag, the files
on disk, a resolved setting) against a value written out by hand."""
from __future__ import annotations

import json

import pytest
import torch
from _evalhelpers import image_folder
from PIL import Image

import kizuna.eval.suite as suite_mod
from kizuna.apps.cli import main


def _image_folder(root, classes=("cat", "dog"), per_class=2):
    return image_folder(root, per_class=per_class, classes=classes)


def _split_dataset(root, classes=("cat", "dog"), per_class=2):
    for split in ("train", "test"):
        _image_folder(root / split, classes, per_class)
    return root


def _no_model(*a, **k):
    raise AssertionError("the model was loaded before the data was checked")


def _no_run(*a, **k):
    raise AssertionError("a run started before every run's data was checked")


# ------------------------------------------------------------------------------------ suite.py
def test_a_suite_files_device_auto_is_this_machines_device():
    """A file's "device": "auto" is the GPU where there is one, else the CPU. Kills check_run_values checking
    device_name("auto") but leaving "auto" in the run (torch.device("auto") failed when the run came up)."""
    r = {"device": "auto"}
    suite_mod.check_run_values(r, "s.json: run 0")
    assert r["device"] == ("cuda" if torch.cuda.is_available() else "cpu")


def test_the_typographic_attack_on_one_class_is_refused_before_the_model_loads(tmp_path, monkeypatch):
    """A one-class dataset: nothing wrong to write on its images. Kills the check's `< 2` turned `< 1` (the model
    loaded and the attack ran)."""
    root = _image_folder(tmp_path / "one", classes=("cat",))
    monkeypatch.setattr(suite_mod._Context, "model", _no_model)
    with pytest.raises(ValueError, match="typographic attack needs at least two classes.* has 1"):
        suite_mod.run_entry({"model": "ViT-mu-8", "dataset": str(root), "task": ["typographic"]},
                            progress=False, echo=None)


def test_a_later_runs_retrieval_on_a_classification_set_is_refused_before_the_first_run(tmp_path, monkeypatch):
    """Run 1's retrieval on an image folder (no captions) fails before run 0 starts, naming run 1. Kills the
    task-to-data table without zeroshot_retrieval, and run_suite's up-front loop dropped (both: run 0's work
    first)."""
    root = _split_dataset(tmp_path / "ds")
    monkeypatch.setattr(suite_mod, "run_entry", _no_run)
    good = {"model": "ViT-mu-8", "dataset": str(root), "task": "zeroshot"}
    with pytest.raises(ValueError, match=r"^run 1: .*retrieval"):
        suite_mod.run_suite([good, {**good, "task": "retrieval"}], progress=False, echo=None)


def test_a_linear_probe_with_one_training_image_a_class_names_max_train_samples(tmp_path, monkeypatch):
    """max_train_samples 1: no class has two training images to hold one out; refused before the model, with the
    cap to raise. Kills `max() < 2` turned `< 1` and the advice dropped."""
    root = _split_dataset(tmp_path / "ds")
    monkeypatch.setattr(suite_mod._Context, "model", _no_model)
    with pytest.raises(ValueError, match=r"1 training image\(s\) have no class with 2 or more.*"
                                         r"raise --max-train-samples \(now 1\)"):
        suite_mod.run_entry({"model": "ViT-mu-8", "dataset": str(root), "task": ["linear_probe"],
                             "max_train_samples": 1}, progress=False, echo=None)


def test_device_keeps_a_suite_dicts_out(tmp_path, monkeypatch):
    """run_suite({"out": OUT, "runs": [...]}, device="cpu") still writes OUT/results.json. Kills _on_device returning
    the bare list of runs for a dict suite (its "out" lost: nothing written)."""
    root = _split_dataset(tmp_path / "ds")
    monkeypatch.setattr(suite_mod, "run_entry", lambda r, ctx, **k: [])
    out = tmp_path / "out"
    suite_mod.run_suite({"out": str(out), "runs": [{"model": "ViT-mu-8", "dataset": str(root), "task": "zeroshot"}]},
                        device="cpu", progress=False, echo=None)
    assert json.loads((out / "results.json").read_text()) == []


def test_a_suites_split_advice_names_the_runs_split_key(tmp_path, monkeypatch):
    """A dataset with only a train/ folder: the advice names the run's "split" (`eval suite` has no --split). Kills
    in_suite_words without its ("--split", "split") pair (the advice said "pass --split train")."""
    _image_folder(tmp_path / "ds" / "train")
    monkeypatch.setattr(suite_mod, "run_entry", _no_run)
    with pytest.raises(ValueError) as e:
        suite_mod.run_suite([{"model": "ViT-mu-8", "dataset": str(tmp_path / "ds"), "task": "zeroshot"}],
                            progress=False, echo=None)
    assert str(e.value).startswith("run 0: ")
    assert 'set the run\'s "split" to train to evaluate on it anyway' in str(e.value)
    assert "--split" not in str(e.value)


def test_a_suites_column_advice_names_the_runs_column_key(tmp_path, monkeypatch):
    """A CSV without the image column: "(name yours with the run's "image_column")". Kills in_suite_words without
    its "with FLAG)" replacement (the advice named --image-column, which `eval suite` lacks)."""
    _image_folder(tmp_path / "imgs", per_class=1)
    (tmp_path / "d.csv").write_text("filepath,label\nimgs/cat/0.png,cat\nimgs/dog/0.png,dog\n")
    monkeypatch.setattr(suite_mod, "run_entry", _no_run)
    for extra, key in (({"image_column": "path"}, "image_column"), ({"label_column": "lab"}, "label_column")):
        with pytest.raises(ValueError) as e:
            suite_mod.run_suite([{"model": "ViT-mu-8", "dataset": str(tmp_path / "d.csv"), "task": "zeroshot",
                                  **extra}], progress=False, echo=None)
        assert str(e.value).endswith(f'(name yours with the run\'s "{key}")')


def test_write_results_removes_only_plain_png_names_in_out(tmp_path):
    """An earlier results.json here listing "../keep.png" and "sub/keep.png" (not written by kizuna: a plot is a bare
    file name in OUT) must not delete those files; its listed old.png goes. Kills _listed_plots without its
    `Path(n).name == n` check (write_results deleted files outside OUT)."""
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    for p in (tmp_path / "keep.png", out / "sub" / "keep.png", out / "old.png", out / "mine.png"):
        p.write_bytes(b"png")
    (out / "results.json").write_text(json.dumps([{"details": {"plots": ["../keep.png", "sub/keep.png",
                                                                         "old.png"]}}]))
    suite_mod.write_results([], out)
    assert (tmp_path / "keep.png").is_file() and (out / "sub" / "keep.png").is_file()
    assert (out / "mine.png").is_file()  # a user's own file, listed nowhere, stays
    assert not (out / "old.png").exists()


def test_a_per_class_table_of_exactly_max_rows_has_no_cut_note():
    """60 classes with max_rows 60: every class shown, nothing to say; 61: "60 of 61". Kills `len(rows) > max_rows`
    turned `>=` (a complete table said it was cut)."""
    import numpy as np

    from kizuna.eval.classification import classify_scores

    for n, noted in ((60, False), (61, True)):
        labels = np.arange(n)
        table = classify_scores(torch.eye(n), labels, [f"c{i:02d}" for i in range(n)]).table()
        assert ("classes shown" in table) == noted
        assert (f"(60 of {n} classes shown, lowest recall first" in table) == noted
        assert len([ln for ln in table.splitlines() if ln[:1] == "c" and ln[1:3].isdigit()]) == 60


# ------------------------------------------------------------------------------------ apps/cli.py
def test_the_flag_hints_name_only_the_mistyped_flag(capsys):
    """`vit eval m --datta=d --batch-size 4 --`: the hint names --datta (its =value cut off) and neither the known
    --batch-size nor the "--" that ends the flags. Kills unknown_flag_hints without its `token in known` skip,
    without its `t != "--"` and without splitting at "=" (each changed the line)."""
    with pytest.raises(SystemExit):
        main(["vit", "eval", "m", "--datta=d", "--batch-size", "4", "--"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.endswith("error: the following arguments are required: --data/--dataset; "
                        "--datta is not a flag of this command (it has --data and --dataset)")


# ------------------------------------------------------------------------------------ analysis/cli.py
def test_compare_runs_takes_one_label_for_one_run(tmp_path):
    """`analyze compare-runs RUN --labels mine`: a run's label, not a prediction's labels, so one is enough. Kills
    compare-runs' parse_labels without minimum=1 (refused as "a prediction needs at least 2")."""
    run = tmp_path / "a"
    run.mkdir()
    (run / "metrics.jsonl").write_text(json.dumps({"kind": "eval", "step": 10, "val_top1": 0.5}) + "\n")
    assert main(["analyze", "compare-runs", str(run), "--labels", "mine", "--out", str(tmp_path / "fig")]) == 0
    record = json.loads((tmp_path / "fig" / "runs.json").read_text())
    assert [r["label"] for r in record["runs"]] == ["mine"]
    assert record["figures"] == ["runs.png"]  # beside the JSON, as every analysis JSON names its figures


def test_analyze_names_the_missing_piece_of_an_images_spec(tmp_path, monkeypatch, capsys):
    """--images a.png::b.png with b.png missing: refused before the model loads, naming b.png (the spec as a whole
    is not the missing file). Kills _check_image_paths without its "(missing[0])" detail."""
    import kizuna.analysis.report as report

    monkeypatch.setattr(report, "load_target", _no_model)
    a = tmp_path / "a.png"
    Image.new("RGB", (8, 8)).save(a)
    b = tmp_path / "b.png"
    assert main(["analyze", "attention-distance", "ViT-mu-8", "--images", f"{a}::{b}",
                 "--out", str(tmp_path / "out")]) == 2
    assert f"--images {a}::{b}: no such file or folder ({b})" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ analysis/position.py
@pytest.mark.parametrize("grid", [0, (0, 3), (3, 0)])
def test_a_grid_side_of_zero_is_refused(grid):
    """A side of 0 is no grid. Kills _as_grid's `<= 0` turned `< 0` (0 passed, as an empty map or torch's error)."""
    from kizuna.analysis.position import _as_grid, position_similarity

    with pytest.raises(ValueError, match="grid must be positive"):
        _as_grid(grid)
    with pytest.raises(ValueError, match="grid must be positive"):
        position_similarity(torch.randn(0, 8), grid)


def test_a_linear_probe_on_a_folder_without_splits_is_refused_before_the_model_loads(tmp_path, monkeypatch):
    """One folder of classes, no train/ and test/: the probe would train and test on the same images. Kills the
    `test.source == train.source` refusal dropped from _probe_splits (the model loaded, the probe scored its own
    training images)."""
    root = _image_folder(tmp_path / "flat", per_class=3)
    monkeypatch.setattr(suite_mod._Context, "model", _no_model)
    with pytest.raises(ValueError, match=r"the linear probe needs separate train and test splits \(found only "):
        suite_mod.run_entry({"model": "ViT-mu-8", "dataset": str(root), "task": ["linear_probe"]},
                            progress=False, echo=None)


def test_write_results_over_a_results_json_with_odd_plot_entries(tmp_path):
    """An earlier results.json (not kizuna's, or hand-edited) whose plots hold a number and null: the new results are
    written and its listed old.png goes. Kills _listed_plots without its isinstance(n, str) (an AttributeError after
    all the work)."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.png").write_bytes(b"png")
    (out / "results.json").write_text(json.dumps([{"details": {"plots": [5, None, "old.png"]}}]))
    suite_mod.write_results([], out)
    assert json.loads((out / "results.json").read_text()) == []
    assert not (out / "old.png").exists()
