"""What a training run tells the user, checked against what it did (found by comparing every printed count with
the truth)."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "data"))
from _tiny import tiny_config  # noqa: E402

from kizuna.train.contrastive import ContrastiveTrainer  # noqa: E402
from kizuna.train.logging import read_metrics  # noqa: E402


def _half_corrupt_shard(tmp_path, n=20):
    import _shards

    members = _shards.pair_members([f"{i:04d}" for i in range(n)], captions=[f"a photo number {i}" for i in range(n)])
    members = [(m, b"not a jpeg" if m.endswith(".jpg") and int(m[:4]) % 2 == 0 else b) for m, b in members]
    return _shards.write_tar(tmp_path / "data" / "000000.tar", members)


def test_a_run_stopped_mid_epoch_by_its_time_limit_says_its_skips_and_its_planned_length(tmp_path, monkeypatch,
                                                                                          capsys):
    """A run ending before its epoch does (a time limit here; --steps or a run shorter than an epoch alike) said
    nothing of the samples it skipped in that epoch, and logged none; its last line read "step 2/2" (the limit
    shortens the run's length to the step it stopped at) though 5 were planned."""
    from kizuna.train import budget as budget_mod

    shard = _half_corrupt_shard(tmp_path)  # 10 of 20 images corrupt; an epoch is 5 batches of 4
    monkeypatch.setattr(budget_mod.TimeBudget, "time_is_up", lambda self, device: tr.step >= 2)
    tr = ContrastiveTrainer(tiny_config(tmp_path / "run", data=str(shard), batch_size=4, steps=5, epochs=0,
                                        time_limit_minutes=10.0, warmup_steps=0, progress=False,
                                        model_overrides={"vision": {"image_size": 32}}))
    tr.train()
    err = capsys.readouterr().err
    assert tr.step == 2 and tr.epoch == 0
    assert "step 2/5: loss" in err and "step 2/2" not in err
    records = read_metrics(tmp_path / "run" / "metrics.jsonl", "data")
    unfinished = [r for r in records if r.get("epoch_unfinished")]
    assert len(unfinished) == 1 and unfinished[0]["step"] == 2
    # 8 samples drawn from 20 of which 10 are corrupt: the count is the batches' own (each batch of 4 trained
    # what was left), at least one and at most the 8 drawn
    assert 1 <= unfinished[0]["skipped"] == unfinished[0]["skipped/corrupt_image"] <= 8
    assert f"epoch 0 (unfinished: the run ends here): skipped {unfinished[0]['skipped']} samples" in err
    assert f"curves: {tmp_path / 'run' / 'curves.png'}" in err  # a batch job's log never named the figure


def test_the_clip_trainer_says_its_evaluations_in_a_line():
    """`kizuna train` printed nothing of its evaluations (only metrics.jsonl had them), where `vit train` prints
    a line per evaluation."""
    line = ContrastiveTrainer.evaluation_line(object.__new__(ContrastiveTrainer), {
        "zeroshot/top1": 0.25, "zeroshot/top5": 0.5, "retrieval/image_to_text_R@1": 0.125, "probe/shape": 1.0})
    assert line == "zero-shot top-1 0.2500, image->text R@1 0.1250, probe shape 1.0000"
    assert ContrastiveTrainer.evaluation_line(object.__new__(ContrastiveTrainer), {"zeroshot/top5": 0.5}) is None


def test_the_shapes_world_probes_have_a_bar_over_their_images(capsys):
    """The demo's final evaluation (500 scenes a task, ~45 s on 2 cores) and the probes during training showed
    nothing at all."""
    import kizuna
    from kizuna.train.evaluation import synthetic_probe_metrics

    model = kizuna.create_model("ViT-mu-8", image_size=32).eval()
    metrics = synthetic_probe_metrics(model, kizuna.get_tokenizer(model), n_per_task=2, progress=True)
    err = capsys.readouterr().err
    assert "probe/shape" in metrics and "probes" in err
    assert "/20" in err  # 2 scenes of each of the 10 tasks
    synthetic_probe_metrics(model, kizuna.get_tokenizer(model), n_per_task=2)
    assert "probes" not in capsys.readouterr().err  # off by default (the Python API)


def test_the_time_budgets_plan_evaluation_is_said_like_any_other(tmp_path, monkeypatch, capsys):
    """The plan's evaluation was logged but never printed: vit_cifar10_gpu (eval_every 0) showed one of its two."""
    from kizuna.train import trainer as trainer_module

    real = trainer_module.after_step
    monkeypatch.setattr(trainer_module, "after_step",
                        lambda tr, bar: {"probe/shape": 0.5} if tr.step == 2 else real(tr, bar))
    tr = ContrastiveTrainer(tiny_config(tmp_path / "run", steps=3, eval_every=0, eval_max_samples=1))
    tr.train()
    assert "step 2: probe shape 0.5000" in capsys.readouterr().err
