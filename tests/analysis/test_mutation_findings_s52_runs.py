"""Mutation findings (session 52): load_run's train_from (the start or resume record before the first training
record, not a later one nor one at its step) and _logged_every (the run's own --log-every, 1 included)."""
import json

from kizuna.analysis.runs import _logged_every, load_run


def _log(folder, records):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return folder


def test_train_from_is_the_record_before_the_first_training_record(tmp_path):
    run = _log(tmp_path / "a", [{"kind": "start", "step": 0}, {"kind": "train", "step": 4, "train_top1": 0.1},
                                {"kind": "resume", "step": 4}, {"kind": "train", "step": 8, "train_top1": 0.2},
                                {"kind": "resume", "step": 8}, {"kind": "train", "step": 12, "train_top1": 0.3},
                                {"kind": "eval", "step": 12, "val_top1": 0.5}])
    assert load_run(run)["train_from"] == 0


def test_a_log_that_begins_with_a_resume_counts_from_it(tmp_path):
    run = _log(tmp_path / "b", [{"kind": "resume", "step": 24}, {"kind": "train", "step": 27, "train_top1": 0.1},
                                {"kind": "eval", "step": 27, "val_top1": 0.5}])
    assert load_run(run)["train_from"] == 24


def test_logged_every_is_the_runs_setting_when_it_has_one():
    steps = [2, 4, 6, 8, 10]  # (records at checkpoints too halve the median gap)
    assert _logged_every({"config": {"log_every": 1}, "train_steps": [3, 6, 9]}) == 1
    assert _logged_every({"config": {"log_every": 4}, "train_steps": steps}) == 4
    assert _logged_every({"config": {"log_every": True}, "train_steps": steps}) == 2
    assert _logged_every({"train_steps": steps}) == 2
