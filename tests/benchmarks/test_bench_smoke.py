"""The benchmark suite still runs: `python -m benchmarks --quick --only ...` into a temporary report.

No timing assertions; this only guards against the benchmark code rotting (renamed APIs, broken report).
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("KIZUNA_SHARED", REPO.parent / "shared"))  # as benchmarks/common.py finds it


def _run_bench(tmp_path, only: str, timeout: int, **env_extra) -> tuple[str, dict]:
    out, js = tmp_path / "B.md", tmp_path / "b.json"
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""), **env_extra}
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--only", only, "--out", str(out), "--json", str(js)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out.read_text(), json.loads(js.read_text())["sections"]


@pytest.mark.slow  # 5-13 s of child processes; `make test-slow` (the default suite stays under 10 min)
def test_quick_tokenizer_benchmark_writes_a_table_with_a_ratio(tmp_path):
    out, js = tmp_path / "BENCH.md", tmp_path / "bench.json"
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--only", "tokenizer", "--out", str(out), "--json", str(js)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    md = out.read_text()
    assert "## Tokenizer throughput" in md
    assert "--quick smoke run" in md
    # A Markdown table whose header names the ratio column, with kizuna's row carrying a ratio.
    lines = md.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("| tokenizer |"))
    assert "kizuna ÷ this" in lines[header]
    assert set(lines[header + 1].replace("|", "").split()) <= {"---", "---:", ":---:"}
    rows = [line for line in lines[header + 2:] if line.startswith("|")]
    assert any("kizuna" in r and r.rstrip(" |").split("|")[-2].strip().endswith("x") for r in rows)
    assert any("HF" in r for r in rows) and any("plain-Python" in r for r in rows)
    data = json.loads(js.read_text())
    sec = data["sections"]["tokenizer"]
    assert sec["data"]["ratio_vs_hf"] > 0 and sec["data"]["ratio_vs_python"] > 0
    assert all(len(t["runs_s"]) >= 5 for t in sec["data"]["timings"].values())
    assert sec["command"].endswith("--json " + str(js)) or "--only tokenizer" in sec["command"]
    assert sec["code"] == data["last_run"]["code"] and sec["code"] != ""  # the commit the figures belong to


def _rate_cells(md: str, title: str, column: str) -> list[float]:
    """The numbers in column ``column`` of the first table after ``## title``."""
    lines = md.split("## " + title, 1)[1].split("\n## ", 1)[0].splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("| what |"))
    cols = [c.strip() for c in lines[header].strip("|").split("|")]
    k = cols.index(column)
    rows = [line for line in lines[header + 2:] if line.startswith("|")]
    return [float(r.strip("|").split("|")[k].strip().replace(",", "")) for r in rows]


@pytest.mark.slow  # 22-29 s of child processes; `make test-slow` (the default suite stays under 10 min)
def test_quick_train_and_eval_throughput_benchmarks_report_rates(tmp_path):
    # One torch thread: with two OpenMP threads on a busy 2-core machine every op waits at its barrier for
    # a descheduled thread (measured: a demo-model step 20x slower), and this test checks plumbing, not speed.
    md, data = _run_bench(tmp_path, "train_throughput,eval_throughput", timeout=300, OMP_NUM_THREADS="1")

    assert "## Training throughput" in md
    rates = _rate_cells(md, "Training throughput", "samples/s")
    assert len(rates) == 2 and all(r > 0 for r in rates)  # the trainer's and the bare step's
    tr = data["train_throughput"]["data"]
    assert tr["trainer_samples_per_s"] > 0 and tr["trainer_step_rates"]
    assert len(tr["bare_step"]["runs_s"]) >= 5
    from kizuna.train.optim import resolve_precision  # the bare step runs in the precision the trainer's auto chose

    assert tr["precision"] == resolve_precision("auto", torch.device("cpu"))
    from kizuna.models import layers

    # the notes say which GEMM library kizuna's linears run on here, not a hardcoded one
    assert tr["gemm"] == layers.GEMM
    assert f"`kizuna.models.layers.GEMM` is `{layers.GEMM}` here" in " ".join(data["train_throughput"]["notes"])

    assert "## Zero-shot evaluation throughput" in md
    ev = data["eval_throughput"]["data"]
    if not (SHARED / "data" / "cifar10" / "test").is_dir():  # no shared data here: the section says it skipped
        assert ev.get("skipped") and "Skipped:" in md.split("## Zero-shot evaluation throughput", 1)[1]
        return
    rates = _rate_cells(md, "Zero-shot evaluation throughput", "images/s")
    assert len(rates) == 3 and all(r > 0 for r in rates)  # end-to-end with 0 and 2 workers, encode-only
    assert set(ev["timings"]) == {"e2e_0w", "e2e_2w", "encode"}
    assert all(len(t["runs_s"]) >= 5 for t in ev["timings"].values())
    assert 0 <= ev["acc1"] <= 1
    from benchmarks.common import shipped_note

    assert shipped_note() in " ".join(data["eval_throughput"]["notes"])


def test_eval_throughput_skips_cleanly_without_the_shared_data(tmp_path):
    md, data = _run_bench(tmp_path, "eval_throughput", timeout=120, KIZUNA_SHARED=str(tmp_path / "no-shared"))
    sec = data["eval_throughput"]
    assert sec["data"] == {"skipped": True} and sec["targets"] == []
    body = md.split("## Zero-shot evaluation throughput", 1)[1]
    assert "Skipped:" in body and "cifar10" in body


def test_report_flags_a_section_measured_on_another_machine():
    """A section re-measured with --only on a different machine must say so (its rates are not comparable)."""
    from benchmarks.report import render

    machine = {"cpu_model": "AMD EPYC", "cpu_capability": "AVX2", "usable_cores": 2, "torch": "2.13.0",
               "torch_threads": 2}
    section = {"name": "tokenizer", "title": "Tokenizer throughput", "command": "python -m benchmarks --only tokenizer",
               "started": "now", "duration_s": 1.0, "md": "table", "machine": machine}
    run = {"command": "python -m benchmarks", "started": "then", "duration_s": 60.0, "machine": machine}
    same = render({"sections": {"tokenizer": section}, "full_run": run})
    assert "different machine" not in same
    other = {**section, "machine": {**machine, "cpu_capability": "AVX512"}}
    text = render({"sections": {"tokenizer": other}, "full_run": run})
    assert "Measured on a different machine" in text and "cpu_capability AVX512 (not AVX2)" in text


def test_gpu_train_step_records_a_skip_without_cuda_and_smoke_runs_on_cpu(tmp_path, monkeypatch):
    """Without CUDA the GPU section says it was not run (no figures); with --quick it runs a tiny model on
    the CPU, and the padding-trimmed step has the same first-step loss as the padding-kept one."""
    import torch

    from benchmarks import gpu_train_step
    from benchmarks.common import Settings

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    skipped = gpu_train_step.run(Settings.make(quick=False, log=lambda m: None))
    assert skipped["targets"] == [] and "Not run" in skipped["md"] and "no CUDA" in skipped["data"]["skipped"]

    # a reference that fails its first step is dropped with the reason, not the whole section
    class Broken(torch.nn.Module):
        visual = type("Visual", (), {"image_size": 64})()

        def forward(self, *args):
            raise RuntimeError("planted failure")

    monkeypatch.setattr(gpu_train_step, "_open_clip", lambda: (type("OC", (), {
        "create_model": staticmethod(lambda *a, **k: Broken())}), None))
    monkeypatch.setenv("KIZUNA_GPU_PROFILE", str(tmp_path / "profile.txt"))
    ran = gpu_train_step.run(Settings.make(quick=True, log=lambda m: None))
    loss = ran["data"]["first_loss"]
    assert set(ran["data"]["timings"]) == {"kizuna", "kizuna_pad"}
    assert ran["data"]["dropped"] == {"open_clip": "RuntimeError: planted failure"}
    assert "OpenCLIP: failed in its first step (RuntimeError: planted failure)" in ran["notes"][-1]
    assert abs(loss["kizuna"] - loss["kizuna_pad"]) < 1e-5
    assert ran["data"]["positions_run"] < 77 and "| kizuna |" in ran["md"]
    assert ran["targets"] == []  # a CPU smoke run checks no GPU target
    table = (tmp_path / "profile.txt").read_text()  # KIZUNA_GPU_PROFILE: where the step's time goes
    assert "3 steps" in table and "aten::" in table


@pytest.mark.slow  # 5-13 s of child processes; `make test-slow` (the default suite stays under 10 min)
def test_quick_gemm_library_benchmark_compares_both_libraries_per_row_count(tmp_path):
    from kizuna.models import layers

    md, sections = _run_bench(tmp_path, "gemm_library", timeout=180)
    sec = sections["gemm_library"]
    if not layers.ONEDNN:
        assert sec["data"]["skipped"]
        return
    assert "oneDNN ÷ MKL" in md and "kizuna as shipped here" in md
    rows = sec["data"]["rows"]
    assert [r["rows"] for r in rows] == [10, 80] and [r["rows"] for r in sec["data"]["linear"]] == [10, 80]
    for r in rows:
        assert r["mkl_speedup"] > 0 and r["shipped"] in ("onednn", "mkl")
        assert all(len(t["runs_s"]) >= 5 for t in r["timings"].values())


@pytest.mark.slow  # 5-13 s of child processes; `make test-slow` (the default suite stays under 10 min)
def test_quick_cpu_switches_benchmark_times_both_forms_of_each_switch(tmp_path):
    from kizuna.models import layers, vit

    md, sections = _run_bench(tmp_path, "cpu_switches", timeout=180)
    data = sections["cpu_switches"]["data"]
    assert "GEMM / materialised, ms" in md and "KIZUNA_MATERIALISED_ATTENTION" in md
    assert set(data["timings"]) == {f"{op} tiny {dtype}" for op in ("patch", "attention")
                                    for dtype in ("torch.float32", "torch.bfloat16")}
    for name, t in data["timings"].items():
        forms = {"conv", "gemm"} if name.startswith("patch") else {"sdpa", "materialised"}
        assert set(t) == forms and all(len(r["runs_s"]) >= 5 for r in t.values())
    assert data["patch_gemm"] == vit.PATCH_GEMM and bool(data["materialised_keys"]) == bool(layers.MATERIALISED_TRAINING_KEYS)


@pytest.mark.slow  # 13-18 s of child processes; `make test-slow` (the default suite stays under 10 min)
def test_quick_allocator_benchmark_runs_each_mode_in_its_own_children(tmp_path):
    from kizuna.train.memory import _glibc

    # one thread and room to spare: 13 s on an idle machine, past 240 s on a loaded one (four children)
    md, sections = _run_bench(tmp_path, "allocator", timeout=600, OMP_NUM_THREADS="1")
    data = sections["allocator"]["data"]
    if _glibc() is None:
        assert data == {"skipped": "not on glibc"} and "Not measured" in md
        return
    assert "Kept ÷ default" in md and "page faults per step" in md
    assert data["ratio_kept_vs_default"] > 0
    for mode, children in data["children"].items():
        assert len(children) == 2 and all(len(c["times_s"]) == 3 for c in children)
        assert all(c["kept"] is (mode == "kept") for c in children)  # the setting took effect in the kept children only


@pytest.mark.slow  # 13-18 s of child processes; `make test-slow` (the default suite stays under 10 min)
def test_quick_bf16_benchmark_times_where_bf16_is_native_and_says_why_not_elsewhere(tmp_path):
    # one thread (as the throughput test, for the same reason) and room to spare: 14 s idle, past 240 s loaded
    md, sections = _run_bench(tmp_path, "bf16", timeout=600, OMP_NUM_THREADS="1")
    data = sections["bf16"]["data"]
    assert data["peak_fp32"] > 0 and data["peak_bf16"] > 0 and "torch.mm bf16 GFLOP/s" in md
    if not data["native"]:
        assert "bf16 is not native on this CPU" in md and data["encode"] == [] and data["train_step"] is None
        return
    assert [(r["variant"], r["tower"]) for r in data["encode"]] == [("tiny", "image"), ("tiny", "text")]
    for r in data["encode"]:
        assert r["ratio_vs_hf_bf16"] > 0 and all(len(t["runs_s"]) >= 5 for t in r["timings"].values())
    assert data["train_step"]["ratio_vs_hf_bf16"] > 0
    # bf16 features stay close to fp32's (kizuna and HF alike): the cast and the fused bf16 path are right.
    assert all(p["min_cosine_vs_hf_fp32"] > 0.99 for p in data["parity"])
    minilm = data["pretrained_minilm"]
    assert "skipped" in minilm or (minilm["min_cosine"] > 0.99 and minilm["neighbour_agreement"] > 0.9)


@pytest.mark.slow  # 6 s of child processes; `make test-slow` (the default suite stays under 10 min)
def test_quick_cifar_augment_benchmark_compares_pil_with_batches(tmp_path):
    md, data = _run_bench(tmp_path, "cifar_augment", timeout=300, OMP_NUM_THREADS="1")
    sec = data["cifar_augment"]["data"]
    if not (SHARED / "data" / "cifar10" / "train").is_dir():  # no shared data here: the section says it skipped
        assert sec["skipped"] and "Skipped" in md
        return
    assert "## CIFAR-10 augmentation" in md and "batched on the CPU" in md
    assert sec["decoded"] == sec["images"] and sec["decode_s"] > 0
    timings = sec["timings"]
    assert {"PIL, one process", "batched on the CPU"} <= set(timings)
    assert all(len(t["runs_s"]) >= 5 and t["items_per_s"] > 0 for t in timings.values())
