"""`kizuna analyze compare-runs`: several runs' logs side by side."""
from __future__ import annotations

import json
from statistics import mean

import pytest

import kizuna
from kizuna.analysis.runs import compare_runs, format_table, load_run
from kizuna.apps.cli import main
from kizuna.train.checkpointing import CheckpointManager
from kizuna.train.logging import MetricLogger


def _write_run(folder, evals, trains, config=None, model=None):
    """A run folder with metrics.jsonl (eval rows: (step, val_top1), train rows: (step, train_top1))
    and, when ``config`` is given, one checkpoint whose train_state holds it."""
    folder.mkdir(parents=True)
    rows = [{"kind": "train", "step": s, "time": 1000.0 + s, "loss": 1.0, "train_top1": a} for s, a in trains]
    rows += [{"kind": "eval", "step": s, "time": 1000.5 + s, "val_top1": a, "val_loss": 1.0} for s, a in evals]
    rows.sort(key=lambda r: (r["step"], r["kind"] == "eval"))
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if config is not None:
        CheckpointManager(folder, keep_last=2).save(evals[-1][0], model, {"step": evals[-1][0],
                                                                          "train_config": config})
    return folder


@pytest.fixture(scope="module")
def tiny_model():
    return kizuna.create_vit("mu/4", image_size=8, num_classes=2, width=16, depth=1, heads=2, mlp_dim=32)


@pytest.fixture()
def study(tmp_path, tiny_model):
    """Four runs: two models x two data fractions, plus a second seed of one of them."""
    base = {"model": "mu/4", "subset_fraction": 0.1, "seed": 0, "lr": 0.002, "out": "x", "threads": 1}
    runs = {
        "vit-0.1": ([(50, 0.30), (100, 0.40)], [(20, 0.2), (40, 0.5), (60, 0.6), (80, 0.8), (100, 0.9)], {}),
        "hyb-0.1": ([(50, 0.35), (100, 0.50)], [(20, 0.3), (40, 0.5), (60, 0.6), (80, 0.6), (100, 0.7)],
                    {"model": "hybrid-mu/1"}),
        "hyb-0.1-s1": ([(50, 0.45), (100, 0.40)], [(20, 0.3), (40, 0.5), (60, 0.6), (80, 0.6), (100, 0.6)],
                       {"model": "hybrid-mu/1", "seed": 1}),
        "vit-1.0": ([(50, 0.33), (100, 0.52)], [(20, 0.2), (40, 0.3), (60, 0.4), (80, 0.5), (100, 0.5)],
                    {"subset_fraction": 1.0, "out": "y"}),
    }
    return [_write_run(tmp_path / name, ev, tr, {**base, **cfg}, tiny_model) for name, (ev, tr, cfg) in runs.items()]


def test_load_run_numbers_follow_the_log(study):
    r = load_run(study[2])
    assert r["final"] == 0.40 and r["final_step"] == 100
    assert r["best"] == 0.45 and r["best_step"] == 50  # best is not the last
    assert r["final_train_top1"] == pytest.approx((0.3 + 0.5 + 0.6 + 0.6 + 0.6) / 5)
    assert r["generalisation_gap"] == pytest.approx(r["final_train_top1"] - 0.40)
    assert r["wall_minutes_logged"] == pytest.approx((1100.5 - 1020.0) / 60)
    assert r["config"]["model"] == "hybrid-mu/1" and r["config"]["seed"] == 1
    assert load_run(study[0], train_window=1)["final_train_top1"] == pytest.approx(0.9)


def test_compare_runs_finds_differing_settings_groups_and_panels(study, tmp_path):
    out = tmp_path / "fig"
    numbers = compare_runs(study, out, panel_by="subset_fraction", group_by=["model", "subset_fraction"])
    # "out" and "threads" differ or not but never tell an experiment apart; lr is equal everywhere
    assert numbers["differing_settings"] == ["model", "seed", "subset_fraction"]
    assert [r["label"] for r in numbers["runs"]] == ["vit-0.1", "hyb-0.1", "hyb-0.1-s1", "vit-1.0"]
    assert numbers["runs"][3]["settings"] == {"model": "mu/4", "seed": 0, "subset_fraction": 1.0}
    groups = {(g["settings"]["model"], g["settings"]["subset_fraction"]): g for g in numbers["groups"]}
    assert set(groups) == {("mu/4", 0.1), ("hybrid-mu/1", 0.1), ("mu/4", 1.0)}
    hybrid = groups[("hybrid-mu/1", 0.1)]
    assert hybrid["runs"] == ["hyb-0.1", "hyb-0.1-s1"]
    assert hybrid["mean_final_val_top1"] == pytest.approx(0.45)
    # the sample std of two seeds, |a - b| / sqrt 2 (the population std read |a - b| / 2 = 0.05)
    assert hybrid["std_final_val_top1"] == pytest.approx(0.1 / 2 ** 0.5)
    # a group of one run measured no spread: null, not 0.0, and the table says so
    single = groups[("mu/4", 1.0)]
    assert single["runs"] == ["vit-1.0"] and single["std_final_val_top1"] is None
    assert single["min_final_val_top1"] == single["max_final_val_top1"] == 0.52
    table = format_table(numbers)
    assert 'group {"model": "mu/4", "subset_fraction": 1.0}: mean 0.5200 (one run: no spread) over 1 runs' in table
    assert "+- 0.0707" in table
    assert (out / "runs.png").stat().st_size > 10_000
    assert json.loads((out / "runs.json").read_text())["groups"] == numbers["groups"]


def test_compare_runs_names_a_dashed_training_curve_only_where_one_is_drawn(study, tmp_path, monkeypatch):
    """`kizuna train` (CLIP) logs no training accuracy: its compare-runs figure promised a dashed training
    curve in the title and y label that was never drawn."""
    from matplotlib.axes import Axes

    import kizuna.analysis.figures as figures

    labels, titles = [], []
    monkeypatch.setattr(Axes, "set_ylabel", lambda self, text, *a, **k: labels.append(text))
    real_plot = figures.plot_runs
    monkeypatch.setattr(figures, "plot_runs", lambda *a, **k: titles.append(k["title"]) or real_plot(*a, **k))
    compare_runs(study, tmp_path / "with")
    assert "train accuracy (dashed)" in labels[-1] and "training accuracy (dashed)" in titles[-1]
    for run in study:  # the same runs without their training-accuracy records
        path = run / "metrics.jsonl"
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        path.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "train_top1"}) + "\n" for r in rows))
    compare_runs(study, tmp_path / "without")
    assert labels[-1] == "val_top1" and titles[-1] == "4 runs: val_top1"


def test_compare_runs_errors_name_the_file_and_what_to_do(study, tmp_path):
    with pytest.raises(FileNotFoundError, match="no metrics.jsonl"):
        compare_runs([tmp_path / "nothing-here"], tmp_path / "o")
    with pytest.raises(ValueError, match="no eval rows with 'recall'; its eval rows have: val_loss, val_top1"):
        compare_runs(study[:1], tmp_path / "o", metric="recall")
    with pytest.raises(ValueError, match="'learning_rate' is not in the saved train_config.*differ in are: model"):
        compare_runs(study, tmp_path / "o", colour_by="learning_rate")
    with pytest.raises(ValueError, match="2 names for 4 runs"):
        compare_runs(study, tmp_path / "o", labels=["a", "b"])
    bare = _write_run(tmp_path / "no-ckpt", [(10, 0.1)], [(10, 0.2)])
    with pytest.raises(ValueError, match="subset_fraction.*no-ckpt"):
        compare_runs([study[0], bare], tmp_path / "o", panel_by="subset_fraction")


def test_a_killed_and_resumed_run_reads_as_one_curve(tmp_path):
    """Killed mid-write at step 30 (a truncated line), resumed from the step-20 checkpoint: steps 30
    and 40 are logged again after the broken line, and the second record of a step is the one kept."""
    run = tmp_path / "resumed"
    run.mkdir()
    rows = [{"kind": "eval", "step": 10, "val_top1": 0.1}, {"kind": "eval", "step": 20, "val_top1": 0.2},
            {"kind": "eval", "step": 30, "val_top1": 0.25}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"kind": "eval", "st')
    resumed = MetricLogger(run, tensorboard=False)  # what the resumed trainer opens
    resumed.log(30, {"val_top1": 0.3}, kind="eval")
    resumed.log(40, {"val_top1": 0.4}, kind="eval")
    with pytest.warns(UserWarning, match=r"metrics.jsonl: skipped 1 line\(s\) that are not JSON \(line 4\)"):
        r = load_run(run)
    assert r["eval_steps"] == [10, 20, 30, 40]
    assert r["eval"] == [0.1, 0.2, 0.3, 0.4]


def test_the_logged_wall_time_leaves_out_the_time_a_run_stood_still(tmp_path):
    """A run killed and resumed an hour later counted that hour: last record minus first."""
    run = tmp_path / "resumed"
    run.mkdir()
    rows = [{"kind": "train", "step": 10, "time": 1000.0}, {"kind": "eval", "step": 20, "time": 1060.0, "val_top1": 0.2},
            {"kind": "resume", "step": 20, "time": 4660.0, "from": "step_0000020"},
            {"kind": "train", "step": 30, "time": 4690.0}, {"kind": "eval", "step": 40, "time": 4720.0, "val_top1": 0.4}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert load_run(run)["wall_minutes_logged"] == pytest.approx((60 + 60) / 60)


def test_a_resumed_trainer_marks_where_its_clock_restarts(tmp_path):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[1] / "train"))
    from _tiny import tiny_config

    from kizuna.train.contrastive import ContrastiveTrainer
    from kizuna.train.logging import read_metrics

    ContrastiveTrainer(tiny_config(tmp_path, steps=2, save_every=2)).train()
    resumed = ContrastiveTrainer(tiny_config(tmp_path, steps=4, resume="latest"))
    resumed.train()
    records = read_metrics(tmp_path / "metrics.jsonl", "resume")
    assert [(r["step"], r["from"]) for r in records] == [(2, "step_0000002")]
    # and the precision that part ran in: train_config.json says the latest part's only
    assert records[0]["precision_used"] == resumed.precision


def test_cli_prints_a_table_and_exits_cleanly_on_bad_input(study, tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["analyze", "compare-runs", *map(str, study), "--panel-by", "subset_fraction",
            "--group-by", "model,subset_fraction", "--colour-by", "model", "--labels", "a,b,c,d", "--out", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "settings that differ: model, seed, subset_fraction" in printed
    assert "mean 0.4500 +- 0.0707 over 2 runs" in printed  # the sample std of two seeds
    assert (out / "runs.png").exists()
    assert main(["analyze", "compare-runs", str(tmp_path / "missing"), "--out", str(out)]) != 0
    assert "no metrics.jsonl" in capsys.readouterr().err


def test_train_config_json_is_preferred_over_the_checkpoint(study):
    """A run folder's train_config.json (written when training starts) wins over the checkpoint's copy."""
    (study[0] / "train_config.json").write_text(json.dumps({"model": "mu/4", "subset_fraction": 0.5}))
    assert load_run(study[0])["config"] == {"model": "mu/4", "subset_fraction": 0.5}
    (study[0] / "train_config.json").write_text("{oops")
    with pytest.raises(ValueError, match="train_config.json: not JSON"):
        load_run(study[0])



def test_the_gap_is_only_for_an_accuracy(study, tmp_path, capsys):
    """--metric val_loss reported "train accuracy minus loss" as the generalisation gap: it is null now for a
    metric that is not an accuracy (a loss, an error, a rank), "-" in the table."""
    assert load_run(study[0], "val_loss")["generalisation_gap"] is None
    assert load_run(study[0], "val_top1")["generalisation_gap"] == pytest.approx(0.6 - 0.40)
    assert main(["analyze", "compare-runs", *map(str, study[:2]), "--metric", "val_loss",
                 "--out", str(tmp_path / "loss")]) == 0
    table = capsys.readouterr().out.splitlines()
    assert all(line.split()[-1] == "-" for line in table[1:3])
    saved = json.loads((tmp_path / "loss" / "runs.json").read_text())
    assert [r["generalisation_gap"] for r in saved["runs"]] == [None, None]
    assert [r["final_train_top1"] is not None for r in saved["runs"]] == [True, True]  # still reported


@pytest.mark.parametrize("text", ['["x"]', "null", "3"])
def test_train_config_that_is_not_an_object_names_the_file(study, text):
    """Valid JSON but not an object gave "AttributeError: 'list' object has no attribute 'get'", naming no file."""
    (study[0] / "train_config.json").write_text(text)
    with pytest.raises(ValueError, match=r"train_config.json: the run's settings must be a JSON object"):
        load_run(study[0])


def test_checkpoint_train_config_that_is_not_an_object_names_the_file(tmp_path, tiny_model):
    run = _write_run(tmp_path / "listy", [(10, 0.1)], [(10, 0.2)], config=["model", "mu/4"], model=tiny_model)
    with pytest.raises(ValueError, match=r"train_state.pt \(its train_config\): the run's settings must be a JSON "
                                         r"object.*train_config.json"):
        load_run(run)
    bare = _write_run(tmp_path / "none", [(10, 0.1)], [(10, 0.2)], config=None)
    assert load_run(bare)["config"] == {}  # no settings saved at all is still a run without settings


def test_whole_float_steps_count_and_other_steps_are_named(tmp_path):
    """A log whose steps are floats (10.0, as a tool that rewrites JSON numbers leaves them) was read as "the
    run logged no evaluation"; a step that is not a whole number is skipped with a warning naming it."""
    run = tmp_path / "floats"
    run.mkdir()
    rows = [{"kind": "train", "step": 10.0, "train_top1": 0.5}, {"kind": "eval", "step": 10.0, "val_top1": 0.2},
            {"kind": "eval", "step": 15.5, "val_top1": 0.9}, {"kind": "eval", "step": 20, "val_top1": 0.3}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.warns(UserWarning, match=r"skipped 1 row\(s\) whose step is not a whole number \(eval step 15.5\)"):
        r = load_run(run)
    assert r["eval_steps"] == [10, 20] and r["eval"] == [0.2, 0.3] and r["train_steps"] == [10]
    assert all(type(s) is int for s in r["eval_steps"] + r["train_steps"] + [r["final_step"], r["best_step"]])
    (run / "metrics.jsonl").write_text(json.dumps({"kind": "eval", "step": "10", "val_top1": 0.2}) + "\n")
    with pytest.warns(UserWarning, match='eval step "10"'), \
            pytest.raises(ValueError, match=r"1 eval row\(s\) were skipped: their step is not a whole number"):
        load_run(run)


@pytest.mark.parametrize("diverged", ["NaN", "null"])
def test_a_group_with_a_diverged_run_has_no_mean_and_no_traceback(tmp_path, capsys, diverged):
    """--group-by crashed in statistics.pstdev (AttributeError) when a grouped run's final value was NaN or
    null, writing nothing; the group's mean, std, min and max are NaN (null in runs.json) now, whatever the
    runs' order, and a group of finite runs keeps its numbers."""
    finals = {"a-s0": ("a", "1.9"), "a-s1": ("a", diverged), "b-s0": ("b", "1.0"), "b-s1": ("b", "2.0")}
    for name, (model, final) in finals.items():
        run = tmp_path / name
        run.mkdir()
        (run / "train_config.json").write_text(json.dumps({"model": model, "seed": int(name[-1])}))
        (run / "metrics.jsonl").write_text(
            '{"kind": "train", "step": 10, "time": 1.0, "train_top1": 0.3}\n'
            f'{{"kind": "eval", "step": 10, "time": 2.0, "val_top1": 0.3, "val_loss": {final}}}\n')
    for order in (["a-s0", "a-s1"], ["a-s1", "a-s0"]):
        out = tmp_path / f"out-{order[0]}"
        runs = [str(tmp_path / n) for n in order + ["b-s0", "b-s1"]]
        assert main(["analyze", "compare-runs", *runs, "--metric", "val_loss", "--group-by", "model",
                     "--out", str(out)]) == 0
        assert "group {\"model\": \"a\"}: mean nan (a run's final value is NaN) over 2 runs" in capsys.readouterr().out
        groups = {g["settings"]["model"]: g for g in json.loads((out / "runs.json").read_text())["groups"]}
        assert [groups["a"][f"{k}_final_val_loss"] for k in ("mean", "std", "min", "max")] == [None] * 4
        assert [groups["b"][f"{k}_final_val_loss"] for k in ("mean", "std", "min", "max")] == \
            pytest.approx([1.5, 0.5 ** 0.5, 1.0, 2.0])
        assert (out / "runs.png").is_file()


def test_runs_of_an_older_kizuna_differ_only_in_what_they_set(tmp_path, tiny_model):
    """A setting added after a run was made (act, augment_on, ...) read as null against today's default: runs made
    alike "differed" in it, and --group-by/--colour-by on it was refused; precision_used, which older runs did not
    record, counted as a difference too."""
    from kizuna.train.supervised import make_supervised_config

    today = make_supervised_config(model="mu/4", out="x").to_dict()
    older = {k: v for k, v in today.items() if k not in ("act", "augment_on")}
    a = _write_run(tmp_path / "a", [(10, 0.3)], [(10, 0.4)], {**today, "precision_used": "fp32"}, tiny_model)
    b = _write_run(tmp_path / "b", [(10, 0.5)], [(10, 0.6)], older, tiny_model)
    numbers = compare_runs([a, b], tmp_path / "fig", group_by=["act"], colour_by="augment_on")
    assert numbers["differing_settings"] == []
    assert [g["runs"] for g in numbers["groups"]] == [["a", "b"]]


def test_the_final_train_accuracy_covers_the_same_steps_whatever_the_log_interval(tmp_path, tiny_model):
    """The final train accuracy was the mean of the last 5 logged values: 5 steps of a run logging every step
    against 100 of one logging every 20, so two runs alike in all but --log-every (log_every is no setting
    that tells runs apart) showed other train accuracies and gaps. Each record is the mean over the steps
    since the one before: the window is now the same steps for both, each record weighted by its steps."""
    per_step = [min(1.0, 0.01 * s) for s in range(1, 101)]  # training accuracy rising by a point a step
    every_step = [(s, per_step[s - 1]) for s in range(1, 101)]
    every_20 = [(s, mean(per_step[s - 20:s])) for s in range(20, 101, 20)]
    a = _write_run(tmp_path / "a", [(100, 0.5)], every_step, {"model": "mu/4", "log_every": 1}, tiny_model)
    b = _write_run(tmp_path / "b", [(100, 0.5)], every_20, {"model": "mu/4", "log_every": 20}, tiny_model)
    saved = compare_runs([a, b], tmp_path / "fig")
    expected = mean(per_step[-100:])  # 5 records of the run logging every 20 steps: its last 100 steps
    assert [r["final_train_top1"] for r in saved["runs"]] == pytest.approx([expected, expected])
    assert [r["generalisation_gap"] for r in saved["runs"]] == pytest.approx([expected - 0.5] * 2)
    # alone, each run's window is 5 of its own records; a window starting inside a record counts part of it
    assert load_run(a)["final_train_top1"] == pytest.approx(mean(per_step[-5:]))
    last, before = mean(per_step[80:100]), mean(per_step[60:80])  # the records at steps 100 and 80
    assert load_run(b, window_steps=30)["final_train_top1"] == pytest.approx((20 * last + 10 * before) / 30)


def test_runs_given_as_links_keep_the_names_typed(tmp_path, tiny_model, monkeypatch):
    """Labels were the resolved folder's name: two links exp_a -> x/run and exp_b -> y/run were both "run" in
    the legend and runs.json. "." is still named after the folder it is."""
    import os

    for parent in ("x", "y"):
        _write_run(tmp_path / parent / "run", [(10, 0.5)], [(10, 0.6)], {"model": "mu/4"}, tiny_model)
    os.symlink(tmp_path / "x" / "run", tmp_path / "exp_a")
    os.symlink(tmp_path / "y" / "run", tmp_path / "exp_b")
    saved = compare_runs([tmp_path / "exp_a", tmp_path / "exp_b"], tmp_path / "fig")
    assert [r["label"] for r in saved["runs"]] == ["exp_a", "exp_b"]
    monkeypatch.chdir(tmp_path / "x" / "run")
    assert [r["label"] for r in compare_runs(["."], tmp_path / "fig2")["runs"]] == ["run"]


def test_the_logged_wall_time_counts_from_a_runs_start_record(tmp_path):
    """From its first record, a run's logged time left out its first --log-every steps (0.4 s of 8.3 s at
    --log-every 100); a start record (written before the first step) begins it."""
    run = tmp_path / "started"
    run.mkdir()
    rows = [{"kind": "start", "step": 0, "time": 990.0}, {"kind": "train", "step": 100, "time": 1000.0},
            {"kind": "eval", "step": 100, "time": 1001.0, "val_top1": 0.2}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert load_run(run)["wall_minutes_logged"] == pytest.approx(11 / 60)


def test_a_fresh_trainer_logs_where_its_clock_starts(tmp_path):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[1] / "train"))
    from _tiny import tiny_config

    from kizuna.train.contrastive import train

    train(tiny_config(tmp_path / "run", steps=2, batch_size=8, log_every=2))
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert records[0]["kind"] == "start" and records[0]["step"] == 0 and records[0]["time"] <= records[1]["time"]


def test_a_run_given_twice_is_refused(tmp_path):
    """runs/s1 and ./runs/s1/ were two runs of one group: its mean and spread counted one run twice."""
    from kizuna.analysis.runs import compare_runs

    run = tmp_path / "runs" / "s1"
    run.mkdir(parents=True)
    rows = [{"kind": "eval", "step": 10, "time": 1.0, "val_top1": 0.2}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ValueError, match=r"run .*s1/ is .*s1 given again"):
        compare_runs([str(run), str(run) + "/"], out=tmp_path / "out")
