"""kizuna's Python API from several threads at once (a service's pool; a review of 2026-12-06)."""
from __future__ import annotations

import threading
from collections import OrderedDict

import pytest

import kizuna
from kizuna.eval.encode import eval_mode


def test_eval_mode_is_held_until_the_last_thread_leaves():
    """Each thread saved and restored the modes itself: the first out put a model in train mode back in it while
    another thread encoded (patch dropout in its features), and the last out left it in eval mode."""
    model = kizuna.create_model("ViT-mu-8")
    model.train()
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()
    seen = {}

    def first():
        with eval_mode(model):
            a_in.set()
            b_in.wait(10)
        a_out.set()

    def second():
        a_in.wait(10)
        with eval_mode(model):
            b_in.set()
            a_out.wait(10)
            seen["training inside"] = model.training

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert seen == {"training inside": False}
    assert model.training and all(m.training for m in model.modules())


def test_the_class_embedding_cache_survives_an_eviction_between_lookup_and_reorder(monkeypatch):
    """Another thread's eviction between the cache's get and move_to_end raised KeyError."""
    import kizuna.eval.classification as classification

    model = kizuna.create_model("ViT-mu-8")
    tokenizer = kizuna.get_tokenizer(model)
    got, evicted = threading.Event(), threading.Event()

    class Pausing(OrderedDict):
        pause = False

        def get(self, key, default=None):
            value = super().get(key, default)
            if self.pause and threading.current_thread().name == "A" and value is not None:
                got.set()
                evicted.wait(2)  # with the lock, the other thread cannot evict until this lookup is done
            return value

    monkeypatch.setattr(classification, "_MEMORY_CACHE", Pausing())
    for i in range(classification._MEMORY_CACHE_SIZE):  # a full cache; class set 0 is the oldest entry
        classification.class_embeddings(model, tokenizer, [f"c{i}"], ["a {c}"])
    classification._MEMORY_CACHE.pause = True
    out = {}

    def a():
        try:
            out["A"] = tuple(classification.class_embeddings(model, tokenizer, ["c0"], ["a {c}"]).shape)
        except Exception as e:  # noqa: BLE001 - what the race raised
            out["A"] = type(e).__name__

    def b():
        got.wait(10)
        classification.class_embeddings(model, tokenizer, ["new"], ["a {c}"])
        evicted.set()

    threads = [threading.Thread(target=a, name="A"), threading.Thread(target=b, name="B")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert out["A"][0] == 1


def test_a_trainer_in_another_thread_is_refused_the_folder_a_running_one_holds(tmp_path):
    """The kernel's lock is the process's: a second trainer in another thread wrote into the first one's
    folder (interleaved records, checkpoints moved by the other)."""
    from kizuna.train.config import TrainConfig
    from kizuna.train.contrastive import ContrastiveTrainer

    cfg = dict(steps=2, batch_size=8, synthetic_length=16, out=str(tmp_path / "run"), threads=1, warmup_steps=1)
    first = ContrastiveTrainer(TrainConfig(**cfg))  # holds the folder until it has trained
    said = {}

    def other():
        try:
            ContrastiveTrainer(TrainConfig(**cfg, seed=1))
        except ValueError as e:
            said["error"] = str(e)

    thread = threading.Thread(target=other)
    thread.start()
    thread.join(60)
    assert "another kizuna run" in said.get("error", "") and "another thread" in said["error"]
    first.train()
    again = ContrastiveTrainer(TrainConfig(**cfg, resume="latest"))  # once it has trained: free again
    del again
