"""Mutation findings (session 52): a resume's optimizer state is checked against the weights before torch loads
it (the fused step read past buffers of another shape), and a state of another parameter count is left to
torch's own refusal; over_training's _older counts an equal time as older."""
import os

import pytest
import torch
from _tiny import tiny_config

from kizuna.train.trainer import check_optimizer_state_shapes


def _state_of_another_shape(optimizer):
    saved = optimizer.state_dict()
    first = saved["param_groups"][0]["params"][0]
    saved["state"][first] = {"step": torch.tensor(1.0), "exp_avg": torch.zeros(600), "exp_avg_sq": torch.zeros(600)}
    return saved


def test_the_trainer_checks_the_saved_moments_before_loading_them(tmp_path):
    from kizuna.train.contrastive import ContrastiveTrainer

    trainer = ContrastiveTrainer(tiny_config(tmp_path, steps=3, warmup_steps=1, eval_max_samples=0))
    saved = _state_of_another_shape(trainer.optimizer)
    with pytest.raises(ValueError, match=r"exp_avg of shape \(600,\)\) does not fit the checkpoint's weights"):
        trainer._load_optimizer_state(saved)


def test_a_state_of_another_parameter_count_is_not_matched_by_position():
    params = [torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(2, 2))]
    optimizer = torch.optim.AdamW(params)
    saved = {"param_groups": [{"params": [0, 1, 2]}],
             "state": {0: {"exp_avg": torch.zeros(5)}, 1: {"exp_avg": torch.zeros(7)}}}
    check_optimizer_state_shapes(optimizer, saved, "run/step_1")  # torch says this one (a count of its own)
    saved["param_groups"] = [{"params": [0, 1]}]
    with pytest.raises(ValueError, match="does not fit"):
        check_optimizer_state_shapes(optimizer, saved, "run/step_1")


def test_a_checkpoint_written_in_the_same_tick_as_latest_is_older(tmp_path):
    from kizuna.analysis.over_training import _older

    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.write_text("x")
    os.utime(a, (1_000_000, 1_000_000))
    os.utime(b, (1_000_000, 1_000_000))
    assert _older(a, b)
    os.utime(b, (999_999, 999_999))
    assert not _older(a, b)
    assert not _older(tmp_path / "gone", b)


def test_a_checkpoints_folder_of_another_name_is_no_live_runs(tmp_path, recwarn, monkeypatch):
    """Only RUN/checkpoints has RUN's lock beside it: a folder of step_N given itself (another name) is at rest,
    whatever lock its parent holds, so a step newer than its `latest` is an abandoned branch, left out."""
    import time

    from kizuna.analysis.over_training import find_checkpoints
    from kizuna.train import checkpointing

    monkeypatch.setattr(checkpointing, "run_lock_holder", lambda out: "4242")
    folder = tmp_path / "kept"
    folder.mkdir()
    (folder / "latest").write_text("step_0000003")
    old = time.time() - 100
    os.utime(folder / "latest", (old, old))
    for step in (2, 3, 4):
        (folder / f"step_{step:07d}").mkdir()
    assert [p.name for _, p in find_checkpoints(folder)] == ["step_0000002", "step_0000003"]
    assert any("step_0000004 come after latest" in str(w.message) for w in recwarn)
