"""Configuration files and their round trips (stop 46): architecture flags recorded and ignored under a config's
init, a resume's own --print-config output restarting best/, a preset spelt with "/" dropping a config's
overrides, a config's loss="model" and a tuple refused on resume, a hand-written JSON's model settings dropped
without a word, a key set to None counted as given."""
import json
import sys
from pathlib import Path

import pytest

from kizuna.apps.cli import build_parser, main
from kizuna.train.checkpointing import _same_setting
from kizuna.train.config import is_a_runs_record, make_config, named_fields
from kizuna.train.supervised import make_supervised_config

sys.path.insert(0, str(Path(__file__).parent))
from test_diverged_eval import _tree  # noqa: E402

TINY = '{"width": 32, "depth": 1, "heads": 2, "mlp_dim": 64}'


def test_architecture_flags_are_refused_where_a_config_fine_tunes(tmp_path):
    """`vit train --config ft.py --model S/8 --model-overrides '{"depth": 3}'` (ft.py sets init) recorded both and
    trained the checkpoint's model. The Python API's keywords (a helper passing every field) are left alone."""
    from kizuna.train.vit_cli import config_from_args

    config = tmp_path / "ft.py"
    config.write_text(f"def get_config():\n    return dict(init={str(tmp_path / 'ckpt')!r})\n")

    def parsed(*flags):
        return config_from_args(build_parser().parse_args(["vit", "train", "--config", str(config), *flags]))

    with pytest.raises(ValueError, match=r"--model and --model-overrides: this run fine-tunes .*init.*drop them"):
        parsed("--model", "S/8", "--model-overrides", '{"depth": 3}')
    with pytest.raises(ValueError, match=r"--model-overrides: this run fine-tunes"):
        parsed("--model-overrides", '{"depth": 3}')
    assert parsed("--lr", "0.1").lr == 0.1
    assert make_supervised_config(init=str(tmp_path / "ckpt"), model="S/8").model == "S/8"


def test_a_resume_with_its_runs_printed_config_keeps_its_validation_split(tmp_path, capsys):
    """--print-config prints val_split "" (resolved and recorded as "test" when the run started): given back on a
    resume it was another evaluation set, best/ started afresh, and the record went back to ""."""
    root = tmp_path / "data"
    _tree(root / "train", [4, 4])
    _tree(root / "test", [3, 3])
    run = ["vit", "train", "--model", "mu/4", "--model-overrides", TINY, "--image-size", "16", "--data",
           str(root / "train"), "--val-data", str(root), "--batch-size", "8", "--steps", "2", "--eval-every", "2",
           "--workers", "0", "--threads", "1", "--progress", "false", "--out", str(tmp_path / "run")]
    assert main(run) == 0
    saved = json.loads((tmp_path / "run" / "train_config.json").read_text())
    assert saved["val_split"] == "test"
    capsys.readouterr()
    assert main([*run, "--steps", "3", "--val-split", "", "--resume", "latest"]) == 0
    assert "starts afresh" not in capsys.readouterr().err
    assert json.loads((tmp_path / "run" / "train_config.json").read_text())["val_split"] == "test"
    # on other data "" resolves anew (there: val first)
    other = tmp_path / "other"
    _tree(other / "val", [2, 2])
    _tree(other / "test", [2, 2])
    from kizuna.train.checkpointing import resumed_config
    from kizuna.train.vit_cli import named_fields

    args = build_parser().parse_args(["vit", "train", "--out", str(tmp_path / "run"), "--resume", "latest",
                                      "--val-data", str(other), "--val-split", ""])
    cfg = make_supervised_config(out=str(tmp_path / "run"), resume="latest", val_data=str(other), val_split="")
    assert resumed_config(cfg, named_fields(args))[0].val_split == ""


def test_a_preset_spelt_with_a_slash_keeps_the_configs_overrides():
    base = {"model": "ViT-mu-8", "model_overrides": {"embed_dim": 64, "vision": {"depth": 1}}}
    for spelling in ("ViT-mu-8", "ViT-mu/8"):  # the second dropped them: a plain ViT trained
        assert make_config(base, model=spelling).model_overrides == base["model_overrides"]
    assert make_config(base, model="ViT-B-32").model_overrides == {}  # another model: its own architecture


def test_a_resume_compares_what_the_run_recorded():
    assert _same_setting("loss", "model", "clip")  # "the model's own", which the run recorded
    assert not _same_setting("loss", "siglip", "clip")
    assert _same_setting("model_overrides", {"vision": {"stem_channels": (16, 32)}},
                         {"vision": {"stem_channels": [16, 32]}})  # a .py config's tuple, the run's saved list
    assert not _same_setting("model_overrides", {"vision": {"stem_channels": (16, 64)}},
                             {"vision": {"stem_channels": [16, 32]}})


def test_only_a_runs_own_record_is_replayed_silently(tmp_path):
    record, written, py = tmp_path / "train_config.json", tmp_path / "sig.json", tmp_path / "sig.py"
    record.write_text(json.dumps({"loss": "siglip", "precision_used": "fp32"}))
    written.write_text(json.dumps({"loss": "siglip"}))
    py.write_text('def get_config():\n    return dict(loss="siglip")\n')
    assert is_a_runs_record(record) and not is_a_runs_record(written) and not is_a_runs_record(py)
    assert not is_a_runs_record(tmp_path / "missing.json")
    from dataclasses import asdict

    from kizuna.train.config import TrainConfig

    older = tmp_path / "older.json"  # a record from before precision_used was written: every setting
    older.write_text(json.dumps(asdict(TrainConfig())))
    assert is_a_runs_record(older)


def test_a_config_key_set_to_none_is_not_named(tmp_path):
    """best_metric=None is the default, left unset: counted as named, a resume replaced the run's own
    --best-metric with none, without a word, and best/ stopped updating."""
    config = tmp_path / "tiny.py"
    config.write_text('def get_config():\n    return dict(best_metric=None, lr=1e-3)\n')
    args = build_parser().parse_args(["train", "--config", str(config)])
    names = named_fields(args)
    assert "lr" in names and "best_metric" not in names


def test_a_recipes_scene_size_under_a_checkpoint_is_not_asked_for(tmp_path):
    """`--config demo --model CKPT`: the demo's synthetic_image_size 48 gives way to the checkpoint's 32 at the
    start; the same command with --resume latest was refused ("synthetic_image_size=48 (the run has 32)")."""
    import kizuna

    checkpoint = tmp_path / "ckpt"
    kizuna.save_model(kizuna.create_model("ViT-mu-8"), checkpoint)
    args = build_parser().parse_args(["train", "--config", "demo", "--model", str(checkpoint)])
    assert "synthetic_image_size" not in named_fields(args)
    typed = build_parser().parse_args(["train", "--config", "demo", "--model", str(checkpoint),
                                       "--synthetic-image-size", "48"])
    assert "synthetic_image_size" in named_fields(typed)  # typed, it is asked for (and refused)
