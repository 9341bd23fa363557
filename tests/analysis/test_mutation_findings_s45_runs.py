"""Mutation testing of stop 45's logged-time rule in kizuna.analysis.runs.load_run: a "start" record begins a
segment wherever it appears, not only first."""
import json

import pytest

from kizuna.analysis.runs import load_run


def test_a_second_start_record_begins_a_segment(tmp_path):
    """A folder whose metrics.jsonl holds two runs' records, each begun by a start record (a fresh run in the same
    --out), 1000 s apart: 11 + 11 s logged, not 1021 s. Kills: the segment split on "resume" records only."""
    run = tmp_path / "twice"
    run.mkdir()
    rows = [{"kind": "start", "step": 0, "time": 990.0}, {"kind": "train", "step": 100, "time": 1000.0},
            {"kind": "eval", "step": 100, "time": 1001.0, "val_top1": 0.2},
            {"kind": "start", "step": 0, "time": 1990.0}, {"kind": "train", "step": 100, "time": 2000.0},
            {"kind": "eval", "step": 100, "time": 2001.0, "val_top1": 0.3}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert load_run(run)["wall_minutes_logged"] == pytest.approx(22 / 60)
