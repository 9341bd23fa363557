"""A stop (Ctrl-C, SIGTERM to the process group) that kills a loader worker as it starts (stop 47's review of start
methods): under spawn and forkserver (the macOS default, and Linux's from Python 3.14) a worker takes seconds to
start, before it ignores the signals, and the group's signal killed it. The run ended in a traceback, exit 1, and
nothing saved (the training loader), or blamed the evaluation ("fix the cause")."""

import json
import signal
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _tiny import tiny_config  # noqa: E402

from kizuna.apps.cli import Terminated  # noqa: E402
from kizuna.train.contrastive import ContrastiveTrainer  # noqa: E402

KILLED = "DataLoader worker (pid 4242) is killed by signal: Terminated."


class _WorkerKilledAfter:
    """The trainer's loader, whose worker dies of the group's SIGTERM after ``n`` batches (before the next one is
    handed out, as a dead worker's batch never is)."""

    def __init__(self, real, n):
        self.real, self.n, self.handed = real, n, 0

    def __getattr__(self, name):
        return getattr(self.real, name)

    def __iter__(self):
        batches = iter(self.real)
        while True:
            if self.handed == self.n:
                signal.raise_signal(signal.SIGTERM)
                raise RuntimeError(KILLED)
            try:
                batch = next(batches)
            except StopIteration:
                return
            self.handed += 1
            yield batch


def _train_with_a_killed_evaluation(cfg) -> None:
    """Train ``cfg`` with an evaluation whose workers the group's SIGTERM killed: the run raises Terminated."""
    trainer = ContrastiveTrainer(cfg)

    def evaluate():
        signal.raise_signal(signal.SIGTERM)
        raise RuntimeError(KILLED)

    trainer.evaluate = evaluate
    with pytest.raises(Terminated):
        trainer.train()


def _losses(out):
    rows = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if r.get("kind") == "train"}


def test_a_loader_worker_killed_by_the_stops_signal_stops_and_saves_where_the_run_stands(tmp_path, capsys):
    trainer = ContrastiveTrainer(tiny_config(tmp_path / "run", steps=6))
    trainer.loader = _WorkerKilledAfter(trainer.loader, 2)
    with pytest.raises(Terminated):
        trainer.train()
    err = capsys.readouterr().err
    assert f"SIGTERM: the data loader stopped with it (RuntimeError: {KILLED})" in err
    assert "stopped at step 2: saved" in err
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("step_*")) == ["step_0000002"]
    # and the resume goes on exactly: the batch the dead worker never handed out is the next one
    ContrastiveTrainer(tiny_config(tmp_path / "run", steps=6, resume="latest")).train()
    ContrastiveTrainer(tiny_config(tmp_path / "whole", steps=6)).train()
    assert _losses(tmp_path / "run") == _losses(tmp_path / "whole")


def test_a_loader_error_without_a_stop_is_still_the_error(tmp_path):
    trainer = ContrastiveTrainer(tiny_config(tmp_path / "run", steps=6))

    class Broken(_WorkerKilledAfter):
        def __iter__(self):
            yield from []
            raise RuntimeError("a real failure")

    trainer.loader = Broken(trainer.loader, 0)
    with pytest.raises(RuntimeError, match="a real failure"):
        trainer.train()


@pytest.mark.parametrize("steps", [6, 4])
def test_an_evaluation_whose_workers_the_stops_signal_killed_is_the_stop_not_an_error(tmp_path, capsys, steps):
    """At step 4 of 6 the run stops there, saved (it said "the evaluation at step 4 failed ... fix the cause", and
    raised the RuntimeError: exit 1); at the last step the run's end is saved, without the evaluation."""
    _train_with_a_killed_evaluation(tiny_config(tmp_path / "run", steps=steps, eval_every=4))
    err = capsys.readouterr().err
    assert f"SIGTERM: the evaluation at step 4 stopped with it (RuntimeError: {KILLED})" in err
    assert (tmp_path / "run" / "checkpoints" / "step_0000004" / "train_state.pt").is_file()
    if steps == 6:
        assert "stopped at step 4: saved" in err and "fix the cause" not in err
    else:
        assert "the run's end" in err


def test_a_stop_in_the_time_budgets_planned_evaluation_is_the_stop(tmp_path, capsys, monkeypatch):
    """The plan's evaluation broken by the stop's signal said "failed ... fix the cause" and raised (exit 1)."""
    from kizuna.train import trainer as trainer_module

    def planned(trainer, bar):
        if trainer.step == 3:
            signal.raise_signal(signal.SIGTERM)
            raise RuntimeError(KILLED)
        return None

    monkeypatch.setattr(trainer_module, "after_step", planned)
    trainer = ContrastiveTrainer(tiny_config(tmp_path / "run", steps=6, log_every=10))
    with pytest.raises(Terminated):
        trainer.train()
    err = capsys.readouterr().err
    assert "SIGTERM: the time budget's plan at step 3 stopped with it" in err and "fix the cause" not in err
    assert (tmp_path / "run" / "checkpoints" / "step_0000003" / "train_state.pt").is_file()
    assert sorted(_losses(tmp_path / "run")) == [3]  # the steps since the last record, logged (one record)


def test_a_stop_in_an_evaluation_logs_the_steps_since_the_last_record(tmp_path):
    _train_with_a_killed_evaluation(tiny_config(tmp_path / "run", steps=8, eval_every=4, log_every=10))
    assert sorted(_losses(tmp_path / "run")) == [4]  # (no record at all before: the window was lost)


def test_a_worker_killed_after_the_last_step_is_the_runs_end(tmp_path):
    """The stop came during the last step and the loader died at the next fetch: the run had ended (and saved),
    but was reported as stopped, to continue with --resume latest."""
    trainer = ContrastiveTrainer(tiny_config(tmp_path / "run", steps=4))
    trainer.loader = _WorkerKilledAfter(trainer.loader, 4)
    trainer.train()  # no Terminated: the run finished
    assert (tmp_path / "run" / "checkpoints" / "step_0000004" / "train_state.pt").is_file()


def test_a_stop_at_once_after_a_resume_into_another_folder_saves_there(tmp_path, capsys):
    """Resumed from another run's checkpoint into a new --out, a stop at the first fetch said "saved
    NEW/checkpoints/step_0000002" and saved nothing (the step was taken for the resumed checkpoint's)."""
    ContrastiveTrainer(tiny_config(tmp_path / "a", steps=2)).train()
    trainer = ContrastiveTrainer(tiny_config(tmp_path / "new", steps=6,
                                             resume=str(tmp_path / "a" / "checkpoints" / "step_0000002")))
    trainer.loader = _WorkerKilledAfter(trainer.loader, 0)
    with pytest.raises(Terminated):
        trainer.train()
    assert (tmp_path / "new" / "checkpoints" / "step_0000002" / "train_state.pt").is_file()
