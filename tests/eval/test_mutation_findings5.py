"""Round-5 mutation findings for the code added to kizuna.eval since round 4: per-class rows past the first block
of 1024 classes, the class-embedding cache (tokenizers without a config, the checks on a file read back), a CSV's
class names against a names file written decomposed, the skip counts of the linear probe and the typographic
attack, a corruption named twice, a probe without few-shot fits, and suite values, records and reports. Each
test checks what a user sees against a reference made by hand or by a second code path (the uncached
computation, the file on disk)."""
from __future__ import annotations

import importlib
import json
import math

import numpy as np
import pytest
import torch
from _evalhelpers import CLASSES, classification_wds, noise_image, write_tar

from kizuna.eval.classification import class_embeddings, clear_class_cache
from kizuna.eval.datasets import load_dataset

# bound before any test of the suite patches kizuna.eval.encode (as test_mutation_findings3.py does)
for _module in ("kizuna.eval.classification", "kizuna.eval.linear_probe", "kizuna.eval.probes"):
    importlib.import_module(_module)

TEMPLATES = ["a photo of a {c}.", "a {c}."]


# ------------------------------------------------------------------------------------ classification.py
def _result(confusion, classnames):
    """A ClassificationResult holding ``confusion`` (per_class reads the matrix alone)."""
    from kizuna.eval.classification import ClassificationResult

    return ClassificationResult({}, list(classnames), np.asarray(confusion), torch.zeros(0, dtype=torch.long),
                                torch.zeros(0, 5, dtype=torch.long), torch.zeros(0, dtype=torch.long),
                                torch.zeros(0, dtype=torch.bool))


def test_per_class_beyond_the_first_block_of_1024_rows_ignores_its_own_diagonal():
    """Row 1027 (in the second block of 1024 rows): 5 right, 1 taken for class 3 -> confused with class 3 once.
    Kills per_class zeroing the diagonal at block-relative columns (wrong[rows, rows]), which zeroed column 3
    for that row and named the class itself, 5 times."""
    c = 1030
    cm = np.zeros((c, c), dtype=np.int64)
    cm[1027, 1027], cm[1027, 3] = 5, 1
    cm[1029, 1029], cm[1029, 1028] = 2, 7
    names = [f"k{i}" for i in range(c)]
    rows = _result(cm, names).per_class
    assert (rows[1027]["most_confused_with"], rows[1027]["confused_count"]) == ("k3", 1)
    assert (rows[1029]["most_confused_with"], rows[1029]["confused_count"]) == ("k1028", 7)
    assert rows[1027]["recall"] == pytest.approx(5 / 6) and rows[3]["precision"] == 0.0


# ------------------------------------------------------------------------------------ class-embedding cache
def test_a_tokenizer_without_a_config_is_never_served_another_ones_class_weights(tiny):
    """Two plain-function tokenizers (no to_config) that tokenize differently get their own class weights. Kills
    caching them (the second got the first's from memory)."""
    model, tok = tiny
    clear_class_cache()

    def plain(texts):
        return tok(texts)

    def prefixed(texts):
        return tok(["a drawing: " + t for t in texts])

    first = class_embeddings(model, plain, CLASSES, TEMPLATES)
    second = class_embeddings(model, prefixed, CLASSES, TEMPLATES)
    torch.testing.assert_close(first, class_embeddings(model, plain, CLASSES, TEMPLATES, cache=False))
    torch.testing.assert_close(second, class_embeddings(model, prefixed, CLASSES, TEMPLATES, cache=False))
    assert not torch.allclose(first, second)


def _tamper(path, **change):
    stored = torch.load(path, weights_only=True)
    stored.update(change)
    torch.save(stored, path)


@pytest.mark.parametrize("damage", ["other classes", "not finite", "other width"])
def test_a_cache_file_of_other_weights_is_refused_removed_and_computed_again(tiny, tmp_path, damage):
    """A classes-*.pt holding other class names, NaN weights or weights of another width is warned about and
    recomputed, never used. Kills _mismatch dropping its class-name, finiteness or width checks."""
    model, tok = tiny
    clear_class_cache()
    cache = tmp_path / "cache"
    expected = class_embeddings(model, tok, CLASSES, TEMPLATES, cache_dir=cache)
    (path,) = cache.glob("classes-*.pt")
    if damage == "other classes":
        _tamper(path, weights=torch.flip(expected, [0]).contiguous(), classnames=["car", "dog", "cat"])
        why = "holds the weights of other class names or templates"
    elif damage == "not finite":
        _tamper(path, weights=torch.full_like(expected, float("nan")))
        why = "holds weights that are not finite"
    else:
        _tamper(path, weights=torch.ones(len(CLASSES), expected.shape[1] + 1))
        why = rf"holds weights of shape \[3, {expected.shape[1] + 1}\], not \[3, {expected.shape[1]}\]"
    clear_class_cache()
    with pytest.warns(RuntimeWarning, match=rf"the class-embedding cache .*classes-.*\.pt {why}; removed"):
        weights = class_embeddings(model, tok, CLASSES, TEMPLATES, cache_dir=cache)
    torch.testing.assert_close(weights, expected)
    torch.testing.assert_close(torch.load(path, weights_only=True)["weights"], expected)  # written again, right
# ------------------------------------------------------------------------------------ datasets.py
def test_a_csv_of_class_names_matches_a_names_file_written_decomposed(tmp_path):
    """classnames.txt written on macOS holds "café" decomposed (e + U+0301); the CSV's label "café" (composed) is
    that class, line 2 -> index 1. Kills _index_csv keying the names file's classes as written (not NFC):
    "café" was no class of the file and the CSV was refused."""
    import unicodedata

    for i in range(4):
        (tmp_path / f"{i}.png").write_bytes(noise_image(i))
    decomposed = unicodedata.normalize("NFD", "café")
    assert decomposed != "café"
    (tmp_path / "classnames.txt").write_text(f"tea\n{decomposed}\nbar\n", encoding="utf-8")
    labels = ["café", "tea", "bar", "café"]
    (tmp_path / "data.csv").write_text("filepath,label\n" + "".join(f"{i}.png,{c}\n" for i, c in enumerate(labels)),
                                       encoding="utf-8")
    ds = load_dataset(tmp_path / "data.csv")
    assert ds.labels.tolist() == [1, 0, 2, 1]
    assert len(ds.classnames) == 3 and ds.classnames[0] == "tea" and ds.classnames[2] == "bar"
# ------------------------------------------------------------------------------------ linear probe and probes
def _with_an_unlabelled_sample(root, split, n=9, seed=0):
    """root/split/000000.tar: n images with .cls (label i % 3) and one more image without a .cls."""
    members = []
    for i in range(n + 1):
        members.append((f"{i:04d}.png", noise_image(seed * 100 + i)))
        if i != n // 2:
            members.append((f"{i:04d}.cls", str((i if i < n // 2 else i - 1) % 3).encode()))
    write_tar(root / split / "000000.tar", members)
    return root


def test_linear_probe_counts_the_samples_left_out_at_indexing(tmp_path, tiny):
    """A training image without a label (dropped when the split is indexed) is counted in train_skipped, as the
    zero-shot result counts it. Kills evaluate_linear_probe adding only the decoding skips (feats.skips), not
    the dataset's own (ds.skips)."""
    from kizuna.eval.linear_probe import evaluate_linear_probe

    model, _ = tiny
    root = classification_wds(tmp_path / "d", n=6, split="test", shards=1)
    _with_an_unlabelled_sample(root, "train")
    train = load_dataset(root, split="train", task="classification")
    test = load_dataset(root, split="test", task="classification")
    res = evaluate_linear_probe(model, train, test, few_shot=(), seeds=1, progress=False, batch_size=16)
    assert res.num_train == 9 and res.num_test == 6
    assert res.train_skipped.as_dict() == {"missing_label": 1} and res.test_skipped.as_dict() == {}
    assert res.to_dict()["train_skipped"] == {"missing_label": 1}


def test_typographic_attack_counts_the_samples_left_out_at_indexing(tmp_path, tiny):
    """The typographic record counts an image without a label, dropped when the split was indexed. Kills
    typographic_attack counting only the decoding skips."""
    from kizuna.eval.probes import typographic_attack

    model, tok = tiny
    root = _with_an_unlabelled_sample(tmp_path / "d", "test", n=6)
    (root / "classnames.txt").write_text("\n".join(CLASSES) + "\n")
    ds = load_dataset(root, task="classification")
    t = typographic_attack(model, tok, ds, progress=False, batch_size=8)
    assert t.n == 6 and t.to_dict()["skipped"] == {"missing_label": 1}


def test_a_probe_without_few_shot_fits_still_reports_the_matching_shots_as_nan():
    """--few-shot none with a zero-shot comparison: zeroshot_matches_k_shot is NaN (null in results.json, as
    EVALUATION.md says), not a missing key. Kills the key being set only when few-shot probes ran."""
    from kizuna.eval.linear_probe import linear_probe_from_features

    g = torch.Generator().manual_seed(0)
    y = torch.arange(3).repeat(6)
    x = torch.randn(18, 8, generator=g, dtype=torch.float64) + 3 * torch.nn.functional.one_hot(y, 8).double()
    res = linear_probe_from_features(x, y.numpy(), x, y.numpy(), 3, few_shot=(), seeds=1, zeroshot_acc=0.25,
                                     grid=(0.1, 1.0))
    assert res.metrics["zeroshot_acc1"] == 0.25
    assert math.isnan(res.metrics["zeroshot_matches_k_shot"])
    assert res.few_shot == {}


def test_robustness_counts_a_corruption_named_twice_once(tmp_path, tiny):
    """evaluate_robustness(corruptions=["jpeg", "jpeg"]) runs JPEG once: one row per (corruption, severity), and
    the shifted mean is that row's accuracy. Kills dropping the de-duplication (JPEG weighed twice)."""
    from kizuna.eval.probes import evaluate_robustness

    model, tok = tiny
    ds = load_dataset(classification_wds(tmp_path / "d", n=6, shards=1))
    r = evaluate_robustness(model, tok, ds, corruptions=["jpeg", "jpeg"], severities=[5], progress=False,
                            batch_size=8)
    assert [(row["corruption"], row["severity"]) for row in r.rows] == [("jpeg", 5)]
    assert r.metrics["shifted_acc1"] == pytest.approx(r.rows[0]["acc"])
# ------------------------------------------------------------------------------------ suite.py
def test_a_suite_runs_act_reaches_the_model_loader(tiny_hf):
    """A run's "act" is passed to the model loader (and keys the loaded model): on a Hugging Face folder, which
    records its own activation, act="gelu" is refused rather than silently ignored. Kills model_args leaving
    act out (the run got the QuickGELU model whatever it asked for)."""
    from kizuna.eval.suite import _Context

    ctx = _Context("cpu")
    with pytest.raises(ValueError, match=r"--act \(act=\) applies to OpenAI-layout state dicts"):
        ctx.model(*ctx.model_args({"model": str(tiny_hf[0]), "act": "gelu"}))
    assert ctx.model_args({"model": "m", "act": "gelu"})[-1] == "gelu"


def test_markdown_report_shows_a_nan_metric_as_a_dash():
    """markdown_report (public) shows a NaN metric (acc5 of 3 classes, before json_safe) as "-", as it shows None,
    not "nan". Kills _fmt dropping its NaN case."""
    from kizuna.eval.suite import markdown_report

    rec = {"task": "zeroshot_classification", "model": "m", "pretrained": "p", "dataset": "d",
           "metrics": {"acc1": 0.5, "acc5": float("nan"), "mean_per_class_recall": 0.25}}
    row = [line for line in markdown_report([rec]).splitlines() if line.startswith("| m |")]
    assert row == ["| m | p | d | 50.00 | - | 25.00 |"]


def test_a_suite_run_with_an_unknown_act_is_refused_before_any_run(tmp_path):
    """"act": "relu" (or "GELU") is refused by check_run_values, naming the run and the two values, before any
    model is loaded. Kills dropping that check (the value went on to the model loader)."""
    from kizuna.eval.suite import check_run_values

    for bad in ("relu", "GELU"):
        with pytest.raises(ValueError, match=rf"run 1: act must be quick_gelu or gelu, got '{bad}'"):
            check_run_values({"act": bad}, "run 1")
    for good in ("gelu", "quick_gelu", None):
        check_run_values({"act": good}, "run 1")


def test_a_suite_run_with_a_negative_num_workers_is_refused():
    """"num_workers": -1 in a suite is refused by name (the command line's --num-workers is its own matter);
    0 (decode in the main process) is fine. Kills leaving num_workers out of the checked minimums."""
    from kizuna.eval.suite import check_run_values

    with pytest.raises(ValueError, match=r"run 2: num_workers must be an integer >= 0, got -1"):
        check_run_values({"num_workers": -1}, "run 2")
    check_run_values({"num_workers": 0}, "run 2")


# ------------------------------------------------------------------------------------ kizuna eval (cli.py)
@pytest.fixture
def entries(monkeypatch):
    """run_entry replaced by a recorder: the one run each `kizuna eval` command would start."""
    import kizuna.eval.suite as S

    seen = []

    def record(e, ctx=None, out_dir=None, progress=True, **kw):
        seen.append(dict(e))
        return []

    monkeypatch.setattr(S, "run_entry", record)
    return seen


def _eval(*argv) -> int:
    from kizuna.apps.cli import main

    return main(["eval", *argv, "--model", "ViT-mu-8", "--no-progress"])


def test_eval_severities_given_twice_are_a_usage_error_of_the_flag():
    """--severities 1,1 is refused by its parser (one level weighed twice in the shifted mean). Kills _severities
    dropping its repeat check (the repeat got past the flag)."""
    import argparse

    from kizuna.eval.cli import _severities

    assert _severities("1,3,5") == [1, 3, 5]
    for bad in ("1,1", "3,5,3"):
        with pytest.raises(argparse.ArgumentTypeError, match=rf"distinct levels from 1 to 5.*got '{bad}'"):
            _severities(bad)


def test_eval_probes_refuse_robustness_settings_with_no_robustness(entries, tmp_path, capsys):
    """--no-robustness with --severities or --corruptions: those flags would do nothing, so the command is refused,
    naming both, and nothing runs. Kills dropping that refusal."""
    for extra in (["--severities", "1,3"], ["--corruptions", "jpeg"]):
        assert _eval("probes", "--dataset", str(tmp_path), "--no-robustness", *extra) != 0
        err = capsys.readouterr().err
        assert "--no-robustness" in err and "--severities / --corruptions" in err
    assert entries == []
    assert _eval("probes", "--dataset", str(tmp_path), "--no-robustness") == 0  # without them: runs
    assert entries[0]["task"] == ["typographic", "relation_swap"]


def test_eval_pooled_templates_read_a_keyed_json_under_the_datasets_folder_name(entries, tmp_path):
    """--templates keyed.json --templates "a {c} here." with --dataset .../cifar10 and no --dataset-name: the
    CLIP_benchmark-style .json is read under "cifar10", the folder's name (as load_dataset would use). Kills
    reading it with no dataset name (a .json of two datasets was then refused)."""
    data = tmp_path / "cifar10"
    data.mkdir()
    keyed = tmp_path / "keyed.json"
    keyed.write_text(json.dumps({"cifar10": ["a photo of a {c}.", "a blurry {c}."], "mnist": ["a digit {c}."]}))
    assert _eval("zeroshot", "--dataset", str(data), "--templates", str(keyed), "--templates", "a {c} here.") == 0
    assert entries[0]["templates"] == ["a photo of a {c}.", "a blurry {c}.", "a {c} here."]


def test_a_suite_runs_device_is_checked_with_the_run_named():
    """A suite's "device": "mps" (or "bogus") is refused by check_run_values, naming the run, before any run starts.
    Kills dropping the suite's device check (a traceback from .to() once the run began)."""
    from kizuna.eval.suite import check_run_values

    for bad in ("mps", "bogus"):
        with pytest.raises(ValueError, match=rf"run 3: device '{bad}'"):
            check_run_values({"device": bad}, "run 3")
    check_run_values({"device": "cpu"}, "run 3")


def test_the_probes_note_names_the_classes_without_training_images(tmp_path, tiny):
    """evaluate_linear_probe on a training split lacking class "car": the note names "car", not its index 2.
    Kills evaluate_linear_probe passing no class names to the fits."""
    from kizuna.eval.linear_probe import evaluate_linear_probe

    model, _ = tiny
    root = classification_wds(tmp_path / "d", n=6, split="test", shards=1)
    classification_wds(root, n=6, split="train", labels=[0, 1, 0, 1, 0, 1], shards=1, seed=3)
    train = load_dataset(root, split="train", task="classification")
    test = load_dataset(root, split="test", task="classification")
    res = evaluate_linear_probe(model, train, test, few_shot=(), seeds=1, progress=False, batch_size=16,
                                grid=(0.1, 1.0))
    assert any("1 class has no training images (car)" in note for note in res.notes), res.notes
