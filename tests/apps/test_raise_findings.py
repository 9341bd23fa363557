"""Errors as a user meets them: each reached from the command line by an audit of the code's `raise` statements,
and each said too late, naming no file or flag, or advising a flag the command does not have."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch

import kizuna
from kizuna.apps.cli import main


def _odd_even(root: Path) -> Path:
    from _labelled import odd_even_splits

    return odd_even_splits(root)


# ----------------------------------------------------------------------------------- --out
def test_an_out_through_a_link_to_nothing_is_refused_before_the_work(tmp_path, capsys):
    """A dangling symlink (or a loop of them) "does not exist": the check passed, and the write failed after the
    whole evaluation as "[Errno 17] File exists"."""
    from kizuna.apps.common import check_writable

    (tmp_path / "dl").symlink_to(tmp_path / "missing")
    (tmp_path / "loop1").symlink_to(tmp_path / "loop2")
    (tmp_path / "loop2").symlink_to(tmp_path / "loop1")
    with pytest.raises(ValueError, match=r"dl is a symbolic link to .*missing, which does not exist"):
        check_writable(tmp_path / "dl", "the results")
    with pytest.raises(ValueError, match="dl is a symbolic link"):
        check_writable(tmp_path / "dl" / "x.npy")
    with pytest.raises(ValueError, match=r"loop1 is a symbolic link .* \(or loops\)"):
        check_writable(tmp_path / "loop1" / "out", "the figures")
    with pytest.raises(ValueError, match="File name too long; choose another --out"):  # was an OSError traceback
        check_writable(tmp_path / ("x" * 300) / "a", "the results")
    check_writable(tmp_path / "new" / "deeper", "the results")  # a folder still to make is fine

    texts = tmp_path / "t.txt"
    texts.write_text("a cat\n")
    assert main(["embed", "--model", "ViT-mu-8", "--texts", str(texts), "--out", str(tmp_path / "dl" / "x.npy")]) == 2
    assert "is a symbolic link" in capsys.readouterr().err
    assert not (tmp_path / "missing").exists()


# ----------------------------------------------------------------------------------- vit train's splits
def test_a_named_val_split_beside_a_split_folder_is_that_split(tmp_path):
    """`vit train --val-data ROOT/test --val-split train` validated on ROOT/test, and `--val-split nosuch`
    passed; `vit eval --data ROOT/test --split train` reads ROOT/train. The default split still means the folder."""
    from kizuna.eval.datasets import DatasetError
    from kizuna.train.supervised import load_classification, load_validation, make_supervised_config

    root = _odd_even(tmp_path / "oe")
    assert len(load_classification(str(root / "test"), "train")[0]) == 4  # --data's default: the folder given
    assert len(load_classification(str(root / "test"), None, default_split=None)[0]) == 4
    assert len(load_classification(str(root / "test"), "train", default_split=None)[0]) == 12  # named: ROOT/train
    cfg = make_supervised_config(data=str(root / "train"), val_data=str(root / "test"), val_split="nosuch")
    with pytest.raises(DatasetError, match="no split 'nosuch'.*pass --val-split test") as e:
        load_validation(cfg, ["odd", "even"])
    assert "--split" not in str(e.value).replace("--val-split", "")


def test_advice_names_the_training_commands_own_flags(tmp_path):
    """`kizuna train --eval-zeroshot ROOT` of training data only advised "pass split= / --split train" (no such
    flag: --eval-split), and a retrieval set "evaluate it with `kizuna eval retrieval`" (in a run: --eval-retrieval)."""
    from kizuna.eval.datasets import DatasetError, with_caller_flags
    from kizuna.train.config import make_config
    from kizuna.train.contrastive import check_evaluation_data

    root = tmp_path / "only"
    from _labelled import odd_even_shards

    odd_even_shards(root, 4, 8)
    with pytest.raises(ValueError, match="pass --eval-split train to evaluate on it anyway") as e:
        check_evaluation_data(make_config(eval_zeroshot=str(root)))
    assert "split=" not in str(e.value)
    error = DatasetError("x: its dataset_type.txt says 'retrieval', not 'classification'; evaluate it with "
                         "`kizuna eval retrieval`")
    assert with_caller_flags(error, "--eval-split", in_training=True).endswith("evaluate it with --eval-retrieval")
    assert with_caller_flags(error, "--val-split") == str(error)  # outside a run the command is right


def test_the_demo_refuses_a_batch_of_one_as_its_flag_and_leaves_no_folder(tmp_path, capsys):
    """`kizuna demo --batch-size 1` advised "or --loss siglip" (the demo has no --loss) and left a new OUT holding
    only its lock file."""
    out = tmp_path / "demo"
    with pytest.raises(SystemExit):
        main(["demo", "--batch-size", "1", "--out", str(out)])
    assert "--batch-size" in capsys.readouterr().err
    assert not out.exists()


def test_a_run_refused_before_it_wrote_anything_leaves_no_folder(tmp_path):
    from kizuna.train.checkpointing import RUN_LOCK, hold_run_lock, release_run_lock

    key = hold_run_lock(tmp_path / "a" / "b")
    inner = hold_run_lock(tmp_path / "a" / "b")  # the trainer inside the demo takes it again
    release_run_lock(inner)
    assert (tmp_path / "a" / "b" / RUN_LOCK).exists()  # still held by the outer holder
    release_run_lock(key)
    assert not (tmp_path / "a").exists()  # both folders it made go
    kept = hold_run_lock(tmp_path / "run")
    (tmp_path / "run" / "metrics.jsonl").write_text("{}\n")
    release_run_lock(kept)
    assert (tmp_path / "run" / "metrics.jsonl").exists()  # a folder with the run's work stays
    (tmp_path / "was_there").mkdir()
    release_run_lock(hold_run_lock(tmp_path / "was_there"))
    assert (tmp_path / "was_there").is_dir()  # a folder the run did not make stays
    (tmp_path / "keep").mkdir()  # through "..": the climb took the user's empty keep/ for the run's (review)
    release_run_lock(hold_run_lock(tmp_path / "new" / ".." / "keep" / "run"))
    assert (tmp_path / "keep").is_dir() and not (tmp_path / "keep" / "run").exists()


def test_a_vit_preset_is_not_warned_about_at_a_size_the_run_does_not_use():
    """The override check built the preset at 224 px: hybrid-B/16 at --image-size 384 was warned about 224 (review)."""
    from kizuna.train.supervised import make_supervised_config

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make_supervised_config(model="hybrid-B/16", image_size=384)
        make_supervised_config(model="hybrid-B/16", image_size=384, model_overrides={"depth": 2})


# ----------------------------------------------------------------------------------- labels, templates, classnames
def test_one_label_is_refused_where_a_prediction_needs_two(tmp_path):
    """A mistyped labels file name without an extension became one label, printed at 100%."""
    from kizuna.apps.zeroshot import parse_labels

    with pytest.raises(ValueError, match=r"1 label \('mylabels'\) \(and no file of that name\): a prediction needs "
                                         "at least 2"):
        parse_labels("mylabels")
    one = tmp_path / "one.txt"
    one.write_text("cat\n")
    with pytest.raises(ValueError, match="1 label"):
        parse_labels(str(one))
    assert parse_labels("mylabels", minimum=1) == ["mylabels"]  # compare-runs' name for one run
    assert parse_labels("cat,dog") == ["cat", "dog"]


@pytest.mark.parametrize("text, message", [
    ('{"a": [', r"t.json: not JSON \(Expecting value, line 2"),
    ("null", "t.json: templates must be a JSON list of strings"),
    ("5", "t.json: templates must be a JSON list"),
    ('{"cifar10": 5}', "t.json: templates must be a JSON list"),
])
def test_a_broken_templates_json_names_the_file(tmp_path, text, message):
    """A broken file failed naming no file; null or a number was a traceback from list()."""
    from kizuna.eval.datasets import DatasetError, read_templates

    f = tmp_path / "t.json"
    f.write_text(text + ("\n" if text.endswith("[") else ""))
    with pytest.raises(DatasetError, match=message):
        read_templates(str(f), "cifar10")


def test_a_templates_json_that_is_one_string_is_one_template(tmp_path):
    """It was read letter by letter ("template 'a' has no '{c}' placeholder")."""
    from kizuna.eval.datasets import DatasetError, read_templates

    f = tmp_path / "t.json"
    f.write_text('"a photo of a {c}."')
    assert read_templates(str(f)) == ["a photo of a {c}."]
    f.write_bytes(b"\xff\xfe[")
    with pytest.raises(DatasetError, match="t.json: not UTF-8 \(or UTF-16\) text"):
        read_templates(str(f))


def test_classnames_that_name_a_folder_say_so(tmp_path):
    from kizuna.eval.datasets import DatasetError, load_dataset

    root = _odd_even(tmp_path / "oe")
    with pytest.raises(DatasetError, match="is a folder; give a file with one class name per line"):
        load_dataset(str(root / "test"), classnames=str(tmp_path))


# ----------------------------------------------------------------------------------- suite files
def _never_run(*a, **k):
    raise AssertionError("a run started before the suite was checked")


@pytest.mark.parametrize("source, message", [
    ('SUITE = [{"model": MISSING}]\n', r"suite '.*s.py' \(s.py, line 1\): NameError"),
    ("def suite():\n    return 1 / 0\n", r"suite '.*s.py' \(s.py, line 2\): ZeroDivisionError"),
])
def test_a_python_suite_that_raises_is_one_error_naming_its_line(tmp_path, monkeypatch, source, message):
    import kizuna.eval.suite as suite_mod

    monkeypatch.setattr(suite_mod, "run_entry", _never_run)
    f = tmp_path / "s.py"
    f.write_text(source)
    with pytest.raises(ValueError, match=message):
        suite_mod.load_suite(f)


@pytest.mark.parametrize("change, message", [
    ({"defaults": [1]}, "'defaults' must be an object"),
    ({"out": 5}, "'out' must be a folder name"),
    ({"task": [["zeroshot"]]}, r"unknown task \['zeroshot'\]"),
    ({"templates": 5}, "run 0: templates must be a file name or a list of strings, got 5"),
    ({"classnames": [1, 2]}, "run 0: classnames must be a file name or a list of strings"),
    ({"split": 5}, "run 0: split must be a string, got 5"),
])
def test_a_suite_value_of_the_wrong_type_is_refused_before_any_run(tmp_path, monkeypatch, change, message):
    """Each was a TypeError traceback, some after the run's header was printed."""
    import kizuna.eval.suite as suite_mod

    root = _odd_even(tmp_path / "oe")
    monkeypatch.setattr(suite_mod, "run_entry", _never_run)
    run = {"model": "ViT-mu-8", "dataset": str(root), "task": "zeroshot"}
    suite = {"runs": [run]}
    for key, value in change.items():
        (suite if key in ("defaults", "out") else run)[key] = value
    f = tmp_path / "s.json"
    f.write_text(json.dumps(suite))
    with pytest.raises(ValueError, match=message):
        suite_mod.run_suite(f, progress=False, echo=None)


# ----------------------------------------------------------------------------------- models
def test_an_openai_state_dict_with_a_tensor_of_too_few_dimensions_names_the_file(tmp_path):
    from kizuna.models.checkpoint import CheckpointError
    from kizuna.models.convert_openai import kizuna_to_openai, openai_to_kizuna

    sd = kizuna_to_openai(kizuna.create_model("ViT-mu-8"), strict=False)
    sd["text_projection"] = sd["text_projection"][:, 0].contiguous()  # 1-D: an IndexError traceback
    with pytest.raises(CheckpointError, match="oai.pt: cannot infer the architecture"):
        openai_to_kizuna(sd, "oai.pt")


def test_a_model_override_of_the_wrong_type_quotes_the_presets_value():
    """mu/4 has depth 2: the message quoted the default VisionConfig's 12."""
    from kizuna.train.supervised import make_supervised_config

    with pytest.raises(ValueError, match=r"depth must be a whole number \(as the model's 2\), got 2.5"):
        make_supervised_config(model="mu/4", model_overrides={"depth": 2.5})


def test_a_diverged_vits_attention_is_said_not_only_written_as_nulls(tmp_path):
    """`analyze attention-distance` and `rollout` of a model with a NaN class token wrote nulls and "wrote ..."
    (exit 0) without a word; `vit eval` and `analyze predict` refuse such a model."""
    from kizuna.analysis.report import attention_distance_report, load_target, rollout_report

    vit = kizuna.create_vit("mu/4", image_size=16, num_classes=3, width=16, depth=2, heads=2, mlp_dim=32)
    with torch.no_grad():
        vit.cls_token.fill_(float("nan"))
    target = load_target(vit)
    images = torch.rand(2, 3, 16, 16)
    with pytest.warns(RuntimeWarning, match=r"attention distances are NaN or inf .*\(a diverged run\?\)"):
        numbers = attention_distance_report(target, images, tmp_path, progress=False)
    assert all(v is None for v in numbers["per_layer_mean"])  # JSON-safe: NaN as null
    with pytest.warns(RuntimeWarning, match="rollout map are NaN or inf"):
        rollout_report(target, images[0], tmp_path)
    healthy = load_target(kizuna.create_vit("mu/4", image_size=16, num_classes=3, width=16, depth=2, heads=2,
                                            mlp_dim=32))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        attention_distance_report(healthy, images, tmp_path, progress=False)


# ----------------------------------------------------------------------------------- commands without an action
@pytest.mark.parametrize("argv, action", [(["vit"], "train, finetune, augment, eval"),
                                          (["analyze"], "filters, positions, attention-distance")])
def test_a_command_without_its_action_is_one_error_line(argv, action, capsys):
    """`kizuna vit` and `kizuna analyze` printed the whole help on stdout (rc 2); `kizuna eval` one error line."""
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert f"choose an action: {action}" in err and len(err.strip().splitlines()) == 1


def test_kizuna_alone_prints_its_help_on_stderr(capsys):
    assert main([]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "usage: kizuna" in err
