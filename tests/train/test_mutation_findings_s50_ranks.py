"""Mutation findings (session 50), torchrun: the demo's advice under torchrun carries the demo's own flags and only
them (not the process settings --threads / --progress, which are not the run's), in a line the shell reads back."""
from __future__ import annotations

import shlex

from kizuna.apps.cli import main


def test_the_demos_torchrun_advice_is_the_demos_flags_only(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    out = tmp_path / "a demo's out"
    assert main(["demo", "--out", str(out), "--steps", "30", "--batch-size", "32"]) == 2
    err = capsys.readouterr().err
    line = err.split("`torchrun ... -m kizuna.apps.cli ", 1)[1].split("`", 1)[0]
    words = shlex.split(line)
    assert words[:3] == ["train", "--config", "demo"]
    flags = dict(zip(words[3::2], words[4::2]))
    assert flags == {"--out": str(out), "--steps": "30", "--warmup-steps": "4", "--batch-size": "32"}, line


def test_print_config_prints_its_document_outside_torchrun(tmp_path, capsys, monkeypatch):
    import json

    from kizuna.train.distributed import first_rank

    for name in ("RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert first_rank()
    assert main(["train", "--data", "synthetic", "--out", str(tmp_path / "run"), "--print-config"]) == 0
    assert json.loads(capsys.readouterr().out)["out"] == str(tmp_path / "run")
    monkeypatch.setenv("RANK", "3")  # a RANK left in the environment of a one-process run: it is the only one
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert first_rank()
    (tmp_path / "data" / "a").mkdir(parents=True)
    assert main(["vit", "train", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "vit"),
                 "--print-config"]) == 0
    assert json.loads(capsys.readouterr().out)["out"] == str(tmp_path / "vit")


def _check(world_size: int, batch_size: int, hard_negatives: bool, data: str = "synthetic") -> None:
    from kizuna.train.config import TrainConfig
    from kizuna.train.contrastive import ContrastiveTrainer
    from kizuna.train.distributed import DistInfo

    trainer = object.__new__(ContrastiveTrainer)
    trainer.dist = DistInfo(rank=0, world_size=world_size)
    trainer.check_config(TrainConfig(data=data, batch_size=batch_size, synthetic_hard_negatives=hard_negatives))


def test_only_an_odd_share_per_rank_with_hard_negatives_is_refused():
    import pytest

    for world_size, batch_size in ((2, 6), (4, 12)):
        with pytest.raises(ValueError, match=f"leaves each an odd {batch_size // world_size}"):
            _check(world_size, batch_size, True)
    _check(2, 6, False)  # no pairs to keep: any share
    _check(1, 7, True)  # one process pairs its own batch as it always did (the last image has no twin)
    _check(2, 8, True)
    _check(2, 6, True, data="pairs.csv")  # (hard negatives are the synthetic data's)
