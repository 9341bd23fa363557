"""Regressions a review of the name-matching changes found: class lists that repeat a name (ImageNet's "missile",
"sunglasses") were merged when relabelled by name, and a dataset's files were looked up with a stat of every file
in its folder."""
from kizuna.eval import datasets
from kizuna.eval.datasets import file_in, load_dataset, relabel_by_name


def test_a_list_that_repeats_a_name_is_not_relabelled_onto_itself(tmp_path):
    """Equal lists with a repeated name failed the "same order" check (a name looked up gave its first position),
    and the later class's images were relabelled as the first: two classes merged, accuracy silently wrong."""
    from _evalhelpers import classification_wds

    names = ["missile", "cat", "missile"]
    root = classification_wds(tmp_path / "wds", n=6, classnames=names, labels=[0, 1, 2] * 2)
    ds = load_dataset(root, task="classification")
    assert relabel_by_name(ds, list(names)) is False
    assert sorted(set(ds.labels.tolist())) == [0, 1, 2]
    # another order still maps by name, and a repeated name at its own position stays where it is
    ds = load_dataset(root, task="classification")
    assert relabel_by_name(ds, ["missile", "dog", "missile", "cat"])
    assert ds.labels.tolist() == [0, 3, 2] * 2


def test_a_dataset_file_is_found_in_another_case_without_a_stat_of_every_file(tmp_path, monkeypatch):
    """file_in stat'ed every file of the folder on each miss (five a dataset): 100,000 images beside a CSV made
    opening it three times slower. Names are compared first; only a name that matches is stat'ed."""
    for i in range(50):
        (tmp_path / f"{i}.png").write_bytes(b"")
    (tmp_path / "Classnames.TXT").write_text("a\n")
    checked = []
    real = datasets.Path.is_file
    monkeypatch.setattr(datasets.Path, "is_file", lambda self: checked.append(self.name) or real(self))
    assert file_in(tmp_path, "classnames.txt") == tmp_path / "Classnames.TXT"
    assert file_in(tmp_path, "templates.txt") is None
    assert sorted(checked) == ["Classnames.TXT", "classnames.txt", "templates.txt"]


def test_a_repeated_name_at_other_positions_is_refused_not_merged(tmp_path):
    """A name repeated at positions the target lists otherwise (own x, missile, y, missile against the model's
    new, x, missile, y, missile) mapped both own "missile" classes to the first: two classes merged, silently."""
    import pytest
    from _evalhelpers import classification_wds

    from kizuna.eval.datasets import DatasetError

    root = classification_wds(tmp_path / "wds", n=4, classnames=["x", "missile", "y", "missile"], labels=[0, 1, 2, 3])
    ds = load_dataset(root, task="classification")
    with pytest.raises(DatasetError, match="repeats missile at other positions.*--classnames FILE"):
        relabel_by_name(ds, ["new", "x", "missile", "y", "missile"])


def test_class_weights_made_under_autocast_are_not_handed_to_fp32(tiny, tmp_path):
    """The cache keys (memory and --cache-dir) left autocast out: bf16-autocast class weights (off by ~3e-3) were
    returned to a later fp32 call, and from disk to an fp32 process."""
    import torch

    from kizuna.eval.classification import _MEMORY_CACHE, class_embeddings

    model, tokenizer = tiny
    args = (model, tokenizer, ["cat", "dog"], ["a photo of a {}."])
    fp32 = class_embeddings(*args, cache=False)
    _MEMORY_CACHE.clear()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = class_embeddings(*args, cache_dir=tmp_path)
    assert not torch.allclose(bf16, fp32, atol=1e-4)  # autocast does change them
    assert torch.equal(class_embeddings(*args), fp32)  # the memory cache
    _MEMORY_CACHE.clear()
    assert torch.equal(class_embeddings(*args, cache_dir=tmp_path), fp32)  # the file cache


def test_a_csv_of_names_beside_a_names_file_in_another_order_is_matched_once(tmp_path):
    """A CSV whose labels are class names is read under the model's classes by name; relabel_by_name then read
    those indices as numbering the classnames.txt beside it and mapped them again: with that file in another
    order every label named another class (`vit eval` 55.7% -> 1.3%, and --val-data picked best/ by it). A
    dataset relabelled once is left alone the second time too."""
    import numpy as np
    from PIL import Image

    from _evalhelpers import classification_wds

    target = ["cat", "dog", "car"]
    (tmp_path / "img").mkdir()
    rows = ["filepath,label"]
    for i, name in enumerate(["dog", "car", "cat", "dog"]):
        Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(tmp_path / "img" / f"{i}.png")
        rows.append(f"img/{i}.png,{name}")
    (tmp_path / "data.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "classnames.txt").write_text("car\ndog\ncat\n")
    ds = load_dataset(tmp_path / "data.csv", classnames=target, task="classification")
    assert ds.labels.tolist() == [1, 2, 0, 1]
    assert relabel_by_name(ds, target) is False and ds.labels.tolist() == [1, 2, 0, 1]
    # read without the target, its labels index the file beside it: mapped once by name
    ds = load_dataset(tmp_path / "data.csv", task="classification")
    assert ds.labels.tolist() == [1, 0, 2, 1]
    assert relabel_by_name(ds, target) and ds.labels.tolist() == [1, 2, 0, 1]
    assert relabel_by_name(ds, target) is False and ds.labels.tolist() == [1, 2, 0, 1]
    # .cls shards numbered by their own names file: relabelled once, then no more
    root = classification_wds(tmp_path / "wds", n=3, classnames=["car", "dog", "cat"], labels=[0, 1, 2])
    shards = load_dataset(root, task="classification")
    assert relabel_by_name(shards, target) and shards.labels.tolist() == [2, 1, 0]
    assert relabel_by_name(shards, target) is False and shards.labels.tolist() == [2, 1, 0]


def test_a_names_file_of_the_first_classes_in_the_same_order_is_no_reordering(tmp_path):
    """A split naming the model's first classes in its order relabelled nothing, yet said "orders the classes
    otherwise"."""
    from _evalhelpers import classification_wds

    root = classification_wds(tmp_path / "wds", n=4, classnames=["cat", "dog"], labels=[0, 1, 0, 1])
    ds = load_dataset(root, task="classification", classnames=["cat", "dog", "car"])
    assert relabel_by_name(ds, ["cat", "dog", "car"]) is False
    assert ds.labels.tolist() == [0, 1, 0, 1] and ds.classnames == ["cat", "dog", "car"]
