"""Mutation testing of stop 45's validation-split warnings and override refusal in kizuna.train.supervised."""
import warnings
from types import SimpleNamespace

import pytest

from kizuna.train.supervised import check_model_overrides, warn_about_the_validation_split

CFG = SimpleNamespace(val_data="/data/set", val_split="")


@pytest.mark.parametrize("split, source", [(None, "/data/set/test.csv"), (None, "/data/set/Test.CSV"),
                                           ("TEST", "/data/set/TEST"), ("test", "/data/set/test")])
def test_best_picked_on_a_test_split_or_test_csv_is_said(split, source):
    """Kills: a test.csv (no split, its file's stem names it) not said; the split compared without casefold."""
    with pytest.warns(UserWarning, match="picked by val_top1 on the test split of --val-data /data/set"):
        warn_about_the_validation_split(CFG, SimpleNamespace(split=split, source=source), [])


@pytest.mark.parametrize("split, source", [("val", "/data/set/val"), (None, "/data/set/val.csv"),
                                           (None, "/data/set/testing.csv")])
def test_a_validation_split_is_not_said_to_be_test(split, source):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_about_the_validation_split(CFG, SimpleNamespace(split=split, source=source), ["/elsewhere/train"])


def test_an_output_dim_override_is_refused_for_a_classifier():
    """Kills: the output_dim refusal dropped (a projection built, decayed and saved, never trained)."""
    with pytest.raises(ValueError, match=r"--model-overrides: output_dim 8 is the joint-space projection"):
        check_model_overrides({"output_dim": 8})
    check_model_overrides({"output_dim": 0})  # (none: nothing built)


def test_a_training_csv_whose_images_lie_in_the_validation_folder_is_said(tmp_path, capsys):
    """--data lists/train.csv naming the images of --val-data v/: the run trains on v's images. Kills: the trainer
    passing its sources (the CSV file, outside v/) for where its images lie (training_places), which said
    nothing."""
    from PIL import Image

    from kizuna.apps.cli import main
    from test_leak_findings import FAST

    v, rows = tmp_path / "v", []
    for c in ("cat", "dog"):
        (v / c).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (8, 8), (i * 40, 100 if c == "cat" else 0, 0)).save(v / c / f"{i}.png")
            rows.append(f"{v / c / f'{i}.png'},{c}\n")
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "train.csv").write_text("filepath,label\n" + "".join(rows))
    assert main(["vit", "train", *FAST, "--batch-size", "4", "--out", str(tmp_path / "run"),
                 "--data", str(tmp_path / "lists" / "train.csv"), "--val-data", str(v)]) == 0
    assert f"--val-data {v} reads {v}, which the run trains on ({v / 'cat'})" in capsys.readouterr().err


def test_a_resumed_run_tells_load_validation_it_resumes(tmp_path, capsys, monkeypatch):
    """Kills: the trainer calling load_validation with ``resumed=False`` on a resume (a run begun when "" meant test
    first would go on validating on val: best/ and the curves mixing two splits)."""
    import kizuna.train.supervised as supervised
    from kizuna.apps.cli import main
    from test_leak_findings import FAST
    from test_supervised import CLASSES, _shard

    root = tmp_path / "data"
    _shard(root / "train" / "000000.tar", 0, 8)
    _shard(root / "val" / "000000.tar", 100, 4)
    (root / "classnames.txt").write_text("\n".join(CLASSES) + "\n")
    calls, load = [], supervised.load_validation

    def spy(cfg, names, resumed=False):
        calls.append(resumed)
        return load(cfg, names, resumed=resumed)

    monkeypatch.setattr(supervised, "load_validation", spy)
    out = ["--out", str(tmp_path / "run"), "--data", str(root / "train"), "--val-data", str(root)]
    assert main(["vit", "train", *FAST, *out]) == 0
    assert main(["vit", "train", *FAST, *out, "--resume", "latest", "--steps", "2"]) == 0
    assert calls == [False, True]
    capsys.readouterr()
