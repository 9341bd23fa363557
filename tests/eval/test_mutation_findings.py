"""Tests written from a mutation-testing hunt: each pins a number a user sees that no other test checked.

Every expected value comes from an independent reference (the formula written out here, numpy, sklearn or a
hand count), not from the function under test.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import kizuna
from kizuna.eval import linear_probe as lp
from kizuna.eval.classification import classify_scores, rank_classes
from kizuna.eval.retrieval import retrieval_from_features, retrieval_metrics
from kizuna.eval.zeroshot import ZeroShotClassifier

CLASSES = ["cat", "dog", "car"]


# ----------------------------------------------------------------------------------- zero-shot probabilities
def _tiny_model(name: str, logit_scale: float, logit_bias: float | None):
    torch.manual_seed(0)
    model = kizuna.create_model(name).eval()
    with torch.no_grad():
        model.logit_scale.fill_(logit_scale)
        if logit_bias is not None:
            model.logit_bias.fill_(logit_bias)
    return model, kizuna.get_tokenizer(model)


def _reference_cosines(model, tok, images, classnames, template="a photo of a {c}."):
    """Cosine of each image with each class's (single-template) normalised text embedding, written out."""
    with torch.no_grad():
        img = F.normalize(model.encode_image(images).float(), dim=-1)
        txt = F.normalize(model.encode_text(tok([template.replace("{c}", c) for c in classnames])).float(), dim=-1)
    return img @ txt.T


def _images(model, n=2):
    g = torch.Generator().manual_seed(1)
    size = model.cfg.vision.image_size
    return torch.randn(n, 3, size, size, generator=g)


def test_clip_zero_shot_probabilities_are_softmax_of_the_scaled_cosines():
    """predict_proba of a CLIP model = softmax(exp(t) * cos) over the classes (CLIP paper, Fig. 3). Without the
    temperature the probabilities of a random model were all ~1/3."""
    model, tok = _tiny_model("ViT-mu-8", math.log(100.0), None)
    images = _images(model)
    cos = _reference_cosines(model, tok, images, CLASSES)
    expected = torch.softmax(100.0 * cos, dim=-1)
    got = ZeroShotClassifier(model, tok, CLASSES).predict_proba(images)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    # the check has power: the temperature moves these probabilities well away from softmax(cos)
    assert (torch.softmax(cos, dim=-1) - expected).abs().max() > 0.05


def test_siglip_zero_shot_probabilities_are_sigmoid_of_scaled_cosines_plus_bias():
    """predict_proba of a SigLIP model = sigmoid(exp(t) * cos + b) per class (SigLIP paper, Alg. 1): not a
    softmax, and with the bias (dropped, a random model's 2e-5 became 0.34)."""
    model, tok = _tiny_model("siglip-mu-8", math.log(20.0), -4.0)
    assert model.cfg.loss == "siglip"
    images = _images(model)
    cos = _reference_cosines(model, tok, images, CLASSES)
    expected = torch.sigmoid(20.0 * cos - 4.0)
    clf = ZeroShotClassifier(model, tok, CLASSES)
    got = clf.predict_proba(images)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(clf.logits(images), 20.0 * cos - 4.0, atol=1e-4, rtol=1e-4)
    # each of the three ingredients matters at these values
    for wrong in (torch.sigmoid(20.0 * cos), torch.sigmoid(cos - 4.0), torch.softmax(20.0 * cos - 4.0, dim=-1)):
        assert (wrong - expected).abs().max() > 0.01


def test_siglip_default_init_probabilities_are_tiny():
    """At SigLIP's initialisation (t = log 10, b = -10) every sigmoid is near sigmoid(-10) = 4.5e-5."""
    model, tok = _tiny_model("siglip-mu-8", math.log(10.0), -10.0)
    probs = ZeroShotClassifier(model, tok, CLASSES).predict_proba(_images(model))
    assert float(probs.max()) < torch.sigmoid(torch.tensor(10.0 * 1.0 - 10.0)).item()  # cos <= 1
    assert float(probs.max()) < 1e-2


def test_zero_shot_topk_ties_go_to_the_lower_class_index():
    """Documented: tied probabilities are ordered by class index (as rank_classes). All class weights zero:
    every class scores exactly 0 and gets probability exactly 1/40."""
    model, tok = _tiny_model("ViT-mu-8", math.log(100.0), None)
    names = [f"class{i}" for i in range(40)]
    clf = ZeroShotClassifier(model, tok, names[:2])
    clf.classnames = names
    clf.weights = torch.zeros(40, clf.weights.shape[1])
    top = clf.topk(_images(model, 3), k=5)
    assert [[name for name, _ in row] for row in top] == [names[:5]] * 3
    assert all(p == pytest.approx(1 / 40) for row in top for _, p in row)


# ----------------------------------------------------------------------------------- classification metrics
def _scores_for(preds, c):
    """One-hot-ish scores [N, C] whose argmax is ``preds`` (no ties)."""
    s = torch.zeros(len(preds), c)
    s[torch.arange(len(preds)), torch.as_tensor(preds)] = 1.0
    return s


def test_mean_per_class_recall_is_over_the_classes_present():
    """A class with no test images is no 0-recall class: mean per-class recall = sklearn's balanced accuracy
    (CLIP_benchmark's mean per-class recall) over the classes with images."""
    from sklearn.metrics import balanced_accuracy_score

    y = [0, 0, 1, 1]
    p = [0, 0, 1, 2]  # class 2 has no test images, but is predicted once
    res = classify_scores(_scores_for(p, 3), y, CLASSES)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "y_pred contains classes not in y_true"
        expected = balanced_accuracy_score(y, p)
    assert expected == pytest.approx(0.75)
    assert res.metrics["mean_per_class_recall"] == pytest.approx(expected)
    assert res.metrics["acc1"] == pytest.approx(0.75)


def test_top5_of_exactly_five_classes_is_one():
    """k <= C: top-5 over 5 classes always holds the label (1.0); NaN is only for fewer than 5 classes."""
    names = ["a", "b", "c", "d", "e"]
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(6, 5, generator=g)
    res = classify_scores(scores, [0, 1, 2, 3, 4, 0], names)
    assert res.metrics["acc5"] == 1.0
    assert math.isnan(classify_scores(scores[:, :4], [0, 1, 2, 3, 0, 1], names[:4]).metrics["acc5"])


def test_per_class_precision_recall_and_most_confused_match_sklearn():
    from sklearn.metrics import confusion_matrix, precision_score, recall_score

    y = [0, 0, 0, 0, 1, 1, 2, 2, 2]
    p = [0, 0, 0, 1, 1, 0, 2, 0, 1]
    res = classify_scores(_scores_for(p, 3), y, CLASSES)
    rows = res.per_class
    np.testing.assert_array_equal(res.confusion, confusion_matrix(y, p, labels=[0, 1, 2]))
    prec = precision_score(y, p, average=None, labels=[0, 1, 2], zero_division=np.nan)
    rec = recall_score(y, p, average=None, labels=[0, 1, 2])
    assert [r["precision"] for r in rows] == pytest.approx(list(prec))  # 3/5, 1/3, 1/1
    assert [r["recall"] for r in rows] == pytest.approx(list(rec))  # 3/4, 1/2, 1/3
    assert list(prec) != pytest.approx(list(rec))
    # most confused with: the largest off-diagonal count of the row, never the class itself
    assert [(r["most_confused_with"], r["confused_count"]) for r in rows] == [("dog", 1), ("cat", 1), ("cat", 1)]
    assert [r["n"] for r in rows] == [4, 2, 3] and [r["correct"] for r in rows] == [3, 1, 1]


def test_tied_scores_rank_the_lower_class_index_first():
    """Documented: ties go to the lower class index (stable sort), deterministically."""
    scores = torch.zeros(4, 40)
    assert rank_classes(scores, 5).tolist() == [[0, 1, 2, 3, 4]] * 4
    res = classify_scores(scores, [0, 1, 0, 3], [f"c{i}" for i in range(40)])
    assert res.predictions.tolist() == [0, 0, 0, 0]
    assert res.metrics["acc1"] == 0.5
    assert res.metrics["acc5"] == 1.0


# ----------------------------------------------------------------------------------- retrieval
def _numpy_ranks(img, txt, t2i):
    """0-based ranks written out: stable descending argsort, position of the first correct item."""
    sim = img.numpy().astype(np.float64) @ txt.numpy().astype(np.float64).T
    t2i = np.asarray(t2i)
    i2t = []
    for i in range(sim.shape[0]):
        order = np.argsort(-sim[i], kind="stable")
        i2t.append(int(np.flatnonzero(t2i[order] == i)[0]))
    t2i_r = []
    for t in range(sim.shape[1]):
        order = np.argsort(-sim[:, t], kind="stable")
        t2i_r.append(int(np.flatnonzero(order == t2i[t])[0]))
    return np.array(i2t), np.array(t2i_r)


def test_retrieval_mean_rank_recalls_and_clip_benchmark_aliases():
    g = torch.Generator().manual_seed(3)
    n_img, caps = 12, 2
    img = F.normalize(torch.randn(n_img, 8, generator=g), dim=-1)
    t2i = torch.arange(n_img).repeat_interleave(caps)
    txt = F.normalize(img[t2i] + 0.9 * torch.randn(n_img * caps, 8, generator=g), dim=-1)
    # round to a coarse grid so the float32 and float64 similarities order alike
    img, txt = (torch.round(x * 64) / 64 for x in (img, txt))
    r_i2t, r_t2i = _numpy_ranks(img, txt, t2i)
    m = retrieval_from_features(img, txt, t2i).metrics
    for name, r in (("image_to_text", r_i2t), ("text_to_image", r_t2i)):
        assert m[f"{name}_mean_rank"] == pytest.approx(float(np.mean(r + 1)))  # 1-based, like the median
        assert m[f"{name}_median_rank"] == pytest.approx(float(np.median(r + 1)))
        for k in (1, 5, 10):
            assert m[f"{name}_R@{k}"] == pytest.approx(float(np.mean(r < k)))
    differ = [k for k in (1, 5, 10) if np.mean(r_i2t < k) != np.mean(r_t2i < k)]
    assert differ  # the aliases below are checked where the two directions disagree
    for k in (1, 5, 10):
        # CLIP_benchmark: text retrieval = image -> text, image retrieval = text -> image
        assert m[f"text_retrieval_recall@{k}"] == pytest.approx(float(np.mean(r_i2t < k)))
        assert m[f"image_retrieval_recall@{k}"] == pytest.approx(float(np.mean(r_t2i < k)))


def test_retrieval_mean_rank_is_one_based_by_hand():
    m = retrieval_metrics(torch.tensor([0, 2, 5, -1]), torch.tensor([0, 0, 1, 9]))
    assert m["image_to_text_mean_rank"] == pytest.approx((1 + 3 + 6) / 3)  # rank -1: no caption, left out
    assert m["text_to_image_mean_rank"] == pytest.approx((1 + 1 + 2 + 10) / 4)
    assert m["text_retrieval_recall@1"] == pytest.approx(1 / 3)
    assert m["image_retrieval_recall@1"] == pytest.approx(2 / 4)
    assert m["text_retrieval_recall@5"] == pytest.approx(2 / 3)
    assert m["image_retrieval_recall@5"] == pytest.approx(3 / 4)


# ----------------------------------------------------------------------------------- linear probe
def test_matching_shots_interpolates_on_log2_k():
    """zeroshot_matches_k_shot: the k at which the mean few-shot accuracy reaches the zero-shot accuracy,
    linearly interpolated on log2 k between the two tried sizes that bracket it."""
    few = {1: [0.2], 2: [0.4], 4: [0.6]}
    # 0.45 is a quarter of the way from 0.4 (k=2) to 0.6 (k=4): log2 k = 1 + 0.25
    assert lp._matching_shots(few, 0.45) == pytest.approx(2 ** 1.25)
    assert lp._matching_shots(few, 0.55) == pytest.approx(2 ** 1.75)
    assert lp._matching_shots(few, 0.3) == pytest.approx(2 ** 0.5)
    # met exactly at a tried k: that k (not "beats every probe tried")
    assert lp._matching_shots(few, 0.4) == pytest.approx(2.0)
    assert lp._matching_shots(few, 0.6) == pytest.approx(4.0)
    assert lp._matching_shots(few, 0.1) == 1.0
    assert lp._matching_shots(few, 0.7) == float("inf")


def _blobs(n_per_class, c=3, d=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    centers = 2.0 * torch.randn(c, d, generator=g)
    y = torch.arange(c).repeat_interleave(n_per_class)
    x = centers[y] + torch.randn(len(y), d, generator=g)
    return F.normalize(x, dim=-1).double(), y.numpy()


def test_lp_c_is_sklearn_c_of_the_chosen_lambda():
    """Documented: lambda is sklearn's LogisticRegression(C = 1 / (lambda * n)), n the training samples."""
    x, y = _blobs(10)
    xt, yt = _blobs(4, seed=1)
    res = lp.linear_probe_from_features(x, y, xt, yt, 3, few_shot=(), seeds=1, grid=(1e-2, 1e-1))
    n = len(y)
    assert res.metrics["lp_l2"] == res.l2
    assert res.metrics["lp_C"] == pytest.approx(1.0 / (res.l2 * n))


def test_lp_c_gives_the_same_fit_in_sklearn():
    """The reported C, given to sklearn, fits the probe that lambda fits here (the equivalence the doc states)."""
    from sklearn.linear_model import LogisticRegression

    x, y = _blobs(10)
    xt, yt = _blobs(4, seed=1)
    res = lp.linear_probe_from_features(x, y, xt, yt, 3, few_shot=(), seeds=1, grid=(1e-1, 1.0))
    probe = lp.fit_logistic_regression(x, y, 3, res.l2)
    sk = LogisticRegression(C=res.metrics["lp_C"], tol=1e-10, max_iter=10000).fit(x.numpy(), y)
    np.testing.assert_allclose(probe.weight.numpy(), sk.coef_, atol=2e-4)


def test_few_shot_validation_draw_is_disjoint_from_the_shots(monkeypatch):
    """The few-shot lambda is chosen on a validation draw disjoint from the k training shots (module doc)."""
    x, y = _blobs(3)  # 3 per class: a 1-shot draw and its 1-image validation draw overlap by chance if allowed
    xt, yt = _blobs(2, seed=1)
    x = x + torch.arange(len(y), dtype=x.dtype)[:, None] * 1e-3  # every row distinct
    seen = []
    real = lp._sweep_l2

    def spy(x_tr, y_tr, x_va, y_va, *a, **kw):
        seen.append((x_tr.clone(), x_va.clone()))
        return real(x_tr, y_tr, x_va, y_va, *a, **kw)

    monkeypatch.setattr(lp, "_sweep_l2", spy)
    lp.linear_probe_from_features(x, y, xt, yt, 3, few_shot=(1, 2), seeds=6, grid=(1e-2, 1e-1), max_iter=200)
    few = seen[1:]  # the first sweep is the full probe's (a stratified split, disjoint by construction)
    assert len(few) == 12
    for x_tr, x_va in few:
        same = (x_tr[:, None, :] == x_va[None, :, :]).all(-1)
        assert not bool(same.any()), "a validation image is one of the training shots"


def test_select_l2_ties_go_to_the_larger_lambda():
    """Documented: among lambdas with the best validation accuracy, the larger (stronger regularisation) wins;
    the few-shot probes sweep without refinement, where that choice is the answer."""
    x, y = _blobs(6, d=3, seed=0)
    x = F.normalize(torch.eye(3, dtype=torch.float64)[torch.as_tensor(y)] + 0.05 * x, dim=-1)  # well separated
    x_tr, y_tr, x_va, y_va = x[::2], y[::2], x[1::2], y[1::2]
    grid = (1e-3, 1e-2, 1e-1)
    best, sweep = lp.select_l2(x_tr, y_tr, x_va, y_va, 3, grid=grid, refine=False)
    assert [acc for _, acc in sweep] == [1.0, 1.0, 1.0]  # all tied
    assert best == 1e-1
    best, sweep = lp.select_l2(x_tr, y_tr, x_va, y_va, 3, grid=grid, refine=True)
    lams = [lam for lam, _ in sweep]
    # refined around the best grid point (the largest of the tied ones): its half-step neighbours were tried
    assert any(lam == pytest.approx(1e-1 * math.sqrt(10)) for lam in lams)
    top = max(acc for _, acc in sweep)
    assert best == max(lam for lam, acc in sweep if acc == top)
