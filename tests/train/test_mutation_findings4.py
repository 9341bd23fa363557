"""The DDP helpers (rank agreement, batch evening, torchrun detection), the malloc and torch.compile helpers, the
demo's overrides and table, the synthetic world and the SigLIP tokenizer, checked against values worked out by
hand (a fourth mutation hunt found each of these unchecked). The collectives are played by a stand-in for
``torch.distributed`` in this one process: what the other ranks contribute is given, and what this rank sends
is recorded."""
from __future__ import annotations

import argparse
import json
import types

import pytest
import torch

from _fake_dist import FakeRankGroup

from kizuna.data import synthetic
from kizuna.data.synthetic import SyntheticWorld, make_grid, make_probes
from kizuna.train import compiling, demo, distributed, memory
from kizuna.train.config import load_config_file


# ----------------------------------------------------------------------------- a stand-in for torch.distributed
class FakeDist(FakeRankGroup):
    """``rank`` of ``world`` ranks; ``others`` is the list of tensors the other ranks hand to each all_reduce
    (in call order), combined with this rank's by the op; ``sent`` records what this rank handed in."""

    ReduceOp = torch.distributed.ReduceOp

    def __init__(self, rank: int, world: int, others=(), broadcast=None):
        super().__init__(rank, world)
        self.others, self.broadcast = list(others), broadcast
        self.sent: list[torch.Tensor] = []

    def all_reduce(self, x, op=torch.distributed.ReduceOp.SUM):
        self.sent.append(x.clone())
        for other in self.others.pop(0):
            other = torch.as_tensor(other, dtype=x.dtype)
            if op == self.ReduceOp.SUM:
                x += other
            elif op == self.ReduceOp.MIN:
                x.copy_(torch.minimum(x, other))
            elif op == self.ReduceOp.MAX:
                x.copy_(torch.maximum(x, other))
            else:
                raise AssertionError(op)

    def isend(self, tensor, dst):
        self.sent.append(("send", dst, tensor.clone()))
        return types.SimpleNamespace(wait=lambda: None)

    def recv(self, tensor, src):
        self.sent.append(("recv", src))
        tensor.copy_(self.others.pop(0))

    def broadcast_object_list(self, box, src=0):
        assert src == 0
        box[0] = self.broadcast


class Counter:
    def __init__(self):
        self.calls = []

    def add(self, reason, n=1):
        self.calls.append((reason, n))


def _fake(monkeypatch, **kw) -> FakeDist:
    fake = FakeDist(**kw)
    monkeypatch.setattr(distributed, "dist", fake)
    return fake


def test_even_batch_trims_to_the_smallest_rank_and_counts_what_it_dropped(monkeypatch):
    """Mutants: the early return taken when the sizes differ (``keep != n``), or the dropped samples counted as
    the kept ones (``n=keep``)."""
    _fake(monkeypatch, rank=0, world=2, others=[[torch.tensor([2])]])
    batch = {"images": torch.arange(5 * 3).reshape(5, 3), "labels": torch.tensor([5, 6, 7, 8, 9]),
             "texts": ["a", "b", "c", "d", "e"], "step": 9}
    counters = [Counter(), Counter()]
    out = distributed.even_batch(batch, counters, torch.device("cpu"))
    assert out["labels"].tolist() == [5, 6] and out["texts"] == ["a", "b"] and out["step"] == 9
    assert out["images"].tolist() == [[0, 1, 2], [3, 4, 5]]
    assert [c.calls for c in counters] == [[("rank_balance", 3)], [("rank_balance", 3)]]  # 5 - 2 dropped
    # the same size everywhere: the batch as it is, nothing counted
    _fake(monkeypatch, rank=1, world=2, others=[[torch.tensor([5])]])
    same = Counter()
    assert distributed.even_batch(batch, [same], torch.device("cpu")) is batch and same.calls == []


def test_any_rank_is_false_only_when_no_rank_has_the_flag(monkeypatch):
    """Mutant: ``x.item() >= 0`` (every step taken as flagged on some rank)."""
    _fake(monkeypatch, rank=0, world=2, others=[[torch.tensor([0.0])]])
    assert distributed.any_rank(False, torch.device("cpu")) is False
    _fake(monkeypatch, rank=0, world=2, others=[[torch.tensor([1.0])]])
    assert distributed.any_rank(False, torch.device("cpu")) is True
    assert distributed.any_rank(True, None) is True and distributed.any_rank(False, None) is False


def test_raise_together_names_the_refusing_ranks_and_sends_this_ranks_own_flag(monkeypatch):
    """Mutants: the refusal written into slot 0 instead of this rank's (the others then blame rank 0), the
    and a rank with its own error raising the
    generic "rank N refused" instead of its own error."""
    fake = _fake(monkeypatch, rank=1, world=3, others=[[torch.zeros(3)]])
    own = FileNotFoundError("runs/x/checkpoints/latest: gone")
    with pytest.raises(FileNotFoundError, match="gone"):
        distributed.raise_together(own, torch.device("cpu"), "the resume", "--resume latest: ")
    assert fake.sent[0].tolist() == [0.0, 1.0, 0.0]  # rank 1's refusal in rank 1's slot
    _fake(monkeypatch, rank=0, world=3, others=[[torch.tensor([0.0, 1.0, 0.0])]])
    with pytest.raises(ValueError, match=r"^--resume latest: rank 1 refused the resume: see its message$"):
        distributed.raise_together(None, torch.device("cpu"), "the resume", "--resume latest: ")
    _fake(monkeypatch, rank=0, world=3, others=[[torch.tensor([0.0, 1.0, 0.0]), torch.tensor([0.0, 0.0, 1.0])]])
    with pytest.raises(ValueError, match=r"^ranks 1, 2 refused the data: see their messages$"):
        distributed.raise_together(None, torch.device("cpu"), "the data")
    _fake(monkeypatch, rank=2, world=3, others=[[torch.zeros(3)]])
    distributed.raise_together(None, torch.device("cpu"), "the data")  # nobody refused: no error


def test_the_neighbour_exchange_sends_forward_and_returns_gradients_the_other_way(monkeypatch):
    """Rank 1 of 3: the text chunk goes to rank 2 and comes from rank 0; its gradient goes back to rank 0 and
    rank 2's comes back. Mutant: the backward's ranks swapped (the same on 2 ranks, where the existing 2-rank
    test runs; on 3 or more each gradient went to the wrong rank)."""
    fake = _fake(monkeypatch, rank=1, world=3, others=[torch.tensor([10.0, 20.0]), torch.tensor([0.5, -1.0])])
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    out = distributed.neighbour_exchange(x)
    assert out.tolist() == [10.0, 20.0]  # rank 0's chunk
    (out * torch.tensor([3.0, 4.0])).sum().backward()
    assert [e[:2] for e in fake.sent] == [("send", 2), ("recv", 0), ("send", 0), ("recv", 2)]
    assert fake.sent[0][2].tolist() == [1.0, 2.0] and fake.sent[2][2].tolist() == [3.0, 4.0]
    assert x.grad.tolist() == [0.5, -1.0]  # the gradient rank 2 computed for this rank's chunk


def test_from_rank0_makes_on_rank_0_only(monkeypatch):
    """Mutant: ``make()`` run on every rank (a tokenizer trained on each rank, for rank 0's to replace it)."""
    calls = []

    def make():
        calls.append(1)
        return "made here"

    _fake(monkeypatch, rank=1, world=2, broadcast="rank 0's")
    assert distributed.from_rank0(make) == "rank 0's" and calls == []
    _fake(monkeypatch, rank=0, world=2, broadcast="made here")
    assert distributed.from_rank0(make) == "made here" and calls == [1]


@pytest.mark.parametrize("env, expected", [
    ({"RANK": "0", "WORLD_SIZE": "2"}, True),
    ({"RANK": "0", "WORLD_SIZE": ""}, False),  # an empty WORLD_SIZE is one process
    ({"RANK": "0", "WORLD_SIZE": " 1 "}, False),
    ({"RANK": "0"}, False),
    ({"WORLD_SIZE": "4"}, False),  # no RANK: not torchrun
])
def test_launched_by_torchrun_needs_rank_and_a_world_above_one(monkeypatch, env, expected):
    """Mutants: the empty WORLD_SIZE taken as several processes; ``RANK ... or WORLD_SIZE``."""
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert distributed.launched_by_torchrun() is expected


def test_init_distributed_refuses_unknown_and_missing_devices(monkeypatch):
    """Mutants: the device-name check and the no-GPU check dropped (a typo trained on the CPU, or died later)."""
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(ValueError, match=r"^--device tpu: expected auto, cpu, cuda or cuda:N$"):
        distributed.init_distributed("tpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=r"^--device cuda:0: no CUDA GPU here"):
        distributed.init_distributed("cuda:0")
    info = distributed.init_distributed("auto")
    assert info.device == torch.device("cpu") and (info.rank, info.world_size) == (0, 1)
    assert info.is_main and not info.enabled


# ----------------------------------------------------------------------------- the SigLIP tokenizer
@pytest.fixture
def siglip_folder(spiece_model, tmp_path):
    pytest.importorskip("sentencepiece")
    (tmp_path / "spiece.model").write_bytes(spiece_model)
    return tmp_path


def test_a_folder_without_tokenizer_config_lower_cases_and_pads_with_the_end_token(siglip_folder, spiece_model):
    """HF SiglipTokenizer's defaults (do_lower_case true, pad "</s>", id 1 in SigLIP's layout). Mutants: the
    do_lower_case default false, the pad default "<unk>" (id 2), and from_config's ``lower`` default false."""
    from kizuna.data.siglip_tokenizer import SiglipTokenizer, siglip_tokenizer_config

    cfg = siglip_tokenizer_config(siglip_folder, 8)
    assert (cfg["lower"], cfg["eos"], cfg["pad"], cfg["unk"]) == (True, "</s>", "</s>", "<unk>")
    tok = SiglipTokenizer.from_config(cfg)
    ids = tok(["A Dog"])[0].tolist()
    expected = tok.encode("a dog")  # the lower-case text's ids
    assert 2 not in expected and ids == expected + [1] * (8 - len(expected))  # EOS (1), then "</s>" (1) padding
    no_lower = {k: v for k, v in cfg.items() if k != "lower"}
    assert SiglipTokenizer.from_config(no_lower).lower is True
    assert torch.equal(SiglipTokenizer.from_config(no_lower)(["A Dog"]), tok(["a dog"]))


def test_added_token_dicts_in_tokenizer_config_are_read(siglip_folder):
    """An AddedToken dict ({"content": ...}) names the special token. Mutant: the dict's content ignored (the
    default "</s>" used for a pad of "<pad>", id 0 in SigLIP's layout)."""
    from kizuna.data.siglip_tokenizer import SiglipTokenizer, siglip_tokenizer_config

    (siglip_folder / "tokenizer_config.json").write_text(json.dumps(
        {"pad_token": {"content": "<pad>", "special": True}, "eos_token": {"content": "</s>"}}))
    cfg = siglip_tokenizer_config(siglip_folder, 8)
    assert cfg["pad"] == "<pad>"
    ids = SiglipTokenizer.from_config(cfg)(["dog"])[0].tolist()
    assert ids[-1] == 0 and ids.index(1) < 7  # EOS then "<pad>" padding


def test_write_hf_tokenizer_keeps_the_case_and_pad_settings(siglip_folder, tmp_path):
    """Mutants: do_lower_case always written true, pad_token always written "</s>"."""
    from kizuna.data.siglip_tokenizer import siglip_tokenizer_config, write_hf_tokenizer

    (siglip_folder / "tokenizer_config.json").write_text('{"do_lower_case": false, "pad_token": "<pad>"}')
    cfg = siglip_tokenizer_config(siglip_folder, 12)
    out = tmp_path / "exported"
    out.mkdir()
    write_hf_tokenizer(cfg, out)
    written = json.loads((out / "tokenizer_config.json").read_text())
    assert (written["do_lower_case"], written["pad_token"], written["model_max_length"]) == (False, "<pad>", 12)
    assert (out / "spiece.model").read_bytes() == (siglip_folder / "spiece.model").read_bytes()
    back = siglip_tokenizer_config(out, 12)
    assert (back["lower"], back["pad"]) == (False, "<pad>")


def test_a_text_that_exactly_fills_the_context_is_not_an_overflow(spiece_model):
    """ids + EOS == context length fits. Mutant: ``len(ids) + 1 >= ctx`` refused it under on_overflow="error"."""
    from kizuna.data.siglip_tokenizer import SiglipTokenizer

    tok = SiglipTokenizer(spiece_model, context_length=64)
    text = "a photo of a dog"
    n = len(tok.encode(text)) + 1
    exact = tok([text], context_length=n, on_overflow="error")[0].tolist()
    assert exact[-1] == 1 and 1 not in exact[:-1]
    with pytest.raises(ValueError, match=f"is {n} tokens long .* over the context length {n - 1}"):
        tok([text], context_length=n - 1, on_overflow="error")


def test_decode_keeps_what_follows_the_end_token_when_asked(spiece_model):
    """Mutant: the cut at the first EOS made with skip_special_tokens=False too."""
    from kizuna.data.siglip_tokenizer import SiglipTokenizer

    tok = SiglipTokenizer(spiece_model, context_length=16)
    ids = tok.encode("a dog") + [tok.eot_token_id] + tok.encode("a cat")
    assert tok.decode(ids) == "a dog"
    assert tok.decode(ids, skip_special_tokens=False).replace("</s>", " ").split() == ["a", "dog", "a", "cat"]


# ----------------------------------------------------------------------------- the synthetic world
def test_a_negative_mix_weight_is_refused():
    """Mutant: ``min(mix.values()) < -1`` (a weight of -0.5 silently dropped its kind)."""
    with pytest.raises(ValueError, match="bad mix"):
        SyntheticWorld(mix={"single": 1.0, "count": -0.5})
    only = SyntheticWorld(mix={"single": 1.0, "count": 0.0}, length=20)  # zero: that kind never drawn
    assert {only.sample_meta(i).kind for i in range(20)} == {"single"}


def test_relation_swap_rounds_an_odd_size_up_to_whole_groups():
    """make_probes' docstring: ``relation_swap`` has ``n_per_task`` rounded up to an even number. Mutant:
    ``range(n // 2)`` (3 asked, 2 made, one group)."""
    p = make_probes(n_per_task=3, image_size=16, tasks=["relation_swap"])["relation_swap"]
    assert len(p) == 4 and p.groups == [(0, 1), (2, 3)] and len(p.labels) == 4


def test_make_grid_keeps_a_partial_last_row():
    """Mutant: ``rows = len(images) // cols`` (3 images in 2 columns: the third cut off the sheet)."""
    from PIL import Image

    tiles = [Image.new("RGB", (4, 5), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    sheet = make_grid(tiles, cols=2, pad=1)
    assert sheet.size == (2 * (4 + 1) + 1, 2 * (5 + 1) + 1)
    assert sheet.getpixel((1, 1 + 5 + 1)) == (0, 0, 255)  # the third tile, top-left of row 2


def test_background_noise_spans_plus_minus_its_amplitude():
    """``noise_amp`` a: every pixel of a flat background is within +-a of it, and both ends occur (4096
    pixels, 11 values). Mutant: ``(raw * 2a) >> 8`` (never +a: the noise no longer centred)."""
    import numpy as np

    meta = synthetic.SceneMeta("single", "", (), background=(100, 100, 100), noise_amp=5, noise_seed=123)
    arr = np.asarray(synthetic.render_scene(meta, 64), dtype=np.int16)
    assert arr.min() == 95 and arr.max() == 105
    assert abs(float(arr.mean()) - 100) < 0.5
    assert (arr[..., 0] == arr[..., 1]).all() and (arr[..., 1] == arr[..., 2]).all()  # luminance noise


def test_a_count_caption_of_one_object_says_there_is():
    """Mutant: the "there are" -> "there is" fix for n == 1 skipped ("there are one red circle")."""
    world = SyntheticWorld(mix={"count": 1.0}, length=400)
    ones = [m.caption for m in map(world.sample_meta, range(400)) if len(m.objects) == 1]
    assert any(c.startswith("there is one ") for c in ones)
    assert not any("there are" in c for c in ones)
    many = [m.caption for m in map(world.sample_meta, range(400)) if len(m.objects) > 1]
    assert any(c.startswith("there are ") for c in many) and not any("there is" in c for c in many)


def test_single_object_captions_put_the_colour_before_the_shape():
    """"a red circle", never "a circle red". Mutant: the plain (no size word) phrase as "{shape} {colour}"."""
    world = SyntheticWorld(mix={"single": 1.0}, length=300)
    both = 0
    for meta in map(world.sample_meta, range(300)):
        (colour, shape), = meta.pairs
        if colour in meta.caption.split() and shape in meta.caption.replace(".", "").split():
            both += 1
            assert f"{colour} {shape}" in meta.caption or meta.caption == f"{synthetic._a(shape)} that is {colour}"
    assert both > 150


# ----------------------------------------------------------------------------- malloc settings
@pytest.mark.parametrize("env, expected", [
    ({"MALLOC_MMAP_THRESHOLD_": "4096"}, True),
    ({"MALLOC_TOP_PAD_": "1"}, True),
    ({"MALLOC_MMAP_MAX_": ""}, False),  # set but empty: glibc reads nothing from it
    ({"GLIBC_TUNABLES": "glibc.malloc.mmap_max=0:glibc.pthread.rseq=0"}, True),
    ({}, False),
])
def test_which_environments_tune_malloc(env, expected):
    """Mutants: MALLOC_MMAP_THRESHOLD_ left out of the names, and an empty value counted as a setting."""
    assert memory.malloc_tuned_by_environment(env) is expected


def test_glibc_is_found_where_platform_says_it_runs():
    """tests/train/test_memory.py skips its fault-count tests when ``_glibc()`` is None, so a ``_glibc`` that
    never found the C library (mutant: the platform test made ``startswith("win")``) passed there while no
    trainer kept its memory. The reference here is ``platform.libc_ver()``."""
    import platform
    import sys

    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        pytest.skip("not Linux with glibc")
    libc = memory._glibc()
    assert libc is not None and libc.gnu_get_libc_version() is not None


# ----------------------------------------------------------------------------- torch.compile's fallback
def test_the_fallback_headline_joins_an_introducing_line_and_is_capped():
    """Mutants: the second line not appended after a line ending in ":", the cap at 300 characters changed,
    and an empty message failing (``or [""]`` dropped)."""
    assert compiling._headline(RuntimeError("backend='inductor' raised:\n\n  CppCompileError: no g++\nmore")) == \
        "backend='inductor' raised: CppCompileError: no g++"
    assert compiling._headline(RuntimeError("first line\nsecond")) == "first line"
    assert compiling._headline(RuntimeError("x" * 500)) == "x" * 300
    assert compiling._headline(RuntimeError("")) == ""
    assert compiling._headline(RuntimeError("ends with:")) == "ends with:"


def test_inductor_and_dynamo_errors_are_compiler_errors_and_others_are_not():
    """Mutant: ``torch._inductor`` left out (a C++ compiler missing killed the run instead of falling back)."""
    def error_from(module: str, name: str = "LoweringException"):
        return type(name, (Exception,), {"__module__": module})()

    assert compiling._is_compiler_error(error_from("torch._inductor.exc"))
    assert compiling._is_compiler_error(error_from("torch._dynamo.exc", "Unsupported"))
    assert compiling._is_compiler_error(error_from("somewhere", "CppCompilerError"))
    assert not compiling._is_compiler_error(error_from("torch.nn.modules", "ValueError"))
    assert not compiling._is_compiler_error(ValueError("bad input"))


# ----------------------------------------------------------------------------- the demo
def _demo_args(*argv):
    parser = argparse.ArgumentParser()
    demo.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_demo_overrides_keep_at_least_one_warm_up_step_and_the_progress_flag():
    """Mutants: ``max(0, round(...))`` (``--steps 3``: 50 * 3 / 400 rounds to 0, no warm-up at all), and the
    progress flag inverted."""
    base = load_config_file("demo")
    assert (base["steps"], base["warmup_steps"]) == (400, 50)
    three = demo.demo_overrides(_demo_args("--steps", "3", "--out", "x"), base)
    assert (three["steps"], three["warmup_steps"], three["out"]) == (3, 1, "x")
    assert demo.demo_overrides(_demo_args("--steps", "12"), base)["warmup_steps"] == 2  # round(1.5): 2
    assert demo.demo_overrides(_demo_args("--progress", "true"), base)["progress"] is True
    assert demo.demo_overrides(_demo_args("--no-progress"), base)["progress"] is False
    assert demo.demo_overrides(_demo_args("--batch-size", "8", "--precision", "fp32"), base).items() >= \
        {"batch_size": 8, "precision": "fp32"}.items()


def test_the_probe_table_shows_percentages_nan_and_only_the_probes_run():
    """Mutants: the share printed unscaled ("0.5%"), and a missing probe raising KeyError."""
    table = demo.format_probe_table({"probe/shape": 0.5, "probe/colour": float("nan"), "probe/counting": 0.25,
                                     "other": 1.0})
    lines = {line.split("  ")[0].strip(): line for line in table.splitlines()}
    assert "50.0%" in lines["shape zero-shot top-1 (6 shapes)"]
    assert "25.0%" in lines["counting 1-4 (4-way)"]
    assert lines["colour zero-shot top-1 (8 colours)"].rstrip().endswith("nan")
    assert "relation swap" not in table and "typographic" not in table and "nan%" not in table


def test_the_probe_table_has_a_row_for_every_probe_the_demo_reports():
    """Every probe the demo's REPORT.md lists gets a row, in order. Mutant: a row (the relation swap's
    Winoground group score) dropped from PROBE_ROWS."""
    keys = ["shape", "colour", "seen_combos", "unseen_combos", "counting", "relation_swap",
            "relation_swap/group_score", "typographic_clean", "typographic", "typographic/attack_rate"]
    metrics = {f"probe/{k}": (i + 1) / 20 for i, k in enumerate(keys)}
    table = demo.format_probe_table(metrics)
    shown = [float(line.split()[-1].rstrip("%")) for line in table.splitlines() if line.rstrip().endswith("%")]
    assert shown == [(i + 1) * 5.0 for i in range(len(keys))]  # every row, in the order above


def test_only_compiler_errors_fall_back_to_eager(monkeypatch):
    """An error of the compiled call that is not the compiler's (a ValueError from the model's compiled code)
    is raised, even where the eager module would have run: it is not a reason to drop compiling silently.
    Mutant: the ``_is_compiler_error`` check skipped (every error fell back). A compiler error falls back once,
    with a warning naming it, and eager mode is used from then on."""
    raised = []

    def compiled_raising(error):
        def call(*args, **kwargs):
            raised.append(error)
            raise error
        return call

    module = torch.nn.Identity()
    monkeypatch.setattr(torch, "compile", lambda m: compiled_raising(ValueError("from the compiled code only")))
    wrapped = compiling.compiled_or_eager(module, True)
    with pytest.raises(ValueError, match="from the compiled code only"):
        wrapped(torch.ones(2))
    assert wrapped.fallback_reason is None

    lowering = type("LoweringException", (Exception,), {"__module__": "torch._inductor.exc"})
    monkeypatch.setattr(torch, "compile", lambda m: compiled_raising(lowering("backend raised:\nno g++")))
    wrapped = compiling.compiled_or_eager(module, True)
    with pytest.warns(RuntimeWarning, match=r"LoweringException: backend raised: no g\+\+\); training continues"):
        assert torch.equal(wrapped(torch.ones(2)), torch.ones(2))
    raised.clear()
    assert torch.equal(wrapped(torch.zeros(3)), torch.zeros(3)) and raised == []  # eager from then on
    assert compiling.compiled_or_eager(module, False) is module
