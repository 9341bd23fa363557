"""Linear probes on frozen features, full and few-shot (CLIP paper, Sec. 3.2 and Fig. 6-7).

    train = load_dataset(root, split="train"); test = load_dataset(root, split="test")
    res = evaluate_linear_probe(model, train, test, few_shot=(1, 2, 4, 8, 16), seeds=3,
                                zeroshot_acc=zeroshot_over_train_classes(model, tokenizer, train, test))
    print(res.table()); res.plot("zeroshot_vs_probe.png")

The classifier is multinomial logistic regression fitted in torch, full batch with L-BFGS (strong
Wolfe line search) in float64 on the CPU, minimising

    mean_i cross_entropy(W x_i + b, y_i) + (lambda / 2) * ||W||^2        (the bias is not penalised)

which is scikit-learn's ``LogisticRegression(C=1 / (lambda * n))`` objective. lambda is chosen as the
CLIP paper does, by a sweep on a validation split carved from the training data (stratified, 20% by
default): a log-spaced coarse grid, then a finer grid around the best value; the probe is then refitted
on the whole training set with the chosen lambda.

Few-shot: for k in (1, 2, 4, 8, 16), ``k`` images per class are drawn from the training split for each
seed; lambda is chosen on a disjoint validation draw of (up to) ``k`` images per class, and the probe is
fitted on the k shots only. Reported as mean +- std over seeds. Features are L2-normalised image
embeddings (the same the zero-shot classifier scores).
"""
from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from kizuna.data.sources import SkipCounter

from .classification import refuse_one_class, whole_labels
from .encode import as_tensor, check_finite, encode_images, is_count, is_main

__all__ = [
    "LinearProbe", "ProbeResult", "evaluate_linear_probe", "few_shot_indices", "fit_logistic_regression",
    "linear_probe_from_features", "plot_zeroshot_vs_probe", "select_l2", "stratified_split",
    "zeroshot_over_train_classes",
]

COARSE_GRID = tuple(10.0 ** e for e in range(-6, 1))  # 1e-6 .. 1 (features have unit norm)
FEW_SHOT = (1, 2, 4, 8, 16)
TOL = 1e-6  # a fit stops when its largest gradient entry is below this (or at its iteration cap)
FEW_SHOT_FALLBACK_L2 = 1e-3  # a k-shot fit's penalty when no images are left to choose it on (k = a class's count)


@dataclass
class LinearProbe:
    weight: torch.Tensor  # [C, D]
    bias: torch.Tensor  # [C]
    l2: float
    iterations: int = 0
    loss: float = float("nan")
    stopped_at_cap: bool = False  # L-BFGS ran out of iterations (or evaluations) before its tolerances

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        # (features on a GPU, the probe on the CPU where it was fitted: fit_logistic_regression takes them so too)
        return x.to(self.weight.device, self.weight.dtype) @ self.weight.T + self.bias

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        x = as_tensor(x, "x")
        check_finite(x, None, "probe inputs")  # a NaN row's logits argmax to class 0
        return self.logits(x).argmax(dim=1)

    def accuracy(self, x: torch.Tensor, y) -> float:
        y = torch.as_tensor(whole_labels(y, "y"))  # (a label 1.5 was class 1)
        x = as_tensor(x, "x")
        _same_length(x, y, "x", "y")
        return float((self.predict(x) == y).double().mean()) if len(y) else float("nan")


def seed_std(values) -> float | None:
    """The spread of a few-shot accuracy over its seeds: the sample standard deviation (the seeds are a sample of
    draws; the population one gave |a - b| / 2 for two), None for one seed, which measured no spread (it read
    0.00), as compare-runs' spread."""
    values = [float(v) for v in values]
    return statistics.stdev(values) if len(values) > 1 else None


def _same_length(x, y, x_name: str, y_name: str) -> None:
    """A row per label: 50 rows with 60 labels failed with "index 52 is out of bounds", deep in the fit."""
    if len(x) != len(y):
        raise ValueError(f"{x_name} has {len(x)} rows but {y_name} has {len(y)} labels: give one label per row")


def fit_logistic_regression(x: torch.Tensor, y, num_classes: int, l2: float, max_iter: int = 5000,
                            tol: float = TOL, init: LinearProbe | None = None,
                            dtype: torch.dtype = torch.float64) -> LinearProbe:
    """Multinomial logistic regression, full-batch L-BFGS (see module doc for the objective).
    ``tol``: stop when the largest gradient entry is below it. The gradient is written out by hand
    (no autograd graph per evaluation): the fits are small and many (lambda sweeps, few-shot seeds)."""
    x = as_tensor(x, "x").detach().to("cpu", dtype)
    check_finite(x, None, "probe training inputs")  # a NaN ran every fit to the iteration cap, and gave a probe
    y = torch.as_tensor(whole_labels(y, "y"))
    _same_length(x, y, "x", "y")
    n, d = x.shape
    if n == 0:
        raise ValueError("no training samples")
    if int(y.min()) < 0 or int(y.max()) >= num_classes:
        raise ValueError(f"labels must be in 0..{num_classes - 1}")
    onehot = F.one_hot(y, num_classes).to(dtype)
    # Fitted on centred features: the bias is not penalised, so it is the same objective and the same minimum (the
    # bias moved by w . mean), but far better conditioned where the features share a large common part. A random
    # model's features (cosines 0.9996) stopped a strong penalty's fit after one iteration with its gradient under
    # the tolerance, 71% of its predictions off the minimum's: a 16-shot lambda and accuracy 3.6 points off
    # scikit-learn's.
    mean = x.mean(0)
    x = x - mean
    w = torch.zeros(num_classes, d, dtype=dtype) if init is None else init.weight.clone().to(dtype)
    b = torch.zeros(num_classes, dtype=dtype) if init is None else init.bias.clone().to(dtype) + w @ mean
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, max_eval=int(max_iter * 1.25),
                            tolerance_grad=tol, tolerance_change=1e-12, history_size=20,
                            line_search_fn="strong_wolfe")
    state = {"loss": float("nan")}

    def closure():
        logits = torch.addmm(b, x, w.T)
        logp = torch.log_softmax(logits, dim=1)
        loss = -(logp * onehot).sum() / n + 0.5 * l2 * float((w * w).sum())
        g = (logp.exp() - onehot) / n  # d loss / d logits
        w.grad = g.T @ x + l2 * w
        b.grad = g.sum(0)
        state["loss"] = float(loss)
        return loss

    threads = torch.get_num_threads()
    small = n * d * num_classes < 2_000_000  # tiny problems: threads only add sync overhead
    if small:
        torch.set_num_threads(1)
    try:
        with torch.no_grad():
            opt.step(closure)
    finally:
        if small:
            torch.set_num_threads(threads)
    run = opt.state[opt._params[0]]
    iters, evals = int(run.get("n_iter", 0)), int(run.get("func_evals", 0))
    return LinearProbe(w.clone(), b - w @ mean, float(l2), iters, state["loss"],  # (the bias for uncentred inputs)
                       stopped_at_cap=iters >= max_iter or evals >= int(max_iter * 1.25))


def stratified_split(y, val_fraction: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, validation indices), ``val_fraction`` of every class (at least one sample of a
    class with >= 2 samples) held out; sorted."""
    y = np.asarray(y)
    rng = np.random.default_rng(seed)
    tr, va = [], []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        rng.shuffle(idx)
        k = int(round(len(idx) * val_fraction))
        k = min(max(k, 1 if len(idx) >= 2 else 0), len(idx) - 1) if len(idx) >= 2 else 0
        va.extend(idx[:k])
        tr.extend(idx[k:])
    return np.sort(np.asarray(tr, dtype=np.int64)), np.sort(np.asarray(va, dtype=np.int64))


def few_shot_indices(y, k: int, seed: int, exclude: np.ndarray | None = None) -> np.ndarray:
    """``k`` indices per class (fewer where a class has fewer), drawn with ``seed``, sorted."""
    y = np.asarray(y)
    rng = np.random.default_rng([seed % 2**64, k])  # numpy refuses seeds < 0
    excluded = np.zeros(len(y), dtype=bool)
    if exclude is not None and len(exclude):
        excluded[exclude] = True
    out = []
    for c in np.unique(y):
        idx = np.flatnonzero((y == c) & ~excluded)
        out.extend(rng.permutation(idx)[:k])
    return np.sort(np.asarray(out, dtype=np.int64))


def select_l2(x_tr, y_tr, x_va, y_va, num_classes: int, grid: Sequence[float] = COARSE_GRID, refine: bool = True,
              max_iter: int = 5000, tol: float = TOL) -> tuple[float, list[tuple[float, float]]]:
    """lambda with the best validation accuracy (ties: the larger lambda) and the sweep ``[(lambda, acc)]``.
    Runs from strong to weak regularisation, warm-starting each fit from the previous one; the sweep's
    fits run to the final fit's ``max_iter`` and ``tol``."""
    best, sweep, _ = _sweep_l2(x_tr, y_tr, x_va, y_va, num_classes, grid, refine, max_iter, tol)
    return best, sweep


def _sweep_l2(x_tr, y_tr, x_va, y_va, num_classes: int, grid: Sequence[float], refine: bool, max_iter: int,
              tol: float) -> tuple[float, list[tuple[float, float]], list[bool]]:
    """:func:`select_l2`, with whether each of its fits stopped at the iteration cap. The sweep's fits once stopped
    at 300 iterations (gradient 1e-5): a weak lambda's fit was unconverged, its validation accuracy moved with
    the encoding's batch size (features 7e-8 apart), and so did the chosen lambda (100x) and the probe's
    accuracy. Run to convergence, each fit is the objective's minimum; the warm starts keep that cheap."""
    sweep: dict[float, float] = {}
    fits: dict[float, LinearProbe] = {}
    init = None
    for lam in sorted(grid, reverse=True):
        init = fits[lam] = fit_logistic_regression(x_tr, y_tr, num_classes, lam, max_iter=max_iter, tol=tol,
                                                   init=init)
        sweep[lam] = init.accuracy(x_va, y_va)
    best = max(sorted(sweep, reverse=True), key=lambda lam: sweep[lam])
    if refine and len(grid) > 1:
        ratio = math.sqrt(sorted(grid)[1] / sorted(grid)[0])  # half a grid step
        start = fits[best]
        for lam in (best * ratio, best / ratio):
            if lam not in sweep:  # warm-started from the best grid point's fit, its neighbour
                fits[lam] = fit_logistic_regression(x_tr, y_tr, num_classes, lam, max_iter=max_iter, tol=tol,
                                                    init=start)
                sweep[lam] = fits[lam].accuracy(x_va, y_va)
        best = max(sorted(sweep, reverse=True), key=lambda lam: sweep[lam])
    return best, sorted(sweep.items()), [f.stopped_at_cap for f in fits.values()]


@dataclass
class ProbeResult:
    metrics: dict[str, float]  # lp_acc1, zeroshot_acc1, fewshot_{k}_mean/_std, ...
    l2: float
    sweep: list[tuple[float, float]]
    few_shot: dict[int, list[float]] = field(default_factory=dict)  # k -> accuracy per seed
    zeroshot_acc: float | None = None
    num_classes: int = 0
    num_train: int = 0
    num_test: int = 0
    dataset: str = ""
    notes: list[str] = field(default_factory=list)  # few-shot sizes skipped, and why
    train_skipped: SkipCounter = field(default_factory=SkipCounter)  # images left out (corrupt, unreadable)
    test_skipped: SkipCounter = field(default_factory=SkipCounter)

    def table(self) -> str:
        from kizuna.apps.common import format_table

        rows = []
        if self.zeroshot_acc is not None:
            rows.append(["zero-shot", "-", f"{100 * self.zeroshot_acc:.2f}", ""])
        for k, accs in sorted(self.few_shot.items()):
            std = seed_std(accs)
            rows.append([f"linear probe, {k}-shot", len(accs), f"{100 * np.mean(accs):.2f}",
                         "-" if std is None else f"{100 * std:.2f}"])
        rows.append([f"linear probe, all ({self.num_train})", 1, f"{100 * self.metrics['lp_acc1']:.2f}", ""])
        text = format_table(rows, ["classifier", "seeds", "top-1 %", "std %"])
        eff = self.metrics.get("zeroshot_matches_k_shot")
        ks = sorted(self.few_shot)
        if eff is not None and eff == eff and ks and self.zeroshot_acc is not None:
            if eff == float("inf"):
                text += f"\nzero-shot beats every few-shot linear probe tried (up to {ks[-1]} per class)"
            elif eff <= ks[0] and np.mean(self.few_shot[ks[0]]) > self.zeroshot_acc + SAME_ACCURACY:
                text += f"\nzero-shot is below even the {ks[0]}-shot linear probe"
            else:
                text += f"\nzero-shot matches a {eff:.1f}-shot linear probe (interpolated on log2 k)"
        skips = [f"{split}: {c.report('images')}" for split, c in (("train", self.train_skipped),
                                                                  ("test", self.test_skipped)) if c]
        return "\n".join([text, *self.notes, *skips])

    def to_dict(self) -> dict:
        return {"metrics": self.metrics, "l2": self.l2, "sweep": [list(s) for s in self.sweep],
                "few_shot": {str(k): v for k, v in self.few_shot.items()}, "num_classes": self.num_classes,
                "num_train": self.num_train, "num_test": self.num_test, "notes": list(self.notes),
                "train_skipped": self.train_skipped.as_dict(), "test_skipped": self.test_skipped.as_dict()}

    def plot(self, path, title: str | None = None) -> Path:
        return plot_zeroshot_vs_probe(self, path, title=title)


# accuracies closer than this are the same number (a mean of three 0.1s is 0.10000000000000002: "zero-shot is below
# even the 1-shot linear probe" was said of two equal accuracies)
SAME_ACCURACY = 1e-9


def _matching_shots(few: dict[int, list[float]], target: float) -> float:
    """k (log2-interpolated) at which the mean few-shot accuracy first reaches ``target``."""
    ks = sorted(few)
    means = [float(np.mean(few[k])) for k in ks]
    if not ks or target is None or target != target:  # NaN: no zero-shot accuracy to match (read as inf: "beats all")
        return float("nan")
    means = [target if abs(m - target) <= SAME_ACCURACY else m for m in means]
    if means[0] >= target:
        return float(ks[0])  # matched by the fewest shots tried (or fewer)
    for (k0, m0), (k1, m1) in zip(zip(ks, means), zip(ks[1:], means[1:])):
        if m1 >= target > m0:
            t = (target - m0) / (m1 - m0)
            return float(2 ** (math.log2(k0) + t * (math.log2(k1) - math.log2(k0))))
    return float("inf")


def _class_indices(labels, name: str, num_classes: int) -> np.ndarray:
    """``labels`` as int64 class indices in 0..num_classes-1. Labels read from a parquet or CSV file come as floats
    (numpy's bincount refused them, 8 frames deep); a test label past the classes counted as an error silently."""
    y = whole_labels(labels, name)
    if y.size and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(f"{name}: labels must be in 0..{num_classes - 1} for {num_classes} classes, got "
                         f"{int(y.min())}..{int(y.max())}")
    return y


def linear_probe_from_features(x_train, y_train, x_test, y_test, num_classes: int, *,
                               few_shot: Sequence[int] = FEW_SHOT, seeds: int = 3, val_fraction: float = 0.2,
                               grid: Sequence[float] = COARSE_GRID, zeroshot_acc: float | None = None, seed: int = 0,
                               max_iter: int = 5000, dataset: str = "", progress: bool = False,
                               classnames: Sequence[str] = ()) -> ProbeResult:
    """``progress``: a bar over the fits (the full probe's L2 sweep, then every few-shot seed), which take
    seconds to minutes after the encoding's bars have gone. ``classnames`` name the classes in the notes."""
    from .encode import progress_bar

    if not is_count(num_classes, -2 ** 63):  # (3.0 failed in torch's one_hot, five frames down)
        raise ValueError(f"num_classes must be a whole number, got {num_classes!r}")
    num_classes = int(num_classes)
    if num_classes < 2:  # every probe predicts the one class: 100% whatever the features
        raise ValueError(f"num_classes {num_classes}: a linear probe needs at least two classes to choose between")
    y_train, y_test = _class_indices(y_train, "y_train", num_classes), _class_indices(y_test, "y_test", num_classes)
    few_shot = list(dict.fromkeys(few_shot))  # a k given twice was fitted twice, its notes printed twice
    # seeds=0 reported a few-shot mean of nan beside numpy's warnings; k=0 failed as "no training samples"
    if few_shot and not is_count(seeds):
        raise ValueError(f"seeds must be a whole number >= 1 (few-shot draws per k), got {seeds!r}")
    if not all(is_count(k) for k in few_shot):
        raise ValueError(f"few_shot must hold whole numbers >= 1 (training images per class), got {few_shot!r}")
    # (without a bar: a line every 30 s, and no tqdm object, which fixed a host's multiprocessing start method)
    bar = progress_bar(total=1 + len(few_shot) * seeds, desc="fitting probes", enabled=progress, unit="fit")
    # on the CPU (the fits run there; CUDA test features met CPU weights), without a notebook's autograd graph
    x_train, x_test = (as_tensor(x, name).detach().cpu().double() for x, name in ((x_train, "x_train"),
                                                                                  (x_test, "x_test")))
    _same_length(x_train, y_train, "x_train", "y_train")
    _same_length(x_test, y_test, "x_test", "y_test")
    # NaN logits argmax to class 0: all-NaN test features scored class 0's share, a NaN in training ran every fit
    # to the iteration cap and still gave an accuracy
    check_finite(x_train, None, "x_train")
    check_finite(x_test, None, "x_test")
    tr, va = stratified_split(y_train, val_fraction, seed)
    if len(va) == 0:
        raise ValueError("too few training samples to carve a validation split (need >= 2 per class)")
    l2, sweep, sweep_capped = _sweep_l2(x_train[tr], y_train[tr], x_train[va], y_train[va], num_classes, grid,
                                        True, max_iter, TOL)
    probe = fit_logistic_regression(x_train, y_train, num_classes, l2, max_iter=max_iter)
    capped = [probe.stopped_at_cap]  # a fit stopped by the cap depends on float noise in the features
    bar.update(1)
    metrics = {"lp_acc1": probe.accuracy(x_test, y_test), "lp_l2": l2,
               "lp_C": 1.0 / (l2 * len(y_train))}
    few: dict[int, list[float]] = {}
    counts = np.bincount(y_train, minlength=num_classes)
    present = counts[counts > 0]
    notes = []
    absent = np.flatnonzero(counts == 0)
    if len(absent):  # said, not skipped: a subset of the training split may well miss a class
        names = [str(classnames[i]) if i < len(classnames) else str(i) for i in absent]
        notes.append(f"{len(absent)} class{'es have' if len(absent) > 1 else ' has'} no training images "
                     f"({', '.join(names[:5])}{', ...' if len(names) > 5 else ''}): no probe can predict "
                     f"{'them' if len(absent) > 1 else 'it'}, so {'their' if len(absent) > 1 else 'its'} test "
                     "images count as errors")
    for k in few_shot:
        if k > present.min():  # not k-shot: some class would give all it has, and it would be called k-shot
            notes.append(f"{k}-shot skipped: a class has only {int(present.min())} training images")
            bar.update(seeds)
            continue
        accs = []
        unswept = False
        for s in range(seeds):
            shots = few_shot_indices(y_train, k, seed=seed * 1000 + s)
            val = few_shot_indices(y_train, k, seed=seed * 1000 + s + 500, exclude=shots)
            lam = FEW_SHOT_FALLBACK_L2
            if len(val):
                lam, _, caps = _sweep_l2(x_train[shots], y_train[shots], x_train[val], y_train[val], num_classes,
                                         grid, False, max_iter, TOL)
                sweep_capped += caps
            else:
                unswept = True
            fit = fit_logistic_regression(x_train[shots], y_train[shots], num_classes, lam, max_iter=max_iter)
            capped.append(fit.stopped_at_cap)
            accs.append(fit.accuracy(x_test, y_test))
            bar.update(1)
        few[k] = accs
        if unswept:  # every class gave all its images to the shots: nothing left to choose the penalty on
            notes.append(f"{k}-shot: no training images left for a validation draw, so the penalty is fixed at "
                         f"{FEW_SHOT_FALLBACK_L2:g} instead of swept")
        metrics[f"fewshot_{k}_acc1_mean"] = float(np.mean(accs))
        metrics[f"fewshot_{k}_acc1_std"] = seed_std(accs)
    bar.close()
    if any(capped):
        # A small penalty on separable features (few-shot) converges slowly: stopped at the cap, the fit's
        # accuracy moved with the encoding's batch size (features 1e-7 apart). 1000 iterations stopped 7 of 42
        # fits in a small CIFAR-10 run; they converged within 1,710.
        notes.append(f"{sum(capped)} of {len(capped)} fits stopped at the iteration cap ({max_iter}) before "
                     "converging: their accuracy is less certain")
    if any(sweep_capped):  # as above, but what moves is the validation accuracy that picks lambda
        notes.append(f"{sum(sweep_capped)} of {len(sweep_capped)} lambda-sweep fits stopped at the iteration cap "
                     f"({max_iter}) before converging: the lambda chosen is less certain")
    if zeroshot_acc is not None:
        metrics["zeroshot_acc1"] = float(zeroshot_acc)
        # NaN (null in JSON) when no few-shot probe ran, as EVALUATION.md says: the key was missing
        metrics["zeroshot_matches_k_shot"] = _matching_shots(few, zeroshot_acc) if few else float("nan")
    return ProbeResult(metrics, l2, sweep, few, zeroshot_acc, num_classes, len(y_train), len(y_test), dataset, notes)


def _test_labels_in_train_order(train, test) -> np.ndarray:
    """The test labels as indices into the training split's classes. Two ImageFolder splits number their
    classes by their own folders: a test split without one of the classes numbers the rest differently,
    and the probe would score every image against another class's label."""
    if list(train.classnames or ()) == list(test.classnames or ()):
        return test.labels
    where = {name: k for k, name in enumerate(train.classnames)}
    missing = [name for name in test.classnames if name not in where]
    if missing:
        from .datasets import DatasetError

        raise DatasetError(f"the test split ({test.source}) has classes the training split ({train.source}) lacks: "
                           f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}; the probe cannot "
                           "predict them")
    return np.array([where[name] for name in test.classnames], dtype=np.int64)[test.labels]


def zeroshot_over_train_classes(model, tokenizer, train, test, image_features=None, **kwargs) -> float:
    """Zero-shot top-1 on ``test`` over the training split's classes (the ones the probe predicts among), for
    the comparison with the probe; ``kwargs`` go to :func:`~kizuna.eval.classification.evaluate_zeroshot`."""
    from .classification import class_embeddings, classify_features, evaluate_zeroshot
    from .encode import encode_images
    from .zeroshot import text_list

    if list(train.classnames or ()) == list(test.classnames or ()):
        return evaluate_zeroshot(model, tokenizer, test, image_features=image_features, **kwargs).metrics["acc1"]
    model = getattr(model, "module", model)
    # the same kwargs as evaluate_zeroshot takes (a transform and workers given were dropped on this path)
    feats = image_features or encode_images(model, test, transform=kwargs.get("transform"),
                                            batch_size=kwargs.get("batch_size", 64), device=kwargs.get("device"),
                                            num_workers=kwargs.get("num_workers", 0),
                                            progress=kwargs.get("progress", False))
    given = kwargs.get("templates")  # [] is the dataset's, as evaluate_zeroshot reads it
    templates = (text_list(given, "templates") if given is not None else []) or list(
        test.templates or train.templates or ("a photo of a {c}.",))
    weights = class_embeddings(model, tokenizer, train.classnames, templates,
                               batch_size=kwargs.get("text_batch_size", 256), device=kwargs.get("device"),
                               cache_dir=kwargs.get("cache_dir"), progress=kwargs.get("progress", False))
    return classify_features(feats.features, _test_labels_in_train_order(train, test), weights, train.classnames,
                             valid=feats.valid).metrics["acc1"]


def evaluate_linear_probe(model, train, test, *, few_shot: Sequence[int] = FEW_SHOT, seeds: int = 3,
                          zeroshot_acc: float | None = None, batch_size: int = 64, device=None, num_workers: int = 0,
                          progress: bool = True, val_fraction: float = 0.2, grid: Sequence[float] = COARSE_GRID,
                          seed: int = 0, train_features=None, test_features=None) -> ProbeResult:
    """Frozen-feature linear probe (and few-shot probes) of ``model`` from a train and a test
    :class:`~kizuna.eval.datasets.EvalDataset` of the same classification dataset. Under torchrun the
    encoding is sharded; every rank then fits the same probes (deterministic), so all agree."""
    if train.task != "classification" or test.task != "classification":
        raise ValueError("the linear probe needs classification datasets (class labels)")
    refuse_one_class(train, "a linear probe")
    model = getattr(model, "module", model)
    yte = _test_labels_in_train_order(train, test)  # a test class the training split lacks: before any encoding
    ftr = train_features or encode_images(model, train, batch_size=batch_size, device=device, num_workers=num_workers,
                                          progress=progress, desc=f"linear probe {train.name}: train")
    fte = test_features or encode_images(model, test, batch_size=batch_size, device=device, num_workers=num_workers,
                                         progress=progress, desc=f"linear probe {test.name}: test")
    ytr = train.labels
    mtr, mte = ftr.valid.numpy(), fte.valid.numpy()
    res = linear_probe_from_features(ftr.features[ftr.valid], ytr[mtr], fte.features[fte.valid], yte[mte],
                                     max(train.num_classes, test.num_classes), few_shot=few_shot, seeds=seeds,
                                     val_fraction=val_fraction, grid=grid, zeroshot_acc=zeroshot_acc, seed=seed,
                                     dataset=test.name, progress=progress and is_main(),
                                     classnames=train.classnames or ())
    for counter, ds, feats in ((res.train_skipped, train, ftr), (res.test_skipped, test, fte)):
        counter.update(ds.skips)  # the images the probe left out, as the zero-shot result counts them
        counter.update(feats.skips)
    return res


def plot_zeroshot_vs_probe(result: ProbeResult | Sequence[ProbeResult], path, labels: Sequence[str] | None = None,
                           title: str | None = None) -> Path:
    """Top-1 accuracy against labelled examples per class (log2 axis) with mean +- std bands, the full
    linear probe as a dotted line and zero-shot as a dashed horizontal line (CLIP paper, Fig. 6)."""
    from matplotlib.figure import Figure

    results = [result] if isinstance(result, ProbeResult) else list(result)
    labels = list(labels) if labels else [r.dataset or f"model {i}" for i, r in enumerate(results)]
    fig = Figure(figsize=(6.4, 4.4), dpi=120, layout="constrained")
    ax = fig.subplots()
    for i, (r, name) in enumerate(zip(results, labels)):
        color = f"C{i}"
        ks = sorted(r.few_shot)
        if ks:
            m = np.array([np.mean(r.few_shot[k]) for k in ks]) * 100
            s = np.array([seed_std(r.few_shot[k]) or 0.0 for k in ks]) * 100  # (no band for one seed)
            ax.plot(ks, m, "o-", color=color, label=f"{name}: few-shot linear probe")
            ax.fill_between(ks, m - s, m + s, color=color, alpha=0.18, linewidth=0)
        ax.axhline(100 * r.metrics["lp_acc1"], color=color, linestyle=":", linewidth=1.4,
                   label=f"{name}: linear probe, all {r.num_train} ({100 * r.metrics['lp_acc1']:.1f}%)")
        if r.zeroshot_acc is not None:
            ax.axhline(100 * r.zeroshot_acc, color=color, linestyle="--", linewidth=1.8,
                       label=f"{name}: zero-shot ({100 * r.zeroshot_acc:.1f}%)")
    all_k = sorted({k for r in results for k in r.few_shot})
    if all_k:
        ax.set_xscale("log", base=2)
        ax.set_xticks(all_k, [str(k) for k in all_k])
        ax.set_xlabel("labelled training examples per class")
    else:  # only horizontal lines (--few-shot 0): an x scale of 0..1 would mean nothing
        ax.set_xticks([])
        ax.set_xlabel("(no few-shot probes: the full linear probe and zero-shot only)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title(title or "zero-shot vs linear probe")
    ax.grid(True, alpha=0.3)
    # below the axes: inside them (lower right) it sat on the zero-shot line
    fig.legend(*ax.get_legend_handles_labels(), fontsize=7, loc="outside lower center", frameon=False)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    from kizuna.models.checkpoint import save_figure

    save_figure(fig, path)  # (in place, Ctrl-C left a cut-off PNG)
    return path
