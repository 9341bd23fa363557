"""Inputs that used to crash `kizuna analyze` or give wrong numbers (a bug hunt of 2026-12-04)."""
from __future__ import annotations

import json

import pytest
import torch

import kizuna
from kizuna.analysis.runs import load_run
from kizuna.apps.cli import main
from kizuna.train.checkpointing import CheckpointManager


def _mkdir(folder):
    folder.mkdir(parents=True)
    return folder


def _log(folder, rows):
    folder.mkdir(parents=True)
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def test_compare_runs_takes_the_lowest_loss_and_survives_a_diverged_run(tmp_path, capsys):
    """``--metric val_loss`` reported the highest loss as the best; a NaN or null value (a diverged run)
    crashed the table or the figure. The lowest loss is best now, the best is taken over finite values, and
    a NaN final value prints as nan."""
    good = _log(tmp_path / "good", [{"kind": "eval", "step": 1, "val_top1": 0.3, "val_loss": 1.0},
                                    {"kind": "eval", "step": 2, "val_top1": 0.5, "val_loss": 0.5}])
    run = load_run(good, "val_loss")
    assert run["lower_is_better"] and (run["best"], run["best_step"]) == (0.5, 2)
    assert load_run(good, "val_loss", mode="max")["best"] == 1.0
    assert load_run(good, "val_top1")["best_step"] == 2
    bad = tmp_path / "diverged"
    bad.mkdir()
    (bad / "metrics.jsonl").write_text('{"kind": "eval", "step": 1, "val_top1": 0.3, "val_loss": 1.0}\n'
                                       '{"kind": "eval", "step": 2, "val_top1": null, "val_loss": NaN}\n'
                                       '{"kind": "train", "step": 2, "train_top1": NaN}\n')
    run = load_run(bad, "val_loss")
    assert run["best"] == 1.0 and run["final"] != run["final"] and run["final_train_top1"] is None
    for metric in ("val_loss", "val_top1"):
        assert main(["analyze", "compare-runs", str(good), str(bad), "--metric", metric,
                     "--out", str(tmp_path / metric)]) == 0
        assert (tmp_path / metric / "runs.png").is_file()
    printed = capsys.readouterr().out
    assert "lowest (step)" in printed and "nan" in printed
    with pytest.raises(SystemExit):
        main(["analyze", "compare-runs", str(good), "--train-window", "0"])
    assert "--train-window: must be >= 1" in capsys.readouterr().err


def test_over_training_prints_n_a_where_a_number_does_not_exist(tmp_path, capsys, write_noise_images):
    """One block has no slope against depth and a 1xN grid no row/column ratio: both are null in the JSON,
    and the summary line crashed formatting them."""
    manager = CheckpointManager(tmp_path / "run", keep_last=5)
    for step in (10, 20):
        torch.manual_seed(step)
        model = kizuna.create_vit("mu/8", image_size=(8, 32), num_classes=3, width=32, depth=1, heads=2, mlp_dim=64)
        manager.save(step, model, {"step": step}, metrics={"val_top1": 0.5})
    images = write_noise_images(_mkdir(tmp_path / "imgs"), 3, 32)
    assert main(["analyze", "over-training", str(tmp_path / "run"), "--images", str(images),
                 "--out", str(tmp_path / "o")]) == 0
    printed = capsys.readouterr().out
    assert "slope n/a px/layer" in printed and "row/column ratio n/a" in printed


def test_rollout_of_a_model_that_does_not_pool_its_class_token(tmp_path, write_noise_images):
    """GAP pooling with a class token carried along: the class token never reaches the output, so the map
    is the patch tokens' mean flow (it was the class token's row)."""
    from kizuna.analysis.attention import attention_rollout, cls_rollout_map
    from kizuna.analysis.report import _attentions, load_target
    from kizuna.data.images import load_image

    torch.manual_seed(0)
    model = kizuna.create_vit("mu/4", image_size=16, num_classes=3, width=32, depth=2, heads=2, mlp_dim=64, pool="gap")
    assert model.cfg.class_token
    path = kizuna.save_model(model, tmp_path / "gap")
    image = next(write_noise_images(_mkdir(tmp_path / "imgs"), 1, 16).iterdir())
    assert main(["analyze", "rollout", str(path), "--image", str(image), "--out", str(tmp_path / "r")]) == 0
    numbers = json.loads((tmp_path / "r" / "rollout.json").read_text())
    assert numbers["class_token"] is False and numbers["pool"] == "gap"
    target = load_target(str(path))
    (attns, grid, prefix, _), = list(_attentions(target, target.preprocess(load_image(image))[None]))
    roll = attention_rollout(attns)
    got = torch.tensor(numbers["rollout_map"])
    torch.testing.assert_close(got, roll[0, prefix:, prefix:].mean(0).reshape(grid), atol=1e-6, rtol=1e-5)
    assert not torch.allclose(got, cls_rollout_map(roll, grid, prefix)[0], atol=1e-3)


def test_all_passes_top_and_predict_checks_it(tmp_path, write_noise_images, capsys):
    path = kizuna.save_model(kizuna.create_model("ViT-mu-8"), tmp_path / "clip")
    image = next(write_noise_images(_mkdir(tmp_path / "imgs"), 1, 32).iterdir())
    assert main(["analyze", "all", str(path), "--image", str(image), "--labels", "a,b,c", "--top", "1",
                 "--out", str(tmp_path / "a")]) == 0
    assert len(json.loads((tmp_path / "a" / "predict.json").read_text())["top"]) == 1
    for bad in ("0", "-1"):
        with pytest.raises(SystemExit):
            main(["analyze", "predict", str(path), "--image", str(image), "--labels", "a,b", "--top", bad])
        assert "--top: must be >= 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["analyze", "attention-distance", str(path), "--images", str(image), "--max-images", "0"])
    assert "--max-images/--max-samples: must be >= 1" in capsys.readouterr().err


def test_a_vits_labels_are_one_set_of_names_and_a_model_object_says_its_normalisation(tmp_path):
    """`analyze all --labels` named the predicted class by the saved names in rollout.json and by --labels in
    predict.json (a reordering of the saved names called class 3 "ship" and "dog"); a ViT model object was analysed
    with mean = std = 0.5 without a word, where its saved preprocessing was OpenAI's."""
    from kizuna.analysis.report import full_report, load_target
    from kizuna.models.checkpoint import save_model

    vit = kizuna.create_vit("mu/4", image_size=16, num_classes=3, width=16, depth=1, heads=2, mlp_dim=32)
    saved = ["cat", "dog", "car"]
    save_model(vit, tmp_path / "m", extra={"classnames": saved, "preprocess": {
        "image_size": 16, "mean": [0.48, 0.46, 0.41], "std": [0.27, 0.26, 0.28]}})
    target = load_target(tmp_path / "m")
    with pytest.raises(ValueError, match="--labels name the model's classes .* in another order"):
        full_report(target, tmp_path / "o", labels=["dog", "cat", "car"], progress=False)
    report = full_report(target, tmp_path / "o", labels=["chat", "chien", "voiture"], progress=False)
    assert report["rollout"]["prediction"]["label"] == report["predict"]["top"][0][0]
    loaded = load_target(kizuna.load_model(tmp_path / "m"))  # a model object loaded by path carries its own
    assert loaded.preprocess.mean == [0.48, 0.46, 0.41]
    with pytest.warns(UserWarning, match="carries no preprocessing: analysed with mean = std = 0.5"):
        plain = load_target(vit)
    assert plain.preprocess.mean == [0.5, 0.5, 0.5]
    import dataclasses

    given = load_target(kizuna.load_model(tmp_path / "m"), preprocess=dataclasses.asdict(target.preprocess),
                        classnames=saved)
    assert given.preprocess.mean == target.preprocess.mean and given.classnames == saved
