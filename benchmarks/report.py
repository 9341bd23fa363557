"""results.json -> BENCHMARKS.md."""
from __future__ import annotations

import os
from pathlib import Path

from .common import REPO, md_table

ORDER = ["encode", "utilization", "fusion", "gemm_library", "cpu_switches", "train_step", "allocator", "bf16", "gpu_train_step", "train_throughput", "tokenizer", "dataloading", "cifar_augment",
         "eval_throughput", "profile"]  # the report's order; a section missing here comes after these
ANALYSIS = Path(__file__).with_name("analysis.md")  # the hand-written findings of BENCHMARKS.md


def analysis_path(json_path: Path | None) -> Path:
    """The hand-written findings that go with a report: ``benchmarks/analysis.md`` for BENCHMARKS.md,
    ``NAME-analysis.md`` beside ``NAME.json`` for a report written elsewhere (another machine's run), so
    one machine's findings never end up under another machine's figures."""
    default = REPO / "benchmarks" / "results.json"
    if json_path is None or Path(json_path).resolve() == default.resolve():
        return ANALYSIS
    return Path(json_path).with_name(Path(json_path).stem + "-analysis.md")

METHOD = """\
- Every figure is the **median of 5 timed runs** after 2 untimed warm-up runs per contender (1 with
  `--quick`).{extension} A timed run of a fast call (batch 1) repeats it until the run lasts about a second and
  reports the mean per call.
- Contenders are timed **alternately in one process** (kizuna, HF, kizuna, HF, ...), so load from
  other processes hits both alike; ratios are ratios of the two medians. "spread" is
  (max - min) / median of the timed runs.
- fp32 on the CPU (except in the `bf16` section), torch's default thread count (all cores), `torch.inference_mode()` for encoding.
- kizuna and Hugging Face `transformers.CLIPModel` hold **identical weights**: a random-init
  `CLIPModel` with OpenAI's ViT-B shape (QuickGELU, as OpenAI trained it) is saved with
  `save_pretrained` and loaded with `kizuna.create_model(folder)`; the largest output difference is
  reported. HF runs with its default attention implementation (reported; `sdpa`)."""
EXTENSION = """
  When a contender's runs still disagree after dropping its fastest and slowest (the middle runs spread
  by more than 25% of the median: a burst of load on the shared machine hit two runs), whole rounds are
  added, up to **{max_reps} runs**{which}; the JSON file lists every run."""


def method(sections: dict) -> str:
    """The method paragraph; the extra-rounds rule only where sections were measured with it."""
    extended = [s for s in sections.values() if (s.get("max_reps") or 0) > (s.get("reps") or 5)]
    if not extended:
        return METHOD.format(extension="")
    which = "" if len(extended) == len(sections) else (
        " (sections " + ", ".join(f"`{s['name']}`" for s in extended) + "; the others were measured before this rule)")
    return METHOD.format(extension=EXTENSION.format(max_reps=max(s["max_reps"] for s in extended), which=which))


def _load_note(sec: dict) -> str:
    lb, la = sec.get("load_before") or [], sec.get("load_after") or []
    f = lambda x: " / ".join(f"{v:.2f}" for v in x) if x else "?"
    return f"load average (1/5/15 min) {f(lb)} before, {f(la)} after"


# What must match for two sections' figures to be comparable (same machine kind and software).
_MACHINE_KEYS = ("cpu_model", "cpu_capability", "usable_cores", "torch", "torch_threads")


def _machine_note(sec: dict, machine: dict) -> str:
    """A warning when a section was measured on another machine than the one the report describes."""
    own = sec.get("machine")
    if not own or not machine:
        return ""
    differs = [f"{k} {own.get(k)!s} (not {machine.get(k)!s})" for k in _MACHINE_KEYS if own.get(k) != machine.get(k)]
    if not differs:
        return ""
    return ("\n\n> **Measured on a different machine** from the one described at the top: "
            + ", ".join(differs) + ". Compare its figures with other sections' only as ratios.")


def _section(sec: dict, machine: dict | None = None) -> str:
    head = f"## {sec.get('title', sec['name'])}"
    quick = "\n\n> **--quick smoke run: tiny sizes, these figures are not measurements.**" if sec.get("quick") else ""
    meta = (f"`{sec['command']}` (section `{sec['name']}`), started {sec['started']}, took "
            f"{sec['duration_s']:.0f} s; {sec.get('threads', '?')} torch threads; {_load_note(sec)}.")
    parts = [head + quick + _machine_note(sec, machine or {}), meta, sec.get("md", "")]
    if sec.get("notes"):
        parts.append("\n".join(f"- {n}" for n in sec["notes"]))
    return "\n\n".join(p for p in parts if p)


def render(results: dict, json_path: Path | None = None) -> str:
    sections = results.get("sections", {})
    run = results.get("full_run") or results.get("last_run") or {}
    m = run.get("machine", {})
    out = ["# kizuna benchmarks"]
    json_rel = os.path.relpath(json_path, REPO) if json_path else "benchmarks/results.json"
    if results.get("full_run"):
        fr = results["full_run"]
        out.append(
            f"Produced by `{fr['command']}`"
            f"{' (what `make bench` runs)' if fr['command'].strip().endswith('-m benchmarks') else ''} on {fr['started']}; the whole suite took "
            f"{fr['duration_s'] / 60:.1f} min. Raw numbers (every timed run) are in `{json_rel}`."
        )
    else:
        out.append(f"Raw numbers (every timed run) are in `{json_rel}`.")
    later = [s for s in sections.values() if results.get("full_run") and s.get("command") != results["full_run"]["command"]]
    if later:
        out.append("Sections re-measured after the full run carry their own command below: "
                   + ", ".join(f"`{s['name']}`" for s in later) + ".")

    rows = [
        ["CPU", f"{m.get('cpu_model', '?')} ({m.get('cpu_capability', '?')} kernels in torch)"],
        ["cores", f"{m.get('usable_cores', '?')} usable ({m.get('logical_cores', '?')} logical)"],
        ["memory", f"{m.get('memory_gib', '?')} GiB"],
        ["torch", f"{m.get('torch', '?')}, {m.get('torch_threads', '?')} intra-op threads, oneDNN (mkldnn) "
                  f"{'available' if m.get('mkldnn') else 'absent'}"],
        ["transformers / tokenizers", f"{m.get('transformers', '?')} / {m.get('tokenizers', '?')}"],
        ["python / numpy", f"{m.get('python', '?')} / {m.get('numpy', '?')}"],
        ["load average (1/5/15 min)", f"{run.get('load_before', '?')} at the start, {run.get('load_after', '?')} at the end"],
    ]
    out.append("## Machine\n\n" + md_table(["", ""], rows, align="ll"))
    lb = max((run.get("load_before") or [0])[:1] + (run.get("load_after") or [0])[:1])
    cores = m.get("usable_cores") or 1
    out.append(
        f"> **The machine is shared.** Other jobs (test suites, builds of other engineers) may have been running "
        f"during the measurements: the 1-minute load average reached {lb:.2f} on {cores} cores. Absolute rates "
        f"are therefore pessimistic and noisy (see each table's spread); the kizuna/HF ratios are more robust "
        f"because the contenders were interleaved. Per-section load averages are given below."
    )
    out.append("## Method\n\n" + method(sections))

    order = [n for n in ORDER if n in sections] + sorted(n for n in sections if n not in ORDER)
    targets = [t for name in order for t in sections[name].get("targets", [])]
    if targets:
        trows = [[t["target"], t["value"], "met" if t["met"] else "**missed**"] for t in targets]
        out.append("## Targets\n\n" + md_table(["target", "measured", ""], trows, align="lrl"))

    for name in order:
        out.append(_section(sections[name], m))
    analysis = analysis_path(json_path)
    if analysis.is_file():
        out.append(analysis.read_text().strip())
    return "\n\n".join(out) + "\n"
