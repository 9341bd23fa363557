"""Numbers and files the analysis reports (compare-runs, over-training, `analyze all`), the demo report and the
metrics log write, checked against values worked out by hand or read back with numpy (a mutation hunt found each
of these unchecked: a changed line left the existing tests passing)."""
from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

import kizuna
from kizuna.analysis.over_training import find_checkpoints, over_training_report
from kizuna.analysis.report import attention_distance_report, load_target, positions_report, rollout_report
from kizuna.analysis.runs import compare_runs, format_table, load_run
from kizuna.train.checkpointing import CheckpointManager
from kizuna.train.logging import MetricLogger, read_metrics, set_aside_previous_log, set_aside_with_checkpoints


def _log(folder: Path, lines: list[str]) -> Path:
    """A run folder whose metrics.jsonl holds ``lines`` (JSON text, as a diverged run's log has null for NaN)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.jsonl").write_text("".join(line + "\n" for line in lines))
    return folder


def _tiny_vit(seed: int = 0, **overrides):
    torch.manual_seed(seed)
    args = dict(image_size=16, num_classes=3, width=16, depth=2, heads=2, mlp_dim=32)
    return kizuna.create_vit("mu/4", **{**args, **overrides})


@pytest.fixture(scope="module")
def images(tmp_path_factory, write_noise_images):
    return write_noise_images(tmp_path_factory.mktemp("imgs"), 6, 16)


# ----------------------------------------------------------------------------- compare-runs: load_run
def test_best_skips_a_leading_nan_and_the_train_window_skips_nan(tmp_path):
    """Kills: the best taken over all values (a NaN first made max() return NaN), and the training-accuracy
    window averaging a NaN in (final_train_top1 NaN)."""
    run = _log(tmp_path / "r", [
        '{"kind": "train", "step": 10, "train_top1": 0.5}',
        '{"kind": "eval", "step": 10, "val_top1": null, "val_loss": null}',
        '{"kind": "train", "step": 20, "train_top1": null}',
        '{"kind": "eval", "step": 20, "val_top1": 0.3, "val_loss": 2.0}',
        '{"kind": "train", "step": 30, "train_top1": 0.7}',
        '{"kind": "eval", "step": 30, "val_top1": 0.2, "val_loss": 3.0}',
    ])
    r = load_run(run)
    assert (r["best"], r["best_step"]) == (0.3, 20)
    assert r["final_train_top1"] == pytest.approx((0.5 + 0.7) / 2)
    assert r["generalisation_gap"] == pytest.approx(0.6 - 0.2)
    lo = load_run(run, "val_loss")
    assert (lo["best"], lo["best_step"]) == (2.0, 20) and lo["lower_is_better"] is True


def test_a_nan_final_value_has_no_gap(tmp_path):
    """Kills: the gap computed from a NaN final value (NaN, which the table printed as "+nan", instead of None)."""
    run = _log(tmp_path / "r", ['{"kind": "train", "step": 10, "train_top1": 0.5}',
                                '{"kind": "eval", "step": 10, "val_top1": 0.4}',
                                '{"kind": "eval", "step": 20, "val_top1": null}'])
    r = load_run(run)
    assert math.isnan(r["final"]) and r["best"] == 0.4
    assert r["generalisation_gap"] is None


def test_an_acc_metric_is_an_accuracy(tmp_path):
    """Kills: "acc" dropped from the names that end an accuracy (val_acc had no gap)."""
    run = _log(tmp_path / "r", ['{"kind": "train", "step": 10, "train_top1": 0.9}',
                                '{"kind": "eval", "step": 10, "val_acc": 0.6}'])
    assert load_run(run, "val_acc")["generalisation_gap"] == pytest.approx(0.3)


def test_a_fine_tunes_model_is_the_checkpoint_it_started_from(tmp_path):
    """Kills: the "init" setting ignored, so two fine-tunes of different checkpoints read as the same model (the
    unused default preset) and compare-runs grouped them together."""
    runs = []
    for name, init in (("a", "runs/ti8/model"), ("b", "runs/s4/model")):
        run = _log(tmp_path / name, ['{"kind": "eval", "step": 10, "val_top1": 0.5}'])
        (run / "train_config.json").write_text(json.dumps({"model": "S/16", "init": init, "seed": 0}))
        runs.append(run)
    assert load_run(runs[0])["config"]["model"] == "runs/ti8/model"
    numbers = compare_runs(runs, tmp_path / "fig", group_by=["model"])
    assert "model" in numbers["differing_settings"]
    assert sorted(g["runs"] for g in numbers["groups"]) == [["a"], ["b"]]


def test_a_lower_is_better_table_says_lowest():
    """Kills: the header's "lowest"/"best" swapped (a loss's column read "best (step)")."""
    runs = [{"label": "a", "final": 1.5, "best": 1.2, "best_step": 10, "final_train_top1": None,
             "generalisation_gap": None, "lower_is_better": True}]
    assert "lowest (step)" in format_table({"metric": "val_loss", "runs": runs, "groups": []}).splitlines()[0]
    runs[0]["lower_is_better"] = False
    assert "best (step)" in format_table({"metric": "val_top1", "runs": runs, "groups": []}).splitlines()[0]


# ----------------------------------------------------------------------------- over-training
def test_find_checkpoints_takes_only_step_folders(tmp_path):
    """Kills: the step pattern unanchored at its end (a step_0000010.old copy was analysed as a second step 10)."""
    ckpts = tmp_path / "checkpoints"
    for name in ("step_0000010", "step_0000010.old", "step_0000020-copy", "step_0000030"):
        (ckpts / name).mkdir(parents=True)
    assert [(s, p.name) for s, p in find_checkpoints(tmp_path)] == [(10, "step_0000010"), (30, "step_0000030")]


@pytest.fixture(scope="module")
def two_step_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    manager = CheckpointManager(out, keep_last=5)
    for step in (1, 2):
        manager.save(step, _tiny_vit(step), {"step": step}, metrics={"val_top1": 0.1 * step})
    return out


def test_over_training_takes_max_images_and_the_per_layer_max(two_step_run, images, tmp_path):
    """Kills: --max-images not passed on (all 6 images read, the default 32), and per_layer_max written as the
    minimum over heads. The reference: the one-checkpoint report's per-head numbers, reduced with numpy."""
    rep = over_training_report(two_step_run, [str(images)], tmp_path / "ot", max_images=2, progress=False)
    assert rep["num_images"] == 2
    for row in rep["checkpoints"]:
        target = load_target(row["checkpoint"])
        x = torch.stack([target.preprocess(Image.open(images / f"im{i}.png").convert("RGB")) for i in range(2)])
        per_head = np.array(attention_distance_report(target, x, tmp_path / "single", progress=False)["per_head"])
        np.testing.assert_allclose(row["per_layer_max"], per_head.max(axis=1), rtol=1e-5)
        np.testing.assert_allclose(row["per_layer_min"], per_head.min(axis=1), rtol=1e-5)
        assert np.all(np.array(row["per_layer_max"]) > np.array(row["per_layer_min"]))


def test_checkpoints_with_another_patch_grid_are_refused(images, tmp_path):
    """Kills: the grid check dropped (checkpoints of two runs, 4x4 and 2x2 patches, were drawn on one axis)."""
    manager = CheckpointManager(tmp_path / "mixed", keep_last=5)
    manager.save(1, _tiny_vit(1), {"step": 1}, metrics={"val_top1": 0.1})
    manager.save(2, _tiny_vit(2, patch_size=8), {"step": 2}, metrics={"val_top1": 0.2})
    with pytest.raises(ValueError, match=r"step_0000002: patch grid \(2, 2\) x 8 px differs from the run's first "
                                         r"checkpoint \(\(4, 4\) x 4 px\)"):
        over_training_report(tmp_path / "mixed", [str(images)], tmp_path / "ot", max_images=2, progress=False)
    assert not (tmp_path / "ot" / "over_training.json").exists()


# ----------------------------------------------------------------------------- analyze all: single reports
def test_attention_distance_per_layer_max_is_the_max_over_heads(tmp_path):
    """Kills: per_layer_max written as the minimum over heads (checked against the per-head table, with numpy)."""
    target = load_target(_tiny_vit(), preprocess={"mean": [0.5] * 3, "std": [0.5] * 3, "image_size": 16})
    x = torch.rand(3, 3, 16, 16)
    rep = attention_distance_report(target, x, tmp_path, progress=False)
    per_head = np.array(rep["per_head"])
    np.testing.assert_allclose(rep["per_layer_max"], per_head.max(axis=1), rtol=1e-6)
    np.testing.assert_allclose(rep["per_layer_min"], per_head.min(axis=1), rtol=1e-6)
    np.testing.assert_allclose(rep["per_layer_mean"], per_head.mean(axis=1), rtol=1e-6)
    assert json.loads((tmp_path / "attention_distance.json").read_text())["per_layer_max"] == rep["per_layer_max"]


def test_similarity_by_distance_covers_every_distance(tmp_path):
    """Kills: the largest Manhattan distance (the grid's opposite corners) left out. The reference: the cosine
    similarities of the position embeddings, computed with numpy."""
    model = _tiny_vit(image_size=(12, 16))  # a 3x4 grid: distances 1 to 5
    target = load_target(model, preprocess={"mean": [0.5] * 3, "std": [0.5] * 3, "image_size": [12, 16]})
    rep = positions_report(target, tmp_path)
    pe = model.pos_embed.detach().reshape(-1, model.pos_embed.shape[-1])[1:].double().numpy()  # after the class token
    pe = pe / np.linalg.norm(pe, axis=1, keepdims=True)
    sim = pe @ pe.T
    r, c = np.divmod(np.arange(12), 4)
    dist = np.abs(r[:, None] - r[None]) + np.abs(c[:, None] - c[None])
    expected = [sim[dist == d].mean() for d in range(1, 6)]
    np.testing.assert_allclose(rep["similarity_by_manhattan_distance"], expected, rtol=1e-5, atol=1e-6)


def test_rollout_peak_is_row_then_column(tmp_path):
    """Kills: the peak patch given as (column, row). The reference: numpy's argmax of the written map on a 2x4 grid."""
    model = _tiny_vit(3, image_size=(8, 16))
    target = load_target(model, preprocess={"mean": [0.5] * 3, "std": [0.5] * 3, "image_size": [8, 16]})
    rep = rollout_report(target, torch.rand(3, 8, 16, generator=torch.Generator().manual_seed(3)), tmp_path)
    rmap = np.array(rep["rollout_map"])
    peak = [int(p) for p in np.unravel_index(np.argmax(rmap), rmap.shape)]
    assert rmap.shape == (2, 4) and peak[0] != peak[1]  # off the diagonal: (row, column) and (column, row) differ
    assert rep["peak_patch"] == peak


def test_a_gap_pooled_vits_rollout_is_over_the_patch_tokens(tmp_path):
    """Kills: a class token that is carried but not pooled (pool="gap") taken as the output. The reference: the
    rollout worked out with numpy from the model's attention maps, averaged over the patch tokens' rows."""
    model = _tiny_vit(pool="gap", class_token=True)
    target = load_target(model, preprocess={"mean": [0.5] * 3, "std": [0.5] * 3, "image_size": 16})
    x = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0))
    rep = rollout_report(target, x, tmp_path)
    assert rep["class_token"] is False
    with torch.no_grad():
        attns = model.forward_intermediates(x[None], return_attention=True)["attentions"]
    roll = np.eye(17)
    for a in attns:  # 0.5 A + 0.5 I, rows renormalised, product over the layers (input side first)
        a = 0.5 * a[0].double().mean(0).numpy() + 0.5 * np.eye(17)
        roll = (a / a.sum(-1, keepdims=True)) @ roll
    np.testing.assert_allclose(rep["rollout_map"], roll[1:, 1:].mean(0).reshape(4, 4), rtol=1e-4, atol=1e-6)


def test_all_predicts_the_first_image_with_top_k_entries(tmp_path):
    """Kills: `analyze all` without --image taking another image than the first of --images for rollout and
    prediction, and the top list one entry short of --top-k. The reference: the model's softmax on the first
    image, sorted with numpy."""
    from kizuna.analysis.report import full_report

    model = _tiny_vit(num_classes=4)
    target = load_target(model, preprocess={"mean": [0.5] * 3, "std": [0.5] * 3, "image_size": 16})
    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    rep = full_report(target, tmp_path, images=(x, ["first", "second", "third"]), components=2, top_k=3,
                      progress=False)
    with torch.no_grad():
        probs = model(x[:1]).softmax(-1)[0].double().numpy()
    order = np.argsort(-probs, kind="stable")[:3]
    assert rep["rollout"]["image"] == rep["predict"]["image"] == "first"
    np.testing.assert_allclose(rep["predict"]["probs"], probs, rtol=1e-5)
    assert [label for label, _ in rep["predict"]["top"]] == [str(i) for i in order]
    np.testing.assert_allclose([p for _, p in rep["predict"]["top"]], probs[order], rtol=1e-5)


# ----------------------------------------------------------------------------- the demo report
def test_describe_length_names_the_configured_steps_only_when_they_differ():
    """Kills: "(400 were configured)" added to a run that took all 400 steps."""
    from kizuna.train.report import describe_length

    cfg = SimpleNamespace(steps=400, time_limit_minutes=8.0)
    assert describe_length(cfg, 400, False) == "400 steps"
    assert describe_length(cfg, 1, False) == "1 step (400 were configured)"
    assert describe_length(cfg, 127, True) == "127 steps (stopped by the 8-min time limit; 400 were configured)"


# ----------------------------------------------------------------------------- the metrics log
def test_a_zero_reads_back_as_zero_not_nan(tmp_path):
    """Kills: every falsy value (0, 0.0, false) read back as NaN (only null, a NaN written, is one)."""
    logger = MetricLogger(tmp_path, tensorboard=False)
    logger.log(0, {"loss": 0.0, "top1": 0, "nan": float("nan")}, kind="eval")
    logger.close()
    (row,) = read_metrics(tmp_path / "metrics.jsonl", "eval")
    assert row["step"] == 0 and row["loss"] == 0.0 and row["top1"] == 0 and math.isnan(row["nan"])


def test_drop_after_leaves_no_torn_line(tmp_path):
    """Kills: a torn (not JSON) line kept by drop_after (every later read warned about it)."""
    (tmp_path / "metrics.jsonl").write_text('{"kind": "train", "step": 10}\n{"kind": "tra\n'
                                            '{"kind": "train", "step": 20}\n{"kind": "train", "step": 30}\n')
    MetricLogger(tmp_path, tensorboard=False).drop_after(20)
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [10, 20]


def test_setting_a_run_aside_takes_the_older_prev_log_with_it(tmp_path):
    """Kills: the older .prev log kept when this run has none, so checkpoints.prev sat beside another run's log."""
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "metrics.jsonl.prev").write_text('{"kind": "train", "step": 99}\n')  # the run set aside before
    (tmp_path / "tensorboard.prev").mkdir()

    def move():
        (tmp_path / "checkpoints").rename(tmp_path / "checkpoints.prev")
        return tmp_path / "checkpoints.prev"

    assert set_aside_with_checkpoints(tmp_path, move) == tmp_path / "checkpoints.prev"
    assert not (tmp_path / "metrics.jsonl.prev").exists() and not (tmp_path / "tensorboard.prev").exists()


def test_a_log_without_checkpoints_does_not_replace_checkpoints_prevs_log(tmp_path):
    """Kills: a fresh run's set-aside putting a checkpoint-less log at .prev while checkpoints.prev is there."""
    (tmp_path / "checkpoints.prev").mkdir()
    (tmp_path / "metrics.jsonl.prev").write_text('{"kind": "train", "step": 99}\n')
    (tmp_path / "metrics.jsonl").write_text('{"kind": "train", "step": 3}\n')
    moved = set_aside_previous_log(tmp_path)
    assert moved is not None and moved.name == "metrics.jsonl.no-checkpoint"
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl.prev")] == [99]
    assert [r["step"] for r in read_metrics(moved)] == [3]
