"""Data specs naming folders as written: whitespace at a path's ends, glob characters in folder names, and a
lone "{" before a brace range (:func:`kizuna.data.sources.expand_spec`)."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _shards import make_pair_shard, make_shard_dir  # noqa: E402

from kizuna.data.sources import (  # noqa: E402
    build_index,
    expand_braces,
    expand_spec,
    globs_read_otherwise_before,
    resolve_spec,
)


def keys(start, n):
    return [f"{i:09d}" for i in range(start, start + n)]


def test_a_folder_whose_name_ends_in_a_space_is_read_not_its_trimmed_namesake(tmp_path):
    """ "d " was read as "d" (another folder's data, without a word), and without "d" the error named "d"."""
    make_pair_shard(tmp_path / "d " / "000000.tar", 100, 2)
    make_shard_dir(tmp_path / "d", 3, 2)
    make_pair_shard(tmp_path / "e" / "000000.tar", 200, 1)
    make_pair_shard(tmp_path / " lead" / "000000.tar", 300, 1)
    d_ = str(tmp_path / "d ")
    assert build_index(d_).keys == keys(100, 2)
    assert build_index([d_]).keys == keys(100, 2)  # a list item (a config's list, train_config.json)
    assert build_index(f"{d_}::{tmp_path}/e").keys == keys(100, 2) + keys(200, 1)  # a "::" piece
    assert build_index(str(tmp_path / " lead")).keys == keys(300, 1)
    # a piece that does not exist as written still loses the whitespace around it
    assert build_index(f" {tmp_path}/e :: {d_}").keys == keys(200, 1) + keys(100, 2)
    assert build_index(f"{tmp_path}/e ").keys == keys(200, 1)
    # without "d", "d " is still the one read (the error named "d")
    for p in (tmp_path / "d").iterdir():
        p.unlink()
    (tmp_path / "d").rmdir()
    assert build_index(d_).keys == keys(100, 2)


def test_a_glob_in_a_folder_named_with_brackets_matches_that_folder(tmp_path):
    """``exp[1]/*.tar`` matched exp1/, and ``cc3m [v2]/*.tar`` matched nothing."""
    make_pair_shard(tmp_path / "exp[1]" / "000000.tar", 100, 2)
    make_shard_dir(tmp_path / "exp1", 3, 2)
    make_shard_dir(tmp_path / "cc3m [v2]", 3, 2)
    assert build_index(f"{tmp_path}/exp[1]/*.tar").keys == keys(100, 2)
    assert build_index(f"{tmp_path}/cc3m [v2]/*.tar").keys == keys(0, 6)
    assert build_index([f"{tmp_path}/exp[1]/*.tar"]).keys == keys(100, 2)
    # a glob character after the folders that exist is still a pattern
    assert build_index(f"{tmp_path}/exp[1]/00000[0-9].tar").keys == keys(100, 2)
    assert len(expand_spec(f"{tmp_path}/exp[1]/../cc3m [v2]/*.tar")) == 3
    # the name as written, not the escaped pattern, in a glob with no match
    with pytest.raises(FileNotFoundError, match=r"exp\[1\]/\*\.png"):
        expand_spec(f"{tmp_path}/exp[1]/*.png")


def test_a_brace_range_shard_missing_from_a_bracketed_folder_is_missing_not_taken_from_a_sibling(tmp_path):
    make_pair_shard(tmp_path / "exp[1]" / "000000.tar", 100, 2)
    make_shard_dir(tmp_path / "exp1", 3, 2)
    spec = f"{tmp_path}/exp[1]/{{000000..000001}}.tar"
    with pytest.raises(FileNotFoundError, match=r"exp\[1\]/000001\.tar"):
        resolve_spec(spec)
    with pytest.raises(FileNotFoundError):
        build_index(spec)
    assert expand_spec(spec) == [f"{tmp_path}/exp[1]/000000.tar", f"{tmp_path}/exp[1]/000001.tar"]


def test_each_list_item_and_double_colon_piece_that_exists_as_written_is_itself(tmp_path):
    """The "exists as written" rule held for the whole spec only: ["x{a,b}"] read xa/ and xb/ (or failed)."""
    make_pair_shard(tmp_path / "x{a,b}" / "000000.tar", 100, 2)
    make_pair_shard(tmp_path / "xa" / "000000.tar", 200, 1)
    make_pair_shard(tmp_path / "xb" / "000000.tar", 300, 1)
    make_pair_shard(tmp_path / "e" / "000000.tar", 400, 1)
    lit, e = f"{tmp_path}/x{{a,b}}", f"{tmp_path}/e"
    assert build_index(lit).keys == keys(100, 2)  # as before
    assert build_index([lit]).keys == keys(100, 2)
    assert build_index((e, lit)).keys == keys(400, 1) + keys(100, 2)
    assert build_index(f"{e}::{lit}").keys == keys(400, 1) + keys(100, 2)
    # a piece that does not exist is still a spec
    assert build_index([f"{tmp_path}/x{{b,a}}/000000.tar"]).keys == keys(300, 1) + keys(200, 1)


def test_globs_read_otherwise_before_looks_in_the_bracketed_folder(tmp_path):
    """The resume warning about glob order looked at exp1/ (or nowhere) for ``exp[1]/*.tar``."""
    make_pair_shard(tmp_path / "exp[1]" / "2.tar", 0, 1)
    make_pair_shard(tmp_path / "exp[1]" / "10.tar", 1, 1)
    spec = f"{tmp_path}/exp[1]/*.tar"
    assert globs_read_otherwise_before(spec) == [spec]
    assert globs_read_otherwise_before([spec]) == [spec]


def test_a_lone_open_brace_leaves_later_braces_to_expand():
    assert expand_braces("data{old/{000000..000001}.tar") == ["data{old/000000.tar", "data{old/000001.tar"]
    assert expand_braces("a{b,{c,d}") == ["a{b,c", "a{b,d"]  # as bash
    assert expand_braces("x{/{a,b}/{0..1}") == ["x{/a/0", "x{/a/1", "x{/b/0", "x{/b/1"]
    assert expand_braces("only{open") == ["only{open"]
