"""torch.compile of kizuna's models: the towers trace without graph breaks and train like eager mode.

The oneDNN linear and the fused blocks (kizuna.models.layers) are eager-only: under Dynamo it must step aside for F.linear,
which Inductor lowers itself. It once did not (the check graph-broke and then ran eagerly), and
`--compile` training crashed inside Inductor.
"""
import os
import shutil
import warnings

import pytest
import torch

import kizuna
from kizuna.models import layers


def _inductor_available() -> bool:
    """torch.compile with Inductor, which on CPU builds C++ (a compiler on PATH)."""
    try:
        import torch._inductor  # noqa: F401
    except Exception:
        return False
    compilers = (os.environ.get("CXX", ""), "g++", "c++", "clang++")
    return hasattr(torch, "compile") and any(c and shutil.which(c) for c in compilers)


needs_inductor = pytest.mark.skipif(not _inductor_available(),
                                    reason="torch.compile with Inductor needs a C++ compiler on PATH (g++, clang++ or $CXX)")


def test_onednn_check_steps_aside_while_compiling():
    seen = []

    def probe(x):
        seen.append(layers._fast_path_ok(x, x))
        return x + 1

    torch._dynamo.reset()
    out = torch.compile(probe, backend="eager", fullgraph=True)(torch.randn(2, 2))
    assert out.shape == (2, 2) and seen == [False]  # traced once, with the oneDNN / fused path off
    assert layers._fast_path_ok(torch.randn(2, 2), torch.randn(2, 2))  # eager: on


@needs_inductor
@pytest.mark.slow  # 10-22 s of inductor compiling (cold cache); `make test-slow` (default suite < 10 min)
def test_compiled_vit_training_step_matches_eager():
    torch.manual_seed(0)
    model = kizuna.create_vit("mu/4", image_size=16, num_classes=5, width=32, depth=2, heads=2, mlp_dim=64)
    images, labels = torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 3])

    def loss_and_grads(fn):
        model.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(fn(images), labels)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters()]

    ref_loss, ref_grads = loss_and_grads(model)
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True)  # fullgraph: a graph break fails the test
    loss, grads = loss_and_grads(compiled)
    torch.testing.assert_close(loss, ref_loss, atol=1e-5, rtol=1e-5)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, atol=1e-4, rtol=1e-4)


@needs_inductor
@pytest.mark.slow  # 10-22 s of inductor compiling (cold cache); `make test-slow` (default suite < 10 min)
def test_compiled_clip_loss_matches_eager():
    """Both towers (the text tower's causal mask and pruned end-of-text block included) in one graph."""
    torch.manual_seed(1)
    model = kizuna.create_model("ViT-mu-8")
    images = torch.randn(3, 3, 32, 32)
    tokens = torch.randint(1, 400, (3, 16))
    tokens[:, 9] = model.text.cfg.eot_token_id

    def loss_of(fn):
        model.zero_grad(set_to_none=True)
        out = fn(images, tokens)
        logits = out["image_features"] @ out["text_features"].t() * out["logit_scale"]
        loss = torch.nn.functional.cross_entropy(logits, torch.arange(3))
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]

    ref_loss, ref_grads = loss_of(model)
    torch._dynamo.reset()
    loss, grads = loss_of(torch.compile(model, fullgraph=True))
    torch.testing.assert_close(loss, ref_loss, atol=1e-5, rtol=1e-5)
    assert len(grads) == len(ref_grads)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, atol=1e-4, rtol=1e-4)


class _FakeInductorError(RuntimeError):
    pass


_FakeInductorError.__module__ = "torch._inductor.exc"


def test_trainer_compile_falls_back_to_eager_on_a_compiler_error(monkeypatch):
    from kizuna.train.compiling import CompiledOrEager, compiled_or_eager

    model = torch.nn.Linear(3, 2)
    calls = []

    def broken_compile(module):
        def run(*args):
            calls.append("compiled")
            raise _FakeInductorError("LoweringException: mkldnn._linear_pointwise\nmore lines")
        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    assert compiled_or_eager(model, False) is model
    forward = compiled_or_eager(model, True)
    assert isinstance(forward, CompiledOrEager)
    x = torch.randn(4, 3)
    with pytest.warns(RuntimeWarning, match="eager mode"):
        out = forward(x)
    torch.testing.assert_close(out, model(x))
    assert "LoweringException" in forward.fallback_reason and "more lines" not in forward.fallback_reason
    forward(x)  # later calls go straight to eager mode
    assert calls == ["compiled"]


def test_a_torch_compile_that_refuses_at_once_falls_back_to_eager(monkeypatch):
    """torch.compile() itself raises on a Python its Dynamo does not support ("Dynamo is not supported on Python
    3.12+" in torch 2.2-2.3): the run died with a traceback before its first step, though the docs promise eager."""
    from kizuna.train.compiling import compiled_or_eager

    def refuse(module):
        raise RuntimeError("Dynamo is not supported on Python 3.12+")

    monkeypatch.setattr(torch, "compile", refuse)
    model = torch.nn.Linear(3, 2)
    with pytest.warns(RuntimeWarning, match=r"unavailable here \(Dynamo is not supported.*\); training continues in eager"):
        assert compiled_or_eager(model, True) is model


def test_trainer_compile_does_not_swallow_model_errors(monkeypatch):
    from kizuna.train.compiling import compiled_or_eager

    def compile_that_runs_eagerly(module):
        return module

    monkeypatch.setattr(torch, "compile", compile_that_runs_eagerly)
    forward = compiled_or_eager(torch.nn.Linear(3, 2), True)
    with pytest.raises(RuntimeError, match="shapes"):
        forward(torch.randn(4, 5))  # the model's own error, raised once, not hidden as a compiler failure
    assert forward.fallback_reason is None


class _FakeDynamoWrappedError(RuntimeError):
    pass


_FakeDynamoWrappedError.__module__ = "torch._dynamo.exc"  # how Dynamo reports a model's own error while tracing


def test_an_input_error_wrapped_by_dynamo_keeps_compiling_on(monkeypatch):
    from kizuna.train.compiling import compiled_or_eager

    compiled_calls = []

    def compile_that_wraps_errors(module):
        def run(x):
            compiled_calls.append(x.shape)
            try:
                return module(x)
            except RuntimeError as error:
                raise _FakeDynamoWrappedError(f"RuntimeError when making fake tensor call: {error}") from error
        return run

    monkeypatch.setattr(torch, "compile", compile_that_wraps_errors)
    forward = compiled_or_eager(torch.nn.Linear(3, 2), True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "training continues in eager mode"
        with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
            forward(torch.randn(4, 5))
    assert forward.fallback_reason is None
    forward(torch.randn(4, 3))  # a good batch later still runs compiled
    assert len(compiled_calls) == 2


def test_a_backward_graph_the_compiler_cannot_lower_falls_back_in_the_forward(monkeypatch):
    """AOTAutograd lowers the backward lazily, inside loss.backward(), unless told otherwise; a failure there
    would escape the fallback and end the run."""
    import torch._inductor.compile_fx as compile_fx

    from kizuna.train.compiling import compiled_or_eager

    lower = compile_fx._compile_fx_inner

    def fail_on_backward(gm, example_inputs, **kwargs):
        if kwargs.get("is_backward"):
            raise RuntimeError("simulated lowering failure in the backward graph")
        return lower(gm, example_inputs, **kwargs)

    monkeypatch.setattr(compile_fx, "_compile_fx_inner", fail_on_backward)
    torch._dynamo.reset()
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.GELU(), torch.nn.Linear(4, 1))
    forward = compiled_or_eager(model, True)
    x = torch.randn(3, 4)
    with pytest.warns(RuntimeWarning, match="eager mode"):
        out = forward(x)
    out.sum().backward()  # eager graph: no compiler left to fail here
    assert "backward" in forward.fallback_reason
    assert all(p.grad is not None for p in model.parameters())
    torch._dynamo.reset()


@needs_inductor
def test_compiled_patch_dropout_draws_what_eager_draws():
    """GradCache caches each chunk's features eagerly and re-runs the chunk compiled from the same RNG state:
    Inductor's own generator kept other patches, so the gradients (0.15 off) were not the cached loss's."""
    from kizuna.train.compiling import compiled_or_eager

    torch.manual_seed(0)
    vit = kizuna.create_vit("mu/4", image_size=16, width=32, depth=1, heads=2, mlp_dim=64).train()
    vit.patch_dropout = 0.5  # the trainers set it (--patch-dropout)
    images = torch.randn(4, 3, 16, 16)
    torch._dynamo.reset()
    compiled = compiled_or_eager(vit, True)
    with torch.no_grad():
        state = torch.get_rng_state()
        eager = vit(images)
        torch.set_rng_state(state)
        out = compiled(images)
    assert compiled.fallback_reason is None
    torch.testing.assert_close(out, eager, atol=1e-5, rtol=1e-5)


@needs_inductor
@pytest.mark.slow  # 10-22 s of inductor compiling (cold cache); `make test-slow` (default suite < 10 min)
def test_a_compiled_text_tower_raises_on_an_id_outside_its_vocabulary():
    """Compiled (the eager check needs a read-back), Inductor's embedding kernel threw a C++ exception on an
    out-of-vocabulary id and the process aborted: a notebook's kernel died. In a child process, so a
    regression fails this test rather than killing the suite."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent("""
        import torch, kizuna
        model = kizuna.create_model("ViT-mu-8", text={"depth": 1, "vocab_size": 100, "eot_token_id": 99})
        encode = torch.compile(model.text, fullgraph=True)  # the assertion traces: no graph break
        with torch.no_grad():
            torch.testing.assert_close(encode(torch.tensor([[1, 5, 99, 0]])), model.text(torch.tensor([[1, 5, 99, 0]])))
            try:
                encode(torch.tensor([[1, 500, 99, 0]]))
            except RuntimeError as e:
                print("raised:", e)
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "raised:" in done.stdout and "outside the model's vocabulary" in done.stdout
