"""What a user sees when something goes a little wrong: the command's own voice, the way forward, and no
lost work."""
import json
import sys
from pathlib import Path

import pytest
import torch

from kizuna.apps.cli import main

sys.path.insert(0, str(Path(__file__).parents[1] / "train"))
from _tiny import tiny_config  # noqa: E402


def _train_flags(out, data=None):
    """A tiny run on the synthetic scenes, or on ``data`` (whose runs the --synthetic-* flags would be refused)."""
    source = (["--synthetic-image-size", "32", "--synthetic-length", "64", "--eval-max-samples", "4"] if data is None
              else ["--data", str(data)])  # (--eval-max-samples caps the probes, which only synthetic data runs)
    return ["train", "--model", "ViT-mu-8", *source,
            "--batch-size", "16", "--steps", "2", "--warmup-steps", "1", "--context-length", "24", "--workers", "0",
            "--threads", "1", "--precision", "fp32", "--out", str(out)]


def test_a_run_that_fails_to_start_leaves_the_earlier_checkpoints_in_place(tmp_path, capsys):
    """A typo in --data moved the earlier run's checkpoints aside before failing, and `--resume latest` then
    found nothing."""
    out = tmp_path / "run"
    assert main([*_train_flags(out), "--progress", "false"]) == 0
    assert main(_train_flags(out, data=str(tmp_path / "trian"))) == 2
    assert (out / "checkpoints" / "step_0000002").is_dir() and not (out / "checkpoints.prev").exists()
    capsys.readouterr()


def test_without_a_bar_the_run_prints_a_line_per_log_record(tmp_path, capsys):
    """--progress false silenced the whole run: no loss, no pace, for a batch job's log."""
    assert main([*_train_flags(tmp_path / "run"), "--progress", "false", "--log-every", "1"]) == 0
    printed = capsys.readouterr()
    assert "step 1/2: loss " in printed.err and "step 2/2: loss " in printed.err and "samples/s" in printed.err
    # stdout holds the final metrics alone (the step lines were printed there with them): `> final.json` works
    assert isinstance(json.loads(printed.out), dict)


def test_warnings_speak_as_the_command(tmp_path, capsys):
    """A library warning came as Python's file:line plus a source line."""
    from kizuna.models.convert_openai import kizuna_to_openai

    import kizuna

    path = tmp_path / "openclip.bin"
    torch.save(kizuna_to_openai(kizuna.create_model("ViT-mu-8", act="quick_gelu"), strict=False), path)
    assert main(["info", str(path)]) == 0
    err = capsys.readouterr().err
    assert "kizuna info: warning: " in err and "--act gelu" in err and "UserWarning" not in err
    assert main(["info", str(path), "--act", "gelu"]) == 0
    assert "warning" not in capsys.readouterr().err


def test_the_trainers_own_warnings_speak_as_the_command(tmp_path, capsys):
    """The trainers printed some warnings as a bare "warning: ..." (the docs promise the command's voice)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("always")  # pytest records warnings; the command prints them as a user sees them
        assert main([*_train_flags(tmp_path / "run"), "--warmup-steps", "5"]) == 0
    err = capsys.readouterr().err
    assert "kizuna train: warning: the warm-up (5 steps) lasts the whole run (2 steps)" in err


def test_a_runs_folder_given_as_a_model_names_the_model_inside(tmp_path, capsys):
    from kizuna.train.contrastive import ContrastiveTrainer

    ContrastiveTrainer(tiny_config(tmp_path / "run", steps=1)).train()
    assert main(["info", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "is a training run's folder, not a model; pass" in err and "checkpoints/latest" in err


@pytest.mark.parametrize("content,message", [("SUITE = [\n  {'model': }\n]\n", "suite.py:2: "),
                                             (None, "is a folder"), ("SUITE = []\n", "the suite has no runs")])
def test_suite_file_mistakes_are_one_line_errors(tmp_path, capsys, content, message):
    path = tmp_path / "suite.py"
    if content is None:
        path.mkdir()
    else:
        path.write_text(content)
    assert main(["eval", "suite", str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_resume_from_a_path_that_does_not_exist_says_so(tmp_path, capsys):
    assert main([*_train_flags(tmp_path / "run"), "--resume", str(tmp_path / "nosuch")]) == 2
    assert "no such folder" in capsys.readouterr().err


def test_info_on_a_preset_counts_without_drawing_weights(capsys, monkeypatch):
    """`kizuna info ViT-H-14` drew 1 B random weights (20 s) to count them; the shapes are enough."""
    import kizuna

    made = []
    create = kizuna.create_model
    monkeypatch.setattr(kizuna, "create_model", lambda *a, **k: made.append(create(*a, **k)) or made[-1])
    assert main(["info", "ViT-B-32"]) == 0
    assert "total 151.28M" in capsys.readouterr().out
    assert made[0].logit_scale.device.type == "meta"


def test_info_counts_a_vit_variant():
    """`kizuna info S/16` (a name `kizuna vit train --model` takes) was "not a preset name"."""
    import json
    from contextlib import redirect_stdout
    from io import StringIO

    out = StringIO()
    with redirect_stdout(out):
        assert main(["info", "S/16", "--json"]) == 0
    info = json.loads(out.getvalue())
    assert info["kind"] == "vit" and round(info["params"]["total"] / 1e6, 2) == 21.67
    assert info["config"]["patch_size"] == 16 and info["gflops"]["image"] == pytest.approx(9.197, rel=1e-3)
    out = StringIO()
    with redirect_stdout(out):  # vit train's default size: the position table is 64 patches, not 3,136
        assert main(["info", "S/4", "--image-size", "32", "--json"]) == 0
    assert round(json.loads(out.getvalue())["params"]["total"] / 1e6, 2) == 21.34
    assert main(["info", "ViT-B-32", "--image-size", "32"]) == 2  # a preset's size is its own: not silently kept


def test_an_empty_training_set_says_what_to_pass(tmp_path, capsys):
    """A dataset root, or a classification set, gave "no usable image-caption samples found" and no way on."""
    sys.path.insert(0, str(Path(__file__).parents[1] / "data"))
    from _shards import image_bytes, make_pair_shard, write_tar

    make_pair_shard(tmp_path / "root" / "train" / "000000.tar", 0, 4)
    write_tar(tmp_path / "labelled" / "000000.tar", [(f"{i:04d}.{ext}", image_bytes() if ext == "jpg" else b"3")
                                                       for i in range(4) for ext in ("jpg", "cls")])
    for data, hint in ((tmp_path / "root", "it is a dataset root with split folders (train): pass one"),
                       (tmp_path / "labelled", "carry class labels (.cls), not captions")):
        assert main(_train_flags(tmp_path / "run", data=str(data))) == 2
        assert hint in capsys.readouterr().err


def test_training_data_that_is_missing_or_lacks_a_column_names_the_flag(tmp_path, capsys):
    """"data source not found: X" and "missing column(s) ['title']" named neither --data nor the column flags."""
    assert main(_train_flags(tmp_path / "run", data=str(tmp_path / "nowhere"))) == 2
    assert f"--data {tmp_path / 'nowhere'}: data source not found" in capsys.readouterr().err
    (tmp_path / "pairs.csv").write_text("filepath,caption\na.jpg,a dog\n")
    assert main(_train_flags(tmp_path / "run", data=str(tmp_path / "pairs.csv"))) == 2
    assert "missing column(s) ['title']" in (err := capsys.readouterr().err) and "--caption-column" in err


def test_analyze_refuses_an_out_that_is_a_file(tmp_path, capsys):
    (tmp_path / "a.jpg").write_bytes(b"x")
    assert main(["analyze", "filters", "ViT-mu-8", "--out", str(tmp_path / "a.jpg")]) == 2
    assert "is a file; give a folder" in capsys.readouterr().err


def test_an_out_that_cannot_be_written_is_said_before_the_work(tmp_path, capsys, monkeypatch):
    """vit eval --out FILE evaluated, then failed with "[Errno 17] File exists"; a read-only --out ended in a
    traceback (OSError, errno 30) once the results were printed."""
    import errno

    from kizuna.apps.cli import main

    taken = tmp_path / "taken.txt"
    taken.write_text("x")
    assert main(["vit", "eval", str(tmp_path / "no-model"), "--data", str(tmp_path), "--out", str(taken)]) == 2
    assert f"--out {taken} is a file; give a folder for results.json" in capsys.readouterr().err
    from kizuna.analysis import cli as analysis_cli

    def read_only(args):
        raise OSError(errno.EROFS, "Read-only file system", str(tmp_path / "rom" / "x"))

    monkeypatch.setattr(analysis_cli, "run", read_only)
    assert main(["analyze", "filters", "ViT-mu-8", "--out", str(tmp_path / "figs")]) == 2
    err = capsys.readouterr().err
    assert "error: Read-only file system: " in err and "choose another --out" in err and "Traceback" not in err
