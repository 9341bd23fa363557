"""Each data source read once per epoch (session 51): a shard named twice was two copies of every sample, in one
contrastive batch; image files beside a folder's shards were never read, without a word."""
import io
import re
import tarfile
import warnings

import pytest
from PIL import Image

from kizuna.data.sources import build_index, resolve_spec


def _png(i: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (i, 0, 0)).save(buf, format="PNG")
    return buf.getvalue()


def _shard(path, first: int, n: int):
    with tarfile.open(path, "w") as tar:
        for i in range(first, first + n):
            for name, data in ((f"{i:04d}.png", _png(i)), (f"{i:04d}.txt", f"photo {i}".encode())):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def shards(tmp_path):
    folder = tmp_path / "pairs"
    folder.mkdir()
    _shard(folder / "000000.tar", 0, 3)
    _shard(folder / "000001.tar", 3, 4)
    return folder


@pytest.mark.parametrize("spec", ["{f}/000001.tar::{f}/000001.tar", "{f}::{f}/000001.tar", "{f}::{f}"])
def test_a_source_named_twice_is_read_once_and_said(shards, spec):
    with pytest.warns(UserWarning, match=r"named more than once are read once: .*000001.tar"):
        index = build_index(spec.format(f=shards), require="caption")
    want = 4 if spec.startswith("{f}/") else 7
    assert len(index) == want
    keys = [index[i].key for i in range(len(index))]
    assert len(set(keys)) == len(keys)


def test_a_symlinked_shard_beside_its_target_is_one_source(shards, tmp_path):
    (tmp_path / "link.tar").symlink_to(shards / "000000.tar")
    with pytest.warns(UserWarning, match="named more than once"):
        assert len(resolve_spec(f"{shards}::{tmp_path / 'link.tar'}", warn=True)) == 2


def test_distinct_sources_say_nothing(shards):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(build_index(f"{shards}/000000.tar::{shards}/000001.tar", require="caption")) == 7
        resolve_spec(f"{shards}::{shards}")  # a check that only reads the kinds stays quiet


def test_images_beside_shards_are_named_as_not_read(shards):
    (shards / "extra.png").write_bytes(_png(9))
    (shards / "extra.txt").write_text("an extra photo")
    (shards / "README.md").write_text("not an image")
    with pytest.warns(UserWarning, match=r"1 image file\(s\) beside its .tar shards are not read"):
        assert len(build_index(str(shards), require="caption")) == 7


def test_a_csv_named_through_a_link_in_another_folder_is_another_source(tmp_path):
    """Its relative image paths are read from the folder it is named in: the two name other images."""
    for folder in ("real", "other"):
        (tmp_path / folder / "img").mkdir(parents=True)
        (tmp_path / folder / "img" / "a.png").write_bytes(_png(1 if folder == "real" else 2))
    (tmp_path / "real" / "data.csv").write_text("filepath,title\nimg/a.png,a photo\n")
    (tmp_path / "other" / "data.csv").symlink_to(tmp_path / "real" / "data.csv")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        index = build_index(f"{tmp_path / 'real' / 'data.csv'}::{tmp_path / 'other' / 'data.csv'}", require="caption")
    assert sorted(index[i].path for i in range(len(index))) == [str(tmp_path / f / "img" / "a.png")
                                                               for f in ("other", "real")]


@pytest.fixture
def six_shards(tmp_path):
    """(from the mutation round) six shards and an image beside them"""
    folder = tmp_path / "six"
    folder.mkdir()
    for k in range(6):
        _shard(folder / f"{k:06d}.tar", k, 1)
    Image.new("RGB", (8, 8)).save(folder / "extra.jpg")
    return folder


def test_a_check_that_only_reads_the_kinds_says_nothing_of_images_beside_shards(six_shards):
    """The config checks call resolve_spec for the kinds alone: the warning about the images beside the shards
    belongs to the read that builds the index, or every check repeats it before training."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(resolve_spec(str(six_shards))) == 6
    with pytest.warns(UserWarning, match=r"1 image file\(s\) beside its \.tar shards are not read"):
        resolve_spec(str(six_shards), warn=True)


def test_a_folder_named_like_an_image_beside_shards_is_no_image_file(six_shards):
    """Only files are counted as unread images: a sub-folder "more.png" is not one of them."""
    (six_shards / "more.png").mkdir()
    with pytest.warns(UserWarning, match=r"1 image file\(s\) beside") as got:
        resolve_spec(str(six_shards), warn=True)
    assert not any("2 image file(s)" in str(w.message) for w in got)


def test_many_repeated_sources_are_named_three_and_counted(six_shards):
    """Five shards named twice: the message names three and says how many more, not a screenful of paths."""
    (six_shards / "extra.jpg").unlink()
    spec = "::".join([str(six_shards)] + [str(six_shards / f"{k:06d}.tar") for k in range(5)])
    with pytest.warns(UserWarning, match=r"5 source\(s\) named more than once are read once: ") as got:
        assert len(resolve_spec(spec, warn=True)) == 6
    message = next(str(w.message) for w in got if "named more than once" in str(w.message))
    assert message.endswith(" and 2 more")
    assert len(re.findall(r"\.tar", message)) == 3
