"""Line-by-line review of eval/ (stop 45): arguments dropped on one branch, a template string split into letters,
float labels truncated, near-unit rows ranked by dot product, a CSV recording a split it did not read."""
import math

import numpy as np
import pytest
import torch
from _evalhelpers import classification_wds

from kizuna.eval.classification import classify_scores
from kizuna.eval.datasets import load_dataset
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
