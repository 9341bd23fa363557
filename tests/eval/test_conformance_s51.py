"""CLIP_benchmark's conventions where kizuna read them otherwise (session 51): class names as JSON, VTAB's
caltech101 order, an official list naming a class "", a named list set aside without a word."""
import json
import warnings

import pytest
from _evalhelpers import CLASSES, classification_wds, image_folder

from kizuna.apps.zeroshot import parse_labels
from kizuna.eval.datasets import DatasetError, _name_variants, bundled_classnames, load_dataset


@pytest.mark.parametrize("content", [{"tiny": CLASSES}, CLASSES, {"tiny": CLASSES, "other": ["x", "y", "z"]}])
def test_a_json_class_names_file_is_read_as_json(tmp_path, content):
    root = classification_wds(tmp_path / "tiny", n=6, write_classnames=False)
    names = tmp_path / "names.json"
    names.write_text(json.dumps(content, indent=4))  # indented: its lines were read as 14 "classes"
    ds = load_dataset(root, "test", classnames=str(names))
    assert ds.classnames == CLASSES


def test_a_json_class_names_file_without_the_datasets_key_or_with_no_names_is_refused(tmp_path):
    root = classification_wds(tmp_path / "tiny", n=6, write_classnames=False)
    names = tmp_path / "names.json"
    names.write_text(json.dumps({"cifar10": CLASSES, "other": CLASSES}))
    with pytest.raises(DatasetError, match="has no class names for dataset 'tiny'"):
        load_dataset(root, "test", classnames=str(names))
    names.write_text(json.dumps(["cat", "", "car"]))
    with pytest.raises(DatasetError, match="non-empty strings, got '' \\(item 2\\)"):
        load_dataset(root, "test", classnames=str(names))


def test_zeroshot_labels_from_a_json_list(tmp_path):
    f = tmp_path / "labels.json"
    f.write_text(json.dumps(["a cat", "a dog"], indent=2))
    assert parse_labels(str(f)) == ["a cat", "a dog"]


@pytest.mark.parametrize("name", ["vtab/caltech101", "tfds/caltech101", "vtab-caltech101", "wds_vtab-caltech101"])
def test_vtab_caltech101_takes_clip_benchmarks_vtab_order(name):
    assert _name_variants(name)[0] == "caltech101_vtab"
    assert bundled_classnames(name) == bundled_classnames("caltech101_vtab") != bundled_classnames("caltech101")
    assert bundled_classnames("caltech101")[0] == "background"  # torchvision's order, for the plain name


def test_an_official_list_naming_a_class_blank_is_read_with_that_class(tmp_path):
    official = bundled_classnames("clevr_closest_object_distance")
    assert "" in official
    root = classification_wds(tmp_path / "clevr_closest_object_distance", n=6, classnames=official,
                              labels=[0, 1, 2, 3, 4, 5], templates=None)
    # as CLIP_benchmark's convert_dataset writes it (print(*classes, sep="\n")): a blank line 4
    assert (root / "classnames.txt").read_text().splitlines()[3] == ""
    assert load_dataset(root, "test").classnames == official
    other = tmp_path / "mine"
    classification_wds(other, n=6, classnames=["a", "", "c"], labels=[0, 2, 0, 2, 0, 2])
    with pytest.raises(DatasetError, match="line 2 is blank.*name that class"):  # not the list: still refused
        load_dataset(other, "test")


def test_a_named_list_that_does_not_fit_the_folders_is_said(tmp_path):
    root = image_folder(tmp_path / "inet_a", classes=("n01498041", "n01531178", "n01534433"))
    with pytest.warns(UserWarning, match="--dataset-name imagenet1k: its bundled list of 1000 class names does not "
                                         "fit the 3 class folders"):
        ds = load_dataset(root, dataset_name="imagenet1k")
    assert ds.classnames == ["n01498041", "n01531178", "n01534433"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_dataset(root)  # no list asked for: nothing to say
