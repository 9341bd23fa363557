"""What machines read: stdout that is the final metrics' JSON alone, strict JSON files (no NaN or Infinity),
progress bars only on a terminal, Markdown tables whose rows stay rows, and settings that read back."""
from __future__ import annotations

import io
import json
import math
import sys
from pathlib import Path

import pytest
from PIL import Image

from kizuna.apps.cli import build_parser, main
from kizuna.train.config import TrainConfig, config_from_args, load_config_file, make_config, named_fields
from kizuna.train.logging import MetricLogger, read_metrics

sys.path.insert(0, str(Path(__file__).parent))
from _tiny import tiny_config  # noqa: E402


def _strict(text: str):
    """``json.loads`` that refuses NaN, Infinity and -Infinity, as JavaScript, jq and strict parsers do."""
    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def _train_flags(out, *extra):
    return ["train", "--model", "ViT-mu-8", "--synthetic-image-size", "32", "--synthetic-length", "64",
            "--batch-size", "16", "--steps", "2", "--warmup-steps", "1", "--context-length", "24", "--workers", "0",
            "--threads", "1", "--eval-max-samples", "4", "--precision", "fp32", "--log-every", "1",
            "--out", str(out), *extra]


class _Terminal(io.StringIO):
    def isatty(self):
        return True


# ------------------------------------------------------------------ 3. stdout carries the final JSON alone
def test_the_bars_write_goes_to_stderr(capsys):
    """tqdm.write's default is stdout: the trainers' evaluation, skip and time-budget lines were printed there."""
    from kizuna.train.logging import progress_bar

    bar = progress_bar(total=2, disable=True)
    bar.write("step 1: val top-1 0.5")
    bar.close()
    printed = capsys.readouterr()
    assert printed.out == "" and "step 1: val top-1 0.5" in printed.err


def _images(root: Path, corrupt: bool) -> Path:
    for c, colour in (("a0", (200, 40, 40)), ("b1", (40, 40, 200))):
        (root / c).mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (16, 16), tuple(min(255, v + 10 * i) for v in colour)).save(root / c / f"{i}.png")
    if corrupt:
        (root / "a0" / "9.png").write_bytes(b"not a png")
    return root


def test_vit_train_stdout_is_the_final_json_alone(tmp_path, capsys):
    """`kizuna vit train ... > final.json` got `step N: val top-1 ...` and `epoch 0: skipped ...` before the JSON."""
    train, val = _images(tmp_path / "train", corrupt=True), _images(tmp_path / "val", corrupt=False)
    assert main(["vit", "train", "--data", str(train), "--val-data", str(val), "--model", "Ti/16", "--model-overrides",
                 '{"depth": 1, "width": 32, "heads": 2, "mlp_dim": 64}', "--image-size", "16", "--batch-size", "4",
                 "--steps", "3", "--warmup-steps", "1", "--workers", "0", "--threads", "1", "--progress", "false",
                 "--eval-every", "1", "--precision", "fp32", "--out", str(tmp_path / "run")]) == 0
    printed = capsys.readouterr()
    assert "val_top1" in _strict(printed.out)
    assert "step 1: val top-1" in printed.err and "skipped 1 samples" in printed.err


# ------------------------------------------------------------------ 4. strict JSON, read back as NaN
def test_metrics_jsonl_is_strict_json_and_reads_back_nan(tmp_path):
    logger = MetricLogger(tmp_path, tensorboard=False)
    logger.log(3, {"loss": float("nan"), "lr": 1e-3, "zeroshot/top1": float("inf")})
    logger.close()
    line = (tmp_path / "metrics.jsonl").read_text().splitlines()[0]
    record = _strict(line)
    assert record["loss"] is None and record["zeroshot/top1"] is None and record["lr"] == 1e-3
    (row,) = read_metrics(tmp_path / "metrics.jsonl", "train")
    assert math.isnan(row["loss"]) and math.isnan(row["zeroshot/top1"]) and row["step"] == 3


def test_train_config_json_is_strict_json(tmp_path):
    logger = MetricLogger(tmp_path, tensorboard=False)
    logger.write_config({"grad_clip": float("inf"), "out": tmp_path, "betas": (0.9, 0.98)})
    saved = _strict((tmp_path / "train_config.json").read_text())
    assert saved == {"grad_clip": None, "out": str(tmp_path), "betas": [0.9, 0.98]}


@pytest.mark.parametrize("command, module, function", [
    (["train"], "kizuna.train.contrastive", "train"),
    (["vit", "train", "--data", "d"], "kizuna.train.supervised", "train_supervised")])
def test_the_final_metrics_on_stdout_are_strict_json(tmp_path, capsys, monkeypatch, command, module, function):
    """A diverged run printed `"loss": NaN`, which no strict JSON reader takes."""
    import importlib

    monkeypatch.setattr(importlib.import_module(module), function,
                        lambda cfg, named: {"loss": float("nan"), "top1": float("-inf"), "lr": 0.5})
    assert main([*command, "--out", str(tmp_path / "run"), "--progress", "false"]) == 0
    assert _strict(capsys.readouterr().out) == {"loss": None, "top1": None, "lr": 0.5}


def test_a_diverged_run_is_logged_as_null_and_drawn_as_nan(tmp_path):
    """The curves read a diverged run's null as the NaN it was: the loss curve has its gap, and an evaluation
    metric that is null at every step is still a series (not "No evaluation was logged")."""
    from kizuna.train.report import plot_curves

    logger = MetricLogger(tmp_path, tensorboard=False)
    for step, loss in ((1, 2.0), (2, float("nan"))):
        logger.log(step, {"loss": loss, "lr": 1e-3})
        logger.log(step, {"zeroshot/top1": float("nan")}, kind="eval")
    logger.close()
    rows = read_metrics(tmp_path / "metrics.jsonl", "train")
    assert rows[0]["loss"] == 2.0 and math.isnan(rows[1]["loss"])
    import matplotlib.figure

    titles = []
    real_savefig = matplotlib.figure.Figure.savefig

    def savefig(fig, *args, **kwargs):
        titles.extend(ax.get_title() for ax in fig.axes)
        return real_savefig(fig, *args, **kwargs)

    with pytest.MonkeyPatch.context() as m:
        m.setattr(matplotlib.figure.Figure, "savefig", savefig)
        assert plot_curves(tmp_path) == tmp_path / "curves.png"
    assert "Evaluation during training" in titles


def test_a_runs_train_config_json_reads_back_to_its_settings(tmp_path):
    """`--config RUN/train_config.json` (and compare-runs) read the file back: every setting as it ran."""
    cfg = tiny_config(tmp_path, grad_clip=0.5, weight_decay=0.1, betas=(0.9, 0.95))
    logger = MetricLogger(tmp_path, tensorboard=False)
    logger.write_config({**cfg.to_dict(), "precision_used": "fp32"})
    assert make_config(load_config_file(str(tmp_path / "train_config.json"), TrainConfig)) == cfg


# ------------------------------------------------------------------ 8. non-finite settings refused
@pytest.mark.parametrize("field, value", [("grad_clip", math.inf), ("weight_decay", math.inf), ("eps", math.inf),
                                          ("lr", math.inf), ("lr", math.nan), ("betas", (0.9, math.inf))])
def test_non_finite_settings_are_refused_by_their_flag(tmp_path, field, value):
    """--grad-clip inf was written as Infinity and read back from train_config.json as the default clip;
    --weight-decay inf and --eps inf were taken while --lr nan was refused."""
    flag = "--" + field.replace("_", "-")
    with pytest.raises(ValueError, match=f"^{flag} must be (a )?finite number"):
        make_config(out=str(tmp_path), **{field: value})


def test_the_vit_trainer_refuses_them_too(tmp_path):
    from kizuna.train.supervised import make_supervised_config

    with pytest.raises(ValueError, match="^--weight-decay must be a finite number, got inf"):
        make_supervised_config(out=str(tmp_path), weight_decay=math.inf)


def test_the_command_line_says_it_by_the_flag(tmp_path, capsys):
    assert main(_train_flags(tmp_path / "run", "--grad-clip", "inf", "--progress", "false")) == 2
    assert "--grad-clip must be a finite number, got inf (0 = no clipping)" in capsys.readouterr().err


# ------------------------------------------------------------------ 6. bars only on a terminal by default
def _args(*argv):
    return build_parser().parse_args(list(argv))


def test_training_progress_defaults_to_off_when_stderr_is_no_terminal(monkeypatch):
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    args = _args("train")
    assert config_from_args(args).progress is False
    assert "progress" in named_fields(args)  # a resume does not take the bar back from the saved settings
    assert config_from_args(_args("train", "--progress", "true")).progress is True  # an explicit flag is honoured


def test_vit_train_progress_defaults_to_off_when_stderr_is_no_terminal(monkeypatch):
    from kizuna.train.vit_cli import config_from_args as vit_config

    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert vit_config(_args("vit", "train", "--data", "d")).progress is False
    assert vit_config(_args("vit", "train", "--data", "d", "--progress", "true")).progress is True
    monkeypatch.setattr(sys, "stderr", _Terminal())
    assert vit_config(_args("vit", "train", "--data", "d")).progress is True


def test_on_a_terminal_the_config_or_the_resumed_runs_value_stands(monkeypatch, tmp_path):
    monkeypatch.setattr(sys, "stderr", _Terminal())
    args = _args("train")
    assert config_from_args(args).progress is True and "progress" not in named_fields(args)
    # a config file's own progress is honoured off a terminal too
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    (tmp_path / "c.json").write_text(json.dumps({"progress": True}))
    assert config_from_args(_args("train", "--config", str(tmp_path / "c.json"))).progress is True


@pytest.mark.parametrize("argv", [["eval", "zeroshot", "--model", "m", "--dataset", "d"], ["demo"],
                                  ["analyze", "over-training", "run", "--images", "d"],
                                  ["vit", "eval", "c", "--data", "d"]])
def test_the_other_commands_draw_bars_only_on_a_terminal(monkeypatch, argv):
    """`analyze over-training` wrote ESC[A cursor moves into a log file, TERM=dumb or not."""
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert _args(*argv).no_progress is True
    assert _args(*argv, "--progress", "true").no_progress is False
    monkeypatch.setattr(sys, "stderr", _Terminal())
    assert _args(*argv).no_progress is False
    assert _args(*argv, "--no-progress").no_progress is True


def test_a_training_log_file_gets_step_lines_not_bar_redraws(tmp_path, capsys):
    """With stderr in a file a 30-step run's log was all carriage-return redraws, and no line per logged step."""
    assert main(_train_flags(tmp_path / "run")) == 0
    err = capsys.readouterr().err
    assert "\r" not in err and "\x1b" not in err
    assert "step 1/2: loss " in err and "step 2/2: loss " in err


# ------------------------------------------------------------------ 7. Markdown table cells
def _cells(row: str) -> list[str]:
    """A GFM table row's cells: split at the pipes that no backslash escapes."""
    assert row.startswith("| ") and row.endswith(" |")
    cells, cell, escaped = [], "", False
    for ch in row[1:-1]:
        if ch == "|" and not escaped:
            cells.append(cell.strip())
            cell = ""
            continue
        cell += ch
        escaped = ch == "\\" and not escaped
    return cells + [cell.strip()]


def test_a_name_with_a_pipe_or_a_newline_stays_in_its_cell():
    from kizuna.eval.suite import markdown_report

    records = [{"task": "zeroshot_classification", "model": "mu|8\nx", "pretrained": "C:\\runs\\a\\|b",
                "dataset": "cifar\r\n10", "metrics": {"acc1": 0.5}}]
    rows = [line for line in markdown_report(records).splitlines() if line.startswith("|")]
    assert len(rows) == 3  # header, rule, one row: the newline did not end the row
    header, _, row = rows
    # every backslash escaped (session 50: Markdown's active characters are), so each renders as itself
    assert _cells(row) == ["mu\\|8 x", "C:\\\\runs\\\\a\\\\\\|b", "cifar 10", "50.00"]
    assert len(_cells(header)) == 4


def test_a_checkpoints_config_json_is_strict_json_with_nan_metrics(tmp_path):
    """save_model wrote a diverged run's metrics into step_N/config.json as NaN, which strict parsers refuse."""
    import kizuna
    from kizuna.analysis.report import read_extra
    from kizuna.models.checkpoint import save_model

    def no_constants(name):
        raise AssertionError(f"config.json is not strict JSON: {name}")

    path = save_model(kizuna.create_model("ViT-mu-8"), tmp_path / "step", extra={"metrics": {"val_top1": float("nan")}})
    record = json.loads((path / "config.json").read_text(encoding="utf-8"), parse_constant=no_constants)
    assert record["kizuna"]["extra"]["metrics"] == {"val_top1": None}
    assert math.isnan(read_extra(path)["metrics"]["val_top1"])  # read back as NaN, not "not evaluated"
