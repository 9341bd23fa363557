"""Output files read by people and programs (session 50): the few-shot spread was the population std (|a - b| / 2
for two seeds) and a measured 0.00 for one; a suite's name of 0 or an object was dropped or written as an object;
results.md showed <b>, __x__ and $ as markup; a terminal table split a row at a class name's line break and
misaligned wide characters; suggested commands pasted paths unquoted; a figure's "\\$" lost its backslash."""
from __future__ import annotations

import json
import statistics

import pytest
import torch

from kizuna.apps.common import display_width, format_table
from kizuna.eval.linear_probe import linear_probe_from_features, seed_std
from kizuna.eval.suite import markdown_cell, run_name


def test_the_few_shot_spread_is_the_sample_std_and_none_for_one_seed():
    assert seed_std([0.1429, 0.0476]) == pytest.approx(statistics.stdev([0.1429, 0.0476]))  # 0.0674, not 0.0476
    assert seed_std([0.5]) is None
    g = torch.Generator().manual_seed(0)
    y = torch.arange(60) % 3
    x = torch.randn(60, 8, generator=g) + 2 * torch.nn.functional.one_hot(y, 8).float()
    for seeds in (1, 3):
        res = linear_probe_from_features(x[:30], y[:30], x[30:], y[30:], 3, few_shot=[2], seeds=seeds,
                                         grid=[1e-2], max_iter=200)
        std = res.metrics["fewshot_2_acc1_std"]
        row = next(line for line in res.table().splitlines() if "2-shot" in line)
        if seeds == 1:
            assert std is None and row.rstrip().endswith("-")
        else:
            assert std == pytest.approx(statistics.stdev(res.few_shot[2]))
            assert row.rstrip().endswith(f"{100 * std:.2f}")
    json.dumps(res.metrics, allow_nan=False)


@pytest.mark.parametrize("name,text", [(0, "0"), (7, "7"), ({"seed": 1, "lr": 0.001}, '{"lr": 0.001, "seed": 1}'),
                                       ("run a", "run a"), (None, "")])
def test_a_suite_runs_name_is_text(name, text):
    assert run_name({"name": name} if name is not None else {}) == text


def test_markdown_cells_show_markup_as_text():
    assert markdown_cell("<b>bold</b> $x$ __init__ *a* `c` [l](u) ~s~") == (
        "\\<b\\>bold\\</b\\> \\$x\\$ \\_\\_init\\_\\_ \\*a\\* \\`c\\` \\[l\\](u) \\~s\\~")
    assert markdown_cell("image_to_text_R@1") == "image_to_text_R@1"  # an underscore inside a word opens nothing
    assert markdown_cell("x|y\nz") == "x\\|y z"


def test_terminal_tables_keep_one_row_per_line_and_their_columns():
    rows = [["日本", 1], ["🐱cat", 2], ["new\nline", 3], ["tab\tname", 4], ["e\u0301", 5]]
    lines = format_table(rows, ["class", "n"]).splitlines()
    assert len(lines) == 2 + len(rows)
    assert "new\\nline" in lines[4] and "tab\\tname" in lines[5]
    assert {display_width(line) for line in lines} == {display_width(lines[0])}  # every line as wide
    assert display_width("日本") == 4 and display_width("e\u0301") == 1 and display_width("🐱") == 2


def test_a_figures_backslash_dollar_is_drawn_as_written(tmp_path):
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    from kizuna.models.checkpoint import save_figure

    fig = Figure()
    ax = fig.subplots()
    title = ax.set_title("\\$5 and $MODEL_$SEED")
    save_figure(fig, tmp_path / "a.png")
    save_figure(fig, tmp_path / "b.png")  # saved twice: escaped once
    shown, math_mode = title._preprocess_math(title.get_text())
    assert not math_mode and shown == "\\$5 and $MODEL_$SEED"


def test_suggested_commands_quote_their_paths(tmp_path):
    from kizuna.train.supervised import check_fresh_model

    odd = tmp_path / "run b 50%" / "model"
    odd.mkdir(parents=True)
    with pytest.raises(ValueError) as e:
        check_fresh_model(str(odd))
    assert f"kizuna vit finetune '{odd}' ..." in str(e.value)
