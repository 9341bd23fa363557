"""Supervised ViT training and fine-tuning on a tiny generated classification set."""
from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import kizuna
from kizuna.apps.cli import main
from kizuna.train.logging import read_metrics
from kizuna.train.optim import cosine_lr
from kizuna.train.supervised import (
    SupervisedTrainer,
    adapt_pos_embed,
    load_classification,
    load_for_finetune,
    make_supervised_config,
    mix_batch,
    stratified_subset,
    vit_preprocess,
)
from kizuna.models.vit import resample_pos_embed

CLASSES = ["red", "green", "blue", "grey"]
COLOURS = [(200, 40, 40), (40, 190, 40), (40, 40, 200), (128, 128, 128)]
TINY = {"width": 32, "mlp_dim": 64, "depth": 2, "heads": 2}


def _jpeg(label: int, i: int, size: int = 16) -> bytes:
    rng = np.random.default_rng(i)
    arr = np.clip(np.array(COLOURS[label])[None, None] + rng.normal(0, 20, (size, size, 3)), 0, 255)
    buf = io.BytesIO()
    Image.fromarray(arr.astype(np.uint8)).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def _shard(path: Path, start: int, n: int, size: int = 16) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tf:
        for i in range(start, start + n):
            label = i % len(CLASSES)
            for name, data in ((f"{i:09d}.cls", str(label).encode()), (f"{i:09d}.jpg", _jpeg(label, i, size))):
                info = tarfile.TarInfo(name)
                info.size, info.mtime = len(data), 0
                tf.addfile(info, io.BytesIO(data))


def _with_a_corrupt_image(root: Path, split: str, start: int, n: int) -> Path:
    """A dataset root whose ``split`` holds ``n`` good samples and, in a second shard, one that is not a JPEG."""
    _shard(root / split / "000000.tar", start, n)
    with tarfile.open(root / split / "000001.tar", "w", format=tarfile.USTAR_FORMAT) as tf:
        for name, blob in (("zzz.cls", b"0"), ("zzz.jpg", b"not a jpeg")):
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tf.addfile(info, io.BytesIO(blob))
    (root / "classnames.txt").write_text("\n".join(CLASSES) + "\n")
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("colours")
    _shard(root / "train" / "000000.tar", 0, 48)
    _shard(root / "test" / "000000.tar", 1000, 16)
    (root / "classnames.txt").write_text("\n".join(CLASSES) + "\n")
    return root


def _cfg(root: Path | None, out: Path, **kw):
    base = dict(model="mu/4", model_overrides=dict(TINY), image_size=16, data=str(root / "train") if root else "",
                val_data=str(root / "test") if root else "", batch_size=16, steps=6, workers=0, warmup_steps=2, lr=3e-3,
                weight_decay=0.0, out=str(out), progress=False, log_every=1, threads=1, crop_padding=2)
    base.update(kw)
    return make_supervised_config(**base)


def test_cli_train_reduces_loss(data, tmp_path):
    out = tmp_path / "run"
    rc = main(["vit", "train", "--data", str(data / "train"), "--val-data", str(data / "test"),
               "--model", "mu/4", "--model-overrides", json.dumps(TINY), "--image-size", "16",
               "--batch-size", "16", "--steps", "24", "--lr", "3e-3", "--warmup-steps", "2", "--workers", "0",
               "--threads", "1", "--log-every", "1", "--progress", "false", "--out", str(out)])
    assert rc == 0
    rows = read_metrics(out / "metrics.jsonl", "train")
    assert len(rows) == 24
    first, last = np.mean([r["loss"] for r in rows[:3]]), np.mean([r["loss"] for r in rows[-3:]])
    assert first == pytest.approx(np.log(4), abs=0.05)  # zero-initialised head: uniform predictions
    assert last < first - 0.3
    ev = read_metrics(out / "metrics.jsonl", "eval")[-1]
    assert ev["val_samples"] == 16 and ev["val_top1"] > 0.5
    settings = json.loads((out / "train_config.json").read_text())  # the run folder says what it ran
    assert settings["steps"] == 24 and settings["model_overrides"] == TINY and settings["out"] == str(out)
    model = kizuna.load_model(out / "model")
    assert model.cfg.num_classes == 4 and model.cfg.width == 32
    extra = json.loads((out / "model" / "config.json").read_text())["kizuna"]["extra"]
    assert extra["classnames"] == CLASSES and extra["preprocess"]["mean"] == [0.5, 0.5, 0.5]
    assert (out / "checkpoints" / "best").is_dir()


def test_resume_is_bit_exact(data, tmp_path):
    aug = dict(randaug_ops=2, randaug_magnitude=7, mixup=0.4, cutmix=1.0, label_smoothing=0.1, crop="rrc",
               crop_scale=(0.5, 1.0), keep_last=10, save_every=2, val_data="")
    full = SupervisedTrainer(_cfg(data, tmp_path / "a", **aug))
    full.train()
    ckpt = tmp_path / "a" / "checkpoints" / "step_0000002"
    assert (ckpt / "train_state.pt").exists()
    resumed = SupervisedTrainer(_cfg(data, tmp_path / "b", resume=str(ckpt), **aug))
    assert resumed.step == 2  # mid-epoch (3 batches per epoch)
    resumed.train()
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # and training moved the parameters at all
    start = kizuna.load_model(ckpt).state_dict()
    assert not torch.equal(start["head.weight"], a["head.weight"])


def test_resume_refuses_another_model_and_names_an_earlier_checkpoint_when_one_is_damaged(data, tmp_path, capsys):
    """A resumed run continues with the checkpoint's model: a flag asking for another one is refused, not
    ignored. A damaged train_state.pt is named, with the checkpoint to resume from instead."""
    from kizuna.models.checkpoint import CheckpointError

    SupervisedTrainer(_cfg(data, tmp_path / "a", keep_last=10, save_every=2, val_data="")).train()
    latest = tmp_path / "a" / "checkpoints" / "step_0000006"
    other = dict(TINY, width=48)
    with pytest.raises(ValueError, match=r"model_overrides=.*'width': 48.*would be ignored"):
        SupervisedTrainer(_cfg(data, tmp_path / "b", resume=str(latest), model_overrides=other))
    with pytest.raises(ValueError, match=r"image_size=24 \(the run has 16\)"):
        SupervisedTrainer(_cfg(data, tmp_path / "b", resume=str(latest), image_size=24))
    # another subset of as many images: the position check passed, and the run went on through other images
    with pytest.raises(ValueError, match=r"subset_seed=3 \(the run has 0\)"):
        SupervisedTrainer(_cfg(data, tmp_path / "b", resume=str(latest), subset_seed=3))
    resumed = SupervisedTrainer(_cfg(data, tmp_path / "b", resume=str(latest), steps=8))  # the same settings
    assert resumed.step == 6
    # A flag that asks for the default model (S/4) on a mu/4 run: from Python it cannot be told from no
    # flag, but the command line says which fields it names, and so it is refused.
    with pytest.raises(ValueError, match=r"model='S/4' \(the run has 'mu/4'\)"):
        SupervisedTrainer(_cfg(data, tmp_path / "b", resume=str(latest), model="S/4"), named=frozenset({"model"}))
    cli = ["vit", "train", "--out", str(tmp_path / "c"), "--resume"]
    assert main([*cli, str(latest), "--model", "S/4"]) == 2
    assert "model='S/4' (the run has 'mu/4')" in capsys.readouterr().err
    # --resume and --out alone continue the run as it was started (data, model, recipe, schedule), to the
    # same parameters as the run that was not interrupted
    assert main([*cli, str(latest.parent / "step_0000004"), "--model", "mu/4"]) == 0  # its own model: fine
    out = capsys.readouterr().err
    assert "the run's own settings where the command line names none: " in out and "'crop_padding'" not in out
    assert f"data={str(data / 'train')!r}" in out and "steps=6" in out
    done = kizuna.load_model(tmp_path / "c" / "checkpoints" / "step_0000006").state_dict()
    for k, v in kizuna.load_model(latest).state_dict().items():
        assert torch.equal(v, done[k]), k
    (latest / "train_state.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"step_0000006/train_state.pt: cannot be read.*damaged.*"
                                              r"--resume .*step_0000004"):
        SupervisedTrainer(_cfg(data, tmp_path / "b", resume=str(latest)))


def test_resume_after_a_torn_log_line_reads_as_one_run(data, tmp_path):
    """A run killed mid-write leaves half a JSON line in metrics.jsonl; resuming used to fail on it
    (JSONDecodeError). The records after the checkpoint and the torn line are dropped."""
    out = tmp_path / "run"
    SupervisedTrainer(_cfg(data, out, keep_last=10, save_every=2, val_data="")).train()
    with (out / "metrics.jsonl").open("a") as f:
        f.write('{"kind": "train", "step": 7, "lo')  # the kill
    t = SupervisedTrainer(_cfg(data, out, keep_last=10, save_every=2, val_data="",
                               resume=str(out / "checkpoints" / "step_0000004")))
    t.train()
    lines = (out / "metrics.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]  # every line is JSON again
    train_steps = [r["step"] for r in rows if r["kind"] == "train"]
    assert train_steps == list(range(1, 7))  # 1-4 from the first run, 5-6 resumed, nothing twice


def test_finetune_higher_resolution(data, tmp_path):
    src = kizuna.create_vit("mu/4", image_size=16, num_classes=7, **TINY)
    with torch.no_grad():
        src.head.weight.normal_()
    kizuna.save_model(src, tmp_path / "pre")
    ft = load_for_finetune(str(tmp_path / "pre"), num_classes=4, image_size=32)
    assert ft.cfg.image_size == 32 and ft.cfg.grid == (8, 8) and ft.pos_embed.shape == (1, 65, 32)
    assert torch.count_nonzero(ft.head.weight) == 0 and torch.count_nonzero(ft.head.bias) == 0
    assert ft.head.weight.shape == (4, 32)
    assert torch.allclose(ft.pos_embed, resample_pos_embed(src.pos_embed, (8, 8), (4, 4), 1))
    for (k, v), w in zip(ft.transformer.state_dict().items(), src.transformer.state_dict().values()):
        assert torch.equal(v, w), k
    seq = load_for_finetune(str(tmp_path / "pre"), num_classes=4, image_size=32, pos_embed="sequence")
    assert torch.equal(seq.pos_embed[:, :17], src.pos_embed) and torch.count_nonzero(seq.pos_embed[:, 17:]) == 0
    # through the CLI: two steps at 32 px without interpolation
    out = tmp_path / "ft"
    rc = main(["vit", "finetune", str(tmp_path / "pre"), "--data", str(data / "train"), "--image-size", "32",
               "--no-pos-interp", "--steps", "2", "--batch-size", "16", "--workers", "0", "--threads", "1",
               "--progress", "false", "--out", str(out)])
    assert rc == 0
    model = kizuna.load_model(out / "model")
    assert model.cfg.image_size == 32 and model.cfg.num_classes == 4
    latest = out / "checkpoints" / (out / "checkpoints" / "latest").read_text()
    cfg = json.loads((latest / "config.json").read_text())
    assert cfg["kizuna"]["config"]["image_size"] == 32
    # compare-runs names a fine-tune's model by the checkpoint it started from (train_config.json's "model" is the
    # unused default, S/4, and runs were grouped with S/4 runs)
    from kizuna.analysis.runs import _train_config

    assert _train_config(out)["model"] == str(tmp_path / "pre")


def test_adapt_pos_embed_modes():
    pe = torch.arange(1 * 5 * 2, dtype=torch.float32).view(1, 5, 2)  # class + 2x2
    grid = adapt_pos_embed(pe, (2, 2), (3, 3), 1, "grid")
    g = grid[0, 1:].view(3, 3, 2)
    assert torch.equal(grid[0, 0], pe[0, 0]) and torch.equal(g[:2, :2].reshape(4, 2), pe[0, 1:])
    assert torch.count_nonzero(g[2]) == 0 and torch.count_nonzero(g[:, 2]) == 0
    seq = adapt_pos_embed(pe, (2, 2), (1, 1), 1, "sequence")  # shrinking truncates
    assert torch.equal(seq, pe[:, :2])
    with pytest.raises(ValueError):
        adapt_pos_embed(pe, (2, 2), (3, 3), 1, "nearest")


def test_hybrid_trains(data, tmp_path):
    cfg = _cfg(data, tmp_path / "h", model="hybrid-mu/1", steps=3, val_data="",
               model_overrides={**TINY, "depth": 1, "stem_channels": [8, 16]})
    t = SupervisedTrainer(cfg)
    assert t.model.stem is not None and t.model.cfg.grid == (4, 4)
    t.train()
    rows = read_metrics(tmp_path / "h" / "metrics.jsonl", "train")
    assert len(rows) == 3 and all(np.isfinite(r["loss"]) for r in rows)
    assert kizuna.load_model(tmp_path / "h" / "model").cfg.stem == "resnet"


def test_device_augmentation_learns_and_resumes_bit_exact(data, tmp_path):
    aug = dict(augment_on="device", randaug_ops=2, randaug_magnitude=7, mixup=0.4, cutmix=1.0, label_smoothing=0.1,
               keep_last=10, save_every=2, val_data="", steps=6)
    full = SupervisedTrainer(_cfg(data, tmp_path / "a", **aug))
    assert full.loader.decoded.images.shape == (48, 3, 16, 16) and len(full.loader) == 3
    full.train()
    resumed = SupervisedTrainer(_cfg(data, tmp_path / "b", resume=str(tmp_path / "a" / "checkpoints" / "step_0000002"),
                                     **aug))
    assert resumed.step == 2
    resumed.train()
    a, b = full.model.state_dict(), resumed.model.state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # it learns the colours as the PIL path does (24 steps, crop and flip: RandAugment's colour ops would
    # hide the only signal of this data; the loss starts at log 4)
    out = tmp_path / "learn"
    SupervisedTrainer(_cfg(data, out, augment_on="device", steps=24)).train()
    rows = read_metrics(out / "metrics.jsonl", "train")
    assert np.mean([r["loss"] for r in rows[-3:]]) < np.log(4) - 0.3
    assert read_metrics(out / "metrics.jsonl", "eval")[-1]["val_top1"] > 0.5


def test_device_augmentation_counts_corrupt_images_and_refuses_rrc(data, tmp_path, capsys):
    bad = _with_a_corrupt_image(tmp_path / "bad", "train", 0, 32)
    t = SupervisedTrainer(_cfg(bad, tmp_path / "run", augment_on="device", val_data="", steps=2))
    assert len(t.train_index) == 33 and len(t.loader.decoded.labels) == 32
    assert t.cfg.progress is False  # the report is printed without the bars too (it was not, with them hidden)
    assert "decoding the training set: skipped 1 samples: corrupt_image=1" in capsys.readouterr().err
    t.train()
    logged = read_metrics(tmp_path / "run" / "metrics.jsonl", "data")
    assert logged and logged[0]["skipped"] == 1 and logged[0]["skipped/corrupt_image"] == 1
    with pytest.raises(ValueError, match="rrc"):
        SupervisedTrainer(_cfg(data, tmp_path / "rrc", augment_on="device", crop="rrc"))
    with pytest.raises(ValueError, match="augment_on"):
        _cfg(data, tmp_path / "x", augment_on="gpu")


def _all_corrupt(root: Path, n: int) -> Path:
    (root / "train").mkdir(parents=True)
    with tarfile.open(root / "train" / "000000.tar", "w", format=tarfile.USTAR_FORMAT) as tf:
        for i in range(n):
            for name, blob in ((f"{i:05d}.cls", b"0"), (f"{i:05d}.jpg", b"not a jpeg")):
                info = tarfile.TarInfo(name)
                info.size = len(blob)
                tf.addfile(info, io.BytesIO(blob))
    (root / "classnames.txt").write_text("\n".join(CLASSES) + "\n")
    return root


def test_bad_paths_on_the_command_line_are_one_line_errors(data, tmp_path, capsys):
    """An --out below a file, a text file given as the config or a JSON flag that does not parse: exit
    code 2 and one line naming the path (an --out below a file was a NotADirectoryError traceback)."""
    (tmp_path / "file").write_text("x")
    common = ["vit", "train", "--data", str(data / "train"), "--batch-size", "16", "--steps", "1", "--progress", "false"]
    assert main([*common, "--out", str(tmp_path / "file" / "run")]) == 2
    assert "kizuna vit train: error: --out " in capsys.readouterr().err  # (checked at start: it names --out)
    assert main([*common, "--config", str(tmp_path / "file"), "--out", str(tmp_path / "r")]) == 2
    assert "expected a Python file (.py)" in capsys.readouterr().err


def test_a_training_set_with_no_image_that_decodes_is_an_error(tmp_path):
    """Both paths stop with the skip report: the loader's after one epoch of empty batches (it used to go
    round them for ever), the device path at decoding (it used to say "lower --batch-size")."""
    bad = _all_corrupt(tmp_path / "bad", 40)
    with pytest.raises(ValueError, match=r"none of its 40 training images decoded.*corrupt_image=40"):
        SupervisedTrainer(_cfg(bad, tmp_path / "d", augment_on="device", val_data=""))
    t = SupervisedTrainer(_cfg(bad, tmp_path / "l", augment_on="loader", val_data=""))
    with pytest.raises(ValueError, match=r"a whole epoch \(2 batches\) gave no usable sample.*corrupt_image=32"):
        t.train()
    assert t.step == 0


def test_stratified_subset_is_nested_and_balanced():
    labels = np.repeat(np.arange(5), 40)
    ten = stratified_subset(labels, 0.1, seed=0)
    thirty = stratified_subset(labels, 0.3, seed=0)
    assert np.bincount(labels[ten]).tolist() == [4] * 5 and np.bincount(labels[thirty]).tolist() == [12] * 5
    assert set(ten) <= set(thirty)
    assert np.array_equal(ten, stratified_subset(labels, 0.1, seed=0))
    assert not np.array_equal(ten, stratified_subset(labels, 0.1, seed=1))
    assert len(stratified_subset(labels, 1.0)) == 200


def test_subset_fraction_in_trainer(data, tmp_path, capsys):
    t = SupervisedTrainer(_cfg(data, tmp_path / "s", subset_fraction=0.5, val_data="", batch_size=8))
    assert len(t.train_index) == 24 and np.bincount(t.train_index.labels).tolist() == [6] * 4
    # one per class at least: 0.01 of 48 keeps 4, and the line says the share kept (it said "0.01 of 48")
    SupervisedTrainer(_cfg(data, tmp_path / "t", subset_fraction=0.01, val_data="", batch_size=4))
    assert "data: 4 training images (0.0833 of 48: --subset-fraction 0.01" in capsys.readouterr().err


def test_mix_batch():
    x = torch.randn(4, 3, 8, 8)
    t = torch.eye(4)
    a = mix_batch(x, t, np.random.default_rng(1), mixup=0.5, cutmix=1.0)
    b = mix_batch(x, t, np.random.default_rng(1), mixup=0.5, cutmix=1.0)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and a[2] == b[2]
    assert torch.allclose(a[1].sum(-1), torch.ones(4))
    for seed in range(6):
        xi, ti, info = mix_batch(x, t, np.random.default_rng(seed), cutmix=1.0)
        assert info["method"] == "cutmix"
        changed = (xi != x).any(dim=1).float().mean(dim=(1, 2))  # share of pixels from the partner
        assert torch.allclose(changed, torch.full((4,), 1 - info["lam"]), atol=1e-6)
    same = mix_batch(x, t, np.random.default_rng(0))
    assert same[2]["method"] == "none" and same[0] is x


def test_imagefolder_and_dataset_root(data, tmp_path):
    from kizuna.train.supervised import load_classification

    tree = tmp_path / "tree"
    for i in range(12):
        label = i % 3
        d = tree / ["cat", "dog", "hot_dog"][label]
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{i}.jpg").write_bytes(_jpeg(label, i))
    index, names, _ = load_classification(str(tree), "train")
    assert names == ["cat", "dog", "hot dog"] and len(index) == 12
    assert sorted(np.bincount(index.labels).tolist()) == [4, 4, 4]
    t = SupervisedTrainer(_cfg(None, tmp_path / "if", data=str(tree), val_data=str(tree), batch_size=4, steps=1))
    assert t.num_classes == 3 and t.train()["val_samples"] == 12
    # a dataset root picks its split folders; a bare split folder finds classnames.txt one level up
    root_index, root_names, _ = load_classification(str(data), "train")
    split_index, split_names, _ = load_classification(str(data / "train"), "train")
    assert root_names == split_names == CLASSES and len(root_index) == len(split_index) == 48
    assert len(load_classification(str(data), None)[0]) == 16  # default split: test


def test_time_budget_plans_the_length_and_the_schedule_ends_on_it(data, tmp_path, clock):
    """A budgeted run measures its step time after the warm-up, fixes its length once (logged as a "plan"
    record, after a timed evaluation) and its cosine schedule ends exactly at that length. Each step takes
    0.1 s and each evaluation 0.3 s of the budget's clock (on the real one a loaded machine planned otherwise)."""
    from kizuna.train.budget import SKIP_FIRST

    cfg = _cfg(data, tmp_path / "b", steps=0, epochs=1.0, time_budget_minutes=0.08, batch_size=8, warmup_steps=4,
               save_every=5, keep_last=50, log_every=1)
    t = SupervisedTrainer(cfg)
    assert not t.planned
    fit, evaluate = t.fit_batch, t.evaluate

    def fit_in_a_tenth_of_a_second(batch):
        clock.now += 0.1
        return fit(batch)

    def evaluate_in_three_tenths():
        clock.now += 0.3
        return evaluate()

    t.fit_batch, t.evaluate = fit_in_a_tenth_of_a_second, evaluate_in_three_tenths
    t0 = clock.now
    t.train()
    spent = clock.now - t0
    plans = read_metrics(tmp_path / "b" / "metrics.jsonl", "plan")
    assert len(plans) == 1
    plan = plans[0]
    # the first step is a boundary, not timed; a step after a checkpoint (a pause) is timed from the pause's end
    assert plan["step"] == SKIP_FIRST + t.budget.calibrate_steps + 1
    # corrected on the way (at 10/25/40% of the planned steps, on the pace since; kind "replan")
    replans = read_metrics(tmp_path / "b" / "metrics.jsonl", "replan")
    assert [r["step"] for r in replans] == sorted(r["step"] for r in replans) and len(replans) <= 3
    assert all(plan["step"] < r["step"] < plan["total_steps"] for r in replans)
    assert t.step == t.total_steps == (replans or [plan])[-1]["total_steps"] > plan["step"]
    assert plan["eval_seconds"] > 0  # an evaluation was timed at the plan (validation data is given)
    evals = read_metrics(tmp_path / "b" / "metrics.jsonl", "eval")
    assert evals[0]["step"] == plan["step"] and evals[-1]["step"] == t.step
    train = read_metrics(tmp_path / "b" / "metrics.jsonl", "train")
    # the cosine ends at the planned step: the last update used the rate of its last step (not yet 0)
    assert train[-1]["lr"] == pytest.approx(cfg.lr * cosine_lr(t.step - 1, t.step, cfg.warmup_steps))
    assert max(r["lr"] for r in train) == pytest.approx(cfg.lr)
    assert plan["eval_seconds"] == pytest.approx(0.3)
    assert 0.08 * 60 * 0.9 < spent <= 0.08 * 60  # the budget filled, less its margin, and never overrun

    # a run resumed after the plan keeps the length of its checkpoint, whatever its own pace
    ckpts = sorted(p for p in (tmp_path / "b" / "checkpoints").glob("step_*") if int(p.name[5:]) > plan["step"])
    resumed = SupervisedTrainer(_cfg(data, tmp_path / "c", steps=0, time_budget_minutes=0.08, batch_size=8,
                                     warmup_steps=4, resume=str(ckpts[0])))
    length = [r["total_steps"] for r in [plan, *replans] if r["step"] <= int(ckpts[0].name[5:])][-1]
    assert resumed.planned and resumed.total_steps == length and resumed.budget.replan_steps == []
    # another budget is the time for the rest: planned anew, the saved length holding until then
    rebudgeted = SupervisedTrainer(_cfg(data, tmp_path / "d", steps=0, time_budget_minutes=5.0, batch_size=8,
                                        warmup_steps=4, resume=str(ckpts[0])))
    assert not rebudgeted.planned
    assert rebudgeted.total_steps == max(length, rebudgeted.step + SKIP_FIRST + rebudgeted.budget.calibrate_steps + 1)


def test_time_limit_stops_evaluates_and_exports(data, tmp_path):
    t = SupervisedTrainer(_cfg(data, tmp_path / "l", steps=10_000, time_limit_minutes=1e-4))
    metrics = t.train()
    assert t.step < 10_000 and t.total_steps == t.step
    assert metrics["val_samples"] == 16  # evaluated at the stop
    assert (tmp_path / "l" / "model").is_dir() and (tmp_path / "l" / "checkpoints" / "best").is_dir()


@pytest.mark.parametrize("keep", [True, False])
def test_keeps_freed_memory_on_the_cpu_unless_told_not_to(data, tmp_path, monkeypatch, keep):
    from kizuna.train import trainer

    calls = []
    monkeypatch.setattr(trainer, "keep_freed_memory", lambda: calls.append(1) or True)
    SupervisedTrainer(_cfg(data, tmp_path / "m", keep_freed_memory=keep, device="cpu", steps=1)).train()
    assert calls == ([1] if keep else [])


def test_vit_eval_reproduces_the_trainers_evaluation_and_counts_corrupt_images(data, tmp_path):
    out = tmp_path / "run"
    metrics = SupervisedTrainer(_cfg(data, out, steps=12, precision="fp32")).train()  # eval defaults to fp32
    rc = main(["vit", "eval", str(out / "model"), "--data", str(data / "test"), "--no-progress", "--threads", "1",
               "--out", str(tmp_path / "ev")])
    assert rc == 0
    res = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert res["n"] == metrics["val_samples"] == 16 and res["split"] == "test"
    assert res["metrics"]["acc1"] == pytest.approx(metrics["val_top1"], abs=1e-9)
    assert res["metrics"]["loss"] == pytest.approx(metrics["val_loss"], rel=1e-4)
    assert sum(r["n"] for r in res["per_class"]) == 16 and len(res["confusion"]) == 4
    assert (tmp_path / "ev" / "confusion.png").stat().st_size > 5000
    # a corrupt image is skipped and counted, the rest are still evaluated
    bad = _with_a_corrupt_image(tmp_path / "bad", "test", 1000, 16)
    main(["vit", "eval", str(out / "model"), "--data", str(bad), "--no-progress", "--out", str(tmp_path / "ev2")])
    res2 = json.loads((tmp_path / "ev2" / "results.json").read_text())
    assert res2["n"] == 16 and sum(res2["skipped"].values()) == 1
    assert res2["metrics"]["acc1"] == res["metrics"]["acc1"]


def test_vit_eval_at_another_resolution_interpolates_the_position_embeddings(data, tmp_path):
    from kizuna.data.transforms import Preprocess
    from kizuna.eval.classification import evaluate_classifier
    from kizuna.eval.datasets import load_dataset

    torch.manual_seed(0)
    vit = kizuna.create_vit("mu/4", image_size=16, num_classes=4, **TINY)
    torch.nn.init.normal_(vit.head.weight)
    kizuna.save_model(vit, tmp_path / "m16")
    assert main(["vit", "eval", str(tmp_path / "m16"), "--data", str(data), "--image-size", "32", "--no-progress",
                 "--threads", "1", "--out", str(tmp_path / "ev")]) == 0
    res = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert res["image_size"] == 32
    # the same as loading at 32 px (2-D interpolated table, 8x8 grid) and classifying 32-px inputs
    big = kizuna.load_model(tmp_path / "m16", image_size=32)
    assert big.pos_embed.shape[1] == 65
    pre = Preprocess(**vit_preprocess(32))
    ref = evaluate_classifier(big, load_dataset(data), transform=pre, progress=False)
    assert res["metrics"]["loss"] == pytest.approx(ref.metrics["loss"], rel=1e-5)
    assert res["metrics"]["acc1"] == ref.metrics["acc1"]


def test_vit_eval_refuses_a_model_that_does_not_fit_the_data(data, tmp_path, capsys):
    other = kizuna.create_vit("mu/4", image_size=16, num_classes=7, **TINY)
    kizuna.save_model(other, tmp_path / "seven")
    assert main(["vit", "eval", str(tmp_path / "seven"), "--data", str(data), "--no-progress"]) == 2
    assert "model has 7 classes but colours" in capsys.readouterr().err
    kizuna.save_model(kizuna.create_vit("mu/4", image_size=16, **TINY), tmp_path / "headless")
    assert main(["vit", "eval", str(tmp_path / "headless"), "--data", str(data), "--no-progress"]) == 2
    assert "no classification head" in capsys.readouterr().err


def test_a_finished_run_resumed_keeps_its_model_and_a_clip_tower_keeps_its_normalisation(data, tmp_path, capsys):
    """Resuming a finished run rewrote OUT/model with empty metrics. Fine-tuning a CLIP image tower fed it
    kizuna's ViT normalisation (mean = std = 0.5) instead of the CLIP mean/std its weights were trained on."""
    from kizuna.train.supervised import source_normalisation

    out = tmp_path / "done"
    SupervisedTrainer(_cfg(data, out, save_every=3)).train()
    before = json.loads((out / "model" / "config.json").read_text())
    assert before["kizuna"]["extra"]["metrics"]["val_top1"] >= 0
    # (its final metrics, saved with its last checkpoint: they were {}, and `> final.json` lost them)
    assert SupervisedTrainer(_cfg(data, out, resume="latest")).train() == before["kizuna"]["extra"]["metrics"]
    assert json.loads((out / "model" / "config.json").read_text()) == before

    clip = kizuna.create_model("ViT-mu-8", image_size=16)
    kizuna.save_model(clip, tmp_path / "clip")
    mean, std = source_normalisation(str(tmp_path / "clip"))
    assert mean == pytest.approx(clip.cfg.preprocess["mean"]) and std == pytest.approx(clip.cfg.preprocess["std"])
    assert source_normalisation(str(out / "model")) == ([0.5] * 3, [0.5] * 3)
    ft = SupervisedTrainer(_cfg(data, tmp_path / "ft", init=str(tmp_path / "clip"), model_overrides={}, steps=2,
                                save_every=1))
    assert ft.preprocess_cfg["mean"] == pytest.approx(clip.cfg.preprocess["mean"])
    assert ft.transform.mean == pytest.approx(clip.cfg.preprocess["mean"])
    ft.train()
    # every checkpoint carries what OUT/model does: `vit eval` or a fine-tune of checkpoints/best read
    # CLIP's mean/std and the class names from it, and a resume needs the init checkpoint no more
    final = json.loads((tmp_path / "ft" / "model" / "config.json").read_text())["kizuna"]["extra"]
    for folder in ("step_0000001", "step_0000002", "best"):
        extra = json.loads((tmp_path / "ft" / "checkpoints" / folder / "config.json").read_text())["kizuna"]["extra"]
        assert extra["preprocess"] == final["preprocess"] and extra["classnames"] == final["classnames"] == CLASSES
    assert source_normalisation(str(tmp_path / "ft" / "checkpoints" / "best"))[0] == pytest.approx(
        clip.cfg.preprocess["mean"])
    import shutil

    shutil.rmtree(tmp_path / "clip")
    resumed = SupervisedTrainer(_cfg(data, tmp_path / "ft", init=str(tmp_path / "clip"), model_overrides={}, steps=3,
                                     resume=str(tmp_path / "ft" / "checkpoints" / "step_0000001")))
    assert resumed.transform.mean == pytest.approx(clip.cfg.preprocess["mean"])


@pytest.mark.parametrize("setting, message", [
    ({"label_smoothing": 1.5}, "--label-smoothing must be in \\[0, 1\\)"),
    ({"crop": "rrc", "crop_scale": (0.5,)}, "--crop-scale must be two area shares"),
    ({"crop_scale": (-0.5, 1.0)}, "--crop-scale must be"),
    ({"crop_scale": (2.0, 3.0)}, "--crop-scale must be"),
    ({"randaug_magnitude": 30}, "torchvision's 0..30"),
    ({"randaug_ops": -1}, "--randaug-ops must be >= 0"),
    ({"mixup": -0.2}, "--mixup must be >= 0"),
    ({"mix_prob": 1.5}, "--mix-prob must be a probability"),
    ({"hflip": -1}, "--hflip must be a probability"),
    ({"crop_padding": -4}, "--crop-padding must be >= 0"),
    ({"crop": "random"}, "--crop must be pad, rrc or none"),
    ({"momentum": -1.0}, r"--momentum must be in \[0, 1\)"),  # torch's "Invalid momentum value" named no flag
    ({"grad_clip": -1.0}, "--grad-clip must be >= 0"),
])
def test_augmentation_settings_out_of_range_are_refused(tmp_path, setting, message):
    """They switched a feature off or on without a word, failed inside a loader worker, or (smoothing > 1)
    made negative targets and a loss that trains away from the true class."""
    with pytest.raises(ValueError, match=message):
        _cfg(None, tmp_path, **setting)


def test_a_negative_seed_trains(data, tmp_path):
    """numpy refuses negative seeds: the mixing generator failed at the first step, after data and model."""
    t = SupervisedTrainer(_cfg(data, tmp_path / "neg", seed=-1, steps=2, mixup=0.8))
    assert t.train()["val_samples"] == 16


def test_model_overrides_name_vision_config_fields(tmp_path):
    with pytest.raises(ValueError, match="unknown VisionConfig field.*depht"):
        _cfg(None, tmp_path, model_overrides={"depht": 2})
    with pytest.raises(ValueError, match="image_size is set by --image-size"):
        _cfg(None, tmp_path, model_overrides={"image_size": 64})
    with pytest.raises(ValueError, match="num_classes is set by the data"):
        _cfg(None, tmp_path, model_overrides={"num_classes": 3})


def test_a_finetune_at_lr_0_only_evaluates_the_transfer(data, tmp_path):
    """docs/VIT.md's transfer measurement (`vit finetune --reset-head false --steps 1 --lr 0`) was refused
    by the check --lr > 0; at 0 the weights stay as loaded and the evaluation runs at the new size."""
    import kizuna

    SupervisedTrainer(_cfg(data, tmp_path / "base", steps=2)).train()
    cfg = _cfg(data, tmp_path / "zero", init=str(tmp_path / "base" / "model"), image_size=24, reset_head=False,
               steps=1, lr=0.0, warmup_steps=0)
    metrics = SupervisedTrainer(cfg).train()
    assert metrics["val_samples"] == 16
    before = load_for_finetune(str(tmp_path / "base" / "model"), len(CLASSES), 24, "interpolate", False).state_dict()
    after = kizuna.load_model(tmp_path / "zero" / "model").state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_a_csv_with_its_own_column_names_trains(data, tmp_path):
    """vit train had no column flags: a CSV with `path,label` columns failed with "no image column
    'filepath'" and no way to say otherwise."""
    import csv

    from kizuna.apps.cli import main
    from kizuna.data.sources import build_index

    index = build_index(str(data / "train"))
    folder = tmp_path / "imgs"
    folder.mkdir()
    with open(tmp_path / "cls.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "klass"])
        for i in range(len(index)):
            (folder / f"{i}.jpg").write_bytes(index.read_bytes(i))
            writer.writerow([str(folder / f"{i}.jpg"), int(index.labels[i])])
    flags = ["vit", "train", "--data", str(tmp_path / "cls.csv"), "--classnames", str(data / "classnames.txt"),
             "--model", "mu/4", "--image-size", "16", "--batch-size", "16", "--steps", "1", "--workers", "0",
             "--threads", "1", "--progress", "false", "--out", str(tmp_path / "run")]
    assert main([*flags, "--image-column", "path", "--label-column", "klass"]) == 0
    assert (tmp_path / "run" / "model").is_dir()


def test_a_split_folder_given_as_data_is_those_images(data, tmp_path):
    """With the default --data-split train, `--data ROOT/test` either failed (no ROOT/train) or trained on
    ROOT/train without a word."""
    index, _, _ = load_classification(str(data / "test"), "train")
    assert len(index) == 16  # the test folder's 16, not the train folder's 48


def test_a_resume_refuses_another_optimizer_by_its_flag(data, tmp_path, capsys):
    """The optimizer's saved state is AdamW's or SGD's: resumed with the other one, the run crashed after
    "resumed from" with KeyError 'momentum' (adamw -> sgd) or 'step' (sgd -> adamw)."""
    SupervisedTrainer(_cfg(data, tmp_path / "a", steps=2, val_data="")).train()
    latest = tmp_path / "a" / "checkpoints" / "step_0000002"
    with pytest.raises(ValueError, match=r"--optimizer sgd \(the run has adamw\) cannot continue it"):
        SupervisedTrainer(_cfg(data, tmp_path / "b", resume=str(latest), steps=4, optimizer="sgd"))
    assert main(["vit", "train", "--out", str(tmp_path / "a"), "--resume", "latest", "--steps", "4",
                 "--optimizer", "sgd"]) == 2
    err = capsys.readouterr().err
    assert "--optimizer sgd (the run has adamw)" in err and "resumed from" not in err
    SupervisedTrainer(_cfg(data, tmp_path / "s", steps=2, val_data="", optimizer="sgd")).train()
    # from Python the default (adamw) is not "given", but it cannot load SGD's state either: refused too
    with pytest.raises(ValueError, match=r"--optimizer adamw \(the run has sgd\)"):
        SupervisedTrainer(_cfg(data, tmp_path / "t", steps=4, resume=str(tmp_path / "s" / "checkpoints" / "latest")))


def test_a_latest_pointer_keeps_the_checkpoints_stored_preprocessing(tmp_path):
    """`OUT/checkpoints/latest` (what every run prints) loaded the weights but not the record beside them: a
    fine-tune from it normalised with 0.5/0.5 instead of the CLIP mean it was trained with."""
    from kizuna.analysis.report import read_extra
    from kizuna.train.supervised import source_normalisation

    checkpoints = tmp_path / "checkpoints"
    clip_mean, clip_std = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]
    kizuna.save_model(kizuna.create_vit("mu/4", image_size=16, num_classes=3), checkpoints / "step_0000040",
                      extra={"preprocess": {"image_size": 16, "mean": clip_mean, "std": clip_std}})
    (checkpoints / "latest").write_text("step_0000040")
    assert read_extra(checkpoints / "latest") == read_extra(checkpoints / "step_0000040")
    assert source_normalisation(str(checkpoints / "latest")) == (clip_mean, clip_std)


def test_vit_eval_names_the_datas_labels_with_the_models_classes(tmp_path, monkeypatch):
    """vit eval named the labels by the data's own folders: an ImageFolder test split of blue/ and red/ for a
    model trained on red, green, blue, grey scored blue as red (0% for a perfect model) or was refused for its
    class count; the trainer's evaluation of the same data was right."""
    from kizuna.eval import classification

    vit = kizuna.create_vit("mu/4", image_size=16, num_classes=4, **TINY)
    kizuna.save_model(vit, tmp_path / "m", extra={"classnames": CLASSES, "preprocess": vit_preprocess(16)})
    for name in ("blue", "red"):
        (tmp_path / "test" / name).mkdir(parents=True)
        (tmp_path / "test" / name / "0.jpg").write_bytes(_jpeg(CLASSES.index(name), 0))
    seen = {}

    def capture(model, dataset, **kw):
        seen.update(classnames=dataset.classnames, labels=dataset.labels.tolist(), keys=dataset.keys)
        raise SystemExit(0)

    monkeypatch.setattr(classification, "evaluate_classifier", capture)
    with pytest.raises(SystemExit):
        main(["vit", "eval", str(tmp_path / "m"), "--data", str(tmp_path / "test"), "--no-progress"])
    # the head's outputs are the model's classes: the labels must index those (blue 2, red 0), not the folders
    assert seen["classnames"] == CLASSES and dict(zip(seen["keys"], seen["labels"])) == {"blue/0": 2, "red/0": 0}


def test_a_csv_of_numbered_labels_without_class_names_trains(tmp_path):
    """The fallback that numbers the classes read the CSV without its label column: "no class names in given
    list", for a layout docs/VIT.md says is numbered "0", "1", ..."""
    rows = ["filepath,y"]
    for i in range(6):
        (tmp_path / f"{i}.jpg").write_bytes(_jpeg(i % 3, i))
        rows.append(f"{i}.jpg,{i % 3}")
    (tmp_path / "train.csv").write_text("\n".join(rows) + "\n")
    index, names, _ = load_classification(str(tmp_path / "train.csv"), label_column="y")
    assert names == ["0", "1", "2"] and index.labels.tolist() == [0, 1, 2, 0, 1, 2]


def test_vit_train_says_which_samples_it_left_out(data, tmp_path, capsys):
    """A training sample without a label was dropped while indexing, and a corrupt validation image at every
    evaluation, without a word (kizuna train and vit eval both say so)."""
    root = tmp_path / "d"
    _shard(root / "train" / "000000.tar", 0, 16)
    with tarfile.open(root / "train" / "000001.tar", "w", format=tarfile.USTAR_FORMAT) as tf:
        data_ = _jpeg(0, 99)
        info = tarfile.TarInfo("nolabel.jpg")
        info.size = len(data_)
        tf.addfile(info, io.BytesIO(data_))
    _with_a_corrupt_image(root, "test", 1000, 8)
    t = SupervisedTrainer(_cfg(root, tmp_path / "run", steps=2))
    t.train()
    out = capsys.readouterr().err
    assert "training samples left out while indexing: skipped 1 samples: missing_label=1" in out
    assert "validation: skipped 1 samples: corrupt_image=1" in out
    logged = read_metrics(tmp_path / "run" / "metrics.jsonl", "data")
    assert any(r.get("index_skipped/missing_label") == 1 for r in logged)
    assert read_metrics(tmp_path / "run" / "metrics.jsonl", "eval")[-1]["val_skipped"] == 1


def test_a_kept_head_follows_the_datas_class_order(tmp_path):
    """--reset-head false kept the head's rows in the checkpoint's order: the same classes listed in another
    order (an ImageFolder's sorted folders) scored 0%. Other classes are refused."""
    from kizuna.train.supervised import keep_head_for_classes

    vit = kizuna.create_vit("mu/4", image_size=16, num_classes=3, **TINY)
    torch.nn.init.normal_(vit.head.weight)
    torch.nn.init.normal_(vit.head.bias)
    kizuna.save_model(vit, tmp_path / "m", extra={"classnames": ["cat", "dog", "bird"]})
    kept = load_for_finetune(str(tmp_path / "m"), 3, None, "interpolate", False)
    keep_head_for_classes(kept, str(tmp_path / "m"), ["bird", "cat", "dog"])
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(kept(x), vit.eval()(x)[:, [2, 0, 1]], atol=1e-6)
    with pytest.raises(ValueError, match="--reset-head false keeps the head of .* the data's classes are"):
        keep_head_for_classes(kept, str(tmp_path / "m"), ["cat", "dog", "horse"])


def test_an_openai_layout_gelu_checkpoint_trains_and_is_analysed_with_act(data, tmp_path, capsys):
    """The QuickGELU warning told users of an OpenCLIP (GELU) .bin to pass --act gelu, which `kizuna train`,
    `vit finetune` and `analyze` did not take: a fine-tune trained it as QuickGELU and recorded that for good."""
    from kizuna.models.convert_openai import kizuna_to_openai

    path = tmp_path / "openclip.bin"
    torch.save(kizuna_to_openai(kizuna.create_model("ViT-mu-8", act="gelu"), strict=False), path)
    clip = ["train", "--model", str(path), "--synthetic-image-size", "32", "--synthetic-length", "32",
            "--batch-size", "16", "--steps", "1", "--warmup-steps", "0", "--workers", "0", "--threads", "1",
            "--precision", "fp32", "--progress", "false"]
    assert main([*clip, "--act", "gelu", "--out", str(tmp_path / "clip")]) == 0
    assert "QuickGELU" not in capsys.readouterr().err
    trained = kizuna.load_model(tmp_path / "clip" / "checkpoints" / "latest")
    assert trained.cfg.vision.act == "gelu" and trained.cfg.text.act == "gelu"
    assert main([*clip, "--out", str(tmp_path / "quick")]) == 0  # without it: OpenAI's, with the warning
    assert "QuickGELU" in capsys.readouterr().err
    assert kizuna.load_model(tmp_path / "quick" / "checkpoints" / "latest").cfg.vision.act == "quick_gelu"
    assert main([*clip, "--model", "ViT-mu-8", "--act", "gelu", "--out", str(tmp_path / "preset")]) == 2
    assert "a preset's (ViT-mu-8) is set with --model-overrides" in capsys.readouterr().err

    assert main(["vit", "finetune", str(path), "--act", "gelu", "--data", str(data / "train"), "--image-size", "32",
                 "--batch-size", "16", "--steps", "1", "--warmup-steps", "0", "--workers", "0", "--threads", "1",
                 "--progress", "false", "--out", str(tmp_path / "vit")]) == 0
    assert "QuickGELU" not in capsys.readouterr().err
    assert kizuna.load_model(tmp_path / "vit" / "model").cfg.act == "gelu"
    assert main(["vit", "train", "--act", "gelu", "--data", str(data / "train"), "--out", str(tmp_path / "x")]) == 2
    assert ("--act gelu names the activation of an OpenAI-layout checkpoint given to `kizuna vit finetune "
            "CHECKPOINT`") in capsys.readouterr().err

    assert main(["analyze", "positions", str(path), "--act", "gelu", "--out", str(tmp_path / "fig")]) == 0
    assert "QuickGELU" not in capsys.readouterr().err


def test_the_trainers_validation_decodes_photos_as_vit_eval_does(data, tmp_path):
    """Validation decoded JPEGs larger than the model at a reduced size (draft mode), vit eval in full: the two
    disagreed (top-1 75.2% and 75.0%, loss 0.6064 and 0.6087), and best/ was picked on the trainer's."""
    root = tmp_path / "big"
    _shard(root / "test" / "000000.tar", 1000, 16, size=64)  # 4x the model's 16 px: drafted at 1/4
    (root / "classnames.txt").write_text("\n".join(CLASSES) + "\n")
    metrics = SupervisedTrainer(_cfg(data, tmp_path / "run", steps=4, precision="fp32",
                                     val_data=str(root / "test"))).train()
    assert main(["vit", "eval", str(tmp_path / "run" / "model"), "--data", str(root / "test"), "--no-progress",
                 "--threads", "1", "--out", str(tmp_path / "ev")]) == 0
    res = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert res["metrics"]["loss"] == pytest.approx(metrics["val_loss"], rel=1e-5)


def test_validation_labels_index_the_validation_datas_own_class_names(data, tmp_path):
    """--val-data shards were read with the training classes' order: shards whose classnames.txt numbers the
    classes otherwise had every label scored as another class, without a word."""
    root = tmp_path / "reordered"
    with tarfile.open(data / "test" / "000000.tar") as src:  # the same images, classes numbered in reverse
        members = [(m.name, src.extractfile(m).read()) for m in src.getmembers()]
    (root / "test").mkdir(parents=True)
    with tarfile.open(root / "test" / "000000.tar", "w", format=tarfile.USTAR_FORMAT) as tf:
        for name, blob in members:
            if name.endswith(".cls"):
                blob = str(len(CLASSES) - 1 - int(blob)).encode()
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tf.addfile(info, io.BytesIO(blob))
    (root / "classnames.txt").write_text("\n".join(reversed(CLASSES)) + "\n")
    same = SupervisedTrainer(_cfg(data, tmp_path / "a", steps=1))
    other = SupervisedTrainer(_cfg(data, tmp_path / "b", steps=12, val_data=str(root / "test"), precision="fp32"))
    assert other.val_loader.dataset.index.labels.tolist() == same.val_loader.dataset.index.labels.tolist()
    # and `vit eval` reads them so too: the trainer's number is vit eval's
    metrics = other.train()
    assert main(["vit", "eval", str(tmp_path / "b" / "model"), "--data", str(root / "test"), "--no-progress",
                 "--threads", "1", "--out", str(tmp_path / "ev")]) == 0
    res = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert res["metrics"]["acc1"] == pytest.approx(metrics["val_top1"]) and res["n"] == 16
    assert main(["vit", "eval", str(tmp_path / "b" / "model"), "--data", str(data / "test"), "--no-progress",
                 "--threads", "1", "--out", str(tmp_path / "ev0")]) == 0  # the same images, numbered as trained
    assert res["confusion"] == json.loads((tmp_path / "ev0" / "results.json").read_text())["confusion"]
    assert res["metrics"]["acc1"] > 0.5  # it tells the classes apart, so a swap of labels would show
    # names are matched as class folders are ("_" a space, any case); numbered classes stay numbers
    (root / "classnames.txt").write_text("\n".join(n.upper() for n in reversed(CLASSES)) + "\n")
    upper = SupervisedTrainer(_cfg(data, tmp_path / "c", steps=1, val_data=str(root / "test")))
    assert upper.val_loader.dataset.index.labels.tolist() == same.val_loader.dataset.index.labels.tolist()


def test_a_resume_on_changed_files_says_so_instead_of_naming_flags_never_given(tmp_path, capsys):
    """A run resumed with its own settings on a folder that now holds more images (files added, or an older kizuna
    that skipped .bmp/.tif) was told to "Drop --data, --data-split, ... (the run's own are used)": flags the command
    never gave. The flags are named only where given."""
    from PIL import Image

    def add(first, last):
        for name in ("red", "blue"):
            (tmp_path / "folder" / name).mkdir(parents=True, exist_ok=True)
            for i in range(first, last):
                Image.new("RGB", (16, 16), (200, 10, i) if name == "red" else (10, 10, 200 - i)).save(
                    tmp_path / "folder" / name / f"{i}.png")

    add(0, 8)
    start = ["vit", "train", "--model", "mu/8", "--image-size", "16", "--batch-size", "4", "--val-data", "",
             "--threads", "1", "--progress", "false", "--warmup-steps", "1", "--out", str(tmp_path / "run")]
    assert main([*start, "--data", str(tmp_path / "folder"), "--steps", "2"]) == 0
    add(8, 10)
    resume = ["vit", "train", "--out", str(tmp_path / "run"), "--resume", "latest", "--steps", "3",
              "--progress", "false"]
    assert main(resume) == 2
    err = capsys.readouterr().err
    assert "training set has 16 samples and this one 20" in err and "find other files now" in err
    assert "Drop --data" not in err
    assert main([*resume, "--data", str(tmp_path / "folder")]) == 2
    assert "Drop --data (the run's own are used)" in capsys.readouterr().err


def test_classes_named_nowhere_are_numbered_from_one_index(tmp_path, monkeypatch):
    """Classes named nowhere were numbered after indexing the data three times (the failed load, an index of the
    labels, the load again: 31 s instead of 13 at 100,000 images); the dataset as indexed is numbered now. A names
    file in the parent folder still names them."""
    from kizuna.data import sources
    from kizuna.eval import datasets

    rows = ["filepath,y"]
    for i in range(6):
        (tmp_path / f"{i}.jpg").write_bytes(_jpeg(i % 3, i))
        rows.append(f"{i}.jpg,{(i % 3) * 2}")  # labels 0, 2, 4: class 1 and 3 have no image
    (tmp_path / "train.csv").write_text("\n".join(rows) + "\n")
    built = []
    real = sources.build_index
    for module in (datasets, sources):
        monkeypatch.setattr(module, "build_index", lambda *a, **k: built.append(a) or real(*a, **k))
    images = tmp_path / "flat"  # side-cars (KEY.jpg + KEY.cls) named nowhere
    images.mkdir()
    for i in range(6):
        (images / f"{i}.jpg").write_bytes(_jpeg(i % 3, i))
        (images / f"{i}.cls").write_text(str((i % 3) * 2))
    _, names, ds = load_classification(str(images))
    assert names == ["0", "1", "2", "3", "4"] and len(built) == 1
    index, names, ds = load_classification(str(tmp_path / "train.csv"), label_column="y")
    assert names == ["0", "1", "2", "3", "4"] and ds.classnames_source == "label numbers"
    assert index.labels.tolist() == [0, 2, 4, 0, 2, 4]
    images = tmp_path / "data" / "images"  # side-cars (KEY.jpg + KEY.cls), their names file a folder up
    images.mkdir(parents=True)
    for i in range(6):
        (images / f"{i}.jpg").write_bytes(_jpeg(i % 3, i))
        (images / f"{i}.cls").write_text(str(i % 3))
    (tmp_path / "data" / "classnames.txt").write_text("a\nb\nc\n")
    _, names, ds = load_classification(str(images))
    assert names == ["a", "b", "c"] and ds.classnames_source == str(tmp_path / "data" / "classnames.txt")
