"""Mutation testing of stop 45's leakage checks in kizuna.train.data: training_source_in through a symlink and ~,
and _refuse_held_out_splits_inside's names (any case, every held-out split name, a train folder and not a file)."""
import os
from types import SimpleNamespace

import numpy as np
import pytest

from kizuna.train.data import _refuse_held_out_splits_inside, training_source_in


def test_an_evaluated_folder_reached_through_a_symlink_is_the_training_folder(tmp_path):
    """Kills: the evaluated path made absolute but not resolved (``abspath`` for ``realpath``)."""
    (tmp_path / "d" / "train").mkdir(parents=True)
    os.symlink(tmp_path / "d" / "train", tmp_path / "link")
    assert training_source_in([str(tmp_path / "d" / "train")], str(tmp_path / "link")) == str(tmp_path / "d" / "train")
    assert training_source_in([str(tmp_path / "link")], str(tmp_path / "d")) == str(tmp_path / "link")


def test_a_training_source_under_home_spelled_with_a_tilde(tmp_path, monkeypatch):
    """Kills: the training source's ``~`` not expanded."""
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "d" / "test").mkdir(parents=True)
    assert training_source_in(["~/d"], str(tmp_path / "d" / "test")) == "~/d"
    assert training_source_in(["~/e"], str(tmp_path / "d" / "test")) is None


def _index(root, *relative):
    """A folder source at ``root`` whose images lie at ``relative`` paths (what the check reads of an index)."""
    paths = [os.path.join(root, r) for r in relative]
    return SimpleNamespace(kinds=["folder"], sources=[str(root)], source_ids=np.zeros(len(paths), dtype=np.int32),
                           paths=paths)


@pytest.mark.parametrize("split", ["test", "Test", "dev", "valid", "VAL", "validation"])
def test_a_held_out_split_of_any_name_and_case_beside_train_is_refused(tmp_path, split):
    """Kills: the split name compared without casefold; valid and dev dropped from the held-out names."""
    (tmp_path / "photos" / "set" / "train").mkdir(parents=True)
    (tmp_path / "photos" / "set" / split).mkdir()
    index = _index(tmp_path / "photos", "set/train/0.png", f"set/{split}/0.png")
    with pytest.raises(ValueError, match=rf"holds the dataset root .*set \(split folders train and {split}\)"):
        _refuse_held_out_splits_inside(index, "photos")


def test_a_train_folder_in_any_case_is_a_training_split(tmp_path):
    """Kills: the train folder's name compared without casefold (Train/ beside test/ not seen)."""
    (tmp_path / "photos" / "set" / "Train").mkdir(parents=True)
    (tmp_path / "photos" / "set" / "test").mkdir()
    with pytest.raises(ValueError, match="holds the dataset root"):
        _refuse_held_out_splits_inside(_index(tmp_path / "photos", "set/test/0.png"), "photos")


def test_a_file_named_train_is_no_training_split(tmp_path):
    """Kills: ``entry.is_dir()`` dropped (a file called train beside a folder test refused the source)."""
    (tmp_path / "photos" / "set" / "test").mkdir(parents=True)
    (tmp_path / "photos" / "set" / "train").write_text("not a folder")
    _refuse_held_out_splits_inside(_index(tmp_path / "photos", "set/test/0.png"), "photos")
