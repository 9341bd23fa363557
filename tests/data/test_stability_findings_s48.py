"""--resampled draws batches with replacement, not samples within a batch: with repeats inside a batch, a
contrastive loss treats the copy (another caption of the same image) as a negative of itself."""
from __future__ import annotations

import numpy as np

from kizuna.data.sampler import EpochSampler


def _ids(batch):
    return [key[0] for key in batch]


def test_a_resampled_batch_holds_distinct_samples_and_the_ranks_are_disjoint():
    # Flickr8k-sized: with replacement inside a batch, two of three batches of 128 held a sample twice
    for world in (1, 2):
        ranks = [EpochSampler(6091, 128, rank=r, world_size=world, seed=1, resampled=True, steps_per_epoch=47)
                 for r in range(world)]
        for s in ranks:
            s.set_epoch(0)
        for batches in zip(*ranks):
            drawn = [i for batch in batches for i in _ids(batch)]
            assert len(drawn) == 128 * world and len(set(drawn)) == len(drawn)
    # still with replacement across batches: over an epoch some samples recur, some are never drawn
    s = EpochSampler(600, 64, seed=1, resampled=True, steps_per_epoch=9)
    s.set_epoch(0)
    counts = np.bincount([i for batch in s for i in _ids(batch)], minlength=600)
    assert counts.max() > 1 and (counts == 0).any()


def test_a_resampled_batch_larger_than_the_data_takes_every_sample_before_any_twice():
    s = EpochSampler(5, 6, rank=0, world_size=2, seed=0, resampled=True, steps_per_epoch=3)
    r1 = EpochSampler(5, 6, rank=1, world_size=2, seed=0, resampled=True, steps_per_epoch=3)
    for a, b in zip(s, r1):
        counts = np.bincount(_ids(a) + _ids(b), minlength=5)
        assert sorted(counts.tolist()) == [2, 2, 2, 3, 3]  # 12 draws of 5 samples, as even as can be


def test_a_resampled_batch_is_the_same_computed_directly_or_iterated_and_after_a_resume():
    s = EpochSampler(1000, 32, seed=4, resampled=True)
    s.set_epoch(2)
    it = iter(s)
    head = [_ids(next(it)) for _ in range(3)]
    assert head == [s.batch(2, b) for b in range(3)]
    fresh = EpochSampler(1000, 32, seed=4, resampled=True)
    fresh.load_state_dict(s.state_dict())
    fresh.set_epoch(2)
    assert _ids(next(iter(fresh))) == s.batch(2, 3)
