"""--help read as a specification (session 50): --epochs beside --steps or a time budget was recorded and ignored,
--act rebuilt a preset with another activation in the inference commands (train refused it), and the typographic
summary printed "nan%" when no image was right when clean."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from kizuna.apps.cli import main


@pytest.mark.parametrize("command", [["train", "--data", "synthetic"], ["vit", "train", "--data", "DATA"]])
@pytest.mark.parametrize("length,why", [(["--steps", "3"], "--steps 3 sets the run's length (--steps 0 sizes it by "
                                                           "--epochs)"),
                                        (["--time-budget-minutes", "1"], "--time-budget-minutes 1 plans the run's length "
                                         "(--steps caps it; --time-budget-minutes 0 sizes it by --epochs)")])
def test_epochs_beside_another_length_is_refused(tmp_path, capsys, command, length, why):
    (tmp_path / "data" / "a").mkdir(parents=True)
    (tmp_path / "data" / "b").mkdir(parents=True)
    argv = [str(tmp_path / "data") if a == "DATA" else a for a in command]
    code = main([*argv, *length, "--epochs", "0.5", "--out", str(tmp_path / "run"), "--print-config"])
    assert code == 2
    err = capsys.readouterr().err
    assert "--epochs 0.5 does nothing here" in err and why in err
    # alone it gives the length, and at its default beside --steps it says nothing
    assert main([*argv, "--epochs", "0.5", "--out", str(tmp_path / "run"), "--print-config"]) == 0
    assert main([*argv, *length, "--out", str(tmp_path / "run"), "--print-config"]) == 0


@pytest.mark.parametrize("argv", [["info", "ViT-B-32-quickgelu", "--act", "gelu"],
                                  ["embed", "--model", "ViT-mu-8-quickgelu", "--act", "gelu", "--texts", "T",
                                   "--out", "OUT"]])
def test_act_beside_a_preset_name_is_refused(tmp_path, capsys, argv):
    (tmp_path / "t.txt").write_text("a cat\n")
    argv = [str(tmp_path / "t.txt") if a == "T" else str(tmp_path / "e.npy") if a == "OUT" else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--act gelu: --act names the activation of an OpenAI-layout checkpoint" in err and "drop it" in err
    assert not (tmp_path / "e.npy").exists()


def test_act_is_refused_for_a_folder_shadowing_a_preset_and_not_for_a_missing_file(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ViT-mu-8-quickgelu").mkdir()  # an earlier --out named like the preset: the preset is meant
    assert main(["info", "ViT-mu-8-quickgelu", "--act", "gelu", "--json"]) == 2
    assert "--act gelu: --act names the activation" in capsys.readouterr().err
    # a checkpoint path that is not there is no preset: told so, not to drop --act
    assert main(["info", "missing-openai.pt", "--act", "gelu"]) == 2
    err = capsys.readouterr().err
    assert "--act names the activation" not in err and "missing-openai.pt" in err


def test_the_typographic_summary_says_why_no_image_could_switch():
    from kizuna.eval.probes import TypographicResult

    metrics = {"clean_acc1": 0.0, "attacked_acc1": 0.0, "drop": 0.0, "follow_rate": 0.5,
               "follow_rate_of_correct": float("nan")}
    text = TypographicResult(metrics, np.zeros(2, dtype=int), torch.zeros(2)).table()
    assert "nan" not in text and "no image was classified correctly when clean" in text
    text = TypographicResult({**metrics, "follow_rate_of_correct": None}, np.zeros(2, dtype=int), torch.zeros(2)).table()
    assert "no image was classified correctly when clean" in text
    text = TypographicResult({**metrics, "follow_rate_of_correct": 0.25}, np.zeros(2, dtype=int), torch.zeros(2)).table()
    assert "25.0% switch to the written word" in text
