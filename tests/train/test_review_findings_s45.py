"""Line-by-line review of train/ (stop 45): a resumed planned run keeps no step times, the budget's warm-up
warning says what the rate does, and a ViT run whose last evaluation failed names the command that evaluates it."""
import types
import warnings

import torch

from kizuna.train.budget import TimeBudget, plan_run, restore_length


class _Log:
    def log(self, *args, **kwargs):
        pass


def _trainer(budget, warmup, total=10**9):
    cfg = types.SimpleNamespace(time_budget_minutes=1.0, steps=0, eval_every=0, save_every=0, warmup_steps=warmup,
                                lr=1e-3, weight_decay=0.0)
    return types.SimpleNamespace(cfg=cfg, budget=budget, step=20, total_steps=total, planned=False, steps_per_epoch=10,
                                 device=torch.device("cpu"), logger=_Log(), evaluate=lambda: {},
                                 dist=types.SimpleNamespace(is_main=True))


def test_a_resume_that_keeps_its_plan_keeps_no_step_times():
    """No plan or correction comes after it: every step's time was kept to the end (8 bytes a step)."""
    budget = TimeBudget(budget_minutes=1.0)
    trainer = _trainer(budget, warmup=5)
    restore_length(trainer, {"planned": True, "total_steps": 100, "train_config": {"time_budget_minutes": 1.0,
                                                                                   "steps": 0}})
    assert trainer.planned and trainer.total_steps == 100
    for _ in range(30):
        budget.step_done()
    assert len(budget.step_times) == 0
    fresh = TimeBudget(budget_minutes=1.0)  # a run still to plan keeps them
    for _ in range(30):
        fresh.step_done()
    assert len(fresh.step_times) == 29


def _plan_warning(total, warmup):
    budget = TimeBudget(budget_minutes=1.0)
    budget.plan = lambda step, **kw: {"total_steps": total, "seconds_per_step": 0.1, "eval_seconds": 0,
                                      "save_seconds": 0, "remaining_s": 1.0, "budget_minutes": 1.0,
                                      "planned_at_step": step}
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        plan_run(_trainer(budget, warmup))
    return " ".join(str(w.message) for w in said)


def test_the_warm_up_warning_says_whether_the_peak_is_reached():
    assert "reaches its peak at the last step only" in _plan_warning(30, 30)
    assert "never reaches its peak" in _plan_warning(20, 30)
    assert _plan_warning(40, 30) == ""


def test_a_vit_run_names_vit_eval_for_its_failed_last_evaluation():
    from kizuna.train.supervised import SupervisedTrainer

    assert SupervisedTrainer.evaluate_command.format(out="runs/x") == "kizuna vit eval runs/x/model --data DATA"


def test_a_run_trains_in_float32_with_grad_whatever_the_host_set(tmp_path):
    """A host's float64 default trained and saved a float64 model under precision fp32; a host with grad
    disabled failed at step 1 (a tensor without a grad_fn). Both are given back afterwards."""
    from _tiny import tiny_config

    from kizuna.train.contrastive import train

    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        with torch.no_grad():
            train(tiny_config(tmp_path / "run", steps=1, batch_size=8))
            assert not torch.is_grad_enabled()
        assert torch.get_default_dtype() == torch.float64
    finally:
        torch.set_default_dtype(before)
    import kizuna

    model = kizuna.load_model(tmp_path / "run" / "checkpoints" / "latest")
    assert {p.dtype for p in model.parameters()} == {torch.float32}


def test_a_trainer_built_but_not_trained_leaves_the_hosts_dtype_and_grad(tmp_path):
    """The constructor set float32 and grad on for the host and only train() gave them back: a trainer never
    trained left a notebook at float32 with grad on."""
    from _tiny import tiny_config

    from kizuna.train.contrastive import ContrastiveTrainer

    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        with torch.no_grad():
            trainer = ContrastiveTrainer(tiny_config(tmp_path / "run", steps=1, batch_size=8))
            assert torch.get_default_dtype() == torch.float64 and not torch.is_grad_enabled()
        assert {p.dtype for p in trainer.model.parameters()} == {torch.float32}
        trainer._let_go_of_the_folder()
    finally:
        torch.set_default_dtype(before)


def test_decoding_onto_the_device_without_a_bar_says_so(tmp_path, capsys):
    """--augment-on device without a terminal: seconds of silence while the training set decoded (tell hunt)."""
    from test_supervised import TINY, _shard

    from kizuna.apps.cli import main

    _shard(tmp_path / "data" / "train" / "000000.tar", 0, 8)
    import json

    assert main(["vit", "train", "--data", str(tmp_path / "data" / "train"), "--model", "mu/4", "--model-overrides",
                 json.dumps(TINY), "--image-size", "16", "--crop", "pad", "--augment-on", "device", "--steps", "1",
                 "--batch-size", "4", "--workers", "0", "--threads", "1", "--progress", "false", "--warmup-steps",
                 "1", "--out", str(tmp_path / "run")]) == 0
    assert "decoding 8 training images onto cpu ..." in capsys.readouterr().err
