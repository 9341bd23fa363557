"""Mutation findings (session 52): _without_worker_traceback takes the worker's own last line of the exception
(a chained one's earlier line of the same type is not it), and leaves a message that is no re-raised traceback."""
from kizuna.apps.cli import _without_worker_traceback


def test_a_chained_workers_error_is_said_by_its_last_line():
    text = ("Caught ValueError in DataLoader worker process 1.\nOriginal Traceback (most recent call last):\n"
            '  File "a.py", line 3, in read\n    int(x)\n'
            "ValueError: invalid literal for int() with base 10: 'x'\n\n"
            "During handling of the above exception, another exception occurred:\n\n"
            "Traceback (most recent call last):\n"
            '  File "b.py", line 9, in decode\n    raise ValueError(...)\n'
            "ValueError: img/3.png: the label 'x' is not a class number")
    assert _without_worker_traceback(text) == "img/3.png: the label 'x' is not a class number"


def test_a_caught_line_without_the_workers_traceback_is_left_as_it_is():
    text = "Caught ValueError in DataLoader worker process 0.\nwhile reading shard 3\nValueError: boom"
    assert _without_worker_traceback(text) == text


def test_the_cli_says_a_workers_refusal_in_one_line(monkeypatch, capsys):
    import argparse

    from kizuna.apps import cli

    text = ("Caught ShardChanged in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
            '  File "x.py", line 1, in f\n    raise ShardChanged(...)\n'
            "kizuna.data.sources.ShardChanged: tar shard a.tar changed since it was indexed")

    def run(args):
        raise ValueError(text)

    def build():
        parser = argparse.ArgumentParser(prog="kizuna")
        parser.add_subparsers().add_parser("x").set_defaults(_run=run)
        return parser

    monkeypatch.setattr(cli, "build_parser", build)
    assert cli.main(["x"]) == 2
    err = capsys.readouterr().err
    assert "error: tar shard a.tar changed since it was indexed" in err
    assert "Original Traceback" not in err and "DataLoader worker process" not in err
