"""Errors found too late (found by timing each bad input to its error): a suite's later run, a task whose data
does not fit, the linear probe's training images, paths checked after the model loaded."""
from __future__ import annotations


import pytest
from _evalhelpers import image_folder

import kizuna.eval.suite as suite_mod
from kizuna.apps.cli import main


def _image_folder(root, classes=("cat", "dog"), per_class=2):
    return image_folder(root, per_class=per_class, classes=classes)


def _split_dataset(root):
    for split in ("train", "test"):
        _image_folder(root / split)
    return root


def _no_model(*a, **k):
    raise AssertionError("the model was loaded before the data was checked")


def test_a_later_runs_bad_split_is_refused_before_the_first_run(tmp_path, monkeypatch):
    """Run 2's "split": "trian" was found after run 1's work, and the complete results.json of an earlier suite
    there was replaced by run 1's record alone."""
    root = _split_dataset(tmp_path / "ds")
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.json").write_text("[]\n")
    monkeypatch.setattr(suite_mod._Context, "model", _no_model)
    run = {"model": "ViT-mu-8", "dataset": str(root), "task": "zeroshot"}
    with pytest.raises(ValueError, match=r"run 1: .*has no split 'trian'"):
        suite_mod.run_suite({"runs": [run, {**run, "split": "trian"}]}, out_dir=out, progress=False, echo=None)
    assert (out / "results.json").read_text() == "[]\n"


def test_a_task_whose_data_does_not_fit_is_refused_before_the_model_and_the_other_tasks(tmp_path, monkeypatch):
    """["zeroshot", "robustness", "retrieval"] on a classification set ran 22 s of zero-shot and robustness, then
    failed with "no usable retrieval samples"."""
    root = _split_dataset(tmp_path / "ds")
    monkeypatch.setattr(suite_mod._Context, "model", _no_model)
    with pytest.raises(ValueError, match="retrieval"):
        suite_mod.run_entry({"model": "ViT-mu-8", "dataset": str(root),
                             "task": ["zeroshot_classification", "zeroshot_retrieval"]}, progress=False, echo=None)


def test_a_linear_probe_without_two_training_images_of_a_class_is_refused_before_encoding(tmp_path, monkeypatch,
                                                                                       capsys):
    """--max-train-samples 1: the whole test split was encoded, then "too few training samples to carve a
    validation split", naming no setting."""
    root = _split_dataset(tmp_path / "ds")
    monkeypatch.setattr(suite_mod._Context, "model", _no_model)
    assert main(["eval", "linear-probe", "--model", "ViT-mu-8", "--dataset", str(root), "--max-train-samples", "1",
                 "--no-progress"]) == 2
    assert "training image(s) have no class with 2 or more" in capsys.readouterr().err


def test_analyze_checks_its_images_before_the_model_loads(tmp_path, monkeypatch, capsys):
    import kizuna.analysis.report as report

    monkeypatch.setattr(report, "load_target", _no_model)
    assert main(["analyze", "attention-distance", "ViT-mu-8", "--images", str(tmp_path / "nope"),
                 "--out", str(tmp_path / "a")]) == 2
    assert "--images " in capsys.readouterr().err
    assert main(["analyze", "rollout", "ViT-mu-8", "--image", str(tmp_path / "nope.jpg"),
                 "--out", str(tmp_path / "a")]) == 2
    assert "--image " in capsys.readouterr().err


def test_embed_checks_its_row_list_and_images_before_the_model_loads(tmp_path, monkeypatch, capsys):
    """A folder at x.txt beside --out x.npy failed after 12 s of embedding; a missing --images after the model."""
    import kizuna.apps.embed as embed

    monkeypatch.setattr(embed, "load_model_from_args", _no_model)
    images = _image_folder(tmp_path / "imgs")
    (tmp_path / "e.txt").mkdir()
    assert main(["embed", "--model", "ViT-mu-8", "--images", str(images), "--out", str(tmp_path / "e.npy")]) == 2
    assert "e.txt, which is a folder" in capsys.readouterr().err
    assert main(["embed", "--model", "ViT-mu-8", "--images", str(tmp_path / "nope"),
                 "--out", str(tmp_path / "f.npy")]) == 2
    assert "--images " in capsys.readouterr().err


def test_vit_augment_writes_nothing_when_its_statistics_fail(tmp_path):
    """An undecodable image among the statistics' images left the new augment.png beside the earlier run's
    augment.json (another dataset and recipe)."""
    from kizuna.analysis.augmentation import preview_augmentation
    from kizuna.train.supervised import make_supervised_config

    data = _image_folder(tmp_path / "imgs", per_class=6)
    (data / "cat" / "img5.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    out = tmp_path / "aug"
    out.mkdir()
    (out / "augment.json").write_text('{"data": "earlier"}')
    (out / "augment.png").write_bytes(b"earlier")
    cfg = make_supervised_config(data=str(data), image_size=8, out=str(out))
    with pytest.raises(ValueError, match="1 of the first 12 images do not decode"):
        preview_augmentation(cfg, out, n_images=2, draws=1, stats_images=12)
    assert (out / "augment.png").read_bytes() == b"earlier"  # nothing new beside the old JSON
    with pytest.raises(ValueError, match="do not decode"):
        preview_augmentation(cfg, tmp_path / "fresh", n_images=2, draws=1, stats_images=12)
    assert not (tmp_path / "fresh").exists()
