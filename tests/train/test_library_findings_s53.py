"""Trainers used from a notebook (session 53): built first and trained later, trained again after a Ctrl-C,
trained again once finished, two of them on one folder, a relative --out after a change of folder."""
from __future__ import annotations

import json
import os
import signal

import pytest
import torch
from _tiny import tiny_config

from kizuna.train.contrastive import ContrastiveTrainer


def _losses(out) -> list[float]:
    return [json.loads(line)["loss"] for line in open(os.path.join(out, "metrics.jsonl")) if '"loss"' in line]


def _signal_at(trainer, step_number: int, signum=signal.SIGINT, each=None):
    """``signum`` sent to this process during the trainer's step ``step_number`` (a notebook's interrupt, a
    scheduler's SIGTERM); ``each()`` called at every step first."""
    step, calls = trainer.train_step, []

    def train_step(*a, **k):
        calls.append(1)
        if each is not None:
            each()
        if len(calls) == step_number:
            os.kill(os.getpid(), signum)
        return step(*a, **k)

    trainer.train_step = train_step


def _cfg(out, **kw):
    return tiny_config(out, patch_dropout=0.5, eval_max_samples=0, **kw)  # (patch dropout draws from the RNG)


def test_trainers_built_first_train_as_each_alone_and_leave_the_caller_as_it_was(tmp_path):
    torch.set_num_threads(1)
    ContrastiveTrainer(_cfg(tmp_path / "alone", seed=1, threads=2)).train()
    torch.manual_seed(123)
    torch.rand(1)
    expected = torch.rand(2)
    torch.manual_seed(123)
    torch.rand(1)
    a = ContrastiveTrainer(_cfg(tmp_path / "a", seed=0, threads=1))
    b = ContrastiveTrainer(_cfg(tmp_path / "b", seed=1, threads=2))
    threads = []
    step = b.train_step
    b.train_step = lambda *x, **k: (threads.append(torch.get_num_threads()), step(*x, **k))[1]
    a.train()
    b.train()
    assert _losses(tmp_path / "b") == _losses(tmp_path / "alone")
    assert set(threads) == {2}
    assert torch.get_num_threads() == 1
    assert torch.equal(torch.rand(2), expected)  # the caller's stream, as it left it before building


def test_train_again_after_a_ctrl_c_goes_on_as_a_resume_does(tmp_path):
    straight = ContrastiveTrainer(_cfg(tmp_path / "straight", steps=8))
    straight.train()
    stopped = ContrastiveTrainer(_cfg(tmp_path / "stopped", steps=8))
    _signal_at(stopped, 3)  # Ctrl-C during step 3 (a notebook's interrupt)
    with pytest.raises(KeyboardInterrupt):
        stopped.train()
    assert stopped.step == 3
    torch.rand(5)  # the notebook draws meanwhile
    stopped.train()  # the cell run again
    assert _losses(tmp_path / "stopped") == _losses(tmp_path / "straight")
    for (name, x), (_, y) in zip(stopped.model.state_dict().items(), straight.model.state_dict().items()):
        torch.testing.assert_close(x, y, msg=name, rtol=0, atol=0)


def test_train_again_on_a_finished_run_returns_its_metrics_and_draws_nothing(tmp_path):
    trainer = ContrastiveTrainer(tiny_config(tmp_path / "run", eval_max_samples=4))
    first = trainer.train()
    assert first
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    assert trainer.train() == first
    assert torch.equal(torch.rand(3), expected)


def test_a_trainer_whose_folder_a_later_one_took_over_is_refused(tmp_path):
    """A notebook sweep that never set --out: both trainers trained into one folder, their steps interleaved in one
    log, the first's checkpoints replaced by the second's."""
    first = ContrastiveTrainer(tiny_config(tmp_path / "run", lr=1e-3, eval_max_samples=0))
    second = ContrastiveTrainer(tiny_config(tmp_path / "run", lr=5e-3, eval_max_samples=0))
    with pytest.raises(ValueError, match="another trainer of this process, built after this one, has taken"):
        first.train()
    second.train()
    steps = [json.loads(line)["step"] for line in open(tmp_path / "run" / "metrics.jsonl") if '"loss"' in line]
    assert steps == [1, 2, 3, 4]
    assert json.loads((tmp_path / "run" / "train_config.json").read_text())["lr"] == 5e-3


def test_a_relative_out_after_a_change_of_folder_is_refused(tmp_path, monkeypatch):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    trainer = ContrastiveTrainer(tiny_config("runs/x", eval_max_samples=0))
    monkeypatch.chdir(tmp_path / "b")  # a %cd between cells
    with pytest.raises(ValueError, match=r"--out runs/x is relative, and the current folder changed"):
        trainer.train()
    assert not (tmp_path / "b" / "runs").exists()
    monkeypatch.chdir(tmp_path / "a")
    trainer.train()
    assert (tmp_path / "a" / "runs" / "x" / "checkpoints" / "latest").is_file()


@pytest.mark.parametrize("host", ["handler", "ignored"])
def test_a_hosts_own_sigterm_handler_or_ignored_sigterm_is_left_to_the_host(tmp_path, host):
    """A program that called train() had its SIGTERM handler (a scheduler's requeue hook) skipped, and an ignored
    SIGTERM stopped the run (SystemExit 143): the training loop takes SIGTERM only from its default or the command
    line's handler."""
    got = []
    handler = (lambda signum, frame: got.append(signum)) if host == "handler" else signal.SIG_IGN
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        trainer = ContrastiveTrainer(tiny_config(tmp_path / "run", steps=4, eval_max_samples=0))
        _signal_at(trainer, 2, signal.SIGTERM)
        trainer.train()  # not stopped: the host's signal is the host's
        assert trainer.step == 4 and trainer.stopped_by is None
        assert got == ([signal.SIGTERM] if host == "handler" else [])
        assert signal.getsignal(signal.SIGTERM) is handler
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_trainer_built_but_never_trained_leaves_no_tensorboard_thread(tmp_path):
    import threading

    pytest.importorskip("tensorboard")

    def writers():
        return [t for t in threading.enumerate() if "Writer" in type(t).__name__ or "writer" in t.name.lower()]

    before = len(writers())
    for i in range(3):  # a cell run three times
        ContrastiveTrainer(tiny_config(tmp_path / f"run{i}", eval_max_samples=0))
    assert len(writers()) == before


def test_train_again_after_a_stop_is_refused_where_a_later_trainer_trained_meanwhile(tmp_path):
    out = tmp_path / "run"
    first = ContrastiveTrainer(_cfg(out, steps=8))
    _signal_at(first, 3)
    with pytest.raises(KeyboardInterrupt):
        first.train()
    ContrastiveTrainer(_cfg(out, steps=4, lr=5e-3)).train()  # built (and trained) after the first let go
    torch.set_num_threads(1)
    with pytest.raises(ValueError, match="another trainer of this process, built after this one"):
        first.train()
    assert torch.get_num_threads() == 1  # the refusal gave the caller's state back
    steps = [json.loads(line)["step"] for line in open(out / "metrics.jsonl") if '"loss"' in line]
    assert steps == [1, 2, 3, 4]


def test_train_again_after_a_stop_takes_the_lock_again(tmp_path):
    from kizuna.train import checkpointing

    out = tmp_path / "run"
    trainer = ContrastiveTrainer(_cfg(out, steps=4))
    held = []
    _signal_at(trainer, 2, each=lambda: held.append(out.resolve() in checkpointing._HELD_LOCKS))
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    trainer.train()
    assert held == [True] * len(held) and len(held) == 4  # this process holds OUT in the second train() too


def test_a_trainer_that_failed_to_build_takes_nothing_over(tmp_path):
    out = tmp_path / "run"
    first = ContrastiveTrainer(_cfg(out))
    with pytest.raises(FileNotFoundError):
        ContrastiveTrainer(_cfg(out, resume=str(tmp_path / "nowhere")))
    first.train()


def test_the_takeover_is_refused_where_files_cannot_be_locked(tmp_path, monkeypatch):
    from kizuna.train import trainer as trainer_mod

    monkeypatch.setattr(trainer_mod, "hold_run_lock", lambda out: None)  # Windows, a file system without locks
    first = ContrastiveTrainer(tiny_config(tmp_path / "run", eval_max_samples=0))
    ContrastiveTrainer(tiny_config(tmp_path / "run", eval_max_samples=0))
    with pytest.raises(ValueError, match="another trainer of this process, built after this one"):
        first.train()


def test_a_takeover_under_another_spelling_of_the_folder_is_refused(tmp_path, monkeypatch):
    """macOS: `runs/x` and `Runs/x` are one folder whose real paths' texts differ: the owner was keyed by the text."""
    from pathlib import Path

    from kizuna.train import checkpointing

    (tmp_path / "runs" / "x").mkdir(parents=True)
    (tmp_path / "Runs" / "x").mkdir(parents=True)  # (stands for the other spelling: same_place below says one)
    same = checkpointing.same_place
    monkeypatch.setattr(checkpointing, "same_place", lambda a, b: {Path(a).name, Path(b).name} == {"x"} or same(a, b))
    first = ContrastiveTrainer(tiny_config(tmp_path / "runs" / "x", eval_max_samples=0))
    ContrastiveTrainer(tiny_config(tmp_path / "Runs" / "x", eval_max_samples=0))
    with pytest.raises(ValueError, match="another trainer of this process, built after this one"):
        first.train()
