"""Mutation findings (session 50), flags another setting makes unused: --patch-dropout is refused only beside a
wholly locked image tower; a tower that trains (no --lock-image) drops patches as asked."""
from __future__ import annotations

import json

from kizuna.apps.cli import main


def test_patch_dropout_on_an_image_tower_that_trains_is_accepted(tmp_path, capsys):
    assert main(["train", "--data", "synthetic", "--patch-dropout", "0.5", "--out", str(tmp_path / "run"),
                 "--print-config"]) == 0
    assert json.loads(capsys.readouterr().out)["patch_dropout"] == 0.5
    assert main(["train", "--data", "synthetic", "--lock-image", "false", "--patch-dropout", "0.25",
                 "--out", str(tmp_path / "run"), "--print-config"]) == 0
    assert json.loads(capsys.readouterr().out)["patch_dropout"] == 0.25
