"""Sharded evaluation over 2 gloo processes (launched as torchrun would) equals one process."""
import os
import subprocess
import sys
from pathlib import Path

import torch
from _dist_worker import evaluate_all
from _evalhelpers import classification_wds, retrieval_wds

from kizuna.apps.common import json_safe
from kizuna.eval.encode import shard_bounds


def test_shard_bounds_follow_the_batch_grid():
    assert shard_bounds(13, 3, 2) == [(0, 6), (6, 13)]
    assert shard_bounds(13, 3, 1) == [(0, 13)]
    assert shard_bounds(2, 4, 2) == [(0, 0), (0, 2)]  # an empty shard
    b = shard_bounds(100, 7, 3)
    assert b[0][0] == 0 and b[-1][1] == 100 and all(x[1] == y[0] for x, y in zip(b, b[1:]))
    assert all(s % 7 == 0 for s, _ in b)


def test_two_processes_equal_one(tmp_path, tiny_hf):
    cls = classification_wds(tmp_path / "cls", n=13, split="test", corrupt=(7,))  # 5 batches of 3: 6 + 7 images
    classification_wds(tmp_path / "cls", n=10, split="train", seed=5)
    ret = retrieval_wds(tmp_path / "ret", n=7, corrupt=(1,))
    args = [str(tiny_hf[0]), str(cls), str(ret)]
    worker = Path(__file__).with_name("_dist_worker.py")
    src = str(Path(__file__).resolve().parents[2] / "src")
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    # --standalone: a free port of the launcher's choosing (one picked here could be taken by another test process
    # under pytest-xdist before the ranks bound it)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone", str(worker), *args,
           str(tmp_path / "rank{rank}.pt")]
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=240)
    assert proc.returncode == 0, proc.stdout.decode(errors="replace")[-6000:]

    single = evaluate_all(*args)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    for res in ranks:
        assert json_safe(res["zs_metrics"]) == json_safe(single["zs_metrics"])  # acc5 is NaN (3 classes)
        assert torch.equal(res["zs_pred"], single["zs_pred"])
        torch.testing.assert_close(res["zs_scores"], single["zs_scores"], atol=1e-6, rtol=0)
        assert res["zs_skipped"] == single["zs_skipped"] == {"corrupt_image": 1}
        assert json_safe(res["ret_metrics"]) == json_safe(single["ret_metrics"])  # (R@10 of 6 images: NaN)
        assert torch.equal(res["i2t"], single["i2t"]) and torch.equal(res["t2i"], single["t2i"])
        assert res["lp"] == single["lp"]
        assert res["rob"] == single["rob"]
        assert res["rel"] == single["rel"]
        assert json_safe(res["train"]) == json_safe(single["train"])
        assert json_safe(res["cl_metrics"]) == json_safe(single["cl_metrics"]) and res["cl_skipped"] == {"corrupt_image": 1}
        torch.testing.assert_close(res["cl_scores"], single["cl_scores"], atol=1e-6, rtol=0)
    assert len(set(single["cl_scores"].argmax(1).tolist())) > 1  # the classifier is not constant
