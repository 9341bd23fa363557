"""Train/validation/test separation in the trainers (leakage hunt, stop 45): best/ picked on a test split is said,
a root's val split is preferred for it, evaluating on the split a run trains on is said, `--data-split ""` trains
on train, and a side-car folder holding a dataset root deeper down is refused."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from kizuna.apps.cli import main
from kizuna.train.data import training_source_in

from _tiny import tiny_config
from test_supervised import CLASSES, TINY, _shard

FAST = ["--model", "mu/4", "--model-overrides", json.dumps(TINY), "--image-size", "16", "--steps", "1",
        "--batch-size", "8", "--workers", "0", "--threads", "1", "--progress", "false", "--warmup-steps", "1",
        "--eval-every", "0"]


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """train (16), val (8) and test (12) shards with a classnames.txt."""
    root = tmp_path_factory.mktemp("leak") / "data"
    _shard(root / "train" / "000000.tar", 0, 16)
    _shard(root / "val" / "000000.tar", 100, 8)
    _shard(root / "test" / "000000.tar", 200, 12)
    (root / "classnames.txt").write_text("\n".join(CLASSES) + "\n")
    return root


def _vit_train(tmp_path, capsys, *flags):
    """-> (the run's "data: ..." line, its stderr: the CLI writes warnings there)."""
    assert main(["vit", "train", *FAST, "--out", str(tmp_path / "run"), *flags]) == 0
    err = capsys.readouterr().err
    return next(line for line in err.splitlines() if line.startswith("data: ")), err


def test_a_roots_val_split_is_the_default_validation(root, tmp_path, capsys):
    """--val-data ROOT with val and test: validated (and best/ picked) on val's 8 images, not test's 12."""
    line, said = _vit_train(tmp_path, capsys, "--data", str(root / "train"), "--val-data", str(root))
    assert "16 training images" in line and "8 validation images (split val)" in line
    assert "test split" not in said and "trains on" not in said
    # recorded, so a resume reads the same split
    assert json.loads((tmp_path / "run" / "train_config.json").read_text())["val_split"] == "val"


def test_a_resumed_run_whose_settings_name_no_split_goes_on_with_test(root):
    """A run begun when "" meant test first: its resume validates on test still (on val, best/ and the curves
    would mix two splits)."""
    from kizuna.train.supervised import SupervisedConfig, load_validation

    cfg = SupervisedConfig(val_data=str(root))
    assert len(load_validation(cfg, CLASSES)[0]) == 8
    assert len(load_validation(cfg, CLASSES, resumed=True)[0]) == 12


def test_best_picked_on_a_test_split_is_said(root, tmp_path, capsys):
    for val in ([str(root / "test")], [str(root), "--val-split", "test"]):
        line, said = _vit_train(tmp_path, capsys, "--data", str(root / "train"), "--val-data", *val)
        assert "12 validation images" in line
        assert "picked by val_top1 on the test split" in said, said


def test_validating_on_the_training_split_is_said(root, tmp_path, capsys):
    line, said = _vit_train(tmp_path, capsys, "--data", str(root / "train"), "--val-data", str(root / "train"))
    assert "16 validation images" in line
    assert "which the run trains on" in said, said


def test_an_empty_data_split_trains_on_train(root, tmp_path, capsys):
    """--data-split "" was no split: a root's test split (test first) was trained on."""
    line, _ = _vit_train(tmp_path, capsys, "--data", str(root), "--data-split", "")
    assert line.startswith("data: 16 training images"), line


def test_training_sources_that_hold_or_sit_in_the_evaluated_folder(tmp_path):
    d = tmp_path / "d"
    assert training_source_in([str(d / "test" / "0.tar")], str(d / "test")) == str(d / "test" / "0.tar")
    assert training_source_in([str(d)], str(d / "test")) == str(d)  # a folder read recursively
    assert training_source_in([str(d / "test")], str(d)) == str(d / "test")
    assert training_source_in([str(d / "train" / "0.tar"), str(d / "train.csv")], str(d / "test")) is None
    assert training_source_in([str(d / "testing")], str(d / "test")) is None  # a name's prefix is no folder


def _captioned(folder: Path, n: int) -> None:
    from PIL import Image

    folder.mkdir(parents=True)
    for i in range(n):
        Image.new("RGB", (8, 8), (i * 20, 0, 0)).save(folder / f"{i}.png")
        (folder / f"{i}.txt").write_text(f"a red square number {i}")


def test_a_folder_holding_a_dataset_root_deeper_down_is_refused(tmp_path):
    from kizuna.train.data import build_dataset

    _captioned(tmp_path / "photos" / "flickr" / "train", 4)
    _captioned(tmp_path / "photos" / "flickr" / "test", 3)
    _captioned(tmp_path / "albums" / "trip" / "test", 2)  # a folder named test with no train beside it: kept
    cfg = tiny_config(tmp_path / "out", data=str(tmp_path / "photos"))
    with pytest.raises(ValueError, match=r"holds the dataset root .*flickr .*train and test.*--data .*flickr/train"):
        build_dataset(cfg, {"image_size": 8, "mean": [0.5] * 3, "std": [0.5] * 3, "interpolation": "bicubic",
                            "resize_mode": "shortest"})
    cfg = tiny_config(tmp_path / "out", data=str(tmp_path / "albums"))
    ds, _ = build_dataset(cfg, {"image_size": 8, "mean": [0.5] * 3, "std": [0.5] * 3, "interpolation": "bicubic",
                                "resize_mode": "shortest"})
    assert len(ds) == 2


def test_best_picked_on_a_test_split_named_by_eval_split_is_said(tmp_path):
    from kizuna.train.contrastive import warn_if_best_is_picked_on_test

    for split in ("test", "val"):
        (tmp_path / "data" / split).mkdir(parents=True)
        (tmp_path / "data" / split / "000000.tar").write_bytes(b"")
    data = tmp_path / "data"
    for folder, split in ((data, "test"), (data, "TEST"), (data / "val", "test")):
        with pytest.warns(UserWarning, match="picks best/ on the test split"):
            warn_if_best_is_picked_on_test(tiny_config(tmp_path, eval_retrieval=str(folder), eval_split=split,
                                                       best_metric="retrieval/text_to_image_R@1"))


def test_a_contrastive_run_evaluated_on_the_split_it_trains_on_is_said(tmp_path):
    from kizuna.train.contrastive import train

    _captioned(tmp_path / "cap" / "test", 16)
    cfg = tiny_config(tmp_path / "out", data=str(tmp_path / "cap" / "test"), eval_retrieval=str(tmp_path / "cap"),
                      steps=1, batch_size=8, eval_every=0)
    with pytest.warns(UserWarning, match=r"--eval-retrieval .*cap reads .*cap/test, which the run trains on"):
        train(cfg)


def test_a_csvs_images_not_its_file_say_where_it_trains(tmp_path):
    """A caption CSV saved inside an evaluation folder, its images elsewhere: warned as training on that folder;
    and a CSV elsewhere whose rows point into it was not."""
    from kizuna.data.sources import build_index
    from kizuna.train.data import training_places

    _captioned(tmp_path / "imgs" / "a", 2)
    _captioned(tmp_path / "imgs" / "b", 2)
    (tmp_path / "ev").mkdir()
    rows = "".join(f"{tmp_path}/imgs/{d}/{i}.png,a caption\n" for d in "ab" for i in range(2))
    (tmp_path / "ev" / "captions.csv").write_text("filepath,title\n" + rows)
    index = build_index(str(tmp_path / "ev" / "captions.csv"), require="caption")
    places = training_places(index)
    assert places == [str(tmp_path / "imgs" / "a"), str(tmp_path / "imgs" / "b")]
    assert training_source_in(places, str(tmp_path / "ev")) is None
    assert training_source_in(places, str(tmp_path / "imgs" / "a")) == str(tmp_path / "imgs" / "a")
    # an evaluation folder beside them, under the folder they share (data/ of data/cc3m and data/coco): no word
    assert training_source_in(places, str(tmp_path / "imgs" / "c")) is None


def test_a_resumed_older_run_keeps_its_best_and_its_split(root, tmp_path, capsys):
    """A run begun when "" meant test first (its saved settings say val_split ""): the resume recorded the split
    it resolved and, comparing it with the saved "", started best/ afresh ("evaluates on another set")."""
    import torch

    out = ["--out", str(tmp_path / "run"), "--data", str(root / "train"), "--val-data", str(root)]
    assert main(["vit", "train", *FAST, *out, "--eval-every", "1", "--save-every", "1"]) == 0
    state_file = tmp_path / "run" / "checkpoints" / "step_0000001" / "train_state.pt"
    state = torch.load(state_file, weights_only=False)  # (the test's own file)
    state["train_config"]["val_split"] = ""  # as an older run saved it
    torch.save(state, state_file)
    capsys.readouterr()
    assert main(["vit", "train", *FAST, *out, "--resume", str(state_file.parent), "--steps", "2"]) == 0
    err = capsys.readouterr().err
    assert "best/ starts afresh" not in err and "12 validation images" in err  # test, as the run began
