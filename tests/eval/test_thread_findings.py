"""kizuna's Python API from several threads at once (a service's pool; a review of 2026-12-06)."""
from __future__ import annotations

import threading
from collections import OrderedDict

import pytest

import kizuna


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


def test_a_trainer_is_refused_the_folder_a_trainer_of_this_process_is_training_in(tmp_path):
    """The kernel's lock is the process's: a second trainer built while the first trained in a thread (a notebook's
    background run) wrote into its folder (interleaved records, checkpoints moved by the other). A trainer built
    and never trained holds the folder without refusing another (as before)."""
    from kizuna.train.config import TrainConfig
    from kizuna.train.contrastive import ContrastiveTrainer

    # workers=0: loader workers forked while another thread builds a trainer can inherit a held lock and hang
    cfg = dict(steps=30, batch_size=8, synthetic_length=16, out=str(tmp_path / "run"), threads=1, warmup_steps=1,
               workers=0)
    idle = ContrastiveTrainer(TrainConfig(**cfg))  # built, never trained
    first = ContrastiveTrainer(TrainConfig(**cfg))  # allowed beside it
    del idle
    started = threading.Event()
    real_loop = first._loop

    def loop():
        started.set()
        return real_loop()

    first._loop = loop
    thread = threading.Thread(target=first.train)
    thread.start()
    assert started.wait(60)
    with pytest.raises(ValueError, match="another kizuna run .*this process.* is training there"):
        ContrastiveTrainer(TrainConfig(**cfg, seed=1))
    thread.join(300)
    again = ContrastiveTrainer(TrainConfig(**cfg, resume="latest"))  # once it has trained: free again
    del again
