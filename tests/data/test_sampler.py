import pickle
from collections import Counter

import pytest

from kizuna.data.sampler import EpochSampler, IndexBatch


def ids(batch):
    return [key[0] for key in batch]


def epoch_batches(sampler, epoch):
    sampler.set_epoch(epoch)
    return [ids(b) for b in sampler]


@pytest.mark.parametrize("n", [103, 100])
def test_ranks_cover_each_sample_once_with_drop_last(n):
    samplers = [EpochSampler(n, 5, rank=r, world_size=2, seed=7) for r in range(2)]
    per_rank = [epoch_batches(s, 3) for s in samplers]
    assert len(per_rank[0]) == len(per_rank[1]) == len(samplers[0]) == 10
    assert all(len(b) == 5 for batches in per_rank for b in batches)
    seen = Counter(i for batches in per_rank for b in batches for i in b)
    dropped = samplers[0].dropped_indices()
    assert dropped == samplers[1].dropped_indices()  # every rank agrees on what was left out
    assert samplers[0].num_dropped == len(dropped) == n - 100
    assert set(seen.values()) == {1}
    assert sorted(list(seen) + dropped) == list(range(n))
    if dropped:
        assert dropped != samplers[0].dropped_indices(epoch=4)  # a different tail each epoch


def test_ranks_cover_everything_without_drop_last():
    n, ws = 23, 3
    samplers = [EpochSampler(n, 4, rank=r, world_size=ws, seed=1, drop_last=False) for r in range(ws)]
    per_rank = [epoch_batches(s, 0) for s in samplers]
    assert {len(b) for b in per_rank} == {2}  # same number of steps on every rank (DDP)
    assert [len(b[-1]) for b in per_rank] == [4, 4, 3]
    assert sorted(i for batches in per_rank for b in batches for i in b) == list(range(n))
    # fewer leftovers than ranks: a rank gets an empty last batch rather than a missing step
    samplers = [EpochSampler(13, 4, rank=r, world_size=3, drop_last=False) for r in range(3)]
    per_rank = [epoch_batches(s, 0) for s in samplers]
    assert [len(b[-1]) for b in per_rank] == [1, 0, 0]
    assert sorted(i for batches in per_rank for b in batches for i in b) == list(range(13))


def test_epochs_differ_and_are_reproducible():
    s = EpochSampler(50, 10, seed=3)
    e0, e1 = epoch_batches(s, 0), epoch_batches(s, 1)
    assert e0 != e1
    assert epoch_batches(EpochSampler(50, 10, seed=3), 1) == e1
    assert epoch_batches(EpochSampler(50, 10, seed=4), 1) != e1
    assert epoch_batches(s, 1) == e1  # replaying an epoch gives the same order
    assert epoch_batches(EpochSampler(50, 10, shuffle=False), 5)[0] == list(range(10))
    # the global batch at a step depends only on batch_size * world_size
    two = [EpochSampler(50, 5, rank=r, world_size=2, seed=3) for r in range(2)]
    for s2 in two:
        s2.set_epoch(1)
    assert sorted(two[0].batch(1, 2) + two[1].batch(1, 2)) == sorted(e1[2])


def test_batches_carry_epoch_and_position():
    s = EpochSampler(10, 3, seed=0)
    s.set_epoch(2)
    batches = list(s)
    assert all(isinstance(b, IndexBatch) for b in batches)
    assert [(b.epoch, b.position) for b in batches] == [(2, 0), (2, 1), (2, 2)]
    assert all(e == 2 for b in batches for _, e in b)
    back = pickle.loads(pickle.dumps(batches[1]))  # crosses the DataLoader index queue like this
    assert (back, back.epoch, back.position) == (batches[1], 2, 1)
    plain = EpochSampler(10, 3, with_epoch=False)
    assert all(isinstance(i, int) for i in next(iter(plain)))


@pytest.mark.parametrize("world_size", [1, 2])
def test_resume_mid_epoch_yields_exactly_the_rest(world_size):
    for rank in range(world_size):
        ref = EpochSampler(97, 4, rank=rank, world_size=world_size, seed=11)
        full = epoch_batches(ref, 5)

        s = EpochSampler(97, 4, rank=rank, world_size=world_size, seed=11)
        s.set_epoch(5)
        it = iter(s)
        head = [ids(next(it)) for _ in range(3)]
        state = s.state_dict()
        assert (state["epoch"], state["batches_consumed"]) == (5, 3)

        fresh = EpochSampler(97, 4, rank=rank, world_size=world_size, seed=11)
        fresh.load_state_dict(state)
        fresh.set_epoch(5)  # the training loop's usual call keeps the loaded position
        rest = [ids(b) for b in fresh]
        assert head + rest == full
        assert fresh.batches_remaining == 0
        fresh.set_epoch(6)
        assert [ids(b) for b in fresh] == epoch_batches(ref, 6)


def test_resume_from_end_of_epoch_checkpoint():
    s = EpochSampler(20, 5, seed=2)
    epoch_batches(s, 0)
    state = s.state_dict()
    assert state["batches_consumed"] == len(s) == 4
    for start_epoch in (0, 1):  # the trainer may count the finished epoch either way
        fresh = EpochSampler(20, 5, seed=2)
        fresh.load_state_dict(state)
        fresh.set_epoch(start_epoch)
        assert len(list(fresh)) == (0 if start_epoch == 0 else 4)


def test_load_state_rejects_a_different_configuration():
    state = EpochSampler(100, 8, seed=1).state_dict()
    with pytest.raises(ValueError, match="batch_size"):
        EpochSampler(100, 16, seed=1).load_state_dict(state)
    with pytest.raises(ValueError, match="num_samples"):
        EpochSampler(99, 8, seed=1).load_state_dict(state)
    with pytest.raises(ValueError, match="world_size"):
        EpochSampler(100, 4, world_size=2, seed=1).load_state_dict(state)
    # all ranks share (epoch, position), so rank 0's checkpoint can restore rank 1
    rank0 = EpochSampler(100, 4, rank=0, world_size=2, seed=1)
    rank0.set_epoch(2)
    next(iter(rank0))
    rank1 = EpochSampler(100, 4, rank=1, world_size=2, seed=1)
    rank1.load_state_dict(rank0.state_dict())
    assert ids(next(iter(rank1))) == rank1.batch(2, 1)


def test_resampled_mode_is_seeded_infinite_and_resumable():
    def take(sampler, k):
        it = iter(sampler)
        return [ids(next(it)) for _ in range(k)]

    s = EpochSampler(30, 8, seed=5, resampled=True)
    s.set_epoch(1)
    ref = take(s, 12)  # more than 30 // 8 batches: it does not stop at the epoch boundary
    assert all(0 <= i < 30 for b in ref for i in b)
    assert len({i for b in ref for i in b}) < 12 * 8  # with replacement
    with pytest.raises(TypeError):
        len(s)

    s2 = EpochSampler(30, 8, seed=5, resampled=True)
    s2.set_epoch(1)
    head = take(s2, 5)
    fresh = EpochSampler(30, 8, seed=5, resampled=True)
    fresh.load_state_dict(s2.state_dict())
    fresh.set_epoch(1)
    assert head + take(fresh, 7) == ref

    r1 = EpochSampler(30, 8, rank=1, world_size=2, seed=5, resampled=True)
    r1.set_epoch(1)
    assert take(r1, 3) != ref[:3]  # ranks draw independently
    finite = EpochSampler(30, 8, seed=5, resampled=True, steps_per_epoch=4)
    finite.set_epoch(1)
    assert [ids(b) for b in finite] == ref[:4]
    finite.set_epoch(2)
    assert [ids(b) for b in finite] != ref[:4]
