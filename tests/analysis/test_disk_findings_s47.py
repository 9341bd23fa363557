"""An analysis folder rewritten (stop 47's review of repeated commands): a single action left an earlier `analyze
all` report.json naming another model (and its numbers) beside the figure just redrawn; a model retrained at the
same path kept the old weights' prediction panel."""
import json

import torch

import kizuna
from kizuna.apps.cli import main


def _vit(path, seed):
    torch.manual_seed(seed)
    return kizuna.save_model(kizuna.create_vit("mu/4", image_size=16, num_classes=3, width=32, mlp_dim=64), path)


def test_a_single_action_updates_its_models_report_and_removes_another_models(tmp_path):
    a, b, out = _vit(tmp_path / "a.safetensors", 0), _vit(tmp_path / "b.safetensors", 1), tmp_path / "fig"
    assert main(["analyze", "all", str(a), "--out", str(out), "--components", "4", "--max-images", "2",
                 "--no-progress"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["filters"]["components"] == 4
    # the same model, filters again with more components: its report says the new numbers
    assert main(["analyze", "filters", str(a), "--out", str(out), "--components", "6"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["filters"] == json.loads((out / "filters.json").read_text())
    assert report["filters"]["components"] == 6 and "filters.png" in report["figures"]
    # another model: the report of a is gone, not left beside b's filters
    assert main(["analyze", "filters", str(b), "--out", str(out), "--components", "4"]) == 0
    assert not (out / "report.json").exists()


def test_a_model_retrained_at_the_same_path_loses_its_old_prediction_panel(tmp_path):
    """A CLIP model's panel needs --labels: `analyze all` without them keeps the panel an earlier call with them
    drew of this model, and kept it (by path) for weights retrained in place."""
    from PIL import Image

    image = tmp_path / "x.png"
    Image.new("RGB", (64, 64), (200, 30, 30)).save(image)
    model, out = tmp_path / "clip", tmp_path / "fig"
    flags = ["--out", str(out), "--image", str(image), "--components", "4", "--max-images", "2", "--no-progress"]

    def save(seed):
        torch.manual_seed(seed)
        kizuna.save_model(kizuna.create_model("ViT-mu-8"), model)

    save(0)
    assert main(["analyze", "all", str(model), *flags, "--labels", "cat,dog,car"]) == 0
    panel = json.loads((out / "predict.json").read_text())
    assert main(["analyze", "all", str(model), *flags]) == 0  # the same weights: the panel is this model's
    assert json.loads((out / "predict.json").read_text()) == panel
    save(1)  # retrained in place
    assert main(["analyze", "all", str(model), *flags]) == 0
    assert not (out / "predict.json").exists() and not (out / "predict.png").exists()


def test_the_weights_digest_is_exact_whatever_the_thread_count(tmp_path):
    """A digest of float sums changed with the thread count (their last bits): a single action with another
    --threads removed the same model's report.json."""
    from kizuna.analysis.report import load_target

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4096, 1024))
    before = torch.get_num_threads()
    try:
        digests = set()
        for threads in (1, 2):
            torch.set_num_threads(threads)
            target = load_target(kizuna.create_vit("mu/4", image_size=16, num_classes=3, width=32, mlp_dim=64))
            target.model = model  # (a large tensor: where summation order showed)
            digests.add(target.weights)
    finally:
        torch.set_num_threads(before)
    assert len(digests) == 1
    other = load_target(kizuna.create_vit("mu/4", image_size=16, num_classes=3, width=32, mlp_dim=64))
    other.model = torch.nn.Sequential(torch.nn.Linear(4096, 1024))
    assert other.weights not in digests


def test_a_single_action_by_another_spelling_of_the_path_keeps_the_report(tmp_path, monkeypatch):
    model, out = _vit(tmp_path / "a.safetensors", 0), tmp_path / "fig"
    monkeypatch.chdir(tmp_path)
    assert main(["analyze", "all", "a.safetensors", "--out", str(out), "--components", "4", "--max-images", "2",
                 "--no-progress"]) == 0
    assert main(["analyze", "filters", "./a.safetensors", "--out", str(out), "--components", "5"]) == 0
    assert json.loads((out / "report.json").read_text())["filters"]["components"] == 5
