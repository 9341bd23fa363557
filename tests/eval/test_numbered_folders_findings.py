"""Numbered class folders read under a names file or a bundled list: counted from 0 or from 1 by the numbers
themselves, not by whether every class is there (a split lacking one class shifted every 1-based folder onto the
next class's name), and refused where the count cannot be told."""
import pytest
from _evalhelpers import image_folder

from kizuna.eval.datasets import DatasetError, load_dataset


def _folders(root, classes, per_class=1):
    return image_folder(root, per_class, classes)


def _named(ds):
    """{folder: class name} of what the dataset says each folder's images are."""
    return {k.split("/")[0]: ds.classnames[label] for k, label in zip(ds.keys, ds.labels.tolist())}


NAMES = ["cat", "dog", "car", "ship"]


def test_one_based_folders_lacking_a_class_keep_their_names(tmp_path):
    """Folders 1, 2, 4 of four names counted from 1 (folder 4 is there): 1 = cat, 2 = dog, 4 = ship.
    They were read by number: 1 = dog, 2 = car, 4 out of range (or, lacking the last class, every one shifted)."""
    ds = load_dataset(_folders(tmp_path / "a", ["1", "2", "4"]), classnames=NAMES)
    assert _named(ds) == {"1": "cat", "2": "dog", "4": "ship"}
    ds = load_dataset(_folders(tmp_path / "b", ["002", "3", "4"]), classnames=NAMES)
    assert _named(ds) == {"002": "dog", "3": "car", "4": "ship"}


def test_zero_based_folders_lacking_a_class_keep_their_names(tmp_path):
    ds = load_dataset(_folders(tmp_path / "a", ["0", "1", "3"]), classnames=NAMES)
    assert _named(ds) == {"0": "cat", "1": "dog", "3": "ship"}
    ds = load_dataset(_folders(tmp_path / "b", ["0", "1", "2", "3"]), classnames=NAMES)
    assert _named(ds) == {"0": "cat", "1": "dog", "2": "car", "3": "ship"}
    ds = load_dataset(_folders(tmp_path / "c", ["1", "2", "3", "4"]), classnames=NAMES)
    assert _named(ds) == {"1": "cat", "2": "dog", "3": "car", "4": "ship"}


def test_folders_that_may_count_from_zero_or_one_are_refused(tmp_path):
    """1, 2 of four names: classes 1, 2 counted from 0, or 0, 1 counted from 1. The error says how to tell."""
    with pytest.raises(DatasetError, match=r"no folder 0 and none numbered 4.*empty folder 0"):
        load_dataset(_folders(tmp_path / "a", ["1", "2"]), classnames=NAMES)
    (tmp_path / "a" / "0").mkdir()  # as the error says: an empty folder 0
    with pytest.warns(UserWarning, match="folder.* 0 hold no images"):
        assert _named(load_dataset(tmp_path / "a", classnames=NAMES)) == {"1": "dog", "2": "car"}


def test_folders_numbered_beyond_the_names_are_refused(tmp_path):
    with pytest.raises(DatasetError, match=r"folder\(s\) 4 number a class beyond the 4 names"):
        load_dataset(_folders(tmp_path / "a", ["0", "1", "4"]), classnames=NAMES)


def test_numbers_that_are_no_indices_but_as_many_as_the_names_label_them_in_order(tmp_path):
    """Years as folders with a names file of as many names: in numeric order, as before."""
    ds = load_dataset(_folders(tmp_path / "y", ["2009", "2010", "2011", "2012"]), classnames=NAMES)
    assert _named(ds) == {"2009": "cat", "2010": "dog", "2011": "car", "2012": "ship"}


def test_numbered_folders_fewer_than_a_bundled_list_take_its_names(tmp_path):
    """--dataset-name cifar10 over folders 0..8 (a split lacking truck): the bundled names, by number. It fell
    back to class names "0".."8" (prompts "a photo of a 3")."""
    ds = load_dataset(_folders(tmp_path / "c", [str(k) for k in range(9)]), dataset_name="cifar10")
    assert ds.classnames[:3] == ["airplane", "automobile", "bird"] and len(ds.classnames) == 10
    assert _named(ds)["3"] == "cat" and _named(ds)["8"] == "ship"
    ds = load_dataset(_folders(tmp_path / "d", ["2", "10"]), dataset_name="cifar10")  # counted from 1
    assert _named(ds) == {"2": "automobile", "10": "truck"}


def test_a_folder_named_by_a_digit_that_is_no_decimal_is_a_class_name(tmp_path):
    """'²'.isdigit() is true and int('²') raises: such a folder sorted as a number was a traceback."""
    ds = load_dataset(_folders(tmp_path / "s", ["1", "²"]))
    assert sorted(ds.classnames) == ["1", "²"]


def test_numbered_folders_fewer_than_a_list_named_by_their_folder_keep_their_own_names(tmp_path):
    """A cifar10/ folder of classes 0 and 1 (the name taken from the folder, not given): two classes, as a
    cifar10/ folder of two named classes is, not a 10-way head."""
    ds = load_dataset(_folders(tmp_path / "cifar10" / "train", ["0", "1"]))
    assert ds.classnames == ["0", "1"]
