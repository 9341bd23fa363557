"""Session 54 mutation findings: the shared tar-index cache's entries read only when they are plain files within a
bound from the shard's size (data/tar_index.py _cache_entry, _load_disk)."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _shards import make_pair_shard  # noqa: E402

from kizuna.data import tar_index  # noqa: E402


def _indexed(tmp_path):
    shard, cache = tmp_path / "s.tar", tmp_path / "cache"
    make_pair_shard(shard, 0, 3, captions=[f"caption {i}" for i in range(3)])
    tar_index.clear_cache()
    tar_index.index_tar(shard, cache_dir=cache)
    (entry,) = cache.glob("*.json")
    return shard, cache, entry


def test_an_entry_past_the_bound_is_a_miss_even_when_it_is_a_valid_index(tmp_path):
    """Kills: _cache_entry's size bound dropped (an entry of any size read whole; only the outcome of a planted
    junk file was tested, which fails as JSON either way)."""
    shard, cache, entry = _indexed(tmp_path)
    text = entry.read_text()
    assert "caption 0" in text
    entry.write_text(text.replace("caption 0", "from the cache") + " " * (17 << 20))
    tar_index.clear_cache()
    assert tar_index.index_tar(shard, cache_dir=cache).captions[0] == ("caption 0",)  # scanned again
    entry.write_text(text.replace("caption 0", "from the cache"))  # (within the bound: read, as ever)
    tar_index.clear_cache()
    assert tar_index.index_tar(shard, cache_dir=cache).captions[0] == ("from the cache",)


@pytest.mark.skipif(not hasattr(os, "mknod") or os.geteuid() != 0, reason="making a device node needs root")
def test_a_device_node_under_an_entrys_name_is_a_miss(tmp_path):
    """Kills: _cache_entry's plain-file test dropped (a character device planted under an entry's name, /dev/zero's
    numbers, was read without end: its st_size is 0, within any bound). Run in a child with its memory capped."""
    shard, cache, entry = _indexed(tmp_path)
    entry.unlink()
    try:
        os.mknod(entry, 0o600 | __import__("stat").S_IFCHR, os.makedev(1, 5))
    except OSError as e:
        pytest.skip(f"no device node here: {e}")
    code = textwrap.dedent(f"""
        import resource, sys
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
        from kizuna.data import tar_index
        idx = tar_index.index_tar({str(shard)!r}, cache_dir={str(cache)!r})
        print(idx.captions[0][0])
    """)
    try:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                              env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    except subprocess.TimeoutExpired:
        pytest.fail("reading a device node in the index cache did not end")
    assert done.returncode == 0 and done.stdout.strip() == "caption 0", done.stderr[-800:]


def test_an_entry_that_is_a_link_is_a_miss_even_to_a_valid_index(tmp_path):
    """Kills: _cache_entry opening without O_NOFOLLOW (a link planted under an entry's name, in a shared folder,
    was read through to whatever plain file it named)."""
    shard, cache, entry = _indexed(tmp_path)
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text(entry.read_text().replace("caption 0", "through the link"))
    entry.unlink()
    entry.symlink_to(elsewhere)
    tar_index.clear_cache()
    assert tar_index.index_tar(shard, cache_dir=cache).captions[0] == ("caption 0",)


def test_the_bound_has_room_past_eight_bytes_a_shard_byte(tmp_path):
    """Kills: the bound's 16 MB of room dropped (8 bytes a shard byte alone: an entry with more JSON than that, a
    small shard's, was a miss every time and the shard scanned again)."""
    shard, cache, entry = _indexed(tmp_path)
    text = entry.read_text().replace("caption 0", "from the cache")
    entry.write_text(text + " " * (8 * shard.stat().st_size))
    tar_index.clear_cache()
    assert tar_index.index_tar(shard, cache_dir=cache).captions[0] == ("from the cache",)
