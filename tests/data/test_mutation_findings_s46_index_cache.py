"""Mutation testing of stop 46's once-per-folder warning for an unwritable tar index cache: reset_warnings()
(which a long-lived host calls between jobs to hear every warning again) left the folder marked as said."""
import errno
import json as json_module
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _shards import make_pair_shard  # noqa: E402

from kizuna.data import tar_index  # noqa: E402
from kizuna.data.sources import build_index  # noqa: E402


def _unwritable_warnings(data, cache):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert len(build_index(str(data), cache_dir=cache)) == 4
    return sum("could not write tar index cache" in str(w.message) for w in caught)


def test_reset_warnings_says_an_unwritable_cache_again(tmp_path, monkeypatch):
    for name in ("a", "b", "c"):  # new shards each time: each is indexed, and its cache written, afresh
        for i in range(2):
            make_pair_shard(tmp_path / name / f"{i}.tar", i * 2, 2)

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(json_module, "dump", read_only)
    tar_index.clear_cache()
    assert _unwritable_warnings(tmp_path / "a", tmp_path / "cache") == 1
    assert _unwritable_warnings(tmp_path / "b", tmp_path / "cache") == 0  # said once for the folder
    tar_index.reset_warnings()
    assert _unwritable_warnings(tmp_path / "c", tmp_path / "cache") == 1  # said again after a reset
