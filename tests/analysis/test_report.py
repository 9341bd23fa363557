"""`kizuna analyze` on tiny saved ViT and CLIP models: every figure and the JSON numbers."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import kizuna
from kizuna.analysis.report import filters_report, load_target, positions_report
from kizuna.apps.cli import main


FIGURES = ["attention_distance.png", "filters.png", "positions.png", "predict.png", "rollout.png"]


@pytest.fixture(scope="module")
def images(tmp_path_factory, write_noise_images) -> Path:
    return write_noise_images(tmp_path_factory.mktemp("imgs"), 4, 40)


@pytest.fixture(scope="module")
def vit_path(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = kizuna.create_vit("mu/4", image_size=16, num_classes=3, width=32, mlp_dim=64)
    return kizuna.save_model(model, tmp_path_factory.mktemp("vit") / "vit.safetensors")


@pytest.fixture(scope="module")
def clip_path(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = kizuna.create_model("ViT-mu-8")
    return kizuna.save_model(model, tmp_path_factory.mktemp("clip") / "clip")


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def test_all_on_vit(vit_path, tmp_path, capsys):
    out = tmp_path / "a"
    assert main(["analyze", "all", str(vit_path), "--out", str(out), "--components", "6"]) == 0
    assert sorted(p.name for p in out.glob("*.png")) == FIGURES
    for p in out.glob("*.png"):
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rep = _json(out / "report.json")
    assert set(rep) == {"model", "filters", "positions", "attention_distance", "rollout", "predict", "figures"}
    assert rep["model"]["kind"] == "vit" and rep["model"]["grid"] == [4, 4]
    assert len(rep["filters"]["explained_variance_ratio"]) == 6
    rc = rep["positions"]["row_column"]
    assert set(rc) == {"same_row", "same_col", "other", "line", "ratio"} and rep["positions"]["row_column_ratio"] > 0
    ad = rep["attention_distance"]
    assert np.array(ad["per_head"]).shape == (2, 2) and len(ad["per_layer_mean"]) == 2
    assert 0 < ad["per_layer_mean"][0] <= 16 * np.sqrt(2) and ad["uniform_reference"] > 0
    assert "synthetic" in ad["images_source"] and ad["num_images"] == 16
    assert np.array(rep["rollout"]["rollout_map"]).shape == (4, 4)
    assert rep["predict"]["method"].startswith("classifier head") and len(rep["predict"]["probs"]) == 3
    for name in ("filters", "positions", "attention_distance", "rollout", "predict"):
        assert _json(out / f"{name}.json") == rep[name]
    assert "row_column_ratio" in capsys.readouterr().out


def test_all_on_clip(clip_path, images, tmp_path):
    out = tmp_path / "c"
    rc = main(["analyze", "all", str(clip_path), "--images", str(images), "--labels", "cat,dog,car",
               "--true-label", "dog", "--out", str(out)])
    assert rc == 0
    assert sorted(p.name for p in out.glob("*.png")) == FIGURES
    rep = _json(out / "report.json")
    assert rep["model"]["kind"] == "clip" and rep["attention_distance"]["num_images"] == 4
    pred = rep["predict"]
    assert pred["labels"] == ["cat", "dog", "car"] and abs(sum(pred["probs"]) - 1) < 1e-5
    assert pred["method"].startswith("zero-shot") and pred["true_label"] == "dog"
    assert main(["analyze", "predict", str(clip_path), "--image", str(images / "im0.png"), "--labels", "cat,dog",
                 "--true-label", "horse", "--out", str(tmp_path / "p")]) == 2  # not a label: refused


def test_single_actions_on_clip(clip_path, images, tmp_path):
    img = str(images / "im0.png")
    cases = {
        "filters": [],
        "positions": [],
        "attention-distance": ["--images", str(images), "--max-images", "2"],
        "rollout": ["--image", img, "--head-fusion", "max", "--discard-ratio", "0.5"],
        "predict": ["--image", img, "--labels", "cat,dog"],
    }
    for action, extra in cases.items():
        out = tmp_path / action
        assert main(["analyze", action, str(clip_path), "--out", str(out), *extra]) == 0, action
        stem = action.replace("-", "_")
        assert (out / f"{stem}.png").is_file() and (out / f"{stem}.json").is_file(), action
    assert _json(tmp_path / "attention-distance" / "attention_distance.json")["num_images"] == 2
    assert _json(tmp_path / "rollout" / "rollout.json")["head_fusion"] == "max"


def test_predict_errors(clip_path, images, tmp_path, capsys):
    img = str(images / "im0.png")
    assert main(["analyze", "predict", str(clip_path), "--image", img, "--out", str(tmp_path)]) == 2
    assert "--labels" in capsys.readouterr().err
    plain = kizuna.save_model(kizuna.create_vit("mu/8", image_size=16, width=32, mlp_dim=64), tmp_path / "p.safetensors")
    assert main(["analyze", "predict", str(plain), "--image", img, "--out", str(tmp_path)]) == 2


def test_hybrid_filters_use_the_stem(tmp_path):
    model = kizuna.create_vit("hybrid-mu/1", image_size=16, num_classes=2, width=32, mlp_dim=64,
                              stem_channels=[8, 16])
    target = load_target(model)
    f = filters_report(target, tmp_path, components=4)
    assert f["filters_of"].startswith("stem.conv.0") and f["filter_shape"] == [3, 3, 3]
    p = positions_report(target, tmp_path)
    assert p["grid"] == [4, 4] and target.pixels_per_patch == 4


def test_all_lists_only_the_figures_it_wrote(clip_path, images, tmp_path):
    """A second `analyze all` into the same --out, this time without --labels (so no prediction), listed the
    first run's predict.png as one of its figures: the list came from every PNG in the folder."""
    out = tmp_path / "again"
    assert main(["analyze", "all", str(clip_path), "--images", str(images), "--labels", "cat,dog",
                 "--out", str(out)]) == 0
    assert "predict.png" in _json(out / "report.json")["figures"]
    assert main(["analyze", "all", str(clip_path), "--images", str(images), "--out", str(out)]) == 0
    rep = _json(out / "report.json")
    assert "predict" not in rep and (out / "predict.png").is_file()  # left over from the first run
    assert rep["figures"] == [f for f in FIGURES if f != "predict.png"]
