"""A second suite into the same --out (found by running commands twice into one folder)."""
import json

import pytest
from PIL import Image

from kizuna.eval.suite import run_suite, write_results


def _image_folder(root, classes=("cat", "dog"), per_class=2):
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", (8, 8), (40 * i, 90, 200)).save(root / c / f"{i}.png")
    return root


def _never_run(*a, **k):
    raise AssertionError("a run started before the suite's out was checked")


def test_a_suite_out_inside_a_runs_image_folder_is_refused_before_any_run(tmp_path, monkeypatch):
    """An out inside a run's ImageFolder dataset: the second suite read its confusion PNG folder as a third class
    (2 classes -> 3, top-1 50% -> 44%); `eval zeroshot --out` refused it, a suite never checked."""
    import kizuna.eval.suite as suite_mod

    tree = _image_folder(tmp_path / "tree")
    monkeypatch.setattr(suite_mod, "run_entry", _never_run)
    f = tmp_path / "suite.json"
    f.write_text(json.dumps({"out": str(tree / "ev"),
                             "runs": [{"model": "ViT-mu-8", "dataset": str(tree), "task": "zeroshot"}]}))
    with pytest.raises(ValueError, match=r"--out .*ev is inside run 0's dataset .*tree"):
        run_suite(f, progress=False, echo=None)
    assert not (tree / "ev").exists()


def test_a_suite_files_out_that_is_a_file_is_refused_before_any_run(tmp_path, monkeypatch):
    """The suite file's "out" (not --out) was not checked: a file there failed after the whole evaluation with
    a bare "[Errno 17] File exists"."""
    import kizuna.eval.suite as suite_mod

    tree = _image_folder(tmp_path / "tree")
    (tmp_path / "afile").write_text("x")
    monkeypatch.setattr(suite_mod, "run_entry", _never_run)
    f = tmp_path / "suite.json"
    f.write_text(json.dumps({"out": str(tmp_path / "afile"),
                             "runs": [{"model": "ViT-mu-8", "dataset": str(tree), "task": "zeroshot"}]}))
    with pytest.raises(ValueError, match="afile is a file; give a folder"):
        run_suite(f, progress=False, echo=None)


def _robustness(model, clean, shifted):
    return {"dataset": "c", "model": model, "pretrained": "none", "task": "robustness", "language": "en",
            "metrics": {"clean_acc1": clean, "shifted_acc1": shifted}}


def test_a_suite_that_draws_no_scatter_removes_an_earlier_suites(tmp_path):
    """A one-run suite into a folder that held a two-run suite left the other models' robustness_scatter.png
    beside a results.md that no longer linked it."""
    write_results([_robustness("a", 0.9, 0.5), _robustness("b", 0.8, 0.6)], tmp_path)
    assert (tmp_path / "robustness_scatter.png").is_file()
    assert "robustness_scatter.png" in (tmp_path / "results.md").read_text()
    write_results([_robustness("a", 0.9, 0.5)], tmp_path)
    assert not (tmp_path / "robustness_scatter.png").exists()
    assert "robustness_scatter.png" not in (tmp_path / "results.md").read_text()


def test_a_second_evaluation_into_the_same_out_removes_the_plots_the_first_listed(tmp_path):
    """`eval zeroshot --out out` on dataset A, then on B: results.json named only B's confusion PNG, A's stayed
    beside it. Only the plots an earlier results.json listed go; a user's own files stay."""
    def record(plot):
        return {"dataset": "d", "model": "m", "pretrained": "none", "task": "zeroshot_classification",
                "language": "en", "metrics": {"acc1": 0.5}, "details": {"plots": [plot]}}

    for name in ("m__a__confusion.png", "mine.png"):
        (tmp_path / name).write_bytes(b"png")
    write_results([record("m__a__confusion.png")], tmp_path)
    (tmp_path / "m__b__confusion.png").write_bytes(b"png")
    write_results([record("m__b__confusion.png")], tmp_path)
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["m__b__confusion.png", "mine.png"]
    (tmp_path / "results.json").write_text('{"not": "a suite\'s"}')  # another command's results.json: nothing goes
    write_results([record("m__c__confusion.png")], tmp_path)
    assert (tmp_path / "m__b__confusion.png").exists()
