"""Analysis folders written by an earlier kizuna (stop 49): its weights digest was recorded bare (the same sha256,
and before that a blake2b of the bytes); compared with this one's as they stood, every report and prediction
panel of the same model looked like another model's and was removed by the next single action."""
import json

import pytest
import torch
from PIL import Image

import kizuna
from kizuna.analysis.report import WEIGHTS_DIGEST, _blake2b_digest
from kizuna.apps.cli import main


def _recorded_as(path, digest_of):
    record = json.loads(path.read_text())
    section = record["model"] if isinstance(record.get("model"), dict) else record
    assert section["weights"].startswith(WEIGHTS_DIGEST)
    section["weights"] = digest_of(section["weights"])
    path.write_text(json.dumps(record))


def _vit(path, seed):
    torch.manual_seed(seed)
    return kizuna.save_model(kizuna.create_vit("mu/4", image_size=16, num_classes=3, width=32, mlp_dim=64), path)


def _bare(digest):  # b537ddf's
    return digest[len(WEIGHTS_DIGEST):]


def _blake2b_of(model_path):  # 5c6af95's to ca9bdab's
    model = kizuna.create_model(model_path)
    return lambda _: _blake2b_digest(model)


@pytest.mark.parametrize("kind", ["bare", "blake2b"])
def test_a_report_of_an_earlier_digest_of_these_weights_is_updated(tmp_path, kind):
    """(Since stop 53 a report.json of an earlier version of the analyses is removed by its report_version: this is
    a report of this version whose weights' digest was recorded in an earlier form, as the predict panel's still is.)"""
    model, out = _vit(tmp_path / "a.safetensors", 0), tmp_path / "fig"
    assert main(["analyze", "all", str(model), "--out", str(out), "--components", "4", "--max-images", "2",
                 "--no-progress"]) == 0
    _recorded_as(out / "report.json", _bare if kind == "bare" else _blake2b_of(model))
    assert main(["analyze", "filters", str(model), "--out", str(out), "--components", "6"]) == 0
    assert json.loads((out / "report.json").read_text())["filters"]["components"] == 6
    # the same path retrained: an earlier digest of other weights is another model's report
    _vit(tmp_path / "a.safetensors", 1)
    assert main(["analyze", "filters", str(model), "--out", str(out), "--components", "4"]) == 0
    assert not (out / "report.json").exists()


def test_a_panel_of_an_earlier_digest_is_kept_for_the_same_weights_and_image(tmp_path):
    image, model, out = tmp_path / "x.png", tmp_path / "clip", tmp_path / "fig"
    Image.new("RGB", (64, 64), (200, 30, 30)).save(image)
    torch.manual_seed(0)
    kizuna.save_model(kizuna.create_model("ViT-mu-8"), model)
    flags = ["--out", str(out), "--image", str(image), "--components", "4", "--max-images", "2", "--no-progress"]
    assert main(["analyze", "all", str(model), *flags, "--labels", "cat,dog,car"]) == 0
    _recorded_as(out / "predict.json", _bare)
    assert main(["analyze", "all", str(tmp_path / "." / "clip"), *flags]) == 0  # another spelling of the path
    assert (out / "predict.json").exists() and (out / "predict.png").exists()
    other = tmp_path / "y.png"  # another image: the panel is not of it
    Image.new("RGB", (64, 64), (20, 30, 200)).save(other)
    assert main(["analyze", "all", str(model), *flags[:2], "--image", str(other), *flags[4:]]) == 0
    assert not (out / "predict.json").exists()
