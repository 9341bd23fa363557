"""Mutation findings (session 51) on ``resolve_spec``'s one-read-per-source rule and its warnings: said only where
the index is built (``warn=True``), counting image files only, and naming a long list of repeats in short."""
import io
import re
import tarfile
import warnings

import pytest
from PIL import Image

from kizuna.data.sources import resolve_spec


def _shard(path):
    with tarfile.open(path, "w") as tar:
        for name, data in (("0000.txt", b"photo 0"),):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def shards(tmp_path):
    folder = tmp_path / "pairs"
    folder.mkdir()
    for k in range(6):
        _shard(folder / f"{k:06d}.tar")
    Image.new("RGB", (8, 8)).save(folder / "extra.jpg")
    return folder


def test_a_check_that_only_reads_the_kinds_says_nothing_of_images_beside_shards(shards):
    """The config checks call resolve_spec for the kinds alone: the warning about the images beside the shards
    belongs to the read that builds the index, or every check repeats it before training."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(resolve_spec(str(shards))) == 6
    with pytest.warns(UserWarning, match=r"1 image file\(s\) beside its \.tar shards are not read"):
        resolve_spec(str(shards), warn=True)


def test_a_folder_named_like_an_image_beside_shards_is_no_image_file(shards):
    """Only files are counted as unread images: a sub-folder "more.png" is not one of them."""
    (shards / "more.png").mkdir()
    with pytest.warns(UserWarning, match=r"1 image file\(s\) beside") as got:
        resolve_spec(str(shards), warn=True)
    assert not any("2 image file(s)" in str(w.message) for w in got)


def test_many_repeated_sources_are_named_three_and_counted(shards):
    """Five shards named twice: the message names three and says how many more, not a screenful of paths."""
    (shards / "extra.jpg").unlink()
    spec = "::".join([str(shards)] + [str(shards / f"{k:06d}.tar") for k in range(5)])
    with pytest.warns(UserWarning, match=r"5 source\(s\) named more than once are read once: ") as got:
        assert len(resolve_spec(spec, warn=True)) == 6
    message = next(str(w.message) for w in got if "named more than once" in str(w.message))
    assert message.endswith(" and 2 more")
    assert len(re.findall(r"\.tar", message)) == 3
