"""Own-data findings: an img2dataset folder of numbered subfolders, the linear probe's lambda sweep, and a
retrieval CSV that spells one image's path several ways."""
import numpy as np
import pytest
import torch
from _evalhelpers import image_folder, noise_image

from kizuna.eval.datasets import DatasetError, load_dataset
from kizuna.eval.linear_probe import fit_logistic_regression, linear_probe_from_features, select_l2, stratified_split


# ------------------------------------------------------------------ captioned subfolders (img2dataset "files")
def _img2dataset_files(root, per_folder=3, folders=("00000", "00001")):
    """img2dataset's `files` output: numbered subfolders of KEY.jpg + KEY.txt (+ KEY.json)."""
    i = 0
    for sub in folders:
        (root / sub).mkdir(parents=True)
        for _ in range(per_folder):
            key = f"{i:09d}"
            (root / sub / f"{key}.jpg").write_bytes(noise_image(i, fmt="JPEG"))
            (root / sub / f"{key}.txt").write_text(f"caption of image {i}")
            (root / sub / f"{key}.json").write_text("{}")
            i += 1
    return root


def test_captioned_subfolders_are_a_sidecar_folder_not_classes(tmp_path):
    """`kizuna train --data i2d` trained on every pair; on the same folder retrieval refused it as "an ImageFolder
    tree"."""
    root = _img2dataset_files(tmp_path / "i2d")
    for task in ("retrieval", None):
        ds = load_dataset(root, task=task)
        assert (ds.layout, ds.task, len(ds)) == ("folder", "retrieval", 6)
        assert ds.keys[3] == "00001/000000003" and ds.captions[3] == ("caption of image 3",)
    # asked for classes, a tree of folders is classes, as before (a class tree whose images carry captions too)
    classes = load_dataset(root, task="classification")
    assert (classes.layout, classes.classnames) == ("imagefolder", ["00000", "00001"])


def test_an_image_folder_tree_stays_one(tmp_path):
    """Class folders of images stay classes: a README.txt in one names no image, so it is no side-car."""
    root = image_folder(tmp_path / "imgs", per_class=2)
    (root / "tabby_cat" / "README.txt").write_text("photos of cats")
    ds = load_dataset(root)
    assert (ds.layout, ds.task, ds.classnames) == ("imagefolder", "classification", ["golden retriever", "tabby cat"])
    with pytest.raises(DatasetError, match="looks like an ImageFolder tree"):
        load_dataset(root, task="retrieval")


# ------------------------------------------------------------------ the linear probe's lambda sweep
def _hard_features(seed=1, n=100, d=48, c=4):
    """Unit-norm features with a large shared direction and classes told apart in low-variance directions: the
    best lambda is small, and a small lambda's fit (n ~ d, near separable) needs many iterations."""
    rng = np.random.default_rng(seed)
    scale = np.logspace(0.5, -2, d)
    means = rng.normal(size=(c, d)) * scale * 0.3
    y = np.arange(n) % c
    x = 3 * np.ones(d) / np.sqrt(d) + means[y] + rng.normal(size=(n, d)) * scale
    return x / np.linalg.norm(x, axis=1, keepdims=True), y


def test_the_chosen_lambda_does_not_move_with_feature_noise():
    """The sweep's fits stopped at 300 iterations: unconverged, a weak lambda's validation accuracy moved with
    differences of 1e-7 in the features (what the encoding's batch size changes), and so did the chosen lambda
    (for seed 1, 1e-5 against 3e-2) and the probe's accuracy."""
    noise = np.random.default_rng(99).normal(size=(100, 48)) * 1e-7
    x, y = _hard_features(seed=1)
    a = linear_probe_from_features(x, y, x, y, 4, few_shot=(), seeds=1)
    b = linear_probe_from_features(x + noise, y, x, y, 4, few_shot=(), seeds=1)
    assert (a.l2, a.metrics["lp_acc1"]) == (b.l2, b.metrics["lp_acc1"]) and not a.notes + b.notes
    # each point of the sweep is its converged fit's validation accuracy, which 1e-7 does not move
    x, y = _hard_features(seed=12)
    tr, va = stratified_split(y, 0.2, seed=0)
    sweeps = [select_l2(xt[tr], y[tr], xt[va], y[va], 4)[1] for xt in (torch.as_tensor(x), torch.as_tensor(x + noise))]
    xt = torch.as_tensor(x)
    assert sweeps[0] == sweeps[1] == [(lam, fit_logistic_regression(xt[tr], y[tr], 4, lam).accuracy(xt[va], y[va]))
                                      for lam, _ in sweeps[0]]


def test_sweep_fits_stopped_by_the_cap_are_counted():
    """Capped final fits were counted in the notes; the sweep's, which choose lambda, were not."""
    g = torch.Generator().manual_seed(0)
    y = torch.arange(4).repeat(8)
    x = torch.randn(32, 16, generator=g) + 3 * torch.nn.functional.one_hot(y, 16).double()  # separable
    res = linear_probe_from_features(x, y.numpy(), x, y.numpy(), 4, few_shot=(), max_iter=3)
    assert "1 of 1 fits stopped at the iteration cap (3)" in res.notes[0]
    assert res.notes[1].startswith("9 of 9 lambda-sweep fits stopped at the iteration cap (3)")  # 7 + 2 refined
    few = linear_probe_from_features(x, y.numpy(), x, y.numpy(), 4, few_shot=(2,), seeds=2, max_iter=3)
    assert "23 of 23 lambda-sweep fits" in few.notes[1]  # 9 + 2 seeds x 7
    assert not any("cap" in n for n in linear_probe_from_features(x, y.numpy(), x, y.numpy(), 4, few_shot=()).notes)


# ------------------------------------------------------------------ CSV retrieval: one image, several spellings
def test_csv_retrieval_groups_the_spellings_of_one_file(tmp_path):
    """Grouped by the path's text, photos/x.jpg, ./photos/x.jpg and photos//x.jpg were three images sharing the
    captions (the absolute path was the first's): recall fell with no warning."""
    (tmp_path / "photos").mkdir()
    rows = ["filepath,title"]
    for i in range(3):
        (tmp_path / "photos" / f"{i}.jpg").write_bytes(noise_image(i, fmt="JPEG"))
        spellings = [f"photos/{i}.jpg", f"./photos/{i}.jpg", f"photos//{i}.jpg", str(tmp_path / "photos" / f"{i}.jpg")]
        rows += [f"{p},caption {k} of {i}" for k, p in enumerate(spellings)]
    csv = tmp_path / "captions.csv"
    csv.write_text("\n".join(rows) + "\n")
    ds = load_dataset(csv, task="retrieval")
    assert len(ds) == 3 and ds.keys == ["photos/0.jpg", "photos/1.jpg", "photos/2.jpg"]
    assert ds.captions[1] == tuple(f"caption {k} of 1" for k in range(4))
