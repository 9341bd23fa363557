"""Train a small CLIP from scratch on the built-in shapes world (CPU, a few minutes: stopped at 8), then report
what it learned on held-out scenes: shape and colour zero-shot, colour x shape combinations never
seen in training, counting, a relation swap and a typographic attack.

  kizuna demo                       # writes runs/demo/REPORT.md with plots
  kizuna demo --steps 100 --out /tmp/quick   # a quicker, weaker run
"""
from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path

from kizuna.models.checkpoint import atomic_write_text
from kizuna.train.logging import json_text

PROBE_ROWS = [
    ("shape", "shape zero-shot top-1 (6 shapes)"),
    ("colour", "colour zero-shot top-1 (8 colours)"),
    ("seen_combos", "colour x shape, pairs seen in training (48-way)"),
    ("unseen_combos", "colour x shape, pairs never seen in training (48-way)"),
    ("counting", "counting 1-4 (4-way)"),
    ("relation_swap", "relation swap 'A left of B' vs 'B left of A' (2-way)"),
    ("relation_swap/group_score", "relation swap, Winoground group score"),
    ("typographic_clean", "shape top-1 without a written word"),
    ("typographic", "shape top-1 with a contradicting written word"),
    ("typographic/attack_rate", "share of answers that follow the written word"),
]


def add_arguments(p):
    from kizuna.apps.common import add_progress_argument, at_least_one, whole_number

    p.add_argument("--out", default="runs/demo",
                   help="output folder: REPORT.md with plots, final_metrics.json, checkpoints/, metrics.jsonl, "
                        "train_config.json (default runs/demo)")
    from .config import load_config_file

    demo = load_config_file("demo")  # the defaults below are this config's
    p.add_argument("--steps", type=at_least_one, default=None,
                   help=f"optimizer steps (default {demo.get('steps')}, the demo config's; training stops at "
                        f"{demo.get('time_limit_minutes'):g} minutes whatever the steps)")
    # 2 or more: the demo's CLIP (softmax) loss over one pair is 0 and trains nothing (the trainer's refusal
    # named a --loss flag the demo does not have, after OUT was made)
    p.add_argument("--batch-size", type=whole_number(2), default=None,
                   help=f"image-caption pairs per step, 2 or more (default {demo.get('batch_size')}, the demo config's)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default 0: torch's default)")
    from .optim import PRECISIONS

    p.add_argument("--precision", default=None, choices=PRECISIONS,
                   help="training precision (default: the config's, auto)")
    p.add_argument("--probe-size", type=at_least_one, default=500,
                   help="held-out scenes per probe in the final evaluation (default 500)")
    add_progress_argument(p)


# what the demo writes beside the run's own files (checkpoints, metrics.jsonl, curves.png: the trainer's)
REPORT_FILES = ("REPORT.md", "final_metrics.json", "loss.png", "zeroshot_over_training.png", "predictions.png")


def demo_overrides(args, base: dict) -> dict:
    """The demo config's settings the command line changes. A shorter run than the config's gets a warm-up
    shortened in proportion: a `--steps 30` demo kept the 50-step warm-up (it never left it, and was told to
    lower a --warmup-steps the demo does not have)."""
    overrides = {"out": args.out, "threads": args.threads, "progress": not args.no_progress}
    if args.steps:
        overrides["steps"] = args.steps
        if base.get("steps") and args.steps < base["steps"] and base.get("warmup_steps"):
            # at least one step of warm-up, and at least two after it (the first is at the peak: one alone left
            # no decay); a run of 2 steps or fewer has none
            overrides["warmup_steps"] = max(0, min(args.steps - 2, max(1, round(base["warmup_steps"] * args.steps
                                                                                / base["steps"]))))
    if args.batch_size:
        overrides["batch_size"] = args.batch_size
    if args.precision:
        overrides["precision"] = args.precision
    return overrides


def run(args):
    import torch

    from kizuna.train.config import load_config_file, make_config

    from .checkpointing import hold_run_lock, release_run_lock
    from .distributed import launched_by_torchrun

    base = load_config_file("demo")
    if launched_by_torchrun():  # every rank printed, and wrote, the report into one folder
        import shlex

        # with the demo's own flags as train's (a --steps 2 demo was sent to a 400-step run, its warm-up with it)
        changed = {k: v for k, v in demo_overrides(args, base).items() if k not in ("out", "threads", "progress")}
        flags = "".join(f" --{k.replace('_', '-')} {shlex.quote(str(v))}" for k, v in changed.items())
        raise ValueError("kizuna demo runs in one process (its report and final probes are not split over ranks); "
                         "under torchrun train its config: `torchrun ... -m kizuna.apps.cli train --config demo "
                         f"--out {shlex.quote(str(args.out))}{flags}`")
    cfg = make_config(base, **demo_overrides(args, base))
    from .report import describe_image_tower

    print(f"kizuna demo: training a {describe_image_tower(cfg.model_overrides['vision'])} + "
          f"{cfg.model_overrides['text']['depth']}-layer text Transformer on the shapes world "
          f"({cfg.steps} steps x {cfg.batch_size} pairs) on {'GPU' if torch.cuda.is_available() else 'CPU'}")
    # OUT is the demo's until its report is written: the trainer lets go when train() ends, and a run started in
    # the seconds of the final probes set this one aside and got its report, drawn from that run's log
    lock = hold_run_lock(Path(cfg.out))
    try:
        return _train_and_report(args, cfg)
    finally:
        release_run_lock(lock)


def _relink_set_aside_report(out: Path) -> None:
    """An earlier demo's REPORT.md.prev and final_metrics.json.prev point at the set-aside figures and checkpoints:
    left as written, they showed this run's loss.png and named its checkpoints/latest under the earlier numbers.
    (Idempotent: a link already rewritten no longer matches.)"""
    from kizuna.models.checkpoint import atomic_write_text

    for name in ("REPORT.md.prev", "final_metrics.json.prev"):
        path = out / name
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        relinked = text.replace("`checkpoints/", "`checkpoints.prev/").replace('"checkpoints/', '"checkpoints.prev/')
        for figure in REPORT_FILES:
            if figure.endswith(".png"):
                relinked = relinked.replace(f"]({figure})", f"]({figure}.prev)")
        if relinked != text:
            atomic_write_text(path, relinked)


def _train_and_report(args, cfg) -> int:
    from kizuna.train.contrastive import ContrastiveTrainer
    from kizuna.train.evaluation import synthetic_probe_metrics

    class DemoTrainer(ContrastiveTrainer):
        # an earlier demo's report goes aside with its checkpoints and log: moved on its own, a third demo's
        # REPORT.md.prev was the first's beside the second's checkpoints.prev
        run_outputs = ContrastiveTrainer.run_outputs + tuple((name, "demo report") for name in REPORT_FILES)

    start = time.perf_counter()
    trainer = DemoTrainer(cfg)  # a fresh run: an earlier demo's metrics.jsonl in OUT is set aside
    _relink_set_aside_report(Path(cfg.out))
    # `kizuna demo` always starts afresh; the training goes on with `kizuna train` (without the demo's report)
    # without --config demo: a config's keys count as given on the command line, so its 400 steps and batch 128
    # replaced a `kizuna demo --steps 30` run's own (or were refused for another batch size)
    trainer.resume_command = (f"`kizuna train --out {shlex.quote(str(cfg.out))} --resume latest` (the demo itself "
                              "starts afresh)")
    trainer.train()
    train_seconds = time.perf_counter() - start  # with the set-up (model, tokenizer, data): ~9 s of 26 in a short demo
    stopped_by_time_limit = getattr(trainer, "length_before_limit", None) is not None  # set where the limit cut it
    from kizuna.apps.cli import Terminated

    if trainer.stopped_by:  # asked during the last step: the ~45 s of final probes went on, then exit 0
        print(f"kizuna demo: {trainer.stopped_by} during the last step: the trained model is saved in "
              f"{cfg.out}/checkpoints/latest (`kizuna eval` takes it); the final evaluation and REPORT.md were "
              "skipped (run the demo again for them)", file=sys.stderr)
        raise Terminated.for_signal("SIGINT" if trainer.stopped_by == "Ctrl-C" else trainer.stopped_by)
    model, tokenizer = trainer.model.eval(), trainer.tokenizer
    try:
        if not cfg.progress:  # ~45 s on 2 cores after the last step said nothing (a bar when progress is on)
            print(f"final evaluation: {args.probe_size} held-out scenes per probe task", file=sys.stderr, flush=True)
        final = synthetic_probe_metrics(model, tokenizer, n_per_task=args.probe_size, progress=cfg.progress)
    except (KeyboardInterrupt, Terminated):  # said: "interrupted" alone left the user to think the training was lost
        print(f"kizuna demo: interrupted in the final evaluation; the trained model is saved in "
              f"{cfg.out}/checkpoints/latest (`kizuna eval` takes it), but REPORT.md was not written",
              file=sys.stderr)
        raise
    out = Path(cfg.out)
    from kizuna.train.report import best_step

    # the numbers are the final model's (checkpoints/latest); best/ may be an earlier step
    atomic_write_text(out / "final_metrics.json", json_text({"setup_and_train_seconds": train_seconds,
                                                         "steps_run": trainer.step,
                                                         "stopped_by_time_limit": stopped_by_time_limit,
                                                         "model": "checkpoints/latest", "best_step": best_step(out),
                                                         "probe_size": args.probe_size, **final},
                                                        indent=2))  # strict JSON: a diverged model's NaN is null
    from kizuna.train.report import describe_length, write_demo_report

    report = write_demo_report(out, model, tokenizer, {**final, "probe_size": args.probe_size}, train_seconds, cfg,
                               steps_run=trainer.step,
                               stopped_by_time_limit=stopped_by_time_limit)
    print()
    print(format_probe_table(final))
    print(f"\nset up and trained {describe_length(cfg, trainer.step, stopped_by_time_limit)} in "
          f"{train_seconds / 60:.1f} min; "
          f"report: {report}")
    return 0


def format_probe_table(metrics: dict) -> str:
    from kizuna.apps.common import format_table

    def cell(v: float) -> str:  # NaN: a diverged model (synthetic_probe_metrics warned), not "nan%"
        return f"{v * 100:.1f}%" if v == v else "nan"

    rows = [[label, cell(metrics["probe/" + key])] for key, label in PROBE_ROWS if f"probe/{key}" in metrics]
    return format_table(rows, ["held-out evaluation", "result"])
