"""Metrics to JSONL (one object per line) and TensorBoard, and the run's settings to train_config.json,
from the main process only.

A resumed run appends to its OUT/metrics.jsonl (after :meth:`MetricLogger.drop_after`), so the log reads
as one run. A fresh run into a folder that already holds a metrics.jsonl starts a new one
(``MetricLogger(..., fresh=True)``): the earlier run's log is moved to ``metrics.jsonl.prev`` rather
than deleted, and readers of the folder (plots, reports, ``kizuna analyze compare-runs``) see one run.
"""
from __future__ import annotations

import json
import time
import warnings
from pathlib import Path


def set_aside_previous_log(out_dir: str | Path) -> Path | None:
    """Move OUT/metrics.jsonl of an earlier run to OUT/metrics.jsonl.prev (replacing an older .prev), so a
    fresh run into the same folder starts an empty log instead of appending to that run's records (the
    demo report then plotted both runs as one curve that jumped back to step 10). Returns where the old
    log went, or None when there was none."""
    from kizuna.models.checkpoint import move_aside

    path = Path(out_dir) / "metrics.jsonl"
    if not (path.is_file() and path.stat().st_size):
        return None
    return move_aside(path, "records")


class MetricLogger:
    def __init__(self, out_dir: str | Path, enabled: bool = True, tensorboard: bool = True, fresh: bool = False):
        """``fresh``: this run starts from scratch (not a resume), so an existing OUT/metrics.jsonl belongs
        to an earlier run and is set aside (:func:`set_aside_previous_log`). The default, False, appends
        to it, which a resumed run needs (it then calls :meth:`drop_after`)."""
        self.enabled = enabled
        self.path = Path(out_dir) / "metrics.jsonl"
        self.tb = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if fresh:
            set_aside_previous_log(out_dir)
            events = Path(out_dir) / "tensorboard"
            if events.is_dir() and any(events.iterdir()):  # TensorBoard drew both runs as one curve going back
                from kizuna.models.checkpoint import move_aside

                move_aside(events, "TensorBoard events")
        if self.path.is_file() and self.path.stat().st_size:
            with self.path.open("rb+") as f:  # a run killed mid-write: end its partial line so the next record stays whole
                f.seek(-1, 2)
                if f.read(1) != b"\n":
                    f.write(b"\n")
        if tensorboard:
            self._open_tensorboard()

    def _open_tensorboard(self, purge_step: int | None = None) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(self.path.parent / "tensorboard"), purge_step=purge_step)
        except ImportError:  # tensorboard is optional; JSONL is always written
            self.tb = None

    def write_config(self, config: dict) -> None:
        """OUT/train_config.json: the settings this run (or its latest resumption) was started with, so a
        run folder says what it ran (``kizuna analyze compare-runs`` reads it)."""
        if not self.enabled:
            return
        from kizuna.models.checkpoint import atomic_write

        text = json.dumps(config, indent=2, sort_keys=True, default=str)
        atomic_write(self.path.parent / "train_config.json", lambda tmp: Path(tmp).write_text(text))

    def drop_after(self, step: int) -> None:
        """A resumed run: drop the records the killed run wrote after its checkpoint at ``step``, and any line
        it tore mid-write (not JSON), so the log reads as one uninterrupted run. Rewritten atomically."""
        if not (self.enabled and self.path.exists()):
            return
        from kizuna.models.checkpoint import atomic_write

        kept = []
        for line in self.path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and record.get("step", 0) <= step:
                kept.append(line + "\n")
        atomic_write(self.path, lambda tmp: Path(tmp).write_text("".join(kept)))
        if self.tb is not None:  # TensorBoard too: its reader drops the killed run's events from step + 1 on
            self.tb.close()
            self._open_tensorboard(purge_step=step + 1)

    def log(self, step: int, metrics: dict, kind: str = "train") -> None:
        if not self.enabled:
            return
        record = {"kind": kind, "step": step, "time": round(time.time(), 3), **metrics}
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb is not None:
            for k, v in metrics.items():
                if isinstance(v, (int, float)):
                    self.tb.add_scalar(f"{kind}/{k}", v, step)

    def close(self):
        if self.tb is not None:
            self.tb.close()


def read_metrics(path: str | Path, kind: str | None = None) -> list[dict]:
    """The records of a metrics.jsonl ([] when there is none), optionally of one ``kind``. A run killed
    mid-write can leave a truncated line (and a resumed run appends after it): lines that are not JSON
    are skipped with a warning naming the file and line, so the rest of the run stays readable."""
    path = Path(path)
    if not path.exists():
        return []
    rows, bad = [], []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            bad.append(number)
    if bad:
        warnings.warn(f"{path}: skipped {len(bad)} line(s) that are not JSON (line {', '.join(map(str, bad[:5]))}"
                      f"{', ...' if len(bad) > 5 else ''}); a run killed mid-write leaves one", stacklevel=2)
    return [r for r in rows if isinstance(r, dict) and (kind is None or r.get("kind") == kind)]
