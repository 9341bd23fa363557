"""Mutation findings (session 50), the trainer's GPU state on a CPU-only machine (torch.cuda simulated): train()
again makes the run's GPU the current one; the caller's GPU is put back afterwards, GPU 0 (CUDA's default) where the
caller had not started CUDA, and never on a torchrun rank (its GPU is its own; NCCL's last barrier runs on it)."""
from __future__ import annotations

import pytest
import torch
from _tiny import tiny_config

from kizuna.train.contrastive import ContrastiveTrainer


@pytest.fixture
def gpu_calls(monkeypatch):
    """torch.cuda as after a run on GPU 1 started CUDA: the current GPU is 1; set_device calls are recorded."""
    calls = []
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: calls.append(device))
    monkeypatch.setattr(torch.cuda, "manual_seed_all", lambda seed: None)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", torch.backends.cudnn.benchmark)
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    return calls


def _bare(before) -> ContrastiveTrainer:
    trainer = object.__new__(ContrastiveTrainer)
    trainer._backend_before = before
    return trainer


def test_the_callers_gpu_is_put_back(gpu_calls):
    _bare((False, 0))._give_back_the_callers_state()
    assert gpu_calls == [0] and torch.backends.cudnn.benchmark is False
    gpu_calls.clear()
    _bare((True, 1))._give_back_the_callers_state()  # the caller's own GPU already: nothing to do
    assert gpu_calls == [] and torch.backends.cudnn.benchmark is True


def test_a_torchrun_rank_keeps_its_gpu(gpu_calls, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    _bare((False, 0))._give_back_the_callers_state()
    assert gpu_calls == []
    assert torch.backends.cudnn.benchmark is False  # (the cuDNN setting is the process's: put back all the same)


def test_a_caller_that_had_not_started_cuda_gets_gpu_0(tmp_path, monkeypatch):
    def started(*args, **kwargs):
        raise AssertionError("CUDA was started")

    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.cuda, "current_device", started)
    trainer = ContrastiveTrainer(tiny_config(tmp_path / "run", steps=1, warmup_steps=0))
    try:
        # the run started CUDA on GPU 1 (simulated): CUDA's default, GPU 0, is current again afterwards
        calls = []
        monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
        monkeypatch.setattr(torch.cuda, "set_device", lambda device: calls.append(device))
        monkeypatch.setattr(torch.cuda, "manual_seed_all", lambda seed: None)
        monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda states: None)
        for name in ("RANK", "WORLD_SIZE"):
            monkeypatch.delenv(name, raising=False)
        trainer._give_back_the_callers_state()
        assert calls == [0]
    finally:
        trainer.release_run_lock()


def test_train_again_makes_the_runs_gpu_current(tmp_path, monkeypatch):
    trainer = ContrastiveTrainer(tiny_config(tmp_path / "run", steps=1, warmup_steps=0))
    try:
        calls = []
        trainer.device = torch.device("cuda", 1)  # as a --device cuda:1 run (only train()'s first lines see it)
        monkeypatch.setattr(torch.cuda, "set_device", lambda device: calls.append(torch.device(device)))
        monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
        monkeypatch.setattr(trainer, "_loop", lambda: {"done": 1.0})
        monkeypatch.setattr(trainer, "_draw_curves", lambda: None)
        assert trainer.train() == {"done": 1.0}
        assert calls[:1] == [torch.device("cuda", 1)]
    finally:
        trainer.release_run_lock()


def test_train_on_a_plain_cuda_device_sets_no_gpu(tmp_path, monkeypatch):
    """--device cuda (no index) runs on the current GPU: torch.cuda.set_device refuses a device without an index."""
    trainer = ContrastiveTrainer(tiny_config(tmp_path / "run", steps=1, warmup_steps=0))
    try:
        def set_device(device):
            if isinstance(device, torch.device) and device.index is None:
                raise ValueError("Expected a torch.device with a specified index or an integer, but got:cuda")
            calls.append(device)

        calls = []
        trainer.device = torch.device("cuda")
        monkeypatch.setattr(torch.cuda, "set_device", set_device)
        monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
        monkeypatch.setattr(trainer, "_loop", lambda: {"done": 1.0})
        monkeypatch.setattr(trainer, "_draw_curves", lambda: None)
        assert trainer.train() == {"done": 1.0}
        assert calls == []
    finally:
        trainer.release_run_lock()
