"""Data formats against their reference readers (session 52): pandas' CSV rules (a row with more fields than the
header, a header naming a column twice), a shards folder's upper-case and compressed tars, and WebDataset's
members that are no sample's file."""
import gzip
import shutil
import sys
from pathlib import Path

import pytest

from kizuna.data.sources import build_index
from kizuna.data.tar_index import clear_cache, index_tar

sys.path.insert(0, str(Path(__file__).parent))
from _shards import image_bytes, write_tar  # noqa: E402


def _png(i=0):
    return image_bytes((i * 40 % 256, 0, 0), fmt="PNG")


def _images(folder, n=4):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (folder / f"{i}.png").write_bytes(_png(i))


def test_a_csv_row_with_more_fields_than_the_header_is_refused_naming_the_line(tmp_path):
    _images(tmp_path / "img")
    (tmp_path / "train.csv").write_text("filepath,title\nimg/0.png,a red square\nimg/1.png,a dog, running on the "
                                        "beach\nimg/2.png,a green square\n")
    with pytest.raises(ValueError, match=r"train.csv: line 3 has 3 fields, the header 2: a field holding the "
                                         r"separator \(','\) must be quoted.*' running on the beach'"):
        build_index(str(tmp_path / "train.csv"), require="caption")
    # quoted, or a row ending in the separator (an empty trailing field): read
    (tmp_path / "ok.csv").write_text('filepath,title\nimg/0.png,"a dog, running"\nimg/1.png,a cat,\n')
    index = build_index(str(tmp_path / "ok.csv"), require="caption")
    assert [index.captions[i] for i in range(len(index))] == [("a dog, running",), ("a cat",)]


def test_an_evaluation_csv_row_with_an_unquoted_comma_is_refused(tmp_path):
    from kizuna.eval.datasets import DatasetError, load_dataset

    _images(tmp_path / "img")
    (tmp_path / "cls.csv").write_text("filepath,title,label\nimg/0.png,a red square,cat\nimg/1.png,a dog, running,"
                                      "dog\nimg/2.png,a green square,cat\n")
    with pytest.raises(DatasetError, match="line 3 has 4 fields, the header 3"):
        load_dataset(str(tmp_path / "cls.csv"), task="classification")  # ("running" was a class of its own)


def test_a_header_naming_a_column_twice_is_refused(tmp_path):
    _images(tmp_path / "img")
    (tmp_path / "dup.csv").write_text("filepath,title,title\nimg/0.png,a red square,OLD caption\n")
    with pytest.raises(ValueError, match="names the column\\(s\\) 'title' more than once"):
        build_index(str(tmp_path / "dup.csv"), require="caption")
    (tmp_path / "dup.tsv").write_text("filepath\ttitle\ttitle\nimg/0.png\ta red square\tOLD caption\n")
    with pytest.raises(ValueError, match="more than once"):
        build_index(str(tmp_path / "dup.tsv"), require="caption")


def _shard(path, n=3, start=0):
    write_tar(path, [m for i in range(start, start + n)
                     for m in ((f"{i:06d}.png", _png(i)), (f"{i:06d}.txt", f"caption {i}".encode()))])


def test_a_shards_folder_reads_upper_case_tars_and_says_compressed_ones(tmp_path):
    shards = tmp_path / "shards"
    shards.mkdir()
    _shard(shards / "000000.tar", start=0)
    _shard(shards / "000001.TAR", start=3)
    _shard(tmp_path / "plain.tar", start=6)
    with open(tmp_path / "plain.tar", "rb") as src, gzip.open(shards / "000002.tar.gz", "wb") as dst:
        shutil.copyfileobj(src, dst)
    with pytest.warns(UserWarning, match=r"1 compressed shard\(s\) beside its .tar shards are not read "
                                         r"\(000002.tar.gz\).*zcat 000002.tar.gz > 000002.tar"):
        index = build_index(str(shards), require="caption")
    assert len(index) == 6  # the .TAR's samples too (they were left out, unsaid)
    only = tmp_path / "only"
    only.mkdir()
    shutil.move(str(shards / "000002.tar.gz"), only / "000002.tar.gz")
    with pytest.raises(ValueError, match="its shards are compressed \\(000002.tar.gz\\).*zcat"):
        build_index(str(only), require="caption")
    from kizuna.eval.datasets import load_dataset

    with pytest.raises(ValueError, match="its shards are compressed"):  # (it was "no images found")
        load_dataset(str(only), task="retrieval")


def test_members_that_are_no_samples_file_are_left_out_as_webdataset_does(tmp_path):
    clear_cache()
    path = tmp_path / "s.tar"
    members = [("shard/.DS_Store", b"x"), ("shard/0.png", _png(0)), ("shard/README", b"notes"),
               ("shard/0.txt", b"caption 0"), ("__index__", b"0 1"), ("shard/1.png", _png(1)),
               ("shard/1.txt", b"caption 1")]
    write_tar(path, members)
    shard = index_tar(str(path))
    assert shard.keys == ["shard/0", "shard/1"] and shard.captions == [("caption 0",), ("caption 1",)]
    assert not shard.skipped and not shard.scattered


def test_review_a_download_kept_beside_its_images_is_no_compressed_shard(tmp_path):
    from kizuna.eval.datasets import load_dataset

    for cls in ("cat", "dog"):
        _images(tmp_path / "imgs" / cls, n=2)
    (tmp_path / "imgs" / "original_download.tar.gz").write_bytes(gzip.compress(b"x" * 100))
    ds = load_dataset(str(tmp_path / "imgs"), task="classification")
    assert ds.classnames == ["cat", "dog"] and len(ds) == 4
    _images(tmp_path / "flat", n=3)
    (tmp_path / "flat" / "x.tgz").write_bytes(b"")
    assert len(build_index(str(tmp_path / "flat"), require="image")) == 3


def test_review_repeated_columns_that_are_not_read_are_no_matter(tmp_path):
    _images(tmp_path / "img")
    (tmp_path / "excel.csv").write_text("filepath,title,,\nimg/0.png,a photo 0,,\nimg/1.png,a photo 1,,\n")
    (tmp_path / "notes.csv").write_text("filepath,title,note,note\nimg/0.png,a photo 0,a,b\n")
    assert len(build_index(str(tmp_path / "excel.csv"), require="caption")) == 2
    assert len(build_index(str(tmp_path / "notes.csv"), require="caption")) == 1


def test_review_a_tab_in_a_tsv_read_without_quoting_is_said_as_such(tmp_path):
    _images(tmp_path / "img")
    (tmp_path / "t.tsv").write_text('filepath\ttitle\nimg/0.png\t"Best day ever\nimg/1.png\t"a photo\tof 1"\n')
    with pytest.raises(ValueError, match="a tab inside a field: this file is read without quoting"):
        build_index(str(tmp_path / "t.tsv"), require="caption")
