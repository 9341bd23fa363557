"""Training checkpoints: atomic, complete, and enough to resume a killed run exactly.

    OUT/checkpoints/step_0000120/  model.safetensors + config.json (a loadable kizuna model)
                                   train_state.pt (optimizer, scheduler, RNG, data position)
    OUT/checkpoints/latest         name of the newest complete checkpoint
    OUT/checkpoints/best/          a copy of the best one by the chosen metric

A checkpoint folder is written under a temporary name and renamed when complete, so a run killed
mid-save leaves the previous checkpoint intact. ``train_state.pt`` holds tensors and plain Python
values only and is read with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import dataclasses
import errno
import json
import os
import pickle
import random
import re
import shlex
import shutil
import stat
import sys
import uuid
from pathlib import Path

import numpy as np
import torch

from kizuna.apps.common import same_place
from kizuna.models.checkpoint import (CheckpointError, atomic_write, first_line, follow_latest, load_model,
                                     load_state_dict_strict, load_tensors, make_temp_folder, move_aside,
                                     replace_retrying, save_ids, save_model)


def rng_state() -> dict:
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_initialized():  # (reading it starts CUDA on every GPU: a --device cpu run on a GPU machine)
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        # one state per GPU visible when it was saved: a resume that sees fewer (another machine,
        # CUDA_VISIBLE_DEVICES=0) restores those it has (set_rng_state_all raised IndexError inside torch)
        for index, gpu_state in enumerate(state["cuda"][:torch.cuda.device_count()]):
            torch.cuda.set_rng_state(gpu_state, index)


def lower_is_better(metric: str, mode: str = "auto") -> bool:
    """``mode`` "min" / "max", or "auto": the lowest is best for a loss, an error, a rank or the typographic
    probe's attack rate (the share of answers that follow a written word: picked as highest, best/ was
    the model most fooled)."""
    if mode not in ("auto", "max", "min"):
        raise ValueError(f"mode must be auto, max or min, got {mode!r}")
    if mode != "auto":
        return mode == "min"
    name = metric.lower()
    return "loss" in name or "error" in name or name.endswith("rank") or name.endswith("attack_rate")


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux's renameat2 with RENAME_EXCHANGE); False where that is not available
    (another OS, an old C library or kernel, a file system without it), and nothing changed."""
    import ctypes

    if not sys.platform.startswith("linux"):
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_cwd, exchange = -100, 2  # AT_FDCWD, RENAME_EXCHANGE
    return renameat2(at_cwd, os.fsencode(a), at_cwd, os.fsencode(b), exchange) == 0


def swap_folder_in(tmp: Path, final: Path) -> None:
    """Rename the filled ``tmp`` to ``final``; an existing ``final`` (the same step saved again) is moved
    aside first and deleted only once the new one is in place (deleted first, a failed rename left none)."""
    if not final.exists():
        try:
            replace_retrying(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return
    if _exchange(tmp, final):  # one step: a reader of best/ never finds it missing (two renames: 4% of polls)
        shutil.rmtree(tmp, ignore_errors=True)  # the old one, now under the temporary name
        return
    old = make_temp_folder(final.parent, f".{final.name}.old.")
    os.rmdir(old)  # a free name: Windows refuses to replace an existing folder (the second better best/ stopped a
    # run with "Access is denied"); POSIX replaces an empty one
    replace_retrying(final, old)
    try:
        replace_retrying(tmp, final)
    except BaseException:
        os.replace(old, final)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)


class CheckpointManager:
    def __init__(self, out_dir: str | Path, keep_last: int = 2, metric: str | None = None, mode: str = "auto"):
        """``mode``: which end of ``metric`` is best; "auto" takes the lowest for a loss, error, rank or attack rate."""
        if keep_last < 1:  # 0 pruned the final checkpoint too, leaving `latest` naming nothing
            raise ValueError(f"keep_last must be >= 1 (the newest checkpoint is always kept), got {keep_last}")
        self.dir = Path(out_dir) / "checkpoints"
        self.keep_last = keep_last
        self.metric = metric
        self.mode = ("min" if lower_is_better(metric, mode) else "max") if metric else "max"
        self.best_value: float | None = None
        self.best_restarted: tuple | None = None  # (metric, mode) of a resumed run's best, when not this one's
        self._warned_missing = False
        # saved with every step folder and best/ (the supervised trainer's preprocessing and class names), so
        # each loads, evaluates and fine-tunes as the final model does
        self.model_extra: dict = {}
        # the step this run resumed from, and the steps it saved: a step folder after the first and not among the
        # second is an abandoned branch's (_prune)
        self.resumed_from: int | None = None
        self.saved_steps: set[int] = set()
        self.abandoned: list[str] = []  # step folders after the one resumed from: said once, deleted when passed
        # the id of the checkpoint this run's next save follows (the last it saved, or the one it resumed from):
        # recorded with each save, so `latest` written a save late (a kill between) is read past (saved_after)
        self.follows: str | None = None
        self._warned_behind = False

    def _is_better(self, value: float) -> bool:
        if self.best_value is None:
            return True
        return value > self.best_value if self.mode == "max" else value < self.best_value

    def save(self, step: int, model, train_state: dict, metrics: dict | None = None,
             trial: bool = False) -> Path | None:
        """``trial``: written in full, as a checkpoint is, and deleted (the time budget's plan times one): no
        best/, no ``latest``, nothing pruned."""
        self.dir.mkdir(parents=True, exist_ok=True)
        if not trial:
            # best/ first, so the train_state below holds this step's best value: written before, a resume from
            # a step that was the new best restored the previous best and let a worse model replace best/
            self.update_best(step, model, metrics)
        final = self.dir / f"step_{step:07d}"
        tmp = make_temp_folder(self.dir, f".{final.name}.")
        save_id = uuid.uuid4().hex
        try:
            save_model(model, tmp, extra={**self.model_extra, "step": step, "metrics": metrics or {},
                                          "save_id": save_id, "follows": self.follows})
            # the metric and mode with the value: a resume that picks best/ by another metric must not compare
            # the new metric against the old one's best
            torch.save(dict(train_state, best_value=self.best_value, best_metric=self.metric, best_mode=self.mode),
                       tmp / "train_state.pt")
        except _WRITE_ERRORS as e:
            shutil.rmtree(tmp, ignore_errors=True)
            raise self._write_failed(final, e) from e
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if trial:
            shutil.rmtree(tmp, ignore_errors=True)
            return None
        self._swap_in(tmp, final)
        atomic_write(self.dir / "latest", lambda t: Path(t).write_text(final.name, encoding="utf-8"))
        self.follows = save_id
        self.saved_steps.add(step)
        self._prune(keep=final)
        return final

    def _write_failed(self, folder: Path, error: BaseException) -> OSError:
        """The error for a checkpoint that could not be written. On a full disk torch.save ends with "[enforce
        fail at inline_container.cc:672] . unexpected pos ..." and safetensors with "I/O error", neither naming
        the folder nor what to do; the checkpoint before it is intact (``latest`` still names it)."""
        try:
            left = shutil.disk_usage(self.dir).free
            free = f"{left / 2**30:.1f} GiB free there" if left >= 2**30 else f"{left / 2**20:.1f} MiB free there"
        except OSError:
            free = "free space unknown"
        before = self.latest()  # what `--resume latest` takes: the failed one was never swapped in
        cause, fix = f"disk full? ({free})", "free space"
        limit = file_size_limit()
        errno_ = getattr(error, "errno", None)
        # not the disk: "disk full? (46.8 GiB free there)" was said of a path over PATH_MAX
        if errno_ == errno.ENAMETOOLONG:
            cause = "a path too long for the file system, not a full disk"
            fix = f"move {self.dir.parent} to a shorter path" if before else "use a shorter --out"
        elif errno_ in (errno.EACCES, errno.EPERM, errno.EROFS):
            cause, fix = f"{os.strerror(errno_)}, not a full disk", "make the folder writable"
        elif limit is not None:  # `ulimit -f`: the same torch error, with 32 GiB free ("disk full?" misled)
            cause, fix = f"the file size limit (ulimit -f) is {limit / 2**20:.1f} MiB; {free}", "raise `ulimit -f`"
        message = (f"writing the checkpoint {folder} failed ({type(error).__name__}: {first_line(error)}); {cause}. "
                   + (f"The checkpoint before it, {before.name}, is intact: {fix} and continue with --out "
                      + ("<that path>" if errno_ == errno.ENAMETOOLONG else str(self.dir.parent))
                      + " --resume latest" if before else
                      f"No checkpoint was saved before it: {fix} and start the run again"))
        if isinstance(error, OSError) and error.errno:
            return OSError(error.errno, message)
        # torch's and safetensors' own errors carry no errno: the one said (a full disk, the file size limit), so
        # that the command line says it in one line (it came after 59 lines of chained traceback)
        return OSError(errno.EFBIG if limit is not None else errno.ENOSPC, message)

    def _swap_in(self, tmp: Path, final: Path) -> None:
        swap_folder_in(tmp, final)

    def update_best(self, step: int, model, metrics: dict | None) -> bool:
        """``best/`` := ``model`` when ``metrics`` improve on the best so far. Called after every evaluation,
        not only those that coincide with a checkpoint (with --eval-every and no --save-every, best/ was
        always the last step). Returns whether it was written; the best value changes only once it was."""
        if not self.metric or not metrics:
            return False
        value = metrics.get(self.metric)
        if value is None:
            if not self._warned_missing:
                import warnings

                warnings.warn(f"best metric {self.metric!r} is not among the evaluation's metrics "
                              f"({', '.join(sorted(metrics))}); no best/ checkpoint is kept", RuntimeWarning)
                self._warned_missing = True
            return False
        if value != value or not self._is_better(value):  # NaN is never best
            return False
        self.dir.mkdir(parents=True, exist_ok=True)
        best_tmp = make_temp_folder(self.dir, ".best.")
        try:
            save_model(model, best_tmp, extra={**self.model_extra, "step": step, "metrics": metrics,
                                               "best_metric": self.metric, "best_mode": self.mode})
        except _WRITE_ERRORS as e:  # best/ is written first at a checkpoint step: the same full disk
            shutil.rmtree(best_tmp, ignore_errors=True)
            raise self._write_failed(self.dir / "best", e) from e
        except BaseException:
            shutil.rmtree(best_tmp, ignore_errors=True)
            raise
        self._swap_in(best_tmp, self.dir / "best")
        self.best_value = float(value)
        return True

    def step_folders(self) -> list[Path]:
        """This run's checkpoint folders, oldest first by step number (a name sort put step_10000000 before
        step_9999999); other folders and files in checkpoints/ are not checkpoints."""
        steps = [p for p in self.dir.glob("step_*") if p.is_dir() and p.name[5:].isdigit()]
        return sorted(steps, key=lambda p: int(p.name[5:]))

    def _prune(self, keep: Path) -> None:
        """Keep ``keep`` (just written) and the newest ``keep_last - 1`` of this run's before it. Steps of the
        branch a resume from an earlier checkpoint left (after the step resumed from, not saved by this run) are
        not counted: counted, the later ones deleted the checkpoint just written, and the earlier ones the
        checkpoint resumed from (a diverged step_3 kept, the good step_2 a "resume from an earlier one" had named
        deleted). Those the run has passed are deleted (left, they sat below `latest` as this run's), those after
        it are left alone. Temp folders of saves a kill interrupted are removed."""
        step = int(keep.name[5:])

        def this_run(n: int) -> bool:
            return self.resumed_from is None or n <= self.resumed_from or n in self.saved_steps

        before = [p for p in self.step_folders() if int(p.name[5:]) < step]
        older = [p for p in before if this_run(int(p.name[5:]))]
        passed = [p for p in before if not this_run(int(p.name[5:]))]
        for old in passed + older[: max(0, len(older) - (self.keep_last - 1))]:
            _remove_checkpoint(old)
        for stray in self.dir.glob(".step_*"):
            if stray.is_dir():
                shutil.rmtree(stray, ignore_errors=True)
        for stray in self.dir.glob(".best.*"):
            if stray.is_dir():
                shutil.rmtree(stray, ignore_errors=True)

    def _best_saved(self, folder: Path) -> tuple[int, float] | None:
        """(step, value) of the best/ model in ``folder`` where it was kept by this run's metric and mode; None
        where there is none, or it was kept by another metric or mode, or holds no number for it."""
        from kizuna.analysis.report import read_extra

        extra = read_extra(folder) if self.metric and folder.is_dir() else {}
        try:
            saved = int(extra.get("step", -1))
        except (TypeError, ValueError):
            return None
        value = (extra.get("metrics") or {}).get(self.metric)
        if (saved < 0 or extra.get("best_metric") != self.metric or extra.get("best_mode", self.mode) != self.mode
                or not isinstance(value, (int, float)) or value != value):
            return None
        return saved, float(value)

    def keep_later_best(self, step: int) -> float | None:
        """A resume from ``step`` (an earlier step_N, with other settings): a best/ saved at a later step is the
        abandoned branch's. The run's best value was restored from step N, so an evaluation that beat that value
        replaced best/ with a model worse than it (0.18 over the branch's 0.22). best/ stays (it may be the best
        model the folder has: moved away, a resume that never beat step N's value ended with no best/ at all),
        and the best value becomes its value when it is better, so only a better model replaces it. Said; returns
        the value taken, or None."""
        best = self.dir / "best"
        record = self._best_saved(best)
        if record is None or record[0] <= step or not self._is_better(record[1]):
            return None
        saved, value = record
        self.best_value = value
        print(f"{best} is from step {saved}, of the branch this resume from step {step} leaves ({self.metric} "
              f"{value:.4g}): it stays best/ until this run does better", file=sys.stderr)
        return self.best_value

    def set_aside_earlier_run(self, outputs=()) -> Path | None:
        """A fresh run (not a resume) into an --out that holds checkpoints: they are an earlier run's, and
        mixed with this one's they were pruned against it (this run's first checkpoint was the one deleted) and
        `--resume latest` could pick theirs. Moved to checkpoints.prev (replacing an older one) together with
        the run's metrics.jsonl and tensorboard/ (:func:`kizuna.train.logging.set_aside_with_checkpoints`):
        moved apart, a run killed before its first checkpoint later replaced the .prev log while the
        checkpoints beside it stayed, and recovering them spliced the wrong run's log in. Returns where
        they went, or None."""
        if not (self.dir.is_dir() and (self.step_folders() or (self.dir / "best").is_dir())):
            return None
        from .logging import set_aside_with_checkpoints

        return set_aside_with_checkpoints(self.dir.parent, lambda: move_aside(self.dir, "checkpoints"), outputs)

    def latest(self) -> Path | None:
        marker = self.dir / "latest"
        if (named := follow_latest(marker)) != marker:  # the folder the marker names, when it exists
            said = marker.read_text(encoding="utf-8", errors="replace").strip()
            if named.name != said and not self._warned_behind:
                self._warned_behind = True
                import warnings

                warnings.warn(f"{marker} names {said}, but this run saved {named.name} after it and was stopped "
                              f"before naming it: taking {named.name}", RuntimeWarning, stacklevel=2)
            return named
        steps = self.step_folders()
        if steps and marker.is_file():
            import warnings

            warnings.warn(f"{marker} names {marker.read_text(encoding='utf-8', errors='replace').strip()!r}, which is not a "
                          f"checkpoint folder; taking the newest, {steps[-1].name}", RuntimeWarning, stacklevel=2)
        return steps[-1] if steps else None

    def resolve(self, resume: str) -> Path:
        """"latest" or a checkpoint folder path."""
        if resume == "best" or (Path(resume).name == "best" and not (Path(resume) / "train_state.pt").exists()):
            raise FileNotFoundError(f"--resume {resume}: best/ holds the best model's weights only, not a training "
                                    "state; resume from latest or a step folder (OUT/checkpoints/step_N)")
        path = self.latest() if resume == "latest" else follow_latest(resume)
        if path is None:
            holder = run_lock_holder(self.dir.parent)
            if holder is not None:  # a run that looks stalled is the usual reason to resume: "no checkpoint" alone
                # read as "start afresh" while that run went on (the lock itself is taken later, by the trainer)
                raise ValueError(f"--resume latest: no checkpoint under {self.dir} yet: another kizuna run"
                                 f"{f' (pid {holder})' if holder else ''} is writing there; wait for it to end (or "
                                 "stop it), or choose another --out")
            prev = self.dir.with_name("checkpoints.prev")
            raise FileNotFoundError(f"--resume latest: no checkpoint under {self.dir}" + (
                f"; an earlier run's are in {prev} (a fresh run into this --out set them aside): continue one of "
                f"them in a new folder, --out NEW --resume {prev}/step_N" if prev.is_dir() else ""))
        if not (path / "train_state.pt").exists():
            raise FileNotFoundError(f"--resume {path}: no such folder" if not path.exists() else
                                    f"{path}: not a training checkpoint (no train_state.pt)")
        return path

    def load_into(self, path: Path, model) -> dict:
        """The checkpoint's weights into ``model``; returns its train state. The best value so far is restored
        when it was measured by this metric and mode; otherwise best/ starts afresh, and ``best_restarted``
        says what the run's best was measured by (for checkpoints written before the metric was saved with the
        value, the run's own --best-metric / --best-mode in its train_config)."""
        saved = load_resumed_model(path)
        load_state_dict_strict(model, saved.state_dict(), str(path))
        state = read_train_state(path)
        # (by the file system's identity: `Runs/x` and `runs/x` are one folder on macOS, and read as two the resume
        # took this run's own steps for another's and pruned them as passed)
        if same_place(path.resolve().parent, self.dir) and path.name[5:].isdigit():
            # (the folder's step, as _prune reads it; another run's checkpoint: this folder's steps are all this run's)
            self.resumed_from = int(path.name[5:])
            self.abandoned = [p.name for p in self.step_folders() if int(p.name[5:]) > self.resumed_from]
        self.follows = save_ids(path)[0]
        flags = state.get("train_config") or {}
        if "best_metric" in state:
            before = (state["best_metric"], state.get("best_mode", self.mode))
        elif flags.get("best_metric"):  # saved before the two were: the run's flags say what picked its best
            metric, mode = flags["best_metric"], flags.get("best_mode")
            # a config without best_mode predates --best-mode (2026-12-04), when every best/ kept the highest value:
            # read as "auto", an attack rate's old maximum was restored as a minimum and best/ kept the worst model
            before = (metric, "max" if mode is None else "min" if lower_is_better(metric, mode) else "max")
        else:
            before = (self.metric, self.mode)
        self.best_restarted = before if before != (self.metric, self.mode) and state.get("best_value") is not None else None
        self.best_value = None if self.best_restarted else state.get("best_value")
        self._carry_best(path, state)
        return state

    def _carry_best(self, path: Path, state: dict) -> None:
        """A resume from another folder's checkpoint (RUN/checkpoints.prev/step_N; a run's step_N into a new
        --out): the best value came with it, not the model it belongs to, so this folder kept no best/ until an
        evaluation beat that value. The source's best/ is copied in when it is that value's model (saved at or
        before the step resumed, by the same metric and mode); else the best value starts afresh. Said either way."""
        if self.best_value is None or same_place(path.resolve().parent, self.dir) or (self.dir / "best").is_dir():
            return
        from kizuna.eval.encode import is_main

        source = path.resolve().parent / "best"
        record, step = self._best_saved(source), state.get("step")
        if record is not None and isinstance(step, int) and record[0] <= step and record[1] == self.best_value:
            saved, value = record
            if not is_main():  # decided alike on every rank (read only), copied and said once
                return
            self.dir.mkdir(parents=True, exist_ok=True)
            tmp = make_temp_folder(self.dir, ".best.")
            try:
                shutil.copytree(source, tmp, dirs_exist_ok=True)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            self._swap_in(tmp, self.dir / "best")
            print(f"{self.dir / 'best'}: copied from {source} (step {saved}, {self.metric} {value:.4g}), the best "
                  "model of the run resumed", file=sys.stderr)
            return
        if is_main():
            print(f"the checkpoint resumed carries a best {self.metric} of {self.best_value:.4g}, but {source} is not "
                  "that model: best/ starts afresh in this folder", file=sys.stderr)
        self.best_value = None


RUN_LOCK = ".kizuna-run.lock"
# OUT (resolved) -> [open lock file, holders in this process]. POSIX locks belong to the process, and closing
# any handle to the file drops them all: one handle per folder, closed when its last holder lets go.
_HELD_LOCKS: dict[Path, list] = {}


def run_lock_holder(out: Path) -> str | None:
    """The pid ("" where unreadable) of another process's run holding OUT's lock, else None (no lock, a free one,
    this process's own, no locks on this platform)."""
    try:
        import fcntl
    except ImportError:
        return None
    path = Path(out) / RUN_LOCK
    if not path.is_file() or _held_key(Path(out)) in _HELD_LOCKS:  # (closing a second handle on a file drops this
        return None  # process's own POSIX lock on it)
    try:
        with _open_lock_file(path) as handle:
            try:
                fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                if e.errno not in (errno.EACCES, errno.EAGAIN):
                    return None
                handle.seek(0)
                holder = handle.read().strip()
                return holder if holder.isdigit() else ""
            fcntl.lockf(handle, fcntl.LOCK_UN)
    except (OSError, ValueError):  # (ValueError: a link where the lock goes, refused as the run's own will be)
        return None
    return None


def _open_lock_file(path: Path):
    """The lock file, opened for reading and writing (made if missing), refused where it is a symbolic link or not
    a plain file: opened through a link, a link planted in a shared folder (``.kizuna-run.lock -> ~/.bashrc``) had
    the file it named truncated to the run's pid, or made where the link pointed."""
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags, 0o666)
    except OSError as e:
        if e.errno != errno.ELOOP:
            raise
        fd = None
    if fd is not None:
        if stat.S_ISREG(os.fstat(fd).st_mode):  # (a hard link, a snapshot's `cp -al`: locked, its pid not written)
            return os.fdopen(fd, "a+", encoding="utf-8")
        os.close(fd)
    raise ValueError(f"{path}: is a symbolic link or not a plain file, and kizuna writes its run lock there "
                     "(through a link, into the file it names): remove it, or choose another --out")


def _remove_checkpoint(folder: Path) -> None:
    """A step folder deleted out of sight: renamed to a hidden name first (swept by the next save's prune), so a
    kill mid-delete leaves no half-deleted `step_N` that readers took for a checkpoint (over-training failed on it:
    "folder has no config.json")."""
    hidden = folder.with_name(f".{folder.name}.pruned")
    try:
        os.replace(folder, hidden)
    except OSError:  # gone meanwhile, or held open (Windows: a reader of it): left whole, for the next prune
        return
    shutil.rmtree(hidden, ignore_errors=True)


def _key_in(registry: dict, out: Path) -> Path:
    """OUT's key in ``registry`` (:data:`_HELD_LOCKS`, :data:`_FOLDER_OWNERS`): the key of a folder there that is OUT
    by the file system's identity (on macOS `Runs/x` and `runs/x` are one: a second lock handle opened under the
    other spelling, and closed, dropped this process's lock on the file, and another process's run took the
    folder), else OUT's real path."""
    for key in list(registry):  # (a copy: another thread's trainer may take or let go of a folder meanwhile)
        if same_place(key, out):
            return key
    return Path(out).resolve()


def _held_key(out: Path) -> Path:
    return _key_in(_HELD_LOCKS, out)


def hold_run_lock(out: Path) -> Path | None:
    """Lock OUT for this process's run, or raise if another process's run holds it. Two runs in one folder
    (the same command started twice) moved each other's checkpoints aside and interleaved their logs. The
    lock is the kernel's (a POSIX record lock on OUT/.kizuna-run.lock, which names the holder's pid): it goes
    with the process, so a killed run leaves nothing to clean up and resumes as before. Returns the key to
    :func:`release_run_lock`; None where the platform or file system has no locks."""
    try:
        import fcntl
    except ImportError:  # Windows: no lock, as before
        return None
    # the outermost folder this call makes (None: OUT was there), removed again by release_run_lock when the run
    # wrote nothing into it; on the resolved path, as the removal climbs it ("new/../keep/run" took the user's
    # empty keep/ for a folder of the run's)
    made = out.resolve()
    while not made.parent.exists() and made.parent != made:
        made = made.parent
    made = None if out.exists() else made
    out.mkdir(parents=True, exist_ok=True)
    key = _held_key(out)
    if key in _HELD_LOCKS:  # this process holds it already (a trainer built again on the same folder)
        if _HELD_LOCKS[key][3]:  # ... but one of its trainers is training there (in another thread: the kernel's
            # lock is the process's, and two threads' runs wrote into one folder, each moving the other's files)
            raise ValueError(f"--out {out}: another kizuna run (pid {os.getpid()}, this process) is training "
                             "there; wait for it to end, or choose another --out")
        _HELD_LOCKS[key][1] += 1
        return key
    handle = _open_lock_file(key / RUN_LOCK)
    try:
        fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno not in (errno.EACCES, errno.EAGAIN):  # a file system without locks (some NFS): run unlocked
            handle.close()
            return None
        handle.seek(0)
        holder = handle.read().strip()
        handle.close()
        raise ValueError(f"--out {out}: another kizuna run{f' (pid {holder})' if holder.isdigit() else ''} is "
                         "writing there; wait for it to end (or stop it), or choose another --out") from None
    if os.fstat(handle.fileno()).st_nlink == 1:  # the pid, written into this file alone: a hard link's other
        handle.seek(0)  # name (a backup snapshot's, or a file of the user's) is not rewritten through it
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
    _HELD_LOCKS[key] = [handle, 1, made, False]  # the last: a trainer of this process is training there
    return key


def run_lock_lost(key: Path | None) -> str | None:
    """How OUT's lock file is no longer the one this process locked, or None: the folder was moved or removed while
    the run wrote there (a user restarting it by hand), and a new run took the path; writing on by path, the two
    runs mixed their checkpoints and logs in one folder, and the old run's pruning deleted the new one's."""
    held = _HELD_LOCKS.get(key) if key is not None else None
    if held is None:
        return None
    try:
        now = os.stat(key / RUN_LOCK)
    except OSError:
        return "removed"
    mine = os.fstat(held[0].fileno())
    return None if (now.st_dev, now.st_ino) == (mine.st_dev, mine.st_ino) else "replaced by another run's"


# The trainer (its number) built last on each run folder in this process, lock or no lock (Windows has none, and a
# trainer lets go of its lock when train() ends): two trainers on one folder trained into it in turn, interleaving
# their steps in one log. Set once a trainer is built (a build that failed takes nothing over).
_FOLDER_OWNERS: dict[Path, object] = {}


def claim_run_folder(out: Path, owner: object) -> Path:
    """Record ``owner`` as the trainer built last on ``out``; returns the folder's key for :func:`run_folder_owner`
    (its real path: a relative OUT is the one under the folder the trainer was built in)."""
    key = _key_in(_FOLDER_OWNERS, Path(out))
    _FOLDER_OWNERS[key] = owner
    return key


def run_folder_owner(key: Path | None) -> object:
    return _FOLDER_OWNERS.get(key) if key is not None else None


def mark_training(key: Path | None, training: bool) -> None:
    """Say that a trainer holding OUT's lock (:func:`hold_run_lock`) is training there, or no longer is: another
    trainer is refused the folder meanwhile, whichever thread builds it."""
    held = _HELD_LOCKS.get(key) if key is not None else None
    if held is not None:
        held[3] = training


def release_run_lock(key: Path | None) -> None:
    """Let go of a lock :func:`hold_run_lock` gave; the folder is free once this process's last holder has."""
    held = _HELD_LOCKS.get(key) if key is not None else None
    if held is None:
        return
    held[1] -= 1
    if held[1] <= 0:
        # a run refused before it wrote anything (`kizuna demo` with a bad setting) left a new OUT holding only
        # the lock file: the file goes while the lock is still held (a run starting now makes a new one, which
        # then keeps the folder), the folders this process made after it
        emptied = held[2] is not None and _unlink_lock_if_alone(key)
        held[0].close()  # closing the file releases the process's lock on it
        del _HELD_LOCKS[key]
        if emptied:
            _remove_empty_folders(key, held[2])


def _unlink_lock_if_alone(out: Path) -> bool:
    try:
        if [p.name for p in out.iterdir()] != [RUN_LOCK]:
            return False
        (out / RUN_LOCK).unlink()
        return True
    except OSError:
        return False


def _remove_empty_folders(out: Path, made: Path) -> None:
    """OUT and the folders above it up to ``made`` (the outermost one the run made), while they are empty."""
    folder = out
    if folder != made and made not in folder.parents:
        return
    try:
        while True:
            folder.rmdir()  # only an empty folder: another process's file in it stops the climb (OSError)
            if folder == made or folder.parent == folder:
                return
            folder = folder.parent
    except OSError:
        return


def read_train_state(path: Path, mmap: bool = False) -> dict:
    """A checkpoint's ``train_state.pt`` (``mmap``: its tensors are mapped, not read, for a look at the
    settings); a damaged one is named with the earlier checkpoint to resume from."""
    try:
        state = load_tensors(path / "train_state.pt", mmap=mmap)
        if not isinstance(state, dict):
            raise TypeError(f"a {type(state).__name__}, not the dict a trainer saves")
        return state
    except CheckpointError:  # a TorchScript archive: refused in kizuna's words
        raise
    except pickle.UnpicklingError as e:
        # what the weights-only loader refuses on purpose: an object ("Unsupported global: GLOBAL posix.system"),
        # or protocol 4's opcodes (STACK_GLOBAL 147, MEMOIZE 149) in a file written with protocol 4 or later;
        # anything else it raises on is a damaged pickle
        operand = re.search(r"Unsupported operand (\d+)", str(e))
        refused = "GLOBAL " in str(e) or (operand is not None and int(operand.group(1)) in (147, 149)
                                          and _pickle_protocol(path / "train_state.pt") >= 4)
        if not refused:
            # (torch's first line advises weights_only=False, which would run the file's code: not repeated)
            raise CheckpointError(_pruned_meanwhile(path) or f"{path / 'train_state.pt'}: cannot be read (its "
                                  "pickled data is damaged); this checkpoint is damaged. "
                                  + earlier_checkpoint_hint(path)) from None
        # the weights-only unpickler's refusal of an object ("Unsupported global: GLOBAL posix.system"): not damage
        raise CheckpointError(f"{path / 'train_state.pt'}: holds pickled objects other than tensors (or a pickle "
                              "protocol a weights-only load does not read), which kizuna never unpickles (it could "
                              "run code from the file): not a state a kizuna trainer saved. "
                              + earlier_checkpoint_hint(path)) from None
    except Exception as e:  # truncated or overwritten: unpickling fails with anything from EOFError to KeyError
        file = path / "train_state.pt"
        if file.is_file() and file.stat().st_size == 0:  # a save cut off at once: torch's words were about mmap
            why = "the file is empty (0 bytes)"
        elif str(e).startswith("mmap can only be used"):  # read mapped: the file does not start as torch's zip does
            why = "not a torch zip archive (overwritten?)"
        else:
            why = f"{type(e).__name__}: {first_line(e)}"
        raise CheckpointError(_pruned_meanwhile(path) or f"{file}: cannot be read ({why}); this checkpoint is "
                              "damaged. " + earlier_checkpoint_hint(path)) from None


def _pickle_protocol(file: Path) -> int:
    """The pickle protocol of a torch zip's data.pkl (its PROTO opcode), 0 where it cannot be read."""
    import zipfile

    try:
        with zipfile.ZipFile(file) as z:
            name = next(n for n in z.namelist() if n.endswith("/data.pkl") or n == "data.pkl")
            head = z.read(name)[:2]
    except (OSError, zipfile.BadZipFile, StopIteration, KeyError, RuntimeError):
        return 0
    return head[1] if len(head) == 2 and head[0] == 0x80 else 0


def _pruned_meanwhile(path: Path) -> str | None:
    """A checkpoint folder gone while it was read: the run still writing there pruned it (--keep-last). It was
    called damaged, with "start the run again" where none was left: wrong, and harmful, for a healthy run."""
    if path.exists():
        return None
    return (f"{path} was removed while this run read it: a run still writing into {path.parent.parent} prunes its "
            "older checkpoints (--keep-last). Copy the checkpoint elsewhere and resume from the copy, or wait for "
            "that run to end")


def nothing_written(out, resume: str) -> str | None:
    """The summary line for a run that wrote no checkpoint to ``out`` (the resume of a finished run into a new
    --out: the paths the summary named did not exist, and following them failed), else None."""
    if not resume or (Path(out) / "checkpoints" / "latest").exists():
        return None
    return f"nothing was written to {out}; the run's checkpoint is still {resume}"


def load_resumed_model(path: Path):
    """The model of the checkpoint a run resumes from; a damaged one (a cut model.safetensors) said with the way on,
    as a damaged train_state.pt is (the trainers, which load it first to build the model, said only the error)."""
    try:
        return load_model(path)
    except CheckpointError as e:
        raise CheckpointError(_pruned_meanwhile(path) or f"{e}; this checkpoint is damaged. "
                              f"{earlier_checkpoint_hint(path)}") from None


def earlier_checkpoint_hint(path: Path) -> str:
    """Where to resume from when the checkpoint ``path`` (OUT/checkpoints/step_N) is damaged: the step folder
    before it, or that none is left."""
    earlier = sorted((p for p in path.parent.glob("step_*") if p.is_dir() and p.name[5:].isdigit()
                      and path.name[5:].isdigit() and int(p.name[5:]) < int(path.name[5:])),
                     key=lambda p: int(p.name[5:]))
    return (f"Resume from an earlier one: --resume {earlier[-1]}" if earlier else
            "No earlier checkpoint is left; start the run again")


# what a write on a full disk raises: OSError, torch.save's RuntimeError ("[enforce fail at inline_container.cc")
# and safetensors' own error ("I/O error: No space left on device")
try:
    from safetensors import SafetensorError as _SafetensorError
except ImportError:  # an older safetensors without the name
    _SafetensorError = OSError
_WRITE_ERRORS = (OSError, RuntimeError, _SafetensorError)




def file_size_limit() -> int | None:
    """This process's file size limit in bytes (``ulimit -f``; writes past it fail), None where there is none."""
    try:
        import resource
    except ImportError:  # (Windows)
        return None
    soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    return None if soft == resource.RLIM_INFINITY else soft


#: settings whose empty value a fresh run resolves and records, and the setting they are resolved against (vit
#: train's val_split in its --val-data: val first, else test)
RESOLVED_AT_START = {"val_split": "val_data"}


def resumed_config(cfg, named: frozenset[str] | None):
    """A resume from the command line continues the run with its own settings: the checkpoint's
    ``train_config``, with only what the command line names on top, so ``--resume latest --out RUN`` alone
    continues RUN as it was started (without this, a flag left off would have fallen back to its default:
    another augmentation, another schedule). Returns the config and the names of the settings taken from
    the checkpoint that differ from ``cfg``. From Python (``named`` None) ``cfg`` is used as it is."""
    if named is None or not cfg.resume:
        return cfg, []
    path = CheckpointManager(cfg.out).resolve(cfg.resume)
    state = read_train_state(path, mmap=True)
    saved = state.get("train_config") or {}
    fields = {f.name for f in dataclasses.fields(cfg)}
    foreign = sorted(set(saved) - fields)
    if len(foreign) > 3:  # a run of the other trainer: its settings mean nothing here
        other = "`kizuna vit train`" if "label_smoothing" in saved else "`kizuna train`"
        raise ValueError(f"--resume {path}: a checkpoint of {other}, which has settings this trainer does not "
                         f"({', '.join(foreign[:5])}, ...); resume it with {other}")
    restored = {k: v for k, v in saved.items() if k in fields and k not in named and k != "resume"}
    for k, against in RESOLVED_AT_START.items():  # "" (the run's --print-config gives it) is what resolved to the
        # saved value, on the same data: kept (taken as another set, best/ started afresh, the resume evaluated on
        # test first); on other data it resolves anew
        data = restored.get(against, getattr(cfg, against, None))
        if (k in named and k in fields and getattr(cfg, k) == "" and saved.get(k)
                and same_evaluation_set(against, data, saved.get(against))):
            restored[k] = saved[k]
    if "out" not in named and "out" in fields:
        # the run goes on in the folder that holds the checkpoint: the saved --out is relative to wherever the run
        # was started, so a run renamed, or resumed from another folder, went on in (and overwrote) whatever
        # folder that name meant now
        if path.parent.name != "checkpoints":
            raise ValueError(f"--resume {path}: not in a run's checkpoints/ folder, so where the run goes on is not "
                             "known; say it with --out DIR")
        restored["out"] = str(path.parent.parent)
    refuse_paths_read_elsewhere(restored, state.get("started_in"), path)
    resumed = dataclasses.replace(cfg, **restored)
    from .config import refuse_unused, unused_flags_of

    # a flag the run's own settings leave unused (--momentum on an AdamW run) was recorded and ignored
    refuse_unused(resumed, getattr(named, "typed", named), unused_flags_of(resumed), resumed=True)
    return resumed, sorted(k for k, v in restored.items() if getattr(cfg, k) != v)


#: settings that name files a resume reads: a relative one is read from the folder the run was started in
#: (``started_in``). Not the model's (--model, a fine-tune's checkpoint): a resume builds its model from the checkpoint
FILE_SETTINGS = ("data", "val_data", "classnames", "eval_zeroshot", "eval_retrieval")
_PATTERN_CHARS = "*?[{"


def _path_prefix(piece: str) -> str:
    """The part of a data spec's piece before its first glob or brace character, cut back to a whole folder."""
    cut = min((piece.find(c) for c in _PATTERN_CHARS if c in piece), default=-1)
    # (a pattern in the folder itself, "*.tar" or "{000000..000099}.tar", is the folder ".")
    return piece if cut < 0 else os.path.dirname(piece[:cut]) or "."


def _names_other_files(value, started_in: str) -> bool:
    """Whether a setting's value (a spec, its ``::`` pieces, a list of them) has a relative path that names, from
    ``started_in``, another file than from the current folder. A piece that names nothing there (a preset's name,
    "synthetic") or is absolute (or ``~``) reads the same from anywhere."""
    values = value if isinstance(value, (list, tuple)) else [value]
    for piece in (p.strip() for v in values if isinstance(v, str) for p in v.split("::")):
        prefix = _path_prefix(piece)
        there = os.path.join(started_in, prefix)
        if (prefix and not os.path.isabs(os.path.expanduser(prefix)) and os.path.exists(there)
                and not same_place(Path(there), Path(prefix))):
            return True
    return False


def refuse_paths_read_elsewhere(restored: dict, started_in: str | None, path: Path) -> None:
    """A resume takes the run's relative paths (``--data shards``) as they were written, and they are read from the
    current folder: resumed from another one, a run went on training on whatever ``shards`` meant there, without a
    word where the files had the same names and keys (CLIP_benchmark's and img2dataset's keys start at 000000000 in
    every dataset). Refused where a restored setting names, from the folder the run started in, another file than
    from here; a run whose folder is gone (moved with its data) goes on, checked by its data fingerprint."""
    if not started_in or not os.path.isdir(started_in) or same_place(Path(started_in), Path(".")):
        return
    elsewhere = [f"--{name.replace('_', '-')} {flag_value(restored[name])}" for name in FILE_SETTINGS
                 if _names_other_files(restored.get(name), started_in)]
    if elsewhere:
        raise ValueError(
            f"--resume {path}: the run was started in {started_in}, and {', '.join(elsewhere)} "
            f"{'is' if len(elsewhere) == 1 else 'are'} relative to that folder; from here ({os.getcwd()}) "
            f"{'it names' if len(elsewhere) == 1 else 'they name'} other files. Resume from {started_in}, or "
            "give the flag again (an absolute path reads the same from anywhere)")


def check_resume_settings(saved: dict, cfg, fields: tuple[str, ...], path: Path,
                          named: frozenset[str] | None = None, state_fields: tuple[str, ...] = ()) -> None:
    """A resumed run continues with the checkpoint's own model, so a flag that asks for another one would be
    ignored without a word: refuse it. ``named`` is the fields the command line named (its flags and its
    --config file's keys; :func:`kizuna.train.config.named_fields`): those are checked whatever their value,
    so ``--model S/4`` on a run of another model is refused even though S/4 is the default. Without it (a
    config built in Python) a field at its default counts as not given, as a resume need not repeat the
    run's flags. ``saved`` is the checkpoint's ``train_config``.

    ``state_fields``: settings the optimizer's saved state is shaped by (which optimizer, which parameters
    train). Another value cannot load it, so they are refused whether named or not: before, a resume failed
    after "resumed from" with a KeyError ('momentum') or torch's "a parameter group that doesn't match the
    size of optimizer's group", which named no flag."""
    state_changed = [f"--{name.replace('_', '-')} {flag_value(getattr(cfg, name))} (the run has "
                     f"{flag_value(saved[name])})" for name in state_fields
                     if name in saved and getattr(cfg, name) != saved[name]]
    if state_changed:
        raise ValueError(f"--resume {path}: the checkpoint's optimizer state belongs to the run's own optimizer and "
                         "trained parameters, so " + "; ".join(state_changed) + " cannot continue it. Drop the "
                         "flag, or start a new run in another --out")
    if named is None:
        defaults = {f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
                    for f in dataclasses.fields(cfg)}
        named = frozenset(name for name in fields if getattr(cfg, name) != defaults[name])
    changed = [name for name in fields
               if name in named and name in saved and not _same_setting(name, getattr(cfg, name), saved[name])]
    if changed:
        said = "; ".join(f"{name}={getattr(cfg, name)!r} (the run has {saved[name]!r})" for name in changed)
        hint = "Drop the flag, or start a new run in another --out"
        if "init" in changed:
            # `vit finetune CHECKPOINT` cannot drop its required checkpoint argument: name the command that can
            # continue the run (it takes the checkpoint to start from out of the run's own settings)
            out = path.parent.parent if path.parent.name == "checkpoints" else Path(getattr(cfg, "out", "OUT"))
            hint = (f"Continue a fine-tune without naming its checkpoint: `kizuna vit train --out "
                    f"{shlex.quote(str(out))} --resume latest`; or start a new run in another --out")
        raise ValueError(f"--resume {path}: the run continues with its own model, so " + said
                         + f" would be ignored. {hint}")


# settings that may name a checkpoint on disk: one path has several spellings (base/model/, ./base/model, an
# absolute path), and a resume that spelt it otherwise than the run was refused as asking for another model
PATH_SETTINGS = ("init", "model")


# what a run evaluates on: changed on a resume, its numbers are not comparable with the best so far
EVAL_SET_SETTINGS = ("eval_zeroshot", "eval_retrieval", "eval_max_samples", "eval_split", "val_data", "val_split",
                     "val_max_samples")


def same_evaluation_set(name: str, value, saved) -> bool:
    """Whether a resume's ``value`` of the evaluation setting ``name`` is the run's ``saved`` one: equal, or two
    spellings of one existing path (relative and absolute)."""
    if value == saved:
        return True
    if isinstance(value, str) and isinstance(saved, str) and value and saved:
        return same_place(Path(value), Path(saved))
    return False


def _as_json(value):
    """``value`` as train_config.json reads it back (tuples as lists, at any depth); itself where it is no JSON."""
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError):
        return value


def _same_setting(name: str, value, saved) -> bool:
    """Whether a resume's ``value`` of setting ``name`` is the run's ``saved`` one: equal, or, for a setting
    that names a checkpoint (:data:`PATH_SETTINGS`), both existing paths to the same place. A preset name
    (S/4, not a path here) still compares as a string."""
    if value == saved or _as_json(value) == _as_json(saved):  # (a .py config's (16, 32), the run's saved [16, 32])
        return True
    if name == "loss" and value == "model":  # "the model's own", which the run recorded as the loss it took: the
        return True  # command that started the run (a config file's loss="model") was refused on its resume
    if name not in PATH_SETTINGS or not isinstance(value, (str, os.PathLike)) or not isinstance(saved, (str, os.PathLike)):
        return False
    if not str(value) or not str(saved):
        return False
    return same_place(Path(value).expanduser(), Path(saved).expanduser())


def flag_value(value) -> str:
    """A setting as its flag is written (``true``, ``sgd``, ``2``)."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def announce_restored(cfg, restored: list[str]) -> None:
    """Say which settings a resume took from the checkpoint (the names :func:`resumed_config` returns)."""
    if restored:
        print(f"--resume {cfg.resume}: the run's own settings where the command line names none: "
              + ", ".join(f"{k}={getattr(cfg, k)!r}" for k in restored), file=sys.stderr)
