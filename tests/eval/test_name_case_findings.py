"""Names that differ by letter case or Unicode normalisation, as macOS (decomposed file names, a case-insensitive
file system) and Windows users produce them: split folders, class folders, class names, dataset files."""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from _evalhelpers import noise_image
from kizuna.eval.datasets import (RepeatedClassNamesWarning, find_split, is_split_folder, load_dataset,
                                  read_templates, relabel_by_name)

NFD, NFC = "cafe\u0301", "caf\u00e9"
# "A" and "a" as classes: warned about for zero-shot, which these tests do not run (one asserts the warning)
pytestmark = pytest.mark.filterwarnings("ignore::kizuna.eval.datasets.RepeatedClassNamesWarning")


def _image_folder(root: Path, classes, per_class: int = 2, start: int = 0) -> Path:
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            (root / name / f"{i}.png").write_bytes(noise_image(start + 10 * c + i, size=16))
    return root


def _counts(ds) -> list[int]:
    return np.bincount(np.asarray(ds.labels), minlength=len(ds.classnames)).tolist()


def test_capitalised_split_folders_are_the_splits_not_two_classes(tmp_path):
    """Train/ and Test/ (as Kaggle ships them) were one ImageFolder with classes "Test" and "Train": zero-shot
    scored the split names over both splits' images, and `vit train --val-data` validated on its training set."""
    root = tmp_path / "kag"
    _image_folder(root / "Train", ["cat", "dog"], per_class=3)
    _image_folder(root / "Test", ["cat", "dog"], per_class=2, start=100)
    assert find_split(root, None) == (root / "Test", "test")
    assert find_split(root, "train") == (root / "Train", "train")
    ds = load_dataset(root, task="classification")
    assert (ds.split, ds.classnames, len(ds)) == ("test", ["cat", "dog"], 4)
    assert load_dataset(root, "train", task="classification").source == str(root / "Train")
    assert is_split_folder(root / "Test")
    from kizuna.train.data import _refuse_a_root_with_held_out_splits

    with pytest.raises(ValueError, match=r"split folders \(Test, Train\).*--data \S*kag/Train$"):
        _refuse_a_root_with_held_out_splits(str(root))


def test_class_folders_differing_only_by_case_stay_two_classes_under_a_names_list(tmp_path):
    """Folders A a B b (EMNIST's letters) were matched to names by a lower-cased key: folder a became class A, so a
    names file listing all four trained a 4-way head on two classes, and validation scored folder a as A."""
    root = _image_folder(tmp_path / "letters", ["A", "a", "B", "b"])
    ds = load_dataset(root, classnames=["A", "a", "B", "b"], task="classification")
    assert _counts(ds) == [2, 2, 2, 2]
    ds = load_dataset(root, classnames=["a", "A", "b", "B"], task="classification")  # another order, by name
    folder_of = [Path(p).parent.name for p in ds.index.paths]
    assert [ds.classnames[label] for label in ds.labels] == [folder_of[i] for i in ds.positions]
    # a loose match still names a folder where it is one name's alone
    loose = load_dataset(_image_folder(tmp_path / "dogs", ["golden_retriever", "pug"]),
                         classnames=["Golden Retriever", "Pug"], task="classification")
    assert _counts(loose) == [2, 2]


def test_numbered_labels_are_relabelled_to_names_that_differ_only_by_case(tmp_path):
    """relabel_by_name mapped a split's own names onto the training classes by a lower-cased key: "a" took A's
    number."""
    from _evalhelpers import classification_wds

    root = classification_wds(tmp_path / "wds", n=8, classnames=["a", "A", "b", "B"], labels=[0, 1, 2, 3] * 2)
    ds = load_dataset(root, task="classification")
    assert relabel_by_name(ds, ["A", "a", "B", "b"])
    assert np.asarray(ds.labels).tolist() == [1, 0, 3, 2] * 2


def test_a_supervised_head_is_not_warned_about_zero_shot_for_names_alike(tmp_path):
    """"A" and "a" read alike to CLIP's tokenizer, which matters to zero-shot only: `kizuna vit` warned twice about
    zero-shot weights its head does not have. Zero-shot evaluation still warns."""
    from kizuna.train.supervised import load_classification

    root = _image_folder(tmp_path / "letters", ["A", "a"])
    with warnings.catch_warnings():
        warnings.simplefilter("error", RepeatedClassNamesWarning)
        _, names, _ = load_classification(str(root))
    assert names == ["A", "a"]
    with pytest.warns(RepeatedClassNamesWarning, match="zero-shot"):
        load_dataset(root, task="classification")


def test_a_template_file_in_upper_case_json_is_read_as_json(tmp_path):
    """T.JSON was read as a text file: the JSON list became one literal template."""
    path = tmp_path / "T.JSON"
    path.write_text('["a photo of a {c}.", "a blurry photo of a {c}."]', encoding="utf-8")
    assert read_templates(str(path)) == ["a photo of a {c}.", "a blurry photo of a {c}."]


def test_dataset_files_named_in_another_case_are_found(tmp_path):
    """Classnames.txt (a dataset made on macOS or Windows, where it is classnames.txt) was left out without a word,
    and zero-shot prompted the WordNet-id folder names."""
    root = tmp_path / "wn"
    _image_folder(root / "test", ["n02084071", "n02123045"])
    (root / "Classnames.txt").write_text("dog\ncat\n", encoding="utf-8")
    (root / "Dataset_Type.txt").write_text("classification\n", encoding="utf-8")
    ds = load_dataset(root)
    assert ds.classnames == ["dog", "cat"] and ds.task == "classification"
    assert ds.classnames_source.endswith("Classnames.txt")


def test_csv_class_names_are_compared_in_nfc(tmp_path):
    """A CSV written on macOS holds "café" decomposed: mixed with the composed form it was two classes, and
    against a names file the identical-looking name was refused."""
    (tmp_path / "img").mkdir()
    rows = []
    for i in range(6):
        (tmp_path / "img" / f"{i}.png").write_bytes(noise_image(i, size=16))
        rows.append(f"img/{i}.png,{[NFD, NFC, 'tea'][i % 3]}")
    csv = tmp_path / "data.csv"
    csv.write_text("filepath,label\n" + "\n".join(rows) + "\n", encoding="utf-8")
    ds = load_dataset(csv, task="classification")
    assert ds.classnames == [NFC, "tea"] and np.asarray(ds.labels).tolist() == [0, 0, 1, 0, 0, 1]
    named = load_dataset(csv, task="classification", classnames=[NFC, "tea"])
    assert np.asarray(named.labels).tolist() == [0, 0, 1, 0, 0, 1]


def test_a_decomposed_true_label_is_the_composed_label(tmp_path):
    """--true-label pasted from a macOS file name was "not among the labels (café, thé)"."""
    import kizuna
    from kizuna.analysis.report import load_target, predict_report, prediction_inputs

    target = load_target(kizuna.create_vit("mu/4", image_size=16, num_classes=2), preprocess={
        "image_size": 16, "mean": [0.5] * 3, "std": [0.5] * 3})
    prediction_inputs(target, [NFC, "tea"], None, NFD)  # no error
    with pytest.raises(ValueError, match="not among the labels"):
        prediction_inputs(target, [NFC, "tea"], None, "cafe")
    report = predict_report(target, torch.zeros(3, 16, 16), tmp_path, [NFC, "tea"], None, NFD)
    assert report["true_label"] == NFC


def test_suite_figures_whose_names_differ_only_by_case_get_their_own_files(tmp_path):
    """Runs "Demo" and "demo" wrote Demo__x.png and demo__x.png: one file on macOS and Windows, listed twice."""
    from kizuna.eval.suite import _Context

    ctx = _Context("cpu")
    first, second = ctx.plot_path(tmp_path, "Demo__confusion.png"), ctx.plot_path(tmp_path, "demo__confusion.png")
    assert str(first).casefold() != str(second).casefold()


def test_embed_refuses_a_row_list_that_is_its_input_by_another_name(tmp_path):
    """--texts Emb.txt --out emb.npy writes emb.txt: on macOS and Windows that is the input. Compared by path only,
    it passed; a hard link shows the same here."""
    from kizuna.apps.embed import run
    from kizuna.apps.cli import build_parser

    texts = tmp_path / "in.txt"
    texts.write_text("a red circle\n\n  a blue square  \n", encoding="utf-8")
    os.link(texts, tmp_path / "emb.txt")
    args = build_parser().parse_args(["embed", "--model", "ViT-mu-8", "--texts", str(texts),
                                      "--out", str(tmp_path / "emb.npy")])
    with pytest.raises(ValueError, match="which is the input --texts"):
        run(args)
    assert texts.read_text(encoding="utf-8") == "a red circle\n\n  a blue square  \n"


def test_suite_figure_names_keep_their_letters_and_non_latin_names_their_own_files():
    """Every non-ASCII name was slugged to "x" ("x", "x_2", ... in run order): "café" lost its name, and two
    datasets named in Japanese could not be told apart by their figures' file names."""
    from kizuna.eval.suite import _slug

    assert _slug(NFC) == _slug(NFD) == "cafe"
    assert _slug("日本データ") != _slug("中文データ") and _slug("日本データ") == _slug("日本データ")
    assert _slug("日本データ").startswith("x") and _slug("a b/c") == "a_b_c"
