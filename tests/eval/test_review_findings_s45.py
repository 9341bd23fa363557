"""Line-by-line review of eval/ (stop 45): arguments dropped on one branch, a template string split into letters,
float labels truncated, near-unit rows ranked by dot product, a CSV recording a split it did not read."""
import math

import numpy as np
import pytest
import torch
from _evalhelpers import classification_wds

from kizuna.eval.classification import classify_scores
from kizuna.eval.datasets import DatasetError, load_dataset
from kizuna.eval.linear_probe import zeroshot_over_train_classes
from kizuna.eval.probes import evaluate_robustness, typographic_attack
from kizuna.eval.retrieval import retrieval_from_features


def test_zeroshot_over_other_ordered_train_classes_uses_the_transform_and_templates_given(tiny, tmp_path):
    """The branch for splits naming their classes in another order encoded with the model's own preprocessing
    and the dataset's templates, whatever was passed."""
    import kizuna

    model, tokenizer = tiny
    root = classification_wds(tmp_path / "ds", n=6, split="train", classnames=["cat", "dog", "car"])
    classification_wds(root, n=6, split="test", classnames=["cat", "dog", "car"])
    train = load_dataset(root, split="train")
    test = load_dataset(root, split="test", classnames=["dog", "cat", "car"])  # same classes, other order
    preprocess, calls = kizuna.get_preprocess(model), []

    def counting(image):
        calls.append(1)
        return preprocess(image)

    plain = zeroshot_over_train_classes(model, tokenizer, train, test, progress=False)
    assert zeroshot_over_train_classes(model, tokenizer, train, test, progress=False, transform=counting) == plain
    assert len(calls) == len(test)
    with pytest.raises(TypeError, match="wrap it"):  # the templates are read, and checked as evaluate_zeroshot's
        zeroshot_over_train_classes(model, tokenizer, train, test, progress=False, templates="a photo of a {c}.")
    assert zeroshot_over_train_classes(model, tokenizer, train, test, progress=False, templates=[]) == plain


@pytest.mark.parametrize("probe", [evaluate_robustness, typographic_attack])
def test_the_probes_refuse_a_template_string_as_evaluate_zeroshot_does(tiny, tmp_path, probe):
    model, tokenizer = tiny
    data = load_dataset(classification_wds(tmp_path / "ds", n=4))
    with pytest.raises(TypeError, match="wrap it"):
        probe(model, tokenizer, data, templates="a photo of a {c}.", progress=False)


def test_labels_that_are_not_whole_are_refused():
    scores = torch.eye(3)
    assert classify_scores(scores, np.array([0.0, 1.0, 2.0]), ["a", "b", "c"]).metrics["acc1"] == 1.0
    for labels in ([0, 1, 1.9], [0, 1, float("nan")]):
        with pytest.raises(ValueError, match="whole class indices"):
            classify_scores(scores, np.array(labels), ["a", "b", "c"])


def test_rows_near_unit_length_are_ranked_by_cosine():
    def row(cos, norm):
        return norm * torch.tensor([cos, math.sqrt(1 - cos * cos), 0.0])

    images = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    texts = torch.stack([row(0.5004, 1.0), row(0.5000, 1.0009), torch.tensor([0.0, 0.0, 1.0])])
    result = retrieval_from_features(images, texts, [0, 1, 1])
    assert int(result.image_to_text_ranks[0]) == 0  # its own caption, of the higher cosine (a shorter row)


def test_a_csv_records_no_split_it_did_not_read(tmp_path):
    classification_wds(tmp_path / "img", n=2)
    from _evalhelpers import noise_image

    (tmp_path / "a.png").write_bytes(noise_image(0))
    (tmp_path / "test.csv").write_text("filepath,label\na.png,0\n")
    (tmp_path / "classnames.txt").write_text("cat\ndog\n")
    assert load_dataset(tmp_path / "test.csv", split="train").split is None
    (tmp_path / "train.csv").write_text("filepath,label\na.png,1\n")
    assert load_dataset(tmp_path / "test.csv", split="train.csv").split == "train.csv"


def _images(folder, n, seed=0):
    from _evalhelpers import noise_image

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (folder / f"{i}.png").write_bytes(noise_image(seed + i))


def test_a_folder_of_images_beside_split_folders_of_classes_leaves_them_splits(tmp_path):
    """root/{train,test}/{cat,dog}/ with root/examples/preview.png: the root was one ImageFolder of classes
    examples, test and train (train and test pooled), with no word."""
    for split, n in (("train", 4), ("test", 3)):
        for name in ("cat", "dog"):
            _images(tmp_path / "root" / split / name, n, seed=10 * n)
    _images(tmp_path / "root" / "examples", 1)
    ds = load_dataset(tmp_path / "root")
    assert ds.split == "test" and ds.classnames == ["cat", "dog"] and len(ds) == 6


def test_a_class_folder_named_as_a_split_is_no_split(tmp_path):
    """Classes apple, train, tulip (CIFAR-100 has a class "train"): split="train" indexed the class folder alone,
    its images without a label; it is the whole folder, as a folder without split folders is."""
    for name in ("apple", "train", "tulip"):
        _images(tmp_path / "flat" / name, 3)
    for split in (None, "train"):
        ds = load_dataset(tmp_path / "flat", split=split)
        assert ds.classnames == ["apple", "train", "tulip"] and len(ds) == 9 and ds.split is None


def test_text_batches_under_torchrun_are_the_ones_one_process_runs(monkeypatch):
    """Each rank sorted its own shard by length: two ranks batched [0, 1], [2, 3], ... where one process batched
    [0, 7], [1, 4], ... (a text's features then differ in their last bits with what shares its batch)."""
    import kizuna.eval.encode as enc

    texts = [("x" * (i * 7 % 23)) + f" t{i}" for i in range(8)]

    def batches(rank, world):
        seen = []

        def encode(tokens):
            seen.append(sorted(tokens[:, 0].tolist()))
            return torch.ones(len(tokens), 4)

        monkeypatch.setattr(enc, "dist_info", lambda: (rank, world))
        monkeypatch.setattr(enc, "gather_object", lambda value: [value] * world)
        monkeypatch.setattr(enc, "gather_shards", lambda x, bounds: torch.zeros((bounds[-1][1], *x.shape[1:]),
                                                                                dtype=x.dtype))
        enc.encode_texts_sharded(torch.nn.Linear(1, 1), lambda ts: torch.tensor([[texts.index(t)] for t in ts]),
                                 texts, batch_size=2, encode_fn=encode)
        return seen

    one = batches(0, 1)
    assert sorted(batches(0, 2) + batches(1, 2)) == sorted(one) and len(one) == 4


def test_text_features_come_back_in_the_texts_order(tiny):
    from kizuna.eval.encode import encode_texts_sharded

    model, tokenizer = tiny
    texts = ["a much longer caption of a dog on the grass", "cat", "a red car", "dog", "a very long one too here"]
    together = encode_texts_sharded(model, tokenizer, texts, batch_size=2).features
    for k, text in enumerate(texts):
        alone = encode_texts_sharded(model, tokenizer, [text], batch_size=2).features[0]
        torch.testing.assert_close(together[k], alone, atol=1e-5, rtol=0)


def test_probes_refuse_dataset_flags_when_only_the_relation_swap_runs(tiny_hf, tmp_path, capsys):
    from kizuna.apps.cli import main

    model = str(tiny_hf[0])
    data = str(classification_wds(tmp_path / "ds", n=4))
    for flags, named in ((["--classnames", str(tmp_path / "none.txt"), "--max-samples", "5"],
                          "--classnames, --max-samples"),
                         (["--dataset", data, "--no-robustness", "--no-typographic"], "--dataset")):
        assert main(["eval", "probes", "--model", model, "--relation-groups", "2", "--no-progress", *flags]) == 2
        assert f"{named}: only the relation-swap probe runs" in capsys.readouterr().err


def test_side_car_split_folders_beside_a_folder_of_images_stay_splits(tmp_path):
    """train/ and test/ of KEY.png + KEY.cls hold images themselves: with an examples/ folder beside them they
    were taken for classes, and split="train" read train and test together (the review of the fix above)."""
    from _evalhelpers import noise_image

    for split, n in (("train", 3), ("test", 2)):
        (tmp_path / "root" / split).mkdir(parents=True)
        for i in range(n):
            (tmp_path / "root" / split / f"{i}.png").write_bytes(noise_image(i))
            (tmp_path / "root" / split / f"{i}.cls").write_text(str(i % 2))
    _images(tmp_path / "root" / "examples", 1)
    (tmp_path / "root" / "classnames.txt").write_text("cat\ndog\n")
    assert len(load_dataset(tmp_path / "root", split="train")) == 3
    test = load_dataset(tmp_path / "root")
    assert test.split == "test" and len(test) == 2


def test_a_class_tree_with_captions_and_a_class_named_train_stays_classes(tmp_path):
    """CIFAR-100's "train" class, every image with a caption side-car: the side-car rule above took train/ for a
    split ("has no test or validation split (found: train)")."""
    for name in ("apple", "train", "tulip"):
        _images(tmp_path / "tree" / name, 2)
        for i in range(2):
            (tmp_path / "tree" / name / f"{i}.txt").write_text(f"a photo of a {name}")
    ds = load_dataset(tmp_path / "tree", task="classification")
    assert ds.classnames == ["apple", "train", "tulip"] and len(ds) == 6


def test_a_dataset_name_with_separators_finds_its_list_and_an_unknown_one_is_said(tmp_path):
    _images(tmp_path / "img" / "0", 1)
    _images(tmp_path / "img" / "1", 1)
    ds = load_dataset(tmp_path / "img", dataset_name="CIFAR-10")  # cifar10's names and its 18 templates
    assert ds.classnames[:2] == ["airplane", "automobile"] and len(ds.templates) == 18
    with pytest.warns(UserWarning, match=r"'cifarr10' names no bundled CLIP_benchmark list \(did you mean cifar10"):
        load_dataset(tmp_path / "img", dataset_name="cifarr10")


def test_folders_named_alike_merged_into_one_class_are_said(tmp_path):
    """Cat/ and cat/ under names cat, dog: both one class, without a word (docs hunt)."""
    for name in ("Cat", "cat", "dog"):
        _images(tmp_path / "t" / name, 1)
    with pytest.warns(UserWarning, match=r"named alike are one class .*Cat, cat -> 'cat'"):
        ds = load_dataset(tmp_path / "t", classnames=["cat", "dog"])
    assert sorted(ds.labels.tolist()) == [0, 0, 1]


@pytest.mark.parametrize("label", [".cls", ".txt"])
def test_side_car_splits_beside_another_side_car_folder_stay_splits(tmp_path, label):
    """train/, test/ and restval/ (COCO Karpathy's) of side-cars: read as one class tree by the captioned-classes
    rule, every --split gave all their images together (test leaking into training)."""
    from _evalhelpers import noise_image

    for folder, n in (("train", 3), ("test", 2), ("restval", 1)):
        (tmp_path / "root" / folder).mkdir(parents=True)
        for i in range(n):
            (tmp_path / "root" / folder / f"{i}.png").write_bytes(noise_image(10 * n + i))
            (tmp_path / "root" / folder / f"{i}{label}").write_text("0" if label == ".cls" else "a caption")
    (tmp_path / "root" / "classnames.txt").write_text("cat\n")
    task = "classification" if label == ".cls" else "retrieval"
    assert len(load_dataset(tmp_path / "root", split="test", task=task)) == 2
    assert len(load_dataset(tmp_path / "root", split="train", task=task)) == 3


@pytest.mark.parametrize("key", ["out", "cache_dir"])
def test_a_suite_file_refuses_an_empty_folder(tmp_path, key):
    from kizuna.eval.suite import normalise_suite

    run = {"model": "ViT-mu-8", "dataset": str(tmp_path), "task": "zeroshot"}
    suite = {"out": "", "runs": [run]} if key == "out" else {"runs": [{**run, "cache_dir": " "}]}
    with pytest.raises(ValueError, match=f"{key}'? is empty"):
        normalise_suite(suite)


def _sidecar_folder(folder, n, label=".txt", seed=0):
    from _evalhelpers import noise_image

    folder.mkdir(parents=True)
    for i in range(n):
        (folder / f"{i}.png").write_bytes(noise_image(seed + i))
        (folder / f"{i}{label}").write_text("0" if label == ".cls" else "a caption")


def test_a_lone_held_out_split_of_side_cars_beside_another_is_a_split(tmp_path):
    """test/ and restval/ of side-cars were a captioned class tree: split="test" read both, and `vit train`
    trained on them. The captioned-classes rule is for a train/ class only."""
    _sidecar_folder(tmp_path / "r" / "test", 2)
    _sidecar_folder(tmp_path / "r" / "restval", 3, seed=10)
    for split in ("test", None):
        ds = load_dataset(tmp_path / "r", split=split, task="retrieval")
        assert ds.split == "test" and len(ds) == 2
    with pytest.raises(DatasetError, match="has no split 'train'"):
        load_dataset(tmp_path / "r", split="train", task="retrieval")


def test_split_folders_of_classes_with_a_stray_image_stay_splits(tmp_path):
    for split in ("train", "test"):
        for name in ("cat", "dog"):
            _images(tmp_path / "r" / split / name, 2, seed=len(split) * 10 + len(name))
        _images(tmp_path / "r" / split, 1)  # a preview.png at the split's top
    _images(tmp_path / "r" / "examples", 1)
    ds = load_dataset(tmp_path / "r", split="train")
    assert ds.split == "train" and ds.classnames == ["cat", "dog"]


def test_class_folders_holding_split_folders_are_refused(tmp_path):
    """cat/{train,test}, dog/{train,test}: one ImageFolder of classes cat and dog pooling train and test."""
    for name in ("cat", "dog"):
        for split in ("train", "test"):
            _images(tmp_path / "r" / name / split, 2)
    with pytest.raises(DatasetError, match=r"class folder cat holds split folders \(train, test\)"):
        load_dataset(tmp_path / "r")


def test_a_train_split_of_labelled_side_cars_beside_another_folder_is_a_split(tmp_path):
    """train/ and restval/ of KEY.png + KEY.cls: the captioned-classes rule (for caption side-cars) took them for
    one class tree and split="train" read both."""
    _sidecar_folder(tmp_path / "r" / "train", 3, label=".cls")
    _sidecar_folder(tmp_path / "r" / "restval", 2, label=".cls", seed=10)
    (tmp_path / "r" / "classnames.txt").write_text("cat\n")
    ds = load_dataset(tmp_path / "r", split="train", task="classification")
    assert ds.split == "train" and len(ds) == 3


def test_a_class_folder_named_dev_is_no_validation_split(tmp_path):
    from kizuna.eval.datasets import validation_split

    for name in ("cat", "dev", "dog"):
        _images(tmp_path / "r" / name, 1)
    assert validation_split(tmp_path / "r") is None
    _sidecar_folder(tmp_path / "s" / "dev", 1, label=".cls")
    _sidecar_folder(tmp_path / "s" / "test", 1, label=".cls", seed=5)
    assert validation_split(tmp_path / "s") == "dev"
