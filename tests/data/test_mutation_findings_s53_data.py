"""Mutation findings (session 53), data: the tar-index memory cache's bound and count, the not-UTF-8 captions'
example key and file, a CSV named from two folders."""
from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _shards import image_bytes, write_tar  # noqa: E402

from kizuna.data import tar_index  # noqa: E402
from kizuna.data.tar_index import clear_cache, index_tar  # noqa: E402


def _shards(tmp_path, count, samples=2):
    return [write_tar(tmp_path / f"{i}.tar", [m for j in range(samples) for m in ((f"k{j}.jpg", image_bytes()),
                                                                                  (f"k{j}.txt", b"a cat"))])
            for i in range(count)]


def test_a_shard_alone_past_the_bound_is_kept(tmp_path, monkeypatch):
    """Kills the `or not _memory_cache` dropped (a shard larger than the bound never kept: every read of it scanned
    it again)."""
    monkeypatch.setattr(tar_index, "MEMORY_CACHE_SAMPLES", 1)
    clear_cache()
    (shard,) = _shards(tmp_path, 1)
    index_tar(shard)
    assert list(tar_index._memory_cache) == [os.path.realpath(shard)]


def test_the_cache_keeps_shards_up_to_exactly_the_bound(tmp_path, monkeypatch):
    """Kills `_memory_samples + len(idx) < MEMORY_CACHE_SAMPLES` (a cache that would be exactly at its bound did
    not keep its last shard)."""
    monkeypatch.setattr(tar_index, "MEMORY_CACHE_SAMPLES", 4)
    clear_cache()
    shards = _shards(tmp_path, 2)
    for shard in shards:
        index_tar(shard)
    assert list(tar_index._memory_cache) == [os.path.realpath(s) for s in shards]


def test_a_shard_indexed_again_is_counted_once(tmp_path, monkeypatch):
    """Kills the earlier entry's samples not taken off the count when a shard changed on disk is indexed again (the
    cache, full at its bound, then kept no shard more: counted twice)."""
    monkeypatch.setattr(tar_index, "MEMORY_CACHE_SAMPLES", 4)
    clear_cache()
    a, b = _shards(tmp_path, 2)
    index_tar(a)
    index_tar(b)
    os.utime(a, ns=(os.stat(a).st_atime_ns, os.stat(a).st_mtime_ns + 10**9))  # the same shard, touched: new index
    index_tar(a)
    assert sorted(tar_index._memory_cache) == sorted(os.path.realpath(s) for s in (a, b))
    assert tar_index._memory_samples == 4


def test_the_not_utf8_warning_names_the_first_such_key(tmp_path):
    """Kills `out.not_utf8_key = key` (the last such key, where the first is said)."""
    shard = write_tar(tmp_path / "s.tar", [
        ("a.jpg", image_bytes()), ("a.txt", b"caf\xe9"),
        ("b.jpg", image_bytes()), ("b.txt", b"na\xefve"),
    ])
    clear_cache()
    with pytest.warns(RuntimeWarning, match=r"2 caption file\(s\) are not UTF-8 \(key 'a'\)"):
        idx = index_tar(shard)
    assert idx.not_utf8 == 2 and idx.not_utf8_key == "a"


def test_the_folder_warning_names_the_first_such_file(tmp_path):
    """Kills `f"e.g. {not_utf8[-1]}"` in sources._add_folder, and a .cls counted as a caption."""
    from kizuna.data.sources import build_index

    for name, caption in (("a", b"caf\xe9"), ("b", b"na\xefve")):
        (tmp_path / f"{name}.png").write_bytes(image_bytes(fmt="PNG"))
        (tmp_path / f"{name}.txt").write_bytes(caption)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        build_index(str(tmp_path))
    said = [str(w.message) for w in caught if "not UTF-8" in str(w.message)]
    assert len(said) == 1 and "2 caption file(s)" in said[0]
    assert f"e.g. {tmp_path / 'a.txt'}" in said[0]


def test_a_label_file_is_no_caption_file(tmp_path):
    """Kills `_read_text(... ".cls"), not_utf8)` (a label side-car counted among the captions not UTF-8)."""
    from kizuna.data.sources import build_index

    (tmp_path / "a.png").write_bytes(image_bytes(fmt="PNG"))
    (tmp_path / "a.txt").write_bytes(b"a cat")
    (tmp_path / "a.cls").write_bytes(b"\xef\xbb\xbf1 \xe9")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            build_index(str(tmp_path))
        except Exception:
            pass
    assert not [w for w in caught if "not UTF-8" in str(w.message)]


def test_one_csv_named_from_two_folders_is_read_from_each(tmp_path):
    """Kills `real = (real, None)` for a CSV in resolve_spec: a CSV linked into another folder reads its relative
    image paths from there, so it is two sources, not one named twice."""
    from kizuna.data.sources import resolve_spec

    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    csv = tmp_path / "x" / "d.csv"
    csv.write_text("filepath,caption\na.png,a cat\n")
    os.symlink(csv, tmp_path / "y" / "d.csv")
    got = resolve_spec(f"{csv}::{tmp_path / 'y' / 'd.csv'}", warn=True)
    assert len(got) == 2


def test_a_sources_identity_is_its_device_and_inode(tmp_path):
    """Kills `(st.st_ino,)` in sources._identity (one inode number on two file systems, two mounts' shards, taken
    for one shard and read once)."""
    from kizuna.data.sources import _identity

    (tmp_path / "a.tar").write_bytes(b"x")
    st = os.stat(tmp_path / "a.tar")
    assert _identity(str(tmp_path / "a.tar")) == (st.st_dev, st.st_ino)
    assert _identity(str(tmp_path / "missing.tar")) == os.path.realpath(tmp_path / "missing.tar")


@pytest.mark.parametrize("size", [(40, 70), (45, 80), (60, 100)])
def test_the_huge_path_takes_columns_first_where_the_height_shrinks_less_than_twice_as_much(monkeypatch, size):
    """Kills `ih - nh > (iw - nw)` for `> (iw - nw) * 2` in transforms._rows_first (an image between 1:1 and 1:2
    resized rows first where Pillow's full resize takes the columns first: up to 11/255 off)."""
    import numpy as np
    from PIL import Image

    from kizuna.data import transforms

    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
    monkeypatch.setattr(transforms, "HUGE_RESIZE_PIXELS", 2**40)
    whole = np.asarray(transforms.fit_shortest(img, 32, "bicubic"), dtype=int)
    monkeypatch.setattr(transforms, "HUGE_RESIZE_PIXELS", 0)
    part = np.asarray(transforms.fit_shortest(img, 32, "bicubic"), dtype=int)
    assert np.abs(whole - part).max() <= 1


def test_big_endian_utf16_is_no_legacy_file():
    """Kills `data[:2] in (b"\\xff\\xfe",)` in tar_index.is_utf8 (a big-endian UTF-16 caption, read as such, counted
    and warned of as not UTF-8)."""
    from kizuna.data.tar_index import decode_text, is_utf8

    data = "\ufeffcafé 猫".encode("utf-16-be")
    assert data[:2] == b"\xfe\xff"
    assert decode_text(data) == "café 猫" and is_utf8(data)


def test_no_pixel_limit_decodes_without_a_word(monkeypatch):
    """Kills `if img.width * img.height > limit` without `limit and` in images._say_a_bomb_by_name (Pillow's limit
    turned off, PIL.Image.MAX_IMAGE_PIXELS = None, failed every image with a TypeError)."""
    import io

    from PIL import Image

    from kizuna.data.images import decode_image

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    buf = io.BytesIO()
    Image.new("RGB", (40, 30)).save(buf, format="PNG")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert decode_image(buf.getvalue(), "a.png").size == (40, 30)


def test_an_index_cached_before_the_caption_fix_is_scanned_again(tmp_path, monkeypatch):
    """Kills `_CACHE_VERSION = 13` (the disk caches of the whole-file Windows-1252 decoding, no not_utf8 count,
    served after the fix): a cache written under version 13 is not read."""
    shard = write_tar(tmp_path / "s.tar", [("a.jpg", image_bytes()), ("a.txt", b"caf\xe9")])
    cache = tmp_path / "cache"
    current = tar_index._CACHE_VERSION
    monkeypatch.setattr(tar_index, "_CACHE_VERSION", 13)  # as the release before it wrote it
    clear_cache()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        index_tar(shard, cache_dir=cache)
    monkeypatch.setattr(tar_index, "_CACHE_VERSION", current)
    fp = tar_index._fingerprint(shard)
    assert tar_index._load_disk(cache, fp, shard) is None
