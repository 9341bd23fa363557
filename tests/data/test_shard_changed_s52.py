"""A tar shard rewritten in place while a dataset reads it (session 52): its open file gave the new bytes under the
index's offsets, labels and captions, silently. Refused at the next read, naming the shard; said in one line by the
command line when it comes from a loader worker."""
import os
import sys
from pathlib import Path

import pytest

from kizuna.data.sources import PairDataset, ShardChanged, build_index

sys.path.insert(0, str(Path(__file__).parent))
from _shards import image_bytes, write_tar  # noqa: E402


def _shard(path, order):
    write_tar(path, [m for i in order for m in ((f"{i:06d}.png", image_bytes((i * 10,) * 3, fmt="PNG")),
                                                (f"{i:06d}.txt", f"caption {i}".encode()))])


def test_a_shard_rewritten_in_place_is_refused_at_the_next_read(tmp_path):
    shard = tmp_path / "000000.tar"
    _shard(shard, range(6))
    index = build_index(str(tmp_path), require="caption")
    dataset = PairDataset(index, transform=None)
    first = dataset._read(0)
    assert dataset._read(0) == first
    before = os.stat(shard)
    _shard(shard, [5, 4, 3, 2, 1, 0, 6])  # same path, same inode, other bytes (an open file sees them)
    os.utime(shard, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000))
    with pytest.raises(ShardChanged, match=f"tar shard {shard} changed since it was indexed"):
        dataset._read(0)
    fresh = PairDataset(build_index(str(tmp_path), require="caption"), transform=None)
    fresh._read(0)  # indexed anew: read


def test_a_workers_refusal_is_said_without_its_traceback():
    from kizuna.apps.cli import _without_worker_traceback

    text = ("Caught ShardChanged in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
            '  File "x.py", line 1, in f\n    raise ShardChanged(...)\n'
            "kizuna.data.sources.ShardChanged: tar shard a.tar changed since it was indexed")
    assert _without_worker_traceback(text) == "tar shard a.tar changed since it was indexed"
    assert _without_worker_traceback("plain message") == "plain message"
