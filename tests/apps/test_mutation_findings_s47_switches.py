"""Mutation findings (stop 47's mutation test of ``switches_given_alone``): mutants that no test killed.

Reference: argparse's ``--``, after which every word is a positional argument (none is an option or its value),
so nothing after it is rewritten."""
from kizuna.apps.cli import build_parser
from kizuna.apps.common import switches_given_alone


def test_nothing_after_a_double_dash_is_rewritten():
    """Kills the ``--`` check dropped: a positional spelt "--compile" after ``--`` became "--compile=true"."""
    parser = build_parser()
    argv = ["vit", "finetune", "--data", "d", "--", "--compile", "model"]
    assert switches_given_alone(parser, argv) == argv
    # before it, still rewritten
    assert switches_given_alone(parser, ["vit", "finetune", "--compile", "model", "--"])[2] == "--compile=true"
