import dataclasses
import json
import sys
from pathlib import Path

import pytest
import torch

import kizuna

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "data"))
from _tiny import tiny_config  # noqa: E402

from kizuna.train.contrastive import ContrastiveTrainer  # noqa: E402
from kizuna.train.logging import read_metrics  # noqa: E402
from kizuna.train.optim import cosine_lr, resolve_precision  # noqa: E402


def batch_of(trainer, n=16):
    items = [trainer.dataset[(i, 0)] for i in range(n)]
    return torch.stack([it["image"] for it in items]), [it["caption"] for it in items]


@pytest.mark.parametrize("n", [16, 9])  # 9: a batch shrunk by unreadable samples, which chunk(4) cuts in 3
@pytest.mark.parametrize("loss", ["clip", "siglip"])
def test_grad_cache_accumulation_equals_one_big_batch(tmp_path, loss, n):
    """With fewer chunks than --accum-steps (9 samples in chunks of 3), the logit scale and bias, routed
    through the k-th chunk, got no gradient, and under DDP no chunk synced: the ranks drifted apart."""
    grads = []
    for k in (1, 4):
        torch.manual_seed(0)
        # fp32: the k = 1 reference runs the model directly, outside the trainer's autocast
        tr = ContrastiveTrainer(tiny_config(tmp_path / f"k{k}", accum_steps=k, loss=loss, precision="fp32"))
        images, captions = batch_of(tr, n)
        text = {"tokens": tr.tokenizer(captions)}
        if k == 1:
            out = tr.model(images, **text)
            tr._loss(out).backward()
        else:
            tr._grad_cache_step(images, text, k)
        grads.append({n: p.grad.clone() for n, p in tr.model.named_parameters()})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], atol=1e-5, rtol=1e-4, msg=name)


def test_training_reduces_loss_and_logs(tmp_path):
    tr = ContrastiveTrainer(tiny_config(tmp_path, steps=12, save_every=6, keep_last=1, best_metric="probe/colour"))
    tr.train()
    rows = read_metrics(tmp_path / "metrics.jsonl", "train")
    assert [r["step"] for r in rows] == list(range(1, 13))
    written = json.loads((tmp_path / "train_config.json").read_text())
    assert written["best_metric"] == "probe/colour" and written["precision"] == "auto"
    assert written["precision_used"] == resolve_precision("auto", torch.device("cpu"))  # what auto meant here
    assert rows[-1]["loss"] < rows[0]["loss"]
    assert all(r["logit_scale"] <= 100.0 + 1e-4 for r in rows)
    ckpts = sorted(p.name for p in (tmp_path / "checkpoints").glob("step_*"))
    assert ckpts == ["step_0000012"]  # keep_last=1
    assert (tmp_path / "checkpoints" / "best" / "model.safetensors").exists()
    assert (tmp_path / "checkpoints" / "latest").read_text() == "step_0000012"
    assert any((tmp_path / "tensorboard").iterdir())


def test_locked_image_tower_stays_bit_identical(tmp_path):
    tr = ContrastiveTrainer(tiny_config(tmp_path, steps=3, lock_image=True))
    before_img = {n: p.detach().clone() for n, p in tr.model.visual.named_parameters()}
    before_txt = {n: p.detach().clone() for n, p in tr.model.text.named_parameters()}
    tr.train()
    for n, p in tr.model.visual.named_parameters():
        assert torch.equal(p, before_img[n]), n
    assert any(not torch.equal(p, before_txt[n]) for n, p in tr.model.text.named_parameters())
    assert not tr.model.visual.training  # locked: eval mode (no patch dropout), also after evaluate()'s train()
    tr.evaluate()
    assert not tr.model.visual.training and tr.model.text.training


def test_gradcache_with_both_towers_locked_trains_the_logit_scale(tmp_path):
    """With --accum-steps 2 the first chunk had nothing to differentiate: "element 0 of tensors does not require
    grad". With 1 it trained the scale."""
    tr = ContrastiveTrainer(tiny_config(tmp_path, steps=2, lock_image=True, lock_text=True, accum_steps=2))
    scale = tr.model.logit_scale.detach().clone()
    tr.train()
    assert not torch.equal(tr.model.logit_scale, scale)


def test_lock_all_but_last_block(tmp_path):
    tr = ContrastiveTrainer(tiny_config(tmp_path, steps=2, lock_text=True, lock_text_unlocked_blocks=1))
    blocks = tr.model.text.transformer.blocks
    first = {n: p.detach().clone() for n, p in blocks[0].named_parameters()}
    last = {n: p.detach().clone() for n, p in blocks[-1].named_parameters()}
    emb = tr.model.text.token_embed.weight.detach().clone()
    tr.train()
    assert all(torch.equal(p, first[n]) for n, p in blocks[0].named_parameters())
    assert torch.equal(tr.model.text.token_embed.weight, emb)
    assert any(not torch.equal(p, last[n]) for n, p in blocks[-1].named_parameters())


def test_shard_with_bad_members_trains_on_and_reports(tmp_path, capsys):
    import _shards

    members = _shards.pair_members([f"{i:04d}" for i in range(20)], captions=[f"a photo number {i}" for i in range(20)])
    members = [(n, b) for n, b in members if n not in ("0003.txt",)]  # missing caption
    members = [(n, b"not a jpeg" if n == "0005.jpg" else (b"" if n == "0007.txt" else b)) for n, b in members]
    shard = _shards.write_tar(tmp_path / "data" / "000000.tar", members)
    tr = ContrastiveTrainer(tiny_config(tmp_path / "run", data=str(shard), batch_size=4, steps=0, epochs=1,
                                        model_overrides={"vision": {"image_size": 32}}))
    tr.train()
    out = capsys.readouterr().err
    assert "missing_caption=1" in out and "empty_caption=1" in out
    data = read_metrics(tmp_path / "run" / "metrics.jsonl", "data")
    assert any(r.get("skipped/corrupt_image") == 1 for r in data)
    assert any(r.get("index_skipped") == 2 for r in data)
    # a resume does not log the index's skips a second time (the run's log has them from its start)
    ContrastiveTrainer(tiny_config(tmp_path / "run", data=str(shard), batch_size=4, steps=0, epochs=2,
                                   model_overrides={"vision": {"image_size": 32}}, resume="latest")).train()
    data = read_metrics(tmp_path / "run" / "metrics.jsonl", "data")
    assert sum("index_skipped" in r for r in data) == 1


def test_time_limit_stops_saves_and_evaluates(tmp_path):
    tr = ContrastiveTrainer(tiny_config(tmp_path, steps=1000, time_limit_minutes=1e-4))
    metrics = tr.train()
    assert 1 <= tr.step < 1000 and metrics
    assert (tmp_path / "checkpoints" / f"step_{tr.step:07d}").is_dir()


def test_time_budget_plans_a_contrastive_run(tmp_path, clock):
    """The contrastive trainer shares the time budget (kizuna.train.budget): one plan after the warm-up,
    the planned length is where the run and its cosine schedule end. Each step takes 0.1 s of the budget's
    clock (on the real one a loaded machine planned otherwise)."""
    tr = ContrastiveTrainer(tiny_config(tmp_path, steps=0, time_budget_minutes=0.06, warmup_steps=3))
    assert not tr.planned
    fit = tr.fit_batch

    def fit_in_a_tenth_of_a_second(batch):
        clock.now += 0.1
        return fit(batch)

    tr.fit_batch = fit_in_a_tenth_of_a_second
    t0 = clock.now
    tr.train()
    assert 0.06 * 60 * 0.9 < clock.now - t0 <= 0.06 * 60  # the budget filled, less its margin, and never overrun
    plans = read_metrics(tmp_path / "metrics.jsonl", "plan")
    assert len(plans) == 1 and tr.planned
    replans = read_metrics(tmp_path / "metrics.jsonl", "replan")  # corrections on the way, if any
    assert tr.step == tr.total_steps == (replans or plans)[-1]["total_steps"] > plans[0]["step"] >= 3
    rows = read_metrics(tmp_path / "metrics.jsonl", "train")
    # the log has the rate each update used: the cosine's last step, as planned
    assert rows[-1]["step"] == tr.step
    assert rows[-1]["lr"] == pytest.approx(tr.cfg.lr * cosine_lr(tr.step - 1, tr.step, tr.cfg.warmup_steps))


def test_a_shard_whose_every_image_is_corrupt_is_an_error_not_an_endless_loop(tmp_path):
    """Every sample skipped: each epoch hands out empty batches, and the loop used to go round them for
    ever (tens of thousands of epochs a minute). Now the first such epoch ends the run with the report."""
    import _shards

    members = _shards.pair_members([f"{i:04d}" for i in range(8)], captions=[f"a photo number {i}" for i in range(8)])
    members = [(n, b"not a jpeg" if n.endswith(".jpg") else b) for n, b in members]
    shard = _shards.write_tar(tmp_path / "data" / "000000.tar", members)
    tr = ContrastiveTrainer(tiny_config(tmp_path / "run", data=str(shard), batch_size=4, steps=5,
                                        model_overrides={"vision": {"image_size": 32}}))
    with pytest.raises(ValueError, match=r"000000\.tar: a whole epoch \(2 batches\) gave no usable sample.*"
                                         r"corrupt_image=8"):
        tr.train()
    assert tr.step == 0 and tr.epoch == 0


def test_the_latest_pointer_can_be_passed_where_a_checkpoint_folder_is_expected(tmp_path):
    """checkpoints/latest is a text file naming the newest step folder; passed as a model or to --resume
    it stands for that folder (it was read as a torch file: "pop from empty list")."""
    from kizuna.models.checkpoint import CheckpointError, follow_latest, load_model
    from kizuna.train.checkpointing import CheckpointManager

    tr = ContrastiveTrainer(tiny_config(tmp_path, steps=2))
    tr.train()
    pointer = tmp_path / "checkpoints" / "latest"
    newest = tmp_path / "checkpoints" / "step_0000002"
    assert pointer.read_text().strip() == newest.name and follow_latest(pointer) == newest
    loaded = load_model(pointer)
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, tr.model.state_dict()[k]), k
    assert CheckpointManager(tmp_path / "checkpoints").resolve(str(pointer)) == newest
    assert follow_latest(tmp_path / "metrics.jsonl") == tmp_path / "metrics.jsonl"  # other files unchanged
    (tmp_path / "stray").mkdir()
    (tmp_path / "stray" / "latest").write_text("step_9999999")  # names no folder: reported as it is
    with pytest.raises(CheckpointError, match="stray/latest"):
        load_model(tmp_path / "stray" / "latest")


def test_a_contrastive_resume_refuses_another_loss(tmp_path):
    """The CLIP trainer shares the check: resuming a CLIP run with --loss siglip would have kept CLIP's loss."""
    ContrastiveTrainer(tiny_config(tmp_path / "a", steps=2)).train()
    with pytest.raises(ValueError, match=r"loss='siglip' \(the run has 'clip'\) would be ignored"):
        ContrastiveTrainer(tiny_config(tmp_path / "b", steps=4, loss="siglip",
                                       resume=str(tmp_path / "a" / "checkpoints" / "step_0000002")))
    # the default (--loss model, the preset's own) is recorded as the loss it meant, and refused only when named
    siglip = tiny_config(tmp_path / "s", steps=2, loss="siglip")
    ContrastiveTrainer(siglip).train()
    again = dataclasses.replace(siglip, loss="model", out=str(tmp_path / "t"),
                                resume=str(tmp_path / "s" / "checkpoints" / "step_0000002"))
    assert ContrastiveTrainer(again).step == 2  # from Python: the default, so "not given"
    with pytest.raises(ValueError, match=r"loss='clip' \(the run has 'siglip'\) would be ignored"):
        ContrastiveTrainer(dataclasses.replace(again, loss="clip"), named=frozenset({"loss", "out", "resume"}))
    fresh = ContrastiveTrainer(tiny_config(tmp_path / "m", steps=1))
    assert fresh.cfg.loss == "clip" and json.loads((tmp_path / "m" / "train_config.json").read_text())["loss"] == "clip"


def test_a_command_line_resume_needs_only_the_run_folder(tmp_path, capsys):
    """`kizuna train --out RUN --resume latest` continues RUN with its own settings; before, every flag left
    off fell back to its default (here the synthetic world's 64-px images and a batch of 256)."""
    from kizuna.apps.cli import main

    flags = ["--model", "ViT-mu-8", "--synthetic-image-size", "32", "--synthetic-length", "512", "--batch-size",
             "16", "--steps", "4", "--save-every", "2", "--warmup-steps", "2", "--context-length", "24",
             "--workers", "0", "--threads", "1", "--progress", "false", "--eval-max-samples", "4", "--log-every", "1"]
    assert main(["train", *flags, "--steps", "2", "--out", str(tmp_path / "run")]) == 0
    capsys.readouterr()
    assert main(["train", "--out", str(tmp_path / "run"), "--resume", "latest", "--steps", "4"]) == 0
    out = capsys.readouterr().err
    assert "synthetic_image_size=32" in out and "batch_size=16" in out and "resumed from" in out
    assert [r["step"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl", "train")] == [1, 2, 3, 4]
    assert main(["train", "--out", str(tmp_path / "run"), "--resume", "latest", "--lr", "1e-4", "--print-config"]) == 0
    shown = json.loads(capsys.readouterr().out)  # what that resume would run with
    assert shown["synthetic_image_size"] == 32 and shown["steps"] == 4 and shown["lr"] == 1e-4
    assert main(["train", "--out", str(tmp_path / "run"), "--resume", "latest", "--loss", "clip",
                 "--model", "ViT-B-32"]) == 2  # named: refused, though ViT-B-32 was never the run's
    assert "model='ViT-B-32' (the run has 'ViT-mu-8')" in capsys.readouterr().err


def test_a_resume_by_path_goes_on_in_the_checkpoints_own_run_folder(tmp_path, monkeypatch, capsys):
    """Without --out, a resume went on in the saved --out, relative to wherever the run was started: a run renamed
    (or resumed from another folder) went on in, and overwrote, whatever folder that name meant now, and the
    closing line named a third folder (the default runs/train)."""
    from kizuna.apps.cli import main

    monkeypatch.chdir(tmp_path)
    flags = ["--model", "ViT-mu-8", "--synthetic-image-size", "32", "--synthetic-length", "512", "--batch-size",
             "16", "--save-every", "2", "--warmup-steps", "2", "--context-length", "24", "--workers", "0",
             "--threads", "1", "--progress", "false", "--eval-max-samples", "4", "--eval-every", "0"]
    assert main(["train", *flags, "--steps", "2", "--out", "run"]) == 0
    (tmp_path / "run").rename(tmp_path / "old")
    assert main(["train", *flags, "--steps", "2", "--seed", "7", "--out", "run"]) == 0  # another run, same name
    before = (tmp_path / "run" / "metrics.jsonl").read_text()
    capsys.readouterr()
    assert main(["train", "--resume", "old/checkpoints/latest", "--steps", "4"]) == 0
    assert "checkpoints: old/checkpoints/latest" in capsys.readouterr().err
    assert (tmp_path / "old" / "checkpoints" / "step_0000004").is_dir()
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == before  # the other run is untouched
    # nor does a --config file's `out` take a checkpoint named by path elsewhere (it went on in the config's)
    (tmp_path / "outs.py").write_text("def get_config():\n    return {'out': 'run'}\n")
    assert main(["train", "--config", "outs.py", "--resume", "old/checkpoints/latest", "--steps", "5"]) == 0
    assert (tmp_path / "old" / "checkpoints" / "step_0000005").is_dir()
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == before
    (tmp_path / "lone").mkdir()
    for f in (tmp_path / "old" / "checkpoints" / "step_0000004").iterdir():
        (tmp_path / "lone" / f.name).write_bytes(f.read_bytes())
    assert main(["train", "--resume", "lone", "--steps", "6"]) == 2  # not in a run: where to go on is asked
    assert "not in a run's checkpoints/ folder" in capsys.readouterr().err
    assert main(["train", "--out", "old", "--resume", "best"]) == 2
    assert "best/ holds the best model's weights only" in capsys.readouterr().err


def test_best_follows_every_evaluation_and_knows_which_end_is_best(tmp_path):
    """best/ was updated only where an evaluation and a checkpoint coincided (with --eval-every and no
    --save-every: always the last step), and always kept the highest value (the worst loss or rank)."""
    import warnings

    from kizuna.train.checkpointing import CheckpointManager

    tr = ContrastiveTrainer(tiny_config(tmp_path / "run", steps=4, eval_every=1, save_every=0,
                                        best_metric="probe/shape"))
    tr.train()
    shape = {r["step"]: r["probe/shape"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl", "eval")}
    best_step = max(shape, key=lambda s: (shape[s], -s))
    saved = json.loads((tmp_path / "run" / "checkpoints" / "best" / "config.json").read_text())["kizuna"]["extra"]
    assert saved["step"] == best_step and saved["metrics"]["probe/shape"] == shape[best_step]
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("step_*")) == ["step_0000004"]

    model = tr.model
    m = CheckpointManager(tmp_path / "m", metric="val_loss")
    assert m.mode == "min" and CheckpointManager(tmp_path / "m", metric="val_top1").mode == "max"
    # the share of answers a written word fooled: picked as the highest, best/ was the most fooled model
    assert CheckpointManager(tmp_path / "m", metric="probe/typographic/attack_rate").mode == "min"
    assert [m.update_best(s, model, {"val_loss": v}) for s, v in ((1, 2.0), (2, 1.0), (3, 1.5), (4, float("nan")))] \
        == [True, True, False, False]
    assert m.best_value == 1.0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert not CheckpointManager(tmp_path / "x", metric="probe/shapee").update_best(1, model, {"probe/shape": 1.0})
    assert any("'probe/shapee' is not among" in str(w.message) for w in caught)


def test_best_is_replaced_in_one_step_so_a_reader_never_finds_it_missing(tmp_path, monkeypatch):
    """best/ was moved aside, then the new one renamed in: between the two, `kizuna eval RUN/checkpoints/best` of a
    run still training failed with "no such file or folder" (in 4% of polls while best/ was rewritten)."""
    import os

    from kizuna.train import checkpointing
    from kizuna.train.checkpointing import CheckpointManager

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "x").write_text("a")
    if not checkpointing._exchange(tmp_path / "a", tmp_path / "b"):
        pytest.skip("renameat2(RENAME_EXCHANGE) is not available here")
    assert (tmp_path / "b" / "x").read_text() == "a" and not (tmp_path / "a" / "x").exists()

    model = kizuna.create_model("ViT-mu-8")
    manager = CheckpointManager(tmp_path / "run", metric="val_top1")
    assert manager.update_best(1, model, {"val_top1": 0.1})
    best, replace = tmp_path / "run" / "checkpoints" / "best", os.replace

    def replace_while_looking(a, b):
        assert best.is_dir(), "best/ was missing"
        return replace(a, b)

    monkeypatch.setattr(checkpointing.os, "replace", replace_while_looking)
    assert manager.update_best(2, model, {"val_top1": 0.2})
    assert json.loads((best / "config.json").read_text())["kizuna"]["extra"]["step"] == 2
    assert not [p.name for p in best.parent.iterdir() if p.name.startswith(".")]  # the old one is gone


def test_settings_that_would_do_nothing_or_lose_the_run_are_refused(tmp_path):
    with pytest.raises(ValueError, match="--keep-last must be >= 1"):
        tiny_config(tmp_path, keep_last=0)  # it pruned the final checkpoint and left `latest` naming nothing
    with pytest.raises(ValueError, match="--lock-image-unlocked-blocks 1 does nothing without --lock-image true"):
        tiny_config(tmp_path, lock_image_unlocked_blocks=1)
    with pytest.raises(ValueError, match="best_mode must be"):
        tiny_config(tmp_path, best_mode="lowest")
    for share in (1.5, -0.1):
        with pytest.raises(ValueError, match="--patch-dropout is the share of patches dropped"):
            tiny_config(tmp_path, patch_dropout=share)
    for flags, message in (({"betas": (0.9,)}, "--betas must be two numbers"), ({"log_every": 0}, "--log-every must be"),
                           ({"accum_steps": 0}, "--accum-steps must be"), ({"threads": -1}, "--threads must be >= 0"),
                           ({"steps": -5}, "--steps must be >= 0"), ({"lr": -1e-3}, "--lr must be >= 0"), ({"steps": 0, "epochs": 0}, "--epochs must be > 0"),
                           ({"batch_size": 0}, "--batch-size must be an integer >= 1"),
                           # a negative context length was a torch traceback from building the text tower
                           ({"context_length": -3}, "--context-length must be >= 0"),
                           ({"tokenizer_vocab_size": -1}, "--tokenizer-vocab-size must be >= 0")):
        with pytest.raises(ValueError, match=message):  # they failed deep inside, or trained nothing
            tiny_config(tmp_path, **flags)
    with pytest.raises(ValueError, match="--model-overrides .*unexpected keyword argument 'depht'"):
        ContrastiveTrainer(tiny_config(tmp_path, model_overrides={"vision": {"depht": 4}}))
    (tmp_path / "a_file").write_text("")
    with pytest.raises(ValueError, match="--out .*a_file is a file; give a folder"):
        tiny_config(tmp_path / "a_file")
    with pytest.raises(ValueError, match="--tokenizer must be model .the model's own., clip_bpe or train"):
        tiny_config(tmp_path, tokenizer="trained_bpe")
    with pytest.raises(ValueError, match="MiniLM text tower reads its own WordPiece ids"):
        tiny_config(tmp_path, tokenizer="train", text_tower="minilm")
    with pytest.raises(ValueError, match="the tokenizer has 49408 ids but the text tower embeds 1000"):
        ContrastiveTrainer(tiny_config(tmp_path, tokenizer="clip_bpe", model_overrides={"text": {"vocab_size": 1000}}))


def test_resuming_a_finished_run_changes_nothing(tmp_path, capsys):
    from kizuna.apps.common import json_safe

    final = ContrastiveTrainer(tiny_config(tmp_path / "run", steps=2)).train()
    before = (tmp_path / "run" / "metrics.jsonl").read_text()
    again = ContrastiveTrainer(tiny_config(tmp_path / "run", steps=2, resume="latest"))
    # (the run's final metrics, saved with its last checkpoint: {} left `> final.json` without them)
    assert json_safe(again.train()) == json_safe(final) and "the run is complete (2 of 2 steps)" in \
        capsys.readouterr().err
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == before


def test_a_run_stopped_by_its_time_limit_resumes_to_the_end_of_its_plan(tmp_path, monkeypatch):
    """The limit's stop was saved as the plan: the resumed run called itself complete, even with --steps."""
    from kizuna.train import budget as budget_mod

    trainers = []
    monkeypatch.setattr(budget_mod.TimeBudget, "time_is_up", lambda self, device: trainers[-1].step >= 30)
    cfg = tiny_config(tmp_path, steps=0, warmup_steps=0, time_budget_minutes=10.0, time_limit_minutes=10.0,
                      batch_size=8, log_every=100)
    trainers.append(ContrastiveTrainer(cfg))
    trainers[0].train()
    plan = read_metrics(tmp_path / "metrics.jsonl", "plan")[0]
    assert trainers[0].step == 30 < plan["total_steps"]
    monkeypatch.undo()
    resumed = ContrastiveTrainer(tiny_config(tmp_path, resume="latest"), named=frozenset({"out", "resume"}))
    assert resumed.step == 30 and resumed.total_steps == plan["total_steps"] and resumed.planned
    # another --steps (the budget's cap) plans the rest anew, up to it
    capped = ContrastiveTrainer(dataclasses.replace(resumed.cfg, steps=36), named=frozenset({"out", "resume", "steps"}))
    assert capped.total_steps == 36 and not capped.planned
    capped.train()
    assert capped.step == 36


def test_an_evaluation_at_the_plan_is_not_repeated_and_may_be_the_best(tmp_path):
    """The plan's evaluation fell on an --eval-every step: two evaluations were logged at one step, and the
    plan's never reached best/."""
    tr = ContrastiveTrainer(tiny_config(tmp_path, steps=30, warmup_steps=0, time_budget_minutes=10.0,
                                        eval_every=24, batch_size=8, log_every=100, best_metric="probe/shape"))
    tr.train()
    plan_step = read_metrics(tmp_path / "metrics.jsonl", "plan")[0]["step"]
    shape = {r["step"]: r["probe/shape"] for r in read_metrics(tmp_path / "metrics.jsonl", "eval")}
    assert plan_step == 24 and sorted(shape) == [24, 30]
    saved = json.loads((tmp_path / "checkpoints" / "best" / "config.json").read_text())["kizuna"]["extra"]
    assert saved["step"] == max(shape, key=lambda s: (shape[s], -s))


def test_a_resume_given_another_lr_and_weight_decay_uses_them(tmp_path):
    """The optimizer's saved state carried the old rate and decay; config.json showed the new ones."""
    from kizuna.train.optim import cosine_lr

    ContrastiveTrainer(tiny_config(tmp_path, steps=4, warmup_steps=2, lr=1e-3, weight_decay=0.2)).train()
    cfg = tiny_config(tmp_path, steps=8, warmup_steps=2, lr=1e-2, weight_decay=0.05, betas=(0.8, 0.9),
                      resume=str(tmp_path / "checkpoints" / "step_0000004"))
    tr = ContrastiveTrainer(cfg, named=frozenset({"out", "resume", "steps", "lr", "weight_decay", "betas"}))
    decayed, plain = tr.optimizer.param_groups
    assert decayed["weight_decay"] == 0.05 and plain["weight_decay"] == 0.0 and decayed["betas"] == (0.8, 0.9)
    assert tr.scheduler.base_lrs == [1e-2, 1e-2]
    assert decayed["lr"] == pytest.approx(1e-2 * cosine_lr(4, 8, 2))  # the schedule goes on from step 4
    tr.train()
    rows = read_metrics(tmp_path / "metrics.jsonl", "train")
    assert [r["step"] for r in rows] == list(range(1, 9))
    assert rows[4]["lr"] == pytest.approx(1e-2 * cosine_lr(4, 8, 2))  # step 5 used the new base rate
    # a resume that changes nothing keeps the saved settings (the config came from the checkpoint)
    same = ContrastiveTrainer(tiny_config(tmp_path, resume="latest"), named=frozenset({"out", "resume"}))
    assert same.optimizer.param_groups[0]["weight_decay"] == 0.05 and same.scheduler.base_lrs == [1e-2, 1e-2]


def test_a_warmup_that_fills_the_run_is_warned_about(tmp_path, capsys):
    with pytest.warns(UserWarning, match=r"the warm-up \(5 steps\) lasts the whole run \(3 steps\)"):
        ContrastiveTrainer(tiny_config(tmp_path, steps=3, warmup_steps=5)).train()


def test_a_best_checkpoint_picked_on_the_test_split_is_warned_about(tmp_path):
    import warnings

    from kizuna.train.contrastive import warn_if_best_is_picked_on_test

    for split in ("test", "val"):
        (tmp_path / "data" / split).mkdir(parents=True)
        (tmp_path / "data" / split / "000000.tar").write_bytes(b"")
    with pytest.warns(UserWarning, match="picks best/ on the test split"):
        warn_if_best_is_picked_on_test(tiny_config(tmp_path, eval_retrieval=str(tmp_path / "data"),
                                                   best_metric="retrieval/text_to_image_R@1"))
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        warn_if_best_is_picked_on_test(tiny_config(tmp_path, eval_retrieval=str(tmp_path / "data"), eval_split="val",
                                                   best_metric="retrieval/text_to_image_R@1"))
        warn_if_best_is_picked_on_test(tiny_config(tmp_path, eval_retrieval=str(tmp_path / "data")))  # no best/
    assert not said


def test_flags_a_checkpoint_given_as_model_decides_are_refused(tmp_path):
    """--model CHECKPOINT brings its own tokenizer, context length and loss: --tokenizer train or --loss
    siglip were ignored without a word."""
    tr = ContrastiveTrainer(tiny_config(tmp_path / "a", steps=1))
    tr.train()
    kizuna.save_model(tr.model, tmp_path / "start")
    for flags in ({"loss": "siglip"}, {"tokenizer": "train"}, {"context_length": 16}):
        with pytest.raises(ValueError, match=f"--{next(iter(flags)).replace('_', '-')} would be ignored"):
            ContrastiveTrainer(tiny_config(tmp_path / "b", model=str(tmp_path / "start"), **{"context_length": 0, **flags}))
    again = ContrastiveTrainer(tiny_config(tmp_path / "c", model=str(tmp_path / "start"), context_length=0, steps=1))
    assert again.model.cfg.text.context_length == tr.model.cfg.text.context_length


def test_retrieval_is_evaluated_beside_the_synthetic_probes(tmp_path, shared_dir):
    """With --data synthetic the probes ran and --eval-retrieval was skipped without a word."""
    tr = ContrastiveTrainer(tiny_config(tmp_path, steps=1, eval_retrieval=str(shared_dir / "data" / "flickr8k"),
                                        eval_split="val", eval_max_samples=8))
    metrics = tr.train()
    assert "retrieval/text_to_image_R@1" in metrics and any(k.startswith("probe/") for k in metrics)


def test_logged_losses_of_a_resumed_run_equal_the_uninterrupted_ones(tmp_path):
    """The running loss average is not checkpointed: with --log-every 3 and a checkpoint at step 2, the
    resumed run's step-3 record averaged one step where the uninterrupted one averaged three."""
    kw = dict(steps=6, log_every=3, save_every=2, keep_last=5)
    ContrastiveTrainer(tiny_config(tmp_path / "a", **kw)).train()
    ContrastiveTrainer(tiny_config(tmp_path / "b", resume=str(tmp_path / "a" / "checkpoints" / "step_0000002"),
                                   **kw)).train()
    a, b = (read_metrics(tmp_path / run / "metrics.jsonl", "train") for run in ("a", "b"))
    assert [r["step"] for r in a] == [2, 3, 4, 6]  # a record at every checkpoint too
    # b goes on from a's own log (the checkpoint's run's), so the two logs read the same
    assert [(r["step"], r["loss"]) for r in a] == [(r["step"], r["loss"]) for r in b]


def test_ctrl_c_stops_after_the_step_and_saves_a_checkpoint_to_resume(tmp_path):
    """Ctrl-C ended a run with nothing saved since its last checkpoint (with --save-every 0: nothing)."""
    import signal
    import subprocess
    import time

    out = tmp_path / "run"
    flags = ["--model", "ViT-mu-8", "--synthetic-image-size", "32", "--synthetic-length", "512", "--batch-size", "16",
             "--steps", "100000", "--warmup-steps", "2", "--context-length", "24", "--workers", "0", "--threads", "1",
             "--progress", "false", "--eval-max-samples", "4", "--log-every", "1", "--precision", "fp32"]
    proc = subprocess.Popen([sys.executable, "-m", "kizuna.apps.cli", "train", *flags, "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not (out / "metrics.jsonl").is_file():
            time.sleep(0.2)
        time.sleep(1.0)  # a few steps in
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "continue with --out" in err
    saved = sorted((out / "checkpoints").glob("step_*"))
    assert len(saved) == 1 and (saved[0] / "train_state.pt").is_file()
    step = int(saved[0].name[5:])
    resumed = ContrastiveTrainer(tiny_config(out, resume="latest", steps=step + 1))
    assert resumed.step == step


def test_a_ctrl_c_checkpoint_logs_the_steps_since_the_last_record(tmp_path):
    """The loop logs at every checkpoint, the one Ctrl-C saves too: its steps since the last record were lost
    (with --log-every 5, a stop at step 3 left no record of steps 1-3), as the window is not saved."""
    import signal

    trainer = ContrastiveTrainer(tiny_config(tmp_path, steps=10, log_every=5))
    losses, fit = [], trainer.fit_batch

    def fit_and_interrupt(batch):
        numbers = fit(batch)
        losses.append(numbers["loss"])
        if len(losses) == 3:
            signal.raise_signal(signal.SIGINT)  # handled by the loop: stop after this step
        return numbers

    trainer.fit_batch = fit_and_interrupt
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    records = read_metrics(tmp_path / "metrics.jsonl", "train")
    assert [r["step"] for r in records] == [3]
    assert records[0]["loss"] == pytest.approx(sum(losses) / 3)
    assert (tmp_path / "checkpoints" / "step_0000003" / "train_state.pt").is_file()


def test_a_refused_resume_leaves_the_runs_settings_as_they_were(tmp_path, capsys):
    """train_config.json was written before the resume's checks: a refused --model or --batch-size left it
    naming settings that never ran, and `analyze compare-runs` reported them."""
    from kizuna.apps.cli import main

    ContrastiveTrainer(tiny_config(tmp_path, steps=2)).train()
    written = (tmp_path / "train_config.json").read_text()
    base = ["train", "--out", str(tmp_path), "--resume", "latest", "--steps", "4", "--progress", "false"]
    assert main([*base, "--model", "ViT-B-32"]) == 2
    assert main([*base, "--batch-size", "8"]) == 2
    err = capsys.readouterr().err
    assert "the run's batch size is 16" in err and "sampler state" not in err
    assert (tmp_path / "train_config.json").read_text() == written


def test_a_run_of_the_other_trainer_is_named_on_resume(tmp_path, capsys):
    from kizuna.apps.cli import main

    ContrastiveTrainer(tiny_config(tmp_path / "clip", steps=1)).train()
    assert main(["vit", "train", "--out", str(tmp_path / "clip"), "--resume", "latest"]) == 2
    err = capsys.readouterr().err
    assert "a checkpoint of `kizuna train`" in err and "resume it with `kizuna train`" in err
    assert main(["train", "--config", "vit_cifar10", "--steps", "1", "--out", str(tmp_path / "x")]) == 2
    assert "they are `kizuna vit train` options" in capsys.readouterr().err


def test_cli_type_errors_name_the_flag_and_the_version_is_shown(tmp_path, capsys):
    from kizuna.apps.cli import main

    with pytest.raises(SystemExit):
        main(["train", "--steps", "abc"])
    assert "argument --steps: expected a whole number, got 'abc'" in capsys.readouterr().err  # was "invalid <lambda>"
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.startswith("kizuna ")
    flags = ["--model", "ViT-mu-8", "--synthetic-image-size", "32", "--synthetic-length", "64", "--batch-size", "16",
             "--steps", "1", "--warmup-steps", "0", "--context-length", "24", "--workers", "0", "--threads", "1",
             "--progress", "false", "--eval-max-samples", "4", "--out", str(tmp_path / "run")]
    assert main(["train", *flags]) == 0
    assert f"checkpoints: {tmp_path / 'run'}/checkpoints/latest" in capsys.readouterr().err


def test_a_resumed_budgeted_run_goes_on_at_the_rate_its_schedule_reached(tmp_path, clock):
    """The rate after a resume was set before the run's planned length was restored: with the open length
    of a budget the first step after the resume went at the peak rate (1e-3 where the schedule had 3e-4).
    Each step takes 0.1 s of the budget's clock (timed on the real one, a loaded machine planned fewer than 30)."""
    kw = dict(steps=0, time_budget_minutes=0.1, warmup_steps=2, save_every=30, keep_last=10, eval_every=0)
    trainer = ContrastiveTrainer(tiny_config(tmp_path / "a", **kw))
    fit = trainer.fit_batch

    def fit_in_a_tenth_of_a_second(batch):
        clock.now += 0.1
        return fit(batch)

    trainer.fit_batch = fit_in_a_tenth_of_a_second
    trainer.train()
    records = read_metrics(tmp_path / "a" / "metrics.jsonl")
    plan = next(r for r in records if r["kind"] == "plan")
    lr = {r["step"]: r["lr"] for r in records if r["kind"] == "train"}
    assert plan["step"] < 30 < max(lr), "the run must plan before its checkpoint at step 30 and go on after it"
    resumed = ContrastiveTrainer(tiny_config(tmp_path / "b", resume=str(tmp_path / "a" / "checkpoints" / "step_0000030"),
                                             **kw))
    assert resumed.planned and resumed.step == 30
    assert lr[31] < 0.999e-3  # past the warm-up and into the cosine: not the peak
    assert resumed.optimizer.param_groups[0]["lr"] == pytest.approx(lr[31], rel=1e-6)


def test_ctrl_c_at_an_evaluation_step_keeps_the_evaluation_and_at_the_last_step_finishes(tmp_path):
    """The stop came before the step's evaluation and checkpoint: an evaluation at that step was lost for
    good, and at the last step the run's end (evaluation, OUT/model of a ViT run, best/) never came, nor
    could a resume bring it (the run was complete)."""
    import signal

    for stop_at, out in ((4, tmp_path / "mid"), (6, tmp_path / "last")):
        trainer = ContrastiveTrainer(tiny_config(out, steps=6, eval_every=2, log_every=1))
        fit, seen = trainer.fit_batch, []

        def fit_and_interrupt(batch, fit=fit, seen=seen, stop_at=stop_at):
            seen.append(1)
            if len(seen) == stop_at:
                signal.raise_signal(signal.SIGINT)
            return fit(batch)

        trainer.fit_batch = fit_and_interrupt
        if stop_at < 6:
            with pytest.raises(KeyboardInterrupt):
                trainer.train()
        else:
            trainer.train()  # the last step: the run simply ends
        evals = [r["step"] for r in read_metrics(out / "metrics.jsonl", "eval")]
        assert evals == [2, 4] if stop_at == 4 else evals == [2, 4, 6]
        assert (out / "checkpoints" / f"step_{stop_at:07d}").is_dir()


def test_the_stop_handler_does_nothing_in_a_loader_worker_and_the_hint_is_the_callers(tmp_path, capsys):
    """Workers forked in the loop inherit the handler (each printed the stop message); `kizuna demo` was told
    to continue with a --resume it does not have."""
    import signal
    from types import SimpleNamespace

    from kizuna.train.trainer import StopOnInterrupt, stop_and_save

    with StopOnInterrupt() as stop:
        stop._pid = -1  # as in a forked worker
        stop._handle(signal.SIGINT, None)
        assert not stop.requested
    trainer = SimpleNamespace(save=lambda metrics: None, logger=SimpleNamespace(close=lambda: None), step=3,
                              ckpt=SimpleNamespace(dir=tmp_path), cfg=SimpleNamespace(out="runs/x"),
                              resume_command="`kizuna train --out runs/x --resume latest`")
    with pytest.raises(KeyboardInterrupt):
        stop_and_save(trainer)
    assert "continue with `kizuna train --out runs/x" in capsys.readouterr().err


def test_a_finished_run_draws_its_curves(tmp_path):
    """metrics.jsonl only (and TensorBoard): no picture of the run unless a user drew one."""
    from PIL import Image

    ContrastiveTrainer(tiny_config(tmp_path, steps=4, eval_every=2)).train()
    with Image.open(tmp_path / "curves.png") as im:
        assert im.width > 600 and im.height > 200
    from kizuna.train.report import plot_curves

    assert plot_curves(tmp_path / "nothing") is None


def test_the_curves_draw_every_share_and_nothing_else_on_the_share_axis(tmp_path, monkeypatch):
    """Keys were picked by value: one skipped image (1), a loss under 1 or a median rank of 1 were drawn as
    accuracies; and only the first ten shares were drawn (the demo's probe/unseen_combos was the 15th)."""
    from kizuna.train import report

    rows = [{"kind": "train", "step": s, "loss": 1.0} for s in (1, 2)]
    shares = {f"probe/p{k:02d}": 0.5 for k in range(12)} | {"probe/unseen_combos": 0.9, "val_top1": 0.4}
    rows += [{"kind": "eval", "step": 2, **shares, "val_skipped": 1, "val_loss": 0.7,
              "retrieval/image_to_text_median_rank": 1.0}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    figures = []
    monkeypatch.setattr(report, "_figure", lambda *a, _f=report._figure, **k: figures.append(_f(*a, **k)) or figures[-1])
    report.plot_curves(tmp_path)
    drawn = {line.get_label() for line in figures[0].axes[1].get_lines()}
    assert drawn == set(shares)


def test_a_ctrl_c_during_an_evaluation_logs_the_window_before_stopping(tmp_path):
    import signal

    trainer = ContrastiveTrainer(tiny_config(tmp_path, steps=8, log_every=5, eval_every=4))
    evaluate = trainer.evaluate

    def evaluate_and_interrupt():
        signal.raise_signal(signal.SIGINT)
        return evaluate()

    trainer.evaluate = evaluate_and_interrupt
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl", "train")] == [4]


def test_a_resume_refuses_another_lock_by_its_flag(tmp_path, capsys):
    """Which parameters train shapes the optimizer's state (its groups hold only those): a resume with
    --lock-image or --lock-text, or other unlocked-block counts, failed on torch's "loaded state dict contains
    a parameter group that doesn't match the size of optimizer's group", which named no flag."""
    from kizuna.apps.cli import main

    ContrastiveTrainer(tiny_config(tmp_path, steps=2, lock_text=True, lock_text_unlocked_blocks=1)).train()
    base = ["train", "--out", str(tmp_path), "--resume", "latest", "--steps", "4"]
    for flags, said in ((["--lock-image"], "--lock-image true (the run has false)"),
                        (["--lock-text", "true", "--lock-text-unlocked-blocks", "2"], "--lock-text-unlocked-blocks 2 (the run has 1)"),
                        (["--lock-text", "false", "--lock-text-unlocked-blocks", "0"], "--lock-text false (the run has true)")):
        assert main([*base, *flags]) == 2, flags
        err = capsys.readouterr().err
        assert said in err and "cannot continue it" in err and "doesn't match" not in err, err
    assert main([*base, "--lock-text", "true"]) == 0  # the run's own lock: fine


def test_evaluation_data_that_does_not_resolve_is_refused_before_training(tmp_path, shared_dir):
    """A typo in --eval-retrieval / --eval-zeroshot, or an --eval-split the folder lacks, was found at the
    run's first evaluation (its end, by default), before the final checkpoint: the whole run was lost."""
    flickr = shared_dir / "data" / "flickr8k"
    for flags, said in (({"eval_retrieval": str(tmp_path / "flickr8kk")}, r"--eval-retrieval .*flickr8kk: .*not found"),
                        ({"eval_zeroshot": str(tmp_path / "nope")}, r"--eval-zeroshot .*nope: "),
                        ({"eval_retrieval": str(flickr), "eval_split": "vall"}, r"--eval-split vall: .*no split 'vall'")):
        with pytest.raises(ValueError, match=said):
            ContrastiveTrainer(tiny_config(tmp_path / "run", steps=2, **flags))
        assert not (tmp_path / "run" / "metrics.jsonl").exists()  # refused before anything was written


def test_a_failed_evaluation_saves_the_step_first(tmp_path):
    """With --save-every 0 the only checkpoint is the final one, written after the final evaluation: an
    evaluation that failed there lost the whole run."""
    for steps, fail_at, out in ((3, 3, tmp_path / "end"), (4, 2, tmp_path / "mid")):
        trainer = ContrastiveTrainer(tiny_config(out, steps=steps, eval_every=2, save_every=0))

        def broken(trainer=trainer, fail_at=fail_at):
            if trainer.step == fail_at:
                raise RuntimeError("the evaluation data went away")
            return {}

        trainer.evaluate = broken
        with pytest.raises(RuntimeError, match="went away"):
            trainer.train()
        saved = sorted(p.name for p in (out / "checkpoints").glob("step_*"))
        assert saved == [f"step_{fail_at:07d}"], saved
    resumed = ContrastiveTrainer(tiny_config(tmp_path / "mid", steps=4, eval_every=2, resume="latest"))
    assert resumed.step == 2


def test_a_resume_with_another_best_metric_starts_best_afresh(tmp_path, capsys):
    """The best value was restored whatever metric it was measured by: resumed with --best-metric probe/shape,
    best/ compared shape accuracies against the best colour accuracy (or, with --best-mode min, a minimum
    against a maximum) and could keep the old metric's model for good."""
    ContrastiveTrainer(tiny_config(tmp_path, steps=2, eval_every=1, best_metric="probe/colour")).train()
    colour = max(r["probe/colour"] for r in read_metrics(tmp_path / "metrics.jsonl", "eval"))
    capsys.readouterr()

    def resumed(**kw):
        return ContrastiveTrainer(tiny_config(tmp_path, steps=4, eval_every=1, resume="latest", **kw))

    assert resumed(best_metric="probe/colour").ckpt.best_value == colour  # the same metric: its best goes on
    assert "best/ starts afresh" not in capsys.readouterr().err
    for kw, said in (({"best_metric": "probe/shape"}, "by the max of probe/colour, this resume by the max of probe/shape"),
                     ({"best_metric": "probe/colour", "best_mode": "min"}, "this resume by the min of probe/colour")):
        trainer = resumed(**kw)
        assert trainer.ckpt.best_value is None
        assert said in capsys.readouterr().err
    trainer.train()  # best/ is now the lowest colour accuracy since the resume
    best = json.loads((tmp_path / "checkpoints" / "best" / "config.json").read_text())["kizuna"]["extra"]
    since = [r for r in read_metrics(tmp_path / "metrics.jsonl", "eval") if r["step"] > 2]
    assert best["best_mode"] == "min" and best["metrics"]["probe/colour"] == min(r["probe/colour"] for r in since)


def test_a_checkpoint_saved_without_its_best_metric_is_read_by_its_run_flags(tmp_path, capsys):
    """Checkpoints from before the metric was saved beside the best value: taken as measured by the resume's
    metric, best/ kept the colour maximum against shape accuracies. Their train_config names the metric."""
    ContrastiveTrainer(tiny_config(tmp_path, steps=2, eval_every=1, best_metric="probe/colour")).train()
    state_file = tmp_path / "checkpoints" / "step_0000002" / "train_state.pt"
    state = torch.load(state_file, weights_only=False)
    del state["best_metric"], state["best_mode"]  # as written before 2026-12-05
    torch.save(state, state_file)
    capsys.readouterr()
    trainer = ContrastiveTrainer(tiny_config(tmp_path, steps=4, eval_every=1, resume="latest", best_metric="probe/shape"))
    assert trainer.ckpt.best_value is None
    assert "by the max of probe/colour, this resume by the max of probe/shape" in capsys.readouterr().err


def test_a_ctrl_c_at_an_epochs_last_step_keeps_its_skip_report(tmp_path):
    """A finished epoch's skips are left out of the checkpoint, to be reported right after it; a Ctrl-C at the
    epoch's last step stopped the run first, and the resume (at the next epoch) never reported them."""
    import signal

    import _shards

    members = _shards.pair_members([f"{i:04d}" for i in range(20)], captions=[f"a photo number {i}" for i in range(20)])
    members = [(n, b"not a jpeg" if n in ("0005.jpg", "0009.jpg", "0013.jpg") else b) for n, b in members]
    shard = _shards.write_tar(tmp_path / "data" / "000000.tar", members)
    kw = dict(data=str(shard), batch_size=4, steps=10, model_overrides={"vision": {"image_size": 32}})
    trainer = ContrastiveTrainer(tiny_config(tmp_path / "run", **kw))  # 5 steps an epoch
    fit = trainer.fit_batch

    def fit_and_interrupt(batch):
        if trainer.step == 4:  # the step that ends epoch 0
            signal.raise_signal(signal.SIGINT)
        return fit(batch)

    trainer.fit_batch = fit_and_interrupt
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    ContrastiveTrainer(tiny_config(tmp_path / "run", resume="latest", **kw)).train()
    reports = [(r["step"], r["skipped/corrupt_image"]) for r in read_metrics(tmp_path / "run" / "metrics.jsonl", "data")
               if "skipped" in r]
    assert reports == [(5, 3), (10, 3)]  # each epoch once


def test_a_resume_of_a_finished_run_leaves_its_files_as_they_are(tmp_path, capsys):
    """It said the run was complete and trained nothing, but rewrote train_config.json with the resume's flags
    (--lr 5e-3 for a run trained at 1e-3) and added a second TensorBoard events file."""
    from kizuna.apps.cli import main
    from kizuna.train.checkpointing import RUN_LOCK

    ContrastiveTrainer(tiny_config(tmp_path, steps=2)).train()

    def files():  # the run's own files (the folder's lock names whichever process runs in it)
        return {p.relative_to(tmp_path): (p.read_bytes(), p.stat().st_mtime_ns) for p in tmp_path.rglob("*")
                if p.is_file() and p.name != RUN_LOCK}

    before = files()
    capsys.readouterr()
    assert main(["train", "--out", str(tmp_path), "--resume", "latest", "--lr", "5e-3", "--progress", "false"]) == 0
    assert "the run is complete (2 of 2 steps)" in capsys.readouterr().err
    assert files() == before
    assert json.loads((tmp_path / "train_config.json").read_text())["lr"] == 1e-3


def test_a_resume_the_data_position_cannot_follow_names_the_flag(tmp_path, capsys):
    """The sampler refused in its own terms ("sampler state does not match this sampler (saved, current):
    seed=0/1", or "batch_size=16/8, world_size=1/2" on two processes), which named no flag."""
    from kizuna.apps.cli import main
    from kizuna.train.checkpointing import read_train_state

    ContrastiveTrainer(tiny_config(tmp_path, steps=2)).train()
    base = ["train", "--out", str(tmp_path), "--resume", "latest", "--steps", "4"]
    for flags, said in ((["--seed", "1"], ["--seed 1 (the run has 0) cannot continue it"]),
                        (["--synthetic-length", "256"], ["the run's training set has 512 samples and this one 256",
                                                         "Drop --synthetic-length (the run's own are used)"]),
                        (["--resampled"], ["--resampled true (the run has false)"])):
        assert main([*base, *flags]) == 2, flags
        err = capsys.readouterr().err
        assert all(s in err for s in said) and "sampler state" not in err, err
    # a run of two processes resumed by one (its rank 0's data position, as torchrun's would be saved)
    path = tmp_path / "checkpoints" / "step_0000002" / "train_state.pt"
    state = read_train_state(path.parent)
    state["data"].update(world_size=2, batch_size=8)
    torch.save(state, path)
    assert main(base) == 2
    err = capsys.readouterr().err
    assert "trained by 2 processes and this one has 1" in err and "torchrun --nproc_per_node 2" in err, err


def test_a_second_run_into_the_same_folder_is_refused_while_the_first_lasts(tmp_path):
    """The same command started twice: the second moved the first's checkpoints to checkpoints.prev while the
    first went on writing into the folder. A killed run's lock goes with its process."""
    import subprocess
    import sys

    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pathlib import Path; "
                               "from kizuna.train.checkpointing import hold_run_lock; "
                               "lock = hold_run_lock(Path(sys.argv[1])); print('held', flush=True); time.sleep(60)",
                               str(tmp_path / "run")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ValueError, match=rf"--out .*run: another kizuna run \(pid {holder.pid}\) is writing there"):
            ContrastiveTrainer(tiny_config(tmp_path / "run", steps=1))
    finally:
        holder.kill()
        holder.wait()
    trainer = ContrastiveTrainer(tiny_config(tmp_path / "run", steps=1))
    trainer.train()
    assert trainer.step == 1
    # the folder is free once train() returns (a notebook's trainer object lives on), for another process too
    free = subprocess.run([sys.executable, "-c", "import sys; from pathlib import Path; "
                           "from kizuna.train.checkpointing import hold_run_lock; hold_run_lock(Path(sys.argv[1]))",
                           str(tmp_path / "run")], capture_output=True, text=True)
    assert free.returncode == 0, free.stderr


def test_a_resume_holds_the_folder_before_it_chooses_its_checkpoint(tmp_path, monkeypatch):
    """The lock came after the checkpoint was chosen and loaded: a resume started beside a run still writing chose
    a step that run's pruning deleted ("no such file", then "damaged... start the run again"), or a stale one that
    it trained again over the finished run's."""
    from kizuna.train.checkpointing import _HELD_LOCKS, CheckpointManager

    ContrastiveTrainer(tiny_config(tmp_path / "run", steps=2, warmup_steps=1)).train()
    held_when_chosen, resolve = [], CheckpointManager.resolve

    def resolve_and_look(self, spec):
        held_when_chosen.append((tmp_path / "run").resolve() in _HELD_LOCKS)
        return resolve(self, spec)

    monkeypatch.setattr(CheckpointManager, "resolve", resolve_and_look)
    trainer = ContrastiveTrainer(tiny_config(tmp_path / "run", steps=3, warmup_steps=1, resume="latest"))
    assert held_when_chosen and all(held_when_chosen)
    trainer.train()
    assert trainer.step == 3 and (tmp_path / "run").resolve() not in _HELD_LOCKS


@pytest.mark.slow  # ~13 s: a demo with a probe in a child process; `make test-slow` (default suite < 10 min)
def test_the_demo_holds_its_folder_until_its_report_is_written(tmp_path, monkeypatch):
    """train() lets go of OUT, and the demo wrote its report seconds later: a run started in between set the demo
    aside, and the demo's REPORT.md described that run (its log, its throughput)."""
    import subprocess

    from kizuna.apps.cli import main
    from kizuna.train import evaluation

    probe = evaluation.synthetic_probe_metrics
    others = []

    def probe_while_another_tries(model, tokenizer, n_per_task, **kwargs):
        tried = subprocess.run([sys.executable, "-c", "import sys; from pathlib import Path; "
                                "from kizuna.train.checkpointing import hold_run_lock; hold_run_lock(Path(sys.argv[1]))",
                                str(tmp_path / "demo")], capture_output=True, text=True)
        others.append(tried.returncode != 0 and "another kizuna run" in tried.stderr)
        return probe(model, tokenizer, n_per_task=n_per_task, **kwargs)

    monkeypatch.setattr(evaluation, "synthetic_probe_metrics", probe_while_another_tries)
    assert main(["demo", "--out", str(tmp_path / "demo"), "--steps", "2", "--probe-size", "8", "--threads", "1",
                 "--progress", "false"]) == 0
    assert others[-1] and all(others) and (tmp_path / "demo" / "REPORT.md").is_file()  # the last: after train()


def test_a_resume_under_auto_says_when_auto_means_another_precision_here(tmp_path, capsys):
    """--precision auto was fp32 on every CPU in older kizuna and is bf16 on CPUs with bf16 hardware now; a run
    resumed here switched precision mid-run without a word (only train_config.json's last value said bf16)."""
    from kizuna.train.checkpointing import read_train_state

    ContrastiveTrainer(tiny_config(tmp_path, steps=2, warmup_steps=1, precision="fp32")).train()
    path = tmp_path / "checkpoints" / "step_0000002" / "train_state.pt"
    assert read_train_state(path.parent)["precision_used"] == "fp32"
    here = resolve_precision("auto", torch.device("cpu"))
    other = "fp32" if here == "bf16" else "bf16"
    state = read_train_state(path.parent)
    torch.save({**state, "precision_used": other}, path)
    capsys.readouterr()
    ContrastiveTrainer(tiny_config(tmp_path, steps=3, warmup_steps=1, precision="auto", resume="latest")).train()
    assert (f"the run trained in {other} to step 2, and --precision auto means {here} here; pass --precision "
            f"{other} to continue it as it trained") in capsys.readouterr().err


def test_a_run_that_fails_to_start_leaves_no_folder(tmp_path):
    """The lock was taken before the data was read: a typo in --data left OUT with only the lock file in it."""
    with pytest.raises(FileNotFoundError, match="--data"):
        ContrastiveTrainer(tiny_config(tmp_path / "new", data=str(tmp_path / "nowhere")))
    assert not (tmp_path / "new").exists()


def test_two_trainers_of_one_process_share_the_folders_lock(tmp_path):
    """POSIX locks belong to the process and closing any handle drops them: a first trainer collected while a
    second one (a resume, in a notebook) ran would have freed the folder to other processes."""
    import gc

    from kizuna.train.checkpointing import _HELD_LOCKS

    first = ContrastiveTrainer(tiny_config(tmp_path, steps=2))
    second = ContrastiveTrainer(tiny_config(tmp_path, steps=2))
    key = (tmp_path).resolve()
    assert _HELD_LOCKS[key][1] == 2
    del first  # never trained: let go when collected
    gc.collect()
    assert _HELD_LOCKS[key][1] == 1
    second.train()
    assert key not in _HELD_LOCKS


def _shard_with_a_corrupt_image(tmp_path, n=20):
    import _shards

    members = _shards.pair_members([f"{i:04d}" for i in range(n)], captions=[f"a photo number {i}" for i in range(n)])
    members = [(m, b"not a jpeg" if m == "0005.jpg" else b) for m, b in members]
    return _shards.write_tar(tmp_path / "data" / "000000.tar", members)


def test_a_resume_before_an_epochs_unusable_tail_goes_on(tmp_path, monkeypatch):
    """Resumed one batch before the end of an epoch whose last batch is unusable, the run was refused ("a whole
    epoch gave no usable sample"): the resumed part had batches and no step, though the epoch trained."""
    from kizuna.data.loader import trim_batch
    from kizuna.train import trainer as trainer_module

    shard = _shard_with_a_corrupt_image(tmp_path)
    kw = dict(data=str(shard), batch_size=4, steps=0, epochs=2, save_every=1, keep_last=100,
              model_overrides={"vision": {"image_size": 32}})
    ContrastiveTrainer(tiny_config(tmp_path / "run", **kw)).train()
    real, calls = trainer_module.even_batch, []

    def unusable_first(batch, *args):  # the resumed epoch's one batch left: every sample skipped
        out = real(batch, *args)
        calls.append(1)
        return trim_batch(out, 0) if len(calls) == 1 else out

    monkeypatch.setattr(trainer_module, "even_batch", unusable_first)
    again = ContrastiveTrainer(tiny_config(tmp_path / "run", resume=str(tmp_path / "run" / "checkpoints" /
                                                                      "step_0000004"), **kw))
    again.train()
    assert again.step == again.total_steps == 10  # epoch 0's last batch gave no step, so the run's 10th is epoch 2's
    assert again.epoch == 2


def test_an_epochs_skip_report_is_logged_before_its_checkpoint(tmp_path, monkeypatch):
    """The epoch's report came after its checkpoint, which leaves a finished epoch's skips out: a run killed between
    the two lost the report for good (its resume had nothing to report)."""
    shard = _shard_with_a_corrupt_image(tmp_path)
    kw = dict(data=str(shard), batch_size=4, steps=0, epochs=2, save_every=5,
              model_overrides={"vision": {"image_size": 32}})
    tr = ContrastiveTrainer(tiny_config(tmp_path / "run", **kw))
    real_save = tr.save

    def save_then_die(*args, **kwargs):
        real_save(*args, **kwargs)
        raise SystemExit("killed right after the checkpoint")

    monkeypatch.setattr(tr, "save", save_then_die)
    with pytest.raises(SystemExit):
        tr.train()
    assert tr.step == 5  # the epoch's last step (20 samples, one corrupt: 5 batches, all with a sample)
    monkeypatch.undo()
    ContrastiveTrainer(tiny_config(tmp_path / "run", resume="latest", **kw)).train()
    reports = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl", "data") if "skipped/corrupt_image" in r]
    assert [r["step"] for r in reports] == [5, 10]  # each epoch's corrupt image, once


def test_a_resume_from_another_runs_checkpoint_goes_on_from_that_runs_log(tmp_path):
    """The recovery from a mistaken fresh run (--resume OUT/checkpoints.prev/step_N) appended the first run's
    continuation to the mistaken run's log; --out X --resume OTHER/... appended it to X's run's, left X's
    checkpoints for --resume latest to pick, and a retried recovery copied the wrong set-aside log. Such a
    resume goes into a folder that holds no run, and its log goes on from the checkpoint's run's."""
    kw = dict(steps=4, save_every=2, keep_last=10, eval_every=0)
    ContrastiveTrainer(tiny_config(tmp_path / "run", lr=1e-3, **kw)).train()
    first = read_metrics(tmp_path / "run" / "metrics.jsonl", "train")
    ContrastiveTrainer(tiny_config(tmp_path / "run", lr=5e-3, **{**kw, "steps": 2})).train()  # a fresh run by mistake
    prev = tmp_path / "run" / "checkpoints.prev" / "step_0000002"
    (tmp_path / "aside").mkdir()  # a folder whose run was set aside and nothing saved since
    (tmp_path / "aside" / "checkpoints.prev").symlink_to(prev.parent)
    with pytest.raises(FileNotFoundError, match=r"continue one of them in a new folder, --out NEW --resume "):
        ContrastiveTrainer(tiny_config(tmp_path / "aside", resume="latest", **kw))
    with pytest.raises(ValueError, match=r"is in --out itself; continue it in a new folder"):
        ContrastiveTrainer(tiny_config(tmp_path / "run", lr=1e-3, resume=str(prev), **kw))
    ContrastiveTrainer(tiny_config(tmp_path / "rec", lr=1e-3, resume=str(prev), **kw)).train()
    rows = read_metrics(tmp_path / "rec" / "metrics.jsonl", "train")
    assert [r["step"] for r in rows] == [1, 2, 3, 4] and rows[:2] == first[:2]  # the first run's own records
    ContrastiveTrainer(tiny_config(tmp_path / "x", lr=5e-3, **kw)).train()  # an unrelated run in X
    with pytest.raises(ValueError, match=r"holds another run's checkpoints; .* or go on with the run in --out with "
                                         r"--resume latest"):
        ContrastiveTrainer(tiny_config(tmp_path / "x", resume=str(tmp_path / "rec" / "checkpoints" / "step_0000004"),
                                       **{**kw, "steps": 6}))
    (tmp_path / "y").mkdir()
    (tmp_path / "y" / "metrics.jsonl").write_text('{"kind": "train", "step": 1, "loss": 9.0}\n')  # a crashed try
    ContrastiveTrainer(tiny_config(tmp_path / "y", lr=1e-3, resume=str(tmp_path / "rec" / "checkpoints" /
                                                                      "step_0000004"), **{**kw, "steps": 6})).train()
    rows = read_metrics(tmp_path / "y" / "metrics.jsonl", "train")
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6] and rows[:2] == first[:2]
    assert read_metrics(tmp_path / "y" / "metrics.jsonl.prev", "train")[0]["loss"] == 9.0  # set aside, not mixed in


def test_sigterm_stops_after_the_step_and_saves_as_ctrl_c_does(tmp_path, capsys):
    """A cluster scheduler's SIGTERM (before its SIGKILL) ended a run with nothing saved since its last checkpoint:
    with the default --save-every 0, the whole run. The run then raises Terminated, as SIGTERM does outside the
    loop, not KeyboardInterrupt: the command line exited with Ctrl-C's 130, and a caller's `except Terminated`
    (a requeue on preemption) never ran."""
    import signal

    from kizuna.apps.cli import Terminated

    trainer = ContrastiveTrainer(tiny_config(tmp_path, steps=10))
    fit, steps = trainer.fit_batch, []

    def fit_and_terminate(batch):
        steps.append(1)
        if len(steps) == 2:
            signal.raise_signal(signal.SIGTERM)
        return fit(batch)

    trainer.fit_batch = fit_and_terminate
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Terminated):
        trainer.train()
    assert "SIGTERM: stopping after this step and saving a checkpoint" in capsys.readouterr().err
    assert (tmp_path / "checkpoints" / "step_0000002" / "train_state.pt").is_file() and len(steps) == 2
    assert signal.getsignal(signal.SIGTERM) == before  # the handler is the process's own again


GROUP_SIGTERM_RUN = """
import os, signal, subprocess, sys
sys.path.insert(0, {tests!r})
from _tiny import tiny_config
from kizuna.train.contrastive import ContrastiveTrainer

trainer = ContrastiveTrainer(tiny_config({out!r}, steps=50, workers=1))
fit, steps = trainer.fit_batch, []

def fit_and_signal_the_group(batch):
    steps.append(1)
    if len(steps) == 2:  # another process (a scheduler's) signals the group: this process and its loader worker
        code = f"import os, signal; os.killpg({{os.getpgid(0)}}, signal.SIGTERM)"
        subprocess.run([sys.executable, "-c", code], start_new_session=True, check=True)
    return fit(batch)

trainer.fit_batch = fit_and_signal_the_group
trainer.train()  # (a user's script: no handler of its own; Terminated ends it with 143, as SIGTERM would)
"""


def test_a_sigterm_to_the_process_group_with_loader_workers_still_saves(tmp_path):
    """Slurm and Kubernetes send SIGTERM to every process of the job: torch's loader workers died at once (they
    exit on a SIGTERM from anyone but their parent), and the main process stopped mid-step on "DataLoader worker
    is killed by signal", saving nothing since its last checkpoint."""
    import subprocess

    code = GROUP_SIGTERM_RUN.format(tests=str(Path(__file__).parent), out=str(tmp_path / "run"))
    done = subprocess.run([sys.executable, "-c", code], start_new_session=True, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 143, done.stderr[-2000:]
    assert "SIGTERM: stopping after this step" in done.stderr and "killed by signal" not in done.stderr
    assert "Traceback" not in done.stderr
    assert (tmp_path / "run" / "checkpoints" / "step_0000002" / "train_state.pt").is_file()


def test_train_gives_the_callers_torch_rng_back(tmp_path):
    """A trainer reseeds torch's global RNG with cfg.seed and left it so: after train(), a notebook's next
    `torch.rand` was the same whatever it had seeded or drawn before (a random search around train() tried one
    "random" learning rate again and again). The run's own numbers still come from cfg.seed alone."""
    torch.manual_seed(123)
    expected = torch.rand(3)
    for caller_seed in (123, 999):
        torch.manual_seed(caller_seed)
        before = torch.random.get_rng_state()
        ContrastiveTrainer(tiny_config(tmp_path / str(caller_seed), steps=2)).train()
        assert torch.equal(torch.random.get_rng_state(), before)
    torch.manual_seed(123)
    ContrastiveTrainer(tiny_config(tmp_path / "again", steps=2)).train()
    assert torch.equal(torch.rand(3), expected)
    losses = [[row["loss"] for row in read_metrics(tmp_path / seed / "metrics.jsonl", "train")] for seed in ("123", "999")]
    assert len(losses[0]) == 2 and losses[0] == losses[1]  # the caller's seed changes nothing
    torch.manual_seed(7)
    before = torch.random.get_rng_state()
    with pytest.raises(FileNotFoundError):  # a construction that fails (after the seeding) gives it back too
        ContrastiveTrainer(tiny_config(tmp_path / "bad", steps=2, data=str(tmp_path / "nosuch")))
    assert torch.equal(torch.random.get_rng_state(), before)


def test_train_from_python_leaves_no_workers_and_the_callers_thread_count(tmp_path):
    """A notebook's train() kept its loader's persistent worker processes alive until the trainer was collected,
    and torch's thread count at the run's --threads."""
    import multiprocessing

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        trainer = ContrastiveTrainer(tiny_config(tmp_path, steps=2, warmup_steps=1, workers=1, threads=1))
        assert torch.get_num_threads() == 2  # the caller's until train() (the run's in it: test_library_findings_s53)
        trainer.train()
        assert torch.get_num_threads() == 2
        assert multiprocessing.active_children() == []  # the worker is gone, the trainer still referenced
        assert trainer.loader.dataloader._iterator is None
    finally:
        torch.set_num_threads(before)


def test_a_batch_of_one_with_the_softmax_loss_is_refused(tmp_path):
    """Softmax over one pair is 0 at every step (no gradient): the run trained nothing without a word."""
    with pytest.raises(ValueError, match="--batch-size 1 with the CLIP .*loss is 0 at every step"):
        ContrastiveTrainer(tiny_config(tmp_path / "a", batch_size=1, steps=1))
    # nor does the sigmoid loss learn anything from one pair (no negatives: every embedding collapses to one)
    with pytest.raises(ValueError, match="--batch-size 1 with the SigLIP loss"):
        ContrastiveTrainer(tiny_config(tmp_path / "b", batch_size=1, steps=1, loss="siglip"))


def test_a_side_car_dataset_root_is_not_trained_on_with_its_test_split(tmp_path, capsys):
    """A folder is read recursively: `--data ROOT` of side-car files trained on ROOT/test too (a tar root is
    refused: its shards are in the split folders). Refused, naming the split to pass; the run says its count."""
    import io

    from PIL import Image

    for split in ("train", "test"):
        (tmp_path / "d" / split).mkdir(parents=True)
        for i in range(16):
            buf = io.BytesIO()
            Image.new("RGB", (32, 32), (i * 10, 0, 0)).save(buf, format="PNG")
            (tmp_path / "d" / split / f"{i}.png").write_bytes(buf.getvalue())
            (tmp_path / "d" / split / f"{i}.txt").write_text(f"a red square {i}")
    with pytest.raises(ValueError, match=r"dataset root with split folders \(test, train\): it would train on test"):
        ContrastiveTrainer(tiny_config(tmp_path / "a", data=str(tmp_path / "d"), steps=1))
    ContrastiveTrainer(tiny_config(tmp_path / "b", data=str(tmp_path / "d" / "train"), steps=1))
    assert "data: 16 usable samples" in capsys.readouterr().err


def test_a_one_class_zero_shot_set_is_refused_before_training(tmp_path):
    """Zero-shot over one class is refused by the evaluation: a run with it trained to its end and then failed
    (review)."""
    import io

    from PIL import Image

    (tmp_path / "one" / "test" / "cat").mkdir(parents=True)
    buf = io.BytesIO()
    Image.new("RGB", (32, 32)).save(buf, format="PNG")
    (tmp_path / "one" / "test" / "cat" / "a.png").write_bytes(buf.getvalue())
    with pytest.raises(ValueError, match="--eval-zeroshot .*1 class \\(cat\\): zero-shot needs at least two"):
        ContrastiveTrainer(tiny_config(tmp_path / "run", steps=1, eval_zeroshot=str(tmp_path / "one")))


def test_a_failed_resume_does_not_keep_the_folder_locked_while_its_traceback_lives(tmp_path):
    """The resume takes the lock before choosing its checkpoint; a resume that then failed (a misspelt step) kept it
    until the half-built trainer was collected, and a notebook keeps the failed cell's traceback: every other
    process was refused the folder."""
    import subprocess

    ContrastiveTrainer(tiny_config(tmp_path, steps=2, warmup_steps=1)).train()
    try:
        ContrastiveTrainer(tiny_config(tmp_path, steps=3, warmup_steps=1, resume="step_0000099"))
    except Exception as e:  # noqa: BLE001 - kept, as sys.last_traceback keeps it in a notebook
        kept = e
    assert kept.__traceback__ is not None
    other = subprocess.run([sys.executable, "-c", "import sys; from pathlib import Path; "
                            "from kizuna.train.checkpointing import hold_run_lock; hold_run_lock(Path(sys.argv[1]))",
                            str(tmp_path)], capture_output=True, text=True)
    assert other.returncode == 0, other.stderr


@pytest.mark.parametrize("saved", [None, 1])
def test_a_resume_of_a_run_another_kizuna_made_its_pixels_for_says_so(tmp_path, capsys, saved):
    """A run started before a change of the training images (JPEGs decoded at a draft size) and resumed after it
    went on 1e-3 away from where it would have, in silence, though --resume promises to continue exactly."""
    from kizuna.data.transforms import TRAINING_PIXELS_VERSION

    ContrastiveTrainer(tiny_config(tmp_path, steps=2, save_every=1)).train()
    ContrastiveTrainer(tiny_config(tmp_path, steps=3, resume="latest")).train()
    assert "other pixels" not in capsys.readouterr().err  # the same kizuna: nothing to say
    state_file = tmp_path / "checkpoints" / "step_0000003" / "train_state.pt"
    state = torch.load(state_file, weights_only=True)
    assert state["training_pixels"] == TRAINING_PIXELS_VERSION
    state.pop("training_pixels") if saved is None else state.update(training_pixels=saved)
    torch.save(state, state_file)
    ContrastiveTrainer(tiny_config(tmp_path, steps=4, resume="latest")).train()
    err = " ".join(capsys.readouterr().err.split())
    assert "its remaining steps may see other pixels than they would have" in err
    assert ("does not record" in err) == (saved is None) and (f"version {saved}," in err) == (saved is not None)


def test_a_fresh_run_sets_the_earlier_runs_settings_aside_with_its_checkpoints(tmp_path):
    """A fresh run into a folder moved the earlier run's checkpoints, log and curves to .prev but overwrote its
    train_config.json: the .prev set, restored, was read with the new run's settings."""
    ContrastiveTrainer(tiny_config(tmp_path, steps=2, lr=1e-3)).train()
    ContrastiveTrainer(tiny_config(tmp_path, steps=2, lr=2e-3)).train()
    assert json.loads((tmp_path / "train_config.json.prev").read_text())["lr"] == 1e-3
    assert json.loads((tmp_path / "train_config.json").read_text())["lr"] == 2e-3
    assert (tmp_path / "checkpoints.prev").is_dir() and (tmp_path / "metrics.jsonl.prev").is_file()


def test_a_resumed_train_gives_pythons_and_numpys_generators_back(tmp_path):
    """A resume sets Python's and numpy's global generators to the checkpoint's (the loader's workers draw from
    them): a notebook's random.uniform after it drew the checkpoint's stream whatever it had seeded."""
    import random

    import numpy as np

    ContrastiveTrainer(tiny_config(tmp_path, steps=2, save_every=1)).train()
    random.seed(5), np.random.seed(5)
    expected = random.random(), np.random.rand()
    random.seed(5), np.random.seed(5)
    ContrastiveTrainer(tiny_config(tmp_path, steps=3, resume="latest")).train()
    assert (random.random(), np.random.rand()) == expected
