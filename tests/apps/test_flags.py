"""One spelling learnt on one command works on the others: --no-progress / --progress false and
--workers / --num-workers were each refused as "unrecognized arguments" on half of the commands."""
import pytest

from kizuna.apps.cli import build_parser, main


def parse(*argv):
    return build_parser().parse_args(list(argv))


@pytest.mark.parametrize("argv", [["train"], ["vit", "train"], ["vit", "finetune", "ckpt"]])
def test_training_commands_take_the_evaluation_spellings(argv):
    assert parse(*argv, "--no-progress").progress is False
    assert parse(*argv, "--progress", "true").progress is True
    assert parse(*argv).progress is None  # not given: the config's (or the resumed run's) value stands
    assert parse(*argv, "--num-workers", "3").workers == 3
    assert parse(*argv, "--workers", "2").workers == 2


@pytest.mark.parametrize("argv", [["eval", "zeroshot", "--model", "m", "--dataset", "d"],
                                  ["eval", "retrieval", "--model", "m", "--dataset", "d"],
                                  ["vit", "eval", "ckpt", "--data", "d"]])
def test_evaluation_commands_take_the_training_spellings(argv):
    assert parse(*argv, "--progress", "false").no_progress is True
    assert parse(*argv, "--progress", "true").no_progress is False
    assert parse(*argv, "--no-progress").no_progress is True
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
                                  ["embed", "--model", "m", "--texts", "t.txt", "--out", "o.npy"]])
def test_every_command_takes_threads(argv):
    """Only the training commands and `vit eval` could be told how many cores to use."""
    assert parse(*argv, "--threads", "1").threads == 1
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
