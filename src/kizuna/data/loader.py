"""DataLoader wiring: batch collation with skip accounting, and a resumable loader wrapper.

Public API
----------
``make_loader(dataset, sampler, num_workers=0, collate=None, *, pin_memory=None,
prefetch_factor=2, persistent_workers=True, timeout=0, worker_init_fn=None,
multiprocessing_context=None) -> Loader``
    a :class:`torch.utils.data.DataLoader` driven by ``sampler`` as its ``batch_sampler``.
    ``collate`` defaults to ``Collate(tokenizer=dataset.tokenizer)``. ``pin_memory`` defaults to
    ``torch.cuda.is_available()``; ``prefetch_factor`` / ``persistent_workers`` only apply with
    workers.
``Loader``
    iterate it once per epoch (after ``sampler.set_epoch(e)``); ``len(loader)`` = batches per
    epoch; ``loader.skips`` is the :class:`~kizuna.data.sources.SkipCounter` of the current /
    last epoch (load-time skips from all workers), ``loader.total_skips`` accumulates over epochs,
    ``loader.report()`` gives the end-of-epoch line, e.g. ``"skipped 3 samples: corrupt_image=2,
    empty_caption=1 (e.g. key 000000012 in shard x.tar)"``. ``state_dict()`` /
    ``load_state_dict()`` are the sampler's, counting only batches already handed to the caller
    (not the ones prefetched by workers), with the skips counted so far (loaded only by the rank whose
    state it is); ``loader.epoch_finished`` says whether the batches handed out reach the epoch's end.
    With workers, the wait for a batch is cut into polls of ``POLL_SECONDS``: ``loader.on_wait(seconds)``, when
    set, is called after each poll that found no batch (the trainers stop there for a Ctrl-C, and end a run
    whose worker is hung with :class:`LoaderStalled`); unset, the loader waits for ever, as torch's does.
``watched_batches(dataloader)``
    a plain DataLoader's batches (an evaluation's, `kizuna embed`'s; made with ``timeout=loader_timeout(workers)``),
    waited for in polls too: :class:`LoaderStalled` after ``LOADER_TIMEOUT_MINUTES``, or as the innermost
    ``with loader_waits_watched(on_wait)`` says (the commands' --loader-timeout-minutes).
``Collate(tokenizer=None, max_examples=3)``
    list of samples -> batch dict (below); ``None`` samples are dropped and counted.

A batch is a dict::

    {
      "images":   Tensor [B, ...]   stacked transform outputs (torch.empty(0) when B == 0),
      "captions": list[str | None]  one caption per sample (None for label-only samples),
      "text":     Tensor [B, L]     only when a tokenizer is given: tokenizer(captions); a
                                    caption it rejects (ValueError) drops that sample as
                                    "bad_caption",
      "labels":   LongTensor [B]    class index, -1 where the sample has none,
      "keys":     list[str]         sample keys (shard key / CSV path / folder-relative stem),
      "indices":  LongTensor [B]    positions in the SampleIndex,
      "epoch":    int | None,       "position": int | None   (sampler epoch, batch number),
      "skipped":  dict[str, int]    reason -> samples of this batch dropped at load time,
      "skip_examples": dict[str, list[str]]   reason -> first few locations,
    }

``B`` can be smaller than the sampler's batch size (skipped samples, ``drop_last=False`` tail) and
even 0; the training loop should skip empty batches but must still iterate them, so that skip
counts and the resume position stay right.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

from .images import pillows_own
from .sampler import EpochSampler
from .sources import SkipCounter

__all__ = ["Collate", "Loader", "make_loader", "trim_batch", "workers_outlive_sigterm"]


# Set while a training loop of this process stops on SIGTERM by itself (trainer.StopOnInterrupt): a scheduler
# (Slurm) signals the whole process group, and torch's workers die at once on a SIGTERM from anyone
# but their parent, so the main process met a dead loader mid-step and stopped with nothing saved. One byte of
# shared memory, made lazily, so the workers of any start method (fork, forkserver, spawn) read the live value.
_main_saves_on_sigterm = None


def _sigterm_flag():
    global _main_saves_on_sigterm
    if _main_saves_on_sigterm is None:
        import multiprocessing

        _main_saves_on_sigterm = multiprocessing.RawValue("b", 0)
    return _main_saves_on_sigterm


def workers_outlive_sigterm(on: bool) -> None:
    """While on, this process's loader workers ignore SIGTERM: the main process got it too, stops after its
    step, saves, and shuts them down itself. Off again before that shutdown, which may terminate() them."""
    _sigterm_flag().value = int(on)


def _picklable(items: list) -> list:
    """The items that pickle (a filter or an opener defined where a worker cannot import it stays behind)."""
    import pickle

    kept = []
    for item in items:
        try:
            pickle.dumps(item)
        except Exception:  # noqa: BLE001 - anything unpicklable is left out, not the worker's start
            continue
        kept.append(item)
    return kept


def _pillows_unnamed_bomb(category, filename: str) -> bool:
    from PIL import Image

    return issubclass(category, Image.DecompressionBombWarning) and os.path.basename(filename) == "Image.py"


class CommandWarnings:
    """A worker's warnings in the command's voice ("kizuna embed: warning: ..."), once per text, as in the main
    process (where :func:`kizuna.apps.cli.main`'s handler calls one)."""

    def __init__(self, command: str):
        self.command, self.shown = command, set()

    def __call__(self, message, category, filename, lineno, file=None, line=None):
        import sys

        if _pillows_unnamed_bomb(category, filename):
            return  # (kizuna's own names the image: kizuna.data.images._say_a_bomb_by_name)
        if str(message) not in self.shown:
            self.shown.add(str(message))
            print(f"{self.command}: warning: {message}", file=file or sys.stderr)


class _WorkerInit:
    """A worker's init: SIGTERM is ignored while the main process saves on it (above), and otherwise ends the
    worker, as torch's handler does. Decided by a thread woken through the signal wakeup fd, which Python's C-level
    handler writes even while the worker's main thread is stuck in C code: a Python handler alone never ran there
    (the loader's terminate() did nothing, and the process hung at exit), and blocking the signal instead was
    inherited by every program the worker started (a subprocess's terminate() did nothing). Picklable.

    Pickled (spawn, forkserver: the macOS and Windows default), it also carries Pillow's decompression-bomb limit
    (``PIL.Image.MAX_IMAGE_PIXELS``) and its truncated-image switch (``PIL.ImageFile.LOAD_TRUNCATED_IMAGES``) as the
    main process has them when the workers start: a spawned worker imports PIL afresh, with the defaults, and a limit
    raised in the user's script (as ImageTooLarge advises) never reached it. A forked worker has the main process's memory, and the live value in it."""

    def __init__(self, flag, then: Callable | None):
        self.flag, self.then = flag, then

    def __getstate__(self) -> dict:
        import sys

        state = dict(self.__dict__)
        image = sys.modules.get("PIL.Image")  # not imported: nothing set to carry over
        if image is not None:
            state["max_image_pixels"] = image.MAX_IMAGE_PIXELS
        image_file = sys.modules.get("PIL.ImageFile")
        if image_file is not None:  # a user's LOAD_TRUNCATED_IMAGES = True: kept images must not depend on --workers
            state["load_truncated_images"] = image_file.LOAD_TRUNCATED_IMAGES
        if image is not None:  # formats a plugin registered in the main process (pillow-heif's opener): each image
            # of them was counted corrupt in a spawned worker, which imports PIL with its own formats only
            state["pillow_openers"] = _picklable([(name, *image.OPEN[name]) for name in image.ID
                                                  if name in image.OPEN and not pillows_own(image.OPEN[name][0])])
        import warnings

        # the command line's one-line warnings and the user's filters: a spawned worker printed Python's form
        state["warning_filters"] = _picklable(list(warnings.filters))
        state["warning_voice"] = getattr(warnings.showwarning, "kizuna_command", None)
        return state

    def __call__(self, worker_id: int) -> None:
        import os
        import signal
        import threading

        if "max_image_pixels" in self.__dict__:
            from PIL import Image

            Image.MAX_IMAGE_PIXELS = self.max_image_pixels
        if "load_truncated_images" in self.__dict__:
            from PIL import ImageFile

            ImageFile.LOAD_TRUNCATED_IMAGES = self.load_truncated_images
        if self.__dict__.get("pillow_openers"):
            from PIL import Image

            Image.init()  # (its own formats first, as in the main process)
            for name, factory, accept in self.pillow_openers:
                if name not in Image.OPEN:
                    Image.register_open(name, factory, accept)
        if "warning_filters" in self.__dict__:
            import warnings

            warnings.filters[:] = self.warning_filters
            if self.warning_voice:
                warnings.showwarning = CommandWarnings(self.warning_voice)
        if os.name == "posix":
            wake, woken = os.pipe()  # (not inherited by programs the worker starts)
            os.set_blocking(woken, False)
            signal.signal(signal.SIGTERM, lambda signum, frame: None)  # decided in the thread below
            # the terminal's SIGHUP, which reaches the whole process group: the main process stops (saving, in a
            # training loop) and ends its workers; one whose main process died of it follows (torch's watchdog).
            # Caught, not ignored: a program the worker starts gets the default back with exec
            signal.signal(signal.SIGHUP, lambda signum, frame: None)
            signal.set_wakeup_fd(woken)
            threading.Thread(target=self._on_sigterm, args=(wake,), daemon=True, name="kizuna-sigterm").start()
            # a helper the dataset forks (multiprocessing, os.fork) would inherit the handler and the pipe: its
            # terminate() did nothing, and the worker read the helper's SIGTERM as its own and exited
            os.register_at_fork(after_in_child=lambda: _plain_sigterm(wake, woken))
        if self.then is not None:
            self.then(worker_id)

    def _on_sigterm(self, wake: int) -> None:
        import os
        import signal

        while True:
            signals = os.read(wake, 64)
            if signal.SIGTERM in signals and not self.flag.value:
                _run_exit_finalizers(timeout=2.0)
                os._exit(0)


def _run_exit_finalizers(timeout: float) -> None:
    """multiprocessing's exit clean-up, which os._exit skips: a worker that had sent batches had started its
    resource sharer, whose socket folder ($TMPDIR/pymp-*/listener-*) every SIGTERM left behind. In a thread of its
    own, given ``timeout`` seconds: the worker must end whatever the clean-up does."""
    import threading
    from multiprocessing import util

    def finalize():
        try:
            util._run_finalizers(0)  # as multiprocessing's own exit does: the listener first, then the rest
            util._run_finalizers()
        except Exception:  # noqa: BLE001 - leaving a folder behind is better than not ending
            pass

    cleanup = threading.Thread(target=finalize, daemon=True, name="kizuna-exit-cleanup")
    cleanup.start()
    cleanup.join(timeout)


def worker_init(then: Callable | None = None) -> _WorkerInit:
    """The ``worker_init_fn`` for every DataLoader with workers that kizuna builds (training, evaluation, embed):
    SIGTERM handled as above, Pillow's limit carried to spawned workers, then ``then(worker_id)`` if given."""
    return _WorkerInit(_sigterm_flag(), then)


def _plain_sigterm(*fds: int) -> None:
    """In a process forked from a worker: SIGTERM as by default again, and the worker's wakeup pipe closed."""
    import os
    import signal

    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
    except ValueError:  # forked from a thread other than the main one: signals cannot be set there
        pass
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


class Collate:
    def __init__(self, tokenizer: Callable | None = None, max_examples: int = 3):
        self.tokenizer = tokenizer
        self.max_examples = max_examples

    def __call__(self, samples: Sequence[dict | None]) -> dict[str, Any]:
        skips = SkipCounter(max_examples=self.max_examples)
        carried = getattr(samples, "skips", None)
        if carried is not None:
            skips.update(carried)
        items = [s for s in samples if s is not None]
        # Datasets without __getitems__ return bare Nones; count them rather than lose them.
        skips.add("unknown", n=len(samples) - len(items) - (carried.total if carried else 0))
        text = None
        if self.tokenizer is not None and items:
            items, text = self._tokenize(items, skips)
        if items:
            # torch's collate: in a loader worker it stacks straight into shared memory, where the batch goes to
            # the main process anyway (one copy less), and a /dev/shm too small for it fails here, in the worker,
            # as an error the main process receives; stacked privately, the batch failed to fit when the worker's
            # queue thread copied it there, was lost, and the main process waited for it for ever
            images = torch.utils.data.default_collate([s["image"] for s in items])
        else:
            images = torch.empty(0)
        captions = [s.get("caption") for s in items]
        batch: dict[str, Any] = {
            "images": images,
            "captions": captions,
            "labels": torch.tensor([s.get("label", -1) for s in items], dtype=torch.long),
            "keys": [s.get("key") for s in items],
            "indices": torch.tensor([s.get("index", -1) for s in items], dtype=torch.long),
            "epoch": getattr(samples, "epoch", None),
            "position": getattr(samples, "position", None),
            "skipped": skips.as_dict(),
            "skip_examples": {k: list(v) for k, v in skips.examples.items()},
        }
        if text is not None:
            batch["text"] = text
        if torch.utils.data.get_worker_info() is not None:  # the small tensors too, as the images: in the worker,
            # where a /dev/shm without room fails as an error the main process receives (a 128-byte labels tensor
            # failed in the queue thread instead, and the main process waited for its batch for ever)
            for value in (batch["labels"], batch["indices"], text):
                if isinstance(value, torch.Tensor):
                    value.share_memory_()
        return batch

    def _tokenize(self, items: list[dict], skips: SkipCounter) -> tuple[list[dict], Any]:
        captions = [s.get("caption") for s in items]
        if any(c is None for c in captions):
            raise ValueError("tokenizer given but some samples have no caption; "
                             "build the index with require='caption'")
        try:
            return items, self.tokenizer(captions)
        except ValueError:
            pass
        # One untokenizable caption (e.g. nothing left after text cleaning) must not kill a worker
        # and with it the run: retry one by one and drop the offenders.
        kept, rows = [], []
        for s in items:
            try:
                rows.append(self.tokenizer([s["caption"]]))
            except ValueError:
                skips.add("bad_caption", f"key {s.get('key')} (sample {s.get('index')})")
                continue
            kept.append(s)
        return kept, (torch.cat(rows) if rows else None)


def trim_batch(batch: dict[str, Any], n: int) -> dict[str, Any]:
    """The first ``n`` samples of a collated batch (every per-sample entry cut alike)."""
    size = len(batch["labels"])

    def per_sample(v) -> bool:
        return (isinstance(v, list) or isinstance(v, torch.Tensor) and v.dim() > 0) and len(v) == size

    return {k: v[:n] if per_sample(v) else v for k, v in batch.items()}


# Seconds of one wait for a worker's batch before the loader looks up (torch checks its workers are alive as often)
POLL_SECONDS = 2.0


class LoaderStalled(RuntimeError):
    """No batch from the data loader's workers for longer than a run allows: a worker is hung (a decoder stuck on
    one file, a network file system that stopped answering). torch's loader waits for ever."""


def polled(batches: Iterator, poll_seconds: float, on_wait: Callable[[float], None] | None) -> Iterator:
    """The batches of a DataLoader iterator whose ``timeout`` is ``poll_seconds`` (0: torch's own untimed wait),
    each waited for in polls: ``on_wait(seconds waited for this batch)`` after each poll that found none, which may
    raise to end the wait. A timed-out wait leaves torch's iterator where it was: the batch is asked for again."""
    while True:
        waited = 0.0
        while True:
            try:
                batch = next(batches)
                break
            except StopIteration:
                return
            except RuntimeError as e:
                if not (poll_seconds and str(e).startswith("DataLoader timed out")):
                    raise
                pinning = getattr(batches, "_pin_memory_thread", None)  # (torch's untimed wait checks it)
                if pinning is not None and not pinning.is_alive():
                    raise RuntimeError("Pin memory thread exited unexpectedly") from None
                waited += poll_seconds
                if on_wait is not None:
                    on_wait(waited)
        yield batch


# Seconds without a batch after which a command says it is waiting for its loader's workers
SAY_A_WAIT_AFTER_S = 60.0
# How long a loader that nothing else watches (an evaluation's, `kizuna embed`'s) waits for a batch before it ends
# the command (a hung worker waited for ever): the commands' --loader-timeout-minutes, read at each wait
LOADER_TIMEOUT_MINUTES = 10.0


def wait_watch(stall_limit_s: float, then: str = "Ctrl-C stops") -> Callable[[float], None]:
    """An ``on_wait`` (see :func:`polled`) that says once, after :data:`SAY_A_WAIT_AFTER_S`, that it is waiting,
    and raises :class:`LoaderStalled` once a batch has been waited for ``stall_limit_s`` (0: for ever)."""
    said = False

    def on_wait(waited: float) -> None:
        nonlocal said
        if stall_limit_s and waited >= stall_limit_s:
            raise LoaderStalled(
                f"no batch from the data loader's workers in {waited / 60:.3g} min: a worker is hung (a decoder "
                "stuck on one file, a network file system that stopped answering) or the data is that slow to "
                "read; --loader-timeout-minutes sets the wait (0: for ever), and --workers 0 shows where it hangs")
        if not said and waited >= SAY_A_WAIT_AFTER_S:
            said = True
            limit = f"up to {stall_limit_s / 60:.3g} min" if stall_limit_s else "for ever"
            import warnings

            warnings.warn(f"no batch from the data loader's workers for {waited:.0f} s (slow storage, or a worker "
                          f"is hung); waiting {limit} (--loader-timeout-minutes), {then}", RuntimeWarning)

    return on_wait


# The innermost watcher of the waits of loaders that have no watcher of their own (see watched_batches)
_WAIT_WATCHERS: list[Callable[[float], None]] = []


class loader_waits_watched:  # noqa: N801 (a context manager, used as a function is)
    """Within the block, the batches :func:`watched_batches` waits for are watched by ``on_wait`` (a trainer's
    mid-run evaluation: a stop or a stall there ends it), not by the default :func:`wait_watch`."""

    def __init__(self, on_wait: Callable[[float], None]):
        self.on_wait = on_wait

    def __enter__(self):
        _WAIT_WATCHERS.append(self.on_wait)
        return self

    def __exit__(self, *exc) -> None:
        _WAIT_WATCHERS.remove(self.on_wait)


def loader_timeout(num_workers: int) -> float:
    """The ``timeout`` of a DataLoader that :func:`watched_batches` iterates: one poll, with workers."""
    return POLL_SECONDS if num_workers > 0 else 0.0


def watched_batches(dataloader: torch.utils.data.DataLoader) -> Iterator:
    """The batches of a plain DataLoader made with ``timeout=loader_timeout(num_workers)`` (an evaluation's,
    `kizuna embed`'s), its waits watched by the innermost :class:`loader_waits_watched`, else by
    :func:`wait_watch` with :data:`LOADER_TIMEOUT_MINUTES`: a worker hung on one file waited for ever."""
    on_wait = _WAIT_WATCHERS[-1] if _WAIT_WATCHERS else wait_watch(LOADER_TIMEOUT_MINUTES * 60)
    return polled(iter(dataloader), dataloader.timeout, on_wait)


class Loader:
    """Thin wrapper over a DataLoader that aggregates skips and tracks the delivered position."""

    def __init__(self, dataloader: torch.utils.data.DataLoader, sampler: EpochSampler, dataset=None,
                 poll_seconds: float = 0.0):
        self.dataloader = dataloader
        self.sampler = sampler
        self.dataset = dataloader.dataset if dataset is None else dataset
        self.skips = SkipCounter()
        self.total_skips = SkipCounter()
        # the DataLoader's timeout is a poll, not a limit (make_loader set it): a timed-out wait is waited again
        self.poll_seconds = poll_seconds
        self.on_wait: Callable[[float], None] | None = None

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        self.skips = SkipCounter()
        resumed, self._resumed_epoch_skips = getattr(self, "_resumed_epoch_skips", None), None
        if resumed:  # the part of this epoch before the checkpoint, so its report counts the whole epoch
            self.skips.update(*resumed)
        # The sampler runs ahead of us (worker prefetch), so its own position is not the resume position:
        # what was handed out is. Batches come in the sampler's order, one per index batch (an all-skipped
        # one is an empty batch), so counting them from where the sampler starts tells the position of any
        # batch, whatever the dataset or collate function returns (a tuple, a list without tags).
        epoch, position = self.sampler.epoch, self.sampler.iteration_start
        # nothing handed out of this epoch yet: a checkpoint before its first batch (a loader worker's death there)
        # read the sampler's own count, which the prefetch had moved on, and the resume skipped batches
        self._delivered = (epoch, position)
        for batch in self._batches():
            position += 1
            if isinstance(batch, dict):
                skipped = batch.get("skipped") or {}
                if skipped:
                    self.skips.update(skipped, batch.get("skip_examples"))
                    self.total_skips.update(skipped, batch.get("skip_examples"))
            self._delivered = (epoch, position)
            yield batch

    def _batches(self) -> Iterator:
        """The DataLoader's batches, each waited for in polls (:attr:`on_wait` told how long after each empty
        one)."""
        return polled(iter(self.dataloader), self.poll_seconds, lambda waited: self.on_wait and self.on_wait(waited))

    def report(self) -> str:
        return self.skips.report()

    def close(self) -> None:
        """Shut the worker processes down now: persistent workers live as long as the DataLoader does (a notebook
        that trained kept them, and their memory, until the trainer was collected). Iterating again starts anew."""
        running = getattr(self.dataloader, "_iterator", None)
        self.dataloader._iterator = None
        if running is not None and hasattr(running, "_shutdown_workers"):
            running._shutdown_workers()

    @property
    def epoch_finished(self) -> bool:
        """Whether the batches handed out reach the end of the sampler's epoch (never, for an endless
        resampled one)."""
        return self._position()["finished"]

    def _position(self) -> dict:
        state = self.sampler.state_dict()
        delivered = getattr(self, "_delivered", None)
        if delivered is not None and delivered[0] == state["epoch"]:
            state["batches_consumed"] = delivered[1]
        endless = self.sampler.resampled and self.sampler.steps_per_epoch is None  # len() raises: no end
        state["finished"] = not endless and state["batches_consumed"] >= len(self.sampler)
        return state

    def state_dict(self) -> dict:
        """The sampler's position, and the skips counted so far (a resumed run's reports go on counting from
        them). At an epoch's end its skips are left out: the trainer reports them right after this checkpoint
        (or, stopped by Ctrl-C there, before it stops), and a resume there would report them a second time."""
        state = self._position()
        finished = state.pop("finished")
        state["skips"] = {"total": dict(self.total_skips.counts), "epoch": {} if finished else dict(self.skips.counts)}
        # and the places they name (a resumed run's report named another sample than the uninterrupted run's)
        state["skip_examples"] = {"total": _lists(self.total_skips.examples),
                                  "epoch": {} if finished else _lists(self.skips.examples)}
        return state

    def load_state_dict(self, state: dict) -> None:
        self.sampler.load_state_dict(state)
        self._delivered = None  # the position of batches handed out before this load means nothing now
        skips = state.get("skips") or {}  # checkpoints written before skips were saved have none
        if state.get("rank", self.sampler.rank) != self.sampler.rank:
            # another rank's state (the trainers save rank 0's, with every rank's skips summed in it): that
            # rank carries the counts on, or a report summing the ranks would count them again
            skips = {}
        examples = (state.get("skip_examples") or {}) if skips else {}
        self.total_skips = SkipCounter(skips.get("total") or {}, examples.get("total"))
        epoch = dict(skips.get("epoch") or {})
        self._resumed_epoch_skips = (epoch, examples.get("epoch")) if epoch else None


def _lists(examples: dict) -> dict:
    return {reason: list(places) for reason, places in examples.items()}


def check_epoch_gave_samples(source: str, batches: int, steps: int, report: str) -> None:
    """Raise when an epoch handed out ``batches`` batches and the training loop could take no step from
    them: every sample was skipped (all images corrupt, say), and the loop would go round empty epochs
    for ever. An epoch with no batch at all (a run resumed at its very end) is not an error."""
    if batches and not steps:
        raise ValueError(f"{source}: a whole epoch ({batches} batches) gave no usable sample: {report}. "
                         "Every sample was skipped; check the files the report names")


def warn_if_shared_memory_is_small(num_workers: int, minimum: int = 1 << 30, path: str = "/dev/shm",
                                    stacklevel: int = 2) -> None:
    """Loader workers hand their batches to the main process through shared memory (/dev/shm). Where it is small
    (a Docker container's default is 64 MB) a batch that does not fit stops the command (the collates stack into
    it in the worker, so that this is an error: stacked privately, the batch was lost on its way and the main
    process waited for it for ever: `kizuna embed` at its defaults hung). Said before the workers start, with
    the two ways out."""
    if num_workers <= 0:
        return
    try:
        stats = os.statvfs(path)
    except (OSError, AttributeError):  # no /dev/shm (macOS, Windows): nothing to say
        return
    free = stats.f_bavail * stats.f_frsize
    if free < minimum:
        import warnings

        warnings.warn(f"only {free / 2**20:.0f} MiB of shared memory is free ({path}): loader worker processes "
                      "hand their batches over through it, and a batch that does not fit stops the command. Pass "
                      "--workers 0, or give the container more (docker run --shm-size=2g)", RuntimeWarning,
                      stacklevel=stacklevel)


# A socket path holds at most 107 bytes (Linux); multiprocessing's are TEMP/pymp-XXXXXXXX/listener-XXXXXXXX
_SOCKET_PATH_MAX, _SOCKET_SUFFIX = 107, len("/pymp-XXXXXXXX/listener-XXXXXXXX")


def use_a_short_multiprocessing_temp_dir(num_workers: int, stacklevel: int = 3) -> None:
    """A worker hands a batch over through a socket multiprocessing makes in a folder of the temp dir; where
    that path is too long for a socket (a TMPDIR of 76 characters or more), the worker's send failed ("AF_UNIX
    path too long") and the main process waited for the batch for ever: `kizuna train --workers 1` hung. The
    folder is made under /tmp (or /var/tmp) instead, as Python 3.13 does; set before the workers start, which
    inherit it."""
    if num_workers <= 0 or os.name != "posix":
        return
    import tempfile
    from multiprocessing import process, util

    # (in bytes: a TMPDIR of 38 characters, 26 of them CJK, is 90 bytes long, and hung as a long one did)
    if process.current_process()._config.get("tempdir") or len(os.fsencode(tempfile.gettempdir())) + \
            _SOCKET_SUFFIX <= _SOCKET_PATH_MAX:
        return
    for short in ("/tmp", "/var/tmp"):
        if os.path.isdir(short) and os.access(short, os.W_OK | os.X_OK):
            saved, tempfile.tempdir = tempfile.tempdir, short
            try:
                util.get_temp_dir()  # made, kept for the workers, removed at exit
            finally:
                tempfile.tempdir = saved
            return
    import warnings

    warnings.warn(f"the temp folder {tempfile.gettempdir()} is too long a path for the sockets loader workers hand "
                  "their batches over through, and /tmp is not writable: they may wait for ever. Set TMPDIR to a "
                  "shorter folder, or pass --workers 0", RuntimeWarning, stacklevel=stacklevel)


def before_workers_start(num_workers: int) -> None:
    """What loader worker processes need settled before they start, for every loader that has them (kizuna's, the
    evaluators', `kizuna embed`'s): a warning where shared memory is small, a temp folder short enough for their
    sockets."""
    warn_if_shared_memory_is_small(num_workers, stacklevel=3)
    use_a_short_multiprocessing_temp_dir(num_workers, stacklevel=4)


def make_loader(dataset, sampler: EpochSampler, num_workers: int = 0,
                collate: Callable | None = None, *, pin_memory: bool | None = None,
                prefetch_factor: int | None = 2, persistent_workers: bool = True,
                timeout: float = 0, worker_init_fn: Callable | None = None,
                multiprocessing_context=None, generator: torch.Generator | None = None) -> Loader:
    if collate is None:
        collate = Collate(tokenizer=getattr(dataset, "tokenizer", None))
    if pin_memory is None:
        pin_memory = torch.cuda.is_available()
    workers = num_workers > 0
    before_workers_start(num_workers)
    dl = torch.utils.data.DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate,
        pin_memory=pin_memory,
        prefetch_factor=prefetch_factor if workers else None,
        persistent_workers=persistent_workers and workers,
        # no timeout of the caller's: one of POLL_SECONDS, waited again (Loader._batches), so that a caller can
        # look up while a worker is slow or hung (a Ctrl-C waited for ever on a hung worker's batch)
        timeout=timeout or (POLL_SECONDS if workers else 0),
        worker_init_fn=worker_init(worker_init_fn) if workers else worker_init_fn,
        multiprocessing_context=multiprocessing_context if workers else None,
        # Its own generator: otherwise every iter() draws a worker base seed from the global torch
        # RNG, and a resumed run (which calls iter() at a different point) would drift from the
        # uninterrupted one. Samples are seeded per (seed, epoch, index) anyway.
        generator=generator if generator is not None else torch.Generator().manual_seed(0),
    )
    return Loader(dl, sampler, dataset, poll_seconds=POLL_SECONDS if workers and not timeout else 0.0)
