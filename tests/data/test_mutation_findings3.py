"""The loader's batches and resume state, the tar shard index (keys, labels, captions, its cache, damaged shards) and
image opening, checked against hand-written expectations and the bytes on disk (a mutation hunt over loader.py,
tar_index.py and images.py found each of these unchecked)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _shards import image_bytes, make_pair_shard, member_offset, write_tar  # noqa: E402

from kizuna.data import tar_index  # noqa: E402
from kizuna.data.images import ImageError, decode_image, list_images, load_image, upright  # noqa: E402
from kizuna.data.loader import Collate, check_epoch_gave_samples, make_loader  # noqa: E402
from kizuna.data.sampler import EpochSampler  # noqa: E402
from kizuna.data.tar_index import index_tar, parse_captions, parse_label  # noqa: E402


class _Plain(torch.utils.data.Dataset):
    """Samples with an image and a key only: no label, no index (a user's own dataset)."""

    def __len__(self):
        return 10

    def __getitem__(self, key):
        i = key[0]
        return {"image": torch.full((1,), float(i)), "key": str(i)}


# ----------------------------------------------------------------------------- loader.py
def test_a_sample_without_a_label_or_index_collates_to_minus_one():
    """Kills Collate's label default -1 -> 0: a caption-only sample became class 0."""
    batch = Collate()([{"image": torch.zeros(1), "key": "a"}, {"image": torch.ones(1), "key": "b", "label": 4}])
    assert batch["labels"].tolist() == [-1, 4]
    assert batch["indices"].tolist() == [-1, -1]
    assert batch["labels"].dtype == torch.long


def test_the_state_after_set_epoch_is_the_new_epochs_start():
    """Kills _position() taking the delivered position of an earlier epoch: after a whole epoch 0 and
    set_epoch(1), the state said epoch 1 with all its batches consumed (a resume skipped epoch 1)."""
    sampler = EpochSampler(10, 4, seed=0, drop_last=False)
    loader = make_loader(_Plain(), sampler)
    sampler.set_epoch(0)
    assert len(list(loader)) == 3 and loader.epoch_finished
    sampler.set_epoch(1)
    state = loader.state_dict()
    assert (state["epoch"], state["batches_consumed"]) == (1, 0)
    assert not loader.epoch_finished


def test_an_epoch_with_no_batch_at_all_is_no_error():
    """Kills check_epoch_gave_samples raising on 0 batches: a run resumed at an epoch's very end stopped."""
    check_epoch_gave_samples("data.tar", 0, 0, "")
    check_epoch_gave_samples("data.tar", 3, 1, "")
    with pytest.raises(ValueError, match=r"data.tar: a whole epoch \(3 batches\) gave no usable sample: skipped 9"):
        check_epoch_gave_samples("data.tar", 3, 0, "skipped 9")


def test_iterating_a_loader_leaves_torchs_global_random_state_alone():
    """Kills make_loader's own generator dropped: every iter() then drew the worker base seed from the global torch
    RNG, and a resumed run (which calls iter() at another point) drifted from the uninterrupted one."""
    sampler = EpochSampler(10, 4, seed=0)
    loader = make_loader(_Plain(), sampler)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(123)
        expected = torch.rand(4)
        torch.manual_seed(123)
        sampler.set_epoch(0)
        assert len(list(loader)) == 2
        assert torch.equal(torch.rand(4), expected)


# ----------------------------------------------------------------------------- tar_index.py
def test_parse_label_reads_float_written_whole_numbers():
    """Kills parse_label's "3.0" handling reduced to "3.": pandas writes an int column with a NaN as 3.0."""
    assert [parse_label(t) for t in ("3", "3.0", "3.00", " 7.0\n", "3.", "0.0")] == [3, 3, 3, 7, 3, 0]
    assert [parse_label(t) for t in ("3.5", "-1", "-1.0", "x", "", ".0")] == [-2] * 6


def test_blank_caption_lines_are_dropped_in_the_shard_index(tmp_path):
    """Kills parse_captions keeping blank lines: the index (and its cache) held "" captions, and a blank .txt
    was ("", "") rather than the documented ()."""
    write_tar(tmp_path / "s.tar", [("a.jpg", image_bytes()), ("a.txt", b"a cat\n\n   \nsecond\n"),
                                   ("b.jpg", image_bytes()), ("b.txt", b" \n "),
                                   ("c.jpg", image_bytes()), ("c.cls", b"1")])
    tar_index.clear_cache()
    idx = index_tar(tmp_path / "s.tar")
    assert idx.captions == [("a cat", "second"), (), None]
    assert parse_captions("\n x \r\n\r\ny\r") == ("x", "y")


def _cached(tmp_path, n=3):
    shard, cache = tmp_path / "s.tar", tmp_path / "cache"
    make_pair_shard(shard, 0, n, captions=[f"caption {i}" for i in range(n)])
    tar_index.clear_cache()
    good = index_tar(shard, cache_dir=cache)
    (file,) = cache.glob("*.json")
    return shard, cache, file, good


def test_a_cache_file_of_another_version_is_scanned_again(tmp_path):
    """Kills _load_disk's version check: a cache written by an older layout (other scan semantics) was served."""
    shard, cache, file, good = _cached(tmp_path)
    blob = json.loads(file.read_text())
    blob["version"] -= 1
    blob["index"]["captions"] = [["stale"]] * 3
    file.write_text(json.dumps(blob))
    tar_index.clear_cache()
    assert index_tar(shard, cache_dir=cache).captions == [("caption 0",), ("caption 1",), ("caption 2",)]


@pytest.mark.parametrize("label", [3_000_000_000, -3, "1", 1.5])
def test_a_cache_file_with_a_label_no_scan_gives_is_scanned_again(tmp_path, label):
    """A cache written before a .cls of 2^31 or more was a bad label (its version was not raised) kept 3000000000:
    `vit train` then built 3e9 class names (MemoryError), and a 20-digit one overflowed the int64 column."""
    shard, cache, file, good = _cached(tmp_path)
    blob = json.loads(file.read_text())
    blob["index"]["labels"][1] = label
    file.write_text(json.dumps(blob))
    tar_index.clear_cache()
    assert index_tar(shard, cache_dir=cache).labels == good.labels


@pytest.mark.parametrize("column", ["keys", "sizes", "captions", "labels", "image_exts"])
def test_a_cache_file_with_a_short_column_is_scanned_again(tmp_path, column):
    """Kills _load_disk's equal-length check: a column one short (the offsets intact) was served, and its last
    sample lost its size, caption or label."""
    shard, cache, file, good = _cached(tmp_path)
    blob = json.loads(file.read_text())
    blob["index"][column] = blob["index"][column][:-1]
    file.write_text(json.dumps(blob))
    tar_index.clear_cache()
    idx = index_tar(shard, cache_dir=cache)
    assert getattr(idx, column) == getattr(good, column) and len(getattr(idx, column)) == 3
    assert idx.sizes == [member_offset(shard, f"{i:09d}.jpg")[1] for i in range(3)]


def test_a_member_name_repeated_in_a_sample_skips_the_sample_whichever_member_follows(tmp_path):
    """Kills the duplicate flag reset by the next member: 0.jpg, 0.jpg, 0.txt paired the caption with the second
    image, which one it meant unknown."""
    write_tar(tmp_path / "s.tar", [("0.jpg", image_bytes((250, 0, 0))), ("0.jpg", image_bytes((0, 0, 250))),
                                   ("0.txt", b"a red square"), ("1.jpg", image_bytes()), ("1.txt", b"kept")])
    tar_index.clear_cache()
    idx = index_tar(tmp_path / "s.tar")
    assert idx.keys == ["1"] and idx.captions == [("kept",)]
    assert idx.skipped == {"duplicate_member": 1} and idx.skip_keys == {"duplicate_member": ["0"]}


def test_the_warning_for_two_joined_tars_names_where_the_data_starts(tmp_path):
    """Kills _first_nonzero's offset (pos + len(stripped)): the warning named a wrong byte and a wrong amount of
    data after the end-of-archive marker."""
    import tarfile

    make_pair_shard(tmp_path / "a.tar", 0, 2)
    make_pair_shard(tmp_path / "b.tar", 10, 1)
    first, second = (tmp_path / "a.tar").read_bytes(), (tmp_path / "b.tar").read_bytes()
    (tmp_path / "joined.tar").write_bytes(first + second)
    with tarfile.open(tmp_path / "a.tar") as tf:
        last = tf.getmembers()[-1]
    marker = last.offset_data + -(-last.size // 512) * 512  # the block after the last member's data
    tar_index.clear_cache()
    with pytest.warns(RuntimeWarning) as caught:
        idx = index_tar(tmp_path / "joined.tar")
    assert f"{len(second)} bytes of data after the end-of-archive marker at byte {marker}, " \
           f"from byte {len(first)}:" in str(caught[0].message)
    assert idx.truncated and idx.keys == ["000000000", "000000001"]


def test_a_shard_cut_right_after_a_members_data_keeps_that_sample(tmp_path):
    """Kills the readable test `offset + size <= file size` made `<`: a member whose data ends at the file's
    last byte is whole, and its sample was dropped as truncated."""
    shard = tmp_path / "cut.tar"
    make_pair_shard(shard, 0, 3)
    off, size = member_offset(shard, "000000002.txt")
    with open(shard, "r+b") as f:
        f.truncate(off + size)
    tar_index.clear_cache()
    with pytest.warns(RuntimeWarning, match="cut.tar is truncated or corrupt"):
        idx = index_tar(shard)
    assert idx.keys == ["000000000", "000000001", "000000002"] and idx.captions[2] == ("caption 000000002",)
    assert "truncated" not in idx.skipped


def test_a_sample_with_several_images_reads_the_preferred_one(tmp_path):
    """Kills the image pick following the tar's member order instead of IMAGE_EXTS' preference (jpg first)."""
    write_tar(tmp_path / "s.tar", [("0.png", image_bytes(fmt="PNG")), ("0.webp", image_bytes(fmt="WEBP")),
                                   ("0.jpg", image_bytes()), ("0.txt", b"three images")])
    tar_index.clear_cache()
    idx = index_tar(tmp_path / "s.tar")
    assert idx.image_exts == ["jpg"]
    assert (idx.offsets[0], idx.sizes[0]) == member_offset(tmp_path / "s.tar", "0.jpg")


def test_a_captions_only_sample_at_the_cut_of_a_damaged_shard_is_truncated_not_missing_an_image(tmp_path):
    """Kills the last group of a damaged shard counted as missing_image: its image was lost to the cut."""
    shard = tmp_path / "cut.tar"
    write_tar(shard, [("0.jpg", image_bytes()), ("0.txt", b"whole"), ("1.txt", b"its image is cut off"),
                      ("1.jpg", image_bytes())])
    off, size = member_offset(shard, "1.txt")
    with open(shard, "r+b") as f:
        f.truncate(off + size)
    tar_index.clear_cache()
    with pytest.warns(RuntimeWarning, match=r"skipped 1 partial sample\(s\) at the damage"):
        idx = index_tar(shard)
    assert idx.keys == ["0"] and idx.skipped == {"truncated": 1} and idx.skip_keys == {"truncated": ["1"]}


# ----------------------------------------------------------------------------- images.py
def test_an_empty_or_folder_path_is_named_with_why(tmp_path):
    """Kills the empty-file and is-a-folder checks dropped: the errors said "not an image file (format not
    recognised)" and "cannot be read (Is a directory)" instead."""
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "dir.jpg").mkdir()
    with pytest.raises(ImageError, match=r"empty.jpg: empty file \(0 bytes\)$"):
        load_image(tmp_path / "empty.jpg")
    with pytest.raises(ImageError, match=r"^x.png: empty file \(0 bytes\)$"):
        decode_image(b"", "x.png")
    with pytest.raises(ImageError, match=r"dir.jpg: is a folder, not an image$"):
        load_image(tmp_path / "dir.jpg")


def _png_with_exif_after_the_pixels(img, orientation: int) -> bytes:
    import io
    import struct

    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    img.save(buf, "PNG", exif=exif.tobytes())
    data, pos, chunks = buf.getvalue(), 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        chunks.append(data[pos:pos + 12 + length])
        pos += 12 + length
    exif_chunk = next(c for c in chunks if c[4:8] == b"eXIf")
    rest = [c for c in chunks if c is not exif_chunk]
    return data[:8] + b"".join(rest[:-1]) + exif_chunk + rest[-1]  # eXIf just before IEND


def test_an_opened_png_whose_exif_follows_its_pixels_is_turned_upright():
    """Kills upright() skipping PNGs without EXIF in img.info: a PNG's eXIf chunk after the image data is read only
    once the pixels load, so an Image.open()ed one (a user's image given to the transform) stayed on its side."""
    import io

    from PIL import Image

    img = Image.new("RGB", (4, 2), (255, 0, 0))
    img.putpixel((0, 0), (0, 0, 255))
    data = _png_with_exif_after_the_pixels(img, 6)
    opened = Image.open(io.BytesIO(data))
    assert "exif" not in opened.info  # the case: nothing in info before the load
    out = upright(opened)
    # orientation 6: the stored image is turned 90 degrees clockwise to be seen; its top-left corner goes top-right
    assert out.size == (2, 4)
    assert out.getpixel((1, 0)) == (0, 0, 255) and out.getpixel((0, 0)) == (255, 0, 0)


def test_list_images_takes_upper_case_suffixes_and_leaves_hidden_folders_out(tmp_path):
    """Kills list_images' suffix compared without lower() (a camera's IMG_0001.JPG was no image) and walk_folder
    going into hidden folders (.thumbnails, .git: their files were listed as images)."""
    for rel in ("a/IMG_0001.JPG", "a/b.Png", "c.jpeg", ".thumbs/t.jpg", "a/.cache/x.png", "a/notes.txt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(image_bytes())
    assert list_images(tmp_path) == [tmp_path / "a" / "IMG_0001.JPG", tmp_path / "a" / "b.Png", tmp_path / "c.jpeg"]
