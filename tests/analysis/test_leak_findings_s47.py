"""The analysis functions without a progress bar make no tqdm object (stop 47's review of resource hygiene): tqdm's
class lock fixes multiprocessing's start method, and a host that then set its own (spawn) got "context has already
been set", as the evaluation code already avoids (kizuna.eval.encode.progress_bar)."""

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import multiprocessing, sys, tempfile, threading
    from pathlib import Path
    import numpy as np, torch
    from PIL import Image
    import kizuna
    from kizuna.analysis.report import load_target, attention_distance_per_head
    from kizuna.analysis.over_training import over_training_report
    from kizuna.train.checkpointing import CheckpointManager

    torch.manual_seed(0)
    model = kizuna.create_vit("mu/4", image_size=16, num_classes=3, width=16, depth=2, heads=2, mlp_dim=32)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "imgs").mkdir()
        for i in range(3):
            Image.fromarray(np.random.RandomState(i).randint(0, 255, (16, 16, 3), dtype=np.uint8)).save(
                tmp / "imgs" / f"{i}.png")
        CheckpointManager(tmp / "run", keep_last=5).save(7, model, {"step": 7}, metrics={"val_top1": 0.5})
        if sys.argv[1] == "distance":
            attention_distance_per_head(load_target(model), torch.rand(40, 3, 16, 16), progress=False)
        else:
            over_training_report(tmp / "run", [str(tmp / "imgs")], tmp / "ot", max_images=3, progress=False)
    print(multiprocessing.get_start_method(allow_none=True), [t.name for t in threading.enumerate()])
    multiprocessing.set_start_method("spawn")
    print("spawn set")
""")


def _run(which):
    return subprocess.run([sys.executable, "-c", SCRIPT, which], capture_output=True, text=True, timeout=300)


def test_attention_distance_without_a_bar_leaves_the_hosts_start_method_free():
    done = _run("distance")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["None ['MainThread']", "spawn set"]


def test_over_training_without_a_bar_leaves_the_hosts_start_method_free():
    done = _run("over_training")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["None ['MainThread']", "spawn set"]
