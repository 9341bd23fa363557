"""Files from the wild (session 53): caption files not quite UTF-8, slivers resized on the huge-image path, images past
Pillow's decompression-bomb warning."""
from __future__ import annotations

import io
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from _shards import image_bytes, write_tar  # noqa: E402

from kizuna.data import transforms  # noqa: E402
from kizuna.data.images import decode_image  # noqa: E402
from kizuna.data.tar_index import clear_cache, decode_text, index_tar, is_utf8  # noqa: E402


@pytest.mark.parametrize("data, text, utf8", [
    ("a dog 🐶 at the caf".encode() + b"\xe9", "a dog 🐶 at the café", False),  # one Latin-1 byte: the rest kept
    ("猫が座っている ".encode() + "café".encode("cp1252"), "猫が座っている café", False),
    ("café".encode("cp1252"), "café", False),  # a whole legacy file, as before
    ("café 🐶".encode(), "café 🐶", True),
    ("\ufeffhi".encode(), "hi", True),
    ("hi".encode("utf-16"), "hi", True),
    (b"\x81 ok", "\ufffd ok", False),  # unassigned in Windows-1252
])
def test_a_caption_keeps_its_utf8_and_reads_only_its_other_bytes_as_windows_1252(data, text, utf8):
    assert decode_text(data) == text
    assert is_utf8(data) is utf8


def test_a_shard_with_captions_that_are_not_utf8_is_said_once_naming_a_key(tmp_path):
    shard = write_tar(tmp_path / "s.tar", [
        ("a.jpg", image_bytes()), ("a.txt", "a dog 🐶 at the caf".encode() + b"\xe9"),
        ("b.jpg", image_bytes()), ("b.txt", "a cat".encode()),
    ])
    clear_cache()
    with pytest.warns(RuntimeWarning, match=r"s\.tar: 1 caption file\(s\) are not UTF-8 \(key 'a'\)"):
        idx = index_tar(shard)
    assert idx.captions[0] == ("a dog 🐶 at the café",) and idx.not_utf8 == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        index_tar(shard)  # said once


def test_a_folder_with_side_cars_that_are_not_utf8_is_said(tmp_path):
    from kizuna.data.sources import build_index

    for name, caption in (("a", b"caf\xe9 " + "🐶".encode()), ("b", "a cat".encode())):
        (tmp_path / f"{name}.png").write_bytes(image_bytes(fmt="PNG"))
        (tmp_path / f"{name}.txt").write_bytes(caption)
    with pytest.warns(RuntimeWarning, match=r"1 caption file\(s\) are not UTF-8 \(e\.g\. .*a\.txt\)"):
        index = build_index(str(tmp_path))
    assert len(index) == 2


@pytest.mark.parametrize("size", [(3, 900), (3, 2100), (900, 3), (2, 500), (50, 5000), (33, 100), (300, 4000)])
@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear"])
def test_the_huge_image_path_gives_the_pixels_of_resize_then_crop(monkeypatch, size, interpolation):
    """A sliver resized only where the crop keeps it was 19/255 off resize-then-crop (Pillow's box resize of both
    axes at once picks its own order of passes); each pass alone, in the full resize's order, is within 1/255."""
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
    for crop in (32, 224, (32, 48)):
        monkeypatch.setattr(transforms, "HUGE_RESIZE_PIXELS", 2**40)
        whole = np.asarray(transforms.fit_shortest(img, crop, interpolation), dtype=int)
        monkeypatch.setattr(transforms, "HUGE_RESIZE_PIXELS", 0)  # every resize takes the huge path
        part = np.asarray(transforms.fit_shortest(img, crop, interpolation), dtype=int)
        assert np.abs(whole - part).max() <= 1, (size, crop)


def test_the_real_sliver_is_exact():
    img = Image.fromarray(np.random.default_rng(1).integers(0, 255, (2100, 3, 3), dtype=np.uint8))  # past 2**25 at 224
    part = np.asarray(transforms.fit_shortest(img, 224), dtype=int)
    h = 2100 * 224 // 3
    whole = np.asarray(img.resize((224, h), Image.Resampling.BICUBIC).crop(
        (0, round((h - 224) / 2), 224, round((h - 224) / 2) + 224)), dtype=int)
    assert np.abs(whole - part).max() == 0


def test_an_image_past_the_bomb_warning_is_named(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 40 x 30 = 1,200 pixels: warned, decoded
    buf = io.BytesIO()
    Image.new("RGB", (40, 30)).save(buf, format="PNG")
    with pytest.warns(Image.DecompressionBombWarning, match=r"^shard\.tar:key7: 40 x 30 = 1200 pixels, past "):
        img = decode_image(buf.getvalue(), "shard.tar:key7")
    assert img.size == (40, 30)


def test_the_command_line_shows_the_named_bomb_warning_only(monkeypatch, capsys):
    from kizuna.data.loader import CommandWarnings

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    buf = io.BytesIO()
    Image.new("RGB", (40, 30)).save(buf, format="PNG")
    voice = CommandWarnings("kizuna embed")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        monkeypatch.setattr(warnings, "showwarning", voice)
        decode_image(buf.getvalue(), "a.png")
    said = capsys.readouterr().err.strip().splitlines()
    assert len(said) == 1 and said[0].startswith("kizuna embed: warning: a.png: 40 x 30 = 1200 pixels")


def test_decoding_leaves_the_processs_warning_registries_alone():
    """A catch_warnings around Image.open reset every module's once-per-location registry at each image: a
    training step's warning was shown at every step."""
    buf = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buf, format="PNG")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        for _ in range(3):
            decode_image(buf.getvalue(), "a.png")
            warnings.warn("a per-step warning", UserWarning)
    assert len(caught) == 1


def test_one_shard_under_two_names_is_read_once(tmp_path):
    """`Data/a.tar` and `data/a.tar` are one file on macOS and Windows, which the real paths' text did not tell: read
    twice, silently (here a hard link plays the second spelling)."""
    from kizuna.data.sources import resolve_spec

    shard = write_tar(tmp_path / "a.tar", [("k.jpg", image_bytes()), ("k.txt", b"a cat")])
    os.link(shard, tmp_path / "A.tar")
    with pytest.warns(UserWarning, match="1 source\\(s\\) named more than once are read once"):
        assert resolve_spec(f"{shard}::{tmp_path / 'A.tar'}", warn=True) == [("tar", str(shard))]


def test_the_index_memory_cache_keeps_the_newest_shards_up_to_its_bound(tmp_path, monkeypatch):
    from kizuna.data import tar_index

    monkeypatch.setattr(tar_index, "MEMORY_CACHE_SAMPLES", 5)
    clear_cache()
    shards = [write_tar(tmp_path / f"{i}.tar", [m for j in range(2) for m in ((f"k{j}.jpg", image_bytes()),
                                                                              (f"k{j}.txt", b"a cat"))])
              for i in range(4)]
    for shard in shards:
        index_tar(shard)
    assert len(tar_index._memory_cache) == 2  # 2 samples each: the first two within 5
    assert list(tar_index._memory_cache) == [os.path.realpath(s) for s in shards[:2]]
    scanned = []
    scan = tar_index._scan
    monkeypatch.setattr(tar_index, "_scan", lambda *a: scanned.append(a[0]) or scan(*a))
    for shard in shards:  # a second pass in order: the kept ones hit (dropping the oldest, none did)
        index_tar(shard)
    assert scanned == [str(s) for s in shards[2:]]
    assert len(index_tar(shards[3])) == 2
