"""Mappings applied twice or not at all along a call path (double-application hunt, stop 44)."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

import kizuna
from kizuna.apps.cli import main
from kizuna.models.vit import VisionConfig, VisionTransformer

CLASSES = ["cat", "dog", "car"]


def _model(path, classnames=CLASSES):
    torch.manual_seed(0)
    vit = VisionTransformer(VisionConfig(image_size=8, patch_size=4, width=8, depth=1, heads=2, num_classes=3))
    with torch.no_grad():
        vit.head.weight.normal_(0, 1.0)  # a zero head predicts class 0 for every image, whatever its label
    kizuna.save_model(vit, path, extra={"classnames": list(classnames)})
    return path


def _eval(model, data, out, *flags):
    assert main(["vit", "eval", str(model), "--data", str(data), "--no-progress", "--threads", "1", "--out", str(out),
                 *flags]) == 0
    record = json.loads((out / "results.json").read_text())
    return record["confusion"], record["metrics"]


def test_vit_eval_classnames_name_the_datas_labels_and_are_matched_to_the_models(tmp_path):
    """With --classnames the saved class order was dropped: labels indexing the file were scored against the head's
    outputs in the model's order (the model's own names reversed: 15% for 24%, no word)."""
    model = _model(tmp_path / "model")
    rng = np.random.default_rng(0)
    for k, name in enumerate(CLASSES):
        (tmp_path / "img" / name).mkdir(parents=True)
        for i in range(4):
            pixels = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8) // (k + 1)
            Image.fromarray(pixels).save(tmp_path / "img" / name / f"{i}.png")
    (tmp_path / "reversed.txt").write_text("\n".join(reversed(CLASSES)) + "\n")
    confusion, metrics = _eval(model, tmp_path / "img", tmp_path / "plain")
    assert _eval(model, tmp_path / "img", tmp_path / "named", "--classnames", str(tmp_path / "reversed.txt")) == (
        confusion, metrics)
    assert sorted(map(sum, confusion)) == [4, 4, 4]


def _image_folder(root, folders, seed=0):
    """Folder ``folders[k]`` holds four images of CLASSES[k]'s look."""
    rng = np.random.default_rng(seed)
    for k, folder in enumerate(folders):
        (root / folder).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8) // (k + 1)).save(root / folder / f"{i}.png")
    return root


def test_numbered_class_folders_are_named_by_the_datas_own_classnames_file(tmp_path):
    """Read under the model's classes, numbered (or wnid) folders were its classes by position, the data's own
    classnames.txt unread: with that file in another order, vit eval and vit train's validation scored the images
    against the wrong classes."""
    from kizuna.train.supervised import SupervisedConfig, load_validation

    model_order = ["car", "cat", "dog"]
    model = _model(tmp_path / "model", model_order)
    named = _image_folder(tmp_path / "named", CLASSES)
    numbered = _image_folder(tmp_path / "numbered", ["0", "1", "2"])
    (numbered / "classnames.txt").write_text("\n".join(CLASSES) + "\n")  # folder k holds CLASSES[k]
    (confusion, metrics), (same_confusion, same_metrics) = (_eval(model, numbered, tmp_path / "numbered_eval"),
                                                            _eval(model, named, tmp_path / "named_eval"))
    # the same images in another order: the loss to float noise (oneDNN's row blocking on AMD: 2e-7 apart)
    assert confusion == same_confusion and metrics.keys() == same_metrics.keys()
    assert all(a == b if a is None or b is None else a == pytest.approx(b, rel=1e-6)
               for a, b in zip(metrics.values(), same_metrics.values()))
    labels = load_validation(SupervisedConfig(val_data=str(numbered)), model_order)[0].labels
    assert list(labels) == [1] * 4 + [2] * 4 + [0] * 4


def test_wnid_folders_of_some_classes_are_named_by_their_file_not_refused(tmp_path):
    """Read under the model's classes first, wnid folders fewer than its classes were refused ("the class folders
    do not fit the class names from given list") before their own classnames.txt was read; a class the model lacks
    is refused naming that file."""
    import pytest

    from kizuna.eval.datasets import DatasetError
    from kizuna.train.supervised import SupervisedConfig, load_validation

    wnids = _image_folder(tmp_path / "wnids", ["n01", "n02"])
    (wnids / "classnames.txt").write_text("car\ncat\n")  # n01 holds cars, n02 cats
    labels = load_validation(SupervisedConfig(val_data=str(wnids)), CLASSES)[0].labels
    assert list(labels) == [2] * 4 + [0] * 4
    (wnids / "classnames.txt").write_text("car\nhorse\n")
    with pytest.raises(DatasetError, match=r"horse of its class names \(.*classnames.txt\) are not among .* "
                                           r"\(cat, dog, car\); the model cannot score a class it was not trained on"):
        load_validation(SupervisedConfig(val_data=str(wnids)), CLASSES)


def test_a_broken_names_file_of_wnid_folders_is_the_error_seen(tmp_path):
    """Read under the model's classes by position, then by their own names file: a file that does not fit the
    folders was swallowed, and the folders scored by position after all."""
    import pytest

    from kizuna.eval.datasets import DatasetError
    from kizuna.train.supervised import SupervisedConfig, load_validation

    wnids = _image_folder(tmp_path / "wnids", ["n01", "n02", "n03"])
    (wnids / "classnames.txt").write_text("dog\ncat\ncar\nfish\n")  # a stray fourth line
    with pytest.raises(DatasetError, match="do not fit the class names"):
        load_validation(SupervisedConfig(val_data=str(wnids)), CLASSES)
