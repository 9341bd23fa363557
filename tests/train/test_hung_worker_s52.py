"""A data loader worker that hangs (session 52): the wait for a batch is polled, so that a Ctrl-C stops the run and
saves its last finished step (it waited for ever on the hung worker's batch), and a wait past
--loader-timeout-minutes ends the run the same way with one line (torch's loader waits for ever)."""
import os
from pathlib import Path
import signal
import time

import pytest

from _tiny import tiny_config
from kizuna.data import loader as loader_mod
from kizuna.data.loader import LoaderStalled
from kizuna.train import trainer as trainer_mod
from kizuna.train.contrastive import ContrastiveTrainer


pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGCHLD"), reason="forked loader workers (POSIX)")

BATCH = 16
HANG_AFTER_BATCHES = 3


@pytest.fixture
def hanging_worker(monkeypatch):
    """The training set's worker hangs in its fourth batch (a decoder stuck on one file); polls are short."""
    monkeypatch.setattr(loader_mod, "POLL_SECONDS", 0.2)
    calls = {"n": 0}  # (per process: the forked worker counts its own)

    def install(trainer):
        dataset_type = type(trainer.loader.dataset)
        original = dataset_type.__getitem__

        def getitem(self, index):
            if os.getpid() != parent:
                calls["n"] += 1
                if calls["n"] > BATCH * HANG_AFTER_BATCHES:
                    time.sleep(90)  # (long past the test: a regression fails it, not hangs the suite)
            return original(self, index)

        parent = os.getpid()
        monkeypatch.setattr(dataset_type, "__getitem__", getitem)

    return install


def _trainer(out, **overrides):
    return ContrastiveTrainer(tiny_config(out, steps=8, workers=1, warmup_steps=1, eval_max_samples=0, **overrides))


def test_a_hung_worker_ends_the_run_after_the_loader_timeout_with_the_last_step_saved(tmp_path, hanging_worker):
    trainer = _trainer(tmp_path, loader_timeout_minutes=0.02)  # 1.2 s
    hanging_worker(trainer)
    started = time.monotonic()
    with pytest.raises(LoaderStalled, match="no batch from the data loader's workers in .* --loader-timeout-minutes"):
        trainer.train()
    assert time.monotonic() - started < 60
    assert trainer.step == HANG_AFTER_BATCHES
    assert (tmp_path / "checkpoints" / f"step_{HANG_AFTER_BATCHES:07d}").is_dir()  # nothing with --save-every 0
    trainer.loader.close()


def test_ctrl_c_while_a_worker_hangs_stops_and_saves_and_the_resume_is_exact(tmp_path, hanging_worker, capsys):
    trainer = _trainer(tmp_path / "stopped", loader_timeout_minutes=0)  # 0: would wait for ever
    hanging_worker(trainer)
    waits = []
    watch = trainer_mod._watch_the_wait

    def watching(stop, limit):
        on_wait = watch(stop, limit)

        def noted(waited):
            waits.append(waited)
            if len(waits) == 3:  # the hang is on: Ctrl-C, as the user would press it
                os.kill(os.getpid(), signal.SIGINT)
            on_wait(waited)
        return noted

    trainer_mod_watch = pytest.MonkeyPatch()
    trainer_mod_watch.setattr(trainer_mod, "_watch_the_wait", watching)
    try:
        with pytest.raises(KeyboardInterrupt):  # (the command line's exit 130)
            trainer.train()
    finally:
        trainer_mod_watch.undo()
        trainer.loader.close()
    assert trainer.step == HANG_AFTER_BATCHES
    err = capsys.readouterr().err
    assert "Ctrl-C: stopping after this step" in err and "SIGINT: stopped while waiting" in err
    saved = tmp_path / "stopped" / "checkpoints" / f"step_{HANG_AFTER_BATCHES:07d}"
    assert saved.is_dir()
    # the batch waited for was never handed out: the resumed run takes it, as an uninterrupted run does
    resumed = ContrastiveTrainer(tiny_config(tmp_path / "stopped", steps=8, warmup_steps=1, eval_max_samples=0,
                                             resume="latest"))
    assert resumed.step == HANG_AFTER_BATCHES
    resumed.train()
    straight = ContrastiveTrainer(tiny_config(tmp_path / "straight", steps=8, warmup_steps=1, eval_max_samples=0))
    straight.train()
    import torch

    for (name, a), (_, b) in zip(resumed.model.state_dict().items(), straight.model.state_dict().items()):
        torch.testing.assert_close(a, b, msg=name)


def test_a_long_wait_is_said_once_and_a_stop_ends_it():
    stop = trainer_mod.StopOnInterrupt(enabled=False)
    on_wait = trainer_mod._watch_the_wait(stop, stall_limit_s=0)
    with pytest.warns(RuntimeWarning, match="no batch from the data loader's workers for 60 s.*waiting for ever"):
        on_wait(30.0)
        on_wait(60.0)
    with _no_warning():
        on_wait(62.0)  # said once
        on_wait(1e6)  # 0: no limit
    stop.requested = "SIGTERM"
    with pytest.raises(trainer_mod._StoppedWhileLoading, match="stopped while waiting 4 s"):
        on_wait(4.0)
    limited = trainer_mod._watch_the_wait(trainer_mod.StopOnInterrupt(enabled=False), stall_limit_s=600)
    with pytest.warns(RuntimeWarning, match="waiting up to 10 min"):
        limited(599.0)
    with pytest.raises(LoaderStalled, match="in 10 min"):
        limited(600.0)


def _no_warning():
    import warnings

    class _Strict:
        def __enter__(self):
            self._ctx = warnings.catch_warnings()
            self._ctx.__enter__()
            warnings.simplefilter("error")

        def __exit__(self, *exc):
            return self._ctx.__exit__(*exc)
    return _Strict()


def test_a_loader_without_a_watcher_waits_through_its_polls(monkeypatch):
    """The eval and embed loaders poll too, with no one watching: a slow batch is waited for, as before."""
    import torch

    monkeypatch.setattr(loader_mod, "POLL_SECONDS", 0.1)

    class Slow(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            time.sleep(0.5)
            return {"image": torch.zeros(1), "caption": "x"}

    from kizuna.data.sampler import EpochSampler

    loader = loader_mod.make_loader(Slow(), EpochSampler(4, 2, shuffle=False), num_workers=1,
                                    collate=lambda s: len(s))
    try:
        assert loader.dataloader.timeout == 0.1 and loader.poll_seconds == 0.1
        assert list(loader) == [2, 2]
    finally:
        loader.close()


def test_a_callers_own_timeout_is_a_limit(monkeypatch):
    import torch

    class Slow(torch.utils.data.Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            time.sleep(1)
            return i

    from kizuna.data.sampler import EpochSampler

    loader = loader_mod.make_loader(Slow(), EpochSampler(2, 2, shuffle=False), num_workers=1, timeout=0.3,
                                    collate=lambda s: len(s))
    try:
        with pytest.raises(RuntimeError, match="DataLoader timed out"):
            list(loader)
    finally:
        loader.close()


def test_the_cli_says_a_stalled_loader_in_one_line(monkeypatch, capsys):
    from kizuna.apps import cli

    def stalled(args):
        raise LoaderStalled("no batch from the data loader's workers in 10 min: ...")

    monkeypatch.setattr(cli, "build_parser", _parser_running(stalled))
    assert cli.main(["x"]) == 1
    err = capsys.readouterr().err
    assert err.strip().endswith("error: no batch from the data loader's workers in 10 min: ...")
    assert "Traceback" not in err


def _parser_running(run):
    import argparse

    def build():
        parser = argparse.ArgumentParser(prog="kizuna")
        sub = parser.add_subparsers()
        p = sub.add_parser("x")
        p.set_defaults(_run=run)
        return parser
    return build


def test_the_loader_timeout_is_checked():
    with pytest.raises(ValueError, match="--loader-timeout-minutes must be >= 0"):
        tiny_config("/tmp/never", loader_timeout_minutes=-1)


def _raised_in(filename: str, error: OSError):
    """A function that raises ``error`` from code compiled as ``filename`` (where torch raises it)."""
    namespace = {"error": error}
    exec(compile("def handover():\n    raise error\n", filename, "exec"), namespace)
    return namespace["handover"]


@pytest.mark.parametrize("error", [ConnectionResetError(104, "Connection reset by peer"),
                                   ConnectionRefusedError(111, "Connection refused"),
                                   FileNotFoundError(2, "No such file or directory")])
def test_a_worker_lost_while_handing_over_a_batch_is_one_line(monkeypatch, capsys, error):
    """A worker killed while the main process takes over its batch's shared memory: the socket's error, which the
    commands ended with as a traceback (and a FileNotFoundError there was said as a path the user gave)."""
    from kizuna.apps import cli

    handover = _raised_in("/venv/lib/torch/multiprocessing/reductions.py", error)
    monkeypatch.setattr(cli, "build_parser", _parser_running(lambda args: handover()))
    assert cli.main(["x"]) == 1
    err = capsys.readouterr().err
    assert f"error: a data loader worker ended while handing over a batch ({type(error).__name__}" in err
    assert "fewer --workers" in err and "Traceback" not in err


def test_an_oserror_elsewhere_keeps_its_own_handling(monkeypatch, capsys):
    from kizuna.apps import cli

    missing = _raised_in("/work/mine.py", FileNotFoundError(2, "No such file or directory", "photos/"))
    monkeypatch.setattr(cli, "build_parser", _parser_running(lambda args: missing()))
    assert cli.main(["x"]) == 2  # a path the user gave
    assert "data loader worker" not in capsys.readouterr().err
    reset = _raised_in("/work/mine.py", ConnectionResetError(104, "Connection reset by peer"))
    monkeypatch.setattr(cli, "build_parser", _parser_running(lambda args: reset()))
    with pytest.raises(ConnectionResetError):
        cli.main(["x"])


def test_a_hung_validation_worker_ends_the_run_saved_after_the_loader_timeout(tmp_path, monkeypatch):
    """`vit train --val-data`: the validation loader polls too, and was not watched (a hung worker there waited for
    ever, past the timeout and the first Ctrl-C; the second ended the run with nothing saved)."""
    sys_path_added = str(Path(__file__).parent)
    import sys

    if sys_path_added not in sys.path:
        sys.path.insert(0, sys_path_added)
    from test_supervised import _cfg, _shard

    from kizuna.data.sources import PairDataset
    from kizuna.train.supervised import SupervisedTrainer

    root = tmp_path / "data"
    _shard(root / "train" / "000000.tar", 0, 32)
    _shard(root / "test" / "000000.tar", 1000, 8)
    (root / "classnames.txt").write_text("red\ngreen\nblue\ngrey\n")
    monkeypatch.setattr(loader_mod, "POLL_SECONDS", 0.2)
    parent, original = os.getpid(), PairDataset._read

    def read(self, index):
        if os.getpid() != parent and not self.seed_transform:  # a validation worker: stuck on a file
            time.sleep(90)  # (long past the test: a regression fails it, not hangs the suite)
        return original(self, index)

    monkeypatch.setattr(PairDataset, "_read", read)
    trainer = SupervisedTrainer(_cfg(root, tmp_path / "run", workers=1, steps=4, eval_every=2,
                                     loader_timeout_minutes=0.02))
    try:
        with pytest.raises(LoaderStalled):
            trainer.train()
    finally:
        trainer.loader.close()
        trainer.val_loader.close()
    assert (tmp_path / "run" / "checkpoints" / "step_0000002").is_dir()  # the step before the evaluation, saved
