"""Mutation findings (session 50), evaluation: features and scores on a GPU reach classify_scores and a CPU-fitted
LinearProbe. CI has no GPU, so a tensor that behaves as one on another device stands in for it: its .cpu() or
.to(<device>) gives a plain CPU tensor, and numpy() or a matmul with it fails as torch's device check does."""
from __future__ import annotations

import torch

from kizuna.eval.classification import classify_scores
from kizuna.eval.linear_probe import fit_logistic_regression


class _Elsewhere(torch.Tensor):
    """A CPU tensor standing in for a GPU one (only the operations that cross devices are told apart)."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        moves = func is torch.Tensor.cpu or (func is torch.Tensor.to and (
            "device" in kwargs or any(isinstance(a, (torch.device, str)) for a in args[1:])))
        if moves:
            with torch._C.DisableTorchFunctionSubclass():
                return func(*args, **kwargs).clone()  # a plain tensor "copied to the CPU"
        if func in (torch.Tensor.numpy, torch.Tensor.__matmul__, torch.matmul, torch.Tensor.matmul):
            raise RuntimeError("Expected all tensors to be on the same device (a GPU tensor used with a CPU one)")
        return super().__torch_function__(func, types, args, kwargs)


def _elsewhere(t: torch.Tensor) -> torch.Tensor:
    return t.as_subclass(_Elsewhere)


def test_the_stand_in_fails_where_a_gpu_tensor_would():
    x = _elsewhere(torch.ones(2, 2))
    for use in (lambda: x.numpy(), lambda: x @ torch.ones(2, 2), lambda: (x[0:1] + 1).numpy()):
        try:
            use()
        except RuntimeError:
            continue
        raise AssertionError("the stand-in did not fail")
    assert type(x.cpu()) is torch.Tensor and type(x.to("cpu", torch.float64)) is torch.Tensor


def test_classify_scores_takes_scores_on_another_device():
    g = torch.Generator().manual_seed(0)
    scores, y = torch.randn(40, 4, generator=g), torch.arange(40) % 4
    on_cpu = classify_scores(scores, y, list("abcd"), k=3)
    elsewhere = classify_scores(_elsewhere(scores), y, list("abcd"), k=3)
    assert elsewhere.metrics == on_cpu.metrics


def test_classify_scores_takes_a_valid_mask_on_another_device():
    g = torch.Generator().manual_seed(1)
    scores, y = torch.randn(40, 4, generator=g), torch.arange(40) % 4
    valid = torch.arange(40) % 5 != 0
    on_cpu = classify_scores(scores, y, list("abcd"), valid=valid, k=3)
    elsewhere = classify_scores(scores, y, list("abcd"), valid=_elsewhere(valid), k=3)
    assert elsewhere.metrics == on_cpu.metrics


def test_a_cpu_fitted_probe_takes_features_on_another_device():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 8, generator=g), torch.arange(40) % 4
    probe = fit_logistic_regression(x, y, 4, l2=1e-3)
    assert torch.equal(probe.predict(_elsewhere(x)), probe.predict(x))
    assert probe.accuracy(_elsewhere(x), y) == probe.accuracy(x, y)
