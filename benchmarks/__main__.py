"""python -m benchmarks [--quick] [--only NAME,...] [--out BENCHMARKS.md] [--json benchmarks/results.json]
                       [--render] [--merge OTHER.json]

Runs the selected sections in one process, then writes the Markdown report and the JSON results. With
``--only`` the other sections already in the JSON file are kept (each carries its own command, time
and machine load), so a single section can be re-measured without redoing the rest.

What a run never does to the JSON file:

- replace a measured section with a skip (a GPU section on a machine without CUDA, a section whose data
  or library is missing here) or with a ``--quick`` smoke run: the measured section stays, and the
  console says so;
- replace the CPU machine's figures with a lent GPU machine's: a section that is not GPU-only, measured
  where CUDA is available, is stored under ``NAME@gpu`` (see ``section_key``);
- start afresh from a file it cannot read: it stops and names the file. It writes the file atomically
  (a temporary file beside it, then ``os.replace``), after every section, so a run that is killed keeps
  the sections it finished.

``--merge OTHER.json`` takes the sections of another copy of the file (what a lent GPU machine returned)
that are new here or measured later, then re-renders the report; nothing is measured.
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

from kizuna.models.checkpoint import atomic_write_text

from .common import REPO, Settings, load_average, machine_info
from .report import MACHINE_KEYS

# Run order: cheap and load-sensitive first; `utilization` reuses `encode`'s timings when both run.
SECTIONS = ["tokenizer", "encode", "utilization", "fusion", "gemm_library", "cpu_switches", "train_step", "allocator", "bf16", "train_throughput",
            "dataloading", "index_memory", "cifar_augment", "eval_throughput", "profile", "gpu_train_step"]
MODULES = {"tokenizer": "tokenizer", "encode": "encode", "utilization": "utilization", "fusion": "fusion",
           "gemm_library": "gemm_library", "cpu_switches": "cpu_switches",
           "train_step": "train_step", "allocator": "allocator", "bf16": "bf16", "train_throughput": "train_throughput", "dataloading": "dataloading", "index_memory": "index_memory",
           "cifar_augment": "cifar_augment",
           "eval_throughput": "eval_throughput", "profile": "profile", "gpu_train_step": "gpu_train_step"}


# Environment variables that change what is measured (kizuna's switches, glibc's allocator, the BLAS and
# OpenMP libraries): a run that set any of them records them in its command, so the command reproduces it.
MEASURED_ENV = ("KIZUNA_", "MALLOC_", "OMP_", "MKL_", "DNNL_", "ONEDNN_", "KMP_", "LD_PRELOAD", "ATEN_CPU_",
                "TOKENIZERS_", "RAYON_")  # (the last two: the Rust tokenizers' threads)


def _command(argv: list[str], environ: dict[str, str] | None = None, executable: str | None = None) -> str:
    environ = os.environ if environ is None else environ
    env = [f"{k}={shlex.quote(v)}" for k, v in sorted(environ.items()) if k.startswith(MEASURED_ENV)]
    # the project's virtual environment here; a machine without one (a lent GPU's python3) says so
    python = ".venv/bin/python" if ".venv" in Path(executable or sys.executable).parts else "python3"
    return " ".join(env + [f"{python} -m benchmarks"] + [shlex.quote(a) for a in argv])


# Where CUDA is available, a section that is not GPU-only is stored under NAME + this suffix: the lent GPU
# machines' CPUs and GPUs are other machines than the one the CPU report describes, and their figures must
# sit beside that machine's, not replace them.
GPU_MACHINE_SUFFIX = "@gpu"


def section_key(name: str, module, cuda_available: bool) -> str:
    """The key a section's result is stored under in the JSON file: its name, or ``NAME@gpu`` for a section
    measured on a machine with CUDA unless the section is GPU-only (``GPU_SECTION = True`` in its module,
    e.g. ``gpu_train_step``: its figures are a GPU's wherever it runs)."""
    if cuda_available and not getattr(module, "GPU_SECTION", False):
        return name + GPU_MACHINE_SUFFIX
    return name


def not_measured(section: dict) -> str | None:
    """Why ``section`` holds no figures worth keeping (a skip or a --quick smoke run); None for a measurement."""
    skipped = (section.get("data") or {}).get("skipped")
    if skipped:
        return f"a skip ({skipped})" if isinstance(skipped, str) else "a skip"
    if section.get("quick"):
        return "a --quick smoke run"
    return None


def store_section(results: dict, key: str, section: dict, log) -> bool:
    """Puts ``section`` into ``results`` under ``key`` unless it is not a measurement and would replace one:
    a machine without CUDA must not erase the GPU figures, nor a smoke run the real ones. Returns whether
    it was stored."""
    old = results["sections"].get(key)
    why = not_measured(section)
    if old is not None and why and not not_measured(old):
        log(f"   {key}: this run's result is {why}, so the section measured {old.get('started', '?')} by "
            f"`{old.get('command', '?')}` is kept")
        return False
    results["sections"][key] = section
    return True


def load_results(path: Path, merged: bool = False) -> dict:
    """The results recorded in ``path`` (none yet where it does not exist). A file that cannot be read as
    results stops the run: starting afresh would drop every section this run does not re-measure. ``merged``:
    ``path`` is a --merge input (a device run's results.json), which nothing is written to."""
    if not path.exists():
        return {"sections": {}}
    restore = ("Nothing was merged: pass the results.json a device run returned (benchmarks/device/README.md)."
               if merged else
               f"It holds the recorded sections, so it is left as it is: restore it (e.g. `git checkout -- {path}`) "
               "or pass --json with another file to start afresh.")
    try:
        results = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise SystemExit(f"error: {path} is not valid JSON ({e.msg} at line {e.lineno}, column {e.colno}). "
                         + restore) from None
    except (OSError, UnicodeDecodeError) as e:
        raise SystemExit(f"error: cannot read {path} ({e}). " + restore) from None
    if not isinstance(results, dict) or not isinstance(results.get("sections", {}), dict):
        raise SystemExit(f"error: {path} is JSON but not benchmark results (no \"sections\" object). " + restore)
    results.setdefault("sections", {})
    for key, section in results["sections"].items():  # what the report reads of each: a --merge took a section
        # without them into results.json, then failed to render it, and so did every later --render
        wrong = section_problem(section)
        if wrong:
            raise SystemExit(f"error: {path}: section {key!r} is not a recorded section ({wrong}). " + restore)
    return results


SECTION_FIELDS = {"name": str, "command": str, "started": str, "duration_s": (int, float)}


def section_problem(section) -> str | None:
    """What makes ``section`` unreadable as a recorded section (None where nothing does)."""
    if not isinstance(section, dict):
        return f"a JSON {type(section).__name__}, not an object"
    for field, kind in SECTION_FIELDS.items():
        if not isinstance(section.get(field), kind) or isinstance(section.get(field), bool):
            return f"no {field!r}" if field not in section else f"{field!r} is {section[field]!r}"
    if not isinstance(section.get("data", {}), dict) or not isinstance(section.get("notes", []), list):
        return "'data' is not an object or 'notes' not a list"
    return None


def save_results(path: Path, results: dict) -> None:
    atomic_write_text(path, json.dumps(results, indent=1, default=str) + "\n")


def _lesser(key: str, ours: dict, theirs: dict) -> str:
    """Why a later ``theirs`` must not replace ``ours`` silently ("" when it may): it dropped contenders ours
    timed (OpenCLIP or the compiled step failed on the lent machine: the OpenCLIP target row and the compiled
    MFU went with them), or a CPU section was measured on another machine (a lent machine whose torch saw no
    CUDA stored its CPU figures under the CPU key)."""
    mine_data, their_data = ours.get("data") or {}, theirs.get("data") or {}
    dropped = set(their_data.get("dropped") or ()) - set(mine_data.get("dropped") or ())
    # a contender never added (OpenCLIP not importable, the compiled step switched off) is in neither list
    dropped |= set(mine_data.get("timings") or ()) - set(their_data.get("timings") or ())
    if dropped and not not_measured(ours) and not not_measured(theirs):
        return f"it dropped {', '.join(sorted(dropped))}, which ours timed"
    name = key.split(GPU_MACHINE_SUFFIX)[0]
    gpu_only = name in MODULES and getattr(importlib.import_module(f".{MODULES[name]}", __package__),
                                           "GPU_SECTION", False)
    if GPU_MACHINE_SUFFIX not in key and not gpu_only and not not_measured(ours):  # a CPU machine's figures (a
        # GPU's: any lent machine's); a measurement of another machine is still better than a skip here
        mine, other = ours.get("machine") or {}, theirs.get("machine") or {}
        differ = [k for k in MACHINE_KEYS if mine.get(k) != other.get(k)]  # the keys the report flags
        if differ and mine and other:
            return f"it was measured on another machine ({', '.join(f'{k} {other.get(k)}' for k in differ)})"
    return ""


def merge_results(results: dict, other: dict, log, force: bool = False) -> list[str]:
    """Takes into ``results`` the sections of ``other`` (another copy of the file, e.g. the one a lent GPU
    machine returned) that are new here or were measured later than ours; a skip or smoke run never replaces
    a measurement, nor (unless ``force``) one with fewer contenders or from another machine. Returns the keys
    taken."""
    taken = []
    for key, theirs in other["sections"].items():
        ours = results["sections"].get(key)
        if ours == theirs:
            continue
        # a measurement replaces a skip or smoke run whatever their dates, as during a run (store_section)
        measured_over_unmeasured = ours is not None and not_measured(ours) and not not_measured(theirs)
        if ours is not None and not measured_over_unmeasured and not (theirs.get("started", "") > ours.get("started", "")):
            log(f"   {key}: kept ours (measured {ours.get('started', '?')}, theirs {theirs.get('started', '?')})")
            continue
        lesser = _lesser(key, ours, theirs) if ours is not None and not force else ""
        if lesser:
            log(f"   {key}: kept ours (measured {ours.get('started', '?')}; theirs {theirs.get('started', '?')}): "
                f"{lesser}; pass --force to take it anyway")
            continue
        if store_section(results, key, theirs, log):
            log(f"   {key}: taken (measured {theirs.get('started', '?')} by `{theirs.get('command', '?')}`)"
                + _other_gpu(ours, theirs))
            taken.append(key)
    return taken


def _other_gpu(ours: dict | None, theirs: dict) -> str:
    """A note when ``theirs`` ran on another GPU than ``ours`` (an H100 lease replacing an H200's figures): the
    prose written around ours names the GPU it ran on."""
    def gpu(section):
        data = (section or {}).get("data") or {}
        return data.get("device") or (data.get("gpu") or {}).get("name") or ""

    mine, other = gpu(ours), gpu(theirs)
    if mine and other and mine != other and not mine.startswith("CPU") and not other.startswith("CPU"):
        return f"; measured on an {other}, ours on an {mine}: text naming the GPU needs updating"
    return ""


def code_version() -> str:
    """The commit the figures were measured at ("+changes" when the tree differed from it), so a figure can be
    told from one measured before a change to the code it times; "unknown" outside a git checkout."""
    import subprocess

    def git(*argv):
        return subprocess.run(["git", *argv], cwd=Path(__file__).resolve().parent, capture_output=True, text=True,
                              timeout=10)

    try:
        head = git("rev-parse", "--short", "HEAD")
        if head.returncode:
            return "unknown"
        dirty = git("status", "--porcelain", "--untracked-files=no").stdout.strip()
        return head.stdout.strip() + ("+changes" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__, allow_abbrev=False,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # (--ou: see --out below)
    p.add_argument("--quick", action="store_true", help="tiny sizes (smoke test); the figures are not measurements")
    p.add_argument("--only", default="", help=f"comma-separated sections out of: {','.join(SECTIONS)}")
    p.add_argument("--out", default="BENCHMARKS.md", help="Markdown report (default: BENCHMARKS.md)")
    p.add_argument("--json", default=None,
                   help="JSON results (default: benchmarks/results.json, or next to --out when --out is elsewhere)")
    p.add_argument("--render", action="store_true",
                   help="only re-write the Markdown report from the JSON results (no measurement)")
    p.add_argument("--merge", default=None, metavar="OTHER.json",
                   help="take the sections of another results file that are new or measured later (e.g. the file a "
                        "lent GPU machine returned) into the JSON results, then re-write the report; no measurement")
    p.add_argument("--force", action="store_true",
                   help="with --merge: also take a later section that dropped contenders or was measured on another "
                        "machine (kept out by default, and said)")
    args = p.parse_args(argv)
    # accepted and ignored, they looked like they had done something (a --render --quick "re-rendered quick")
    if args.force and not args.merge:
        p.error("--force applies to --merge (it takes a section the merge would keep out); add --merge OTHER.json")
    if (args.render or args.merge) and (args.quick or args.only):
        measuring, instead = ("quick" if args.quick else "only"), ("merge" if args.merge else "render")
        p.error(f"--{measuring} shapes a measurement, and --{instead} measures nothing; drop one")
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    if args.only and not names:  # `--only ""` ran the whole suite (and took over its header)
        p.error("--only names no section; choose from " + ",".join(SECTIONS))
    names = names or list(SECTIONS)
    unknown = [n for n in names if n not in SECTIONS]
    if unknown:
        p.error(f"unknown section(s) {unknown}; choose from {SECTIONS}")
    args.names = [n for n in SECTIONS if n in names]
    default_json = REPO / "benchmarks" / "results.json"
    if (args.json is not None and "--out" not in argv and not any(a.startswith("--out=") for a in argv)
            and Path(args.json).resolve() != default_json.resolve()):  # (the default file's report: BENCHMARKS.md)
        # the report of another results file beside it: the default BENCHMARKS.md was rewritten from it (a
        # `--render --json docs/benchmarks/XEON.json` replaced the AMD report with the Xeon's)
        args.out = str(Path(args.json).with_suffix(".md"))
    if args.json is None:
        out = Path(args.out)
        default_out = out.resolve() == (REPO / "BENCHMARKS.md").resolve()
        args.json = str(default_json) if default_out else str(out.with_suffix(".json"))
    if Path(args.out).resolve() == Path(args.json).resolve():
        # the report was written over the results (`--out results.json`): every recorded run lost, and the next
        # run refused the file as not JSON
        p.error(f"--out {args.out} is the JSON results file itself: the report would replace every recorded run; "
                "name a Markdown file (e.g. --out BENCHMARKS.md)")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    command = _command(argv)
    settings = Settings.make(args.quick, log=lambda m: print(m, flush=True))
    json_path, out_path = Path(args.json), Path(args.out)

    if args.render or args.merge:
        from .report import render

        results = load_results(json_path)
        if args.merge:
            other_path = Path(args.merge)
            if not other_path.is_file():
                raise SystemExit(f"error: --merge {other_path}: no such file")
            settings.log(f"merging {other_path} into {json_path}")
            taken = merge_results(results, load_results(other_path, merged=True), settings.log, args.force)
        if not results["sections"]:
            raise SystemExit(f"error: no recorded sections in {json_path}: nothing to render (run the suite first)")
        report = render(results, json_path)  # before the merge is saved: a report that fails keeps the file as it was
        if args.merge:
            if taken:
                save_results(json_path, results)
            settings.log(f"took {len(taken)} section(s) from {other_path}")
        atomic_write_text(out_path, report)
        settings.log(f"wrote {out_path} from {json_path}")
        return 0

    results = load_results(json_path)
    cuda_available = torch.cuda.is_available()

    run_started = time.perf_counter()
    run_info = {"command": command, "started": _now(), "load_before": load_average(), "machine": machine_info(),
                "sections": args.names, "quick": args.quick, "kept_previous": [], "code": code_version()}
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
                       max_reps=settings.max_reps, code=run_info["code"])
        settings.extra[name] = section
        key = section_key(name, mod, cuda_available)
        settings.log(f"   {name} done in {section['duration_s']:.0f} s (load average {section['load_after']})"
                     + (f"; stored as {key} (measured on a machine with CUDA)" if key != name else ""))
        if store_section(results, key, section, settings.log):
            save_results(json_path, results)  # now, so a run killed later keeps this section
        else:
            run_info["kept_previous"].append(key)
    run_info.update(duration_s=round(time.perf_counter() - run_started, 1), load_after=load_average())
    results["last_run"] = run_info
    # the report's header and Machine table describe the last full measurement: a --quick smoke run of every
    # section (whose figures are kept out of the results) took them over
    if set(args.names) == set(SECTIONS) and not args.quick:
        results["full_run"] = run_info

    from .report import render

    save_results(json_path, results)
    atomic_write_text(out_path, render(results, json_path))
    settings.log(f"wrote {out_path} and {json_path} in {run_info['duration_s']:.0f} s")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    sys.exit(main())
