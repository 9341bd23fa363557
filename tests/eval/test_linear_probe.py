import numpy as np
import pytest
import torch
from _evalhelpers import classification_wds

from kizuna.eval.datasets import load_dataset
from kizuna.eval.linear_probe import (
    evaluate_linear_probe, few_shot_indices, fit_logistic_regression, linear_probe_from_features,
    plot_zeroshot_vs_probe, select_l2, stratified_split,
)


def _clusters(n, c=8, d=24, spread=1.0, seed=0):
    """Overlapping Gaussian classes: separable-ish (accuracy well below 100%)."""
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(c, d)) * 0.5
    y = rng.integers(0, c, n)
    x = means[y] + spread * rng.normal(size=(n, d))
    return torch.tensor(x, dtype=torch.float32), y


@pytest.mark.parametrize("l2", [1e-3, 3e-2])
def test_matches_sklearn_logistic_regression(l2):
    from sklearn.linear_model import LogisticRegression

    x, y = _clusters(800, seed=1)
    xt, yt = _clusters(2800, seed=1)  # same class means (seeded); the first 800 rows repeat x
    xt, yt = xt[800:], yt[800:]
    ours = fit_logistic_regression(x, y, 8, l2)
    sk = LogisticRegression(C=1.0 / (l2 * len(y)), max_iter=5000, tol=1e-8).fit(x.numpy(), y)
    acc_ours, acc_sk = ours.accuracy(xt, yt), sk.score(xt.numpy(), yt)
    assert abs(acc_ours - acc_sk) <= 0.005
    assert 0.3 < acc_ours < 0.97  # a real classification problem, not a trivially separable one
    # same objective -> same solution
    assert np.abs(ours.weight.numpy() - sk.coef_).max() < 2e-3


def test_sweep_selects_on_validation_and_refits():
    x, y = _clusters(600, seed=2)
    tr, va = stratified_split(y, 0.2, seed=0)
    assert len(np.intersect1d(tr, va)) == 0 and len(tr) + len(va) == 600
    assert abs(len(va) - 120) <= 8
    best, sweep = select_l2(x[tr], y[tr], x[va], y[va], 8, grid=(1e-4, 1e-2, 1.0))
    accs = dict(sweep)
    assert accs[best] == max(accs.values()) and len(sweep) == 5  # 3 coarse + 2 refined


def test_few_shot_draws():
    y = np.repeat(np.arange(5), 20)
    a = few_shot_indices(y, 4, seed=0)
    assert np.bincount(y[a]).tolist() == [4] * 5
    b = few_shot_indices(y, 4, seed=0, exclude=a)
    assert len(np.intersect1d(a, b)) == 0 and np.bincount(y[b]).tolist() == [4] * 5
    assert np.array_equal(a, few_shot_indices(y, 4, seed=0)) and not np.array_equal(a, few_shot_indices(y, 4, seed=1))


def test_probe_beats_few_shot_and_reports(tmp_path):
    x, y = _clusters(1000, seed=3)
    xt, yt = _clusters(1400, seed=3)
    res = linear_probe_from_features(x, y, xt[1000:], yt[1000:], 8, few_shot=(1, 4, 16), seeds=2, zeroshot_acc=0.3)
    m = res.metrics
    assert m["fewshot_1_acc1_mean"] < m["fewshot_16_acc1_mean"] <= m["lp_acc1"] + 0.02
    assert len(res.few_shot[4]) == 2 and m["zeroshot_acc1"] == 0.3
    assert 1 <= m["zeroshot_matches_k_shot"] <= 16 or m["zeroshot_matches_k_shot"] == float("inf")
    table = res.table()
    assert "zero-shot" in table and "16-shot" in table
    png = plot_zeroshot_vs_probe(res, tmp_path / "p.png")
    assert png.stat().st_size > 10000


def test_linear_probe_on_model_features(tmp_path, tiny):
    model, _ = tiny
    root = classification_wds(tmp_path / "d", n=30, split="train")
    classification_wds(tmp_path / "d", n=12, split="test", seed=7)
    train, test = load_dataset(root, split="train"), load_dataset(root, split="test")
    res = evaluate_linear_probe(model, train, test, few_shot=(1, 2), seeds=2, progress=False, batch_size=16)
    assert res.num_train == 30 and res.num_test == 12 and 0.0 <= res.metrics["lp_acc1"] <= 1.0



def test_linear_probe_counts_the_images_it_left_out(tmp_path, tiny):
    """The train and test skip counters were thrown away: a probe on 29 of 30 images said nothing."""
    import json

    from kizuna.apps.common import json_safe

    model, _ = tiny
    root = classification_wds(tmp_path / "d", n=30, split="train", corrupt=(4,))
    classification_wds(tmp_path / "d", n=12, split="test", seed=7, corrupt=(1, 2))
    train, test = load_dataset(root, split="train"), load_dataset(root, split="test")
    res = evaluate_linear_probe(model, train, test, few_shot=(), seeds=1, progress=False, batch_size=16)
    assert res.num_train == 29 and res.num_test == 10
    assert res.train_skipped["corrupt_image"] == 1 and res.test_skipped["corrupt_image"] == 2
    d = json.loads(json.dumps(json_safe(res.to_dict())))
    assert d["train_skipped"] == {"corrupt_image": 1} and d["test_skipped"] == {"corrupt_image": 2}
    assert "train: skipped 1 images: corrupt_image=1" in res.table()
    assert "test: skipped 2 images: corrupt_image=2" in res.table()


@pytest.mark.shared_data
def test_probe_on_real_cifar_features_matches_sklearn(shared_dir, tiny):
    """Real features of the tiny model on a few hundred CIFAR-10 images."""
    from sklearn.linear_model import LogisticRegression

    from kizuna.eval.encode import encode_images

    model, _ = tiny
    data = shared_dir / "data" / "cifar10"
    train, test = load_dataset(data, split="train", max_samples=300), load_dataset(data, split="test", max_samples=200)
    ftr = encode_images(model, train, batch_size=100, progress=False).features
    fte = encode_images(model, test, batch_size=100, progress=False).features
    l2 = 1e-3
    ours = fit_logistic_regression(ftr, train.labels, 10, l2).accuracy(fte, test.labels)
    sk = LogisticRegression(C=1 / (l2 * 300), max_iter=5000, tol=1e-8).fit(ftr.numpy(), train.labels)
    assert abs(ours - sk.score(fte.numpy(), test.labels)) <= 0.005


def test_classes_without_training_images_are_named_in_the_notes():
    """A class with no training images (a subset of the training split) was left out of the few-shot rule
    silently: "1-shot" was reported for a probe that never saw three classes."""
    rng = np.random.default_rng(0)
    y_train = np.array([0, 0, 0, 1, 1, 1, 3, 3, 3])  # class 2 has none
    x_train = rng.normal(size=(9, 4)) + np.eye(4)[y_train] * 3
    y_test = np.array([0, 1, 2, 3])
    x_test = rng.normal(size=(4, 4)) + np.eye(4)[y_test] * 3
    res = linear_probe_from_features(x_train, y_train, x_test, y_test, 4, few_shot=[1], seeds=1,
                                     classnames=["cat", "dog", "frog", "ship"])
    assert res.notes == ["1 class has no training images (frog): no probe can predict it, so its test images "
                         "count as errors"]
    assert res.notes[0] in res.table() and 1 in res.few_shot


def test_a_fit_stopped_by_its_iteration_cap_is_said():
    """Few-shot fits on separable features with a small penalty stopped at 1000 iterations, unconverged, and
    their accuracy then moved with the encoding's batch size (features 1e-7 apart); nothing said so."""
    g = torch.Generator().manual_seed(0)
    y = torch.arange(4).repeat(8)
    x = torch.randn(32, 16, generator=g) + 3 * torch.nn.functional.one_hot(y, 16).double()  # separable
    assert fit_logistic_regression(x, y, 4, 1e-6, max_iter=5).stopped_at_cap
    assert not fit_logistic_regression(x, y, 4, 1e-2).stopped_at_cap
    capped = linear_probe_from_features(x, y.numpy(), x, y.numpy(), 4, few_shot=(2,), seeds=2, max_iter=3)
    assert "3 of 3 fits stopped at the iteration cap (3)" in " ".join(capped.notes)
    assert not any("iteration cap" in n for n in linear_probe_from_features(x, y.numpy(), x, y.numpy(), 4,
                                                                          few_shot=(2,), seeds=2).notes)
