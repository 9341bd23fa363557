"""The linear probe against its inputs' edges (found comparing it with scikit-learn and CLIP's protocol)."""
import numpy as np
import pytest
import torch
from _evalhelpers import classification_wds, image_folder

from kizuna.eval.encode import NonFiniteFeatures
from kizuna.eval.linear_probe import linear_probe_from_features


def _features(n=40, d=8, classes=4, seed=0):
    g = np.random.default_rng(seed)
    y = np.arange(n) % classes
    x = g.normal(size=(n, d)) + 3 * np.eye(classes, d)[y]
    return x.astype(np.float32), y


@pytest.mark.parametrize("where", ["x_test", "x_train"])
def test_non_finite_features_are_refused_not_scored(where):
    """All-NaN test features scored class 0's share of the test labels (NaN logits argmax to 0); one NaN among the
    training features ran every fit to the iteration cap and still reported an accuracy. Refused as retrieval and
    classify_scores refuse them."""
    x_train, y_train = _features()
    x_test, y_test = _features(seed=1)
    if where == "x_test":
        x_test[:] = np.nan
    else:
        x_train[3, 2] = np.inf
    with pytest.raises(NonFiniteFeatures, match=f"{where}: .*NaN or inf features for 1|{where}: .*for 40 of 40"):
        linear_probe_from_features(x_train, y_train, x_test, y_test, 4, few_shot=[], seeds=1)


def test_the_lower_level_probe_refuses_non_finite_inputs():
    """fit_logistic_regression and LinearProbe.accuracy (exported) scored NaN features as class 0 too."""
    from kizuna.eval.linear_probe import fit_logistic_regression

    x, y = _features()
    probe = fit_logistic_regression(torch.from_numpy(x), y, 4, 1e-3)
    x[0, 0] = np.nan
    with pytest.raises(NonFiniteFeatures, match="probe inputs"):
        probe.accuracy(torch.from_numpy(x), y)
    with pytest.raises(NonFiniteFeatures, match="probe training inputs"):
        fit_logistic_regression(torch.from_numpy(x), y, 4, 1e-3)


def test_a_test_class_the_training_split_lacks_is_refused_before_any_encoding(tmp_path, monkeypatch):
    """It was refused only after both splits were encoded (minutes on a real dataset): check_run_datasets, which
    runs before the model loads, now checks the class names too."""
    from kizuna.eval.datasets import DatasetError
    from kizuna.eval.suite import _Context, check_run_datasets

    root = tmp_path / "ds"
    image_folder(root / "train", per_class=2, classes=["airplane", "cat"])
    image_folder(root / "test", per_class=1, classes=["airplane", "automobile", "bird", "cat"])

    def no_encoding(*a, **k):
        raise AssertionError("encoded images before checking the probe's classes")

    with pytest.raises(DatasetError, match="classes the training split .* lacks: automobile, bird"):
        check_run_datasets({"model": "m", "dataset": str(root), "task": ["linear_probe"]}, _Context("cpu"))
    import kizuna.eval.linear_probe as LP
    from kizuna.eval.datasets import load_dataset

    monkeypatch.setattr(LP, "encode_images", no_encoding)  # the Python API refuses before encoding too
    with pytest.raises(DatasetError, match="lacks: automobile, bird"):
        LP.evaluate_linear_probe(None, load_dataset(root, "train"), load_dataset(root, "test"), progress=False)


def test_zeroshot_false_leaves_the_zero_shot_row_out_also_beside_a_zeroshot_task(tmp_path, monkeypatch, tiny):
    """A run with tasks zeroshot and linear_probe and "zeroshot": false gave the probe the zero-shot task's
    accuracy anyway (a zero-shot row and zeroshot_matches_k_shot in the record)."""
    import types

    import kizuna.eval.linear_probe as LP
    from kizuna.eval.suite import _Context, run_entry

    root = classification_wds(tmp_path / "ds", n=4, split="test", shards=1)
    classification_wds(root, n=4, split="train", shards=1)
    ctx = _Context("cpu")
    ctx.model = lambda *a, **k: tiny
    given = []

    def probe(model, train, test, *, zeroshot_acc, **kw):
        given.append(zeroshot_acc)
        return types.SimpleNamespace(table=lambda: "", to_dict=lambda: {"metrics": {}}, metrics={"lp_acc1": 0.5})

    monkeypatch.setattr(LP, "evaluate_linear_probe", probe)
    for wanted in (False, True):
        run_entry({"model": "m", "name": "n", "dataset": str(root), "task": ["zeroshot_classification", "linear_probe"],
                   "zeroshot": wanted}, ctx, progress=False, echo=None)
    assert given[0] is None and isinstance(given[1], float)


def test_a_csv_dataset_names_its_training_csv_as_the_train_split(tmp_path, monkeypatch):
    """A CSV is one split: every split of `--dataset test.csv` was test.csv, so the probe refused every CSV
    dataset ("needs separate train and test splits") with no way to name the training file. A split that names
    a .csv/.tsv reads it (as a path, or beside the first CSV); a bare split name still reads the given file."""
    from kizuna.eval.datasets import DatasetError, load_dataset
    from kizuna.eval.suite import _Context, _probe_splits

    images = image_folder(tmp_path / "img", per_class=3, classes=["cat", "dog"])
    rows = sorted(images.glob("*/*.png"))
    (tmp_path / "train.csv").write_text("filepath,label\n" + "".join(f"{p},{p.parent.name}\n" for p in rows[1:]))
    (tmp_path / "test.csv").write_text("filepath,label\n" + "".join(f"{p},{p.parent.name}\n" for p in rows[:2]))
    test_csv = tmp_path / "test.csv"
    assert len(load_dataset(test_csv, "train.csv")) == 5
    assert len(load_dataset(test_csv, str(tmp_path / "train.csv"))) == 5
    assert len(load_dataset(test_csv, "train")) == 2  # a name, not a file: the CSV given
    with pytest.raises(DatasetError, match="split 'nope.csv': no such CSV file"):
        load_dataset(test_csv, "nope.csv")
    train, test = _probe_splits({"dataset": str(test_csv), "train_split": "train.csv"}, _Context("cpu"))
    assert (len(train), len(test), train.classnames) == (5, 2, ["cat", "dog"])
    with pytest.raises(ValueError, match="a CSV is one split: for the training CSV pass --train-split FILE.csv"):
        _probe_splits({"dataset": str(test_csv)}, _Context("cpu"))
    with pytest.raises(ValueError, match="needs separate train and test splits"):  # the test CSV spelt otherwise
        _probe_splits({"dataset": str(test_csv), "train_split": str(tmp_path / "." / "test.csv")}, _Context("cpu"))
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    (elsewhere / "train.csv").write_text("filepath,label\n" + f"{rows[0]},cat\n")
    monkeypatch.chdir(elsewhere)  # a bare name is the file beside the dataset's CSV, not the current folder's
    assert len(load_dataset(test_csv, "train.csv")) == 5


def test_a_suites_probe_advice_names_the_runs_keys():
    """A suite's probe errors advised --train-split FILE.csv, --max-train-samples and --classnames FILE, flags
    `eval suite` lacks (ValueErrors, which the suite did not reword)."""
    from kizuna.eval.datasets import in_suite_words

    said = in_suite_words(ValueError("a CSV is one split: for the training CSV pass --train-split FILE.csv; "
                                     "raise --max-train-samples (now 1); (--classnames FILE names them all)"))
    assert said == ('a CSV is one split: for the training CSV set the run\'s "train_split" to FILE.csv; raise the '
                    'run\'s "max_train_samples" (now 1); (the run\'s "classnames" names them all)')


def test_a_suite_words_a_csv_probes_advice_in_its_keys(tmp_path):
    """The CSV probe's refusal was a ValueError, which a suite does not reword: it advised --train-split, a flag
    `eval suite` lacks, and named no run. A DatasetError now, worded in the run's keys (before the model loads)."""
    from kizuna.eval.datasets import DatasetError
    from kizuna.eval.suite import run_suite

    images = image_folder(tmp_path / "img", per_class=2, classes=["cat", "dog"])
    (tmp_path / "test.csv").write_text("filepath,label\n" + "".join(f"{p},{p.parent.name}\n"
                                                                   for p in sorted(images.glob("*/*.png"))))
    with pytest.raises(DatasetError, match='run 0: .*a CSV is one split: for the training CSV set the run\'s '
                                           '"train_split" to FILE.csv'):
        run_suite([{"model": "ViT-mu-8", "dataset": str(tmp_path / "test.csv"), "task": ["linear_probe"]}],
                  progress=False, echo=None)


def test_a_few_shot_k_given_twice_is_fitted_once(monkeypatch):
    """`--few-shot 2,2` fitted the 2-shot probes twice (the second overwrote the first) and said its notes twice."""
    from kizuna.eval import linear_probe

    fitted, real = [], linear_probe.few_shot_indices

    def counting(y, k, seed, exclude=None):
        fitted.append(k)
        return real(y, k, seed, exclude)

    monkeypatch.setattr(linear_probe, "few_shot_indices", counting)
    x_train, y_train = _features()
    x_test, y_test = _features(seed=1)
    result = linear_probe_from_features(x_train, y_train, x_test, y_test, 4, few_shot=(2, 2, 50, 50), seeds=1,
                                        max_iter=50)
    assert sorted(result.few_shot) == [2] and fitted.count(2) == 2  # (shots and validation: one fit)
    assert sum("50-shot" in note for note in result.notes) == 1
