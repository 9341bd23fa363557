"""Mutation-testing round 48 (data): what the existing tests left open in today's changes to resampled batches and
shard samples whose image is of a type shards are not read for."""
from __future__ import annotations

import io
import json
import tarfile

from PIL import Image

from kizuna.data.sampler import EpochSampler
from kizuna.data.sources import build_index


def test_resampled_epochs_draw_other_batches():
    """Kills: a resampled batch drawn from (seed, b) without the epoch: every epoch repeated the first."""
    s = EpochSampler(1000, 16, seed=3, resampled=True, steps_per_epoch=4)
    assert s.batch(0, 0) != s.batch(1, 0) and s.batch(1, 2) != s.batch(2, 2)
    assert s.batch(1, 0) == EpochSampler(1000, 16, seed=3, resampled=True, steps_per_epoch=4).batch(1, 0)


def _image(fmt):
    buf = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buf, format=fmt)
    return buf.getvalue()


def _shard(path, members):
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return str(path)


def test_an_image_type_is_recognised_in_any_case_and_a_dotted_key_counted_once(tmp_path):
    """Kills: a sample with a dotted image and a .bmp counted twice (dotted_key and unsupported_image). (An
    upper-case .GIF is read as .gif: the member names' extensions are lower-cased where they are split.)"""
    shard = _shard(tmp_path / "s.tar", [
        ("000000000.png", _image("PNG")), ("000000000.txt", b"a red square"),
        ("000000001.GIF", _image("GIF")), ("000000001.txt", b"an upper-case gif"),
        ("000000002.mask.png", _image("PNG")), ("000000002.bmp", _image("BMP")), ("000000002.txt", b"dotted"),
        ("000000003.png", _image("PNG")), ("000000003.txt", b"a last one")])
    idx = build_index(shard)
    assert idx.skips == {"unsupported_image": 1, "dotted_key": 1}
    assert idx.skips.examples["unsupported_image"][0].startswith("key 000000001.gif (shard samples are read for")


def test_an_index_cache_of_the_version_before_is_not_served(tmp_path):
    """Kills: the index cache's version left at 11, whose files counted a .gif sample as missing_image: a cached
    index of version 11 is scanned again, not read."""
    shard = _shard(tmp_path / "s.tar", [
        ("000000000.png", _image("PNG")), ("000000000.txt", b"a red square"),
        ("000000001.gif", _image("GIF")), ("000000001.txt", b"a gif")])
    cache = tmp_path / "cache"
    build_index(shard, cache_dir=cache)
    (file,) = cache.glob("*.json")
    blob = json.loads(file.read_text())
    blob["version"] = 11
    blob["index"]["captions"] = [["stale"] if c is not None else None for c in blob["index"]["captions"]]
    file.write_text(json.dumps(blob))
    from kizuna.data.tar_index import clear_cache

    clear_cache()  # (the process's own memory of the shard: the file is what is tested)
    idx = build_index(shard, cache_dir=cache)
    assert "stale" not in json.dumps([list(c) if c else c for c in idx.captions])
    assert idx.skips == {"unsupported_image": 1}


def test_the_skip_reports_example_sits_beside_the_first_reason_that_has_one():
    """Kills: the example placed at the most frequent reason whether or not it has one (a KeyError, or no example),
    and a damaged shard's example left out where it is the only one."""
    from kizuna.data.sources import SkipCounter

    skips = SkipCounter({"empty_caption": 6, "missing_image": 5}, {"missing_image": ["key 1"]})
    assert skips.report() == "skipped 11 samples: empty_caption=6, missing_image=5 (e.g. key 1)"
    damaged = SkipCounter({"damaged_shard": 1, "truncated": 1}, {"damaged_shard": ["shard a.tar"]})
    assert damaged.report() == ("skipped 1 samples: truncated=1; damaged_shard=1 (a shard: the samples past the "
                                "damage are not counted) (e.g. shard a.tar)")
