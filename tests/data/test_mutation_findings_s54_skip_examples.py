"""Session 54 mutation findings: the places a loader's skips name, carried in its state (data/loader.py state_dict,
load_state_dict: skip_examples)."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _shards import make_pair_shard, pair_members, to_tensor, write_tar  # noqa: E402

from kizuna.data.loader import make_loader  # noqa: E402
from kizuna.data.sampler import EpochSampler  # noqa: E402
from kizuna.data.sources import PairDataset, build_index  # noqa: E402


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    members = pair_members([f"{i:09d}" for i in range(6)], [[f"c{i}"] for i in range(6)])
    members[6:6] = [("000000099.jpg", b"garbage" * 10), ("000000099.txt", b"corrupt")]
    write_tar(root / "000000.tar", members)
    make_pair_shard(root / "000001.tar", 6, 3)
    return build_index(f"{root}/{{000000..000001}}.tar")


def _loader(index, rank=0, world_size=1):
    ds = PairDataset(index, to_tensor, seed=2)
    return make_loader(ds, EpochSampler(len(ds), 2, rank=rank, world_size=world_size, seed=1, drop_last=False), 0)


def test_a_finished_epochs_examples_are_left_out_with_its_counts(index):
    """Kills: state_dict keeping the epoch's skip examples at the epoch's end (its counts are left out there: the
    report comes right after the checkpoint)."""
    loader = _loader(index)
    loader.sampler.set_epoch(0)
    list(loader)
    state = loader.state_dict()
    assert state["skips"]["epoch"] == {} and state["skip_examples"]["epoch"] == {}
    assert state["skip_examples"]["total"] == {"corrupt_image": [list(loader.total_skips.examples["corrupt_image"])[0]]}


def test_another_ranks_state_brings_no_skip_examples(index):
    """Kills: load_state_dict taking the examples of another rank's state (its counts are not taken: a rank named
    places it had skipped none of)."""
    first = _loader(index, 0, 2)
    first.sampler.set_epoch(0)
    list(first)
    state = first.state_dict()
    assert state["skip_examples"]["total"]
    other = _loader(index, 1, 2)
    other.load_state_dict(state)
    assert other.total_skips.total == 0 and not other.total_skips.examples
