"""Analysis folders written by an earlier kizuna (stop 49): its weights digest was of another kind (a bare
blake2b, then a bare content hash), and compared with this one's, every report and prediction panel of the same
model looked like another model's and was removed by the next single action."""
import json

import torch
from PIL import Image

import kizuna
from kizuna.analysis.report import WEIGHTS_DIGEST
from kizuna.apps.cli import main


def _as_an_earlier_kizuna_wrote_it(path):
    record = json.loads(path.read_text())
    section = record["model"] if "model" in record and isinstance(record["model"], dict) else record
    assert section["weights"].startswith(WEIGHTS_DIGEST)
    section["weights"] = "6f348e68f56feb94"  # (ca9bdab's digest of the same weights)
    path.write_text(json.dumps(record))


def test_a_report_of_an_earlier_digest_is_updated_not_removed(tmp_path):
    torch.manual_seed(0)
    model = kizuna.save_model(kizuna.create_vit("mu/4", image_size=16, num_classes=3, width=32, mlp_dim=64),
                              tmp_path / "a.safetensors")
    out = tmp_path / "fig"
    assert main(["analyze", "all", str(model), "--out", str(out), "--components", "4", "--max-images", "2",
                 "--no-progress"]) == 0
    _as_an_earlier_kizuna_wrote_it(out / "report.json")
    assert main(["analyze", "filters", str(model), "--out", str(out), "--components", "6"]) == 0
    assert json.loads((out / "report.json").read_text())["filters"]["components"] == 6


def test_a_panel_of_an_earlier_digest_is_kept_for_the_same_model_and_image(tmp_path):
    image, model, out = tmp_path / "x.png", tmp_path / "clip", tmp_path / "fig"
    Image.new("RGB", (64, 64), (200, 30, 30)).save(image)
    torch.manual_seed(0)
    kizuna.save_model(kizuna.create_model("ViT-mu-8"), model)
    flags = ["--out", str(out), "--image", str(image), "--components", "4", "--max-images", "2", "--no-progress"]
    assert main(["analyze", "all", str(model), *flags, "--labels", "cat,dog,car"]) == 0
    _as_an_earlier_kizuna_wrote_it(out / "predict.json")
    assert main(["analyze", "all", str(model), *flags]) == 0
    assert (out / "predict.json").exists() and (out / "predict.png").exists()
    other = tmp_path / "y.png"  # another image: the panel is not of it
    Image.new("RGB", (64, 64), (20, 30, 200)).save(other)
    assert main(["analyze", "all", str(model), *flags[:2], "--image", str(other), *flags[4:]]) == 0
    assert not (out / "predict.json").exists()
