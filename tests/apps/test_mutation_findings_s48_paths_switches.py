"""Mutation-testing round 48 (apps.common): what the existing tests left open in today's parts_below (the folder
itself), check_start_outside_out on it, and switches_given_alone's count of the positionals' words."""
from __future__ import annotations

import argparse

import pytest

from kizuna.apps.cli import build_parser
from kizuna.apps.common import check_start_outside_out, check_writable, parts_below, switches_given_alone


def test_a_folder_is_below_itself_with_no_parts(tmp_path):
    """Kills: parts_below walking the parents only (the folder itself was not below itself), and the folder itself
    told apart from a missing path by text only."""
    (tmp_path / "a" / "b").mkdir(parents=True)
    assert parts_below(tmp_path / "a", tmp_path / "a") == ()
    assert parts_below(tmp_path / "a" / "." / "b" / "..", tmp_path / "a") == ()
    assert parts_below(tmp_path / "a" / "b" / "new" / "x", tmp_path / "a") == ("b", "new", "x")
    assert parts_below(tmp_path / "missing", tmp_path / "missing") == ()  # by text where it does not exist


def test_a_starting_model_is_refused_as_out_itself_and_in_what_a_run_writes_only(tmp_path):
    """Kills: check_start_outside_out indexing the parts of --out itself (an IndexError, not the refusal), and
    refusing any model inside --out (OUT/pretrained is left alone by the run)."""
    for sub in ("model", "checkpoints/step_0000001", "pretrained"):
        (tmp_path / "out" / sub).mkdir(parents=True)
    with pytest.raises(ValueError, match=r"is inside --out"):
        check_start_outside_out(tmp_path / "out", "--model", tmp_path / "out")
    with pytest.raises(ValueError, match=r"is inside --out"):
        check_start_outside_out(tmp_path / "out", "--model", tmp_path / "out" / "model")
    with pytest.raises(ValueError, match=r"is inside --out"):
        check_start_outside_out(tmp_path / "out", "--model", tmp_path / "out" / "checkpoints" / "step_0000001")
    check_start_outside_out(tmp_path / "out", "--model", tmp_path / "out" / "pretrained")


def test_words_after_a_double_dash_count_for_the_positionals():
    """Kills: _free_words stopping its count at ``--``: `vit eval --progress disabled -- MODEL` read --progress as
    alone ("disabled" took MODEL's place); the bad value is left for argparse to name."""
    parser = build_parser()
    argv = ["vit", "eval", "--progress", "disabled", "--", "runs/m/model"]
    assert switches_given_alone(parser, argv) == argv
    argv = ["vit", "eval", "--progress", "runs/m/model", "--data", "d"]
    assert switches_given_alone(parser, argv)[2] == "--progress=true"


def _parser_with_many_positionals():
    parser = argparse.ArgumentParser(prog="x")
    sub = parser.add_subparsers(dest="cmd")
    cmd = sub.add_parser("compare")
    cmd.add_argument("runs", nargs="+")
    cmd.add_argument("--progress", nargs="?", const=True, default=False).switch = True
    return parser


def test_a_positional_of_any_number_of_words_fits_them_all():
    """Kills: a nargs="+" positional counted as one word's room: `compare --progress a b` left --progress to take
    "a" as its value."""
    parser = _parser_with_many_positionals()
    assert switches_given_alone(parser, ["compare", "--progress", "a", "b", "c"]) == [
        "compare", "--progress=true", "a", "b", "c"]


def test_the_root_probe_leaves_nothing_behind(tmp_path):
    """Kills: the folder made to probe --out (as root, where access() says yes) left there."""
    import os

    (tmp_path / "runs").mkdir()
    check_writable(tmp_path / "runs" / "out")  # (the folder probed: the nearest that exists)
    check_writable(tmp_path / "runs", folder_for="results")
    assert os.listdir(tmp_path / "runs") == []
