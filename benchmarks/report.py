"""results.json -> BENCHMARKS.md."""
from __future__ import annotations

import os
from pathlib import Path

from .common import NOISY, REPO, Timing, md_table

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
- Every figure the suite times is the **median of at least 5 timed runs** per contender, after untimed
  warm-up runs: 2 per contender (1 with `--quick`){warmup}.{extension}{fast_calls}
- Contenders are timed **alternately in one process** (kizuna, HF, kizuna, HF, ...), so load from
  other processes hits both alike; ratios are ratios of the two medians. "spread" is
  (max - min) / median of the timed runs.
- A timing whose middle runs (all but the fastest and the slowest) still spread by more than {noisy:.0%} of
  its median when timing stopped is listed as **noisy** under its section (and marked "(noisy)" in the
  tables of sections measured since): its median is less certain than the others'.
- Matmul peaks are the best of several runs. Sections that time another way say how in their notes
  (`allocator`: steps in child processes; `train_throughput`'s trainer row: the median over the steps of
  one run; `bf16`'s pretrained-MiniLM check: one pass each).
- fp32 on the CPU (except in the `bf16` section), torch's default thread count (all cores), `torch.inference_mode()` for encoding.
- kizuna and Hugging Face `transformers.CLIPModel` hold **identical weights**: a random-init
  `CLIPModel` with OpenAI's ViT-B shape (QuickGELU, as OpenAI trained it) is saved with
  `save_pretrained` and loaded with `kizuna.create_model(folder)`; the largest output difference is
  reported. HF runs with its default attention implementation (reported; `sdpa`)."""
EXTENSION = """
  When a contender's runs still disagree after dropping its fastest and slowest (the middle runs spread
  by more than {noisy:.0%} of the median: a burst of load on the shared machine hit two runs), whole rounds are
  added, up to **{max_reps} runs**{which}; the JSON file lists every run."""
# Where sections depart from the default warm-up and extra-round rules (common.interleaved's arguments in
# each module: keep these in step with the code).
WARMUP_EXCEPTIONS = {
    "train_step": "`train_step` counts the step whose first losses it compares as one of them",
    "bf16": "`bf16` runs 1 before its training step",
    "dataloading": "`dataloading` runs 1 (a timed run is a whole pass over the images)",
    "eval_throughput": "`eval_throughput` runs 1 (a timed run is a whole evaluation)",
    "gpu_train_step": "`gpu_train_step` runs its first step (where `torch.compile` compiles) before them",
}
NO_EXTRA_ROUNDS = {"bf16": "`bf16`'s training step, always 5 runs"}
FAST_CALLS = {
    "encode": "`encode` at batch 1 repeats the call within each timed run and reports the mean per call: as many "
              "calls (at most 50) as one HF call, timed cold before the warm-up, takes to fill about a second, so "
              "HF's runs last about a second or less and kizuna's, where faster, less",
    "gemm_library": "`gemm_library` does the same on one oneDNN call, to about 0.3 s per run (blocks) and 0.2 s "
                    "(plain linears)",
}


def _names(sections: list[dict]) -> str:
    return ", ".join(f"`{s['name']}`" for s in sections)


def method(sections: dict) -> str:
    """The method paragraph, true to the sections at hand: the extra-rounds rule where they were measured
    with it, and the sections that depart from the default warm-up, rounds and run length."""
    present = {s.get("name") for s in sections.values()}
    measured = [s for s in sections.values() if not s.get("quick")]
    quick = [s for s in sections.values() if s.get("quick")]
    extended = [s for s in measured if (s.get("max_reps") or 0) > (s.get("reps") or 5)]
    before_rule = [s for s in measured if s not in extended]
    warmup = "; ".join(text for name, text in WARMUP_EXCEPTIONS.items() if name in present)
    if extended:
        without = [text for name, text in NO_EXTRA_ROUNDS.items() if any(s["name"] == name for s in extended)]
        if quick:
            without.append(f"`--quick` smoke runs ({_names(quick)}), always 5 runs")
        if before_rule:
            without.append(f"{_names(before_rule)}, measured before this rule")
        which = f" (not in {'; '.join(without)})" if without else ""
        extension = EXTENSION.format(noisy=NOISY, max_reps=max(s["max_reps"] for s in extended), which=which)
    elif quick:
        extension = " `--quick` smoke runs take exactly 5 runs, without extra rounds."
    else:
        extension = ""
    fast = [text for name, text in FAST_CALLS.items() if name in present]
    fast_calls = ("\n  " + "; ".join(fast) + ".") if fast else ""
    return METHOD.format(warmup="; " + warmup if warmup else "", extension=extension, fast_calls=fast_calls,
                         noisy=NOISY)


def _load_note(sec: dict) -> str:
    lb, la = sec.get("load_before") or [], sec.get("load_after") or []
    f = lambda x: " / ".join(f"{v:.2f}" for v in x) if x else "?"
    return f"load average (1/5/15 min) {f(lb)} before, {f(la)} after"


# What must match for two sections' figures to be comparable (same machine kind and software).
MACHINE_KEYS = ("cpu_model", "cpu_capability", "usable_cores", "torch", "torch_threads")


def _machine_differences(sec: dict, machine: dict) -> list[str]:
    """How the machine ``sec`` was measured on differs from ``machine`` (nothing where either is unknown)."""
    own = sec.get("machine")
    if not own or not machine:
        return []
    return [f"{k} {own.get(k)!s} (not {machine.get(k)!s})" for k in MACHINE_KEYS if own.get(k) != machine.get(k)]


def _machine_note(sec: dict, machine: dict) -> str:
    """A warning when a section was measured on another machine than the one the report describes."""
    differs = _machine_differences(sec, machine)
    if not differs:
        return ""
    return ("\n\n> **Measured on a different machine** from the one described at the top: "
            + ", ".join(differs) + ". Compare its figures with other sections' only as ratios.")


# Identifying fields of a list entry in a section's data (a table row), used to name its noisy timings.
_ROW_FIELDS = ("variant", "tower", "contender", "what", "size", "width", "tokens", "batch", "rows", "workers")
_UNNAMED = ("rows", "timings", "timing", "shapes")  # containers whose name says nothing about the timing


def _row_name(entry: dict) -> str:
    named = ("variant", "tower", "contender", "what")
    return " ".join(str(entry[k]) if k in named else f"{k} {entry[k]}" for k in _ROW_FIELDS
                    if isinstance(entry.get(k), (str, int)) and not isinstance(entry.get(k), bool))


def noisy_timings(data, path: tuple[str, ...] = ()) -> list[tuple[str, float]]:
    """(name, spread) of every timing recorded in a section's ``data`` (a dict with ``runs_s``) whose runs
    were still noisy when timing stopped (``common.Timing.noisy``), named by its place in the data."""
    found = []
    if isinstance(data, dict):
        if isinstance(data.get("runs_s"), list) and data["runs_s"]:
            timing = Timing(data["runs_s"])
            if timing.noisy:
                found.append((" · ".join(p for p in path if p and p not in _UNNAMED) or "the timing", timing.spread))
            return found
        for key, value in data.items():
            found += noisy_timings(value, path + (str(key),))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            name = _row_name(value) if isinstance(value, dict) else ""
            found += noisy_timings(value, path + (name or str(i),))
    return found


def _noisy_note(sec: dict) -> str:
    noisy = noisy_timings(sec.get("data") or {})
    if not noisy:
        return ""
    return (f"> **Noisy** (middle runs still spread by more than {NOISY:.0%} of the median when timing stopped; "
            "these medians are less certain than the others): "
            + "; ".join(f"{name} (spread {spread:.0%})" for name, spread in noisy) + ".")


def _section(sec: dict, machine: dict | None = None, key: str | None = None) -> str:
    stored_apart = key is not None and key != sec["name"]
    head = f"## {sec.get('title', sec['name'])}" + (" (on a GPU machine)" if stored_apart else "")
    quick = "\n\n> **--quick smoke run: tiny sizes, these figures are not measurements.**" if sec.get("quick") else ""
    stored = f", stored as `{key}`" if stored_apart else ""
    meta = (f"`{sec['command']}` (section `{sec['name']}`{stored}), started {sec['started']}, took "
            f"{sec['duration_s']:.0f} s; {sec.get('threads', '?')} torch threads; {_load_note(sec)}.")
    parts = [head + quick + _machine_note(sec, machine or {}), meta, section_md(sec)]
    if sec.get("notes"):
        parts.append("\n".join(f"- {n}" for n in sec["notes"]))
    parts.append(_noisy_note(sec))
    return "\n\n".join(p for p in parts if p)


def section_md(sec: dict) -> str:
    """A section's tables. ``gpu_train_step``'s are rendered again from its recorded data
    (``gpu_train_step.section_tables``), as its target rows are; every other section's are the ones it recorded."""
    data = sec.get("data") or {}
    if sec.get("name") == "gpu_train_step" and data.get("timings") and data.get("matmul_peak_gflops"):
        from .gpu_train_step import section_tables

        return section_tables(data)
    return sec.get("md", "")


def section_targets(sec: dict) -> list[dict]:
    """A section's target rows. ``gpu_train_step``'s are derived again from its recorded data
    (``gpu_train_step.target_rows``), so which definition decides, and the other definition's figure, follow
    the code without another lease of a GPU; every other section's are the rows it recorded."""
    if sec.get("name") == "gpu_train_step" and (sec.get("data") or {}).get("timings"):
        from .gpu_train_step import target_rows

        return target_rows(sec["data"], quick=bool(sec.get("quick")))
    return sec.get("targets", [])


def _verdict(target: dict, sec: dict) -> str:
    if sec.get("quick"):
        return "no verdict: `--quick` smoke run"
    return "met" if target["met"] else "**missed**"


def max_load(run: dict, sections: list[dict]) -> float:
    """The highest 1-minute load average recorded by the run and by each of ``sections`` (before and after)."""
    readings = [run.get("load_before"), run.get("load_after")]
    readings += [sec.get(k) for sec in sections for k in ("load_before", "load_after")]
    return max((r[0] for r in readings if r), default=0.0)


def render(results: dict, json_path: Path | None = None) -> str:
    sections = results.get("sections", {})
    run = results.get("full_run") or results.get("last_run") or {}
    m = run.get("machine", {})
    out = ["# kizuna benchmarks"]
    json_rel = os.path.relpath(json_path, REPO) if json_path else "benchmarks/results.json"
    if results.get("full_run"):
        fr = results["full_run"]
        # older files recorded an `--only` run as the full run: "the whole suite" only where it ran every section
        whole = "--only" not in fr["command"]
        out.append(
            f"Produced by `{fr['command']}`"
            f"{' (what `make bench` runs)' if fr['command'].strip().endswith('-m benchmarks') else ''} on {fr['started']}; "
            f"{'the whole suite' if whole else 'the run'} took "
            f"{fr['duration_s'] / 60:.1f} min. Raw numbers (every timed run) are in `{json_rel}`."
        )
    else:
        out.append(f"Raw numbers (every timed run) are in `{json_rel}`.")
    order = sorted(sections, key=lambda k: (ORDER.index(sections[k]["name"]) if sections[k]["name"] in ORDER
                                            else len(ORDER), sections[k]["name"], k))
    fr = results.get("full_run") or {}
    # another command, or kept from before the run (a section that skipped in it keeps the earlier measurement,
    # made by the same command on another day)
    apart = [k for k in order if fr and (sections[k].get("command") != fr["command"]
                                         or k in (fr.get("kept_previous") or ())
                                         or sections[k].get("started", "") < fr.get("started", ""))]
    if apart:
        out.append("Sections measured apart from the full run (re-measured, added later or on another machine) carry "
                   "their own command below: " + ", ".join(f"`{k}`" for k in apart) + ".")

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
    # Only the sections measured on the machine described above: another machine's load says nothing of this one.
    lb = max_load(run, [s for s in sections.values() if not _machine_differences(s, m)])
    cores = m.get("usable_cores") or 1
    out.append(
        f"> **The machine is shared.** Other jobs (test suites, builds of other engineers) may have been running "
        f"during the measurements: the 1-minute load average reached {lb:.2f} on {cores} cores. Absolute rates "
        f"are therefore pessimistic and noisy (see each table's spread); the kizuna/HF ratios are more robust "
        f"because the contenders were interleaved. Per-section load averages are given below."
    )
    out.append("## Method\n\n" + method(sections))

    # a NAME@gpu section's rows name the GPU machine: the same target text appeared twice, met and missed
    trows = [[t["target"] + (" (on the GPU machine)" if k != sections[k]["name"] else ""), t["value"],
              _verdict(t, sections[k])] for k in order for t in section_targets(sections[k])]
    if trows:
        out.append("## Targets\n\n" + md_table(["target", "measured", ""], trows, align="lrl"))

    for key in order:
        out.append(_section(sections[key], m, key))
    analysis = analysis_path(json_path)
    if analysis.is_file():
        out.append(analysis.read_text().strip())
    return "\n\n".join(out) + "\n"
