"""Mutation testing of stop 45's dataset rules (kizuna.eval.datasets): numbered class folders' labels and their
refusals' messages, numbered folders against a bundled list, split-named folders as classes or splits
(find_split), and the validation split a trainer picks by default (validation_split)."""
import pytest
from _evalhelpers import noise_image

from kizuna.eval.datasets import (DatasetError, _bundled_fits_folders, bundled_classnames, find_split, load_dataset,
                                  validation_split)

NAMES = ["cat", "dog", "car", "ship"]


def _folders(root, classes, per_class=1):
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            (root / name / f"{i}.png").write_bytes(noise_image(10 * c + i, size=8))
    return root


def test_more_numbered_folders_than_names_counted_from_zero_are_refused(tmp_path):
    """Folders 0..4 under 4 names. Kills: ``len(folders) == n`` widened to ``>=`` (five folders labelled by
    position as four classes)."""
    with pytest.raises(DatasetError, match=r"folder\(s\) 4 number a class beyond the 4 names"):
        load_dataset(_folders(tmp_path / "a", ["0", "1", "2", "3", "4"]), classnames=NAMES)


def test_one_based_folders_beyond_the_names_name_only_those_beyond(tmp_path):
    """Folders 1, 4, 6 of 4 names counted from 1: only 6 is beyond (4 is ship). Kills: the ``+ (0 not in
    numbers)`` dropped from the bound (4 named beyond as well)."""
    with pytest.raises(DatasetError, match=r": class folder\(s\) 6 number a class beyond"):
        load_dataset(_folders(tmp_path / "a", ["1", "4", "6"]), classnames=NAMES)


def test_the_refusals_list_the_folders(tmp_path):
    """Kills: the ' ...' after five folders shown only past six, and the folders beyond cut to one."""
    ten = [f"class{k}" for k in range(10)]
    with pytest.raises(DatasetError, match=r"folders \(1, 2, 3, 4, 5 \.\.\.\) have no folder 0 and none numbered 10"):
        load_dataset(_folders(tmp_path / "a", ["1", "2", "3", "4", "5", "6"]), classnames=ten)
    with pytest.raises(DatasetError, match=r"folder\(s\) 5, 6, 7 number a class beyond the 4 names"):
        load_dataset(_folders(tmp_path / "b", ["0", "1", "5", "6", "7"]), classnames=NAMES)


def test_a_digit_folder_that_is_no_decimal_under_a_names_file(tmp_path):
    """Folders 1 and '²' under two names: by position. Kills: ``isdecimal`` back to ``isdigit`` in _folder_labels
    (``int('²')`` raised ValueError)."""
    ds = load_dataset(_folders(tmp_path / "s", ["1", "²"]), classnames=["one", "two"])
    assert sorted(ds.classnames) == ["one", "two"] and sorted(ds.labels.tolist()) == [0, 1]


def test_numbered_folders_against_a_bundled_list():
    """Kills, in _bundled_fits_folders: the ``not all(f in position ...)`` dropped (folders 1, 2 named by a list
    "2", "1" in another order taken by number); the numbered rule limited to a name the user gave (folders 0, 1 as
    many as a list "1", "x", by number); its ``max <= len`` bound dropped or loosened (folder 11 of CIFAR-10's 10
    classes taken as the list's)."""
    assert not _bundled_fits_folders(["2", "1"], ["1", "2"])
    assert _bundled_fits_folders(["1", "x"], ["0", "1"])
    cifar = bundled_classnames("cifar10")
    assert len(cifar) == 10
    assert _bundled_fits_folders(cifar, ["3", "10"], by_name=True)
    assert not _bundled_fits_folders(cifar, ["3", "11"], by_name=True)


def test_train_and_test_folders_of_images_alone_are_splits(tmp_path):
    """A root holding only train/ and test/, each of images: splits, not two classes. Kills: the class-folder test
    of find_split counting split-named folders (``d.name.casefold() not in SPLIT_NAMES`` dropped)."""
    root = tmp_path / "examples"
    _folders(root, ["train", "test"], per_class=2)
    assert find_split(root, None) == (root / "test", "test")
    assert find_split(root, "train") == (root / "train", "train")


def test_split_folders_are_classes_only_when_all_hold_images_themselves(tmp_path):
    """train/ of images, test/ of class folders and a class folder dog/: test holds no images itself, so the
    split folders stay splits. Kills: ``all`` over the split folders turned into ``any``."""
    root = tmp_path / "mixed"
    _folders(root, ["train", "dog"])
    _folders(root / "test", ["dog", "cat"])
    assert find_split(root, None) == (root / "test", "test")


def test_the_default_validation_split(tmp_path, monkeypatch):
    """Kills: dev dropped from the names; the names tried in another order (val before dev); the root's ~ not
    expanded."""
    _folders(tmp_path / "a", ["train", "dev"])
    assert validation_split(tmp_path / "a") == "dev"
    _folders(tmp_path / "b", ["train", "dev", "val", "test"])
    assert validation_split(tmp_path / "b") == "val"
    _folders(tmp_path / "c", ["train", "test"])
    assert validation_split(tmp_path / "c") is None
    assert validation_split(tmp_path / "b" / "val") is None and validation_split(tmp_path / "nothing") is None
    monkeypatch.setenv("HOME", str(tmp_path))
    assert validation_split("~/b") == "val"
