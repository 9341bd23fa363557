"""Threads sharing one tokenizer, and copies of a tokenizer: the word cache (`_ChunkIds`) is shared state."""
from __future__ import annotations

import copy
import pickle
import random
import threading

import torch

from kizuna.data.tokenizer import ClipTokenizer, clean_text


def _batches(seed: int, n: int = 24) -> list[list[str]]:
    """Plain ASCII captions (the cached path) of made-up words: nearly every batch brings new words."""
    rng = random.Random(seed)

    def word() -> str:
        return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9)))

    return [[" ".join(word() for _ in range(20)) + " ." for _ in range(150)] for _ in range(n)]


def test_threads_sharing_one_tokenizer_get_the_single_threaded_ids():
    """The Rust BPE releases the GIL, so two threads added their new words to the cache at once and wrote the
    same rows: 38 of 40 batches came out with other words' ids, sometimes a numpy error, and the cache stayed
    wrong for every later call, single-threaded too."""
    batches = _batches(0)
    truth = [ClipTokenizer()._encode_rust([clean_text(t) for t in b]) for b in batches]  # no cache involved
    shared = ClipTokenizer()
    n_threads = 4
    start = threading.Barrier(n_threads)
    problems: list[str] = []

    def work(k: int) -> None:
        start.wait()
        for i in range(k, len(batches), n_threads // 2):  # each batch in two threads: they race on its words
            try:
                if shared.encode_batch(batches[i]) != truth[i]:
                    problems.append(f"batch {i}: wrong ids")
            except Exception as e:  # noqa: BLE001 - a numpy error from a torn write is a failure too
                problems.append(f"batch {i}: {type(e).__name__}: {e}")

    threads = [threading.Thread(target=work, args=(k,)) for k in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not problems, f"{len(problems)} batches went wrong, e.g. {problems[:3]}"
    assert [shared.encode_batch(b) for b in batches] == truth  # the cache was not poisoned either
    assert len(shared._words) == len({c for b in batches for t in b for c in t.split()})  # each word once


def test_a_tokenizer_with_a_warm_cache_pickles_and_copies():
    """The cache's lock does not pickle (spawn DataLoader workers, deepcopy): copies get their own, and
    their cache with the same ids."""
    tok = ClipTokenizer(32)
    texts = ["a photo of a dog .", "two dogs play in the snow", "caf\u00e9 na\u00efve"]
    expected = tok(texts)  # warms the cache
    assert len(tok._words) > 0
    cached = dict(tok._words.index)
    for other in [pickle.loads(pickle.dumps(tok)), copy.deepcopy(tok)]:
        assert other._words is not tok._words and other._words.lock is not tok._words.lock
        assert other._words.index == cached and other.context_length == 32
        assert torch.equal(other(texts), expected)
        assert torch.equal(other(["an unseen zebra word"]), tok(["an unseen zebra word"]))
    shallow = copy.copy(tok)  # shares the cache, and so its lock
    assert shallow._words is tok._words and torch.equal(shallow(texts), expected)
