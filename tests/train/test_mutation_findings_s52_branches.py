"""Mutation findings (session 52): MetricLogger.drop_after's keep_aside (one file per branch, nothing written
when nothing is dropped, torn lines no record) and copy_events_of (the events beside a .prev log are
tensorboard.prev's)."""
import json

from kizuna.train.logging import BRANCHES, MetricLogger


def _write(path, steps, torn=False):
    lines = [json.dumps({"kind": "train", "step": s}) for s in steps]
    if torn:
        lines += ["null", "[3]", '{"kind": "tra']  # (JSON that is no record, and a line torn mid-write)
    path.write_text("\n".join(lines) + "\n")


def test_each_branch_from_one_step_is_kept_in_a_file_of_its_own(tmp_path):
    logger = MetricLogger(tmp_path, tensorboard=False)
    _write(logger.path, [1, 2, 3, 4], torn=True)
    first = logger.drop_after(2, keep_aside=True)
    assert first == tmp_path / BRANCHES / "after_step_2.jsonl"
    assert [json.loads(x)["step"] for x in first.read_text().splitlines()] == [3, 4]  # (no record: not kept aside)
    _write(logger.path, [1, 2, 5, 6])
    second = logger.drop_after(2, keep_aside=True)
    assert second == tmp_path / BRANCHES / "after_step_2.2.jsonl"
    _write(logger.path, [1, 2, 7])
    third = logger.drop_after(2, keep_aside=True)
    assert third == tmp_path / BRANCHES / "after_step_2.3.jsonl"
    assert [json.loads(x)["step"] for x in second.read_text().splitlines()] == [5, 6]
    assert [json.loads(x)["step"] for x in logger.path.read_text().splitlines()] == [1, 2]


def test_nothing_dropped_keeps_nothing_aside(tmp_path):
    logger = MetricLogger(tmp_path, tensorboard=False)
    _write(logger.path, [1, 2])
    assert logger.drop_after(2, keep_aside=True) is None
    assert not (tmp_path / BRANCHES).exists()
    _write(logger.path, [1, 2, 3])
    assert logger.drop_after(2) is None and not (tmp_path / BRANCHES).exists()


def test_the_events_of_a_set_aside_log_are_read_from_tensorboard_prev(tmp_path):
    source = tmp_path / "source"
    (source / "tensorboard.prev").mkdir(parents=True)
    (source / "tensorboard.prev" / "events.out.tfevents.1.prev").write_bytes(b"old run")
    (source / "tensorboard").mkdir()
    (source / "tensorboard" / "events.out.tfevents.2.now").write_bytes(b"new run")
    logger = MetricLogger(tmp_path / "out", tensorboard=False)
    logger.copy_events_of(source / "metrics.jsonl.prev")
    assert [p.name for p in (tmp_path / "out" / "tensorboard").iterdir()] == ["events.out.tfevents.1.prev"]


def test_a_disabled_logger_copies_no_events(tmp_path):
    source = tmp_path / "source"
    (source / "tensorboard").mkdir(parents=True)
    (source / "tensorboard" / "events.out.tfevents.1.x").write_bytes(b"run")
    logger = MetricLogger(tmp_path / "out", enabled=False)
    logger.copy_events_of(source / "metrics.jsonl")
    assert not (tmp_path / "out" / "tensorboard").exists()
