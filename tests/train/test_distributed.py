import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from kizuna.train.budget import REPLAN_AT

HERE = Path(__file__).parent


def torchrun(script: Path, *args, nproc=2, timeout=240):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE.parents[1] / "src")}
    logs = Path(args[0]) / "logs"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
           "--log-dir", str(logs), "--redirects", "3",
           # --standalone: a free port of the launcher's choosing; one port per pytest process, reused by
           # each test in turn, failed a test now and then under load
           "--standalone", str(script), *map(str, args)]
    # a session of its own: a timeout (ranks waiting on each other in a collective) kills the workers too,
    # which subprocess.run's kill of the launcher left running
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        proc.stdout_text, proc.stderr_text = proc.communicate(timeout=timeout)
        why = "" if proc.returncode == 0 else proc.stderr_text[-1500:]
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        why = f"timed out after {timeout} s (a rank waiting for the others in a collective?)"
    if why:  # show what each rank printed, not only the launcher's summary
        rank_logs = "".join(f"\n--- {p}\n" + p.read_text()[-2000:] for p in sorted(logs.rglob("std*.log")))
        raise AssertionError(why + rank_logs)
    return proc


def test_distributed_losses_equal_single_process(tmp_path):
    torchrun(HERE / "_dist_loss_worker.py", tmp_path)
    for rank in (0, 1):
        res = json.loads((tmp_path / f"rank{rank}.json").read_text())
        for kind in ("clip", "siglip"):
            r = res[kind]
            assert r["loss"] == pytest.approx(r["ref_loss"], abs=1e-5), (kind, r)
            assert r["max_grad_err"] < 1e-5, (kind, r)


def _colour_data(root: Path) -> Path:
    """The tiny colour shards of test_supervised: 32 training and 8 test images of 4 classes."""
    sys.path.insert(0, str(HERE))
    from test_supervised import CLASSES, _shard

    _shard(root / "train" / "000000.tar", 0, 32)
    _shard(root / "test" / "000000.tar", 1000, 8)
    (root / "classnames.txt").write_text("\n".join(CLASSES) + "\n")
    return root


def test_supervised_ddp_with_device_augmentation(tmp_path):
    """Two gloo ranks train a tiny ViT with batches augmented in-process: the run ends, both ranks took
    disjoint halves of every global batch, and the model it exports is the one both ranks hold."""
    data = _colour_data(tmp_path / "data")
    out = tmp_path / "run"
    torchrun(HERE / "_dist_vit_worker.py", tmp_path, data, out)
    ranks = [json.loads((tmp_path / f"vit_rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["steps"] == ranks[1]["steps"] == 4
    seen = [set(r["first_batch"]) for r in ranks]
    assert len(seen[0]) == len(seen[1]) == 4 and not seen[0] & seen[1]  # batch 8 = 2 ranks x 4, disjoint
    assert ranks[0]["param_sum"] == pytest.approx(ranks[1]["param_sum"], abs=1e-6)  # DDP kept them equal
    assert ranks[0]["metrics"]["val_samples"] == 8


@pytest.mark.slow  # 13 s of 2 processes; `make test-slow` (test_ranks_whose_clocks_disagree_plan_together stays)
def test_a_budgeted_run_plans_and_corrects_alike_on_every_rank(tmp_path):
    """The plan and its corrections reduce through all_reduce(MIN) at the same steps on both ranks: a
    rank that planned or corrected alone would hang the other in the collective (the launcher's
    timeout would fail the test). Both end at the same step, the schedule's end."""
    from kizuna.train.logging import read_metrics

    data = _colour_data(tmp_path / "data")
    out = tmp_path / "run"
    torchrun(HERE / "_dist_vit_worker.py", tmp_path, data, out, "budget")
    ranks = [json.loads((tmp_path / f"vit_rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["steps"] == ranks[1]["steps"] == ranks[0]["total_steps"] == ranks[1]["total_steps"] > 30
    assert ranks[0]["param_sum"] == pytest.approx(ranks[1]["param_sum"], abs=1e-6)
    plans = read_metrics(out / "metrics.jsonl", "plan")
    replans = read_metrics(out / "metrics.jsonl", "replan")
    assert len(plans) == 1 and 1 <= len(replans) <= len(REPLAN_AT)
    assert replans[-1]["total_steps"] == ranks[0]["steps"]


def test_ranks_whose_clocks_disagree_plan_together(tmp_path):
    """Whether a budget is spent before its plan (or its warm-up fits) is read off each rank's own clock:
    rank 1 planned alone, going into the plan's evaluation and all_reduce while rank 0 stepped on, and
    the run hung (or gloo failed on a collective mismatch). Now any rank ready to plan makes them all
    plan, at the same step: the budget spent, the plan ends the run at its own step on both ranks (at the next
    step until session 51, which evaluated again there)."""
    from kizuna.train.logging import read_metrics

    data = _colour_data(tmp_path / "data")
    out = tmp_path / "run"
    torchrun(HERE / "_dist_vit_worker.py", tmp_path, data, out, "spent", timeout=120)
    ranks = [json.loads((tmp_path / f"vit_rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["steps"] == ranks[1]["steps"] == ranks[0]["total_steps"] == ranks[1]["total_steps"] == 2
    plans = read_metrics(out / "metrics.jsonl", "plan")
    assert [p["step"] for p in plans] == [2] and plans[0]["total_steps"] == 2


def test_ranks_whose_batches_lose_different_samples_stay_in_step(tmp_path):
    """Every third image is corrupt, so the two ranks' halves of a batch shrink by different amounts (some to
    nothing). Before, the CLIP loss's all_gather failed on unequal shapes and a rank with an empty batch
    skipped a step the other waited on. Each rank now trims to the smaller batch: both trainers end, at
    the same step on both ranks, with the same parameters, and count what was trimmed as rank_balance."""
    import io
    import tarfile

    sys.path.insert(0, str(HERE))
    from test_supervised import CLASSES, _jpeg

    shard = tmp_path / "data" / "train" / "000000.tar"
    shard.parent.mkdir(parents=True)
    with tarfile.open(shard, "w", format=tarfile.USTAR_FORMAT) as tf:
        for i in range(48):
            label = i % len(CLASSES)
            image = b"not a jpeg" if i % 3 == 0 else _jpeg(label, i)
            for name, blob in ((f"{i:05d}.jpg", image), (f"{i:05d}.cls", str(label).encode()),
                               (f"{i:05d}.txt", f"a {CLASSES[label]} square".encode())):
                info = tarfile.TarInfo(name)
                info.size = len(blob)
                tf.addfile(info, io.BytesIO(blob))
    torchrun(HERE / "_dist_corrupt_worker.py", tmp_path, tmp_path / "data", timeout=300)
    ranks = [json.loads((tmp_path / f"corrupt_rank{r}.json").read_text()) for r in (0, 1)]
    for name in ("vit", "clip"):
        a, b = ranks[0][name], ranks[1][name]
        assert a["steps"] == b["steps"] == 12, name
        assert a["param_sum"] == pytest.approx(b["param_sum"], abs=1e-6), name
        assert a["skips"]["corrupt_image"] > 0 and a["skips"]["corrupt_image"] + b["skips"]["corrupt_image"] >= 12 * 8 // 3 - 2
        assert a["skips"].get("rank_balance", 0) + b["skips"].get("rank_balance", 0) > 0, (name, a, b)
    # --tokenizer train: trained on rank 0 and sent, so both ranks map a text to the same ids
    assert ranks[0]["clip"]["tokenizer"] == ranks[1]["clip"]["tokenizer"] != "null"
    # the epoch reports, and the skips a checkpoint keeps, count both ranks' samples (rank 0's alone were
    # reported): each of the 2 epochs met all 16 corrupt images
    from kizuna.train.checkpointing import read_train_state
    from kizuna.train.logging import read_metrics

    for name in ("vit", "clip"):
        epochs = [r for r in read_metrics(tmp_path / name / "metrics.jsonl", "data") if "skipped" in r]
        balance = sum(r[name]["skips"].get("rank_balance", 0) for r in ranks)
        assert [r["skipped/corrupt_image"] for r in epochs] == [16, 16], (name, epochs)
        assert sum(r.get("skipped/rank_balance", 0) for r in epochs) == balance, (name, epochs)
        kept = read_train_state(tmp_path / name / "checkpoints" / "step_0000012")["data"]["skips"]["total"]
        assert kept["corrupt_image"] == 32 and kept.get("rank_balance", 0) == balance, (name, kept)


def test_grad_cache_accumulation_under_ddp_equals_the_whole_batch(tmp_path):
    """accum_steps 2 on two ranks trains to the parameters of accum_steps 1, for CLIP and SigLIP. Before, the
    logit scale's gradient went through the first chunk, which DDP does not sync, so the synced backward
    left it unused and the next step failed ("Expected to have finished reduction")."""
    torchrun(HERE / "_dist_accum_worker.py", tmp_path, timeout=300)
    for rank in (0, 1):
        res = json.loads((tmp_path / f"accum_rank{rank}.json").read_text())
        for loss in ("clip", "siglip"):
            assert res[loss]["max_diff"] < 1e-5, (rank, loss, res)


def test_ranks_draw_patch_dropout_of_their_own_and_resume_it_exactly(tmp_path):
    """Every rank seeded torch with --seed alone, so image i of every rank's batch kept the same patches; and a
    checkpoint held rank 0's RNG state only. Now rank 0 keeps the stream one process has, the other ranks draw
    their own, and a resume goes on with each rank's. The logged loss is both ranks' mean, not rank 0's."""
    import hashlib

    sys.path.insert(0, str(HERE))
    from _tiny import tiny_config

    from kizuna.train.contrastive import ContrastiveTrainer
    from kizuna.train.logging import read_metrics

    torchrun(HERE / "_dist_rng_worker.py", tmp_path, timeout=300)
    ranks = [json.loads((tmp_path / f"rng_rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["first_rng"] != ranks[1]["first_rng"]
    one = ContrastiveTrainer(tiny_config(tmp_path / "one", steps=4, patch_dropout=0.5, device="cpu"))
    assert hashlib.sha1(one._run_rng["torch"].numpy().tobytes()).hexdigest() == ranks[0]["first_rng"]  # as before
    del one
    for r in ranks:  # resumed at step 2, each rank's stream and the parameters end as the uninterrupted run's
        assert r["resumed"]["end_rng"] == r["end_rng"] and r["resumed"]["params"] == r["params"]
        assert r["resumed"]["losses"] == r["losses"][2:]
    assert ranks[0]["end_rng"] != ranks[1]["end_rng"]
    logged = [row["loss"] for row in read_metrics(tmp_path / "a" / "metrics.jsonl", "train")]
    assert logged == pytest.approx([(a + b) / 2 for a, b in zip(ranks[0]["losses"], ranks[1]["losses"])], abs=1e-6)


@pytest.mark.slow  # 8 s of 2 processes; `make test-slow` (the one-process MiniLM resume test stays)
def test_every_rank_resumes_its_own_extra_train_state(tmp_path):
    """The checkpoint kept rank 0's extra state only (the MiniLM caption cache): after a resume rank 1 took rank
    0's cache, encoded its captions again in other batches, and the run left its uninterrupted path (5.96e-08)."""
    torchrun(HERE / "_dist_extra_worker.py", tmp_path, timeout=300)
    assert [json.loads((tmp_path / f"extra_rank{r}.json").read_text()) for r in (0, 1)] == [[0, 2], [1, 2]]
    assert json.loads((tmp_path / "saved_keys.json").read_text()) == [False, 2]


def test_a_named_gpu_is_used_and_gpu_rng_states_restore_on_fewer_gpus(monkeypatch):
    """Outside torchrun, --device cuda:1 ran on GPU 0 (the index was dropped); a checkpoint saved with two GPUs'
    RNG states failed to resume where one is visible (IndexError inside torch) (GPU-path review). CUDA is faked."""
    import random

    import numpy as np
    import torch

    from kizuna.train import checkpointing
    from kizuna.train.distributed import init_distributed

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    chosen = []
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: chosen.append(str(d)))
    monkeypatch.delenv("RANK", raising=False)
    assert init_distributed("cuda:1").device == torch.device("cuda", 1) and chosen == ["cuda:1"]
    assert init_distributed("cuda").device == torch.device("cuda")
    with pytest.raises(ValueError, match="this machine has 2 GPU"):
        init_distributed("cuda:7")

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    restored = []
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, index: restored.append(index))
    np_state = np.random.get_state()
    state = {"python": random.getstate(), "torch": torch.get_rng_state(), "cuda": [torch.zeros(8), torch.zeros(8)],
             "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                       "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])}}
    checkpointing.set_rng_state(state)
    assert restored == [0]


def test_a_folder_another_run_holds_is_refused_on_every_rank_in_one_line(tmp_path):
    """Only rank 0 takes OUT's lock: refused there (another run writes into OUT), rank 1 went on into its first
    collective and died with 38 lines of gloo's "Connection closed by peer" under rank 0's one-line refusal."""
    from kizuna.train.checkpointing import hold_run_lock, release_run_lock

    out, logs = tmp_path / "run", tmp_path / "logs"
    key = hold_run_lock(out)  # the other run: this process
    try:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--log-dir", str(logs),
               "--redirects", "3", "--standalone", "-m", "kizuna.apps.cli", "train", "--model", "ViT-mu-8",
               "--data", "synthetic", "--synthetic-length", "64", "--synthetic-image-size", "32", "--batch-size",
               "8", "--steps", "2", "--warmup-steps", "1", "--workers", "0", "--device", "cpu", "--eval-every",
               "0", "--progress", "false", "--out", str(out)]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE.parents[1] / "src")}
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240, start_new_session=True)
    finally:
        release_run_lock(key)
    assert done.returncode != 0
    said = {p.parent.name: p.read_text() for p in logs.rglob("stderr.log")}
    assert len(said) == 2, said
    for text in said.values():
        assert "Traceback" not in text and "Connection closed" not in text, text[-3000:]
    assert sum("another kizuna run" in text for text in said.values()) == 1, said
    assert sum("rank 0 refused the run's folder" in text for text in said.values()) == 1, said
