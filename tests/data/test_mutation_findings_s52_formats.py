"""Mutation findings (session 52): shard folders with compressed or upper-case tars, TSV refusals naming their
file, group_rows_by_image keeping the shard stamps, and tar members named like WebDataset's metadata."""
import gzip
import sys
import warnings
from pathlib import Path

import pytest

from kizuna.data.sources import build_index, group_rows_by_image, resolve_spec
from kizuna.data.tar_index import clear_cache, index_tar

sys.path.insert(0, str(Path(__file__).parent))
from _shards import image_bytes, write_tar as _tar  # noqa: E402


def _png(i=0):
    return image_bytes((i * 40 % 256, 10, 10), fmt="PNG")


def _shard(path, n=2, start=0):
    _tar(path, [m for i in range(start, start + n)
                for m in ((f"{i:06d}.png", _png(i)), (f"{i:06d}.txt", f"caption {i}".encode()))])


def test_resolve_spec_without_warn_says_nothing_of_compressed_shards_beside_tars(tmp_path):
    _shard(tmp_path / "000000.tar")
    (tmp_path / "000001.tar.gz").write_bytes(gzip.compress(b"x"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_spec(str(tmp_path)) == [("tar", str(tmp_path / "000000.tar"))]
    with pytest.warns(UserWarning, match="compressed shard"):
        resolve_spec(str(tmp_path), warn=True)


def test_upper_case_compressed_shards_are_refused_with_the_uncompressed_name(tmp_path):
    (tmp_path / "000000.TAR.GZ").write_bytes(gzip.compress(b"x"))
    with pytest.raises(ValueError, match=r"its shards are compressed \(000000.TAR.GZ\).*> 000000.tar`"):
        resolve_spec(str(tmp_path))


def test_a_tgz_shard_is_named_with_its_tar_name_and_many_are_counted(tmp_path):
    for i in range(5):
        (tmp_path / f"{i:06d}.tgz").write_bytes(gzip.compress(b"x"))
    with pytest.raises(ValueError) as info:
        resolve_spec(str(tmp_path))
    message = str(info.value)
    assert "000000.tgz, 000001.tgz, 000002.tgz and 2 more" in message
    assert "zcat 000000.tgz > 000000.tar`" in message


def test_a_single_upper_case_tar_path_is_a_tar_source(tmp_path):
    _shard(tmp_path / "DATA.TAR")
    assert resolve_spec(str(tmp_path / "DATA.TAR")) == [("tar", str(tmp_path / "DATA.TAR"))]


def test_group_rows_by_image_keeps_the_shard_stamps(tmp_path):
    """A tar shard beside a CSV of two rows per image: grouped, the shard's stamps (checked at every read) stay."""
    clear_cache()
    _shard(tmp_path / "000000.tar")
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "0.png").write_bytes(_png(0))
    (tmp_path / "caps.csv").write_text("filepath,title\nimg/0.png,one\nimg/0.png,two\n")
    index = build_index(f"{tmp_path / '000000.tar'}::{tmp_path / 'caps.csv'}", require="caption")
    assert index.source_stamps and len(index) == 4
    grouped = group_rows_by_image(index)
    assert len(grouped) == 3
    assert grouped.source_stamps == index.source_stamps


def test_a_tsv_refusal_read_without_quoting_names_its_file(tmp_path):
    img = tmp_path / "img"
    img.mkdir()
    for i in range(2):
        (img / f"{i}.png").write_bytes(_png(i))
    (tmp_path / "named.tsv").write_text('filepath\ttitle\nimg/0.png\t"Best day ever\nimg/1.png\t"a photo\tof 1"\n')
    with pytest.raises(ValueError, match=r"named\.tsv: line \d+ has 3 fields"):
        build_index(str(tmp_path / "named.tsv"), require="caption")


def test_a_dunder_named_image_at_the_top_level_is_a_sample_as_in_webdataset(tmp_path):
    """Only a top-level name that starts AND ends with __ is metadata (WebDataset's rule): __a.png is a sample's."""
    clear_cache()
    path = tmp_path / "s.tar"
    _tar(path, [("__a.png", _png(0)), ("__a.txt", b"caption a"), ("__index__", b"0")])
    assert index_tar(str(path)).keys == ["__a"]


def test_a_nested_member_named_like_metadata_is_still_a_members_file(tmp_path):
    """A __x.y__ inside a folder is no metadata (only top-level ones are): it is read (here, a sample without an
    image, counted as a skip); left out, it vanished from the counts."""
    clear_cache()
    with_meta, without = tmp_path / "a.tar", tmp_path / "b.tar"
    _tar(with_meta, [("d/0.png", _png(0)), ("d/0.txt", b"c"), ("d/__m.x__", b"m")])
    _tar(without, [("d/0.png", _png(0)), ("d/0.txt", b"c")])
    assert index_tar(str(with_meta)).skipped != index_tar(str(without)).skipped


def test_hidden_image_files_do_not_make_a_folder_of_compressed_shards_an_image_folder(tmp_path):
    (tmp_path / "000000.tar.gz").write_bytes(gzip.compress(b"x"))
    (tmp_path / "._000000.jpg").write_bytes(b"\x00" * 8)  # (macOS's AppleDouble file of a copy)
    with pytest.raises(ValueError, match="its shards are compressed"):
        resolve_spec(str(tmp_path))
