"""A data loader worker that dies (session 51): the run saves its last finished step, torch's SIGCHLD handler is
set aside while the batches are read (it raised inside a forward or an optimizer step), and the command says what
happened in one line."""
import signal

import pytest

from _tiny import tiny_config
from kizuna.apps.cli import _worker_died
from kizuna.train import trainer as trainer_mod
from kizuna.train.contrastive import ContrastiveTrainer


KILLED = "DataLoader worker (pid 4242) is killed by signal: Killed. "


class _DyingLoader:
    """The trainer's loader, whose worker dies after ``after`` batches (as torch reports it)."""

    def __init__(self, loader, after):
        self._loader, self._after = loader, after

    def __getattr__(self, name):
        return getattr(self._loader, name)

    def __iter__(self):  # (before the next batch is asked for: a dead worker's batch is never handed out)
        batches, handed = iter(self._loader), 0
        while True:
            if handed == self._after:
                raise RuntimeError(KILLED)
            try:
                batch = next(batches)
            except StopIteration:
                return
            handed += 1
            yield batch


def _train_until_the_worker_dies(out, after: int, **overrides) -> None:
    trainer = ContrastiveTrainer(tiny_config(out, warmup_steps=1, eval_max_samples=0, **overrides))
    trainer.loader = _DyingLoader(trainer.loader, after=after)
    with pytest.raises(RuntimeError, match="DataLoader worker \\(pid 4242\\)"):
        trainer.train()


def test_a_dying_worker_saves_the_last_finished_step_and_the_run_resumes(tmp_path):
    _train_until_the_worker_dies(tmp_path, after=3, steps=8)
    assert (tmp_path / "checkpoints" / "step_0000003").is_dir()  # nothing was saved with --save-every 0
    resumed = ContrastiveTrainer(tiny_config(tmp_path, steps=8, warmup_steps=1, eval_max_samples=0, resume="latest"))
    assert resumed.step == 3
    resumed.train()
    assert resumed.step == 8


def test_a_worker_dying_before_the_first_step_saves_nothing(tmp_path):
    _train_until_the_worker_dies(tmp_path, after=0, steps=4)
    assert not (tmp_path / "checkpoints").exists() or not any((tmp_path / "checkpoints").glob("step_*"))


@pytest.mark.skipif(not hasattr(signal, "SIGCHLD"), reason="POSIX signals")
def test_sigchld_is_at_its_default_while_batches_are_read_and_put_back_after():
    seen = []

    def handler(signum, frame):  # torch's, in a real run
        pass

    before = signal.signal(signal.SIGCHLD, handler)
    try:
        stop = trainer_mod.StopOnInterrupt(enabled=False)
        for _ in trainer_mod._until_stopped([1, 2], stop):
            seen.append(signal.getsignal(signal.SIGCHLD))
        assert seen == [signal.SIG_DFL, signal.SIG_DFL]
        assert signal.getsignal(signal.SIGCHLD) is handler
    finally:
        signal.signal(signal.SIGCHLD, before)


@pytest.mark.parametrize("text, said", [
    ("DataLoader worker (pid 9889) is killed by signal: Segmentation fault. ", "(pid 9889) killed by signal "
                                                                               "Segmentation fault"),
    ("DataLoader worker (pid(s) 12, 13) exited unexpectedly", "(pid 12, 13) exited unexpectedly"),
])
def test_a_dead_worker_is_one_line_naming_what_to_try(text, said):
    message = _worker_died(RuntimeError(text))
    assert said in message and "--workers 0" in message and "out-of-memory killer" in message
    assert _worker_died(RuntimeError("something else")) is None


def _losses(out):
    import json

    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if r.get("kind") == "train"}


def test_a_worker_dying_at_an_epochs_first_batch_resumes_exactly(tmp_path):
    """The checkpoint read the sampler's own position there, which had moved on: the resume skipped a batch."""
    settings = dict(steps=8, warmup_steps=1, eval_max_samples=0, synthetic_length=64)  # 4 steps an epoch
    trainer = ContrastiveTrainer(tiny_config(tmp_path / "run", **settings))
    collate, died = trainer.loader.dataloader.collate_fn, []

    def dies_at_epoch_1(samples):
        if trainer.loader.sampler.epoch == 1 and not died:
            died.append(True)
            raise RuntimeError(KILLED)
        return collate(samples)

    trainer.loader.dataloader.collate_fn = dies_at_epoch_1
    with pytest.raises(RuntimeError, match="DataLoader worker"):
        trainer.train()
    assert died and sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("step_*")) == ["step_0000004"]
    ContrastiveTrainer(tiny_config(tmp_path / "run", resume="latest", **settings)).train()
    ContrastiveTrainer(tiny_config(tmp_path / "whole", **settings)).train()
    assert _losses(tmp_path / "run") == _losses(tmp_path / "whole")


def test_a_worker_dying_after_the_last_step_leaves_the_run_finished(tmp_path):
    trainer = ContrastiveTrainer(tiny_config(tmp_path, steps=4, warmup_steps=1, eval_max_samples=0))
    trainer.loader = _DyingLoader(trainer.loader, after=4)  # the batch asked for past the last step
    trainer.train()
    assert trainer.step == 4 and (tmp_path / "checkpoints" / "step_0000004").is_dir()


@pytest.mark.skipif(not hasattr(signal, "SIGCHLD"), reason="POSIX signals")
def test_torchs_sigchld_handler_is_set_aside_in_the_first_epoch_too(tmp_path):
    """torch sets its handler when its iterator starts, at the first batch: set aside from the second epoch only,
    a worker's death in the first (often the whole run) raised inside a forward, with nothing saved."""
    trainer = ContrastiveTrainer(tiny_config(tmp_path, steps=3, warmup_steps=1, eval_max_samples=0, workers=1))
    fit, seen = trainer.fit_batch, []

    def recording(batch):
        seen.append(signal.getsignal(signal.SIGCHLD))
        return fit(batch)

    trainer.fit_batch = recording
    trainer.train()
    assert seen == [signal.SIG_DFL] * 3
