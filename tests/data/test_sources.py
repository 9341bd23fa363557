import json
import os
import sys
import warnings
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _shards import (  # noqa: E402
    bomb_png,
    color_of,
    image_bytes,
    make_folder,
    make_pair_shard,
    make_shard_dir,
    member_offset,
    pair_members,
    to_tensor,
    truncate,
    write_csv,
    write_tar,
)

from kizuna.data import tar_index  # noqa: E402
from kizuna.data.sources import (  # noqa: E402
    PairDataset,
    SkipCounter,
    build_index,
    expand_braces,
    resolve_spec,
)


def test_expand_braces():
    assert expand_braces("d/{000000..000002}.tar") == [f"d/{i:06d}.tar" for i in range(3)]
    assert expand_braces("{0..10}.tar")[-2:] == ["9.tar", "10.tar"]
    assert expand_braces("{8..11}") == ["8", "9", "10", "11"]
    assert expand_braces("{08..11}") == ["08", "09", "10", "11"]
    assert expand_braces("{0..6..3}") == ["0", "3", "6"]
    assert expand_braces("{2..0}") == ["2", "1", "0"]
    assert expand_braces("{a,b}/{0..1}") == ["a/0", "a/1", "b/0", "b/1"]
    assert expand_braces("x{a,{b,c}}") == ["xa", "xb", "xc"]
    assert expand_braces("plain{}/lit{x}") == ["plain{}/lit{x}"]


def test_a_path_that_exists_as_written_is_no_spec(tmp_path):
    """A folder named "br{a,b}" (or holding "::") could not be used: the spec expanded to bra/ and brb/."""
    for name in ("br{a,b}", "x::y", "s{0..1}"):
        make_shard_dir(tmp_path / name, 1, 2)
        assert build_index(str(tmp_path / name)).keys == [f"{i:09d}" for i in range(2)], name


def test_spec_forms_agree(tmp_path):
    make_shard_dir(tmp_path / "padded", 3, 4, nshards_file=True)
    make_shard_dir(tmp_path / "plain", 3, 4, nshards_file=True, names="{:d}.tar")
    p = tmp_path / "padded"
    expected = [f"{i:09d}" for i in range(12)]
    specs = [
        f"{p}/{{000000..000002}}.tar",
        f"{p}/000000.tar::{p}/{{000001..000002}}.tar",
        [str(p / "000000.tar"), f"{p}/{{000001,000002}}.tar"],
        str(p),
        f"{p}/*.tar",
        f"{tmp_path}/plain/{{0..2}}.tar",
        str(tmp_path / "plain"),
    ]
    for spec in specs:
        idx = build_index(spec)
        assert idx.keys == expected, spec
        assert [c for c in idx.captions] == [(f"caption {k}",) for k in expected]
        assert not idx.skips
    assert [k for k, _ in resolve_spec(str(p))] == ["tar"] * 3

    with pytest.raises(FileNotFoundError):
        build_index(f"{p}/{{000000..000003}}.tar")  # a missing shard must not shrink the epoch
    (p / "nshards.txt").write_text("5")
    with pytest.raises(FileNotFoundError, match="nshards.txt"):
        build_index(str(p))


def test_multi_caption_txt_and_deterministic_sampling(tmp_path):
    caps = [["a dog", "a brown dog", "", "  dog on grass  "], "single"]
    write_tar(tmp_path / "s.tar", pair_members(["000000000", "000000001"], caps))
    idx = build_index(str(tmp_path / "s.tar"), require="caption")
    assert idx.captions == [("a dog", "a brown dog", "dog on grass"), ("single",)]
    assert idx.num_captions == 4

    first = PairDataset(idx, to_tensor, caption_sampling="first")
    assert first[0]["caption"] == "a dog"
    ds = PairDataset(idx, to_tensor, seed=3)
    again = PairDataset(idx, to_tensor, seed=3)
    picks = [ds[(0, e)]["caption"] for e in range(30)]
    assert picks == [again[(0, e)]["caption"] for e in range(30)]  # pure function of (seed, epoch, i)
    assert set(picks) == set(idx.captions[0])  # every caption gets its turn over epochs
    assert ds[(1, 7)]["caption"] == "single"
    assert ds[0]["caption"] == ds[(0, 0)]["caption"]


def test_augmentation_randomness_is_a_function_of_sample_and_epoch(tmp_path):
    make_pair_shard(tmp_path / "s.tar", 0, 3)
    idx = build_index(str(tmp_path / "s.tar"))

    class ExplicitRng:  # the kizuna.data.transforms.TrainTransform protocol
        needs_rng = True

        def __call__(self, img, rng=None):
            return torch.tensor([rng.random()])

    def torch_random(img):
        return torch.rand(2)

    for transform in (ExplicitRng(), torch_random):
        a, b = PairDataset(idx, transform, seed=1), PairDataset(idx, transform, seed=1)
        torch.manual_seed(0)
        first = a[(2, 5)]["image"]
        b[(0, 5)], b[(1, 5)]  # other samples decoded in between change nothing
        assert torch.equal(b[(2, 5)]["image"], first)
        assert not torch.equal(a[(2, 6)]["image"], first)
        assert not torch.equal(a[(1, 5)]["image"], first)
    state = torch.get_rng_state()
    PairDataset(idx, torch_random)[0]
    assert torch.equal(torch.get_rng_state(), state)  # the caller's RNG stream is left alone


def test_classification_shard_labels(tmp_path):
    members = []
    for i in range(4):
        members += [(f"{i:09d}.cls", str(i % 3).encode()), (f"{i:09d}.jpg", image_bytes(color_of(i)))]
    members += [("000000004.cls", b"cat"), ("000000004.jpg", image_bytes())]
    write_tar(tmp_path / "c.tar", members)
    idx = build_index(str(tmp_path / "c.tar"))
    assert idx.labels.tolist() == [0, 1, 2, 0]
    assert idx.has_labels and not idx.has_captions
    assert idx.skips == {"bad_label": 1}
    item = PairDataset(idx)[2]
    assert item["label"] == 2 and item["caption"] is None
    assert item["image"].dtype == torch.uint8 and item["image"].shape == (3, 8, 8)
    assert build_index(str(tmp_path / "c.tar"), require="caption").skips == {"missing_caption": 5}


def test_random_access_reads_the_right_member(tmp_path):
    keys = [f"{i:09d}" for i in range(20)]
    write_tar(tmp_path / "p.tar", pair_members(keys[:10], fmt="png"))
    write_tar(tmp_path / "w.tar", pair_members(keys[10:], fmt="webp"))
    idx = build_index(f"{tmp_path}/p.tar::{tmp_path}/w.tar")
    ds = PairDataset(idx, to_tensor)
    for i in (13, 2, 19, 0, 7):
        x = ds[i]["image"]
        got = (x[:, 4, 4] * 255).round().tolist()
        assert got == pytest.approx(list(color_of(i)), abs=6), i
        assert ds[i]["key"] == keys[i]


def test_csv_and_tsv_sources(tmp_path):
    (tmp_path / "img").mkdir()
    for i in range(3):
        (tmp_path / "img" / f"{i}.jpg").write_bytes(image_bytes(color_of(i)))
    (tmp_path / "img" / "empty.jpg").write_bytes(b"")
    rows = [("img/0.jpg", "zero"), ("img/1.jpg", "  "), ("img/nope.jpg", "missing"),
            ("img/2.jpg", "two"), ("img/empty.jpg", "empty file"), ("", "no path")]
    write_csv(tmp_path / "train.csv", rows)
    idx = build_index(str(tmp_path / "train.csv"))
    assert idx.keys == ["img/0.jpg", "img/2.jpg"]
    assert idx.captions == [("zero",), ("two",)]
    assert idx.skips == {"empty_caption": 1, "missing_image": 2, "empty_image": 1}
    assert "row 4 (img/nope.jpg)" in idx.skips.examples["missing_image"][0]
    ds = PairDataset(idx, to_tensor)
    assert ds[1]["caption"] == "two"
    assert (ds[1]["image"][:, 0, 0] * 255).round().tolist() == pytest.approx(list(color_of(2)), abs=6)

    sub = tmp_path / "meta"
    sub.mkdir()
    write_csv(sub / "x.tsv", [(str(tmp_path / "img/1.jpg"), "abs one", "4")], sep="\t",
              header=("image", "text", "y"))
    idx = build_index(str(sub / "x.tsv"), image_column="image", caption_column="text",
                      label_column="y")
    assert idx.captions == [("abs one",)] and idx.labels.tolist() == [4]
    with pytest.raises(ValueError, match="missing column"):
        build_index(str(sub / "x.tsv"))


def test_folder_source(tmp_path):
    make_folder(tmp_path / "imgs", 5)
    (tmp_path / "imgs" / "b" / "nocap.png").write_bytes(image_bytes(fmt="PNG"))
    (tmp_path / "imgs" / "b" / "blank.png").write_bytes(image_bytes(fmt="PNG"))
    (tmp_path / "imgs" / "b" / "blank.txt").write_text("\n  \n")
    idx = build_index(str(tmp_path / "imgs"))
    assert idx.keys == ["a/img1", "a/img3", "b/img0", "b/img2", "b/img4"]
    assert idx.captions[0] == ("folder caption 1", "second 1")
    assert idx.skips == {"missing_caption": 1, "empty_caption": 1}
    assert PairDataset(idx, to_tensor, caption_sampling="first")[4]["caption"] == "folder caption 4"


def test_folder_side_cars_pair_in_any_case(tmp_path):
    """A tar's extensions are read in any case; a folder's IMG_1.JPG + IMG_1.TXT was "missing_caption"."""
    (tmp_path / "cam").mkdir()
    (tmp_path / "cam" / "IMG_1.JPG").write_bytes(image_bytes())
    (tmp_path / "cam" / "IMG_1.TXT").write_text("a camera's caption")
    (tmp_path / "cam" / "IMG_2.jpg").write_bytes(image_bytes())
    (tmp_path / "cam" / "IMG_2.Cls").write_text("3")
    idx = build_index(str(tmp_path / "cam"))
    assert idx.captions[0] == ("a camera's caption",) and idx.labels.tolist() == [-1, 3] and not idx.skips


def test_folders_read_every_image_format_embed_reads(tmp_path):
    """`kizuna embed` listed .bmp/.gif/.tif files that a training or evaluation folder left out."""
    from PIL import Image

    from kizuna.eval.datasets import load_dataset

    (tmp_path / "pairs").mkdir()
    for ext in ("bmp", "gif", "tif"):
        Image.new("RGB", (8, 8), (200, 10, 10)).save(tmp_path / "pairs" / f"{ext}.{ext}")
        (tmp_path / "pairs" / f"{ext}.txt").write_text(f"a {ext} picture")
    idx = build_index(str(tmp_path / "pairs"), require="caption")
    assert sorted(idx.keys) == ["bmp", "gif", "tif"] and not idx.skips
    assert PairDataset(idx, to_tensor)[1]["image"].shape == (3, 8, 8)
    for c in ("cat", "dog"):
        (tmp_path / "classes" / c).mkdir(parents=True)
        Image.new("L", (8, 8), 90).save(tmp_path / "classes" / c / "0.tif")
    assert load_dataset(tmp_path / "classes").labels.tolist() == [0, 1]


def test_bad_samples_are_skipped_and_counted_exactly(tmp_path):
    good = pair_members([f"{i:09d}" for i in range(4)])
    bad = [
        ("000000010.jpg", b"\xff\xd8\xff\xe0 definitely not a jpeg" * 4),  # corrupt: fails at decode
        ("000000010.txt", b"corrupt"),
        ("000000011.jpg", b""),  # zero-byte image
        ("000000011.txt", b"zero"),
        ("000000012.jpg", image_bytes()),  # caption missing
        ("000000012.json", b"{}"),
        ("000000013.jpg", image_bytes()),
        ("000000013.txt", b" \n "),  # blank caption
        ("000000014.txt", b"orphan caption"),  # no image member
        ("000000015.jpg", image_bytes()[:40]),  # truncated JPEG data: fails at decode
        ("000000015.txt", b"half a jpeg"),
        ("000000016.png", bomb_png()),  # 80 bytes that claim 20000 x 20000 pixels: refused, not decoded
        ("000000016.txt", b"a decompression bomb"),
    ]
    write_tar(tmp_path / "bad.tar", good[:6] + bad + good[6:])
    cut = tmp_path / "cut.tar"
    make_pair_shard(cut, 100, 5)
    off, size = member_offset(cut, "000000103.jpg")
    truncate(cut, off + size // 2)  # 3 whole samples survive, sample 103 is cut mid-image

    tar_index.clear_cache()
    with pytest.warns(RuntimeWarning, match="cut.tar"):
        idx = build_index(f"{tmp_path}/{{bad,cut}}.tar", require="caption")
    assert idx.skips == {"empty_image": 1, "missing_caption": 1, "empty_caption": 1,
                         "missing_image": 1, "truncated": 1}
    assert idx.skips.examples["missing_caption"] == [f"key 000000012 in shard {tmp_path}/bad.tar"]
    assert idx.damaged == [f"{tmp_path}/cut.tar"]
    assert len(idx) == 4 + 3 + 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the damaged shard is reported once per process
        build_index(str(cut))

    ds = PairDataset(idx, to_tensor)
    items = [ds[(i, 0)] for i in range(len(ds))]
    assert sum(x is None for x in items) == 3
    assert ds.skips == {"corrupt_image": 2, "image_too_large": 1}
    assert sorted(x["key"] for x in items if x) == [f"{i:09d}" for i in (0, 1, 2, 3, 100, 101, 102)]
    assert "corrupt_image=2" in ds.skips.report()
    assert ds.skips.report().startswith("skipped 3 samples: corrupt_image=2 (e.g. key 000000010 in shard")
    assert ds.skips.report().endswith("), image_too_large=1")  # the example beside its reason


def test_tar_index_disk_cache(tmp_path):
    shard = tmp_path / "s.tar"
    make_pair_shard(shard, 0, 3, captions=[["x", "y"], "b", "c"])
    cache = tmp_path / "cache"
    tar_index.clear_cache()
    a = build_index(str(shard), cache_dir=cache)
    files = list(cache.glob("*.json"))
    assert len(files) == 1
    tar_index.clear_cache()
    b = build_index(str(shard), cache_dir=cache)
    assert (b.keys, b.captions, b.offsets.tolist()) == (a.keys, a.captions, a.offsets.tolist())

    make_pair_shard(shard, 0, 4)  # rewritten in place: size and mtime change, cache is stale
    os.utime(shard, ns=(1, 1))
    tar_index.clear_cache()
    assert len(build_index(str(shard), cache_dir=cache)) == 4
    assert oct(files[0].stat().st_mode & 0o777) == oct(0o666 & ~0o022 & ~os.umask(os.umask(0o022)))


def test_a_cache_write_that_fails_leaves_no_temp_file(tmp_path, monkeypatch):
    """On a full disk each run left one more half-written tmpXXXX.tmp in the cache folder."""
    import errno
    import json as json_module

    shard, cache = tmp_path / "s.tar", tmp_path / "cache"
    make_pair_shard(shard, 0, 2)
    tar_index.clear_cache()

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(json_module, "dump", full_disk)
    with pytest.warns(RuntimeWarning, match="could not write tar index cache"):
        assert len(build_index(str(shard), cache_dir=cache)) == 2
    assert list(cache.iterdir()) == []


def test_a_shard_replaced_by_one_of_the_same_size_and_mtime_is_indexed_again(tmp_path):
    """cp -p / rsync -a keep the mtime, and tars are padded to 10 KB records, so equal sizes are common: the
    cache served the old file's offsets and captions for the new file."""
    shard, cache = tmp_path / "s.tar", tmp_path / "cache"
    make_pair_shard(shard, 0, 2, captions=["cat", "dog"])
    tar_index.clear_cache()
    assert build_index(str(shard), cache_dir=cache).captions == [("cat",), ("dog",)]
    old = shard.stat()
    make_pair_shard(tmp_path / "new.tar", 0, 2, captions=["cow", "pig"])
    assert (tmp_path / "new.tar").stat().st_size == old.st_size
    os.utime(tmp_path / "new.tar", ns=(old.st_atime_ns, old.st_mtime_ns))
    os.replace(tmp_path / "new.tar", shard)
    tar_index.clear_cache()
    assert build_index(str(shard), cache_dir=cache).captions == [("cow",), ("pig",)]


@pytest.mark.parametrize("shape", ["list", "null", "index without captions"])
def test_a_cache_file_of_another_shape_is_scanned_again(tmp_path, shape):
    """Valid JSON of another shape crashed indexing (KeyError, AttributeError)."""
    shard, cache = tmp_path / "s.tar", tmp_path / "cache"
    make_pair_shard(shard, 0, 2)
    tar_index.clear_cache()
    build_index(str(shard), cache_dir=cache)
    (cached,) = cache.glob("*.json")
    data = json.loads(cached.read_text())
    cached.write_text({"list": '["a list"]', "null": "null",
                       "index without captions": json.dumps({**data, "index": {"keys": []}})}[shape])
    tar_index.clear_cache()
    assert len(build_index(str(shard), cache_dir=cache)) == 2


def test_jpeg_draft_decodes_smaller(tmp_path):
    write_tar(tmp_path / "big.tar", [("000000000.jpg", image_bytes(size=(256, 192))),
                                     ("000000000.txt", b"big")])
    idx = build_index(str(tmp_path / "big.tar"))
    size_of = lambda img: img.size  # noqa: E731
    assert PairDataset(idx, size_of)[0]["image"] == (256, 192)
    assert PairDataset(idx, size_of, draft_size=64)[0]["image"] == (128, 96)  # 1/2: both sides >= 64
    assert PairDataset(idx, size_of, draft_size=24)[0]["image"] == (32, 24)  # 1/8


def test_skip_counter_merging():
    a = SkipCounter()
    a.add("corrupt_image", "key 1 in shard x.tar")
    a.add("empty_caption", "key 2 in shard x.tar")
    a.add("corrupt_image", "key 3 in shard x.tar")
    b = SkipCounter({"corrupt_image": 1, "read_error": 4})
    b.update(a)
    assert b == {"corrupt_image": 3, "empty_caption": 1, "read_error": 4}
    assert b.total == 8 and b["nothing"] == 0
    assert a.report() == ("skipped 3 samples: corrupt_image=2 (e.g. key 1 in shard x.tar), "
                          "empty_caption=1")  # the example beside its own reason


def _shared_root() -> Path:
    env = os.environ.get("KIZUNA_SHARED")
    return Path(env) if env else Path(__file__).resolve().parents[2].parent / "shared"


@pytest.mark.shared_data
def test_shared_flickr8k_and_cifar10():
    data = _shared_root() / "data"
    flickr, cifar = data / "flickr8k" / "train", data / "cifar10" / "test"
    if not (flickr / "nshards.txt").is_file() or not (cifar / "nshards.txt").is_file():
        pytest.skip(f"shared data not found under {data} (set KIZUNA_SHARED to the shared/ folder)")

    idx = build_index(str(flickr), require="caption")
    assert len(idx) == 6091 and idx.num_captions == 30455
    assert all(len(c) == 5 for c in idx.captions) and not idx.skips
    assert idx.keys[0] == "000000000" and idx.keys[-1] == "000006090"
    item = PairDataset(idx, to_tensor, caption_sampling="first")[(6090, 0)]
    assert item["image"].shape == (3, 128, 128) and item["caption"] == idx.captions[6090][0]

    cls = build_index(f"{cifar}/{{000000..000001}}.tar", require="label")
    assert len(cls) == 10000 and not cls.skips
    assert sorted(cls.labels.tolist()) == sorted(list(range(10)) * 1000)
    assert PairDataset(cls, to_tensor)[9999]["image"].shape == (3, 32, 32)


def test_inputs_that_mispaired_crashed_or_dropped_shards(tmp_path):
    """From a bug hunt of the data layer: each case failed before its fix."""
    # a member name repeated within a sample: the second image silently replaced the first
    red, green = image_bytes((255, 0, 0), fmt="PNG"), image_bytes((0, 255, 0), fmt="PNG")
    write_tar(tmp_path / "dup.tar", [("000.png", red), ("000.txt", b"a red square"), ("000.png", green),
                                     ("001.png", green), ("001.txt", b"a green square")])
    index = build_index(str(tmp_path / "dup.tar"))
    assert index.keys == ["001"] and index.skips["duplicate_member"] == 1
    # nshards.txt that undercounts the tars dropped the rest without a word; junk in it was a bare int() error
    shards = tmp_path / "shards"
    make_shard_dir(shards, 3, 2)
    (shards / "nshards.txt").write_text("2")
    with pytest.raises(ValueError, match="nshards.txt says 2 shards but .* holds 3 .tar files"):
        resolve_spec(str(shards))
    (shards / "nshards.txt").write_text("three")
    with pytest.raises(ValueError, match="nshards.txt: expected the number of shards"):
        resolve_spec(str(shards))
    # CSV: Excel's byte-order mark, a caption past csv's 128 KiB field limit, Latin-1 bytes
    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(image_bytes())
    (tmp_path / "bom.csv").write_text("\ufefffilepath,title\nimgs/a.jpg,red\n", encoding="utf-8")
    assert build_index(str(tmp_path / "bom.csv")).captions == [("red",)]
    (tmp_path / "long.csv").write_text("filepath,title\nimgs/a.jpg," + "x" * 200_000 + "\n")
    assert len(build_index(str(tmp_path / "long.csv")).captions[0][0]) == 200_000
    (tmp_path / "latin.csv").write_bytes("filepath,title\nimgs/a.jpg,café\n".encode("latin-1"))
    with pytest.raises(ValueError, match="latin.csv: not UTF-8 text"):
        build_index(str(tmp_path / "latin.csv"))
    # a broken symlink in an image folder crashed the walk; a folder named like a side-car too
    os.symlink(tmp_path / "nowhere.jpg", folder / "b.jpg")
    (folder / "a.txt").mkdir()
    index = build_index(str(folder), require="image")
    assert index.keys == ["a"] and index.skips["missing_image"] == 1


def test_sixteen_bit_and_float_images_keep_their_intensity():
    """A 16-bit grey of 30000 became white (scaled by the image's own maximum); a float image of 0.5 black."""
    import numpy as np
    from PIL import Image

    from kizuna.data.transforms import to_rgb

    grey = np.asarray(to_rgb(Image.fromarray(np.full((4, 4), 30000, np.uint16))))
    assert abs(int(grey[0, 0, 0]) - round(30000 / 65535 * 255)) <= 1
    half = np.asarray(to_rgb(Image.fromarray(np.full((4, 4), 0.5, np.float32), "F")))
    assert abs(int(half[0, 0, 0]) - 128) <= 1


def test_captions_that_clean_to_nothing_are_dropped_at_indexing(tmp_path):
    """"&nbsp;" is not blank, but the tokenizer's cleaning (html-unescape, whitespace) leaves nothing, and
    the tokenizer then stopped the training run at that batch, again on every resume."""
    from kizuna.data.tokenizer import ClipTokenizer

    members = [("000.jpg", image_bytes()), ("000.txt", b"a red thing\n&nbsp;\n"),
               ("001.jpg", image_bytes()), ("001.txt", b"&nbsp;"),
               ("002.jpg", image_bytes()), ("002.txt", b"two green dots")]
    write_tar(tmp_path / "shard.tar", members)
    idx = build_index(str(tmp_path / "shard.tar"))
    assert idx.keys == ["000", "002"] and idx.captions == [("a red thing",), ("two green dots",)]
    assert idx.skips == {"empty_caption": 1}
    ClipTokenizer()([c for caps in idx.captions for c in caps])  # every caption tokenizes
    write_csv(tmp_path / "x.csv", [(str(tmp_path / "a.jpg"), "&nbsp;")], header=("filepath", "title"))
    (tmp_path / "a.jpg").write_bytes(image_bytes())
    assert build_index(str(tmp_path / "x.csv")).skips == {"empty_caption": 1}


def test_no_usable_training_pair_names_why(tmp_path):
    from types import SimpleNamespace

    from kizuna.train.data import build_dataset

    write_csv(tmp_path / "x.csv", [(str(tmp_path / "gone.jpg"), "a caption")])
    cfg = SimpleNamespace(data=str(tmp_path / "x.csv"), csv_image_key="filepath", csv_caption_key="title")
    with pytest.raises(ValueError, match="no usable image-caption samples found .skipped 1 samples: missing_image=1"):
        build_dataset(cfg, {"image_size": 32})


def test_captions_in_a_legacy_encoding_keep_their_letters(tmp_path):
    """A caption file saved as Windows-1252 / Latin-1 ("café" is b"caf\\xe9") became "caf\\ufffd"; a UTF-8 one
    with a byte-order mark kept the mark in its first caption (tar members)."""
    members = [("000.jpg", image_bytes()), ("000.txt", "un café à Zürich".encode("cp1252")),
               ("001.jpg", image_bytes()), ("001.txt", "\ufeffnaïve “quotes”".encode("utf-8")),
               ("002.jpg", image_bytes()), ("002.txt", "“smart quotes” – dash".encode("cp1252")),
               # Notepad's "Unicode": read as Windows-1252 it was a NUL between every letter
               ("003.jpg", image_bytes()), ("003.txt", "a dog\r\nun chien".encode("utf-16"))]
    write_tar(tmp_path / "shard.tar", members)
    expected = [("un café à Zürich",), ("naïve “quotes”",), ("“smart quotes” – dash",), ("a dog", "un chien")]
    assert build_index(str(tmp_path / "shard.tar")).captions == expected
    folder = tmp_path / "photos"
    folder.mkdir()
    for key, data in zip(("000", "001", "002", "003"), (m[1] for m in members[1::2])):
        (folder / f"{key}.jpg").write_bytes(image_bytes())
        (folder / f"{key}.txt").write_bytes(data)
    assert build_index(str(folder)).captions == expected


def test_a_folder_keeps_one_image_per_name_as_a_tar_sample_does(tmp_path):
    """"dup.jpg" and "dup.png" were two samples under the key "dup", both paired with "dup.txt"."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("dup.png", "dup.jpg", "dup.webp", "solo.png"):
        (folder / name).write_bytes(image_bytes(fmt="PNG" if name.endswith(".png") else "JPEG"))
    (folder / "dup.txt").write_text("one caption")
    (folder / "solo.txt").write_text("another")
    idx = build_index(str(folder))
    assert idx.keys == ["dup", "solo"] and [Path(p).name for p in idx.paths] == ["dup.jpg", "solo.png"]
    assert idx.skips == {"duplicate_key": 2}
    assert "dup.png (beside dup.jpg) in folder" in idx.skips.report()
    members = [("dup.jpg", image_bytes()), ("dup.png", image_bytes(fmt="PNG")), ("dup.txt", b"one caption")]
    write_tar(tmp_path / "shard.tar", members)
    assert build_index(str(tmp_path / "shard.tar")).keys == ["dup"]  # the same choice


def test_a_sample_drawn_twice_in_a_resampled_epoch_gets_its_own_caption_and_augmentation(tmp_path):
    """Seeded by (seed, epoch, index) alone, both draws got the same caption and the same crop."""
    from kizuna.data.sampler import EpochSampler

    caps = [[f"caption {k}" for k in range(8)]] * 2
    write_tar(tmp_path / "s.tar", pair_members(["000000000", "000000001"], caps))
    idx = build_index(str(tmp_path / "s.tar"))

    class ExplicitRng:
        needs_rng = True

        def __call__(self, img, rng=None):
            return torch.tensor([rng.random()])

    ds = PairDataset(idx, ExplicitRng(), seed=2)
    sampler = EpochSampler(2, 16, seed=0, resampled=True, steps_per_epoch=2)
    sampler.set_epoch(3)
    keys = [key for batch in sampler for key in batch]
    assert [key[2] for key in keys] == list(range(32))  # the draw number, unique in the epoch
    draws_of_0 = [ds[key] for key in keys if key[0] == 0]
    assert len(draws_of_0) > 5
    assert len({float(item["image"]) for item in draws_of_0}) == len(draws_of_0)
    assert len({item["caption"] for item in draws_of_0}) > 1
    assert ds[keys[0]]["caption"] == ds[keys[0]]["caption"]  # still a pure function of the key
    assert ds[(0, 3)]["image"].equal(PairDataset(idx, ExplicitRng(), seed=2)[(0, 3)]["image"])
    ranks = [EpochSampler(2, 16, rank=r, world_size=2, seed=0, resampled=True, steps_per_epoch=1) for r in (0, 1)]
    drawn = [key[2] for s in ranks for batch in s for key in batch]
    assert sorted(drawn) == list(range(32))  # draw numbers do not repeat across ranks


def test_unpadded_shard_names_in_a_folder_are_in_numeric_order(tmp_path):
    """Sorted as text, 0.tar, 1.tar, 10.tar, 11.tar, 2.tar, ...: "the first N samples" came from shards 0, 1, 10, 11."""
    plain = tmp_path / "plain"
    make_shard_dir(plain, 12, 1, names="{}.tar")
    order = [str(plain / f"{s}.tar") for s in range(12)]
    assert [p for _, p in resolve_spec(str(plain))] == order
    assert build_index(str(plain)).keys == [f"{i:09d}" for i in range(12)]
    assert [p for _, p in resolve_spec(f"{plain}/{{0..11}}.tar")] == order  # brace expansion: unchanged
    (plain / "nshards.txt").write_text("12")
    assert [p for _, p in resolve_spec(str(plain))] == order  # nshards.txt: unchanged
    mixed = tmp_path / "mixed"
    make_shard_dir(mixed, 3, 1, names="part-{}.tar")
    make_pair_shard(mixed / "part-01.tar", 50, 1)  # ties on the number: the name decides, every time
    assert [os.path.basename(p) for _, p in resolve_spec(str(mixed))] == \
        ["part-0.tar", "part-01.tar", "part-1.tar", "part-2.tar"]


def test_a_compressed_shard_is_named_as_such(tmp_path):
    """A gzipped shard named .tar was "truncated or corrupt (bad checksum)"."""
    import gzip

    make_pair_shard(tmp_path / "plain.tar", 0, 2)
    (tmp_path / "s.tar").write_bytes(gzip.compress((tmp_path / "plain.tar").read_bytes()))
    tar_index.clear_cache()
    with pytest.warns(RuntimeWarning, match=r"gzip-compressed.*`zcat s.tar > plain.tar`"):
        idx = build_index(str(tmp_path / "s.tar"))
    assert len(idx) == 0 and idx.damaged == [str(tmp_path / "s.tar")]


def test_a_plain_tar_whose_first_member_looks_like_bzip2_is_read(tmp_path):
    members = [("BZh91AY.jpg", image_bytes()), ("BZh91AY.txt", b"not compressed")]
    write_tar(tmp_path / "s.tar", members)
    tar_index.clear_cache()
    assert build_index(str(tmp_path / "s.tar")).captions == [("not compressed",)]


def test_a_class_folder_keeps_two_images_of_one_name(tmp_path):
    """Without a side-car file to pair, x.jpg and x.png in a class folder are two images."""
    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / "x.jpg").write_bytes(image_bytes())
    (tmp_path / "cat" / "x.png").write_bytes(image_bytes(fmt="PNG"))
    idx = build_index(str(tmp_path), require="image")
    assert len(idx) == 2 and not idx.skips


def test_data_or_long_zeros_after_the_end_of_archive_marker_make_a_damaged_shard(tmp_path):
    """tarfile stops quietly at an all-zero header block: a shard zeroed from the middle on (preallocated,
    half-written), a zeroed header mid-shard, or two tars joined with cat lost every later sample without
    a word. Past the marker a tar holds zero padding only, at most a record."""
    whole = tmp_path / "whole.tar"
    make_pair_shard(whole, 0, 6)
    data = whole.read_bytes()
    header, _ = member_offset(whole, "000000003.jpg")
    header -= 512
    tar_index.clear_cache()

    prealloc = tmp_path / "prealloc.tar"  # samples 0-2 written, the rest of the file still zeros
    prealloc.write_bytes(data[:header] + bytes(len(data) - header + 2 * 1024 * 1024))
    zeroed = tmp_path / "zeroed.tar"  # one header block zeroed: samples 3-5 follow it
    zeroed.write_bytes(data[:header] + bytes(512) + data[header + 512:])
    joined = tmp_path / "joined.tar"
    make_pair_shard(tmp_path / "more.tar", 10, 2)
    joined.write_bytes(data + (tmp_path / "more.tar").read_bytes())
    expected = {prealloc: r"zero bytes after the end-of-archive marker at byte %d" % header,
                zeroed: r"bytes of data after the end-of-archive marker at byte %d" % header,
                joined: r"bytes of data after the end-of-archive marker"}
    for path, message in expected.items():
        with pytest.warns(RuntimeWarning, match=f"{path.name} is truncated or corrupt .*{message}"):
            idx = build_index(str(path))
        assert idx.damaged == [str(path)]
        assert idx.keys == [f"{i:09d}" for i in (range(3) if path != joined else range(6))]
    assert not build_index(str(whole)).damaged  # tarfile's own record padding is a clean end
    blocked = tmp_path / "b64.tar"  # `tar -b 64`: padded to 32 KiB records, a valid archive
    blocked.write_bytes(data + bytes(-len(data) % (64 * 512)))
    assert not build_index(str(blocked)).damaged


def test_a_tsv_caption_that_starts_with_a_quote_keeps_the_rows_after_it(tmp_path):
    """Read with csv's quoting, a tab-separated caption starting with '"' swallowed the following rows into one
    caption. TSV has no quoting; a field wholly quoted as pandas writes it ("a ""red"" bus") is unquoted. CSV
    keeps its quoting."""
    for i in range(4):
        (tmp_path / f"{i}.jpg").write_bytes(image_bytes(color_of(i)))
    (tmp_path / "q.tsv").write_text('filepath\ttitle\n0.jpg\t"Hello" she said\n1.jpg\t"Unbalanced quote\n'
                                    '2.jpg\tthird\n3.jpg\t"a ""red"" bus"\n')
    idx = build_index(str(tmp_path / "q.tsv"), require="caption")
    assert idx.captions == [('"Hello" she said',), ('"Unbalanced quote',), ("third",), ('a "red" bus',)]
    (tmp_path / "q.csv").write_text('filepath,title\n0.jpg,"a, ""red"" bus"\n1.jpg,plain\n')
    assert build_index(str(tmp_path / "q.csv")).captions == [('a, "red" bus',), ("plain",)]


def test_a_tsv_whose_writer_quoted_its_fields_keeps_its_quoting(tmp_path):
    """Read without quoting, a TSV with every field quoted (R's write.table, QUOTE_ALL) had columns named
    '"filepath"', and a caption quoted over two lines (pandas' default for one holding a newline) was cut in two."""
    import csv

    for i in range(2):
        (tmp_path / f"{i}.jpg").write_bytes(image_bytes(color_of(i)))
    for name, quoting, caption in (("all.tsv", csv.QUOTE_ALL, "a cat"), ("nl.tsv", csv.QUOTE_MINIMAL, "a cat\non a mat")):
        with open(tmp_path / name, "w", newline="") as f:
            w = csv.writer(f, delimiter="\t", quoting=quoting)
            w.writerows([["filepath", "title"], ["0.jpg", caption], ["1.jpg", "a dog"]])
        idx = build_index(str(tmp_path / name))
        assert idx.captions == [(caption,), ("a dog",)] and not idx.skips, name


def test_a_tsv_caption_holding_a_tab_keeps_the_files_quoting(tmp_path):
    """csv.writer and pandas quote a caption that holds a tab; that tab inside a quoted field was taken for a
    stray quote swallowing rows, and the whole file was read without quoting: the caption split over two
    columns, a quoted two-line caption became two rows (one skipped), quotes stayed in the captions."""
    import csv

    captions = ["a dog\tsitting", "two lines\nof caption", 'a "red" bus']
    for i in range(3):
        (tmp_path / f"{i}.jpg").write_bytes(image_bytes(color_of(i)))
    with open(tmp_path / "t.tsv", "w", newline="") as f:
        csv.writer(f, delimiter="\t").writerows([["filepath", "title"]] + [[f"{i}.jpg", c] for i, c in enumerate(captions)])
    idx = build_index(str(tmp_path / "t.tsv"))
    assert idx.captions == [(c,) for c in captions] and not idx.skips
    # a stray opening quote that runs over the next rows' tabs is still read without quoting
    (tmp_path / "stray.tsv").write_text('filepath\ttitle\n0.jpg\t"Best day ever\n1.jpg\ta cat\n2.jpg\ta dog\n')
    idx = build_index(str(tmp_path / "stray.tsv"))
    assert idx.captions == [('"Best day ever',), ("a cat",), ("a dog",)]
    # ... also where that field closes at a quote of a later row before any tab (the caption first, as CC3M's
    # caption<tab>url): a row was lost and the next image took a caption made of two rows (the review)
    (tmp_path / "first.tsv").write_text('title\tfilepath\n"Best day ever\t0.jpg\n"Hello" she said\t1.jpg\n'
                                        'a "red" bus\t2.jpg\n')
    idx = build_index(str(tmp_path / "first.tsv"))
    assert idx.captions == [('"Best day ever',), ('"Hello" she said',), ('a "red" bus',)] and not idx.skips


def test_tar_images_whose_key_has_a_dot_are_each_counted(tmp_path):
    """photo.000.jpg .. photo.005.jpg are one WebDataset key "photo" (keys end at the first dot): six samples
    lost were reported as missing_image=1."""
    members = []
    for i in range(6):
        members += [(f"photo.{i:03d}.jpg", image_bytes(color_of(i))), (f"photo.{i:03d}.txt", b"a photo")]
    members += [("ok.jpg", image_bytes()), ("ok.txt", b"fine")]
    write_tar(tmp_path / "dots.tar", members)
    tar_index.clear_cache()
    idx = build_index(str(tmp_path / "dots.tar"), require="caption")
    assert idx.keys == ["ok"]
    assert idx.skips == {"dotted_key": 6}
    # a sample's own dotted images (a mask beside its photo) are part of a kept sample, no skip
    write_tar(tmp_path / "masks.tar", [("0001.jpg", image_bytes()), ("0001.mask.png", image_bytes()),
                                       ("0001.txt", b"a photo")])
    masked = build_index(str(tmp_path / "masks.tar"), require="caption")
    assert masked.keys == ["0001"] and not masked.skips
    assert "photo.000.jpg (WebDataset keys end at the first dot)" in idx.skips.report()


def test_a_tar_whose_samples_are_not_adjacent_is_warned_about_with_the_fix(tmp_path):
    """`tar cf` of a captioned folder stores files in directory order: an image and its .txt rarely sit side by
    side, and training/eval went on with 2 of 200 samples, skips called missing_caption/missing_image, no hint."""
    members = [("a.jpg", image_bytes()), ("b.jpg", image_bytes()), ("a.txt", b"a cat"), ("b.txt", b"a dog"),
               ("c.jpg", image_bytes()), ("c.txt", b"fine")]
    write_tar(tmp_path / "scattered.tar", members)
    tar_index.clear_cache()
    with pytest.warns(RuntimeWarning, match=r"scattered.tar: the members of 2 sample\(s\) are not next to each "
                                            r"other \(key 'a' comes back.*tar --sort=name -cf scattered.tar"):
        idx = build_index(str(tmp_path / "scattered.tar"), require="caption")
    assert idx.keys == ["c"]
    write_tar(tmp_path / "sorted.tar", sorted(members))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert build_index(str(tmp_path / "sorted.tar"), require="caption").keys == ["a", "b", "c"]


def test_a_gnu_sparse_member_is_skipped_not_read_past_its_data(tmp_path):
    """`tar --sparse` stores a file with holes as its data runs: read as `size` bytes from its data offset, a
    caption held the next members' headers and bytes (56 "captions" of other samples)."""
    import shutil
    import subprocess

    if shutil.which("tar") is None or "GNU" not in subprocess.run(["tar", "--version"], capture_output=True,
                                                                 text=True).stdout:
        pytest.skip("GNU tar is needed to write a sparse member")
    src = tmp_path / "src"
    src.mkdir()
    (src / "0000.jpg").write_bytes(image_bytes())
    with open(src / "0000.txt", "wb") as f:  # a caption with a hole: stored sparse
        f.write(b"a cat\n")
        f.seek(1 << 20)
        f.write(b"end\n")
    (src / "0001.jpg").write_bytes(image_bytes())
    (src / "0001.txt").write_text("a dog on the grass")
    subprocess.run(["tar", "--sparse", "--format=gnu", "--sort=name", "-cf", str(tmp_path / "s.tar"), "-C", str(src),
                    "."], check=True)
    tar_index.clear_cache()
    idx = tar_index.index_tar(tmp_path / "s.tar")
    assert idx.skipped.get("sparse_member") == 1 and idx.keys == ["./0000", "./0001"]
    assert idx.captions == [None, ("a dog on the grass",)]


def test_a_shared_index_cache_file_that_is_no_index_of_the_shard_is_scanned_again(tmp_path):
    """A cache folder others can write to: an offset outside the shard (-5) was served and failed deep in decoding
    (a TypeError), and a file nested thousands deep raised RecursionError."""
    shard = tmp_path / "s.tar"
    make_pair_shard(shard, 0, 3)
    cache = tmp_path / "cache"
    tar_index.clear_cache()
    good = tar_index.index_tar(shard, cache_dir=cache)
    (file,) = cache.glob("*.json")
    blob = json.loads(file.read_text())
    for bad in ({**blob["index"], "offsets": [-5] + blob["index"]["offsets"][1:]},
                {**blob["index"], "sizes": blob["index"]["sizes"][:-1]}):
        file.write_text(json.dumps({**blob, "index": bad}))
        tar_index.clear_cache()
        assert tar_index.index_tar(shard, cache_dir=cache).offsets == good.offsets
    file.write_text("[" * 100_000 + "]" * 100_000)
    tar_index.clear_cache()
    assert tar_index.index_tar(shard, cache_dir=cache).keys == good.keys


def test_a_csv_image_not_found_says_where_it_was_looked_for(tmp_path):
    """Paths written relative to the cwd are read relative to the CSV's folder: the skip names the file looked
    for, so the user sees why."""
    (tmp_path / "meta").mkdir()
    write_csv(tmp_path / "meta" / "x.csv", [("meta/img/0.jpg", "a cat")])
    idx = build_index(str(tmp_path / "meta" / "x.csv"))
    looked = os.path.join(str(tmp_path / "meta"), "meta/img/0.jpg")
    assert idx.skips.examples["missing_image"] == [
        f"row 2 (meta/img/0.jpg) in {tmp_path}/meta/x.csv: no file {looked} (relative paths start at the CSV's folder)"]


def test_captions_split_at_line_ends_only_and_a_cls_reads_as_a_side_cars(tmp_path):
    """str.splitlines() broke one caption at U+2028, \\x85, \\x0c, \\x1c-\\x1e (9 captions for 5, a fragment trained
    on; a CSV of the same text kept one); a .cls with a byte-order mark was a bad_label in a tar and a label beside
    the image in a folder."""
    tar_index.clear_cache()
    caption = "a dog\u2028running\x85on\x0cthe\x1cgrass"
    write_tar(tmp_path / "s.tar", [("a.jpg", image_bytes()), ("a.txt", f"{caption}\r\nsecond\rthird".encode()),
                                   ("b.jpg", image_bytes()), ("b.cls", "\ufeff2\n".encode("utf-8")),
                                   ("c.jpg", image_bytes()), ("c.cls", "3".encode("utf-16"))])
    idx = build_index(str(tmp_path / "s.tar"))
    assert idx.captions[0] == (caption, "second", "third")
    assert list(idx.labels[1:]) == [2, 3] and not idx.skips


def test_a_scattered_shard_is_warned_about_in_each_command_that_reads_it(tmp_path, monkeypatch):
    """The warning was once per process: a second command in a notebook (`kizuna.apps.cli.main`) printed the skip
    counts without the reason. Within a command, once (the index is fetched many times)."""
    members = [("a.jpg", image_bytes()), ("a2.jpg", image_bytes()), ("a.txt", b"a cat"), ("a2.txt", b"a dog")]
    write_tar(tmp_path / "scattered.tar", members)
    tar_index.clear_cache()
    with pytest.warns(RuntimeWarning, match="not next to each other"):
        build_index(str(tmp_path / "scattered.tar"), require="caption")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build_index(str(tmp_path / "scattered.tar"), require="caption")  # the same command: said already
    from kizuna.apps import cli

    monkeypatch.setattr(cli, "_main_with_output", lambda argv: 0)
    assert cli.main(["info"]) == 0  # a new command
    with pytest.warns(RuntimeWarning, match="not next to each other"):
        build_index(str(tmp_path / "scattered.tar"), require="caption")


def test_an_unwritable_index_cache_is_said_once_for_all_its_shards(tmp_path, monkeypatch):
    """A read-only KIZUNA_INDEX_CACHE printed one warning per shard (1,000 lines for 1,000 shards)."""
    import errno
    import json as json_module
    import warnings

    for i in range(3):
        make_pair_shard(tmp_path / "data" / f"{i}.tar", i * 2, 2)
    tar_index.clear_cache()

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(json_module, "dump", read_only)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert len(build_index(str(tmp_path / "data"), cache_dir=tmp_path / "cache")) == 6
    assert sum("could not write tar index cache" in str(w.message) for w in caught) == 1
