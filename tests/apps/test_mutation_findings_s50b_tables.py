"""Mutation findings (session 50b), terminal tables and figures: fullwidth letters count two columns and zero-width
joiners none; a header's line break is escaped as a cell's is; a table without rows is as wide as its wide
headers; every line break str.splitlines knows is escaped; a figure's tick labels saved twice are escaped once."""
from __future__ import annotations

import pytest

from kizuna.apps.common import display_width, format_table, one_line, table_cell


def test_fullwidth_and_zero_width_characters():
    assert display_width("ＡＢ") == 4  # east_asian_width "F"
    assert display_width("a\u200db") == 2  # a zero-width joiner (category Cf)
    assert display_width("a\u200bb") == 2


def test_a_headers_line_break_is_escaped_and_its_row_stays_one_line():
    lines = format_table([["x", 1]], ["class\nname", "n"]).splitlines()
    assert len(lines) == 3 and lines[0].startswith("class\\nname")


def test_a_table_without_rows_is_as_wide_as_its_headers():
    lines = format_table([], ["日本", "n"]).splitlines()
    assert lines[1] == "----  -"


@pytest.mark.parametrize("brk", ["\r", "\x0b", "\x0c", "\x1c", "\x85", "\u2028", "\u2029"])
def test_every_line_break_is_escaped(brk):
    assert len(one_line(f"a{brk}b").splitlines()) == 1
    assert len(table_cell(f"a{brk}b").splitlines()) == 1


def test_tick_labels_saved_twice_are_escaped_once(tmp_path):
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    from kizuna.models.checkpoint import save_figure

    fig = Figure()
    ax = fig.subplots()
    ax.set_xticks([0, 1], ["$5", "\\$6"])
    save_figure(fig, tmp_path / "a.png")
    save_figure(fig, tmp_path / "b.png")
    shown = [ax.xaxis.get_major_formatter()(x, i) for i, x in enumerate([0, 1])]
    assert shown == ["\\$5", "\\\\$6"]


def test_the_first_column_is_left_aligned_and_the_others_right():
    lines = format_table([["日本", 1], ["a", 123]], ["class", "count"]).splitlines()
    assert lines[2] == "日本" + " " * 7 + "1" and lines[3] == "a" + " " * 8 + "123"
