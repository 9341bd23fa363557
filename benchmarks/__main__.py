"""python -m benchmarks [--quick] [--only NAME,...] [--out BENCHMARKS.md] [--json benchmarks/results.json] [--render]

Runs the selected sections in one process, then writes the Markdown report and the JSON results. With
``--only`` the other sections already in the JSON file are kept (each carries its own command, time
and machine load), so a single section can be re-measured without redoing the rest.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from .common import REPO, Settings, load_average, machine_info

# Run order: cheap and load-sensitive first; `utilization` reuses `encode`'s timings when both run.
SECTIONS = ["tokenizer", "encode", "utilization", "fusion", "gemm_library", "cpu_switches", "train_step", "allocator", "bf16", "train_throughput",
            "dataloading", "cifar_augment", "eval_throughput", "profile", "gpu_train_step"]
MODULES = {"tokenizer": "tokenizer", "encode": "encode", "utilization": "utilization", "fusion": "fusion",
           "gemm_library": "gemm_library", "cpu_switches": "cpu_switches",
           "train_step": "train_step", "allocator": "allocator", "bf16": "bf16", "train_throughput": "train_throughput", "dataloading": "dataloading",
           "cifar_augment": "cifar_augment",
           "eval_throughput": "eval_throughput", "profile": "profile", "gpu_train_step": "gpu_train_step"}


# Environment variables that change what is measured (kizuna's switches, glibc's allocator, the BLAS and
# OpenMP libraries): a run that set any of them records them in its command, so the command reproduces it.
MEASURED_ENV = ("KIZUNA_", "MALLOC_", "OMP_", "MKL_", "DNNL_", "ONEDNN_", "KMP_", "LD_PRELOAD")


def _command(argv: list[str], environ: dict[str, str] | None = None, executable: str | None = None) -> str:
    environ = os.environ if environ is None else environ
    env = [f"{k}={shlex.quote(v)}" for k, v in sorted(environ.items()) if k.startswith(MEASURED_ENV)]
    # the project's virtual environment here; a machine without one (a lent GPU's python3) says so
    python = ".venv/bin/python" if ".venv" in Path(executable or sys.executable).parts else "python3"
    return " ".join(env + [f"{python} -m benchmarks"] + [shlex.quote(a) for a in argv])


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny sizes (smoke test); the figures are not measurements")
    p.add_argument("--only", default="", help=f"comma-separated sections out of: {','.join(SECTIONS)}")
    p.add_argument("--out", default="BENCHMARKS.md", help="Markdown report (default: BENCHMARKS.md)")
    p.add_argument("--json", default=None,
                   help="JSON results (default: benchmarks/results.json, or next to --out when --out is elsewhere)")
    p.add_argument("--render", action="store_true",
                   help="only re-write the Markdown report from the JSON results (no measurement)")
    args = p.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(SECTIONS)
    unknown = [n for n in names if n not in SECTIONS]
    if unknown:
        p.error(f"unknown section(s) {unknown}; choose from {SECTIONS}")
    args.names = [n for n in SECTIONS if n in names]
    if args.json is None:
        out = Path(args.out)
        default_out = out.resolve() == (REPO / "BENCHMARKS.md").resolve()
        args.json = str(REPO / "benchmarks" / "results.json") if default_out else str(out.with_suffix(".json"))
    return args


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    command = _command(argv)
    settings = Settings.make(args.quick, log=lambda m: print(m, flush=True))
    json_path, out_path = Path(args.json), Path(args.out)

    if args.render:
        from .report import render

        out_path.write_text(render(json.loads(json_path.read_text()), json_path))
        settings.log(f"wrote {out_path} from {json_path}")
        return 0

    results: dict = {"sections": {}}
    if json_path.is_file():
        try:
            results = json.loads(json_path.read_text())
            results.setdefault("sections", {})
        except (OSError, json.JSONDecodeError):
            results = {"sections": {}}

    run_started = time.perf_counter()
    run_info = {"command": command, "started": _now(), "load_before": load_average(), "machine": machine_info(),
                "sections": args.names, "quick": args.quick}
    settings.log(f"machine: {run_info['machine']['cpu_model']}, {run_info['machine']['usable_cores']} cores, "
                 f"torch {torch.__version__} with {torch.get_num_threads()} threads; load {run_info['load_before']}")
    for name in args.names:
        mod = importlib.import_module(f".{MODULES[name]}", __package__)
        load_before, t0, started = load_average(), time.perf_counter(), _now()
        settings.log(f"== {name} (load average {load_before})")
        section = mod.run(settings)
        section.update(name=name, command=command, started=started, duration_s=round(time.perf_counter() - t0, 1),
                       load_before=load_before, load_after=load_average(), quick=args.quick,
                       threads=torch.get_num_threads(), machine=run_info["machine"], reps=settings.reps,
                       max_reps=settings.max_reps)
        settings.extra[name] = section
        results["sections"][name] = section
        settings.log(f"   {name} done in {section['duration_s']:.0f} s (load average {section['load_after']})")
    run_info.update(duration_s=round(time.perf_counter() - run_started, 1), load_after=load_average())
    results["last_run"] = run_info
    if set(args.names) == set(SECTIONS):
        results["full_run"] = run_info

    from .report import render

    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(results, indent=1, default=str) + "\n")
    out_path.write_text(render(results, json_path))
    settings.log(f"wrote {out_path} and {json_path} in {run_info['duration_s']:.0f} s")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    sys.exit(main())
