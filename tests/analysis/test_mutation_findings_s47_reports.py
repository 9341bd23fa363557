"""Mutation findings (stop 47's mutation test of an analysis folder rewritten): mutants that no test killed.

Reference: the report.json of `analyze all` lists, in ``figures``, the figure of every section it holds; and the
prediction panel kept beside it is this model's (path and weights) on this ``--image``, as
``full_report``'s docstring says."""
import json

import pytest
import torch
from PIL import Image

import kizuna
from kizuna.apps.cli import main


@pytest.fixture
def clip_and_images(tmp_path):
    for name, colour in (("x", (200, 30, 30)), ("y", (30, 30, 200))):
        Image.new("RGB", (64, 64), colour).save(tmp_path / f"{name}.png")
    torch.manual_seed(0)
    kizuna.save_model(kizuna.create_model("ViT-mu-8"), tmp_path / "clip")
    return str(tmp_path / "clip"), tmp_path / "x.png", tmp_path / "y.png"


FLAGS = ["--components", "4", "--max-images", "2", "--no-progress"]


def test_a_panel_of_another_image_is_not_kept_beside_the_report(clip_and_images, tmp_path):
    """Kills full_report's comparison without the image: the panel of x.png (same model, same weights) stood
    beside a report on y.png."""
    model, x, y = clip_and_images
    out = tmp_path / "fig"
    assert main(["analyze", "all", model, "--out", str(out), "--image", str(x), "--labels", "cat,dog", *FLAGS]) == 0
    assert (out / "predict.json").is_file()
    assert main(["analyze", "all", model, "--out", str(out), "--image", str(y), *FLAGS]) == 0
    assert not (out / "predict.json").exists() and not (out / "predict.png").exists()


def test_a_single_action_adding_a_section_lists_its_figure(clip_and_images, tmp_path):
    """Kills update_report's ``figures`` left as they were: `analyze predict` after an `analyze all` without
    --labels added the predict section to report.json, but not predict.png to its figures."""
    model, x, _ = clip_and_images
    out = tmp_path / "fig"
    assert main(["analyze", "all", model, "--out", str(out), "--image", str(x), *FLAGS]) == 0
    assert "predict.png" not in json.loads((out / "report.json").read_text())["figures"]
    assert main(["analyze", "predict", model, "--out", str(out), "--image", str(x), "--labels", "cat,dog"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert "predict" in report
    assert report["figures"] == sorted(s["figure"] for s in report.values() if isinstance(s, dict) and s.get("figure"))
    assert "predict.png" in report["figures"]


def test_a_single_action_after_the_model_was_retrained_in_place_removes_the_report(tmp_path):
    """Kills update_report comparing the model by its path alone (not ``describe()``, which holds the weights'
    digest): the report of the old weights stayed, its other sections beside the new weights' filters."""
    path, out = tmp_path / "vit.safetensors", tmp_path / "fig"

    def save(seed):
        torch.manual_seed(seed)
        kizuna.save_model(kizuna.create_vit("mu/4", image_size=16, num_classes=3, width=32, mlp_dim=64), path)

    save(0)
    assert main(["analyze", "all", str(path), "--out", str(out), *FLAGS]) == 0
    assert (out / "report.json").is_file()
    save(1)  # retrained in place
    assert main(["analyze", "filters", str(path), "--out", str(out), "--components", "4"]) == 0
    assert not (out / "report.json").exists()


def test_analyze_all_writes_its_sections_only(tmp_path):
    """Kills the single action's update_report run for `analyze all` too: its report.json took an "all" section,
    a copy of the report inside itself."""
    path, out = tmp_path / "vit.safetensors", tmp_path / "fig"
    torch.manual_seed(0)
    kizuna.save_model(kizuna.create_vit("mu/4", image_size=16, num_classes=3, width=32, mlp_dim=64), path)
    assert main(["analyze", "all", str(path), "--out", str(out), *FLAGS]) == 0
    assert "all" not in json.loads((out / "report.json").read_text())
