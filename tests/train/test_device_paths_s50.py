"""What a GPU machine runs and CI never does, checked on the CPU where it can be (session 50): a ``--device cpu``
run on a machine with a GPU pinned its batches and read CUDA's random state (both start CUDA on GPU 0),
``train()`` left cuDNN autotuning on for the caller, "auto" chose bf16 on GPUs that only emulate it, and on-device
augmentation allowed 16 GiB of decoded images whatever the card held."""
from __future__ import annotations

import pytest
import torch
from _tiny import tiny_config

import kizuna.train.trainer as trainer_module
from kizuna.train.checkpointing import rng_state
from kizuna.train.optim import bf16_note, resolve_precision, tune_for_training

CUDA = torch.device("cuda")


def _a_gpu_is_present_but_unused(monkeypatch):
    """torch.cuda as on a GPU machine where nothing has touched CUDA yet; anything that would start it fails."""
    def started(*args, **kwargs):
        raise AssertionError("CUDA was started by a --device cpu run")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", started)
    monkeypatch.setattr(torch.cuda, "current_device", started)


def test_a_cpu_run_reads_no_cuda_random_state(monkeypatch):
    _a_gpu_is_present_but_unused(monkeypatch)
    assert "cuda" not in rng_state()


def test_a_cpu_contrastive_run_pins_no_batches_where_a_gpu_is_present(tmp_path, monkeypatch):
    from kizuna.train.contrastive import ContrastiveTrainer

    _a_gpu_is_present_but_unused(monkeypatch)
    trainer = ContrastiveTrainer(tiny_config(tmp_path / "run", device="cpu", steps=1, warmup_steps=0))
    assert trainer.device.type == "cpu"
    assert trainer.loader.dataloader.pin_memory is False
    trainer.train()  # and a checkpoint is written without reading CUDA's random state
    assert (tmp_path / "run" / "checkpoints" / "latest").exists()


def test_a_cpu_vit_run_pins_no_batches_where_a_gpu_is_present(tmp_path, monkeypatch):
    from PIL import Image

    from kizuna.train.supervised import SupervisedTrainer, make_supervised_config

    for split in ("train", "val"):
        for k, cls in enumerate(["a", "b"]):
            (tmp_path / "data" / split / cls).mkdir(parents=True)
            for i in range(4):
                Image.new("RGB", (20, 20), (120 * k, 30 * i, 50)).save(tmp_path / "data" / split / cls / f"{i}.png")
    _a_gpu_is_present_but_unused(monkeypatch)
    cfg = make_supervised_config(model="mu/8", image_size=32, data=str(tmp_path / "data" / "train"),
                                 val_data=str(tmp_path / "data" / "val"), steps=1, batch_size=4, warmup_steps=0,
                                 workers=0, out=str(tmp_path / "run"), progress=False, threads=1, device="cpu")
    trainer = SupervisedTrainer(cfg)
    assert trainer.loader.dataloader.pin_memory is False
    assert trainer.val_loader.dataloader.pin_memory is False


def test_train_gives_back_the_callers_cudnn_setting(tmp_path, monkeypatch):
    """A GPU run turns cuDNN autotuning on (tune_for_training); a notebook that had it off has it off again."""
    from kizuna.train.contrastive import ContrastiveTrainer

    seen = []

    def as_on_a_gpu(device):
        tune_for_training(CUDA)  # what it does for a GPU run: it only sets the flag
        seen.append(torch.backends.cudnn.benchmark)

    monkeypatch.setattr(trainer_module, "tune_for_training", as_on_a_gpu)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    ContrastiveTrainer(tiny_config(tmp_path / "run", steps=1, warmup_steps=0)).train()
    assert seen == [True, True]  # on for the run (set up, then train())
    assert torch.backends.cudnn.benchmark is False  # the caller's again


@pytest.mark.parametrize("capability,auto", [((7, 5), "fp32"), ((7, 0), "fp32"), ((8, 0), "bf16"), ((9, 0), "bf16")])
def test_auto_precision_is_bf16_only_on_gpus_that_have_it(monkeypatch, capability, auto):
    """A T4 (7.5) or V100 (7.0) emulates bf16, slower than fp32; Ampere (8.0) and Hopper (9.0) have it."""
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert resolve_precision("auto", CUDA) == auto
    assert resolve_precision("bf16", CUDA) == "bf16"  # asked for: given
    assert resolve_precision("fp32", CUDA) == "fp32"
    auto_note, bf16_asked = bf16_note("auto", CUDA), bf16_note("bf16", CUDA)
    if auto == "fp32":
        version = f"{capability[0]}.{capability[1]}"
        assert auto_note.startswith("precision: fp32") and version in auto_note
        assert "emulated" in bf16_asked and "--precision fp32" in bf16_asked and version in bf16_asked
    else:
        assert auto_note is None and bf16_asked is None
    assert bf16_note("fp32", CUDA) is None


def test_on_device_augmentation_is_refused_beyond_half_the_gpus_free_memory(monkeypatch):
    """Checked before the decode: a set that passed the 16 GiB bound failed at the copy to an 8 GiB card, after
    every image had been decoded."""
    from kizuna.data.batch_augment import decode_images

    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (2 * 2**30, 8 * 2**30))
    images = [None] * 400  # 400 x 3 x 1024 x 1024 bytes = 1.2 GiB > half of 2 GiB free
    with pytest.raises(ValueError, match=r"more than half of the 2.0 GiB free on cuda .*--augment-on loader"):
        decode_images(images, 1024, device="cuda")
    with pytest.raises(ValueError, match="16 GiB allowed"):  # the bound for any device still holds first
        decode_images([None] * 6000, 1024, device="cuda")


def test_gpu_out_of_memory_advice_names_the_loader_augmentation():
    from kizuna.apps.cli import _out_of_memory

    oom = RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
    for command in ("kizuna vit train", "kizuna vit finetune"):
        advice = _out_of_memory(oom, command)
        assert "--augment-on loader" in advice and "--grad-checkpointing" in advice
    for command in ("kizuna train", "kizuna eval zeroshot", "kizuna embed", ""):  # none of them has it
        assert "--augment-on" not in _out_of_memory(oom, command)
    assert "--augment-on" not in _out_of_memory(MemoryError("Unable to allocate 3.4 GiB"), "kizuna vit train")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (CI has none): features on a GPU")
def test_classification_and_probes_take_gpu_features():
    from kizuna.eval.classification import classify_scores
    from kizuna.eval.linear_probe import fit_logistic_regression

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 8, generator=g), torch.arange(40) % 4
    scores = torch.randn(40, 4, generator=g)
    on_cpu = classify_scores(scores, y, list("abcd"))
    on_gpu = classify_scores(scores.cuda(), y.cuda(), list("abcd"), valid=torch.ones(40, dtype=torch.bool).cuda())
    assert on_gpu.metrics["acc1"] == on_cpu.metrics["acc1"]
    probe = fit_logistic_regression(x.cuda(), y, 4, l2=1e-3)
    assert torch.equal(probe.predict(x.cuda()).cpu(), probe.predict(x))
    assert probe.accuracy(x.cuda(), y) == probe.accuracy(x, y)
