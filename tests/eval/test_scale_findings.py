"""Costs that grew with the number of classes or files, and a long `::` list of shards (found by a hunt at scale:
21,841 ImageNet-21k classes, 100,000 files in a split folder, 30 shards listed one by one)."""
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from kizuna.eval import datasets
from kizuna.eval.classification import ClassificationResult, _summed_blocks, plot_confusion


def _result(cm: np.ndarray) -> ClassificationResult:
    c = len(cm)
    return ClassificationResult({"acc1": 0.5}, [f"c{k}" for k in range(c)], cm, torch.zeros(0), torch.zeros(0),
                                torch.zeros(0), torch.zeros(0, dtype=torch.bool), dataset="d")


def test_per_class_rows_equal_a_loop_over_the_matrix():
    """per_class is computed a block of rows at a time (a Python loop over rows and columns took 4 s at 21,841
    classes, twice per result); each row is checked against the definitions."""
    rng = np.random.default_rng(0)
    cm = rng.integers(0, 4, (1100, 1100)) * (rng.random((1100, 1100)) < 0.01)  # two blocks of rows
    cm[3] = 0  # a class without images
    cm[:, 7] = 0  # a class never predicted
    cm[9] = 0
    cm[9, 9] = 5  # a class always right: confused with nothing
    cm[1050, 1049] = cm[1050, 1051] = 50  # a tie: the first of the two
    rows = _result(cm).per_class
    for k in (0, 3, 7, 9, 500, 1050):
        wrong = cm[k].copy()
        wrong[k] = 0
        n, correct, predicted = cm[k].sum(), cm[k, k], cm[:, k].sum()
        assert rows[k]["n"] == n and rows[k]["correct"] == correct
        assert rows[k]["recall"] == pytest.approx(correct / n) if n else rows[k]["recall"] != rows[k]["recall"]
        assert (rows[k]["precision"] == pytest.approx(correct / predicted) if predicted
                else rows[k]["precision"] != rows[k]["precision"])
        expected = f"c{int(np.argmax(wrong))}" if wrong.any() else ""
        assert (rows[k]["most_confused_with"], rows[k]["confused_count"]) == (expected, int(wrong.max()))
    assert rows[1050]["most_confused_with"] == "c1049"


def test_a_confusion_matrix_of_many_classes_is_drawn_in_blocks(tmp_path, monkeypatch):
    """Above 1,000 classes the figure sums consecutive classes into blocks: a float copy of 21,841^2 cells (and
    matplotlib's) took 40 GB, and `eval zeroshot --out` was killed after the evaluation, saving nothing."""
    rng = np.random.default_rng(1)
    cm = rng.integers(0, 3, (2500, 2500)) * (rng.random((2500, 2500)) < 0.002)
    blocks = _summed_blocks(cm, 1000)
    starts = np.linspace(0, 2500, 1001).astype(int)
    naive = np.add.reduceat(np.add.reduceat(cm, starts[:-1], axis=0), starts[:-1], axis=1)
    assert blocks.shape == (1000, 1000) and np.array_equal(blocks, naive) and blocks.sum() == cm.sum()
    from matplotlib.figure import Figure

    drawn = []
    real = Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda self, *a, **k: drawn.append(self) or real(self, *a, **k))
    path = plot_confusion(cm, [f"c{k}" for k in range(2500)], tmp_path / "confusion.png")
    with Image.open(path) as im:
        assert max(im.size) < 4000
    ax = drawn[0].axes[0]  # the ticks count classes, not blocks: the image spans 2,500 classes
    assert ax.images[0].get_extent() == [-0.5, 2499.5, 2499.5, -0.5] and "blocks of about 2" in ax.get_xlabel()


def test_split_folders_are_found_without_a_stat_of_every_entry(tmp_path, monkeypatch):
    """is_split_folder and the split lookup stat'ed every entry of the folder (100,000 images in a split folder:
    0.6 s each, three times per command); names are compared first."""
    (tmp_path / "Test").mkdir()
    (tmp_path / "Test" / "0.cls").write_text("0")
    Image.new("RGB", (2, 2)).save(tmp_path / "Test" / "0.png")
    for i in range(40):
        (tmp_path / f"{i}.png").write_bytes(b"")
    checked = []
    real = Path.is_dir
    monkeypatch.setattr(Path, "is_dir", lambda self: checked.append(self.name) or real(self))
    assert datasets.split_folders(tmp_path) == ["Test"]
    assert not any(name.endswith(".png") for name in checked)
    checked.clear()
    assert datasets.is_split_folder(tmp_path / "Test")
    assert not any(name.endswith(".png") for name in checked)


def test_a_long_list_of_shards_is_read_or_refused_clearly(tmp_path, monkeypatch):
    """A `::` list of 30 shards is one string longer than a file name may be: Path.is_dir/exists/is_file raised
    OSError (File name too long) from train's and analyze's checks, and eval's and embed's, instead of reading the
    shards or saying what is wrong."""
    import sys

    sys.path.insert(0, str(Path(__file__).parents[1] / "data"))
    import _shards

    from kizuna.analysis.report import load_images
    from kizuna.apps.common import check_out_outside_data
    from kizuna.data.transforms import Preprocess
    from kizuna.train.data import _refuse_a_root_with_held_out_splits

    monkeypatch.chdir(tmp_path)
    names = []
    for i in range(30):
        names.append(f"{i:06d}.tar")
        _shards.write_tar(tmp_path / names[-1], _shards.pair_members([f"{i:04d}"], captions=["a photo"]))
    spec = "::".join(names)
    assert len(spec) > 255
    check_out_outside_data("out", "--data", spec)  # nothing to refuse
    _refuse_a_root_with_held_out_splits(spec)
    images, _ = load_images([spec], Preprocess(image_size=8), max_images=3)
    assert len(images) == 3
    with pytest.raises(FileNotFoundError, match="dataset not found"):
        datasets.load_dataset(spec)
    # no usable sample in any of them: the error that says so, not OSError from its hints
    from kizuna.train.data import _what_to_pass

    bad = []
    for i in range(30):
        bad.append(f"bad_{i:06d}.tar")
        _shards.write_tar(tmp_path / bad[-1], [(f"{i:04d}.txt", b"a caption")])
    bad_spec = "::".join(bad)
    from kizuna.data.sources import build_index

    assert _what_to_pass(bad_spec, build_index(bad_spec)) == ""
    with pytest.raises(ValueError, match="no readable images"):
        load_images([bad_spec], Preprocess(image_size=8), max_images=3)


def test_the_finite_check_counts_across_blocks_of_rows(monkeypatch):
    """check_finite took the whole matrix's isfinite and a copy of its valid rows at once (2.75x the features: an
    evaluation of 80,000 images at 2,048-d ran out of memory after all its encoding); it goes a block at a time."""
    from kizuna.eval import encode
    from kizuna.eval.encode import NonFiniteFeatures, check_finite

    sizes, real = [], torch.isfinite
    monkeypatch.setattr(encode.torch, "isfinite", lambda t: sizes.append(t.numel()) or real(t))

    features = torch.zeros(10, 1 << 20)  # blocks of 4 rows
    features[1, 5] = float("nan")
    features[9, 0] = float("inf")
    valid = torch.ones(10, dtype=torch.bool)
    with pytest.raises(NonFiniteFeatures, match="for 2 of 10"):
        check_finite(features, None, "x")
    valid[9] = False
    with pytest.raises(NonFiniteFeatures, match="for 1 of 9"):
        check_finite(features, valid, "x")
    valid[1] = False
    check_finite(features, valid, "x")  # the bad rows are not used
    check_finite(torch.full((4, 3), 3e38), None, "x")  # finite, though their sum is not
    assert max(sizes) <= 1 << 22 < features.numel()  # never the whole matrix at once


def test_retrieval_of_usable_rows_only_ranks_the_features_themselves(monkeypatch):
    """Every row usable, retrieval indexed each matrix with an all-true mask: a copy of both beside them."""
    from kizuna.eval import retrieval

    seen, real = [], retrieval.retrieval_ranks

    def recording(img, txt, *args, **kwargs):
        seen.extend([img.data_ptr(), txt.data_ptr()])
        return real(img, txt, *args, **kwargs)

    monkeypatch.setattr(retrieval, "retrieval_ranks", recording)
    images = torch.nn.functional.normalize(torch.randn(4, 8), dim=1)
    texts = torch.nn.functional.normalize(torch.randn(8, 8), dim=1)
    result = retrieval.retrieval_from_features(images, texts, [0, 0, 1, 1, 2, 2, 3, 3])
    assert seen == [images.data_ptr(), texts.data_ptr()] and result.num_images == 4
    retrieval.retrieval_from_features(images, texts, [0, 0, 1, 1, 2, 2, 3, 3],
                                      text_valid=torch.tensor([True] * 7 + [False]))
    assert seen[3] != texts.data_ptr()  # a row left out: the usable rows, a copy
