"""A decoding worker that hangs in an evaluation or in `kizuna embed` (session 53): their loaders waited for ever
(torch's own wait has no limit), where the training loaders had ended the run after --loader-timeout-minutes since
session 52. Their waits are polled now, and --loader-timeout-minutes ends the command with one line."""
import os
import signal
import time

import pytest
from _evalhelpers import classification_wds

import kizuna
from kizuna.apps.cli import main
from kizuna.data import loader as loader_mod
from kizuna.data.loader import LoaderStalled, loader_waits_watched, wait_watch

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGCHLD"), reason="forked loader workers (POSIX)")


@pytest.fixture
def hung_eval_worker(monkeypatch):
    """Every evaluation worker hangs on its first file (a decoder stuck on it); polls are short."""
    from kizuna.data.sources import PairDataset

    monkeypatch.setattr(loader_mod, "POLL_SECONDS", 0.2)
    parent, original = os.getpid(), PairDataset._read

    def read(self, index):
        if os.getpid() != parent:
            time.sleep(90)  # (long past the test: a regression fails it, not hangs the suite)
        return original(self, index)

    monkeypatch.setattr(PairDataset, "_read", read)


def test_encode_images_ends_a_hung_workers_wait_at_the_watchers_limit(tmp_path, hung_eval_worker):
    from kizuna.eval.datasets import load_dataset
    from kizuna.eval.encode import encode_images

    ds = load_dataset(classification_wds(tmp_path / "cls", n=4))
    started = time.monotonic()
    with loader_waits_watched(wait_watch(0.6)), pytest.raises(LoaderStalled, match="--loader-timeout-minutes"):
        encode_images(kizuna.create_model("ViT-mu-8"), ds, batch_size=2, num_workers=1, progress=False)
    assert time.monotonic() - started < 30


def test_the_innermost_watcher_is_asked_and_a_finished_block_forgets_it(monkeypatch):
    """Without a watcher of the caller's, the default one limits the wait (LOADER_TIMEOUT_MINUTES)."""
    import torch

    class Slow(torch.utils.data.Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            time.sleep(0.7 if os.getpid() != parent else 0)
            return i

    parent = os.getpid()
    monkeypatch.setattr(loader_mod, "POLL_SECONDS", 0.2)
    waits = []
    dl = torch.utils.data.DataLoader(Slow(), batch_size=1, num_workers=1, timeout=loader_mod.loader_timeout(1))
    assert dl.timeout == 0.2 and loader_mod.loader_timeout(0) == 0
    with loader_waits_watched(waits.append):
        assert [int(b) for b in loader_mod.watched_batches(dl)] == [0, 1]  # slow, not hung: every batch comes
    assert waits and all(w > 0 for w in waits)
    assert loader_mod._WAIT_WATCHERS == []
    monkeypatch.setattr(loader_mod, "LOADER_TIMEOUT_MINUTES", 0.2 / 60)  # the default: one poll
    with pytest.raises(LoaderStalled):
        list(loader_mod.watched_batches(dl))


def test_kizuna_eval_says_a_hung_worker_in_one_line_after_its_loader_timeout(tmp_path, hung_eval_worker, capsys):
    data = classification_wds(tmp_path / "cls", n=4)
    started = time.monotonic()
    code = main(["eval", "zeroshot", "--model", "ViT-mu-8", "--dataset", str(data), "--num-workers", "1",
                 "--loader-timeout-minutes", "0.01", "--no-progress"])
    assert code == 1
    assert time.monotonic() - started < 60
    err = capsys.readouterr().err
    assert "error: no batch from the data loader's workers in 0.01 min" in err and "Traceback" not in err


def test_kizuna_embed_says_a_hung_worker_in_one_line(tmp_path, monkeypatch, capsys):
    from kizuna.apps import embed

    monkeypatch.setattr(loader_mod, "POLL_SECONDS", 0.2)
    images = tmp_path / "images"
    images.mkdir()
    from PIL import Image

    for i in range(3):
        Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(images / f"{i}.png")
    parent, original = os.getpid(), embed._ImageFiles.__getitem__

    def getitem(self, i):
        if os.getpid() != parent:
            time.sleep(90)
        return original(self, i)

    monkeypatch.setattr(embed._ImageFiles, "__getitem__", getitem)
    out = tmp_path / "e.npy"
    code = main(["embed", "--model", "ViT-mu-8", "--images", str(images), "--out", str(out), "--workers", "1",
                 "--loader-timeout-minutes", "0.01", "--no-progress"])
    assert code == 1
    assert "no batch from the data loader's workers" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("bad", ["-1", "nan", "inf", "soon"])
def test_the_flag_takes_minutes_at_least_zero(bad, capsys):
    with pytest.raises(SystemExit):
        main(["embed", "--model", "ViT-mu-8", "--images", "x", "--out", "e.npy", "--loader-timeout-minutes", bad])
    assert "a number of minutes >= 0" in capsys.readouterr().err


def test_zero_waits_for_ever():
    on_wait = wait_watch(0)
    with pytest.warns(RuntimeWarning, match="waiting for ever"):
        on_wait(1e9)  # no limit: said, not raised


def test_a_training_loops_evaluations_wait_by_the_runs_own_setting(tmp_path):
    """A config's loader_timeout_minutes (Python, a file) did not reach the evaluators' loaders: only the command
    line's flag did; and a stop there was not looked at."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "train"))
    from _tiny import tiny_config

    from kizuna.train import trainer as trainer_mod
    from kizuna.train.contrastive import ContrastiveTrainer

    trainer = ContrastiveTrainer(tiny_config(tmp_path / "run", loader_timeout_minutes=0.01, eval_max_samples=0))
    stop = trainer_mod.StopOnInterrupt(enabled=False)
    with trainer._watching_evaluation(stop):
        on_wait = loader_mod._WAIT_WATCHERS[-1]
        with pytest.raises(LoaderStalled, match="in 0.01 min"):
            on_wait(0.6)
        stop.requested = "SIGINT"
        with pytest.raises(trainer_mod._StoppedWhileLoading):
            on_wait(0.2)
    assert loader_mod._WAIT_WATCHERS == []
