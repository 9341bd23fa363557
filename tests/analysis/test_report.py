"""`kizuna analyze` on tiny saved ViT and CLIP models: every figure and the JSON numbers."""
from __future__ import annotations

import json
import re
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
    assert set(rep) == {"model", "filters", "positions", "attention_distance", "rollout", "predict", "figures",
                        "report_version"}
    assert rep["model"]["kind"] == "vit" and rep["model"]["grid"] == [4, 4]
    assert len(rep["filters"]["explained_variance_ratio"]) == 6
    rc = rep["positions"]["row_column"]
    assert set(rc) == {"same_row", "same_col", "other", "line", "ratio", "equal_distance_line",
                       "equal_distance_other", "equal_distance_excess"} and rep["positions"]["row_column_ratio"] > 0
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
    vit = kizuna.create_vit("mu/4", image_size=32, num_classes=3, width=32, depth=1, heads=2, mlp_dim=64)
    kizuna.save_model(vit.eval(), tmp_path / "vit")
    assert main(["analyze", "all", str(tmp_path / "vit"), "--images", str(images), "--out", str(out)]) == 0
    assert _json(out / "predict.json")["model"] == str(tmp_path / "vit")
    assert main(["analyze", "all", str(clip_path), "--images", str(images), "--out", str(out)]) == 0
    assert not (out / "predict.png").exists()  # the ViT's prediction stood beside the CLIP model's report


# ------------------------------------------------------------------ bug hunt: sizes, skips, memory, options
def test_hybrid_attention_distance_off_a_multiple_reports_the_input_size(tmp_path):
    """A 30 px hybrid (stride 4) reported image_size [32, 32] (grid * pitch): the input is 30 px. The ResNet
    stem's padded stride-2 convolutions round its grid up to 8x8 with token centres 4 px apart (0, 4, ... 28),
    so the pitch stays 4 px and the uniform level is that of an 8x8 grid of 4 px."""
    from kizuna.analysis.attention import grid_mean_pairwise_distance
    from kizuna.analysis.report import attention_distance_report, synthetic_images

    torch.manual_seed(0)
    with pytest.warns(UserWarning, match="not a multiple"):
        model = kizuna.create_vit("hybrid-mu/1", image_size=30, num_classes=10, stem_channels=[8, 8])
    target = load_target(model)
    images, _ = synthetic_images(target, 2)
    ad = attention_distance_report(target, images, tmp_path)
    assert ad["image_size"] == [30, 30] and ad["grid"] == [8, 8] and ad["pixels_per_patch"] == 4
    assert ad["uniform_reference"] == pytest.approx(grid_mean_pairwise_distance((8, 8), 4))


def test_load_images_warns_about_and_counts_unreadable_images(tmp_path, write_noise_images):
    """Two corrupt files beside one good image gave one image with no word said; all corrupt gave "no readable
    images in DIR" without saying why."""
    from kizuna.analysis.report import attention_distance_report, load_images
    from kizuna.data.sources import SkipCounter

    target = load_target(kizuna.create_vit("mu/4", image_size=32, num_classes=10))
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    write_noise_images(mixed, 1, 32)
    (mixed / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    (mixed / "garbage.png").write_bytes(b"garbage")
    skips = SkipCounter()
    with pytest.warns(UserWarning, match=r"skipped 2 images \(corrupt_image=2\): broken .*garbage"):
        images, names = load_images([str(mixed)], target.preprocess, skips=skips)
    assert len(images) == 1 and skips.total == 2
    ad = attention_distance_report(target, images, tmp_path / "out", skipped_images=skips.total)
    assert ad["num_images"] == 1 and ad["skipped_images"] == 2
    (mixed / "im0.png").unlink()
    with pytest.raises(ValueError, match=r"no readable images in .*skipped 2 images \(corrupt_image=2\)"):
        load_images([str(mixed)], target.preprocess)


def _distances_all_layers_at_once(target, images, chunk=16):
    """The method before streaming: every layer's maps of a chunk from forward_intermediates."""
    from kizuna.analysis.attention import attention_distance_by_layer

    total, px = 0, target.pixels_per_patch
    with torch.no_grad():
        for i in range(0, len(images), chunk):
            inter = target.vit.forward_intermediates(images[i : i + chunk], return_attention=True)
            attns = [a.float() for a in inter["attentions"]]
            total = total + torch.stack(attention_distance_by_layer(attns, inter["grid"], px)).double() * len(attns[0])
    return (total / len(images)).float()


def test_attention_distance_keeps_one_layer_of_a_bounded_chunk(monkeypatch):
    """Every layer's attention maps of a 16-image chunk were held at once (~8 GB for ViT-L/14 at 336 px).
    Each layer is reduced as it is made and the chunk is sized to a memory budget; the numbers are unchanged."""
    from kizuna.analysis import report as R

    torch.manual_seed(0)
    target = load_target(kizuna.create_vit("mu/4", image_size=32, num_classes=10))
    images, _ = R.synthetic_images(target, 20)  # two chunks of 16 and 4
    per_head, grid, px = R.attention_distance_per_head(target, images)
    assert grid == (8, 8) and px == 4
    torch.testing.assert_close(per_head, _distances_all_layers_at_once(target, images), rtol=1e-6, atol=1e-6)
    # ViT-L/14 at 336 px: 577 tokens, 16 heads -> one layer of a chunk fits the budget
    chunk = R._distance_chunk(577, 16)
    assert 1 <= chunk < 16 and chunk * 16 * 577 * 577 * 4 <= R.ATTENTION_BUDGET_BYTES
    assert R._distance_chunk(10**4, 16) == 1  # never below one image
    # a small budget: the forward passes take that many images, with the same result
    tokens = 1 + 8 * 8
    monkeypatch.setattr(R, "ATTENTION_BUDGET_BYTES", 3 * 4 * target.vit.cfg.heads * tokens * tokens)
    seen = []
    hooks = [b.attn.register_forward_hook(lambda m, i, o: seen.append(o[1].shape[0]))
             for b in target.vit.transformer.blocks]
    try:
        small, _, _ = R.attention_distance_per_head(target, images)
    finally:
        for h in hooks:
            h.remove()
    assert max(seen) == 3 and sum(seen) == 20 * target.vit.cfg.depth
    torch.testing.assert_close(small, per_head, rtol=1e-5, atol=1e-5)


def test_all_without_images_takes_at_most_max_images(tmp_path):
    """`analyze all MODEL --max-images 2` without --images wrote num_images 16: the synthetic set was always 16."""
    from kizuna.analysis.report import full_report

    target = load_target(kizuna.create_vit("mu/4", image_size=32, num_classes=10))
    rep = full_report(target, tmp_path, components=4, max_images=2)
    assert rep["attention_distance"]["num_images"] == 2
    assert full_report(target, tmp_path / "d", components=4)["attention_distance"]["num_images"] == 16


def test_predict_refuses_a_template_for_a_supervised_vit(vit_path, images, tmp_path, capsys):
    """--template was accepted and ignored for a supervised ViT (its head has its own classes)."""
    img = str(images / "im0.png")
    assert main(["analyze", "predict", str(vit_path), "--image", img, "--template", "a photo of a {c}.",
                 "--out", str(tmp_path)]) == 2
    assert "two-tower (CLIP) models only" in capsys.readouterr().err
    assert main(["analyze", "predict", str(vit_path), "--image", img, "--out", str(tmp_path)]) == 0


def test_the_cli_passes_max_images_and_the_skip_count_on(tmp_path, capsys):
    """`analyze all --max-images 2` without --images made 16 synthetic images; unreadable --images were not
    counted in attention_distance.json (the CLI did not hand the count on)."""
    import json

    import kizuna
    from kizuna.apps.cli import main
    from kizuna.models.checkpoint import save_model

    save_model(kizuna.create_vit("mu/4", image_size=32, num_classes=10), tmp_path / "vit")
    assert main(["analyze", "all", str(tmp_path / "vit"), "--max-images", "2", "--out", str(tmp_path / "a")]) == 0
    assert json.loads((tmp_path / "a" / "report.json").read_text())["attention_distance"]["num_images"] == 2
    folder = tmp_path / "imgs"
    folder.mkdir()
    from PIL import Image

    Image.new("RGB", (40, 40), (200, 10, 10)).save(folder / "good.png")
    (folder / "bad.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    assert main(["analyze", "attention-distance", str(tmp_path / "vit"), "--images", str(folder),
                 "--out", str(tmp_path / "d")]) == 0
    assert json.loads((tmp_path / "d" / "attention_distance.json").read_text())["skipped_images"] == 1


def test_all_says_when_it_ignores_the_prediction_settings(clip_path, images, tmp_path, capsys):
    """A CLIP model without --labels draws no prediction panel: --template and --true-label went unused
    without a word."""
    assert main(["analyze", "all", str(clip_path), "--images", str(images), "--template", "art of a {c}.",
                 "--true-label", "dog", "--max-images", "2", "--out", str(tmp_path / "c")]) == 0
    err = capsys.readouterr().err
    assert "kizuna analyze all: warning: --template, --true-label ignored" in err and "needs --labels" in err


# ------------------------------------------------------------------ flags checked before any figure is computed
@pytest.fixture(scope="module")
def clip_without_tokenizer(tmp_path_factory) -> Path:
    """A CLIP model whose tokenizer is not there (as an HF SigLIP folder without its spiece.model loads)."""
    torch.manual_seed(0)
    model = kizuna.create_model("ViT-mu-8")
    model.cfg.tokenizer = {"type": "unavailable", "note": "the folder has no spiece.model"}
    return kizuna.save_model(model, tmp_path_factory.mktemp("notok") / "clip")


@pytest.mark.parametrize("model, extra, message", [
    ("vit", ["--true-label", "kitten"], "--true-label 'kitten' is not among the labels (0, 1, 2)"),
    ("vit", ["--labels", "a,b"], "--labels gave 2 names but the classifier has 3 classes"),
    ("vit", ["--template", "a photo of a {c}."], "--template applies to two-tower (CLIP) models only"),
    ("clip_without_tokenizer", ["--labels", "cat,dog"], "--labels need the model's tokenizer"),
])
def test_all_refuses_prediction_flags_before_any_figure(vit_path, clip_without_tokenizer, images, tmp_path, capsys,
                                                        model, extra, message):
    """`analyze all` computed filters, positions, attention distances and the rollout (minutes on many images)
    before predict_report refused these flags, and then exited 2 without report.json: nothing is written now."""
    path = vit_path if model == "vit" else clip_without_tokenizer
    out = tmp_path / "out"
    assert main(["analyze", "all", str(path), "--images", str(images), "--out", str(out), *extra]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()  # not one figure was drawn


def test_full_report_checks_its_settings_first(vit_path, tmp_path):
    """The same for the Python API: full_report checks the prediction settings and discard_ratio up front."""
    from kizuna.analysis.report import full_report

    target = load_target(str(vit_path))
    with pytest.raises(ValueError, match="--true-label 'kitten' is not among the labels"):
        full_report(target, tmp_path / "a", true_label="kitten", max_images=1)
    with pytest.raises(ValueError, match=r"discard_ratio must be in \[0, 1\)"):
        full_report(target, tmp_path / "b", discard_ratio=1.0, max_images=1)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


@pytest.mark.parametrize("action", ["all", "rollout"])
def test_discard_ratio_is_checked_when_parsed(vit_path, images, tmp_path, capsys, action):
    """--discard-ratio 1.0 failed in attention_rollout as "discard_ratio must be in [0, 1)" (not the flag's
    name), after `analyze all` had computed every other figure; it is refused as the arguments are parsed."""
    img = ["--image", str(images / "im0.png")]
    for bad in ("1.0", "-0.1", "nan", "half"):
        with pytest.raises(SystemExit):
            main(["analyze", action, str(vit_path), *img, "--discard-ratio", bad, "--out", str(tmp_path / bad)])
        err = capsys.readouterr().err
        assert "argument --discard-ratio: must be a number in [0, 1)" in err and repr(bad) in err
        assert not (tmp_path / bad).exists()
    out = tmp_path / "ok"
    assert main(["analyze", action, str(vit_path), *img, "--discard-ratio", "0.9", "--out", str(out)]) == 0
    assert _json(out / "rollout.json")["discard_ratio"] == 0.9


def test_a_dataset_root_of_split_folders_is_named_as_such(tmp_path, write_noise_images, capsys):
    """`--images DATA/cifar10` (shards in DATA/cifar10/train/ and test/) failed with just "no readable images
    in DATA/cifar10": it says now to name a split folder, which reads."""
    import tarfile

    from kizuna.analysis.report import load_images

    pngs = write_noise_images(_mkdir_p(tmp_path / "pngs"), 2, 32)
    root = tmp_path / "cifar"
    for split in ("train", "test"):
        with tarfile.open(_mkdir_p(root / split) / "000000.tar", "w") as tar:
            for i in range(2):
                tar.add(pngs / f"im{i}.png", arcname=f"{i:06d}.png")
    target = load_target(kizuna.create_vit("mu/4", image_size=32, num_classes=10))
    with pytest.raises(ValueError, match=rf"holds split folders of shards \(test, train\): name one, e\.g\. "
                                         rf"--images {re.escape(str(root / 'test'))}$"):
        load_images([str(root)], target.preprocess)
    assert len(load_images([str(root / "test")], target.preprocess)[0]) == 2
    empty = _mkdir_p(tmp_path / "empty")  # a folder of nothing says nothing more
    with pytest.raises(ValueError, match=r"no readable images in \S*empty$"):
        load_images([str(empty)], target.preprocess)


def _mkdir_p(folder: Path) -> Path:
    folder.mkdir(parents=True)
    return folder
