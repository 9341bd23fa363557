"""`kizuna analyze over-training`: every checkpoint of a run, against the step."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import kizuna
from kizuna.analysis.attention import grid_mean_pairwise_distance
from kizuna.analysis.over_training import _slope, find_checkpoints, over_training_report
from kizuna.analysis.report import attention_distance_report, load_images, load_target, positions_report
from kizuna.apps.cli import main

from kizuna.train.checkpointing import CheckpointManager


@pytest.fixture(scope="module")
def images(tmp_path_factory, write_noise_images):
    return write_noise_images(tmp_path_factory.mktemp("imgs"), 6, 16)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run with three checkpoints: step 20 has all-zero queries and keys (uniform attention, known
    distance), steps 100 and 1000 random weights; 100 and 1000 were saved with a validation accuracy."""
    out = tmp_path_factory.mktemp("run")
    torch.manual_seed(0)
    model = kizuna.create_vit("mu/4", image_size=16, num_classes=3, width=32, depth=3, heads=2, mlp_dim=64)
    manager = CheckpointManager(out, keep_last=10, metric="val_top1")
    with torch.no_grad():
        saved = {n: p.clone() for n, p in model.named_parameters()}
        for block in model.transformer.blocks:
            block.attn.qkv.weight[:64].zero_()  # q and k rows: scores are all 0
            block.attn.qkv.bias[:64].zero_()
    manager.save(20, model, {"step": 20})
    with torch.no_grad():
        for n, p in model.named_parameters():
            p.copy_(saved[n])
    manager.save(1000, model, {"step": 1000}, metrics={"val_top1": 0.5})
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    manager.save(100, model, {"step": 100}, metrics={"val_top1": 0.25})
    # saved out of order to check the numeric sort; the run's newest is 1000 (steps after `latest` are left out)
    (out / "checkpoints" / "latest").write_text("step_0001000")
    return out


def test_find_checkpoints_in_step_order(run, tmp_path):
    steps = [s for s, _ in find_checkpoints(run)]
    assert steps == [20, 100, 1000]
    assert [s for s, _ in find_checkpoints(run / "checkpoints")] == steps
    with pytest.raises(FileNotFoundError, match="--keep-last"):
        find_checkpoints(tmp_path)


def test_report_matches_single_checkpoint_analyses(run, images, tmp_path):
    rep = over_training_report(run, [str(images)], tmp_path / "ot", max_images=6)
    assert (tmp_path / "ot" / "over_training.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((tmp_path / "ot" / "over_training.json").read_text()) == rep
    rows = rep["checkpoints"]
    assert [r["step"] for r in rows] == [20, 100, 1000]
    assert [r["val_top1"] for r in rows] == [None, 0.25, 0.5]
    uniform = grid_mean_pairwise_distance((4, 4), 4)
    assert rep["uniform_reference"] == pytest.approx(uniform) and rep["grid"] == [4, 4]
    # step 20: zero queries and keys attend uniformly, in every layer
    np.testing.assert_allclose(rows[0]["per_layer_mean"], [uniform] * 3, rtol=1e-5)
    assert rows[0]["depth_slope"] == pytest.approx(0.0, abs=1e-4)
    # the other steps: what the one-model reports give for that checkpoint
    for row in rows[1:]:
        target = load_target(row["checkpoint"])
        x, _ = load_images([str(images)], target.preprocess, 6)
        single = attention_distance_report(target, x, tmp_path / f"s{row['step']}")
        np.testing.assert_allclose(row["per_layer_mean"], single["per_layer_mean"], rtol=1e-5)
        np.testing.assert_allclose(row["per_layer_min"], single["per_layer_min"], rtol=1e-5)
        assert row["depth_slope"] == pytest.approx(_slope(torch.tensor(single["per_layer_mean"])))
        assert row["row_column_ratio"] == pytest.approx(positions_report(target, tmp_path / "p")["row_column_ratio"])
    assert rows[1]["per_layer_mean"] != rows[2]["per_layer_mean"]


def test_depth_slope():
    assert _slope(torch.tensor([2.0, 4.0, 6.0, 8.0])) == pytest.approx(2.0)
    assert _slope(torch.tensor([5.0, 5.0, 5.0])) == pytest.approx(0.0)
    assert _slope(torch.tensor([9.0, 6.0])) == pytest.approx(-3.0)


def test_cli(run, images, tmp_path, capsys):
    assert main(["analyze", "over-training", str(run), "--images", str(images), "--max-images", "3",
                 "--out", str(tmp_path / "cli")]) == 0
    printed = capsys.readouterr().out
    assert "step 20:" in printed and "step 1000:" in printed and "val_top1 0.5" in printed
    assert printed.count("val_top1 n/a") == 1  # step 20 was saved without it ("None" before)
    assert (tmp_path / "cli" / "over_training.json").exists()


@pytest.mark.filterwarnings("ignore:image_size 30x30 is not a multiple")  # the point of the test
def test_hybrid_whose_token_grid_is_not_its_position_grid(images, tmp_path):
    """A stride-4 ResNet stem at 30 px gives 8x8 tokens but a 7x7 position table (resampled in the forward
    pass): the row/column score was given the token grid and crashed ("sim must be [64, 8, 8] ...")."""
    manager = CheckpointManager(tmp_path / "run", keep_last=5)
    for step in (1, 2):
        torch.manual_seed(step)
        model = kizuna.create_vit("hybrid-mu/1", image_size=30, num_classes=10, stem_channels=[8, 8])
        assert model.cfg.grid == (7, 7)
        manager.save(step, model, {"step": step}, metrics={"val_top1": 0.1 * step})
    rep = over_training_report(tmp_path / "run", [str(images)], tmp_path / "ot", max_images=2)
    assert rep["grid"] == [8, 8]
    for row in rep["checkpoints"]:
        target = load_target(row["checkpoint"])
        assert row["row_column_ratio"] == pytest.approx(positions_report(target, tmp_path / "p")["row_column_ratio"])


def test_metric_flag_and_a_metric_no_checkpoint_has(images, tmp_path, capsys):
    """A CLIP run's checkpoints hold e.g. zeroshot/top1, not val_top1: the report printed "val_top1 None" for
    every step and drew no accuracy. Now --metric picks the metric, and one no checkpoint has is an error
    that names the ones they have."""
    manager = CheckpointManager(tmp_path / "clip", keep_last=5)
    model = kizuna.create_vit("mu/4", image_size=16, num_classes=3, width=32, depth=1, heads=2, mlp_dim=64)
    manager.save(10, model, {"step": 10})
    manager.save(20, model, {"step": 20}, metrics={"zeroshot/top1": 0.25, "probe/shape": 0.5})
    base = ["analyze", "over-training", str(tmp_path / "clip"), "--images", str(images), "--max-images", "2"]
    assert main([*base, "--out", str(tmp_path / "a")]) != 0
    assert ("no checkpoint was saved with the metric 'val_top1'; they have: probe/shape, zeroshot/top1 "
            "(pass one of these with --metric)") in capsys.readouterr().err
    assert not (tmp_path / "a").exists()  # checked before any checkpoint is analysed
    assert main([*base, "--metric", "zeroshot/top1", "--out", str(tmp_path / "b")]) == 0
    printed = capsys.readouterr().out
    assert "step 10:" in printed and "zeroshot/top1 n/a" in printed and "zeroshot/top1 0.25" in printed
    saved = json.loads((tmp_path / "b" / "over_training.json").read_text())
    assert saved["metric"] == "zeroshot/top1" and [r["zeroshot/top1"] for r in saved["checkpoints"]] == [None, 0.25]
    # checkpoints saved without any metrics: the attention analysis still runs, and says there is no curve
    bare = CheckpointManager(tmp_path / "bare", keep_last=5)
    bare.save(5, model, {"step": 5})
    assert main(["analyze", "over-training", str(tmp_path / "bare"), "--images", str(images), "--max-images", "2",
                 "--out", str(tmp_path / "c")]) == 0
    assert "no checkpoint was saved with any metrics, so there is no val_top1 curve" in capsys.readouterr().out


def test_a_checkpoint_pruned_while_the_report_runs_is_left_out(run, images, tmp_path, monkeypatch):
    """On a run still training, --keep-last deleted listed step folders while the report loaded the others: it died
    part-way, writing nothing, with "no such checkpoint (file or folder), and not a preset name"."""
    import shutil

    from kizuna.analysis import over_training

    copy = tmp_path / "live"
    shutil.copytree(run, copy)
    load = over_training.load_target

    def load_and_prune(spec, device="cpu"):
        target = load(spec, device=device)
        if spec.endswith("step_0000020"):  # the trainer prunes step 100 meanwhile
            shutil.rmtree(copy / "checkpoints" / "step_0000100")
        return target

    monkeypatch.setattr(over_training, "load_target", load_and_prune)
    with pytest.warns(UserWarning, match="step_0000100 was removed while this report ran"):
        rep = over_training_report(copy, [str(images)], tmp_path / "ot", max_images=6, progress=False)
    assert [r["step"] for r in rep["checkpoints"]] == [20, 1000]


def test_every_checkpoint_pruned_while_the_report_runs_is_a_clear_error(run, images, tmp_path, monkeypatch):
    """With all of them pruned, each was left out with a warning and the report then failed on a None grid
    ("'NoneType' object is not iterable")."""
    import shutil

    from kizuna.analysis import over_training

    copy = tmp_path / "live"
    shutil.copytree(run, copy)
    load = over_training.load_target

    def pruned(spec, device="cpu"):
        shutil.rmtree(spec)
        return load(spec, device=device)

    monkeypatch.setattr(over_training, "load_target", pruned)
    with pytest.warns(UserWarning, match="was removed"), pytest.raises(ValueError, match=r"every checkpoint listed "
                                                                                     r"\(3\) was removed"):
        over_training_report(copy, [str(images)], tmp_path / "ot", max_images=6, progress=False)
