"""One setting, several spellings (found by tabling every command's flags): another command's flag taken as a
prefix of something else, advice naming a flag the command lacks, config keys spelt as a flag's alias."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from kizuna.apps.cli import build_parser, main


def parse(*argv):
    return build_parser().parse_args(list(argv))


def test_a_flag_is_never_taken_for_a_longer_one(capsys):
    """`eval linear-probe --seed 5` (kizuna train's seed) ran 5 few-shot draws as --seeds 5; `--image` was
    --image-column and `--mode` --model, all without a word."""
    with pytest.raises(SystemExit):
        main(["eval", "linear-probe", "--model", "ViT-mu-8", "--dataset", "d", "--seed", "5"])
    assert "unrecognized arguments: --seed 5; --seed is not a flag of this command (it has --seeds)" in \
        capsys.readouterr().err
    for argv in (["eval", "zeroshot", "--model", "m", "--dataset", "d", "--image", "x"],
                 ["embed", "--mode", "m", "--texts", "t", "--out", "o.npy"]):
        with pytest.raises(SystemExit):
            parse(*argv)
    assert parse("eval", "linear-probe", "--model", "m", "--dataset", "d", "--seeds", "5").seeds == 5


def test_a_missing_required_flag_names_the_flag_typed_in_its_place(capsys):
    """`vit eval M --datta D` said only "the following arguments are required: --data"."""
    with pytest.raises(SystemExit):
        main(["vit", "eval", "m", "--datta", "d"])
    assert ("required: --data/--dataset; --datta is not a flag of this command (it has --data and --dataset)"
            in capsys.readouterr().err)


@pytest.mark.parametrize("argv, dest, value", [
    (["vit", "eval", "m", "--dataset", "d"], "data", "d"),  # `kizuna eval`'s word
    (["analyze", "attention-distance", "m", "--images", "x", "--max-samples", "4"], "max_images", 4),
    (["analyze", "compare-runs", "r", "--color-by", "model"], "colour_by", "model"),
    (["zeroshot", "--model", "m", "--images", "a.png", "--labels", "a,b"], "image", ["a.png"]),
    (["train", "--val-split", "val"], "eval_split", "val"),  # `vit train`'s word
    (["train", "--val-max-samples", "7"], "eval_max_samples", 7),
    (["eval", "zeroshot", "--model", "m", "--dataset", "d", "--progress"], "no_progress", False),
    (["eval", "zeroshot", "--model", "m", "--dataset", "d", "--device", "auto"], "device", "cpu"),
])
def test_the_other_commands_spellings_are_taken(argv, dest, value):
    if dest == "device":
        import torch

        value = "cuda" if torch.cuda.is_available() else "cpu"
    assert getattr(parse(*argv), dest) == value


def test_a_config_key_spelt_as_a_flags_alias_sets_its_field():
    """{"hflip": 0.5} for `kizuna train` (whose --hflip sets aug_hflip) was refused as "a `kizuna vit train`
    option"; {"eval_split": ...} for `vit train` as "a `kizuna train` option"."""
    from kizuna.train.config import make_config
    from kizuna.train.supervised import make_supervised_config

    cfg = make_config({"data": "d", "hflip": 0.5, "crop_scale": [0.5, 1.0], "image_column": "path",
                       "num_workers": 0})
    assert (cfg.aug_hflip, tuple(cfg.aug_scale), cfg.csv_image_key, cfg.workers) == (0.5, (0.5, 1.0), "path", 0)
    assert make_config({"data": "d", "hflip": 0.5}, aug_hflip=0.25).aug_hflip == 0.25  # the command line wins
    assert make_supervised_config({"eval_split": "val", "num_workers": 1}).val_split == "val"
    with pytest.raises(ValueError, match="hflip and aug_hflip are one setting, given twice"):
        make_config({"data": "d", "hflip": 0.5, "aug_hflip": 0.25})


def test_compare_runs_takes_a_setting_as_its_flag_is_spelt(tmp_path):
    """--panel-by subset-fraction (the flag's spelling) was refused; the saved key is subset_fraction."""
    from kizuna.analysis.runs import compare_runs

    for name, fraction in (("a", 0.1), ("b", 1.0)):
        run = tmp_path / name
        run.mkdir()
        (run / "metrics.jsonl").write_text(json.dumps({"kind": "eval", "step": 10, "val_top1": fraction}) + "\n")
        (run / "train_config.json").write_text(json.dumps({"model": "mu/4", "subset_fraction": fraction}))
    numbers = compare_runs([tmp_path / "a", tmp_path / "b"], tmp_path / "fig", panel_by="subset-fraction",
                           group_by=["subset-fraction"])
    assert len(numbers["runs"]) == 2


# ----------------------------------------------------------------------------------- advice in the caller's words
def _odd_even_root(root: Path, splits=("train",)) -> Path:
    from _labelled import odd_even_shards

    odd_even_shards(root, 4, 8)
    for split in splits:
        if split != "train":
            shutil.copytree(root / "train", root / split)
    return root


def test_a_training_runs_evaluation_advice_names_what_a_run_can_do(tmp_path):
    """`kizuna train --eval-zeroshot` advised --classnames FILE / --dataset-name KEY and --image-column, which
    a run has not (or which set the training CSV's columns: following it changed nothing)."""
    from kizuna.train.config import make_config
    from kizuna.train.contrastive import check_evaluation_data

    root = _odd_even_root(tmp_path / "oe", ("train", "test"))
    (root / "classnames.txt").unlink()
    with pytest.raises(ValueError, match="Create that file; a bundled CLIP_benchmark list is taken when the folder "
                                         "is named after it") as e:
        check_evaluation_data(make_config(eval_zeroshot=str(root)))
    assert "--classnames" not in str(e.value) and "--dataset-name" not in str(e.value)
    (tmp_path / "e.csv").write_text("path,label\nx.png,0\n")
    reads = ("a training run's evaluation reads a CSV's columns filepath and label for --eval-zeroshot, filepath and "
             "title")
    with pytest.raises(ValueError, match=reads) as e:
        check_evaluation_data(make_config(eval_zeroshot=str(tmp_path / "e.csv")))
    assert "--image-column" not in str(e.value)
    # a retrieval CSV without title: --caption-column sets the training data's column, and following it failed again
    (tmp_path / "r.csv").write_text("filepath,caption\nx.png,a dog\n")
    with pytest.raises(ValueError, match=reads) as e:
        check_evaluation_data(make_config(eval_retrieval=str(tmp_path / "r.csv")))
    assert "--caption-column" not in str(e.value)


def test_a_linear_probes_missing_train_split_names_train_split(tmp_path, capsys):
    """`eval linear-probe --dataset ds/test` (ds has no train split) advised --split test, which changed nothing;
    a suite's messages advised --split, which `eval suite` has not."""
    root = tmp_path / "ds"
    _odd_even_root(root, ("train",))
    (root / "train").rename(root / "test")
    assert main(["eval", "linear-probe", "--model", "ViT-mu-8", "--dataset", str(root / "test")]) == 2
    err = capsys.readouterr().err
    assert "pass --train-split test" in err and "pass --split" not in err
    (tmp_path / "s.json").write_text(json.dumps([{"model": "ViT-mu-8", "dataset": str(root / "test"),
                                                  "task": "linear_probe"}]))
    assert main(["eval", "suite", str(tmp_path / "s.json")]) == 2
    err = capsys.readouterr().err
    assert "run 0: " in err and "set the run's \"train_split\" to test" in err and "--train-split" not in err


def test_a_config_key_spelt_as_an_alias_counts_as_named_on_a_resume(tmp_path):
    """{"eval_split": "train"} set vit's val_split on a new run, but counted as no field named: a resume put the
    checkpoint's value back over it without a word (review)."""
    from kizuna.train.config import named_fields
    from kizuna.train.supervised import SupervisedConfig

    config = tmp_path / "c.json"
    config.write_text(json.dumps({"eval_split": "train", "num_workers": 0}))
    names = named_fields(parse("vit", "train", "--config", str(config)), SupervisedConfig)
    assert {"val_split", "workers"} <= names


def test_a_mistyped_command_name_is_not_blamed_on_the_flags_after_it(capsys):
    """`kizuna eval zeroshto --model m` called every flag typed "not a flag of this command" (review)."""
    with pytest.raises(SystemExit):
        main(["eval", "zeroshto", "--model", "m", "--dataset", "d"])
    err = capsys.readouterr().err
    assert "invalid choice: 'zeroshto'" in err and "is not a flag" not in err


def test_the_missing_class_names_advice_reads_as_a_suites_keys():
    from kizuna.eval.datasets import NoClassNamesError, in_suite_words

    error = NoClassNamesError("no class names for dataset 'x': expected x/classnames.txt. Create that file, pass "
                              "classnames=[...] / --classnames FILE, or --dataset-name KEY to use a bundled "
                              "CLIP_benchmark list (e.g. cars, cifar10, ...)")
    assert ('Create that file, set the run\'s "classnames", or its "dataset_name", to use a bundled'
            in in_suite_words(error))
