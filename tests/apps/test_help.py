"""Every command's --help explains itself: it exits 0, shows an example command, and every option says what it
does (the training commands' flags take their text from the config dataclasses' field comments)."""
import argparse
import re

import pytest

from kizuna.apps.cli import build_parser, main


def _subparsers(parser: argparse.ArgumentParser):
    return [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]


def _commands(parser=None, path=()):
    """(path, parser) of every command and subcommand: ("eval",), ("eval", "zeroshot"), ..."""
    parser = parser or build_parser()
    out = []
    for action in _subparsers(parser):
        for name, sub in action.choices.items():
            out.append(((*path, name), sub))
            out += _commands(sub, (*path, name))
    return out


COMMANDS = _commands()
IDS = [" ".join(path) for path, _ in COMMANDS]


def _parser(*path):
    return dict(COMMANDS)[tuple(path)]


def test_the_commands_are_found():
    names = set(IDS)
    for expected in ("train", "demo", "embed", "zeroshot", "eval zeroshot", "eval retrieval", "eval linear-probe",
                     "eval probes", "eval suite", "vit train", "vit finetune", "vit augment", "vit eval",
                     "analyze filters", "analyze rollout", "analyze all", "analyze over-training",
                     "analyze compare-runs"):
        assert expected in names


@pytest.mark.parametrize("path", [p for p, _ in COMMANDS], ids=IDS)
def test_help_exits_0(path, capsys):
    with pytest.raises(SystemExit) as e:
        main([*path, "--help"])
    assert e.value.code == 0
    assert f"usage: kizuna {' '.join(path)}" in capsys.readouterr().out


@pytest.mark.parametrize("path", [p for p, _ in COMMANDS], ids=IDS)
def test_help_shows_an_example(path):
    text = _parser(*path).format_help()
    examples = [line for line in text.splitlines() if line.startswith(("  kizuna ", "  torchrun "))]
    assert examples, f"`kizuna {' '.join(path)} --help` shows no example command:\n{text}"


def _options(parser):
    return [a for a in parser._actions if a.option_strings and not isinstance(a, argparse._HelpAction)]


def _beyond_default(text: str | None) -> str:
    """The help text without the "(default X)" that add_config_arguments appends."""
    return re.sub(r"\s*\(default [^\n]*\)\s*$", "", text or "").strip()


@pytest.mark.parametrize("path", [("train",), ("vit", "train"), ("vit", "finetune"), ("vit", "augment")],
                         ids=" ".join)
def test_every_training_flag_says_what_it_does(path):
    parser = _parser(*path)
    bare = [a.option_strings[0] for a in _options(parser) if not _beyond_default(a.help)]
    assert not bare, f"kizuna {' '.join(path)}: options with no help beyond their default: {bare}"
    assert len(_options(parser)) > 10


@pytest.mark.parametrize("path", [p for p, _ in COMMANDS], ids=IDS)
def test_every_option_has_help(path):
    parser = _parser(*path)
    bare = [a.option_strings[0] for a in _options(parser) if not (a.help or "").strip()]
    assert not bare, f"kizuna {' '.join(path)}: options without help: {bare}"
    unexplained = [a.option_strings[0] for a in _options(parser) if "(default None)" in (a.help or "")]
    assert not unexplained, f"kizuna {' '.join(path)}: a bare 'None' default: {unexplained}"


def test_training_out_says_what_the_run_folder_holds():
    help_text = next(a.help for a in _parser("train")._actions if a.dest == "out")
    for part in ("checkpoints/", "metrics.jsonl", "tensorboard/", "train_config.json"):
        assert part in help_text


def test_no_help_promises_a_default_for_a_required_flag():
    """`analyze over-training --images` is required: its help once offered the `all` action's default scenes."""
    for path, parser in COMMANDS:
        for a in _options(parser):
            if a.required:
                assert "(default" not in (a.help or "") and "all: default" not in (a.help or ""), (path, a.dest)


def test_augment_image_size_does_not_speak_of_a_checkpoint():
    help_text = next(a.help for a in _parser("vit", "augment")._actions if a.dest == "image_size")
    assert "checkpoint" not in help_text
