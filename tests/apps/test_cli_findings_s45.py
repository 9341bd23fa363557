"""Command-line parsing (hunt, stop 45): a repeated list flag keeps both lists, an empty --out or --cache-dir
(an unset variable) is refused, one folder given twice is measured once, and flags a switched-off task reads are
refused."""
import json

import numpy as np
import torch
import pytest
from PIL import Image

from kizuna.apps.cli import build_parser, main


def test_a_repeated_image_flag_keeps_both_lists():
    parser = build_parser()
    args = parser.parse_args(["zeroshot", "--model", "m", "--labels", "a,b", "--image", "x.png", "--image", "y.png",
                              "z.png"])
    assert args.image == ["x.png", "y.png", "z.png"]
    args = parser.parse_args(["analyze", "attention-distance", "m", "--images", "a", "--images", "b"])
    assert args.images == ["a", "b"]


@pytest.mark.parametrize("command", [
    ["eval", "zeroshot", "--model", "m", "--dataset", "d", "--out", ""],
    ["eval", "retrieval", "--model", "m", "--dataset", "d", "--out", " "],
    ["eval", "zeroshot", "--model", "m", "--dataset", "d", "--cache-dir", ""],
    ["eval", "suite", "s.json", "--out", ""],
    ["vit", "eval", "m", "--data", "d", "--out", ""],
    ["analyze", "filters", "m", "--out", ""],
    ["analyze", "compare-runs", "r1", "--out", ""],
])
def test_an_empty_output_folder_is_refused(command, capsys):
    """The eval commands read "" as no --out (nothing written, rc 0), analyze and the class cache as the current
    folder."""
    with pytest.raises(SystemExit) as exit_:
        main(command)
    assert exit_.value.code == 2 and "empty (an unset variable?)" in capsys.readouterr().err


def test_linear_probe_without_zero_shot_refuses_its_flags(capsys):
    assert main(["eval", "linear-probe", "--model", "m", "--dataset", "d", "--no-zeroshot", "--templates",
                 "x {c}"]) == 2
    assert "--templates: sets the zero-shot comparison, which --no-zeroshot switches off" in capsys.readouterr().err


def test_one_folder_given_twice_is_measured_once(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "imgs").mkdir()
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(tmp_path / "imgs" / f"{i}.png")
    import kizuna

    vit = kizuna.create_vit("mu/4", image_size=16, num_classes=0, width=16, depth=1, heads=2)
    kizuna.save_model(vit, tmp_path / "model")
    out = tmp_path / "out"
    assert main(["analyze", "attention-distance", str(tmp_path / "model"), "--images", str(tmp_path / "imgs"),
                 str(tmp_path / "imgs") + "/", "--out", str(out), "--no-progress", "--threads", "1"]) == 0
    record = json.loads(next(out.glob("*.json")).read_text())
    assert record["num_images"] == 3


def test_an_image_given_and_inside_a_folder_given_is_measured_once(tmp_path):
    from kizuna.analysis.report import load_images

    rng = np.random.default_rng(0)
    (tmp_path / "imgs").mkdir()
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(tmp_path / "imgs" / f"{i}.png")
    def to_tensor(image):
        return torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32))

    images, names = load_images([str(tmp_path / "imgs"), str(tmp_path / "imgs" / "0.png")], to_tensor, 32)
    assert len(names) == 3 and images.shape[0] == 3
