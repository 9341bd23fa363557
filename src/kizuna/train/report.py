"""A short Markdown report with plots for a finished contrastive run (used by `kizuna demo`)."""
from __future__ import annotations

from pathlib import Path

import torch

from kizuna.models.checkpoint import atomic_write_text, drawn, save_figure

from .logging import read_metrics


def describe_image_tower(vision: dict) -> str:
    """'2-layer ViT (width 128, patch 8)' or '1-layer hybrid ViT (conv stem 32-64-128, width 128, max pooling)'."""
    depth, width = vision.get("depth"), vision.get("width")
    stem = vision.get("stem", "patch")
    if stem == "patch":
        return f"{depth}-layer ViT (width {width}, patch {vision.get('patch_size')})"
    channels = "-".join(str(c) for c in vision.get("stem_channels", []))
    return f"{depth}-layer hybrid ViT ({stem} stem {channels}, width {width}, {vision.get('pool', 'cls')} pooling)"


def _figure(figsize):
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, dpi=120, layout="constrained")


def _lone_point(points) -> dict:
    """A marker for a series of one point: a line through one point draws nothing (a run shorter than its
    --log-every had an empty loss panel, and a train_top1 in the legend that was nowhere in the plot)."""
    return {"marker": "o", "markersize": 4} if len(points) == 1 else {}


def plot_loss(rows: list[dict], path: Path) -> Path:
    fig = _figure((6, 3.5))
    ax = fig.add_subplot()
    ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], color="tab:blue", **_lone_point(rows))
    ax.set_xlabel("optimizer step")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))  # steps (0.94..1.06 around one)
    ax.set_ylabel("contrastive loss")
    ax.set_title("Training loss")
    ax.grid(alpha=0.3)
    save_figure(fig, path)
    return path


def plot_eval(rows: list[dict], keys: list[tuple[str, str]], path: Path) -> Path:
    fig = _figure((6, 3.5))
    ax = fig.add_subplot()
    for key, label in keys:
        pts = [(r["step"], r[key]) for r in rows if key in r]
        if pts:
            ax.plot(*zip(*pts), marker="o", label=label)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("held-out top-1 accuracy")
    ax.set_ylim(0, 1.02)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))  # steps: no 19.5 around a single evaluation
    ax.set_title("Zero-shot accuracy during training")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    save_figure(fig, path)
    return path


def _is_share(key: str) -> bool:
    """An evaluation metric that is a share in [0, 1]: an accuracy, a recall, a probe's rate."""
    leaf = key.rsplit("/", 1)[-1].lower()
    if any(word in leaf for word in ("loss", "skipped", "samples", "rank", "seconds")):
        return False
    return key.startswith("probe/") or any(word in leaf for word in ("top1", "top5", "acc", "recall", "r@",
                                                                     "rate", "score"))


# Line style and marker for each pass through the ten colours of tab10: with more than ten series (the demo logs
# 15 probe keys) the colours repeat, and a series that shares colour, line and marker with another is unreadable.
_PASS_STYLES = [("-", "o"), (":", "s"), ("-.", "^"), ((0, (5, 1)), "D")]


def _series_style(i: int) -> dict:
    """Colour, line style and marker of the ``i``-th series: distinct for the first 40."""
    from matplotlib import colormaps

    ls, marker = _PASS_STYLES[i // 10 % len(_PASS_STYLES)]
    return {"color": colormaps["tab10"](i % 10), "linestyle": ls, "marker": marker}


def plot_curves(out: str | Path) -> Path | None:
    """OUT/curves.png from OUT/metrics.jsonl: the training loss, and every evaluation metric that is a share
    (accuracies, recalls) with the training accuracy where the run logs one, against the step. None when no
    training step was logged. Both trainers draw it when they finish (and a resumed run's log is its
    whole run)."""
    out = Path(out)
    rows = read_metrics(out / "metrics.jsonl", "train")
    if not rows:
        return None
    evals = read_metrics(out / "metrics.jsonl", "eval")
    # shares by name, not by value: a count of 1 skipped image, a loss below 1 or a median rank of 1 fell in
    # [0, 1] and was drawn on the accuracy axis
    shares = sorted({k for r in evals for k, v in r.items() if _is_share(k)
                     and isinstance(v, (int, float)) and not isinstance(v, bool)})
    fig = _figure((10, 3.6))
    left, right = fig.subplots(1, 2)
    left.plot([r["step"] for r in rows], [r["loss"] for r in rows], color="tab:blue", **_lone_point(rows))
    left.set(xlabel="optimizer step", ylabel="training loss", title="Training loss")
    for i, key in enumerate(shares):  # all of them (the first ten left out the demo's headline, probe/unseen_combos)
        pts = [(r["step"], r[key]) for r in evals if key in r]
        right.plot(*zip(*pts), markersize=3, label=key, **_series_style(i))
    trained = [(r["step"], r["train_top1"]) for r in rows if "train_top1" in r]
    if trained:
        right.plot(*zip(*trained), linestyle="--", color="grey", label="train_top1", **_lone_point(trained))
    right.set(xlabel="optimizer step", ylabel="share (accuracy, recall)", ylim=(0, 1.02),
              title="Evaluation during training" if shares else "No evaluation was logged")
    if shares or trained:
        right.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    from matplotlib.ticker import MaxNLocator

    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))  # steps: no 19.5 (one evaluation, a short run)
    path = out / "curves.png"
    save_figure(fig, path)
    return path


@torch.inference_mode()
def plot_predictions(model, tokenizer, path: Path, n: int = 4, seed: int = 7) -> Path:
    """A few held-out scenes with the model's top-5 colour x shape predictions (CLIP paper style)."""
    import kizuna
    from kizuna.data.synthetic import make_probes
    from kizuna.eval.zeroshot import ZeroShotClassifier

    probe = make_probes(seed=seed, image_size=model.image_size[0], n_per_task=n, tasks=["unseen_combos"])["unseen_combos"]
    names = probe.candidates if probe.shared else probe.candidates_for(0)
    clf = ZeroShotClassifier(model, tokenizer, names, ["{c}"])
    preprocess = kizuna.get_preprocess(model)
    logits = clf.logits(torch.stack([preprocess(im) for im in probe.images]))
    probs = clf.probabilities(logits)
    fig = _figure((3.2 * n, 4.6))
    grid = fig.add_gridspec(2, n, height_ratios=[1.0, 0.8])
    for i in range(n):
        ax = fig.add_subplot(grid[0, i])
        ax.imshow(probe.images[i])
        ax.set_axis_off()
        truth = names[probe.labels[i]]
        ax.set_title(f"truth: {truth}", fontsize=9)
        top = logits[i].topk(min(5, len(names))).indices  # by the logits: saturated probabilities tie
        bar = fig.add_subplot(grid[1, i])
        labels = [names[j] for j in top.tolist()][::-1]
        values = probs[i, top].tolist()[::-1]
        colors = ["tab:green" if lbl == truth else "tab:gray" for lbl in labels]
        bar.barh(labels, values, color=colors)
        bar.set_xlim(0, 1)
        bar.set_xlabel("probability", fontsize=8)
        bar.tick_params(labelsize=8)
    fig.suptitle("Held-out colour x shape pairs never seen in training: top-5 predictions")
    save_figure(fig, path)
    return path


def device_name(model) -> str:
    """The hardware the model ran on: the GPU's name, or the CPU model from /proc/cpuinfo (platform.processor()
    gives only the architecture, "x86_64", on Linux)."""
    import platform

    device = next(model.parameters()).device
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    from kizuna.models.layers import cpu_info

    cpu = cpu_info("model name") or platform.processor() or platform.machine() or "an unknown CPU"
    return f"{cpu} ({_count(torch.get_num_threads(), 'thread')})"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def describe_length(cfg, steps_run: int, stopped_by_time_limit: bool) -> str:
    """'400 steps', or, for a run the time limit ended early, '127 steps (stopped by the 8-min time limit;
    400 were configured)'."""
    text = _count(steps_run, "step")
    if stopped_by_time_limit:
        text += f" (stopped by the {cfg.time_limit_minutes:g}-min time limit; {cfg.steps} were configured)"
    elif cfg.steps and steps_run != cfg.steps:
        text += f" ({cfg.steps} were configured)"
    return text


def best_step(out: Path) -> int | None:
    """The step OUT/checkpoints/best was saved at (None where the run kept none)."""
    from kizuna.analysis.report import read_extra

    best = Path(out) / "checkpoints" / "best"
    step = read_extra(best).get("step") if best.is_dir() else None
    return step if isinstance(step, int) else None


def which_model(out: Path, steps_run: int, best_metric: str) -> str:
    """What the held-out numbers describe: the final model, which checkpoints/best (picked by ``best_metric``
    on the smaller evaluations during training) need not be. The report did not say, and the README's
    checkpoints/best scored other numbers than it (best/ at step 300 of 400: counting 93% against 98%)."""
    best = best_step(out)
    text = f"These are the final model's results (step {steps_run}, `checkpoints/latest`)"
    if best is None:
        return text + "."
    if best == steps_run:
        return text + ", which is also `checkpoints/best`."
    return (text + f"; `checkpoints/best` is the model of step {best}, the highest `{best_metric}` at an evaluation "
            "during training.")


def write_demo_report(out: Path, model, tokenizer, final: dict, train_seconds: float, cfg,
                      steps_run: int | None = None, stopped_by_time_limit: bool = False) -> Path:
    """OUT/REPORT.md with its figures. ``steps_run``: the optimizer steps actually taken (the trainer's
    ``step``); by default the last logged training step, which the trainers log at the run's end even when
    the time limit ends it early. ``stopped_by_time_limit``: say that the limit cut the run short."""
    from .demo import PROBE_ROWS, format_probe_table

    out = Path(out)
    rows = read_metrics(out / "metrics.jsonl", "train")
    evals = read_metrics(out / "metrics.jsonl", "eval")
    if steps_run is None:
        steps_run = rows[-1]["step"] if rows else 0
    figs, kept = [], "; REPORT.md is written without it"
    if rows:
        figs += drawn(lambda path: plot_loss(rows, path), out / "loss.png", kept)
    if evals:
        keys = [("probe/shape", "shape"), ("probe/colour", "colour"), ("probe/unseen_combos", "unseen colour x shape"),
                ("probe/counting", "counting")]
        figs += drawn(lambda path: plot_eval(evals, keys, path), out / "zeroshot_over_training.png", kept)
    figs += drawn(lambda path: plot_predictions(model, tokenizer, path), out / "predictions.png", kept)
    # the first logging window includes warm-up (compilation, first allocations): leave it out when there are more
    rates = sorted(r["samples_per_s"] for r in (rows[1:] or rows) if "samples_per_s" in r)
    speed = (f", median {rates[len(rates) // 2]:.0f} pairs/s" if rates
             else "; no training steps were logged in metrics.jsonl, so there is no loss curve or throughput")
    probe_table = format_probe_table(final)
    results = (["```", probe_table, "```"] if any(f"probe/{key}" in final for key, _ in PROBE_ROWS)
               else ["No held-out results were given to the report."])
    results += ["", which_model(out, steps_run, cfg.best_metric)]
    if "probe_size" in final:  # the curves' points are over the training's evaluations, fewer scenes a task
        results += ["", f"Over {final['probe_size']} held-out scenes a task; the accuracy plot's points are the "
                        f"evaluations during training, over {cfg.eval_max_samples or 200} a task."]
    text = [
        "# kizuna demo report", "",
        f"A CLIP with a {describe_image_tower(cfg.model_overrides['vision'])} at {cfg.synthetic_image_size} px "
        f"and a {cfg.model_overrides['text']['depth']}-layer text Transformer, "
        f"trained from scratch on the built-in shapes world, {cfg.batch_size} pairs a step, for "
        f"{describe_length(cfg, steps_run, stopped_by_time_limit)}.",
        f"Set-up and training took {_duration(train_seconds)} (tokenizer training and the evaluations and "
        f"checkpoints during training included) on {device_name(model)}{speed}.", "",
        "## Held-out evaluation", "", *results, "",
        "Colour x shape pairs in the 'never seen' row are absent from every training image; the model must "
        "compose the colour and the shape it learned separately. Counting, relation swap and the typographic "
        "attack are findings, not targets: CLIP-style models are known to count poorly, to treat captions "
        "as bags of words, and to read text in images.", "",
        "## Figures", "",
        *[f"![{Path(name).stem}]({name})" for name in figs],
    ]
    path = out / "REPORT.md"
    atomic_write_text(path, "\n".join(text) + "\n")
    return path
