"""Mutation findings (session 51) on the monotonic ``elapsed_s`` of metrics.jsonl records and how compare-runs
times a run from them."""
from __future__ import annotations

import json

import pytest

from kizuna.analysis.runs import load_run
from kizuna.train import logging as logging_mod
from kizuna.train.logging import MetricLogger


def _write(tmp_path, rows):
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_elapsed_seconds_count_from_when_the_log_was_opened(tmp_path, monkeypatch):
    """elapsed_s is the time since the logger opened, not the monotonic clock's own reading (the seconds since the
    machine booted), so a record says how far into the run it was written."""
    now = [5000.0]
    monkeypatch.setattr(logging_mod.time, "monotonic", lambda: now[0])
    log = MetricLogger(tmp_path, tensorboard=False)
    now[0] += 2.5
    log.log(0, {}, kind="start")
    row = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
    assert row["elapsed_s"] == pytest.approx(2.5)


def test_a_segment_where_some_records_lack_elapsed_seconds_is_timed_on_the_wall_clock(tmp_path):
    """The monotonic clock is used only where every record of a segment has it; a segment mixing records with and
    without it (a log appended to by an older kizuna) was a KeyError, or mixed two clocks."""
    _write(tmp_path, [{"kind": "start", "step": 0, "time": 1000.0},
                      {"kind": "train", "step": 5, "time": 1060.0, "elapsed_s": 3.0, "loss": 1.0},
                      {"kind": "eval", "step": 5, "time": 1120.0, "val_top1": 0.3}])
    assert load_run(tmp_path)["wall_minutes_logged"] == pytest.approx(2.0)


def test_a_missing_metric_is_explained_with_the_eval_rows_metrics_only(tmp_path):
    """"its eval rows have: ..." lists what could be compared: the record's bookkeeping (elapsed_s, as kind, step
    and time) is no metric to pass as --metric."""
    _write(tmp_path, [{"kind": "start", "step": 0, "time": 1000.0, "elapsed_s": 0.0},
                      {"kind": "eval", "step": 5, "time": 1120.0, "elapsed_s": 120.0, "val_loss": 0.3}])
    with pytest.raises(ValueError, match="eval rows have") as e:
        load_run(tmp_path, metric="val_top1")
    assert "val_loss" in str(e.value) and "elapsed_s" not in str(e.value)
