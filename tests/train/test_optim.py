"""The trainers' optimizer: AdamW, decay on matrices only, fused where torch has a kernel for the device."""
import copy

import pytest
import torch
from torch import nn

from kizuna.train import optim
from kizuna.train.optim import autocast_for, make_optimizer, param_groups, resolve_precision


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(8, 6)
        self.norm = nn.LayerNorm(6)
        self.frozen = nn.Linear(6, 2)
        self.frozen.requires_grad_(False)


def _steps(opt, params, n=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        for p in params:
            p.grad = torch.randn(p.shape, generator=g)
        opt.step()


def test_param_groups_decay_matrices_only_and_skip_frozen():
    net = _Net()
    decay, no_decay = param_groups(net, 0.1)
    assert [p.shape for p in decay["params"]] == [torch.Size([6, 8])] and decay["weight_decay"] == 0.1
    assert {tuple(p.shape) for p in no_decay["params"]} == {(6,)} and len(no_decay["params"]) == 3
    assert no_decay["weight_decay"] == 0.0


def test_make_optimizer_matches_the_reference_adamw_update():
    """Fused or not, the same updates as torch's per-tensor AdamW with the same groups."""
    torch.manual_seed(0)
    net, ref = _Net(), _Net()
    ref.load_state_dict(net.state_dict())
    opt = make_optimizer(net, lr=1e-2, weight_decay=0.1, betas=(0.9, 0.98), eps=1e-6)
    ref_opt = torch.optim.AdamW(param_groups(ref, 0.1), lr=1e-2, betas=(0.9, 0.98), eps=1e-6, foreach=False)
    trainable = lambda m: [p for p in m.parameters() if p.requires_grad]
    _steps(opt, trainable(net))
    _steps(ref_opt, trainable(ref))
    for a, b in zip(net.parameters(), ref.parameters()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_make_optimizer_is_fused_on_the_cpu_where_torch_has_the_kernel():
    try:
        torch.optim.AdamW([nn.Parameter(torch.zeros(2))], fused=True)
    except RuntimeError:
        pytest.skip(f"torch {torch.__version__} has no fused CPU AdamW")
    opt = make_optimizer(_Net(), lr=1e-3, weight_decay=0.1)
    assert all(g["fused"] for g in opt.param_groups)


def test_optimizer_state_round_trips_between_fused_and_unfused():
    """A checkpoint written by one kind resumes in the other with identical next steps."""
    torch.manual_seed(1)
    net = _Net()
    opt = make_optimizer(net, lr=1e-2, weight_decay=0.1)
    params = [p for p in net.parameters() if p.requires_grad]
    _steps(opt, params, n=3)
    state = copy.deepcopy(opt.state_dict())  # as a checkpoint on disk holds it (state_dict() shares tensors)
    twin = _Net()
    twin.load_state_dict(net.state_dict())
    plain = torch.optim.AdamW(param_groups(twin, 0.1), lr=1e-2, betas=(0.9, 0.98), eps=1e-6, foreach=False)
    plain.load_state_dict(state)
    _steps(opt, params, n=2, seed=7)
    _steps(plain, [p for p in twin.parameters() if p.requires_grad], n=2, seed=7)
    for a, b in zip(net.parameters(), twin.parameters()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_auto_precision_is_bf16_where_the_hardware_does_bf16(monkeypatch):
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(optim, "gpu_bf16_native", lambda device: True)  # Ampere or later
    assert resolve_precision("auto", gpu) == "bf16"
    monkeypatch.setattr(optim, "cpu_bf16_native", lambda: True)  # a CPU with AMX
    assert resolve_precision("auto", cpu) == "bf16"
    with autocast_for("auto", cpu):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    monkeypatch.setattr(optim, "cpu_bf16_native", lambda: False)  # AMD, older Intel: bf16 is emulated there
    assert resolve_precision("auto", cpu) == "fp32"
    with autocast_for("auto", cpu):
        assert not torch.is_autocast_enabled("cpu")
    assert resolve_precision("fp32", gpu) == "fp32" and resolve_precision("bf16", cpu) == "bf16"
    with pytest.raises(ValueError, match="precision must be auto, fp32 or bf16"):
        resolve_precision("fp16", cpu)


def test_cpu_bf16_native_follows_amx_and_avx512_bf16(monkeypatch):
    onednn_bf16 = bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert not optim.cpu_bf16_native({"avx2", "avx512f"})  # AVX-512 without BF16 emulates it
    assert optim.cpu_bf16_native({"avx512f", "avx512_bf16"}) == onednn_bf16  # Zen 4, Cooper Lake
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert optim.cpu_bf16_native(set()) == onednn_bf16
    # an environment that caps the kernels below bf16 hardware: auto chose bf16 there and ran 3.6x slower
    for name, value in (("ONEDNN_MAX_CPU_ISA", "AVX512_CORE"), ("DNNL_MAX_CPU_ISA", "avx2"),
                        ("ATEN_CPU_CAPABILITY", "avx2")):
        monkeypatch.setenv(name, value)
        assert not optim.cpu_bf16_native({"amx_bf16"}), name
        monkeypatch.delenv(name)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_AMX")
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx512")
    assert optim.cpu_bf16_native(set()) == onednn_bf16


def test_bf16_on_a_cpu_without_amx_gets_a_note(monkeypatch):
    from kizuna.train.optim import bf16_note

    monkeypatch.setattr(optim, "cpu_bf16_native", lambda: False)
    assert "emulated" in bf16_note("bf16", torch.device("cpu")) and "--precision fp32" in bf16_note("bf16", "cpu")
    assert bf16_note("fp32", "cpu") is None and bf16_note("auto", "cpu") is None  # auto picks fp32 there
    monkeypatch.setattr(optim, "cpu_bf16_native", lambda: True)
    assert bf16_note("bf16", "cpu") is None and bf16_note("fp32", "cpu") is None
    assert "bf16 autocast (auto: this CPU does bf16 in hardware)" in bf16_note("auto", "cpu")  # says why a run is in bf16


def test_tune_for_training_lets_cudnn_pick_its_algorithms_on_cuda_only():
    from kizuna.train.optim import tune_for_training

    before = torch.backends.cudnn.benchmark
    try:
        torch.backends.cudnn.benchmark = False
        tune_for_training(torch.device("cpu"))
        assert torch.backends.cudnn.benchmark is False
        tune_for_training(torch.device("cuda"))  # only sets a flag: runs without a GPU
        assert torch.backends.cudnn.benchmark is True
    finally:
        torch.backends.cudnn.benchmark = before
