"""Metrics to JSONL (one object per line) and TensorBoard, and the run's settings to train_config.json,
from the main process only.

A resumed run appends to its OUT/metrics.jsonl (after :meth:`MetricLogger.drop_after`), so the log reads
as one run. A fresh run into a folder that already holds a metrics.jsonl starts a new one
(``MetricLogger(..., fresh=True)``): the earlier run's log is moved to ``metrics.jsonl.prev`` rather
than deleted, and readers of the folder (plots, reports, ``kizuna analyze compare-runs``) see one run.
A run's log and TensorBoard events are set aside with its checkpoints, as one unit with what else the trainer
writes in OUT (curves.png, a ViT's model/, the demo's report) (:func:`set_aside_with_checkpoints`); a log with
no checkpoints beside it never replaces the .prev log that checkpoints.prev has (it goes to
``metrics.jsonl.no-checkpoint``).
"""
from __future__ import annotations

import functools
import json
import math
import os
import shutil
import sys
import time
import warnings
from pathlib import Path

# a run's log: the records and the TensorBoard events, with what move messages call them
# OUT/metrics.branches/: the records a resume from an earlier step took out of metrics.jsonl, one file per such
# resume (a name of kizuna's own: a user's branches/ was moved aside as a run's log, then deleted)
BRANCHES = "metrics.branches"
_RUN_LOG = (("metrics.jsonl", "records"), ("tensorboard", "TensorBoard events"),
            (BRANCHES, "records of the branches resumes left"))
# where a fresh run puts a log that has no checkpoints beside it while checkpoints.prev is there
NO_CHECKPOINT = ".no-checkpoint"


def _has_records(path: Path) -> bool:
    """An earlier run's metrics.jsonl or tensorboard/ worth keeping (an empty one is no run)."""
    return path.is_file() and path.stat().st_size > 0 or path.is_dir() and any(path.iterdir())


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def set_aside_with_checkpoints(out_dir: str | Path, move_checkpoints, outputs=()):
    """A fresh run sets an earlier run's checkpoints aside (``move_checkpoints``, which moves OUT/checkpoints to
    checkpoints.prev): its metrics.jsonl and tensorboard/ go to .prev with them, and the .prev log of the run
    set aside before goes even when this one has none, so checkpoints.prev and the .prev log are always one
    run's (``--resume OUT/checkpoints.prev/step_N`` copies that log beside them). Set aside separately, a
    fresh run killed before its first checkpoint replaced the .prev log while checkpoints.prev stayed, and
    the recovery spliced that run's records in as the earlier run's. ``outputs``: (name, what) of the other
    files the trainer writes in OUT as the run's own (its ``run_outputs``: curves.png, a ViT's model/, the
    demo's report), which go with them: left, a fresh run stopped before its end showed the earlier run's
    model/ (which `vit eval` and `analyze` take) beside its own log, and a third demo's REPORT.md.prev was
    the first run's beside the second's checkpoints.prev. Returns what ``move_checkpoints`` does."""
    from kizuna.models.checkpoint import move_aside

    out = Path(out_dir)
    files = _RUN_LOG + tuple(outputs)
    # the old .prev log first: a kill between the moves can leave checkpoints.prev without its log (the log
    # then stays in OUT and counts as one without checkpoints), never beside another run's
    for name, _ in files:
        _remove(out / (name + ".prev"))
    moved = move_checkpoints()
    for name, what in files:
        if _has_records(out / name):
            move_aside(out / name, what)
    return moved


def set_aside_previous_log(out_dir: str | Path, outputs=()) -> Path | None:
    """Move OUT/metrics.jsonl and OUT/tensorboard of an earlier run aside, so a fresh run into the same folder
    starts an empty log instead of appending to that run's records (the demo report then plotted both runs as
    one curve that jumped back to step 10). A run that saved checkpoints had its log set aside with them
    (:func:`set_aside_with_checkpoints`), so what is left here belongs to a run with no checkpoint (killed
    before its first). It goes to .prev (replacing an older one) unless OUT/checkpoints.prev is there: the
    .prev log is then those checkpoints' and is kept, and this one goes to .no-checkpoint. Returns where the
    old metrics.jsonl went, or None when there was none."""
    from kizuna.models.checkpoint import move_aside

    out = Path(out_dir)
    kept = (out / "checkpoints.prev").is_dir()
    suffix = NO_CHECKPOINT if kept else ".prev"
    note = " (a run with no checkpoint: the .prev log stays with checkpoints.prev)" if kept else ""
    moved = {name: move_aside(out / name, what, suffix, note) for name, what in _RUN_LOG if _has_records(out / name)}
    if moved:  # the trainer's other files go with an earlier run's log; with none, they are not a run's
        for name, what in outputs:
            if _has_records(out / name):
                move_aside(out / name, what, suffix, note)
    return moved.get("metrics.jsonl")


class MetricLogger:
    def __init__(self, out_dir: str | Path, enabled: bool = True, tensorboard: bool = True, fresh: bool = False,
                 outputs=()):
        """``fresh``: this run starts from scratch (not a resume), so an existing OUT/metrics.jsonl belongs
        to an earlier run and is set aside (:func:`set_aside_previous_log`, with ``outputs``). The default,
        False, appends to it, which a resumed run needs (it then calls :meth:`drop_after`)."""
        self.enabled = enabled
        # every record's elapsed_s is read on this monotonic clock: durations taken from the records' wall-clock
        # "time" were off by a clock step in between (NTP, a VM restored: compare-runs' 7-s run took 60 minutes)
        self._opened = time.monotonic()
        self.path = Path(out_dir) / "metrics.jsonl"
        self.tb = None
        # the TensorBoard writer opens at the first record, with the resume's purge step (drop_after): opened
        # here and again by drop_after, every resume left an empty 88-byte event file behind
        self._tensorboard, self._purge_step = enabled and tensorboard, None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if fresh:  # TensorBoard too: it drew both runs as one curve going back
            set_aside_previous_log(out_dir, outputs)
        if self.path.is_file() and self.path.stat().st_size:
            with self.path.open("rb+") as f:  # a run killed mid-write: end its partial line so the next record stays whole
                f.seek(-1, 2)
                if f.read(1) != b"\n":
                    f.write(b"\n")

    def _writer(self):
        """The TensorBoard writer, opened at the first call (again after close); None without tensorboard
        (optional: JSONL is always written)."""
        if self.tb is None and self._tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(self.path.parent / "tensorboard"), purge_step=self._purge_step)
                self._purge_step = None  # purged once: a writer opened again after close() keeps what is there
            except ImportError:
                self._tensorboard = False
            except UnicodeError:  # a folder name that is not UTF-8 (--out with a Latin-1 byte): TensorBoard encodes
                # its paths as UTF-8, and the run ended at its first record ("surrogates not allowed"), its steps
                # since the last checkpoint lost
                self._tensorboard = False
                warnings.warn(f"TensorBoard cannot write under {os.fsencode(self.path.parent)!r} (a name that is not "
                              "UTF-8): its event files are left out; metrics.jsonl has every record", UserWarning,
                              stacklevel=3)
            except Exception as e:  # an installed but broken tensorboard/protobuf: not a reason to end the run
                self._tensorboard = False
                warnings.warn(f"TensorBoard could not start ({type(e).__name__}: {e}); its event files are left out, "
                              "metrics.jsonl has every record", UserWarning, stacklevel=3)
        return self.tb

    def write_config(self, config: dict) -> None:
        """OUT/train_config.json: the settings this run (or its latest resumption) was started with, so a
        run folder says what it ran (``kizuna analyze compare-runs`` reads it)."""
        if not self.enabled:
            return
        from kizuna.models.checkpoint import atomic_write_text

        atomic_write_text(self.path.parent / "train_config.json", json_text(config, indent=2, sort_keys=True))

    def copy_events_of(self, source_log: Path) -> None:
        """A resume from another run's checkpoint: that run's TensorBoard events (beside ``source_log``, its
        metrics.jsonl or metrics.jsonl.prev: tensorboard/ or tensorboard.prev/) copied into this run's, as its
        records are, so that TensorBoard shows the steps before the checkpoint too (the purge at the resume hides
        the source's events after it). Before, TensorBoard began at the resume while metrics.jsonl did not."""
        import shutil

        if not self.enabled:
            return
        source = source_log.with_name("tensorboard" + source_log.name[len("metrics.jsonl"):])
        events = sorted(source.glob("events.out.tfevents.*")) if source.is_dir() else []
        if not events:
            return
        target = self.path.parent / "tensorboard"
        target.mkdir(parents=True, exist_ok=True)
        for event in events:
            shutil.copy2(event, target / event.name)

    def drop_after(self, step: int, keep_aside: bool = False) -> Path | None:
        """A resumed run: drop the records the killed run wrote after its checkpoint at ``step``, and any line
        it tore mid-write (not JSON), so the log reads as one uninterrupted run. Rewritten atomically.

        ``keep_aside``: the run folder holds checkpoints after ``step`` (a resume from an earlier one, a branch):
        the dropped records are written to ``OUT/metrics.branches/after_step_N.jsonl`` first (``...N.2.jsonl``
        for a second resume from that step: one file per branch), which is returned (they were gone for good,
        while the checkpoints they describe stayed, as the branch leaves them). A fresh run sets the folder aside
        with the log, as ``metrics.branches.prev``."""
        if not (self.enabled and self.path.exists()):
            return None
        from kizuna.models.checkpoint import atomic_write_text

        kept, dropped = [], []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except (json.JSONDecodeError, RecursionError):
                continue
            if isinstance(record, dict) and record.get("step", 0) <= step:
                kept.append(line + "\n")
            elif isinstance(record, dict):
                dropped.append(line + "\n")
        aside = None
        if keep_aside and dropped:
            folder = self.path.parent / BRANCHES
            folder.mkdir(exist_ok=True)
            aside, n = folder / f"after_step_{step}.jsonl", 1
            while aside.exists():
                n += 1
                aside = folder / f"after_step_{step}.{n}.jsonl"
            atomic_write_text(aside, "".join(dropped))
        atomic_write_text(self.path, "".join(kept))
        # TensorBoard too: its reader drops the killed run's events from step + 1 on
        self._purge_step = step + 1
        if self.tb is not None:  # (opened already: closed, to open again with the purge step)
            self.tb.close()
            self.tb = None
        return aside

    def log(self, step: int, metrics: dict, kind: str = "train") -> None:
        if not self.enabled:
            return
        record = {"kind": kind, "step": step, "time": round(time.time(), 3),
                  "elapsed_s": round(time.monotonic() - self._opened, 3), **metrics}
        with self.path.open("a", encoding="utf-8") as f:  # a diverged run's NaN loss is null: "one JSON per line" for any reader
            f.write(json_text(record) + "\n")
        writer = self._writer()
        if writer is not None:
            for k, v in metrics.items():
                if isinstance(v, (int, float)):
                    writer.add_scalar(f"{kind}/{k}", v, step)

    def close(self):
        if self.tb is not None:
            self.tb.close()
            self.tb = None


def json_text(value, **kwargs) -> str:
    """``value`` as strict JSON: NaN and inf are null (:func:`kizuna.apps.common.json_safe`), as every other file
    and stdout kizuna writes for machines. Python's own ``json.dumps`` wrote ``NaN`` and ``Infinity``, which
    JSON is not: ``jq``, JavaScript and strict parsers refused a diverged run's log, its final metrics and
    train_config.json. Values JSON has no type for (a path) are written as strings."""
    from kizuna.apps.common import json_safe

    return json.dumps(json_safe(value), allow_nan=False, default=str, **kwargs)


def nulls_as_nan(record):
    """A metrics record's null values as NaN: the log writes a NaN (a diverged loss) as null (:func:`json_text`),
    and its readers (curves, reports, compare-runs) plot and print it as the NaN it was."""
    if not isinstance(record, dict):
        return record
    return {k: math.nan if v is None else v for k, v in record.items()}


def progress_bar(**kwargs):
    """A tqdm bar whose ``write`` (the trainers' evaluation, skip and time-budget lines) goes to stderr with the
    bar. tqdm.write's default is stdout, where `kizuna train ... > final.json` keeps only the final metrics."""
    return _stderr_tqdm()(**kwargs)


@functools.cache
def _stderr_tqdm():
    from tqdm import tqdm

    class StderrTqdm(tqdm):
        @classmethod
        def write(cls, s, file=None, end="\n", nolock=False):
            return super().write(s, file=sys.stderr if file is None else file, end=end, nolock=nolock)

    return StderrTqdm


def read_metrics(path: str | Path, kind: str | None = None) -> list[dict]:
    """The records of a metrics.jsonl ([] when there is none), optionally of one ``kind``, with null values as
    NaN (the log writes a NaN as null). A run killed mid-write can leave a truncated line (and a resumed run
    appends after it): lines that are not JSON are skipped with a warning naming the file and line, so the
    rest of the run stays readable."""
    path = Path(path)
    if not path.exists():
        return []
    rows, bad = [], []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(nulls_as_nan(json.loads(line)))
        except (json.JSONDecodeError, RecursionError):  # (a line nested thousands deep is no record either)
            bad.append(number)
    if bad:
        warnings.warn(f"{path}: skipped {len(bad)} line(s) that are not JSON (line {', '.join(map(str, bad[:5]))}"
                      f"{', ...' if len(bad) > 5 else ''}); a run killed mid-write leaves one", stacklevel=2)
    return [r for r in rows if isinstance(r, dict) and (kind is None or r.get("kind") == kind)]
