"""A fresh run into a folder that holds an earlier run's metrics.jsonl starts a new log; a resumed run keeps
appending. Before, every run appended, so `kizuna demo` run twice into one --out plotted and averaged
both runs as one (its loss curve jumped back to step 10)."""
from __future__ import annotations

from kizuna.train.logging import MetricLogger, read_metrics, set_aside_previous_log


def _log_steps(out, steps, **logger_args):
    logger = MetricLogger(out, tensorboard=False, **logger_args)
    for step in steps:
        logger.log(step, {"loss": 1.0 / step})
    logger.close()
    return logger


def test_a_fresh_run_moves_the_earlier_log_aside(tmp_path, capsys):
    _log_steps(tmp_path, [10, 20, 30])
    _log_steps(tmp_path, [10, 20], fresh=True)
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl", "train")] == [10, 20]
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl.prev", "train")] == [10, 20, 30]
    assert "moved to metrics.jsonl.prev" in capsys.readouterr().out
    _log_steps(tmp_path, [5], fresh=True)  # only the run just before is kept
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl.prev", "train")] == [10, 20]


def test_a_resumed_run_appends_after_its_checkpoint(tmp_path):
    _log_steps(tmp_path, [10, 20, 30])
    resumed = MetricLogger(tmp_path, tensorboard=False)  # the default: append (what a resume needs)
    resumed.drop_after(20)
    resumed.log(30, {"loss": 0.5})
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl", "train")] == [10, 20, 30]
    assert not (tmp_path / "metrics.jsonl.prev").exists()


def test_nothing_to_set_aside(tmp_path, capsys):
    assert set_aside_previous_log(tmp_path) is None
    (tmp_path / "metrics.jsonl").write_text("")  # an empty log is no earlier run
    _log_steps(tmp_path, [1], fresh=True)
    assert not (tmp_path / "metrics.jsonl.prev").exists() and capsys.readouterr().out == ""
    MetricLogger(tmp_path / "rank1", enabled=False, fresh=True)  # a non-main rank touches nothing
    assert not (tmp_path / "rank1").exists()
