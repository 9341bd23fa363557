"""Several training runs side by side, from their logs: accuracy curves and a table of final numbers.

A study (the ViT paper's hybrid-vs-plain data scaling, a learning-rate sweep, seeds) is a set of runs
that differ in a few settings. This reads each ``RUN/metrics.jsonl`` (the "train" and "eval" rows
both trainers write) and the run's settings (``RUN/train_config.json``, or for older runs the
``train_config`` saved in its newest checkpoint), finds the settings
that differ between the runs, and writes

- ``runs.png``: the validation metric against the step (solid, markers) and the training accuracy
  (dashed, same colour) for every run; with ``panel_by`` one panel per value of that setting (e.g.
  ``subset_fraction``), so that runs to be compared share an axis;
- ``runs.json``: per run the final and best validation metric (and its step), the final training
  accuracy (mean over the last ``train_window`` logged values' steps, the same span of steps for every run
  compared, whatever its --log-every), the train-minus-validation gap (null for
  a metric that is not an accuracy: train accuracy minus a loss is no gap), the logged wall time, and
  the differing settings; with ``group_by`` also the mean and spread of the final metric over runs
  that share those settings (seeds).

  kizuna analyze compare-runs runs/vit-0.1-s0 runs/hyb-0.1-s0 ... --panel-by subset_fraction --out fig/
"""
from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path
from statistics import mean, median, stdev
from typing import Sequence

from kizuna.train.checkpointing import CheckpointManager, lower_is_better, read_train_state
from kizuna.train.logging import read_metrics

__all__ = ["load_run", "compare_runs"]

# Settings that differ between any two runs without telling them apart as an experiment.
_IGNORED = {"out", "resume", "progress", "config", "log_every", "save_every", "keep_last", "eval_every", "threads",
            "workers", "device"}


def _train_config(run: Path) -> dict:
    """The run's settings: ``RUN/train_config.json`` (written when training starts), else the
    ``train_config`` saved with its newest checkpoint (runs from before that file), else {}."""
    written = run / "train_config.json"
    if written.is_file():
        try:
            config = json.loads(written.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ValueError(f"{written}: not JSON ({e.msg}, line {e.lineno})") from e
        except RecursionError:
            raise ValueError(f"{written}: not a run's settings (JSON nested too deep to read)") from None
        return _settings(config, written, "fix it, or delete it to use the newest checkpoint's train_config")
    ckpt = CheckpointManager(run).latest()
    state_file = ckpt / "train_state.pt" if ckpt is not None else None
    if state_file is None or not state_file.is_file():
        return {}
    # a damaged state file must not pass for a run without settings; named as a resume names it (an empty one
    # was "cannot be read as a kizuna training state ()", junk a bare KeyError's number)
    state = read_train_state(ckpt, mmap=True)
    config = state.get("train_config")
    return {} if config is None else _settings(config, f"{state_file} (its train_config)",
                                               "write the settings to RUN/train_config.json, which is read first")


def _settings(config, source, what_to_do: str) -> dict:
    """``config`` when it is an object of settings; anything else (a list, null, a number) is a ValueError
    naming ``source`` (it failed later as "'list' object has no attribute 'get'", naming no file)."""
    if not isinstance(config, dict):
        raise ValueError(f"{source}: the run's settings must be a JSON object ({{\"model\": ..., ...}}), got a "
                         f"{type(config).__name__}: {_short(config)}; {what_to_do}")
    if config.get("init"):  # a fine-tune's model is the checkpoint it started from: its "model" is the unused
        config = {**config, "model": str(config["init"])}  # default preset (a fine-tuned Ti/8 was grouped as S/4)
        # its model_overrides built nothing either (a --config recipe's were recorded, and compare-runs listed them
        # as a difference between fine-tunes of one checkpoint): at the default, as a fine-tune records them now
        config["model_overrides"] = {}
    return config


def _step(x) -> int | None:
    """A logged step as an int: an int, or a whole float (10.0: a log rewritten by a tool that stores numbers
    as floats); None for anything else (10.5, a string, null, true)."""
    if isinstance(x, bool):
        return None
    if isinstance(x, int):
        return x
    return int(x) if isinstance(x, float) and x.is_integer() else None


def _accuracy_like(metric: str) -> bool:
    """Whether ``metric`` is an accuracy, so that final train accuracy minus it is a generalisation gap
    (train accuracy minus a loss or a rank is no number at all)."""
    name = metric.lower()
    return not lower_is_better(metric) and name.endswith(("top1", "acc", "accuracy"))


def _value(x) -> float:
    """A logged number as a float; NaN for a diverged run's NaN or a null."""
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else math.nan


def _current_branch(records: list[dict], log: Path) -> list[dict]:
    """The rows of the run as it stands: a train or eval row at a step below one logged before it starts a new
    branch there (a resume, or a fresh run into the folder: before 2026-12-05 one appended to metrics.jsonl), and
    the earlier rows from that step on are the abandoned branch's. Merged by step (the later record winning),
    an abandoned branch's steps past where the run now stands were its final value (another run's 20% at step 6
    for a run whose own ended at 12.5% at step 3). Said when such rows are left out."""
    kept: list[dict] = []
    last = None  # the last train/eval step: the furthest since the last branch, as steps only rise within one
    for r in records:
        step = _step(r.get("step")) if r.get("kind") in ("train", "eval") else None
        if step is not None:
            if last is not None and step < last:
                kept = [k for k in kept if k.get("kind") not in ("train", "eval") or (_step(k.get("step")) or 0) < step]
            last = step
        kept.append(r)
    kept_ids = {id(r) for r in kept}
    relogged = {(r.get("kind"), _step(r.get("step"))) for r in kept}
    dropped = [r for r in records if r.get("kind") in ("train", "eval") and id(r) not in kept_ids
               and (r.get("kind"), _step(r.get("step"))) not in relogged]
    if dropped:  # (rows a resume logged again replace their own step as before, without a word)
        steps = sorted({_step(r.get("step")) for r in dropped})
        warnings.warn(f"{log}: {len(dropped)} train/eval row(s) at steps {steps[0]}..{steps[-1]} that the run "
                      "went back before are left out: an abandoned branch (a resume from an earlier checkpoint) or "
                      "an earlier run in this folder (kizuna before 2026-12-05 appended to metrics.jsonl)",
                      stacklevel=3)
    return kept


def load_run(run: str | Path, metric: str = "val_top1", train_window: int = 5, mode: str = "auto",
             window_steps: int | None = None) -> dict:
    """One run's curves and summary numbers (see the module docstring). A NaN or null value (a run that
    diverged) stays in the curve and may be the final value; the best is taken over the finite ones. The final
    train accuracy averages the last ``window_steps`` training steps (default: ``train_window`` logged values'
    worth, at the run's logging interval), each logged value weighted by the steps it covers."""
    if train_window < 1:
        raise ValueError(f"train_window must be >= 1, got {train_window}")
    run = Path(run)
    log = run / "metrics.jsonl"
    if not log.is_file():
        raise FileNotFoundError(f"{run}: no metrics.jsonl (expected {log}); pass the --out folder of a kizuna "
                                "train or kizuna vit train run")
    records = _current_branch(read_metrics(log), log)
    # train and eval rows whose step is not a whole number cannot be placed on the curve: named, not dropped silently
    unusable = [r for r in records if r.get("kind") in ("train", "eval") and _step(r.get("step")) is None]
    if unusable:
        shown = ", ".join(f"{r['kind']} step {json.dumps(r.get('step'))}" for r in unusable[:5])
        warnings.warn(f"{log}: skipped {len(unusable)} row(s) whose step is not a whole number ({shown}"
                      f"{', ...' if len(unusable) > 5 else ''})", stacklevel=2)
    # A resumed run logs again the steps after its checkpoint: the last record of a (kind, step) wins.
    latest = {(r.get("kind"), _step(r.get("step"))): {**r, "step": _step(r.get("step"))}
              for r in records if _step(r.get("step")) is not None}
    rows = sorted(latest.values(), key=lambda r: r["step"])
    evals = [r for r in rows if r.get("kind") == "eval" and metric in r]
    if not evals:
        keys = sorted({k for r in rows if r.get("kind") == "eval" for k in r} - {"kind", "step", "time", "elapsed_s"})
        skipped = sum(r.get("kind") == "eval" for r in unusable)
        raise ValueError(f"{log}: no eval rows with {metric!r}" +
                         (f"; its eval rows have: {', '.join(keys)}" if keys else
                          f" ({skipped} eval row(s) were skipped: their step is not a whole number)" if skipped else
                          " (the run logged no evaluation)"))
    train = [r for r in rows if r.get("kind") == "train" and "train_top1" in r]
    # the logged time in segments split where the run was resumed (kind "resume"): a resumed run's last record
    # minus its first counted the hours it stood still between the kill and the resume. A run's "start" record
    # (logs from 2026-12-07 on) begins its first segment: from its first record, the time before the first
    # --log-every steps was missing (0.4 s of 8.3 s at --log-every 100)
    # Within a segment the records' elapsed_s (a monotonic clock, logs from 2026-12-07 on) where every record has
    # it: the wall-clock "time" moves with clock steps (a +1 h NTP step made a 7-s run 60 minutes)
    segments, current = [], []
    for r in records:
        if r.get("kind") in ("resume", "start") and current:
            segments.append(current)
            current = []
        if isinstance(r.get("time"), (int, float)):
            current.append(r)
    segments.append(current)

    def seconds(segment) -> float:
        monotonic = all(math.isfinite(_value(r.get("elapsed_s"))) for r in segment)
        clock = [r["elapsed_s" if monotonic else "time"] for r in segment]
        return max(clock) - min(clock)

    logged_seconds = sum(seconds(seg) for seg in segments if len(seg) > 1)
    values = [_value(r[metric]) for r in evals]
    finite = [(v, r["step"]) for v, r in zip(values, evals) if math.isfinite(v)]
    lowest = lower_is_better(metric, mode)
    best = (min if lowest else max)(finite, key=lambda p: p[0]) if finite else (math.nan, None)
    final = values[-1]
    summary = {
        "run": str(run),
        "eval_steps": [r["step"] for r in evals],
        "eval": values,
        "train_steps": [r["step"] for r in train],
        "train_top1": [_value(r["train_top1"]) for r in train],
        # where the first training record's steps begin: the log's start, or the resume it begins with (a run
        # resumed from a checkpoint of no run folder logs from there: its first record was counted from step 0)
        "train_from": max([r["step"] for r in rows if r.get("kind") in ("start", "resume")
                           and train and r["step"] < train[0]["step"]], default=0),
        "final": final,
        "final_step": evals[-1]["step"],
        "best": best[0],
        "best_step": best[1],
        "lower_is_better": lowest,
        "wall_minutes_logged": logged_seconds / 60 if any(len(seg) > 1 for seg in segments) else None,
        "config": _train_config(run),
    }
    steps = [r["step"] for r in train]
    return _set_final_train(summary, window_steps or train_window * _log_interval(steps), metric)


def _with_defaults(config: dict) -> dict:
    """A run's settings with those its kizuna did not have yet at their defaults (the trainer's config class,
    by the run's kind): a run from before `act` or `augment_on` existed differed from today's in them, and
    --group-by/--colour-by on one was refused for it, though the runs were made alike."""
    if not config:
        return config
    import dataclasses

    from kizuna.train.config import TrainConfig
    from kizuna.train.supervised import SupervisedConfig

    fields = {kind: dataclasses.fields(kind) for kind in (TrainConfig, SupervisedConfig)}
    kind = max(fields, key=lambda k: len(set(config) & {f.name for f in fields[k]}))  # the one it has most of
    defaults = {f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
                for f in fields[kind]
                if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING}
    filled = json.loads(json.dumps(defaults, default=str))  # tuples as the lists a saved config holds
    return {**filled, **config}


def _differing(configs: list[dict]) -> list[str]:
    from kizuna.train.config import RECORDED_ONLY

    keys = sorted(set().union(*configs) - _IGNORED) if configs else []
    # a recorded-only value (precision_used) that one run's kizuna did not record yet is unknown, not different
    keys = [k for k in keys if k not in RECORDED_ONLY or all(k in c for c in configs)]
    return [k for k in keys if len({json.dumps(c.get(k), sort_keys=True) for c in configs}) > 1]


def _short(value) -> str:
    text = json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else str(value)
    return _middle_cut(text, 40)  # the end kept: paths and overrides differ there


def _run_labels(runs: Sequence[str]) -> list[str]:
    """Each run's folder name, or where names clash (lr1e-3/seed0, lr3e-3/seed0: both "seed0" in the table, the
    legend and a group's runs) the fewest trailing path parts that tell them apart. "." is the folder it names; a
    link keeps its own name (resolved, two links to x/run and y/run were "run")."""
    parts = [Path(os.path.abspath(r)).parts for r in runs]
    labels = [p[-1] for p in parts]
    for depth in range(2, max(map(len, parts), default=1) + 1):
        clashing = {label for label in labels if labels.count(label) > 1}
        if not clashing:
            break
        labels = [str(Path(*p[-depth:])) if label in clashing else label for p, label in zip(parts, labels)]
    return labels


def _spread(finals: list[float], metric: str) -> dict:
    """Mean, std, min and max of a group's final values; all NaN (null in runs.json) when one run's final
    value is NaN (a diverged run): stdev raises on a NaN, and min/max would depend on the runs' order.

    The std is the sample standard deviation (n - 1: the runs are a sample of seeds; the population one gave
    |a - b| / 2 for two seeds, not |a - b| / sqrt 2), and None for a group of one run, which measured no
    spread (it read 0.0)."""
    names = [f"{k}_final_{metric}" for k in ("mean", "std", "min", "max")]
    if not all(math.isfinite(v) for v in finals):
        return dict.fromkeys(names, math.nan)
    return dict(zip(names, (mean(finals), stdev(finals) if len(finals) > 1 else None, min(finals), max(finals))))


def _log_interval(steps: list[int]) -> int:
    """The steps between a run's training records (its --log-every), as the median gap: a last record
    written at the run's end may cover fewer."""
    gaps = [b - a for a, b in zip(steps, steps[1:])]
    return max(1, int(median(gaps))) if gaps else max(1, steps[0] if steps else 1)


def _logged_every(run: dict) -> int:
    """A run's --log-every, as its settings say (records at its checkpoints too, --save-every 6 beside
    --log-every 4, halved the median gap, and the window with it), else the median gap of its records."""
    every = (run.get("config") or {}).get("log_every")
    if isinstance(every, int) and not isinstance(every, bool) and every >= 1:
        return every
    return _log_interval(run["train_steps"])


def _set_final_train(run: dict, window_steps: int, metric: str) -> dict:
    """``run``'s final training accuracy, the mean over its last ``window_steps`` steps, and the gap. Each record
    is the mean over the steps since the one before it, so it counts for those steps (in part where the window
    starts inside it): the mean of the last N records covered N x --log-every steps, and two runs logging at
    other intervals were compared over other spans of training (5 steps against 100) while "settings that
    differ" said none."""
    steps, values = run["train_steps"], run["train_top1"]
    start = steps[-1] - window_steps if steps else 0
    total = weight = 0.0
    for prev, step, value in zip([run.get("train_from", 0), *steps], steps, values):
        covered = step - max(prev, start)
        if covered > 0 and math.isfinite(value):
            total, weight = total + covered * value, weight + covered
    final_train = total / weight if weight else None
    run["final_train_top1"] = final_train
    # train accuracy minus validation accuracy; None for a metric that is not an accuracy (a loss, a rank)
    run["generalisation_gap"] = (final_train - run["final"] if final_train is not None and math.isfinite(run["final"])
                                 and _accuracy_like(metric) else None)
    return run


def compare_runs(runs: Sequence[str | Path], out: str | Path, metric: str = "val_top1",
                 labels: Sequence[str] | None = None, panel_by: str | None = None,
                 group_by: Sequence[str] = (), train_window: int = 5, title: str | None = None,
                 colour_by: str | None = None, mode: str = "auto") -> dict:
    """-> runs.png / runs.json for ``runs`` (see the module docstring). ``labels`` name the runs in the
    figure (default: the run folders' names); runs with the same value of the setting ``colour_by``
    share a colour."""
    from .figures import plot_runs
    from .report import _write, path_list

    runs = path_list(runs)
    if not runs:
        raise ValueError("compare-runs needs at least one run folder")
    # one run folder named twice (runs/s1 and ./runs/s1/, overlapping globs) counted twice in its group's mean
    # and spread (a made-up +- 0.0000 for one run): refused, naming both spellings
    seen: dict[str, str] = {}
    for r in runs:
        key = os.path.realpath(r)
        if key in seen:
            raise ValueError(f"run {r} is {seen[key]} given again: name each run once")
        seen[key] = str(r)
    if labels is not None and len(labels) != len(runs):
        raise ValueError(f"--labels gave {len(labels)} names for {len(runs)} runs")
    loaded = [load_run(r, metric, train_window, mode) for r in runs]
    # one span of training for every run's final train accuracy: train_window values of the run that logs
    # least often (runs logging more often average more values over the same steps)
    window_steps = train_window * max(_logged_every(r) for r in loaded)
    for r in loaded:
        _set_final_train(r, window_steps, metric)
    for r, label in zip(loaded, labels or _run_labels([r["run"] for r in loaded])):
        r["label"] = label
    settings = [_with_defaults(r["config"]) for r in loaded]  # compared as today's kizuna would have set them
    differing = _differing(settings)
    # a setting named as its flag is spelt (subset-fraction) is the saved key (subset_fraction): it was refused
    panel_by, colour_by = (k.replace("-", "_") if k else k for k in (panel_by, colour_by))
    group_by = [k.replace("-", "_") for k in group_by]
    for key in [k for k in (panel_by, colour_by) if k] + list(group_by):
        missing = [r["run"] for r, c in zip(loaded, settings) if key not in c]
        if missing:
            raise ValueError(f"setting {key!r} is not in the saved train_config of {', '.join(missing)} "
                             "(runs with neither train_config.json nor a checkpoint have none; the settings the runs differ in are: "
                             f"{', '.join(differing) or 'none'})")
    for r, c in zip(loaded, settings):
        r["settings"] = {k: c.get(k) for k in differing}
        if colour_by:
            r["colour_key"] = json.dumps(c[colour_by], sort_keys=True)
    groups = []
    if group_by:
        keyed: dict[str, list[dict]] = {}
        for r, c in zip(loaded, settings):
            keyed.setdefault(json.dumps({k: c[k] for k in group_by}, sort_keys=True), []).append(r)
        for key, members in keyed.items():
            groups.append({"settings": json.loads(key), "runs": [m["label"] for m in members],
                           **_spread([m["final"] for m in members], metric)})
    # keyed by the whole value, titled by its shortened text: keyed by the text cut to 40 characters, values
    # differing past the cut (long data paths, model_overrides, a fine-tune's checkpoint path) shared a panel
    keyed_panels: dict[str, list[dict]] = {}
    for r, c in zip(loaded, settings):
        keyed_panels.setdefault(json.dumps(c[panel_by], sort_keys=True, default=str) if panel_by else "",
                                []).append(r)
    panels: dict[str, list[dict]] = {}
    for key, members in keyed_panels.items():
        title = f"{panel_by} = {_short(json.loads(key))}" if panel_by else ""
        if title in panels:  # two values alike but in their cut middles
            title += f" ({len(panels) + 1})"
        panels[title] = members
    out = Path(out)
    dashed = any(r.get("train_top1") for r in loaded)  # `kizuna train` logs no training accuracy: no dashed line
    figure = plot_runs(panels, out / "runs.png", metric_name=metric,
                       title=title or f"{len(loaded)} run{'s' if len(loaded) != 1 else ''}: {metric}"
                       + (" (solid) and training accuracy (dashed)" if dashed else ""))
    numbers = {
        "metric": metric,
        "differing_settings": differing,
        "runs": [{k: v for k, v in r.items() if k not in ("config", "colour_key")} for r in loaded],
        "groups": groups,
        "figures": [figure.name],  # beside runs.json: the folder can be moved
    }
    return _write(out, "runs", numbers)


def _middle_cut(text: str, width: int) -> str:
    """``text`` in at most ``width`` characters: a longer one loses its middle, not its end, so run names that
    share a long start (..._seed0, ..._seed1) stay told apart."""
    from kizuna.apps.common import display_width

    if display_width(text) <= width:
        return text
    # by the columns the characters take (a CJK label twice as wide as its length shifted the numbers)
    head = ""
    for c in text:
        if display_width(head + c) > (width - 1) // 2:
            break
        head += c
    tail = ""
    for c in reversed(text[len(head):]):
        if display_width(head) + display_width(c + tail) > width - 1:
            break
        tail = c + tail
    return head + "…" + tail


def format_table(numbers: dict) -> str:
    """A plain-text table of the runs' final numbers (what the CLI prints)."""
    metric = numbers["metric"]
    lowest = numbers["runs"] and numbers["runs"][0].get("lower_is_better")
    # as wide as the longest label (28 to 60 characters); a longer one is cut in the middle
    from kizuna.apps.common import display_width, table_cell

    labels = [table_cell(r["label"]) for r in numbers["runs"]]  # (a line break split the row, a tab shifted it)
    w = min(60, max([28, *map(display_width, labels)]))
    lines = [f"{'run':<{w}} {'final ' + metric:>16} {('lowest' if lowest else 'best') + ' (step)':>18} "
             f"{'train acc':>10} {'gap':>7}"]
    for r, label in zip(numbers["runs"], labels):
        train = "-" if r["final_train_top1"] is None else f"{r['final_train_top1']:.3f}"
        gap = "-" if r["generalisation_gap"] is None else f"{r['generalisation_gap']:+.3f}"
        best = f"{r['best']:.4f} ({r['best_step']})" if r["best_step"] is not None else "-"
        final = "nan" if r["final"] is None else f"{r['final']:.4f}"  # None: NaN in the log (runs.json is strict JSON)
        shown = _middle_cut(label, w)
        shown += " " * max(0, w - display_width(shown))  # padded by display width (a CJK label shifted its numbers)
        lines.append(f"{shown} {final:>16} {best:>18} {train:>10} {gap:>7}")
    for g in numbers["groups"]:
        m, s = (g[f"{k}_final_{metric}"] for k in ("mean", "std"))
        spread = ("nan (a run's final value is NaN)" if m is None else f"{m:.4f} (one run: no spread)"
                  if len(g["runs"]) == 1 else f"{m:.4f} +- {s:.4f}")
        lines.append(f"group {json.dumps(g['settings'], sort_keys=True)}: mean {spread} over {len(g['runs'])} runs")
    return "\n".join(lines)
