"""A switch given alone before a command's positional argument (stop 47's review of the README as a spec):
argparse took the positional as the switch's value ("argument --compile: expected true/false, got 'MODEL'")."""
import json

import pytest

from kizuna.apps.cli import main
from kizuna.models.checkpoint import save_model


@pytest.fixture(scope="module")
def vit_folder(tmp_path_factory):
    import kizuna

    folder = tmp_path_factory.mktemp("switch") / "model"
    save_model(kizuna.create_vit("mu/4", image_size=16, num_classes=3, width=16, depth=1, heads=2, mlp_dim=32),
               folder)
    return str(folder)


@pytest.mark.parametrize("switch", ["--compile", "--grad-checkpointing"])
def test_a_switch_alone_before_the_model_is_on_and_the_model_is_the_model(vit_folder, switch, capsys, tmp_path):
    assert main(["vit", "finetune", switch, vit_folder, "--data", str(tmp_path / "d"), "--out", str(tmp_path / "o"),
                 "--print-config"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed[switch[2:].replace("-", "_")] is True and printed["init"] == vit_folder


def test_a_switch_with_its_value_and_a_mistyped_value_read_as_before(vit_folder, capsys, tmp_path):
    common = ["--data", str(tmp_path / "d"), "--out", str(tmp_path / "o"), "--print-config"]
    assert main(["vit", "finetune", "--compile", "false", vit_folder, *common]) == 0
    assert json.loads(capsys.readouterr().out)["compile"] is False
    with pytest.raises(SystemExit):
        main(["vit", "finetune", "--compile", "ture", vit_folder, *common])
    assert "argument --compile: expected true/false, got 'ture'" in capsys.readouterr().err


def test_progress_alone_before_the_model_of_an_analysis(vit_folder, tmp_path, capsys):
    from kizuna.apps.cli import build_parser
    from kizuna.apps.common import switches_given_alone

    argv = ["analyze", "attention-distance", "--progress", vit_folder, "--images", "x", "--out", str(tmp_path)]
    parser = build_parser()
    args = parser.parse_args(switches_given_alone(parser, argv))
    assert args.no_progress is False and args.model == vit_folder
    # a command without a positional keeps argparse's reading (a word after a switch is its value)
    argv = ["train", "--resampled", "maybe"]
    assert switches_given_alone(parser, argv) == argv


def test_a_positional_near_a_switch_word_is_no_mistyped_value():
    """"note", "ones", "n" or "TRUE.pt" after a switch were taken for mistyped values of it and refused."""
    from kizuna.apps.cli import build_parser
    from kizuna.apps.common import switches_given_alone

    parser = build_parser()
    for model in ("note", "ones", "n", "TRUE.pt", "runs/on"):
        argv = ["vit", "finetune", "--compile", model, "--data", "d"]
        assert switches_given_alone(parser, argv)[2] == "--compile=true", model
    for value in ("true", "off", "ture", "flase"):
        argv = ["vit", "finetune", "--compile", value, "m", "--data", "d"]
        assert switches_given_alone(parser, argv) == argv, value
