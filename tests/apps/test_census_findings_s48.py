"""Messages a census of every command's flags found misleading: a data/model class mismatch blamed a "given
list" the user never gave, a bad switch value after the positional was an "unrecognized argument", a CSV column
flag was ignored on shards, and an --out root could not create failed after the work with a bare errno."""
from __future__ import annotations

import os

import pytest
import torch
from PIL import Image

import kizuna
from kizuna.apps.cli import main


def _folder(root, classes):
    for k, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(2):
            Image.new("RGB", (16, 16), (80 * k, 30 * i, 5)).save(root / name / f"{i}.png")
    return root


@pytest.fixture
def two_class_vit(tmp_path):
    from kizuna.train.supervised import vit_preprocess

    torch.manual_seed(0)
    vit = kizuna.create_vit("mu/4", image_size=16, num_classes=2)
    return kizuna.save_model(vit, tmp_path / "vit", extra={"classnames": ["cat", "dog"],
                                                            "preprocess": vit_preprocess(16)})


def test_data_with_classes_the_model_lacks_is_said_so(tmp_path, two_class_vit, capsys):
    data = _folder(tmp_path / "c3", ["cat", "dog", "bird"])
    assert main(["vit", "eval", str(two_class_vit), "--data", str(data), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "the data has 3 classes (named by folder names), 1 of them not among the model's classes (bird)" in err
    assert "the model has 2: cat, dog" in err and "given list" not in err


def test_a_bad_switch_value_is_named_after_the_positional_too(tmp_path, two_class_vit, capsys):
    data = _folder(tmp_path / "c2", ["cat", "dog"])
    for argv in (["vit", "eval", str(two_class_vit), "--data", str(data), "--progress", "disabled"],
                 ["vit", "eval", "--progress", "disabled", str(two_class_vit), "--data", str(data)]):
        with pytest.raises(SystemExit):
            main(argv)
        err = capsys.readouterr().err
        assert "argument --progress: expected true/false, got 'disabled'" in err, err
    # a switch alone before the positional still reads as on
    assert main(["vit", "eval", "--progress", str(two_class_vit), "--data", str(data)]) == 0


def test_a_csv_column_flag_on_a_folder_is_refused(tmp_path, two_class_vit, capsys):
    data = _folder(tmp_path / "c2", ["cat", "dog"])
    assert main(["vit", "eval", str(two_class_vit), "--data", str(data), "--label-column", "y", "--no-progress"]) == 2
    assert "--label-column y: it names a CSV's column, and" in capsys.readouterr().err
    assert main(["eval", "zeroshot", "--model", "ViT-mu-8", "--dataset", str(data), "--image-column", "img",
                 "--label-column", "y", "--no-progress"]) == 2
    assert "--image-column img and --label-column y: they name a CSV's column" in capsys.readouterr().err
    # a CSV takes them
    (tmp_path / "d.csv").write_text("img,y\n" + "".join(f"c2/{c}/{i}.png,{c}\n" for c in ("cat", "dog")
                                                         for i in range(2)))
    assert main(["vit", "eval", str(two_class_vit), "--data", str(tmp_path / "d.csv"), "--image-column", "img",
                 "--label-column", "y", "--no-progress"]) == 0


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0 or not os.path.isdir("/proc"),
                    reason="root, for whom access() says yes to every folder (CI runs as root)")
def test_an_out_root_cannot_create_is_refused_before_the_work():
    from kizuna.apps.common import check_writable

    with pytest.raises(PermissionError, match=r"--out /proc/kizuna-x: cannot write in /proc \("):
        check_writable("/proc/kizuna-x", folder_for="results")


def test_a_switch_alone_before_the_positional_with_a_list_flag_after_it():
    """`analyze attention-distance --progress MODEL --images a.png b.png`: the second image was counted a
    positional, and the switch's rewrite abandoned (MODEL became its value)."""
    from kizuna.apps.cli import build_parser
    from kizuna.apps.common import switches_given_alone

    argv = ["analyze", "attention-distance", "--progress", "m.safetensors", "--images", "a.png", "b.png"]
    assert switches_given_alone(build_parser(), argv)[2] == "--progress=true"
    bad = ["analyze", "attention-distance", "m.safetensors", "--progress", "disabled", "--images", "a.png", "b.png"]
    assert switches_given_alone(build_parser(), bad) == bad  # a bad value: argparse names it


def test_a_suites_default_column_names_do_not_refuse_its_folder_runs(tmp_path, capsys):
    """A suite's defaults are merged into every run: a column name meant for its CSV runs refused the whole suite
    at its folder run."""
    import json

    data = _folder(tmp_path / "c2", ["cat", "dog"])
    suite = tmp_path / "suite.json"
    suite.write_text(json.dumps({"defaults": {"image_column": "path", "max_samples": 4},
                                 "runs": [{"model": "ViT-mu-8", "dataset": str(data), "task": "zeroshot"}]}))
    assert main(["eval", "suite", str(suite), "--no-progress"]) == 0


def test_a_rejected_prompt_is_said_in_the_encodings_words():
    from kizuna.eval.classification import class_embeddings

    torch.manual_seed(0)
    model = kizuna.create_model("ViT-mu-8")
    with pytest.raises(ValueError, match=r"the tokenizer rejected the prompt '&nbsp;' \(empty class name or template"):
        class_embeddings(model, kizuna.get_tokenizer(model), ["cat", "&nbsp;"], ["{c}"], cache=False)
