"""Round-3 mutation findings: eval/datasets.py (layouts, split finding, class-name matching, CSV indexing) and
eval/suite.py (suite validation, result files, figure names). Each test pins what a user sees (the split, the
labels, the error, the files written) against a reference built by hand from the files the test wrote."""
import importlib
import json

import pytest
from _evalhelpers import CLASSES, classification_wds, noise_image

from kizuna.eval.datasets import DatasetError, load_dataset

# Imported before any test patches kizuna.eval.encode.encode_images: these modules bind it when first imported,
# and first imported under a patch they kept the patched one for every later test (run alone, this file made two
# tests of test_suite_cli.py fail)
for _module in ("kizuna.eval.classification", "kizuna.eval.linear_probe", "kizuna.eval.probes"):
    importlib.import_module(_module)


def _folders(root, classes, per_class=1):
    """root/<class>/<i>.png for each class; returns root."""
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            (root / name / f"{i}.png").write_bytes(noise_image(10 * c + i))
    return root


def _folder_of(ds):
    """The class folder each evaluated image sits in (its key's first part)."""
    return [k.split("/")[0] for k in ds.keys]


# ------------------------------------------------------------------------------------ splits and layouts
def test_a_split_asked_for_in_another_case_is_recorded_by_its_own_name(tmp_path):
    """split="TEST" finds test/ and is recorded as "test" (results.json details.split), not as typed.
    Kills find_split returning the typed `split` instead of `split.casefold()`."""
    root = classification_wds(tmp_path / "ds", n=4, split="test")
    classification_wds(root, n=3, split="train")
    ds = load_dataset(root, split="TEST")
    assert ds.split == "test" and ds.source == str(root / "test") and len(ds) == 4


def test_a_dataset_root_named_like_a_split_is_a_root_not_a_split(tmp_path):
    """A dataset root called dev/ holding train/ and test/ shard folders is that dataset (its test split), not a
    split folder of its parent whose "classes" are train and test. Kills dropping is_split_folder's
    "no split folders of its own" check."""
    root = classification_wds(tmp_path / "dev", n=5, split="test")
    classification_wds(root, n=3, split="train")
    ds = load_dataset(root)
    assert (ds.layout, ds.split, len(ds), ds.classnames) == ("wds", "test", 5, CLASSES)
    assert ds.labels.tolist() == [i % 3 for i in range(5)]


def test_dataset_type_zeroshot_classification_is_classification(tmp_path):
    """CLIP_benchmark's task name in dataset_type.txt ("zeroshot_classification") declares a classification
    dataset. Kills dropping that alias (the file was refused as an unknown type)."""
    root = classification_wds(tmp_path / "ds", n=4)
    (root / "dataset_type.txt").write_text("zeroshot_classification\n")
    ds = load_dataset(root)
    assert ds.task == "classification" and len(ds) == 4


def test_two_split_folders_differing_only_in_case_are_no_split(tmp_path):
    """Test/ and TEST/ (no test/): which one is "test" is not guessed from the directory order. Kills matching
    a case-folded split name when more than one folder has it."""
    from kizuna.eval.datasets import split_folder, split_folders

    for name in ("Test", "TEST"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "0.png").write_bytes(noise_image(0))
    assert split_folders(tmp_path) == [] and split_folder(tmp_path, "test") is None


# ------------------------------------------------------------------------------------ class names
def test_hyphenated_class_folders_are_matched_to_spaced_names_by_name(tmp_path):
    """Folders golden-retriever, tabby-cat under a names file "tabby cat", "golden retriever" (the other order):
    matched loosely by name ("-" read as a space), so golden-retriever images are class 1. Kills _plain
    keeping "-" (the folders were then labelled by position: every label swapped)."""
    root = _folders(tmp_path / "pets", ["golden-retriever", "tabby-cat"], per_class=2)
    (root / "classnames.txt").write_text("tabby cat\ngolden retriever\n")
    ds = load_dataset(root)
    want = {"golden-retriever": 1, "tabby-cat": 0}
    assert ds.labels.tolist() == [want[f] for f in _folder_of(ds)]


def test_a_folder_matching_two_names_only_loosely_is_not_guessed(tmp_path):
    """Names "cat" and "Cat" (two classes, as EMNIST's a/A) and a folder CAT: CAT names neither exactly, and
    loosely it names both, so the folders do not fit the file (an error), rather than CAT silently becoming the
    first of them. Kills keeping a loose key that several names share."""
    root = _folders(tmp_path / "x", ["CAT", "cat", "dog"])
    (root / "classnames.txt").write_text("cat\nCat\ndog\n")
    with pytest.raises(DatasetError, match="do not fit the class names"):
        load_dataset(root)


def test_one_based_numbered_folders_are_labelled_by_position_under_as_many_names(tmp_path):
    """Folders 1, 2, 3 with a names file of three names (that do not name them): the folders are the three
    classes in order (folder 1 = class 0), not class indices 1..3 (3 was out of range). Kills reading numbered
    folders as indices whatever the number of names."""
    root = _folders(tmp_path / "n", ["1", "2", "3"], per_class=2)
    (root / "classnames.txt").write_text("cat\ndog\ncar\n")
    ds = load_dataset(root)
    assert ds.labels.tolist() == [int(f) - 1 for f in _folder_of(ds)]
    assert ds.classnames == ["cat", "dog", "car"]


def test_a_class_index_equal_to_the_number_of_names_is_out_of_range(tmp_path):
    """Label 3 under 3 class names is refused, naming the sample (indices are 0..2). Kills `labels > n`."""
    root = classification_wds(tmp_path / "oor", n=4, labels=[0, 1, 3, 2], shards=1)
    with pytest.raises(DatasetError, match=r"class index 3 of key 000000002 .*0\.\.2"):
        load_dataset(root)


def test_the_split_folders_own_names_and_templates_win_over_the_roots(tmp_path):
    """classnames.txt and the templates file in the split folder are that split's; the root's are the fallback.
    Kills dataset_file looking in the root first."""
    root = classification_wds(tmp_path / "ds", n=3, shards=1)  # root: cat, dog, car + two templates
    (root / "test" / "classnames.txt").write_text("kitten\npuppy\nvan\n")
    (root / "test" / "zeroshot_classification_templates.txt").write_text("an image of {c}\n")
    ds = load_dataset(root)
    assert ds.classnames == ["kitten", "puppy", "van"]
    assert ds.templates == ["an image of {c}"]


def test_a_csvs_class_names_are_its_own_in_a_folder_named_like_a_bundled_dataset(tmp_path):
    """A CSV of class names in a folder called pcam (a bundled list of two names) is scored over its own label
    values, not over pcam's names applied by position. Kills dropping the CSV-values branch of
    _resolve_classnames."""
    d = tmp_path / "pcam"
    d.mkdir()
    rows = [("0.png", "dog"), ("1.png", "cat"), ("2.png", "dog")]
    for i, (f, _) in enumerate(rows):
        (d / f).write_bytes(noise_image(i))
    (d / "test.csv").write_text("filepath,label\n" + "".join(f"{f},{c}\n" for f, c in rows))
    ds = load_dataset(d / "test.csv")
    assert ds.classnames == ["cat", "dog"]
    assert [ds.classnames[k] for k in ds.labels] == [c for _, c in rows]


def test_a_repeated_name_in_a_given_list_labels_a_csv_name_as_its_first_class(tmp_path):
    """CSV label names under a names list that repeats one ("cat" at 0 and 2): "cat" rows are class 0, the first
    (zero-shot predicts only the first of a repeated name). Kills pos[name] = k (the last one won)."""
    rows = [("0.png", "cat"), ("1.png", "dog"), ("2.png", "cat")]
    for i, (f, _) in enumerate(rows):
        (tmp_path / f).write_bytes(noise_image(i))
    (tmp_path / "names.csv").write_text("filepath,label\n" + "".join(f"{f},{c}\n" for f, c in rows))
    with pytest.warns(UserWarning, match="repeat"):
        ds = load_dataset(tmp_path / "names.csv", classnames=["cat", "dog", "cat"])
    assert ds.labels.tolist() == [0, 1, 0]


def test_a_tab_separated_file_named_csv_is_read_by_its_tabs(tmp_path):
    """A .csv whose header holds tabs is tab-separated (spreadsheets export "CSV" so). Kills sep chosen by the
    suffix alone (the one "filepath\\tlabel" column was no image column)."""
    for i in range(3):
        (tmp_path / f"{i}.png").write_bytes(noise_image(i))
    (tmp_path / "t.csv").write_text("filepath\tlabel\n" + "".join(f"{i}.png\t{i}\n" for i in range(3)))
    (tmp_path / "classnames.txt").write_text("a\nb\nc\n")
    ds = load_dataset(tmp_path / "t.csv")
    assert ds.layout == "csv" and ds.labels.tolist() == [0, 1, 2] and ds.classnames == ["a", "b", "c"]


def test_two_names_files_differing_only_in_case_are_neither(tmp_path):
    """Classnames.txt and CLASSNAMES.TXT (no classnames.txt): which one is meant is not taken from the directory
    order; the folders name the classes. Kills file_in taking the first of several case variants."""
    root = _folders(tmp_path / "pets", ["cat", "dog"])
    (root / "Classnames.txt").write_text("kitten\npuppy\n")
    (root / "CLASSNAMES.TXT").write_text("feline\ncanine\n")
    ds = load_dataset(root)
    assert ds.classnames == ["cat", "dog"] and ds.classnames_source == "folder names"


def test_a_subset_of_a_dataset_with_skips_takes_its_own_positions(tmp_path):
    """subset(k) indexes this dataset's positions: a stray image at the root of an ImageFolder is an index row
    but no sample, so position 1 is cat/1. Kills positions = k (index rows, which counted the stray image)."""
    root = _folders(tmp_path / "pets", ["cat", "dog"], per_class=2)
    (root / "a.png").write_bytes(noise_image(99))
    ds = load_dataset(root)
    sub = ds.subset([1, 2])
    assert sub.keys == ["cat/1", "dog/0"] and sub.labels.tolist() == [0, 1]


# ------------------------------------------------------------------------------------ relabel by name
def test_relabelling_refuses_a_label_equal_to_the_number_of_own_names(tmp_path):
    """A split whose classnames.txt names 3 classes (another order than the model's 4) holding label 3: the file
    does not say which class 3 is, so it is an error, not the last class. Kills `> len(own)`."""
    from kizuna.eval.datasets import relabel_by_name

    target = ["car", "cat", "dog", "bird"]
    root = classification_wds(tmp_path / "v", n=4, labels=[0, 1, 2, 3], classnames=["cat", "dog", "car"], shards=1)
    ds = load_dataset(root, task="classification", classnames=target)
    with pytest.raises(DatasetError, match="a label is 3, beyond the 3 classes"):
        relabel_by_name(ds, target)


def test_relabelling_under_numbered_target_names_leaves_the_labels(tmp_path):
    """A model whose classes are only numbers ("0".."2") names nothing to match by: the labels stay as they are.
    Kills dropping the _numbered(target) check (it refused the split's names as not among the model's)."""
    from kizuna.eval.datasets import relabel_by_name

    root = classification_wds(tmp_path / "v", n=6, classnames=["dog", "cat", "car"], shards=1)
    ds = load_dataset(root)
    assert relabel_by_name(ds, ["0", "1", "2"]) is False
    assert ds.labels.tolist() == [i % 3 for i in range(6)] and ds.classnames == ["dog", "cat", "car"]


# ------------------------------------------------------------------------------------ suite validation
def test_a_runs_own_setting_wins_over_the_defaults(tmp_path):
    """{"defaults": {"batch_size": 4}, "runs": [{..., "batch_size": 8}]}: the run's 8. Kills merging the defaults
    over the run."""
    from kizuna.eval.suite import normalise_suite

    d = tmp_path / "d"
    d.mkdir()
    s = normalise_suite({"defaults": {"batch_size": 4, "split": "val"},
                         "runs": [{"model": "ViT-mu-8", "dataset": str(d), "task": "zeroshot", "batch_size": 8}]})
    assert s["runs"][0]["batch_size"] == 8 and s["runs"][0]["split"] == "val"


def test_a_suite_without_runs_is_refused(tmp_path):
    """An empty runs list ran nothing and said nothing. Kills dropping the check."""
    from kizuna.eval.suite import load_suite

    f = tmp_path / "s.json"
    f.write_text(json.dumps({"runs": []}))
    with pytest.raises(ValueError, match="s.json: the suite has no runs"):
        load_suite(f)


def test_run_values_refuse_booleans_repeats_and_keep_listed_order():
    """max_samples true (int(True) = 1: one sample evaluated) and allow_jit "false" (a truthy string) are refused;
    a severity twice is refused (it weighed twice in the shifted mean); a corruption twice is kept once; "1,,4"
    is 1 and 4. Kills each of those checks dropped."""
    from kizuna.eval.suite import check_run_values

    for bad, what in (({"max_samples": True}, "max_samples must be an integer >= 0"),
                      ({"allow_jit": "false"}, "allow_jit must be true or false"),
                      ({"zeroshot": 0}, "zeroshot must be true or false"),
                      ({"severities": [1, 3, 1]}, r"severities are distinct levels 1\.\.5")):
        with pytest.raises(ValueError, match=f"run 0: {what}"):
            check_run_values(bad, "run 0")
    r = {"corruptions": ["jpeg", "contrast", "jpeg"], "few_shot": "1,,4,", "allow_jit": False}
    check_run_values(r, "run 0")
    assert r == {"corruptions": ["jpeg", "contrast"], "few_shot": [1, 4], "allow_jit": False}
    with pytest.raises(ValueError, match="--max-samples must be an integer"):  # a command line's flags named
        check_run_values({"max_samples": True}, None)


# ------------------------------------------------------------------------------------ result files and figure names
def _robustness_record(model, clean, shifted):
    return {"task": "robustness", "model": model, "pretrained": model, "dataset": "d", "language": "en",
            "metrics": {"clean_acc1": clean, "shifted_acc1": shifted}}


def test_the_clean_vs_shifted_scatter_is_drawn_for_two_runs_and_linked(tmp_path):
    """One robustness run draws no scatter (nothing to compare); two draw robustness_scatter.png, which results.md
    links. Kills `len(pts) < 1` and dropping the link."""
    from kizuna.eval.suite import write_results

    one, two = tmp_path / "one", tmp_path / "two"
    write_results([_robustness_record("a", 0.5, 0.3)], one)
    assert not (one / "robustness_scatter.png").exists()
    assert "robustness_scatter" not in (one / "results.md").read_text()
    records = [_robustness_record("a", 0.5, 0.3), _robustness_record("b", 0.6, 0.2)]
    write_results(records, two)
    assert (two / "robustness_scatter.png").stat().st_size > 0
    assert "![clean vs shifted](robustness_scatter.png)" in (two / "results.md").read_text()
    assert json.loads((two / "results.json").read_text()) == records


def test_a_backslash_before_a_pipe_stays_text_in_the_markdown_table():
    r"""A model named `a\|b`: its backslash doubled and the pipe escaped (`a\\\|b`), so the row keeps its cells.
    Kills leaving the backslash single (`\\|` then read as an escaped backslash and a cell break)."""
    from kizuna.eval.suite import markdown_cell, markdown_report

    assert markdown_cell("a\\|b") == "a\\\\\\|b" and markdown_cell("x|y") == "x\\|y"
    rec = {"task": "zeroshot_classification", "model": "a\\|b", "pretrained": "p", "dataset": "d",
           "metrics": {"acc1": 0.5}}
    row = next(line for line in markdown_report([rec]).splitlines() if line.startswith("| a"))
    assert row == "| a\\\\\\|b | p | d | 50.00 |"


def test_long_names_keep_their_end_in_figure_names(tmp_path):
    """A figure's name keeps the last 60 characters of a long run name (where checkpoints differ: .../step_900
    and .../step_950), not the first 60. Kills [:60]."""
    from kizuna.eval.suite import _slug

    long = "x" * 70 + "/step_900"
    assert _slug(long) == ("x" * 70 + "_step_900")[-60:]
    assert _slug(long) != _slug("x" * 70 + "/step_950")


def test_figure_names_that_differ_only_by_case_are_numbered_from_two(tmp_path):
    """demo__x.png, then Demo__x.png and DEMO__x.png (one file on macOS and Windows): the later ones are numbered
    _2 and _3. Kills comparing the names case-sensitively, and numbering from _1."""
    from kizuna.eval.suite import _Context

    ctx = _Context("cpu")
    out = tmp_path / "Out"
    got = [ctx.plot_path(out, n).name for n in ("demo__x.png", "Demo__x.png", "DEMO__x.png", "other.png")]
    assert got == ["demo__x.png", "Demo__x_2.png", "DEMO__x_3.png", "other.png"]


def test_runs_with_other_max_samples_get_their_own_dataset(tmp_path):
    """A suite's dataset cache is keyed by max_samples too: a run of 2 samples and a run of all (0) of one dataset
    are 2 and 5 samples, not the first one's 2 twice. Kills dropping max_samples from the key."""
    from kizuna.eval.suite import _Context

    root = classification_wds(tmp_path / "ds", n=5, shards=1)
    ctx = _Context("cpu")
    few = ctx.dataset({"dataset": str(root), "max_samples": 2}, None, "classification")
    every = ctx.dataset({"dataset": str(root), "max_samples": 0}, None, "classification")
    assert (len(few), len(every)) == (2, 5)


def test_a_record_without_a_precision_says_fp32():
    """details.precision of a run that names none is fp32, what the model ran in. Kills another default."""
    from kizuna.eval.suite import _record

    rec = _record({"model": "m", "name": "n"}, None, "d", "zeroshot_classification", {"acc1": 0.5}, {})
    assert rec["details"]["precision"] == "fp32" and rec["model"] == "n"


def test_a_linear_probe_on_one_split_for_train_and_test_is_refused(tmp_path, monkeypatch):
    """train_split "test" where the test split is test/ too: the probe would be trained and scored on the same
    images (a perfect score of nothing); refused before any image is encoded. Kills dropping the check."""
    from kizuna.eval.suite import _Context, run_entry

    root = classification_wds(tmp_path / "ds", n=4, split="test", shards=1)
    ctx = _Context("cpu")
    ctx.model = lambda *a, **k: (object(), None)  # no model is needed to refuse the splits

    def no_encoding(*a, **k):
        raise AssertionError("encoded images before checking the probe's splits")

    import kizuna.eval.encode

    monkeypatch.setattr(kizuna.eval.encode, "encode_images", no_encoding)
    with pytest.raises(ValueError, match=r"needs separate train and test splits \(found only .*test\)"):
        run_entry({"model": "m", "dataset": str(root), "task": ["linear_probe"], "train_split": "test"}, ctx,
                  progress=False, echo=None)


def test_a_suites_linear_probe_defaults_to_three_seeds_and_the_documented_shots(tmp_path, monkeypatch):
    """A run naming neither seeds nor few_shot probes with 3 seeds and k = 1, 2, 4, 8, 16 (as `eval linear-probe`
    does). Kills another default number of seeds."""
    import types

    import kizuna.eval.encode
    import kizuna.eval.linear_probe as LP
    from kizuna.eval.suite import _Context, run_entry

    root = classification_wds(tmp_path / "ds", n=4, split="test", shards=1)
    classification_wds(root, n=4, split="train", shards=1)
    ctx = _Context("cpu")
    ctx.model = lambda *a, **k: (object(), None)
    monkeypatch.setattr(kizuna.eval.encode, "encode_images", lambda *a, **k: None)
    asked = {}

    def probe(model, train, test, *, few_shot, seeds, **kw):
        asked.update(few_shot=list(few_shot), seeds=seeds)
        return types.SimpleNamespace(table=lambda: "", to_dict=lambda: {"metrics": {}}, metrics={"lp_acc1": 0.5})

    monkeypatch.setattr(LP, "evaluate_linear_probe", probe)
    records = run_entry({"model": "m", "name": "n", "dataset": str(root), "task": ["linear_probe"],
                         "zeroshot": False}, ctx, progress=False, echo=None)
    assert asked == {"few_shot": [1, 2, 4, 8, 16], "seeds": 3}
    assert records[0]["details"]["split"] == "test" and records[0]["details"]["train_split"] == "train"
