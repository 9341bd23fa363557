"""A tar shard rewritten in place while a dataset reads it (session 52): its open file gave the new bytes under the
index's offsets, labels and captions, silently. Refused at the next read, naming the shard; said in one line by the
command line when it comes from a loader worker."""
import io
import os
import tarfile

import numpy as np
import pytest
from PIL import Image

from kizuna.data.sources import PairDataset, ShardChanged, build_index


def _shard(path, order):
    with tarfile.open(path, "w") as tf:
        for i in order:
            b = io.BytesIO()
            Image.fromarray(np.full((8, 8, 3), i * 10, np.uint8)).save(b, "PNG")
            for ext, data in (("png", b.getvalue()), ("txt", f"caption {i}".encode())):
                info = tarfile.TarInfo(f"{i:06d}.{ext}")
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))


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
