"""Mutation-testing round 48 (evaluation): what the existing tests left open in today's changes to the warning of
class names the tokenizer reads alike, the class-cache file names, the refusal of CSV column flags on a folder and
the refusal of data with classes the model lacks."""
from __future__ import annotations

import warnings

import pytest
import torch
from _evalhelpers import image_folder

import kizuna
from kizuna.eval import classification
from kizuna.eval.datasets import DatasetError, RepeatedClassNamesWarning, load_dataset, load_under_classes

LONG = "striped " * 80  # cut at the context length: the names differ only past it


@pytest.fixture(scope="module")
def mu8():
    torch.manual_seed(0)
    model = kizuna.create_model("ViT-mu-8").eval()
    return model, kizuna.get_tokenizer(model)


def test_long_alike_names_are_shortened_in_the_warning(mu8):
    """Kills: names past 60 characters shown whole (a 640-character name in the message), not as their first and
    last 28 characters."""
    model, tok = mu8
    names = [LONG + "cat", LONG + "dog", "car"]
    with pytest.warns(RepeatedClassNamesWarning) as said:
        classification.class_embeddings(model, tok, names, ["{c}"], cache=False)
    text = str(said[0].message)
    cat = LONG + "cat"
    assert f"'{cat[:28]}...{cat[-28:]}'" in text
    assert LONG not in text and len(text) < 1000


def test_two_groups_of_alike_names_are_both_named(mu8):
    """Kills: groups[:1] for groups[:5]."""
    model, tok = mu8
    names = ["Cat", "cat", "dog"]  # alike as text cleaning reads them: warned of at load, not here
    base = [LONG + "one", LONG + "two", "car", "ship " * 80 + "x", "ship " * 80 + "y"]
    with pytest.warns(RepeatedClassNamesWarning) as said:
        classification.class_embeddings(model, tok, base, ["{c}"], cache=False)
    text = " ".join(str(w.message) for w in said)
    assert "(classes 0, 1)" in text and "(classes 3, 4)" in text
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        classification.class_embeddings(model, tok, names[:3], ["{c}"], cache=False)


def test_clearing_the_class_cache_forgets_the_file_names_too(mu8, tmp_path, monkeypatch):
    """Kills: clear_class_cache leaving _FILE_NAMES (the weights' hashes) behind."""
    model, tok = mu8
    calls = []
    real = classification.content_hash
    monkeypatch.setattr(classification, "content_hash", lambda *a, **k: calls.append(1) or real(*a, **k))
    classification.clear_class_cache()
    classification.class_embeddings(model, tok, ["cat", "dog"], ["a {c}"], cache_dir=tmp_path)
    assert len(calls) == 1
    classification.clear_class_cache()
    assert not classification._FILE_NAMES and not classification._MEMORY_CACHE
    classification.class_embeddings(model, tok, ["cat", "dog"], ["a {c}"], cache_dir=tmp_path)
    assert len(calls) == 2


def test_the_file_names_kept_evict_the_oldest(mu8, tmp_path, monkeypatch):
    """Kills: the file-name cache evicting its newest entry (popitem(last=True)): the name just computed was
    forgotten, and every hit of the latest classes hashed the tower again."""
    model, tok = mu8
    calls = []
    real = classification.content_hash
    monkeypatch.setattr(classification, "content_hash", lambda *a, **k: calls.append(1) or real(*a, **k))
    monkeypatch.setattr(classification, "_MEMORY_CACHE_SIZE", 2)
    classification.clear_class_cache()
    for names in (["a", "b"], ["c", "d"], ["e", "f"]):
        classification.class_embeddings(model, tok, names, ["{c}"], cache_dir=tmp_path)
    assert len(calls) == 3 and len(classification._FILE_NAMES) == 2
    classification.class_embeddings(model, tok, ["e", "f"], ["{c}"], cache_dir=tmp_path)
    classification.class_embeddings(model, tok, ["c", "d"], ["{c}"], cache_dir=tmp_path)
    assert len(calls) == 3
    classification.clear_class_cache()


def test_column_names_are_refused_on_a_folder_only_when_asked_and_each_is_named(tmp_path):
    """Kills: the refusal made whatever refuse_columns says (vit train's validation shares the names), a
    --caption-column or a --label-column never counted as given, and the defaults counted as given."""
    data = image_folder(tmp_path / "d", per_class=2, classes=["cat", "dog"])
    assert len(load_dataset(data, label_column="y", caption_column="c").classnames) == 2  # not asked: ignored
    assert len(load_dataset(data, refuse_columns=True).classnames) == 2  # the defaults: nothing given
    with pytest.raises(DatasetError, match=r"^--caption-column c: it names a CSV's column, and .* drop it, or pass"):
        load_dataset(data, caption_column="c", refuse_columns=True)
    with pytest.raises(DatasetError, match=r"^--label-column y: it names a CSV's column"):
        load_dataset(data, label_column="y", refuse_columns=True)
    with pytest.raises(DatasetError, match=r"^--image-column i and --label-column y and --caption-column c: they name"):
        load_dataset(data, image_column="i", label_column="y", caption_column="c", refuse_columns=True)


def test_data_with_classes_outside_the_target_names_them(tmp_path):
    """Kills: the names compared without case folding or stripping ("Cat" is the model's "cat"), the unknown
    classes left unnamed, and "the model" said where the caller named whose classes they are."""
    data = image_folder(tmp_path / "d", per_class=2, classes=["Cat", "dog", "b1", "b2", "b3", "b4", "b5", "b6"])

    def load(names):
        return load_dataset(data, classnames=names)

    with pytest.raises(DatasetError) as raised:
        load_under_classes(load, ["cat", " dog "], of="the training set")
    text = str(raised.value)
    assert "the data has 8 classes (named by folder names), 6 of them not among the training set's classes " \
           "(b1, b2, b3, b4, b5, ...); the training set has 2: cat,  dog " in text
    assert "the model" not in text
    # names that fit, by case, are read under the target
    fitted = load_under_classes(load, ["cat", "dog", "b1", "b2", "b3", "b4", "b5", "b6"])
    assert fitted.classnames == ["cat", "dog", "b1", "b2", "b3", "b4", "b5", "b6"]
