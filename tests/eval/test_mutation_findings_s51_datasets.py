"""Mutation findings (session 51) on the dataset readers: VTAB's name spellings, a class names file with a blank
line, the bundled-list warning, and .json files of names keyed by dataset."""
import json
import warnings

import pytest
from _evalhelpers import CLASSES, classification_wds, image_folder

from kizuna.eval.datasets import DatasetError, _name_variants, load_dataset, read_templates


def test_the_tfds_dash_prefix_finds_the_vtab_list():
    """"tfds-caltech101", as "tfds_caltech101" and "vtab-caltech101" do: CLIP_benchmark's VTAB order, not
    torchvision's (a third of the labels renamed)."""
    assert _name_variants("tfds-caltech101")[0] == "caltech101_vtab"
    assert "caltech101" in _name_variants("tfds-caltech101")


def test_a_blank_line_is_refused_in_a_list_that_is_not_the_official_one(tmp_path):
    """A folder named after a dataset whose official list names a class "" still has its own classnames.txt read
    strictly: another list with a blank line (a class left unnamed) is refused, not taken as it is."""
    root = classification_wds(tmp_path / "clevr_closest_object_distance", n=6, classnames=["a", "", "c"],
                              labels=[0, 2, 0, 2, 0, 2])
    with pytest.raises(DatasetError, match="line 2 is blank"):
        load_dataset(root, "test")


def test_a_list_taken_from_the_folders_name_says_nothing_when_it_does_not_fit(tmp_path):
    """A folder named cifar10/ holding 3 other class folders: no list was asked for (--dataset-name), so none
    was set aside, and a warning about one would be noise on every evaluation of that folder."""
    root = image_folder(tmp_path / "cifar10", classes=("apple", "pear", "plum"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = load_dataset(root)
    assert ds.classnames == ["apple", "pear", "plum"]


def test_a_json_of_one_other_datasets_names_is_refused_for_a_named_dataset(tmp_path):
    """A file keyed by dataset that holds only cifar10's list, given for dataset "tiny": refused, not taken as
    tiny's (one key is picked without asking only where no dataset is named)."""
    root = classification_wds(tmp_path / "tiny", n=6, write_classnames=False)
    names = tmp_path / "names.json"
    names.write_text(json.dumps({"cifar10": ["x", "y", "z"]}))
    with pytest.raises(DatasetError, match="has no class names for dataset 'tiny'"):
        load_dataset(root, "test", classnames=str(names))


def test_a_json_templates_file_of_one_string_is_one_template(tmp_path):
    """``"a photo of a {c}."`` alone in T.json: one template, not its letters (each a "template" with no {c})."""
    f = tmp_path / "t.json"
    f.write_text(json.dumps("a photo of a {c}."))
    assert read_templates(str(f)) == ["a photo of a {c}."]


def test_a_json_class_names_files_names_are_stripped(tmp_path):
    """" cat" and "dog\\n" in a .json list are the classes "cat" and "dog", as a text file's lines are: kept as
    written, they went into the prompts as they stood ("a photo of a  cat.")."""
    root = classification_wds(tmp_path / "tiny", n=6, write_classnames=False)
    names = tmp_path / "names.json"
    names.write_text(json.dumps([" " + CLASSES[0]] + [c + "\n" for c in CLASSES[1:]]))
    assert load_dataset(root, "test", classnames=str(names)).classnames == CLASSES


def test_an_upper_case_json_class_names_file_is_read_as_json(tmp_path):
    """NAMES.JSON, indented: read as JSON, not line by line as 5 "classes" ("[", "\\"cat\\",", ...)."""
    root = classification_wds(tmp_path / "tiny", n=6, write_classnames=False)
    names = tmp_path / "NAMES.JSON"
    names.write_text(json.dumps(CLASSES, indent=4))
    assert load_dataset(root, "test", classnames=str(names)).classnames == CLASSES
