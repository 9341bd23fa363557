"""Shared state on disk (stop 46): a suite's "~/..." paths written into a folder named "~" in the working
directory, and a class cache kept inside an ImageFolder dataset read back as a class of the next run."""
import json

import pytest
from _evalhelpers import classification_wds, image_folder

from kizuna.apps.cli import main
from kizuna.eval.suite import load_suite, run_suite


def test_a_suites_home_paths_are_the_home_folder(tmp_path, tiny_hf, monkeypatch):
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    home.mkdir()
    cwd.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(cwd)
    classification_wds(home / "cls", n=6)
    (home / "names.txt").write_text("kitten\npuppy\nauto\n")
    suite = {"out": "~/results", "runs": [{"model": str(tiny_hf[0]), "dataset": "~/cls", "task": "zeroshot",
                                           "classnames": "~/names.txt", "cache_dir": "~/cache"}]}
    (tmp_path / "suite.json").write_text(json.dumps(suite))
    loaded = load_suite(str(tmp_path / "suite.json"))
    assert loaded["out"] == str(home / "results") and loaded["runs"][0]["cache_dir"] == str(home / "cache")
    run_suite(str(tmp_path / "suite.json"), progress=False, echo=None)
    assert (home / "results" / "results.json").is_file() and list((home / "cache").glob("classes-*.pt"))
    assert not (cwd / "~").exists()  # (`rm -rf ~` tidies such a folder away with the home folder)


def test_a_class_cache_inside_an_image_folder_dataset_is_refused(tmp_path, tiny_hf, capsys):
    data = image_folder(tmp_path / "imf")
    flags = ["eval", "zeroshot", "--model", str(tiny_hf[0]), "--dataset", str(data), "--no-progress",
             "--workers", "0"]
    # its classes-*.pt in imf/cache made a class "cache" of the next run: every image predicted as it, 0%
    assert main([*flags, "--cache-dir", str(data / "cache")]) == 2
    assert "--cache-dir" in capsys.readouterr().err and not (data / "cache").exists()
    assert main([*flags, "--cache-dir", str(data / ".cache")]) == 0  # a hidden folder is never read as data
    assert list((data / ".cache").glob("classes-*.pt"))
    suite = {"runs": [{"model": str(tiny_hf[0]), "dataset": str(data), "task": "zeroshot",
                       "cache_dir": str(data / "cache")}]}
    with pytest.raises(ValueError, match="cache_dir .* is inside run 0's dataset"):
        run_suite(suite, progress=False, echo=None)


def test_vit_eval_and_eval_zeroshot_into_one_out_remove_each_others_figures(tmp_path, tiny_hf):
    """Each left the other's confusion PNG (another model's) beside its own results."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[1] / "train"))
    from test_double_findings import CLASSES, _model

    data = image_folder(tmp_path / "imf", classes=CLASSES)
    out = tmp_path / "out"
    zeroshot = ["eval", "zeroshot", "--model", str(tiny_hf[0]), "--dataset", str(data), "--no-progress",
                "--workers", "0", "--out", str(out)]
    assert main(zeroshot) == 0
    clip_plots = {p.name for p in out.glob("*.png")}
    assert clip_plots
    assert main(["vit", "eval", str(_model(tmp_path / "vit")), "--data", str(data), "--no-progress", "--out",
                 str(out)]) == 0
    assert {p.name for p in out.glob("*.png")} == {"confusion.png"}  # the CLIP model's figure is gone
    assert json.loads((out / "results.json").read_text())["plots"] == ["confusion.png"]
    assert main(zeroshot) == 0
    assert {p.name for p in out.glob("*.png")} == clip_plots and "confusion.png" not in clip_plots
