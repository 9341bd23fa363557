"""A fresh run into a folder that holds an earlier run's metrics.jsonl starts a new log; a resumed run keeps
appending. Before, every run appended, so `kizuna demo` run twice into one --out plotted and averaged
both runs as one (its loss curve jumped back to step 10)."""
from __future__ import annotations

import pytest

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
    assert "moved to metrics.jsonl.prev" in capsys.readouterr().err
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
    assert not (tmp_path / "metrics.jsonl.prev").exists() and capsys.readouterr().err == ""
    MetricLogger(tmp_path / "rank1", enabled=False, fresh=True)  # a non-main rank touches nothing
    assert not (tmp_path / "rank1").exists()


@pytest.fixture
def event_files_in_order(monkeypatch):
    """TensorBoard reads a folder's event files in name order: time (s), host, pid, then a per-process counter,
    which earlier tests in this process may have taken past 9 ("...10" sorts before "...8"): these tests open
    several writers in one second of one process, where a resume is a new process."""
    from tensorboard.summary.writer import event_file_writer

    monkeypatch.setattr(event_file_writer, "_global_uid", event_file_writer.AtomicCounter(0))


def _tensorboard_steps(folder) -> list[int]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder / "tensorboard"))
    events.Reload()
    return [e.step for e in events.Scalars("train/loss")]


def test_tensorboard_follows_the_log_on_a_fresh_run_and_a_resume(tmp_path, event_files_in_order):
    """metrics.jsonl was set aside (fresh run) or trimmed (resume), but TensorBoard kept the earlier run's
    events: one curve going back to step 1, or the killed run's steps after its checkpoint twice."""
    def run(steps, fresh=False, resume_at=None):
        logger = MetricLogger(tmp_path, fresh=fresh)
        if resume_at is not None:
            logger.drop_after(resume_at)
        for step in steps:
            logger.log(step, {"loss": 1.0 / step})
        logger.close()

    run([1, 2, 3, 4, 5, 6])
    run([1, 2, 3], fresh=True)
    assert _tensorboard_steps(tmp_path) == [1, 2, 3]
    assert (tmp_path / "tensorboard.prev").is_dir()
    run([3, 4, 5], resume_at=2)  # killed after step 3, resumed from its checkpoint at step 2
    assert _tensorboard_steps(tmp_path) == [1, 2, 3, 4, 5]


def test_a_resume_leaves_no_empty_event_file(tmp_path, event_files_in_order):
    """The writer was opened at the start and again by drop_after (with the purge step): every resume left an
    88-byte event file holding no event."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    logger = MetricLogger(tmp_path)
    for step in (1, 2, 3):
        logger.log(step, {"loss": 1.0 / step})
    logger.close()
    for resume_at in (2, 3):
        logger = MetricLogger(tmp_path)
        logger.drop_after(resume_at)
        logger.log(resume_at + 1, {"loss": 0.5})
        logger.close()
    files = sorted((tmp_path / "tensorboard").iterdir())
    assert len(files) == 3  # one per run, none empty
    for f in files:
        assert any(e.HasField("summary") for e in EventFileLoader(str(f)).Load()), f.name
    assert _tensorboard_steps(tmp_path) == [1, 2, 3, 4]
    logger.log(5, {"loss": 0.25})  # a record after close() goes on into a writer of its own, without a purge
    logger.close()
    assert _tensorboard_steps(tmp_path) == [1, 2, 3, 4, 5]
