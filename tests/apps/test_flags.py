"""One spelling learnt on one command works on the others: --no-progress / --progress false and
--workers / --num-workers were each refused as "unrecognized arguments" on half of the commands."""
import pytest

from kizuna.apps.cli import build_parser, main


def parse(*argv):
    return build_parser().parse_args(list(argv))


def _on_a_terminal(monkeypatch):
    """stderr a terminal: where the bars are drawn by default (kizuna.apps.common.progress_default)."""
    import io
    import sys

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr(sys, "stderr", Terminal())


@pytest.mark.parametrize("argv", [["train"], ["vit", "train"], ["vit", "finetune", "ckpt"]])
def test_training_commands_take_the_evaluation_spellings(argv):
    assert parse(*argv, "--no-progress").progress is False
    assert parse(*argv, "--progress", "true").progress is True
    assert parse(*argv).progress is None  # not given: the config's (or the resumed run's) value stands
    assert parse(*argv, "--num-workers", "3").workers == 3
    assert parse(*argv, "--workers", "2").workers == 2


@pytest.mark.parametrize("argv", [["vit", "train"], ["vit", "finetune", "ckpt"]])
def test_the_vit_trainers_take_the_contrastive_trainers_evaluation_words(argv):
    """`kizuna train` says --eval-split/--eval-max-samples; `kizuna vit train` said only --val-*."""
    args = parse(*argv, "--eval-data", "d", "--eval-split", "val", "--eval-max-samples", "5")
    assert (args.val_data, args.val_split, args.val_max_samples) == ("d", "val", 5)
    assert parse(*argv, "--val-split", "test").val_split == "test"


@pytest.mark.parametrize("argv", [["eval", "zeroshot", "--model", "m", "--dataset", "d"],
                                  ["eval", "retrieval", "--model", "m", "--dataset", "d"],
                                  ["vit", "eval", "ckpt", "--data", "d"]])
def test_evaluation_commands_take_the_training_spellings(argv, monkeypatch):
    assert parse(*argv, "--progress", "false").no_progress is True
    assert parse(*argv, "--progress", "true").no_progress is False
    assert parse(*argv, "--no-progress").no_progress is True
    _on_a_terminal(monkeypatch)  # the default: a bar on a terminal (none into a file: test_machine_readable.py)
    assert parse(*argv).no_progress is False
    assert parse(*argv, "--workers", "2").num_workers == 2


def test_demo_suite_and_embed_take_both_spellings():
    assert parse("demo", "--progress", "false").no_progress is True
    assert parse("eval", "suite", "file.json", "--progress", "false").no_progress is True
    assert parse("embed", "--model", "m", "--texts", "t.txt", "--out", "o.npy", "--num-workers", "0").workers == 0


def test_a_bad_progress_value_says_what_it_expected(capsys):
    with pytest.raises(SystemExit):
        parse("eval", "zeroshot", "--model", "m", "--dataset", "d", "--progress", "maybe")
    assert "expected true/false" in capsys.readouterr().err


def test_vit_augment_refuses_the_training_flags_it_would_ignore(capsys):
    """It took every training flag and read only the data and the augmentation recipe."""
    with pytest.raises(SystemExit):
        parse("vit", "augment", "--data", "d", "--lr", "0.1")
    assert "unrecognized arguments: --lr" in capsys.readouterr().err
    args = parse("vit", "augment", "--data", "d", "--randaug-ops", "2", "--crop", "rrc", "--mixup", "0.8")
    assert (args.randaug_ops, args.crop, args.mixup) == (2, "rrc", 0.8)


def test_probes_without_a_dataset_refuse_the_robustness_settings(capsys):
    """Without --dataset only the relation-swap probe runs: --severities and --corruptions did nothing."""
    for flag, value in (("--severities", "1,2"), ("--corruptions", "jpeg")):
        assert main(["eval", "probes", "--model", "ViT-mu-8", flag, value]) == 2
        err = capsys.readouterr().err
        assert "pass --dataset DIR" in err and "Traceback" not in err


@pytest.mark.parametrize("argv", [["eval", "zeroshot", "--model", "m", "--dataset", "d"], ["zeroshot", "--model", "m",
                                  "--labels", "a,b", "--image", "x.jpg"], ["analyze", "filters", "m"],
                                  ["embed", "--model", "m", "--texts", "t.txt", "--out", "o.npy"],
                                  ["eval", "suite", "s.json"]])
def test_every_command_takes_threads(argv):
    """Only the training commands and `vit eval` could be told how many cores to use (and not the suite)."""
    assert parse(*argv, "--threads", "1").threads == 1
    assert parse("vit", "augment", "--data", "d", "--threads", "1").threads == 1  # a training setting there
    with pytest.raises(SystemExit):
        parse(*argv, "--threads", "-1")


def test_threads_apply_for_the_command_and_are_given_back(capsys):
    import torch

    before = torch.get_num_threads()
    assert main(["info", "ViT-mu-8"]) == 0  # no --threads: nothing changes
    assert main(["analyze", "filters", "ViT-mu-8", "--threads", "1", "--out", "/nonexistent/\0"]) == 2
    assert torch.get_num_threads() == before
    capsys.readouterr()


def test_an_unknown_flag_is_reported_with_its_subcommands_usage(capsys):
    """argparse reported it from the top ("kizuna: error: unrecognized arguments"), without the subcommand's
    usage that shows what it does take (`vit finetune CKPT --model S/4`: the checkpoint is positional)."""
    with pytest.raises(SystemExit) as e:
        main(["vit", "finetune", "ckpt", "--model", "S/4"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "kizuna vit finetune: error: unrecognized arguments: --model S/4" in err and "usage: kizuna vit finetune" in err


def _commands(parser=None, path=()):
    """Every leaf command of the CLI: (words, its parser)."""
    import argparse

    parser = parser or build_parser()
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, parser
        return
    for name, sub in subs[0].choices.items():
        yield from _commands(sub, path + (name,))


def _options(parser) -> set[str]:
    return {s for a in parser._actions for s in a.option_strings}


def test_one_spelling_works_on_every_command(monkeypatch):
    """The conventions the README states, checked on every command, so a new one cannot drift: a command
    that has one spelling of a flag has the others, and --device defaults to the GPU where there is one."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    seen = set()
    for words, parser in _commands():
        options = _options(parser)
        for a, b in (("--workers", "--num-workers"), ("--progress", "--no-progress")):
            assert (a in options) == (b in options), f"kizuna {' '.join(words)} takes only one of {a} / {b}"
        if "--dataset" in options:
            assert "--data" in options, words
        if "--label-column" in options:
            assert "--image-column" in options, words
        if "--caption-column" in options or "--csv-caption-key" in options:
            assert {"--image-column", "--caption-column"} <= options, words
        device = next((a for a in parser._actions if "--device" in a.option_strings), None)
        if device is not None:  # None: the config's "auto", or each suite run's own
            assert device.default in ("cuda", None), f"kizuna {' '.join(words)}: --device defaults to {device.default!r}"
        seen.add(words)
    assert {("train",), ("eval", "zeroshot"), ("analyze", "all"), ("vit", "eval"), ("embed",)} <= seen


def test_every_command_with_a_bar_can_hide_it(monkeypatch):
    """embed and analyze drew tqdm bars that no flag could hide (`--progress false` was refused there)."""
    _on_a_terminal(monkeypatch)  # where the default is a bar
    for argv in (["embed", "--model", "m", "--texts", "t.txt", "--out", "o.npy"],
                 ["analyze", "attention-distance", "m", "--images", "d"], ["analyze", "all", "m"],
                 ["analyze", "over-training", "run", "--images", "d"]):
        assert parse(*argv, "--progress", "false").no_progress is True
        assert parse(*argv).no_progress is False


@pytest.mark.parametrize("argv", [["train"], ["vit", "train"]])
def test_a_switch_alone_is_on(argv):
    """`kizuna train --resampled` was "expected one argument": a switch needed `true` after it."""
    args = parse(*argv, "--compile", "--grad-checkpointing")
    assert (args.compile, args.grad_checkpointing) == (True, True)
    assert parse(*argv, "--compile", "false").compile is False
    assert parse(*argv, "--progress").progress is True
    assert parse(*argv).compile is None  # not given: the config's value stands


def test_train_takes_the_words_of_the_other_commands():
    args = parse("train", "--image-column", "img", "--caption-column", "cap", "--hflip", "0.5", "--crop-scale", "0.5,1")
    assert (args.csv_image_key, args.csv_caption_key, args.aug_hflip, args.aug_scale) == ("img", "cap", 0.5, (0.5, 1.0))
    assert parse("eval", "zeroshot", "--model", "m", "--data", "d").dataset == "d"  # was "ambiguous option"
    assert parse("vit", "augment", "--num-images", "3").images == 3
    assert parse("vit", "augment", "--images", "3").images == 3


@pytest.mark.parametrize("argv, flag", [(["vit", "eval", "c", "--data", "d"], "--batch-size"),
                                        (["vit", "eval", "c", "--data", "d"], "--max-samples"),
                                        (["vit", "eval", "c", "--data", "d"], "--num-workers"),
                                        (["vit", "augment"], "--draws"),
                                        (["analyze", "filters", "m"], "--components"),
                                        (["embed", "--model", "m", "--texts", "t", "--out", "o.npy"], "--workers")])
def test_a_negative_count_is_refused_by_its_flag(argv, flag, capsys):
    """They reached the code as given: vit eval's --max-samples -3 meant all, --components 0 failed as
    "k must be >= 1", a negative --workers as DataLoader's "num_workers option should be non-negative"."""
    with pytest.raises(SystemExit):
        parse(*argv, flag, "-1")
    assert f"argument {flag}" in capsys.readouterr().err


def test_templates_are_one_flag_with_files_or_templates_on_every_command(tmp_path):
    """`kizuna eval` took one file (--templates), `kizuna zeroshot` and `analyze predict` only single
    templates (--template): `eval zeroshot --template "a {c}"` was read as the name of a missing file."""
    from kizuna.eval.datasets import DatasetError, template_arguments

    tpl = tmp_path / "tpl.txt"
    tpl.write_text("a photo of a {c}.\na drawing of a {c}.\n")
    for argv, dest in ((["eval", "zeroshot", "--model", "m", "--data", "d"], "templates"),
                       (["zeroshot", "--model", "m", "--image", "i.png", "--labels", "a,b"], "template"),
                       (["analyze", "predict", "m", "--image", "i.png"], "template")):
        for flag in ("--template", "--templates"):
            assert getattr(parse(*argv, flag, str(tpl), flag, "art of {c}"), dest) == [str(tpl), "art of {c}"]
    assert template_arguments([str(tpl)]) == str(tpl)  # one file stays its path: a suite records it
    assert template_arguments([str(tpl), "art of {c}"]) == ["a photo of a {c}.", "a drawing of a {c}.", "art of {c}"]
    assert template_arguments(None) is None
    with pytest.raises(DatasetError, match="not found"):
        template_arguments(["art of {c}", str(tmp_path / "typo.txt")])
    with pytest.raises(DatasetError, match="no '{c}' placeholder"):
        template_arguments(["a photo"])


def test_eval_reads_a_single_template_as_a_template(tmp_path, capsys):
    from kizuna.eval.cli import _entry

    args = parse("eval", "zeroshot", "--model", "m", "--data", "d", "--template", "art of {c}")
    assert _entry(args, ["zeroshot_classification"])["templates"] == ["art of {c}"]


@pytest.mark.parametrize("argv", [["info", ""], ["embed", "--model", "", "--texts", "t.txt", "--out", "o.npy"],
                                  ["vit", "eval", "", "--data", "d"], ["analyze", "filters", ""]])
def test_an_empty_model_is_refused_by_its_argument(argv, capsys):
    """"" is the current folder to a path: `kizuna info ""` loaded whatever model was there."""
    with pytest.raises(SystemExit):
        parse(*argv)
    assert "is empty: give a preset name or a checkpoint path" in capsys.readouterr().err
