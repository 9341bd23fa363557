import json

import pytest
from _evalhelpers import classification_wds, retrieval_wds

from kizuna.apps.cli import main
from kizuna.eval.classification import evaluate_zeroshot
from kizuna.eval.datasets import load_dataset
from kizuna.eval.suite import load_suite, markdown_report, run_suite
from kizuna.eval.training import evaluate_for_training

CB_FIELDS = {"dataset", "model", "pretrained", "task", "metrics", "language"}


@pytest.fixture
def data(tmp_path):
    cls = classification_wds(tmp_path / "cls", n=10, split="train")
    classification_wds(tmp_path / "cls", n=8, split="test", seed=3)
    ret = retrieval_wds(tmp_path / "ret", n=6)
    return cls, ret


def test_json_suite_writes_records_table_and_plots(tmp_path, tiny_hf, data):
    cls, ret = data
    suite = {"defaults": {"batch_size": 4},
             "runs": [{"model": str(tiny_hf[0]), "name": "tiny", "dataset": str(cls), "task": ["zeroshot", "linear_probe"],
                       "few_shot": [1, 2], "seeds": 1},
                      {"model": str(tiny_hf[0]), "dataset": str(ret), "task": "retrieval", "pretrained": "none"}]}
    f = tmp_path / "suite.json"
    f.write_text(json.dumps(suite))
    out = tmp_path / "out"
    said = []
    records = run_suite(f, out_dir=out, progress=False, echo=said.append)
    assert [r["task"] for r in records] == ["zeroshot_classification", "linear_probe", "zeroshot_retrieval"]
    # the last line names every file written, the figures too (they went unmentioned)
    assert said[-1].endswith("(figures: tiny__cls__confusion.png, tiny__cls__zeroshot_vs_probe.png)"), said[-1]
    saved = json.loads((out / "results.json").read_text())
    assert saved == records
    for r in saved:
        assert CB_FIELDS <= set(r) and r["language"] == "en"
    assert saved[0]["model"] == "tiny" and saved[0]["dataset"] == "cls" and saved[2]["pretrained"] == "none"
    assert set(saved[0]["metrics"]) == {"acc1", "acc5", "mean_per_class_recall"}
    assert saved[0]["metrics"]["acc5"] is None  # 3 classes: no top-5 (CLIP_benchmark's NaN), not 100%
    assert saved[1]["details"]["train_skipped"] == {} and saved[1]["details"]["test_skipped"] == {}
    assert saved[1]["metrics"]["zeroshot_acc1"] == saved[0]["metrics"]["acc1"]
    assert "image_retrieval_recall@5" in saved[2]["metrics"]
    md = (out / "results.md").read_text()
    assert "## zeroshot_classification" in md and "| tiny |" in md and "## zeroshot_retrieval" in md
    row = next(line for line in md.splitlines() if line.startswith("| tiny |"))
    assert row.split(" | ")[4] == "-"  # acc5 column
    assert (out / "tiny__cls__confusion.png").is_file() and (out / "tiny__cls__zeroshot_vs_probe.png").is_file()


def test_py_suite_and_validation(tmp_path):
    f = tmp_path / "s.py"
    d = tmp_path / "d"
    d.mkdir()
    f.write_text(f"def suite():\n    return [{{'model': m, 'dataset': {str(d)!r}, 'task': 'zeroshot'}} for m in ('ViT-mu-8', 'siglip-mu-8')]\n")
    s = load_suite(f)
    assert [r["model"] for r in s["runs"]] == ["ViT-mu-8", "siglip-mu-8"] and s["runs"][0]["task"] == ["zeroshot_classification"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"model": "ViT-mu-8", "dataset": str(d), "task": "colouring"}]))
    with pytest.raises(ValueError, match="unknown task 'colouring'"):
        load_suite(bad)
    # checked when the suite is read: it was refused when its run began, after the runs before it
    bad.write_text(json.dumps([{"model": "ViT-mu-8", "dataset": str(d), "task": "zeroshot", "precision": "auto"}]))
    with pytest.raises(ValueError, match=r"run 0: precision must be one of fp32, bf16, got 'auto'"):
        load_suite(bad)
    rec = [{"dataset": "d", "model": "m", "pretrained": "p", "task": "zeroshot_retrieval",
            "metrics": {"image_to_text_R@1": 0.5, "image_to_text_median_rank": 3.0}, "language": "en"}]
    md = markdown_report(rec)
    assert "| m | p | d | 50.00 | 3 |" in md


def test_cli_zeroshot_prints_and_saves(tmp_path, tiny_hf, data, capsys):
    cls, _ = data
    out = tmp_path / "o"
    rc = main(["eval", "zeroshot", "--model", str(tiny_hf[0]), "--dataset", str(cls), "--out", str(out),
               "--no-progress", "--batch-size", "3"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "zero-shot cls: top-1" in text and "most confused with" in text
    assert "top-5 n/a" in text  # 3 classes; it printed "top-5 100.00%"
    rec = json.loads((out / "results.json").read_text())
    assert rec[0]["task"] == "zeroshot_classification" and rec[0]["details"]["n"] == 8


def test_cli_bf16_precision_evaluates_and_records_it(tmp_path, tiny_hf, data):
    """``--precision bf16`` loads the model in bf16; every metric is computed (features come back as float32)
    and the record says which precision made it. Retrieval exercises the text tower in bf16 too."""
    cls, ret = data
    for task, dataset in (("zeroshot", cls), ("retrieval", ret)):
        out = tmp_path / task
        assert main(["eval", task, "--model", str(tiny_hf[0]), "--dataset", str(dataset), "--out", str(out),
                     "--precision", "bf16", "--no-progress"]) == 0
        rec = json.loads((out / "results.json").read_text())[0]
        assert rec["details"]["precision"] == "bf16"
        assert rec["metrics"] and all(v == v for v in rec["metrics"].values())  # finite, no NaN


def test_cli_templates_file_and_suite_command(tmp_path, tiny_hf, data, capsys):
    cls, ret = data
    tpl = tmp_path / "t.txt"
    tpl.write_text("itap of a {c}.\n")
    out = tmp_path / "o"
    assert main(["eval", "zeroshot", "--model", str(tiny_hf[0]), "--dataset", str(cls), "--templates", str(tpl),
                 "--out", str(out), "--no-progress"]) == 0
    rec = json.loads((out / "results.json").read_text())[0]
    assert rec["details"]["num_templates"] == 1 and rec["details"]["templates_source"] == str(tpl)
    f = tmp_path / "s.py"
    f.write_text(f"SUITE = {{'runs': [{{'model': {str(tiny_hf[0])!r}, 'dataset': {str(ret)!r}, 'task': 'retrieval'}}]}}\n")
    assert main(["eval", "suite", str(f), "--out", str(tmp_path / "s"), "--no-progress"]) == 0
    assert "text->image" in capsys.readouterr().out
    assert json.loads((tmp_path / "s" / "results.json").read_text())[0]["task"] == "zeroshot_retrieval"


def test_cli_errors_are_one_clear_line(tmp_path, tiny_hf, capsys):
    root = classification_wds(tmp_path / "nonames", n=4, write_classnames=False)
    rc = main(["eval", "zeroshot", "--model", str(tiny_hf[0]), "--dataset", str(root), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "classnames.txt" in err and "--dataset-name" in err


def test_cli_help_explains(capsys):
    with pytest.raises(SystemExit) as e:
        main(["eval", "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for word in ("zeroshot", "retrieval", "linear-probe", "probes", "suite", "torchrun"):
        assert word in text
    with pytest.raises(SystemExit):
        main(["eval", "linear-probe", "--help"])
    assert "--few-shot" in capsys.readouterr().out


def test_evaluate_for_training_flat_names(tiny, data):
    import kizuna

    model, tok = tiny
    cls, ret = data
    model.train()
    m = evaluate_for_training(model, tok, kizuna.get_preprocess(model), str(cls), str(ret), max_samples=6)
    assert model.training  # mode restored
    for k in ("zeroshot/top1", "zeroshot/mean_per_class_recall", "retrieval/image_to_text_R@1",
              "retrieval/image_to_text_R@5", "retrieval/text_to_image_R@10", "retrieval/text_to_image_median_rank"):
        assert isinstance(m[k], float), k
    # three classes: no top-5 (NaN, which no best/ could pick), rather than a top-5 that is always 1
    assert "zeroshot/top5" not in m
    model.eval()
    direct = evaluate_zeroshot(model, tok, load_dataset(cls, max_samples=6), progress=False)
    assert m["zeroshot/top1"] == direct.metrics["acc1"]
    assert evaluate_for_training(model, tok, kizuna.get_preprocess(model), None, None) == {}


@pytest.mark.shared_data
def test_cli_on_shared_data(shared_dir, tiny_hf, tmp_path, capsys):
    data = shared_dir / "data"
    rc = main(["eval", "zeroshot", "--model", str(tiny_hf[0]), "--dataset", str(data / "cifar10"),
               "--max-samples", "64", "--no-progress", "--batch-size", "32"])
    assert rc == 0 and "18 templates" in capsys.readouterr().out
    rc = main(["eval", "retrieval", "--model", str(tiny_hf[0]), "--dataset", str(data / "flickr8k"),
               "--max-samples", "40", "--no-progress", "--out", str(tmp_path / "r")])
    assert rc == 0
    rec = json.loads((tmp_path / "r" / "results.json").read_text())[0]
    assert rec["dataset"] == "flickr8k" and rec["details"]["num_texts"] == 200


def test_a_linear_probe_without_a_train_split_fails_before_any_work(tmp_path, tiny_hf, monkeypatch):
    """["zeroshot", "linear_probe"] on a dataset without a train split: the zero-shot ran (and wrote its plot), the
    probe then failed, and no results were written. The probe's splits are checked first now."""
    from kizuna.eval import suite as S

    only_test = classification_wds(tmp_path / "only", n=4, split="test")

    def no_encoding(*a, **k):
        raise AssertionError("encoded images before checking the probe's splits")

    monkeypatch.setattr(S, "encode_images", no_encoding, raising=False)
    monkeypatch.setattr("kizuna.eval.encode.encode_images", no_encoding)
    f = tmp_path / "suite.json"
    f.write_text(json.dumps({"runs": [{"model": str(tiny_hf[0]), "dataset": str(only_test),
                                       "task": ["zeroshot", "linear_probe"]}]}))
    with pytest.raises(Exception, match="no split 'train'"):
        run_suite(f, out_dir=tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_the_table_shows_every_few_shot_k_the_runs_probed():
    """The linear-probe columns were fixed to k = 1, 2, 4, 8, 16: a suite probing 3 and 32 shots showed neither."""
    rec = {"task": "linear_probe", "model": "m", "pretrained": "", "dataset": "d",
           "metrics": {"zeroshot_acc1": 0.5, "fewshot_3_acc1_mean": 0.4, "fewshot_32_acc1_mean": 0.6,
                       "fewshot_3_acc1_std": 0.01, "lp_acc1": 0.7, "zeroshot_matches_k_shot": float("nan")}}
    header = next(line for line in markdown_report([rec]).splitlines() if line.startswith("| model"))
    assert header.endswith("| zeroshot_acc1 | fewshot_3_acc1_mean | fewshot_32_acc1_mean | lp_acc1 |")


def test_results_are_rewritten_whole_or_not_at_all(tmp_path, monkeypatch):
    """results.json was rewritten in place: a write that failed midway (a full disk, a kill) left a cut-off file
    where the complete one of the runs before had been."""
    from pathlib import Path

    from kizuna.eval.suite import write_results

    rec = {"task": "zeroshot_classification", "model": "m", "pretrained": "", "dataset": "d", "metrics": {"acc1": 0.5}}
    write_results([rec], tmp_path)
    before = (tmp_path / "results.json").read_text()
    real = Path.write_text

    def half_then_fail(self, text, *a, **k):
        real(self, text[: len(text) // 2], *a, **k)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_text", half_then_fail)
    with pytest.raises(OSError):
        write_results([rec, rec], tmp_path)
    monkeypatch.undo()
    assert (tmp_path / "results.json").read_text() == before
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_the_suites_probe_compares_with_zero_shot_over_the_training_classes(tmp_path, tiny_hf, monkeypatch):
    """With a zero-shot task in the same run, the probe reused its number: scored over the test split's own
    classes (a test folder lacking a class: fewer, a higher chance level), where `eval linear-probe` scores the
    training's."""
    from _evalhelpers import image_folder

    import kizuna.eval.linear_probe as linear_probe

    root = tmp_path / "ifv"
    image_folder(root / "train", per_class=4, classes=["airplane", "bird", "cat"])
    image_folder(root / "test", per_class=4, classes=["bird", "cat"])
    scored = []
    monkeypatch.setattr(linear_probe, "zeroshot_over_train_classes",
                        lambda model, tok, train, test, *a, **k: scored.append(train.classnames) or 0.125)
    spec = {"defaults": {"batch_size": 4, "split": "test"},
            "runs": [{"model": str(tiny_hf[0]), "name": "t", "dataset": str(root),
                      "task": ["zeroshot", "linear_probe"], "few_shot": [1], "seeds": 1}]}
    (tmp_path / "s.json").write_text(json.dumps(spec))
    records = run_suite(tmp_path / "s.json", out_dir=tmp_path / "out", progress=False, echo=lambda s: None)
    assert scored == [["airplane", "bird", "cat"]] and records[1]["metrics"]["zeroshot_acc1"] == 0.125


def test_a_folder_named_like_a_preset_is_recorded_as_random_init(tmp_path, monkeypatch):
    """A suite's record said pretrained = "ViT-mu-8" when a folder of that name (an earlier --out) stood in the
    working directory, though create_model built the random preset."""
    from kizuna.eval.suite import _record

    monkeypatch.chdir(tmp_path)
    (tmp_path / "ViT-mu-8").mkdir()
    import kizuna

    model = kizuna.create_model("ViT-mu-8")
    assert _record({"model": "ViT-mu-8"}, model, "d", "zeroshot_classification", {}, {})["pretrained"] == "random_init"


def test_a_suite_lets_a_model_go_after_its_last_run(tmp_path, tiny_hf, data, monkeypatch):
    """Every model a suite loaded stayed in memory until the suite ended (one more ViT-B/32 per checkpoint of a loop
    over 20): a model is now let go after the last run that uses it, and still loaded only once."""
    from kizuna.eval import suite as suite_module

    cls, _ = data
    held, run = [], suite_module.run_entry

    def run_and_look(r, ctx, **kw):
        held.append(sorted(key[0] for key in ctx.models))
        return run(r, ctx, **kw)

    monkeypatch.setattr(suite_module, "run_entry", run_and_look)
    import kizuna

    loads = []
    monkeypatch.setattr(kizuna, "create_model", lambda *a, _make=kizuna.create_model, **kw:
                        loads.append(a[0]) or _make(*a, **kw))
    a, b = str(tiny_hf[0]), "ViT-mu-8"
    runs = [{"model": m, "dataset": str(cls), "task": "zeroshot", "batch_size": 4} for m in (a, b, a, b)]
    run_suite(runs, progress=False, echo=None)
    assert held == [[], [a], [a, b], [b]]  # a is kept for run 3, b for run 4; a is gone once run 3 is done
    assert loads == [a, b]


def test_figures_say_which_checkpoint_they_show(tmp_path):
    """Two checkpoints of one preset were both "ViT-mu-8" in the robustness scatter, and their confusion matrices
    had the same title (figures audit)."""
    from kizuna.eval.suite import _robustness_scatter, short_spec

    assert short_spec("runs/runA/checkpoints/best") == "runA/best" and short_spec("ViT-mu-8") == "ViT-mu-8"
    records = [{"task": "robustness", "model": "ViT-mu-8", "pretrained": f"runs/{run}/checkpoints/best",
                "dataset": "cifar10", "metrics": {"clean_acc1": 0.5, "shifted_acc1": 0.3}} for run in ("runA", "runB")]
    labels = []
    import matplotlib.axes

    scatter = matplotlib.axes.Axes.scatter

    def looking(self, *a, **kw):
        labels.append(kw.get("label"))
        return scatter(self, *a, **kw)

    matplotlib.axes.Axes.scatter = looking
    try:
        _robustness_scatter(records, tmp_path / "s.png")
    finally:
        matplotlib.axes.Axes.scatter = scatter
    assert labels == ["ViT-mu-8 (runA/best) / cifar10", "ViT-mu-8 (runB/best) / cifar10"]
