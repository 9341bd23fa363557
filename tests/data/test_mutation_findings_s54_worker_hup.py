"""Session 54 mutation findings: a loader worker catches the terminal's SIGHUP (data/loader.py _WorkerInit): the main
process stops, saving, and ends its workers; killed at once by it, a worker lost the batch in hand."""
import signal

import torch

from kizuna.data.loader import make_loader
from kizuna.data.sampler import EpochSampler


class _SaysItsHangUp(torch.utils.data.Dataset):
    def __len__(self):
        return 2

    def __getitem__(self, i):
        handler = signal.getsignal(signal.SIGHUP)
        return {"caught": torch.tensor([callable(handler) and handler not in (signal.SIG_DFL, signal.SIG_IGN)])}


def _collate(items):
    return {"caught": torch.cat([x["caught"] for x in items])}


def test_a_loader_worker_catches_sighup():
    """Kills: the worker's SIGHUP handler dropped (the default: a worker died of the hang-up mid-batch, before the
    main process could stop after its step and save)."""
    loader = make_loader(_SaysItsHangUp(), EpochSampler(2, 2, seed=0, drop_last=False), 1, collate=_collate,
                         persistent_workers=False)
    (batch,) = list(loader)
    assert batch["caught"].all()
