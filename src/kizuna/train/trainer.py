"""What the two trainers share: a run's set-up, its checkpoint state, its resume, and the loop.

:class:`~kizuna.train.contrastive.ContrastiveTrainer` (image-text pairs) and
:class:`~kizuna.train.supervised.SupervisedTrainer` (labelled images) differ in their model, data, step
and evaluation; everything around those is here, written once:

    __init__        start(cfg): resumed settings, processes, precision, checkpoints, an earlier run set aside
                    ... the trainer builds its model, data (self.loader, self.sampler) and optimizer ...
                    prepare_optimisation(optimizer): run length, time budget, schedule, DDP, torch.compile
                    open_log(): the resume, metrics.jsonl, config.json (none of them for a resume of a finished run)
    train()         the loop: steps, log records, the time budget, evaluation, checkpoints, best/, Ctrl-C

A trainer supplies ``fit_batch`` (one optimizer step on a loader batch, ending in ``apply_gradients()``;
returns numbers summed into the log window: ``loss`` and ``samples``, and its own), ``window_record`` (its fields of a log record),
``evaluate``, and where it has them ``extra_train_state`` / ``restore_extra_train_state`` (state of its
own that a resume needs), ``optimizer_settings`` and ``finish``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import itertools
import math
import os
import shlex
import sys
import time
import warnings
import weakref
from abc import ABC, abstractmethod
from pathlib import Path

import torch
from torch import nn

from kizuna.apps.common import parts_below, same_place
from kizuna.data.loader import check_epoch_gave_samples, loader_waits_watched, wait_watch
from kizuna.data.sources import SkipCounter
from kizuna.data.transforms import TRAINING_PIXELS_VERSION
from kizuna.eval.encode import gather_object, summed_skips
from kizuna.models.checkpoint import atomic_write_text
from kizuna.models.layers import float32_default

from .budget import (TimeBudget, after_step, initial_length, length_state, restore_length,
                     warn_if_warmup_fills_the_run)
from .checkpointing import (EVAL_SET_SETTINGS, RUN_LOCK, CheckpointManager, announce_restored, check_resume_settings,
                            claim_run_folder, flag_value, hold_run_lock, mark_training, read_train_state,
                            release_run_lock, resumed_config, rng_state, run_folder_owner, run_lock_lost,
                            same_evaluation_set, set_rng_state)
from .compiling import compiled_or_eager
from .config import python_numbers
from .distributed import (DistInfo, all_reduce_sum, even_batch, init_distributed, launched_by_torchrun,
                          raise_together)
from .logging import MetricLogger
from .memory import keep_freed_memory, release_kept_memory
from .optim import announce_precision, autocast_for, make_scheduler, tune_for_training, use_config_settings

# Samples of the last training batch whose outputs are checked for NaN/inf before each checkpoint (Trainer._non_finite)
OUTPUT_CHECK_SAMPLES = 4


def check_optimizer_state_shapes(optimizer, saved: dict, resume_from) -> None:
    """Each saved moment (AdamW's exp_avg, SGD's momentum buffer) has its parameter's shape: torch loads the
    state without looking, and the fused step then read past the buffers (a checkpoint folder whose weights
    had been replaced by another model's, a 600-token vocabulary's moments beside 49,408 embeddings: the
    process died of a segmentation fault, no message)."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    order = [i for group in saved.get("param_groups", []) for i in group.get("params", [])]
    if len(order) != len(params):
        return  # (torch refuses another count: said in Trainer._load_optimizer_state)
    state = saved.get("state", {})
    for index, param in zip(order, params):
        for name, value in (state.get(index) or {}).items():
            if isinstance(value, torch.Tensor) and value.dim() and value.shape != getattr(param, "shape", None):
                raise ValueError(
                    f"--resume {resume_from}: its optimizer state ({name} of shape {tuple(value.shape)}) does not "
                    f"fit the checkpoint's weights (a parameter of shape {tuple(param.shape)}): the weights were "
                    "replaced after the run saved them (another model written into the folder?), so the run cannot "
                    "go on from it. Resume from another checkpoint of the run, or start a new run from these "
                    "weights in another --out")


def run_log_of(checkpoint: Path) -> Path | None:
    """The metrics.jsonl of the run a checkpoint folder belongs to: RUN/metrics.jsonl for RUN/checkpoints/step_N,
    RUN/metrics.jsonl.prev for RUN/checkpoints.prev/step_N (a run set aside by a fresh one); None elsewhere."""
    folder = checkpoint.parent.name
    if folder == "checkpoints" or folder.startswith("checkpoints."):
        return checkpoint.parent.parent / ("metrics.jsonl" + folder[len("checkpoints"):])
    return None


# a number per trainer built: which one took OUT last (checkpointing.run_lock_owner)
_FOLDER_TOKENS = itertools.count(1)


class Trainer(ABC):
    #: settings that make the model: a resume continues with the checkpoint's, so the command line may not change them
    resume_fixed: tuple[str, ...] = ()
    #: settings the optimizer's saved state is shaped by (the optimizer, which parameters train): a resume
    #: refuses another value whether named or not, as the state would not load
    resume_state_fixed: tuple[str, ...] = ()
    #: the flags that set the training set's size (a resume's data position counts batches of that set)
    data_size_fields: tuple[str, ...] = ("data",)  # the settings that decide how many training samples there are
    #: the batch field that holds one entry per sample ("captions", "labels")
    batch_key: str
    #: the progress bar's label
    bar_label = "training"
    #: the evaluation of the step the loop is at, once made (a stop or failure there saves it with the checkpoint)
    step_metrics: dict | None = None
    #: (name, what) of the files this trainer writes in OUT as the run's own, besides checkpoints and log: a fresh
    #: run sets an earlier run's aside with them (kizuna.train.logging.set_aside_with_checkpoints); only these,
    #: so a user's own file of another name is never moved
    #: (train_config.json: kept in OUT, it said the new run's settings beside the earlier run's .prev set, which
    #: compare-runs then read as that run's)
    run_outputs: tuple[tuple[str, str], ...] = (("curves.png", "training curves"), ("train_config.json", "settings"))
    stopped_by: str | None = None  # "Ctrl-C", "SIGTERM" or "SIGHUP" asked for during the last step (it still ended)
    final_metrics: dict | None = None  # what a finished train() returned (train() again returns it)
    #: how a stopped run is continued, said after a Ctrl-C (None: the flags "--out OUT --resume latest")
    resume_command: str | None = None

    def __init_subclass__(cls, **kwargs):
        """A trainer whose construction fails lets go of OUT's lock at once: a weakref on the half-built trainer
        let go only when it was collected, and a notebook keeps the failed cell's traceback (and the trainer),
        so a failed resume left the folder locked against every other process. It puts the caller's torch thread
        count back too (set by start(); only train() restored it, so a refused run left a notebook on --threads)."""
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None:
            return

        def guarded(self, *args, **kw):
            try:
                with float32_default():  # the model is built in float32 whatever a host set (below)
                    init(self, *args, **kw)
            except BaseException:
                self._let_go_of_the_folder()
                self._close_the_log()
                self._give_back_the_callers_state()
                raise
            if type(self).__init__ is guarded:  # (the outermost __init__: a subclass's calls its base's within)
                self._claimed = claim_run_folder(self.out, self._folder_token)  # (an earlier trainer's is refused)
                # its TensorBoard writer's thread too, opened by the start record (again at train()'s first): a
                # trainer built again and again in a notebook left one thread each, for the life of the process
                self._close_the_log()
                # built: the run's streams kept for train(), the caller's state its own again meanwhile (a sweep
                # that built its trainers first trained the second on the first's threads, and its patch dropout
                # drew from the stream the first had given back)
                self._keep_the_runs_state()
                self._give_back_the_callers_state()

        guarded.__doc__, guarded.__wrapped__ = init.__doc__, init
        cls.__init__ = guarded

    def _close_the_log(self) -> None:
        logger = getattr(self, "logger", None)
        if logger is not None:
            logger.close()

    def _hold_the_folder(self) -> None:
        """Take OUT's lock for this trainer (refused if another process's run holds it); let go by
        :meth:`_let_go_of_the_folder`, or when a trainer that never trained is collected."""
        self._run_lock_key = hold_run_lock(self.out)
        self.release_run_lock = weakref.finalize(self, release_run_lock, self._run_lock_key)

    def _set_training_modes(self) -> None:
        """The modes a training step runs its model in (a subclass puts locked parts back in eval mode)."""
        self.model.train()

    def _note_the_callers_state(self) -> None:
        """torch's thread count, cuDNN setting and GPU, and the global RNGs as the caller has them now (a notebook's,
        say): given back by :meth:`_give_back_the_callers_state` when construction and each train() end."""
        import random

        import numpy as np

        self._threads_before = torch.get_num_threads()
        # (GPU 0, CUDA's default, where the caller had not started CUDA: reading the current GPU would start it)
        self._backend_before = (torch.backends.cudnn.benchmark,
                                torch.cuda.current_device() if torch.cuda.is_initialized() else 0)
        # CUDA's only where the caller had started CUDA (reading it would start it)
        self._rng_before = (torch.random.get_rng_state(),
                            torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None,
                            torch.initial_seed(), random.getstate(), np.random.get_state())

    def _keep_the_runs_state(self) -> None:
        """The run's own RNG streams (seeded from cfg.seed, moved on by its model's initialisation and its steps),
        kept while the caller has its own: a train() after a Ctrl-C went on drawing patch dropout from the caller's
        stream (given back by the first), and its losses left the exact resume's at the next step."""
        self._run_rng = rng_state()

    def _take_up_the_runs_state(self) -> None:
        """At train(): the caller's state noted, the run's threads and RNG streams put in place."""
        self._note_the_callers_state()
        if self.cfg.threads:
            torch.set_num_threads(self.cfg.threads)
        kept = getattr(self, "_run_rng", None)
        if kept is not None:
            set_rng_state(kept)

    def _give_back_the_callers_state(self) -> None:
        """torch's thread count and global RNG as the caller had them before start() (a notebook's, say): after
        train(), a caller's `torch.rand` drew the same numbers whatever it had seeded or drawn before (the run
        reseeds the RNG with cfg.seed), so a random search around train() tried one "random" setting again."""
        if hasattr(self, "_threads_before"):
            torch.set_num_threads(self._threads_before)
        if hasattr(self, "_backend_before"):
            # cuDNN autotuning (tune_for_training turns it on for a GPU run) and the current GPU (--device cuda:1
            # made it GPU 1): a notebook's later `.cuda()` landed on the run's GPU, and its reproducible cuDNN
            # settings stayed autotuned
            benchmark, gpu = self._backend_before
            torch.backends.cudnn.benchmark = benchmark
            # (not a torchrun rank's: its GPU is its own for the process, and NCCL's last barrier runs on it)
            if not launched_by_torchrun() and torch.cuda.is_initialized() and torch.cuda.current_device() != gpu:
                torch.cuda.set_device(gpu)
        before = getattr(self, "_rng_before", None)
        if before is not None:
            import random

            import numpy as np

            cpu, cuda, seed, python, numpy = before
            torch.random.set_rng_state(cpu)
            if cuda is not None:
                torch.cuda.set_rng_state_all(cuda)
            elif torch.cuda.is_initialized():  # started by the run: as the caller's seed left it (queued till then)
                torch.cuda.manual_seed_all(seed)
            random.setstate(python)  # a resume sets Python's and numpy's generators to the checkpoint's
            np.random.set_state(numpy)

    def _folder_check_together(self, check) -> None:
        """``check()`` of OUT, by the main process (the only one that writes there); every process raises where it
        refused: under torchrun the other ranks went on into their first collective and died there with 38 lines
        of "Connection closed by peer" after rank 0's one-line refusal. Every rank calls it, at the same point;
        the conditions inside ``check`` are the main process's own (the others hold no lock, and their OUT may
        be another disk's)."""
        refusal = None
        if self.dist.is_main:
            try:
                check()
            except Exception as error:  # re-raised on this rank by raise_together, once the others know
                refusal = error
        raise_together(refusal, self.device, "the run's folder", f"--out {self.out}: ")

    def _hold_the_folder_together(self, only_if_there: bool = False) -> None:
        """OUT's lock, taken by the main process (refused where another run writes there)."""

        def hold():
            if self.release_run_lock is None and (self.out.is_dir() or not only_if_there):
                self._hold_the_folder()

        self._folder_check_together(hold)

    def _check_the_folder_is_still_ours(self) -> None:
        """Before each checkpoint and log record: OUT still holds the lock file this run locked (moved or removed
        while the run wrote there, and a new run started at the path, the two mixed in one folder; `latest` then
        named the other run's model)."""

        def still_ours():
            if not self.out.is_absolute() and os.getcwd() != self.started_in:
                # (every path of the run's is OUT's, read against the current folder at each write: the files went
                # into a folder of that name under the new one, beside another run's)
                raise ValueError(f"--out {self.out} is relative, and the current folder changed since the trainer "
                                 f"was built ({self.started_in} -> {os.getcwd()}): its files would go elsewhere. "
                                 f"Go back (os.chdir({self.started_in!r})), or build the trainer with an absolute "
                                 "out")
            key = getattr(self, "_run_lock_key", None)
            if run_folder_owner(getattr(self, "_claimed", None)) not in (None, self._folder_token):
                raise ValueError(f"--out {self.out}: another trainer of this process, built after this one, has "
                                 "taken the folder over (its run's files are there now); train that one, or build "
                                 "this one again (with another out to keep both)")
            lost = run_lock_lost(key)
            if lost is not None:
                raise ValueError(f"--out {self.out}: the run's folder lock ({RUN_LOCK}) was {lost} while this run "
                                 "wrote there: the folder was moved or removed (a new run may be using the path "
                                 "now). Stopping, so as not to write into another run's folder; the checkpoints "
                                 "this run saved are where the folder went")

        self._folder_check_together(still_ours)

    def _let_go_of_the_folder(self) -> None:
        """OUT's lock, if this trainer holds it, let go now (a weakref.finalize: calling it twice does nothing)."""
        release = getattr(self, "release_run_lock", None)
        if release is not None:
            release()

    # ----- set-up ------------------------------------------------------------------------------
    def start(self, cfg, named: frozenset[str] | None):
        """Returns the run's config. ``named``: the fields the command line set
        (kizuna.train.config.named_fields). A resume takes the others from the checkpoint and refuses a named
        one that asks for another model. None (a config built in Python): ``cfg`` as it is, and a non-default
        field counts as named."""
        if torch.is_inference_mode_enabled():  # its model's parameters were inference tensors: an autograd error
            raise ValueError("a trainer cannot be built or run inside torch.inference_mode() (its parameters would "
                             "be inference tensors, which cannot be trained): build and train it outside that block")
        cfg, restored = resumed_config(cfg, named)
        self.logged_losses: list[tuple[int, float]] = []  # (step, loss) of each log record (_diverged names them)
        self.started_in = os.getcwd()  # (a resume from elsewhere names its relative paths anew: refused otherwise)
        self._folder_token = next(_FOLDER_TOKENS)  # (which trainer took OUT last: _check_the_folder_is_still_ours)
        # numbers as Python ones, also in a config built as the dataclass itself (make_config's keywords are): a
        # numpy seed (a notebook's `for seed in np.arange(3)`) overflowed numpy's generators on seed % 2**64 and
        # could not be written to train_config.json; a tensor lr was written into by the schedule; steps 2.5 never ended
        fields = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
        typed = python_numbers(type(cfg), fields)
        changed = {k: v for k, v in typed.items() if v is not fields[k]}
        cfg = dataclasses.replace(cfg, **changed) if changed else cfg
        self.cfg, self.named = cfg, named
        self._note_the_callers_state()  # the caller's again when construction ends (a notebook), and each train()
        if cfg.threads:
            from kizuna.apps.common import warn_if_threads_past_the_cores

            warn_if_threads_past_the_cores(cfg.threads)  # (the command line says it once: one text)
            torch.set_num_threads(cfg.threads)
        self.dist: DistInfo = init_distributed(cfg.device)
        self.device = self.dist.device
        self.check_config(cfg)
        self.precision = announce_precision(cfg.precision, self.device, self.dist.is_main)
        if self.dist.is_main:
            announce_restored(cfg, restored)
        tune_for_training(self.device)
        self.out = Path(cfg.out)
        # before any work: the first write was the first checkpoint, at the end by default
        self._folder_check_together(lambda: check_run_folder(self.out, self.run_outputs))
        # OUT's lock, taken by open_log (the main process only: the others write nothing): let go when train()
        # ends, or when a trainer that never trained is collected
        self.release_run_lock = None
        self.per_rank_batch = cfg.batch_size // self.dist.world_size
        import random

        import numpy as np

        torch.manual_seed(cfg.seed)
        # nothing in training draws from these, but checkpoints save their state: unseeded, two runs of one seed
        # saved different generator states around identical weights
        random.seed(cfg.seed)
        np.random.seed(cfg.seed % 2**32)
        if cfg.resume:
            # locked before the checkpoint is chosen and read: a resume started beside a run still writing chose
            # its latest step, which that run's pruning then deleted (a "damaged checkpoint", or a stale step
            # trained again over the finished run's), instead of saying that another run is writing there
            self._hold_the_folder_together(only_if_there=True)
        self.ckpt = CheckpointManager(self.out, cfg.keep_last, *self.best_metric(cfg))
        self.resume_from = self.ckpt.resolve(cfg.resume) if cfg.resume else None
        if self.resume_from is not None:
            self._refuse_a_foreign_resume_into_a_run()
            # before the model is built and the data indexed and decoded (`vit train --resume latest --batch-size
            # 32` was refused after 8 s of decoding CIFAR-10 onto the device)
            self._check_saved_settings(read_train_state(self.resume_from, mmap=True).get("train_config", {}))
        return cfg

    @property
    def resumes_another_run(self) -> bool:
        """Resumed from a checkpoint outside OUT/checkpoints (another run's folder, or OUT/checkpoints.prev)."""
        # (by the file system's identity: `Runs/x` and `runs/x` are one folder on macOS and Windows)
        return self.resume_from is not None and parts_below(self.resume_from.parent, self.ckpt.dir) != ()

    def _refuse_a_foreign_resume_into_a_run(self) -> None:
        """A checkpoint from outside OUT/checkpoints continues in OUT only when OUT holds no run of its own: its
        log is set aside and the checkpoint's run's copied in (open_log), which into a folder with checkpoints
        (or its own checkpoints.prev) mixed two runs: `--resume latest` later picked the other run's, and a
        retried recovery copied the set-aside log of the wrong run."""
        if not self.resumes_another_run:
            return
        inside = bool(parts_below(self.resume_from, self.out))
        if not (inside or self.ckpt.step_folders() or (self.ckpt.dir / "best").is_dir()):
            return
        raise ValueError(f"--resume {self.resume_from}: a checkpoint from outside {self.ckpt.dir}, which "
                         + ("is in --out itself" if inside else "holds another run's checkpoints")
                         + "; continue it in a new folder (--out NEW --resume PATH)"
                         + ("" if inside else ", or go on with the run in --out with --resume latest"))

    def best_metric(self, cfg) -> tuple[str | None, str]:
        """The evaluation metric that picks best/ (None: no best/), and which end of it is best."""
        return None, "auto"

    def check_config(self, cfg) -> None:
        """Refuse settings this trainer cannot run, once the process group (and so the world size) is known."""
        if cfg.batch_size % self.dist.world_size:
            raise ValueError(f"batch_size {cfg.batch_size} must be divisible by world_size {self.dist.world_size}")

    def prepare_optimisation(self, optimizer: torch.optim.Optimizer) -> None:
        """Once ``self.sampler`` and ``self.model`` are built: the run's length (from --steps / --epochs, or
        planned later by a time budget), the cosine schedule over it, DDP, torch.compile."""
        cfg = self.cfg
        if self.dist.rank:  # after the model's initialisation (the same everywhere): a stream of each rank's own
            torch.manual_seed(rank_seed(cfg.seed, self.dist.rank))
        self.steps_per_epoch = len(self.sampler)
        self.total_steps, self.planned = initial_length(cfg, self.steps_per_epoch)
        self.budget = TimeBudget(cfg.time_limit_minutes, cfg.time_budget_minutes)
        self.optimizer = optimizer
        self.scheduler = make_scheduler(optimizer, lambda: self.total_steps, cfg.warmup_steps, cfg.min_lr_ratio)
        self.ddp = None
        if self.dist.enabled:
            self.ddp = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.forward_model = compiled_or_eager(self.ddp or self.model, cfg.compile)

    def open_log(self) -> None:
        """The resume if any, then metrics.jsonl, TensorBoard and train_config.json (with the precision "auto"
        resolved to here): written before the resume's checks, a refused resume left the file naming settings
        that never ran (and `analyze compare-runs` reported them). A resume of a finished run, which trains
        nothing, writes none of them (it rewrote train_config.json with its flags and added an events file)."""
        self.step, self.epoch = 0, 0
        # One run per folder, from here (the model and data are built: a run that fails to start leaves no folder)
        # until train() ends; a second run into it is refused before it moves anything aside.
        self._hold_the_folder_together()
        # A fresh run: earlier checkpoints here are not its own. Set aside only now that the model, data and
        # optimizer are built: a run that failed to start (a typo in --data) moved them and left nothing to
        # resume.
        if self.resume_from is None:
            failed = None
            if self.dist.is_main:
                try:
                    self.ckpt.set_aside_earlier_run(self.run_outputs)
                except Exception as error:  # (the other ranks stop with rank 0: they went on into their next
                    failed = error  # collective and added its gloo traceback to rank 0's one line)
            raise_together(failed, self.device, "the run's folder", f"--out {self.out}: ")
        if self.resume_from is not None:
            self._resume()
        finished = self.resume_from is not None and self.step >= self.total_steps
        if self.resume_from is not None and not finished and self.dist.is_main:
            self.ckpt.keep_later_best(self.step)  # a best/ of the branch a resume from an earlier step leaves
        # A checkpoint from outside OUT/checkpoints (another run's folder, or this folder's checkpoints.prev, as
        # the error for a mistaken fresh run advises): OUT's log is another run's. It is set aside as a fresh run's
        # is, and the log goes on from the checkpoint's own run's (before, the two runs' records were mixed).
        foreign = self.resumes_another_run
        source = run_log_of(self.resume_from) if foreign and self.dist.is_main else None
        records = source.read_text(encoding="utf-8") if source is not None and source.is_file() else ""
        self.logger = MetricLogger(self.out, enabled=self.dist.is_main and not finished,
                                   fresh=self.resume_from is None or foreign, outputs=self.run_outputs)
        if self.resume_from is not None:
            if records and self.logger.enabled:
                atomic_write_text(self.logger.path, records)
                self.logger.copy_events_of(source)
            # what the killed run logged after the checkpoint; a branch's (later checkpoints stay) kept aside
            branch = not foreign and bool(getattr(self.ckpt, "abandoned", None))
            aside = self.logger.drop_after(self.step, keep_aside=branch)
            if aside is not None:
                print(f"--resume {self.resume_from}: the log's records after step {self.step} (of the later "
                      f"checkpoints this run leaves) are kept in {aside}", file=sys.stderr)
            # where the log's clock restarts: the time the run stood still is no training time (compare-runs)
            # with the precision this part runs in: train_config.json says the latest only (a run begun in bf16 and
            # resumed with --precision fp32 read as fp32 throughout)
            self.logger.log(self.step, {"from": self.resume_from.name, "precision_used": self.precision}, kind="resume")
        else:  # where the log's clock starts (compare-runs' logged time began at the first record, at --log-every)
            self.logger.log(0, {"precision_used": self.precision}, kind="start")
        self.logger.write_config({**self.cfg.to_dict(), "precision_used": self.precision})

    def autocast(self):
        return autocast_for(self.precision, self.device)

    def apply_gradients(self) -> None:
        """The end of every step: clip, update, advance the schedule, clear. ``step_lr`` keeps the rate this
        update used, for the log (the scheduler has moved on to the next step's by the time it is written)."""
        if self.cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.grad is not None],
                                           self.cfg.grad_clip)
        self.step_lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    def log_skips(self, skips, name: str = "skipped", step: int | None = None, extra: dict | None = None) -> None:
        """A data record of the samples ``skips`` (a SkipCounter) counts: the total and one field per reason
        (and ``extra``'s fields)."""
        self.logger.log(self.step if step is None else step, {name: skips.total, **{
            f"{name}/{reason}": n for reason, n in skips.as_dict().items()}, **(extra or {})}, kind="data")

    # ----- checkpoints -------------------------------------------------------------------------
    def extra_train_state(self) -> dict:
        return {}

    def restore_extra_train_state(self, state: dict) -> None:
        pass

    def optimizer_settings(self) -> dict:
        """The optimizer's settings a resume takes from the command line (its saved state would override them)."""
        return {"betas": tuple(self.cfg.betas), "eps": self.cfg.eps}

    def time_a_checkpoint(self) -> float:
        """Seconds this run's checkpoint takes to write, timed on one written in full and deleted: the time budget's
        plan prices the final checkpoint, and those of --save-every, with it. Planned before any checkpoint was
        timed (the default --save-every 0), they were priced at 0 s, and the final one overran the budget (B/16
        on a 2-core CPU: 5 s over a 45-s budget). A disk too full for it stops the run here, not at its end."""
        started = time.perf_counter()
        self.save(trial=True)
        return time.perf_counter() - started

    def save(self, metrics: dict | None = None, trial: bool = False) -> None:
        """``trial``: see :meth:`time_a_checkpoint`."""
        self._check_finite_weights()  # no NaN checkpoint (after a Ctrl-C or a failed evaluation either)
        self._check_the_folder_is_still_ours()
        data, per_rank, extra = self.loader.state_dict(), {}, self.extra_train_state()
        if self.dist.enabled:
            if "skips" in data:  # every rank's (summed), which rank 0 carries on after a resume
                ranks = gather_object(data["skips"])
                data["skips"] = {part: dict(sum_counts(r[part] for r in ranks)) for part in data["skips"]}
            per_rank["rng_ranks"] = gather_object(rng_state())  # each rank's stream (patch dropout) goes on
            # and each rank's own extra state (the MiniLM caption cache: rank 1's was lost, and a resume drifted)
            per_rank["extra_ranks"] = gather_object(extra)
            extra = {}  # (rank 0's is extra_ranks[0]: it was saved twice, a caption cache of GBs at scale)
        failed = None
        if self.dist.is_main:
            state = {
                **extra, "step": self.step, "epoch": self.epoch,
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "rng": rng_state(), **per_rank, "data": data, "train_config": self.cfg.to_dict(),
                "precision_used": self.precision, "training_pixels": TRAINING_PIXELS_VERSION, **length_state(self),
                "started_in": self.started_in,  # what the run's relative paths are read from (a resume checks it)
            }
            try:
                self.ckpt.save(self.step, self.model, state, metrics, trial=trial)
            except Exception as error:  # a full disk: the other ranks stop with rank 0's message, where they went
                failed = error  # on into their next collective and died there with a gloo traceback after it
        raise_together(failed, self.device,
                       f"the {'trial ' if trial else ''}checkpoint of step {self.step} (writing it failed)")

    def _resume(self) -> None:
        """Every rank's checks and loads (:meth:`_restore_checkpoint`), then one agreement on them before
        anything is written (open_log rewrites metrics.jsonl after this returns): a check that refused on one
        rank only (its node's copy of the data differs) raised there, and the others went on into their first
        collective and died there ("Connection closed by peer"; NCCL waits until its timeout), after rank 0 had
        already rewritten the run's log. Now every rank raises: the one that refused with its message, the
        others naming it."""
        try:
            state, refusal = self._restore_checkpoint(), None
        except Exception as error:  # re-raised on this rank by raise_together, once the others know
            state, refusal = None, error
        raise_together(refusal, self.device, "the resume", f"--resume {self.resume_from}: ")
        self._say_if_precision_changed(state.get("precision_used"), int(state["step"]))
        self._say_if_pixels_changed(state.get("training_pixels"))
        if self.dist.is_main:
            print(f"resumed from {self.resume_from} at step {self.step} (epoch {self.epoch})", file=sys.stderr)
            if self.ckpt.best_restarted and self.ckpt.metric:
                metric, mode = self.ckpt.best_restarted
                print(f"best/ starts afresh: the run picked it by the {mode} of {metric}, this resume by the "
                      f"{self.ckpt.mode} of {self.ckpt.metric}", file=sys.stderr)
            elif self.eval_set_changed:
                print("best/ starts afresh: this resume evaluates on another set ("
                      + ", ".join(f"--{k.replace('_', '-')} {flag_value(new)} (was {flag_value(old)})"
                                  for k, old, new in self.eval_set_changed)
                      + "), and its numbers are not comparable with the run's best so far", file=sys.stderr)

    def _check_saved_settings(self, saved: dict) -> None:
        """The flags a resume may not change, against the checkpoint's ``train_config``: at start (from the state
        file mapped, not read) and again as the checkpoint is restored."""
        check_resume_settings(saved, self.cfg, self.resume_fixed, self.resume_from, self.named,
                              self.resume_state_fixed)
        if saved.get("batch_size", self.cfg.batch_size) != self.cfg.batch_size:  # the sampler said it in its terms
            raise ValueError(f"--resume {self.resume_from}: the run's batch size is {saved['batch_size']}, and its data "
                             f"position counts batches of that size, so --batch-size {self.cfg.batch_size} cannot "
                             "continue it. Drop the flag, or start a new run in another --out")

    def _restore_checkpoint(self) -> dict:
        """This rank's part of the resume: the checkpoint's weights, the checks of the settings and data that
        must continue it, the optimizer, schedule, length, data position, RNG and extra state. No collective
        (a rank that raises here must not leave the others waiting in one) and nothing written."""
        state = self.ckpt.load_into(self.resume_from, self.model)
        if self.ckpt.abandoned and self.dist.is_main:  # (deleted by _prune as the run passes them: said first)
            shown = self.ckpt.abandoned
            print(f"--resume {self.resume_from}: {', '.join(shown[:4])}{', ...' if len(shown) > 4 else ''} come after "
                  "it, another branch of this run: each is replaced or deleted as this run reaches or passes its step "
                  "(copy any you want to keep)", file=sys.stderr)
        # a resume that evaluates on another set (more samples, another split or dataset) compared its numbers with
        # the best so far, measured on the old set: best/ kept a 50-image top-1 over a 300-image one
        saved = state.get("train_config") or {}
        self.eval_set_changed = [(k, saved[k], getattr(self.cfg, k)) for k in EVAL_SET_SETTINGS
                                 if k in saved and hasattr(self.cfg, k) and not same_evaluation_set(k, getattr(self.cfg, k), saved[k])]
        if self.eval_set_changed and self.ckpt.best_value is not None and not self.ckpt.best_restarted:
            self.ckpt.best_value = None
        else:
            self.eval_set_changed = []
        bad = self._non_finite_weight()
        if bad is not None:  # saved by a kizuna that ran diverged runs on: resumed, it stopped at its first record
            from .checkpointing import earlier_checkpoint_hint  # and advised resuming the same checkpoint

            raise ValueError(f"{self.resume_from}: its {bad} holds non-finite weights (a run that had diverged when "
                             f"it was saved); {earlier_checkpoint_hint(self.resume_from)}")
        self._check_saved_settings(state.get("train_config", {}))
        self._check_data_position(state["data"])
        self._load_optimizer_state(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        # the run's length first: the rate set next reads it (with the open length of a budgeted run that
        # is not yet planned, the first step after a resume went at the peak rate)
        self.step, self.epoch = int(state["step"]), int(state["epoch"])
        restore_length(self, state)
        use_config_settings(self.optimizer, self.scheduler, self.cfg.lr, self.cfg.weight_decay,
                            **self.optimizer_settings())
        self.loader.load_state_dict(state["data"])
        ranks = state.get("rng_ranks") or []
        if len(ranks) == self.dist.world_size:
            set_rng_state(ranks[self.dist.rank])
        else:  # one process, or a checkpoint from before each rank's stream was saved
            set_rng_state(state["rng"])
            if self.dist.rank:
                torch.manual_seed(rank_seed(self.cfg.seed, self.dist.rank, self.step))
        extras = state.get("extra_ranks") or []
        # (another number of processes than saved it: rank 0's, which a torchrun checkpoint keeps there alone)
        self.restore_extra_train_state(extras[self.dist.rank] if len(extras) == self.dist.world_size else
                                       extras[0] if extras else state)
        return state

    def _load_optimizer_state(self, saved: dict) -> None:
        """torch refuses a state whose parameter groups differ from the optimizer's ("loaded state dict contains
        a parameter group that doesn't match the size of optimizer's group"), naming no file: a run started by
        an earlier kizuna on a CLIP-loss model with a logit bias, which trained the bias (frozen now: one
        parameter fewer is optimised). Said with the checkpoint, and how to start anew from its weights."""
        check_optimizer_state_shapes(self.optimizer, saved, self.resume_from)
        try:
            self.optimizer.load_state_dict(saved)
        except ValueError as error:
            count = lambda groups: sum(len(g["params"]) for g in groups)  # noqa: E731
            how = getattr(self, "new_run_from_weights", "kizuna train --model {path}")  # vit: its own command
            raise ValueError(
                f"--resume {self.resume_from}: its optimizer state holds other trainable parameters than this model "
                f"({count(saved.get('param_groups', []))} in the checkpoint, {count(self.optimizer.param_groups)} "
                "here): a locked tower or a frozen parameter changed since the run started (an earlier kizuna "
                "trained a CLIP-loss model's logit bias, which is frozen now), so the run cannot go on from it. "
                f"Start a new run from its weights with `{how.format(path=shlex.quote(str(self.resume_from)))}` in "
                "another --out"
            ) from error

    def _say_if_precision_changed(self, used: str | None, step: int) -> None:
        """A resume under --precision auto trains in what auto means here and now, which need not be what the run
        trained in (another machine; an older kizuna, whose auto was fp32 on every CPU): said, with the flag that
        continues the run as it trained, instead of switching in silence."""
        if not self.dist.is_main or self.cfg.precision != "auto":
            return
        if used is None and self.precision == "bf16" and self.device.type == "cpu":  # a checkpoint from before
            print(f"--resume {self.resume_from}: the checkpoint does not say which precision the run trained in "
                  "(an older kizuna, whose --precision auto was fp32 on CPUs); it goes on in bf16 autocast here. "
                  "Pass --precision fp32 to continue it in fp32", file=sys.stderr)
        elif used is not None and used != self.precision:
            print(f"--resume {self.resume_from}: the run trained in {used} to step {step}, and --precision auto "
                  f"means {self.precision} here; pass --precision {used} to continue it as it trained",
                  file=sys.stderr)

    def _say_if_pixels_changed(self, saved: int | None) -> None:
        """A run resumed by a kizuna whose training images come out other than they did for the kizuna that
        started it (an upgrade between the two) goes on, but not as it would have: said, as "--resume continues a
        killed run exactly" does not hold across that change (weights off by 1e-3 after a few steps, in silence)."""
        if not self.dist.is_main or saved == TRAINING_PIXELS_VERSION:
            return
        which = ("an older kizuna, which does not record how it made its training images" if saved is None else
                 f"a kizuna whose training images came out differently (version {saved}, this one's "
                 f"{TRAINING_PIXELS_VERSION})")
        print(f"--resume {self.resume_from}: the run was trained by {which}; it goes on, but its remaining steps "
              "may see other pixels than they would have (not bit-exactly as it would have continued)",
              file=sys.stderr)

    def _check_data_position(self, saved: dict) -> None:
        """The sampler refuses a position it cannot continue in its own terms ("sampler state does not match
        this sampler (saved, current): seed=0/1"); said here by the flag, or the number of processes, that
        changed."""
        own, path = self.sampler.state_dict(), self.resume_from
        if saved.get("world_size", own["world_size"]) != own["world_size"]:
            was = saved["world_size"]
            raise ValueError(f"--resume {path}: the run was trained by {was} process{'es' if was > 1 else ''} and "
                             f"this one has {own['world_size']}; its data position counts each process's batches, so "
                             "a resume on another number of processes is not supported. Resume it with "
                             + (f"torchrun --nproc_per_node {was}" if was > 1 else "one process (without torchrun)"))
        if saved.get("seed", own["seed"]) != own["seed"]:
            raise ValueError(f"--resume {path}: the run's data order is drawn from its seed, so --seed {own['seed']} "
                             f"(the run has {saved['seed']}) cannot continue it. Drop the flag, or start a new run in "
                             "another --out")
        if saved.get("resampled", own["resampled"]) != own["resampled"]:
            raise ValueError(f"--resume {path}: --resampled {flag_value(own['resampled'])} (the run has "
                             f"{flag_value(saved['resampled'])}) cannot continue its data position. Drop the flag, or "
                             "start a new run in another --out")
        if saved.get("num_samples", own["num_samples"]) != own["num_samples"]:
            given = [f"--{name.replace('_', '-')}" for name in self.data_size_fields
                     if self.named is None or name in self.named]  # (from Python: any of them)
            # the flags the command gave; none given (the run's own settings), the files or their reading changed
            why = (f"Drop {', '.join(given)} (the run's own are used)" if given else
                   (saved["num_samples"] > own["num_samples"] and _named_twice(self.cfg.data)) or
                   "Its own data settings find other files now: the files changed since the run started, or an "
                   "older kizuna indexed them otherwise (.bmp, .gif and .tif images are read now; a CSV's rows "
                   "that name one image are one sample since 2026-12-06). Restore the files")
            raise ValueError(f"--resume {path}: the run's training set has {saved['num_samples']} samples and this "
                             f"one {own['num_samples']}, so its data position would not mean the same. {why}, or "
                             "start a new run in another --out")
        self._check_data_fingerprint(saved, own)

    def _check_data_fingerprint(self, saved: dict, own: dict) -> None:
        """As many samples can still be others, or the same in another order (``DIR/*.tar`` read 0, 1, 10, 2, ...
        where ``DIR`` read 0, 1, 2, ...; a reordered ``::`` list; a shard swapped for another as large): the data
        position counts indices, and the rest of the epoch saw some samples twice and others never. Refused by
        the data fingerprint saved with the position; a checkpoint from before it resumes as it did."""
        from kizuna.data.sampler import describe_data_change
        from kizuna.data.sources import globs_read_otherwise_before

        path, data = self.resume_from, self.cfg.data
        shown = data if isinstance(data, (str, os.PathLike)) else "::".join(map(str, data))
        if "data_fingerprint" not in saved:
            try:
                globs = globs_read_otherwise_before(data)
            except (OSError, ValueError):
                globs = []
            if globs and self.dist.is_main:
                print(f"--resume {path}: the checkpoint (from an older kizuna) does not say in which order the run "
                      f"read its shards, and --data {shown} is now read in numeric order (2.tar before 10.tar; it was "
                      f"read as text: 10.tar before 2.tar) in {', '.join(globs)}; if the run started on that spelling, "
                      "the rest of its current epoch sees some samples twice and others never (the epochs after it "
                      "are whole)", file=sys.stderr)
            return
        change = describe_data_change(saved["data_fingerprint"], own.get("data_fingerprint"))
        if change is None:
            return
        if change.startswith("the same"):
            hint = ("Give --data the run's shards in the run's order (a folder or a brace range reads them as its "
                    "glob does now: in numeric order)")
        elif change.startswith("other images that do not decode"):  # decoded onto the device (vit train)
            hint = ("An image was repaired or broken since the run started (decoding the training set names those "
                    "that fail now). Restore the files")
        else:
            given = [f"--{name.replace('_', '-')}" for name in self.data_size_fields
                     if self.named is None or name in self.named]
            # the run's own paths may be gone (the data moved): then the flag is to give its files where they are
            hint = (f"Drop {', '.join(given)} (the run's own are used), or give the run's own files where they lie "
                    "now" if given else
                    "Its own data settings find other files now: the files changed since the run started. Restore "
                    "the files")
        raise ValueError(f"--resume {path}: --data {shown} gives {change}, so its data position would not mean the "
                         f"same. {hint}, or start a new run in another --out")

    # ----- the loop ----------------------------------------------------------------------------
    @abstractmethod
    def fit_batch(self, batch: dict) -> dict[str, float]:
        """One optimizer step on a loader batch (evened across ranks, not empty)."""

    @abstractmethod
    def evaluate(self) -> dict:
        """Metrics for the log and best/ ({} when there is nothing to evaluate on)."""

    def window_record(self, sums: dict[str, float]) -> tuple[dict, dict]:
        """This trainer's fields of a log record from the window's summed ``fit_batch`` numbers, and the
        short ones for the progress bar."""
        return {}, {}

    def evaluation_line(self, metrics: dict) -> str | None:
        return None

    def finish(self, metrics: dict) -> None:
        """At the last step, before its checkpoint (so a run killed in between is resumed from the step before
        and finishes again), with the latest evaluation's metrics. Not when a resume found the run complete."""

    def train(self) -> dict:
        # only while training: set in the constructor, a set-up that failed (a refused resume) or a trainer
        # never trained left the process keeping its freed memory
        kept = False
        if torch.is_inference_mode_enabled():  # (built outside, trained inside: the same autograd error)
            raise ValueError("train() cannot run inside torch.inference_mode(): call it outside that block")
        try:  # (the refusals below give the caller's state back too, in the finally)
            self._take_up_the_runs_state()
            if self.final_metrics is not None:  # train() again on a finished run: its numbers (it returned {})
                return dict(self.final_metrics)
            self._check_the_folder_is_still_ours()  # before anything is written (another trainer took it, a chdir)
            release = getattr(self, "release_run_lock", None)
            if release is not None and not release.alive:  # train() again after a stop: OUT locked again (the
                self.release_run_lock = None  # first let go when it ended), refused if another run holds it now
                self._hold_the_folder_together()
            kept = self.device.type == "cpu" and self.cfg.keep_freed_memory and keep_freed_memory()
            mark_training(getattr(self, "_run_lock_key", None), True)  # another trainer is refused OUT meanwhile
            if resumed_at_the_end(self):
                # the run's final metrics, as its end returned them (saved with its last checkpoint): {} left
                # `kizuna train --resume latest > final.json` (a rerun batch job) without the numbers it had
                from kizuna.analysis.report import read_extra

                metrics = read_extra(self.resume_from).get("metrics")
                self._draw_curves(only_if_stale=True)  # a run killed between its last checkpoint and its figure
                return dict(metrics) if isinstance(metrics, dict) else {}
            if self.step and getattr(self, "_trained_here", False):
                # train() again after a stop (Ctrl-C in a notebook, an error): the data from the batch after the
                # last one trained on, as a resume takes it (the sampler restarted its epoch: batches again)
                self.loader.load_state_dict(self.loader.state_dict())
            self._trained_here = True
            self._set_training_modes()  # (train() again after the eval mode it left the model in)
            if self.device.type == "cuda" and self.device.index is not None:  # (train() again: the caller's GPU
                torch.cuda.set_device(self.device)  # was put back after the first; what is made on "cuda" goes here)
            tune_for_training(self.device)  # (train() again: the caller's cuDNN setting was put back too)
            self._said_where_it_stopped = False
            try:
                with float32_default(), torch.enable_grad():  # (grad mode is the calling thread's: set here)
                    metrics = self._loop()  # finish() is called in it, before the last checkpoint
                self._draw_curves()
            except (KeyboardInterrupt, SystemExit):  # a second Ctrl-C, or one after the last step: what is saved
                self._say_where_it_stopped()
                raise
            if self.step >= self.total_steps:
                self.final_metrics = dict(metrics)
            return metrics
        finally:
            logger = getattr(self, "logger", None)
            if logger is not None:  # a run that raised (diverged, a second Ctrl-C) left its TensorBoard writer's
                logger.close()  # thread running: one more per failed run of a learning-rate sweep
            for loader in (getattr(self, "loader", None), getattr(self, "val_loader", None)):
                if hasattr(loader, "close"):  # no worker processes left behind in a caller's process
                    loader.close()
            mark_training(getattr(self, "_run_lock_key", None), False)
            model = getattr(self, "model", None)
            if isinstance(model, torch.nn.Module):  # in eval mode, as create_model gives a model: left training,
                model.eval()  # trainer.model.encode_image dropped patches at random (two calls differed by 6e-3)
            self._let_go_of_the_folder()  # the folder is free once the run is over (a notebook goes on)
            if kept:  # the process (a notebook's, say) does not hold the run's peak from now on
                release_kept_memory()
            self._keep_the_runs_state()
            self._give_back_the_callers_state()

    def _say_where_it_stopped(self) -> None:
        """The line after an interrupt that did not stop at a step and save (a second Ctrl-C, one after the last
        step's checkpoint): "interrupted" alone left the user to guess what was lost, with --save-every 0 the
        whole run, or nothing at all (a finished run stopped while drawing its curves)."""
        if getattr(self, "_said_where_it_stopped", True) or not self.dist.is_main:
            return
        self._said_where_it_stopped = True
        try:
            latest = self.ckpt.latest()
        except OSError:
            return
        saved = int(latest.name[5:]) if latest is not None and latest.name[5:].isdigit() else None
        if saved is not None and saved == self.step >= self.total_steps:
            said = (f"the run had finished: its last step, {self.step}, is saved ({latest}); `--resume latest` "
                    "draws what the interrupt cut short (curves.png)")
        elif saved == self.step:
            said = f"stopped at once after step {self.step}, which is saved: continue with {continue_with(self)}"
        elif latest is not None:
            said = (f"stopped at once after step {self.step}; the last checkpoint is {latest.name}, the steps since "
                    f"are not saved: continue from it with {continue_with(self)}")
        else:
            said = (f"stopped at once after step {self.step}; no checkpoint was saved, so the run starts over "
                    "(--save-every N saves on the way)")
        print(said, file=sys.stderr)

    def _draw_curves(self, only_if_stale: bool = False) -> None:
        """OUT/curves.png, the run's loss and evaluations against the step (a figure says it at a glance);
        a failure to draw only warns: the run itself is done. ``only_if_stale``: where it is missing or older than
        the log (a run killed after its last checkpoint had none, or its previous length's, for good)."""
        if not self.dist.is_main:
            return
        if only_if_stale:
            try:
                log_time = (self.out / "metrics.jsonl").stat().st_mtime_ns
            except OSError:
                return  # (no log: nothing to draw)
            try:
                if (self.out / "curves.png").stat().st_mtime_ns >= log_time:
                    return
            except OSError:
                pass
        from kizuna.models.checkpoint import drawn

        def curves(path):
            from .report import plot_curves  # (matplotlib: a failed import only warns too)

            return plot_curves(path.parent)

        if drawn(curves, self.out / "curves.png"):  # a batch job's log (--progress false) too: it never named it
            print(f"curves: {self.out / 'curves.png'}", file=sys.stderr)

    def _loop(self) -> dict:
        cfg, budget = self.cfg, self.budget
        warn_if_warmup_fills_the_run(self)
        from .logging import progress_bar  # its write() goes to stderr (tqdm's: stdout, the final JSON's)

        bar = progress_bar(total=self.total_steps if self.planned else None, initial=self.step, desc=self.bar_label,
                   unit="step", disable=not (self.dist.is_main and cfg.progress), dynamic_ncols=True)
        window = LogWindow()
        last_metrics: dict = {}
        budget.restart()
        # the step this run's folder holds a checkpoint of now: one resumed from elsewhere (another --out, an older
        # step, best/) is not what `--resume latest` here would continue
        here = self.ckpt.latest() if self.resume_from is not None else None
        saved_step = self.step if here is not None and same_place(here, self.resume_from) else None
        with StopOnInterrupt(enabled=not self.dist.enabled) as stop, self._watching_evaluation(stop):
            while self.step < self.total_steps:
                self.sampler.set_epoch(self.epoch)
                # an epoch resumed past its start: its batches before the checkpoint gave the steps, so a tail of
                # unusable batches is no sign of data that never trains (the resume was refused outright)
                whole_epoch = self.sampler.iteration_start == 0
                epoch_batches = epoch_steps = 0
                epoch_report = None  # the epoch's skip report, once made
                try:
                    for batch in _until_stopped(self.loader, stop, cfg.loader_timeout_minutes * 60):
                        if self.step >= self.total_steps:
                            break
                        epoch_batches += 1
                        batch = even_batch(batch, (self.loader.skips, self.loader.total_skips), self.device)
                        if len(batch[self.batch_key]) == 0:
                            continue
                        epoch_steps += 1
                        window.add(self.fit_batch(batch))
                        self._last_batch = batch  # what a checkpoint's outputs are checked on (_non_finite)
                        self.step += 1
                        self.step_metrics = None  # (this step's evaluation, once made: saved with any checkpoint of it)
                        bar.update(1)
                        planned_at, planned_before = time.perf_counter(), self.planned
                        try:
                            # the plan's evaluation, when the budget planned here
                            plan_metrics = after_step(self, bar)
                        except Exception as e:
                            self._stop_if_asked("the time budget's plan", e, False, bar, stop, window)
                            self._save_after_failure("the time budget's plan", last=False, bar=bar)
                            raise
                        if plan_metrics or self.planned != planned_before:  # (the plan's trial checkpoint too)
                            window.exclude(time.perf_counter() - planned_at)  # not samples/s time
                        last = self.step == self.total_steps
                        saving = bool(cfg.save_every and self.step % cfg.save_every == 0)
                        # also at every checkpoint (a Ctrl-C's too): the window is not saved, so a resume starts a
                        # new one
                        if self.step % cfg.log_every == 0 or last or saving or stop.requested:
                            self._log_window(window, bar)
                        metrics, paused_at, evaluated_in = None, time.perf_counter(), None
                        if plan_metrics:  # evaluated (and logged) a moment ago: not twice at one step
                            metrics = last_metrics = self.step_metrics = plan_metrics
                            self._say_evaluation(metrics, bar)  # (the plan's evaluation was logged, never said)
                        elif (cfg.eval_every and self.step % cfg.eval_every == 0) or last:
                            try:
                                metrics = self.evaluate()
                            except Exception as e:
                                self._stop_if_asked("the evaluation", e, last, bar, stop, window)
                                self._save_after_failure("the evaluation", last, bar)
                                raise
                            evaluated_in = time.perf_counter() - paused_at
                            if metrics:
                                self.logger.log(self.step, metrics, kind="eval")
                                last_metrics = self.step_metrics = metrics
                                self._say_evaluation(metrics, bar)
                        if (saving or last or stop.requested) and epoch_report is None and getattr(
                                self.loader, "epoch_finished", False):
                            # the epoch's report before its checkpoint, which leaves a finished epoch's skips out: a
                            # run killed between the two lost the report for good
                            epoch_report = self._report_epoch_skips(bar)
                        elif last and epoch_report is None:  # a run ending mid-epoch (--steps, a time limit, a run
                            # shorter than an epoch): its samples skipped so far went unsaid and unlogged
                            epoch_report = self._report_epoch_skips(bar, unfinished=True)
                        if saving or last:
                            saved_at = time.perf_counter()
                            if last:  # before the final checkpoint: a run whose last step is saved has finished
                                self._check_finite_weights()  # (save() checks too) no NaN model/ exported
                                self.finish(last_metrics)
                            self.save(metrics)
                            saved_step = self.step
                            budget.save_took(time.perf_counter() - saved_at)
                        elif metrics and self.dist.is_main:  # an evaluation between checkpoints may still be the best
                            best_at = time.perf_counter()
                            self.ckpt.update_best(self.step, self.model, metrics)
                            if evaluated_in is not None:  # its best/ write is this evaluation's cost (it was priced
                                evaluated_in += time.perf_counter() - best_at  # nowhere: runs overran by it)
                        if evaluated_in is not None:
                            budget.evaluation_took(evaluated_in)
                        if metrics is not None or saving:
                            budget.pause()  # evaluation and checkpoints are not step time
                            window.exclude(time.perf_counter() - paused_at)  # nor samples/s time
                        # Ctrl-C: after this step's evaluation and checkpoint (a stop at an evaluation step lost it
                        # for good, at the last step the run's end too); the last step simply ends the run
                        if stop.requested and not last:
                            if window.steps:  # the Ctrl-C came during this step's evaluation or checkpoint
                                self._log_window(window, bar)
                            if epoch_report is None and getattr(self.loader, "epoch_finished", False):
                                # Ctrl-C during this step's checkpoint, at the epoch's end
                                self._report_epoch_skips(bar)
                            stop_and_save(self, bar, saved=saving, signal_name=stop.requested)
                        if last:  # not one more batch: fetched, decoded and dropped (or waited for: a worker hung
                            break  # on it held the finished, saved run until --loader-timeout-minutes)
                    else:
                        report = self._report_epoch_skips(bar) if epoch_report is None else epoch_report
                        if whole_epoch:
                            check_epoch_gave_samples(cfg.data, epoch_batches, epoch_steps, report)
                        self.epoch += 1
                        continue
                except _LoaderFailed as e:  # between steps: the last finished one saved, then the error
                    if self.step >= self.total_steps:  # asked for a batch past the last step: the run has ended
                        break
                    if not self.dist.enabled:  # (under torchrun a log record is a collective the others are not in:
                        # one rank's failure hung the group; raised at once, torchrun ends it)
                        if window.steps:
                            self._log_window(window, bar)
                        if self.step and saved_step != self.step:
                            self._save_after_failure("the data loader", last=False, bar=bar)
                    raise e.error from None
                except _StoppedWhileLoading as e:  # the stop's own doing: saved at the last finished step
                    if self.step < self.total_steps:  # (after the last step the run has ended, and is saved)
                        print(f"{stop.requested}: {e}", file=sys.stderr)
                        if window.steps:
                            self._log_window(window, bar)
                        stop_and_save(self, bar, saved=saved_step == self.step, signal_name=stop.requested)
                break
            # a stop asked for during the last step ended the run as it would have ended: said to the caller,
            # whose work after training (the demo's ~45 s of final probes) must not go on as if nothing was asked
            self.stopped_by = StopOnInterrupt.NAMES[stop.requested] if stop.requested else None
        bar.close()
        self.logger.close()
        return last_metrics

    @contextlib.contextmanager
    def _watching_evaluation(self, stop):
        """The validation loader (`vit train --val-data`'s, which polls as the training one does) watched while the
        loop runs: a worker hung there waited for ever, past --loader-timeout-minutes and the first Ctrl-C (the
        second ended the run with nothing saved). A stop or stall there ends the evaluation, which the loop then
        saves the last finished step for, as for any failed evaluation."""
        val_loader = getattr(self, "val_loader", None)
        if hasattr(val_loader, "on_wait"):
            val_loader.on_wait = _watch_the_wait(stop, self.cfg.loader_timeout_minutes * 60)
        try:  # and the evaluators' own loaders (kizuna.data.loader.watched_batches), by the run's setting: the
            # command line's flag alone reached them, a config's (Python, a file) did not
            with loader_waits_watched(_watch_the_wait(stop, self.cfg.loader_timeout_minutes * 60)):
                yield
        finally:  # both loaders unwatched after the loop (_until_stopped watches the training one): their batches
            # read from Python afterwards wait as before, with no stop of a finished loop
            for loader in (val_loader, getattr(self, "loader", None)):
                if hasattr(loader, "on_wait"):
                    loader.on_wait = None

    def _say_evaluation(self, metrics: dict, bar) -> None:
        line = self.evaluation_line(metrics)
        if line and self.dist.is_main:
            bar.write(f"step {self.step}: {line}")

    def _report_epoch_skips(self, bar, unfinished: bool = False) -> str:
        """The end of an epoch: its skipped samples printed and logged (kind "data"), counted over every rank
        (rank 0's alone were reported: under torchrun about half of them); returns the report. A collective
        once an epoch, on every rank. ``unfinished``: the run ends before the epoch does, and these are the
        epoch's skips so far (the record says ``epoch_unfinished``: a resume that finishes the epoch logs the
        whole epoch's again)."""
        skips = summed_skips(self.loader.skips)
        if self.dist.is_main and skips.total:
            bar.write(f"epoch {self.epoch}{' (unfinished: the run ends here)' if unfinished else ''}: "
                      f"{skips.report()}")
            self.log_skips(skips, extra={"epoch_unfinished": 1} if unfinished else None)
        return skips.report()

    def _stop_if_asked(self, what: str, error: Exception, last: bool, bar, stop, window) -> None:
        """``what`` (an evaluation) failed after a stop was asked for: the stop's own doing (its loader's workers,
        killed by the group's signal as they started), so the stop it asked for, not an error to fix: the steps
        since the last record logged, the run saved where it stands (at its last step, its end without the
        evaluation), and the stop's exception raised. Returns where no stop was asked for."""
        if not stop.requested:
            return
        print(f"{stop.requested}: {what} at step {self.step} stopped with it ({type(error).__name__}: {error})",
              file=sys.stderr)
        if window.steps:
            self._log_window(window, bar)
        if not last:
            stop_and_save(self, bar, saved=False, signal_name=stop.requested)
        self._save_after_failure(what, last, bar)
        from kizuna.apps.cli import Terminated

        raise Terminated.for_signal(stop.requested) from error

    def _save_after_failure(self, what: str, last: bool, bar) -> None:
        """An evaluation failed after a finished step: that step is saved before the error goes on, so the
        training is not lost (at the end of a run with --save-every 0, the whole run was). One process only:
        under torchrun the failure may be one rank's (out of memory), whose save (a gather, a barrier) would
        meet the others' evaluation collectives - a hang, or crossed messages - where raising at once lets
        torchrun end the group in seconds. (Data that does not resolve is refused before training.)"""
        if self.dist.enabled:
            return
        self._said_where_it_stopped = True  # (said below: the interrupt's line took a failed end for a finished run)
        bad = self._non_finite()
        if bad is not None:  # nothing saved from diverged weights (vit's finish() exported them as model/)
            bar.write(f"{what} at step {self.step} failed, and {bad} (training diverged): nothing is saved from "
                      "them", file=sys.stderr)
            return
        if last:  # a checkpoint at the last step is a finished run: its end first, without the evaluation
            self.finish({})
        # (a step evaluated before the failure: its metrics, as its own save had)
        self.save(getattr(self, "step_metrics", None))
        if self.dist.is_main:
            saved = self.ckpt.dir / f"step_{self.step:07d}"
            how = continue_with(self)
            bar.write(f"{what} at step {self.step} failed; saved {saved} first" + (
                " (the run's end: evaluate it with `{}`)".format(
                    # (quoted: a path with a space was two arguments pasted)
                    getattr(self, "evaluate_command", "kizuna eval").format(out=shlex.quote(str(self.cfg.out)))) if last else
                f"; fix the cause and continue with {how}"), file=sys.stderr)

    def _log_window(self, window: "LogWindow", bar) -> None:
        sums = window.sums
        if self.dist.enabled:  # every rank's numbers (rank 0's local loss was logged): an all_reduce per record,
            keys = sorted(sums)  # at the same steps on every rank
            summed = all_reduce_sum(torch.tensor([float(sums[k]) for k in keys], dtype=torch.float64,
                                                 device=self.device))
            sums = dict(zip(keys, summed.tolist()))
        self._check_the_folder_is_still_ours()
        own, short = self.window_record(sums)
        # the loss: the mean of the ranks' (CLIP's local-loss terms average to the loss of the whole batch)
        record = {"loss": sums["loss"] / (window.steps * self.dist.world_size), **own, "lr": self.step_lr,
                  "epoch": self.epoch, "samples_per_s": sums["samples"] / max(window.elapsed(), 1e-9)}
        self.logger.log(self.step, record)
        if math.isfinite(record["loss"]):  # (what a divergence's message says of the checkpoints before it)
            self.logged_losses.append((self.step, record["loss"]))
        else:  # the mean over the ranks: every rank stops at this record
            bar.close()
            raise TrainingDiverged(self._diverged(f"the loss is {record['loss']} by step {self.step}"))
        bar.set_postfix(loss=f"{record['loss']:.3f}", **short, lr=f"{record['lr']:.2e}",
                        sps=f"{record['samples_per_s']:.0f}")
        if not self.cfg.progress and self.dist.is_main:  # no bar (a batch job's log): a line per record instead
            # a time-limit stop shortens total_steps to the step it stopped at: "step 21/21" read as a whole run
            of = f"/{getattr(self, 'length_before_limit', None) or self.total_steps}" if self.planned else ""
            print(f"step {self.step}{of}: loss {record['loss']:.4f}" + "".join(f", {k} {v}" for k, v in short.items())
                  + f", lr {record['lr']:.2e}, {record['samples_per_s']:.0f} samples/s", file=sys.stderr, flush=True)
        window.reset()


    def _check_finite_weights(self) -> None:
        """Before a checkpoint or the run's end: a step whose loss was finite can still leave NaN weights (an
        infinite gradient), or finite weights whose outputs overflow (a learning rate of 1e3 left weights of 4e7:
        that checkpoint was saved, exported as model/ and named as the one to resume, which diverged again at
        once; --keep-last pruned the good one before it). Every rank stops here alike."""
        bad = self._non_finite()
        if bad is not None:
            raise TrainingDiverged(self._diverged(f"{bad} at step {self.step}"))

    def _non_finite(self) -> str | None:
        """What makes the model unusable, or None: a parameter holding NaN or inf (the same on every rank), else
        NaN or inf outputs on a few samples of the last training batch (each rank's own: agreed on by all)."""
        bad = self._non_finite_weight()
        if bad is not None:
            return f"{bad} holds non-finite weights"
        finite = self._outputs_finite_on_last_batch()
        if self.dist.enabled:
            flag = torch.tensor([0.0 if finite else 1.0], device=self.device)
            finite = not all_reduce_sum(flag).item()
        return None if finite else ("the model's outputs on the last batch are NaN or inf (its weights are finite "
                                    "but overflow)")

    def outputs_finite(self, batch: dict) -> bool:
        """Whether the model's outputs on a few samples of a training ``batch`` are all finite, computed in eval
        mode without gradients before each checkpoint (no random numbers drawn: a resume stays exact). A trainer
        overrides it; True where it does not."""
        return True

    def _outputs_finite_on_last_batch(self) -> bool:
        batch = getattr(self, "_last_batch", None)
        if batch is None:  # no step yet in this process
            return True
        from kizuna.eval.encode import eval_mode

        try:
            with torch.no_grad(), eval_mode(self.model):
                return bool(self.outputs_finite(batch))
        except (RuntimeError, MemoryError) as e:  # out of memory for the check's forward (under `ulimit -v`): the
            # finished steps are saved unchecked rather than lost with the check
            warnings.warn(f"could not check the model's outputs before the checkpoint at step {self.step} "
                          f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); saving it unchecked",
                          RuntimeWarning, stacklevel=2)
            return True

    def _non_finite_weight(self) -> str | None:
        """The name of the first parameter holding a NaN or inf, or None."""
        return next((name for name, p in self.model.named_parameters() if not bool(torch.isfinite(p).all())), None)

    def _diverged(self, what: str) -> str:
        """A run that diverged (NaN or inf) ran on to its end and exited 0, saving NaN weights as latest/ (and
        `vit train`'s model/) while --keep-last pruned the finite checkpoints: said, and nothing saved from it."""
        # (a run branched from another folder's checkpoint has none of its own yet: that one is from before it)
        latest = self.ckpt.latest() or getattr(self, "resume_from", None)
        where = (f"the last checkpoint, {latest}, is from before it" if latest is not None else
                 "no checkpoint was saved before it")
        resume, losses = latest, self._losses_before_checkpoints()
        if latest is not None and latest.name in losses:
            # a run that diverged slowly had a finite but blown-up checkpoint last (a loss of 4644 against 2.3):
            # resumed as advised, it diverged again. Its loss is said, and the saved one of the lowest loss named.
            lowest = min(losses, key=lambda name: losses[name])
            where += f"; its training loss was {losses[latest.name]:.4g}"
            if losses[lowest] < losses[latest.name]:
                resume = self.ckpt.dir / lowest
                where += f", {lowest}'s {losses[lowest]:.4g}"
        return (f"training diverged: {what}; nothing is saved from it ({where}). Train with a lower --lr (now "
                f"{self.cfg.lr:g}), a --grad-clip or a longer --warmup-steps"
                + (f", or resume {resume} with them" if resume is not None else ""))

    def _losses_before_checkpoints(self) -> dict[str, float]:
        """The names of this run's checkpoint folders up to this step, each with the training loss logged last at
        or before its step in this process (those with no record before them are left out; those after this step
        are another branch's, which a resume from an earlier checkpoint left)."""
        logged, found = self.logged_losses, {}
        for folder in self.ckpt.step_folders():
            step = int(folder.name[5:])
            before = [loss for at, loss in logged if at <= step]
            if before and step <= self.step:
                found[folder.name] = before[-1]
        return found


class TrainingDiverged(ValueError):
    """The training loss or weights became NaN or infinite: the run stops, saving nothing from that point."""


class LogWindow:
    """The steps since the last log record: ``fit_batch``'s numbers summed, and the training time they took
    (evaluations and checkpoints taken out, so samples/s is the training rate)."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.sums: dict[str, float] = {}
        self.steps = 0
        self.start = time.perf_counter()

    def add(self, numbers: dict[str, float]) -> None:
        for key, value in numbers.items():
            self.sums[key] = self.sums.get(key, 0) + value
        self.steps += 1

    def exclude(self, seconds: float) -> None:
        self.start += seconds

    def elapsed(self) -> float:
        return time.perf_counter() - self.start


class _StoppedWhileLoading(Exception):
    """The training loader's error once a stop was asked for: the group's signal killed a worker as it started
    (spawned and forkserver workers take seconds to start, before they ignore SIGTERM and SIGINT: the macOS default,
    and Linux's from Python 3.14). The run stops as asked, where it stands: it ended in a traceback, exit 1, with
    nothing saved."""


class _LoaderFailed(Exception):
    """The training loader's error (a worker killed by the out-of-memory killer, a decoder's crash), raised
    between steps: the loop saves the last finished step and raises ``error`` (a run with --save-every 0 lost
    every step: `--resume latest` found no checkpoint)."""

    def __init__(self, error: Exception):
        super().__init__(str(error))
        self.error = error


def _named_twice(data) -> str | None:
    """What to say where the run's --data names a source more than once, which kizuna read twice until 2026-12-07
    (797a3dc) and reads once now (asked where the run had more samples than this reading): the count differs for
    that alone ("the files changed ... Restore the files" sent the user after files that had not changed)."""
    from kizuna.data.sources import resolve_spec

    try:
        with warnings.catch_warnings(record=True) as said:  # (only here, a refusal: what resolve_spec warns of)
            warnings.simplefilter("always")
            resolve_spec(data, warn=True)
    except (OSError, ValueError, TypeError):
        return None
    if not any("named more than once are read once" in str(w.message) for w in said):
        return None
    return ("Its --data names a source more than once, which kizuna read twice until 2026-12-07 (each of its "
            "samples twice an epoch) and reads once now: continue it with the kizuna that started it")


def _until_stopped(loader, stop, stall_limit_s: float = 0.0):
    """``loader``'s batches; its error raised after ``stop`` was asked for comes out as
    :class:`_StoppedWhileLoading`, another as :class:`_LoaderFailed`. A worker's death is found at the next
    batch (torch's SIGCHLD handler, which raised it wherever the main thread was, in a forward or an optimizer
    step, is set aside while the batches are read, then put back). While a batch is waited for (a loader with
    workers polls), a stop ends the wait, as does a wait longer than ``stall_limit_s`` (0: none), as
    :class:`~kizuna.data.loader.LoaderStalled`: a hung worker's run waited for ever, Ctrl-C too."""
    if hasattr(loader, "on_wait"):
        loader.on_wait = _watch_the_wait(stop, stall_limit_s)
    batches = iter(loader)
    with _SigchldDefault() as sigchld:
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                return
            except _StoppedWhileLoading:
                raise
            except Exception as e:
                if stop.requested:
                    raise _StoppedWhileLoading(f"the data loader stopped with it ({type(e).__name__}: {e})") from e
                raise _LoaderFailed(e) from e
            finally:
                sigchld.set_aside()  # (torch sets its handler when its iterator starts: at the first batch)
            yield batch


def _watch_the_wait(stop, stall_limit_s: float):
    """The training loader's ``on_wait``: called after each poll that found no batch, with the seconds waited for
    this one. The batch waited for was not handed out, so a stop here resumes at it."""
    watch = wait_watch(stall_limit_s, then="Ctrl-C stops and saves")

    def on_wait(waited: float) -> None:
        if stop.requested:
            raise _StoppedWhileLoading(f"stopped while waiting {waited:.0f} s for the data loader's next batch")
        watch(waited)

    return on_wait


class _SigchldDefault:
    """SIGCHLD at its default while the block runs (main thread, POSIX), whatever handler was there (torch's, set
    when its loader iterator starts) put back after. :meth:`set_aside` after each batch: torch sets its handler at
    the first one, once per process."""

    def __init__(self):
        import signal
        import threading

        self.active = hasattr(signal, "SIGCHLD") and threading.current_thread() is threading.main_thread()
        self.before = None

    def set_aside(self) -> None:
        import signal

        if not self.active:
            return
        current = signal.getsignal(signal.SIGCHLD)
        if current is None or current == signal.SIG_DFL:  # (None: set outside Python, not ours to change)
            return
        if self.before is None:
            self.before = current
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)

    def __enter__(self):
        self.set_aside()
        return self

    def __exit__(self, *exc):
        if self.active and self.before is not None:
            import signal

            signal.signal(signal.SIGCHLD, self.before)
        return False


class StopOnInterrupt:
    """Within the training loop, the first Ctrl-C (SIGINT) or SIGTERM (what a cluster scheduler or `kill` sends,
    before SIGKILL after a grace period) asks the loop to stop after the step it is in and save a checkpoint
    (:func:`stop_and_save`); a second one of the same signal interrupts at once. Before, Ctrl-C ended a run with
    nothing saved since its last checkpoint (with the default --save-every 0, nothing at all), and SIGTERM
    still did.

    Only in the main thread of a single process: under torchrun the ranks would stop at different steps and
    wait for one another in a collective, so there the signals interrupt as before."""

    NAMES = {"SIGINT": "Ctrl-C", "SIGTERM": "SIGTERM", "SIGHUP": "SIGHUP"}  # (SIGHUP: the terminal closed)

    def __init__(self, enabled: bool = True):
        self.enabled, self._previous = enabled, {}
        self.requested: str | None = None  # the signal's name ("SIGINT", "SIGTERM") once one came

    def __enter__(self):
        import signal
        import threading

        if self.enabled and threading.current_thread() is threading.main_thread():
            from ..data.loader import workers_outlive_sigterm

            self._pid = os.getpid()
            for name in self.NAMES:
                signum = getattr(signal, name, None)
                if signum is None:  # (no SIGHUP on Windows)
                    continue
                if name != "SIGINT" and not _ours_to_take(signal.getsignal(signum)):
                    continue  # a host's own handler (a scheduler's requeue hook) or SIG_IGN: left as the host set it
                self._previous[signum] = signal.signal(signum, self._handle)
            workers_outlive_sigterm(True)
        return self

    def _handle(self, signum, frame):
        import signal

        if os.getpid() != self._pid:  # a loader worker forked inside the loop inherits the handler: the loop
            return  # stops in the main process, which shuts its workers down (each printed the message too)
        self.requested = signal.Signals(signum).name
        signal.signal(signum, self._previous[signum])  # a second one interrupts at once
        said = self.NAMES[self.requested]
        print(f"\n{said}: stopping after this step and saving a checkpoint ({said} again to stop at once)",
              file=sys.stderr)

    def __exit__(self, *exc):
        import signal

        if self._previous:
            from ..data.loader import workers_outlive_sigterm

            workers_outlive_sigterm(False)
        for signum, previous in self._previous.items():
            if signal.getsignal(signum) == self._handle:
                signal.signal(signum, previous)
        self._previous = {}
        return False


def _ours_to_take(handler) -> bool:
    """Whether the training loop may take SIGTERM over from ``handler``: its default (the process ends) or the
    command line's (:class:`kizuna.apps.cli._SigtermRaises`), not a program's own handler or SIG_IGN: a host that
    called train() had its handler (a requeue hook) skipped and its ignored SIGTERM stop the run."""
    import signal

    return handler in (signal.SIG_DFL, None) or getattr(handler, "kizuna_sigterm", False)


def check_run_folder(out: Path, outputs=()) -> None:
    """OUT writable, and each folder a run writes there (checkpoints/, checkpoints/best/, a trainer's own such as
    vit's model/) absent or a folder: a file or a link to an unmounted disk there failed at the first save, with
    the default --save-every 0 after the last step ("[Errno 17] File exists: 'OUT/checkpoints'"), and the whole
    run was lost."""
    from kizuna.apps.common import check_writable

    check_writable(out, "the run's checkpoints and logs")
    folders = ["checkpoints", "checkpoints/best", *(name for name, _ in outputs if not Path(name).suffix)]
    for name in folders:
        path = out / name
        if os.path.islink(path) and not path.exists():
            raise ValueError(f"--out {out}: {path} is a symbolic link to {os.readlink(path)}, which does not exist "
                             "(an unmounted disk?); the run writes a folder there. Mount it, remove the link, or "
                             "choose another --out")
        if path.exists() and not path.is_dir():
            raise ValueError(f"--out {out}: {path} is a file, where the run writes a folder; move it, or choose "
                             "another --out")


def continue_with(trainer: Trainer) -> str:
    """How a stopped run goes on, as said after a Ctrl-C or a failure: the trainer's own command, else the flags,
    quoted to paste into a shell (an --out with spaces or parentheses broke the pasted command)."""
    return trainer.resume_command or f"--out {shlex.quote(str(trainer.cfg.out))} --resume latest"


def stop_and_save(trainer: Trainer, bar=None, saved: bool = False, signal_name: str = "SIGINT") -> None:
    # (a stop at an evaluation step saves that evaluation's metrics with the checkpoint, as its own save would: it
    # was saved with none, and `analyze over-training` showed n/a there)
    """The end of a run stopped by Ctrl-C or SIGTERM (``signal_name``): save where it stands (unless this step was
    ``saved`` already), say how to continue, and raise what the signal raises outside the loop: KeyboardInterrupt
    for Ctrl-C (the command line exits with 130), :class:`~kizuna.apps.cli.Terminated` for SIGTERM (143; it was
    a KeyboardInterrupt and 130, so a scheduler's requeue wrapper read a preemption as a user's cancel)."""
    from kizuna.apps.cli import Terminated

    trainer._said_where_it_stopped = True  # (below: saved where it stands)
    if not saved:
        trainer.save(getattr(trainer, "step_metrics", None))
    if bar is not None:
        bar.close()
    trainer.logger.close()
    how = continue_with(trainer)
    print(f"stopped at step {trainer.step}: saved {trainer.ckpt.dir / f'step_{trainer.step:07d}'}; continue with "
          f"{how}", file=sys.stderr)
    raise Terminated.for_signal(signal_name)


def rank_seed(seed: int, rank: int, *more: int) -> int:
    """The torch seed of rank ``rank`` > 0 (rank 0 keeps the stream of ``seed``, as one process has). Every rank
    seeded ``seed`` alone drew the same patch-dropout masks: image i of each rank's batch kept the same
    patches."""
    import numpy as np

    # int() first: numpy 1.x has no uint64 >> int (TypeError on every rank above 0 under torchrun)
    return int(np.random.SeedSequence([seed % 2**64, rank, *more, 0x4A4B]).generate_state(1, np.uint64)[0]) >> 1


def sum_counts(counts) -> dict[str, int]:
    """Skip counts (reason -> samples) of several ranks added up."""
    total = SkipCounter()
    for part in counts:
        total.update(part)
    return total.counts


def resumed_at_the_end(trainer: Trainer) -> bool:
    """A resume of a finished run has nothing to train, and must leave the run's files as they are (the ViT
    trainer rewrote OUT/model with empty metrics)."""
    if trainer.resume_from is None or trainer.step < trainer.total_steps:
        return False
    if trainer.dist.is_main:
        done = (f"{trainer.step} of {trainer.total_steps} steps" if trainer.step == trainer.total_steps else
                f"at step {trainer.step}, past the {trainer.total_steps} steps asked for")  # ("400 of 12 steps")
        # a budgeted run keeps its budget on a resume, spent: a larger --steps only raises its cap (step 25 to 28)
        budget = trainer.cfg.time_budget_minutes
        # (the run's own budget typed again is no change: spent, it extended nothing and said this again)
        extend = (f"Resume with a --time-budget-minutes other than its {budget:g} (the time for the rest) to extend "
                  "it, or with --time-budget-minutes 0 --steps N for N steps in all" if budget > 0 else
                  "Resume with a larger --steps to extend it")
        print(f"--resume {trainer.resume_from}: the run is complete ({done}); nothing to train. {extend}",
              file=sys.stderr)
    trainer.logger.close()
    return True
