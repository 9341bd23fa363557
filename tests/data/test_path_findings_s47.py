"""Paths a user's machine makes (stop 47's review): a folder named with braces under a glob or a range, and macOS's
AppleDouble ``._*.tar`` files beside the shards of a folder; symlinked class folders (:mod:`kizuna.data.images`)."""

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _shards import make_pair_shard, make_shard_dir  # noqa: E402

from kizuna.data.images import list_images, walk_folder  # noqa: E402
from kizuna.data.sources import build_index, expand_spec, resolve_spec  # noqa: E402


def keys(start, n):
    return [f"{i:09d}" for i in range(start, start + n)]


def test_a_glob_or_range_under_a_folder_named_with_braces_reads_that_folder(tmp_path):
    """Braces were expanded before the leading folders that exist were taken as written: d{a,b}/*.tar read da/ and
    db/ (20 samples of other data), and with db/ empty it failed naming db/*.tar."""
    make_shard_dir(tmp_path / "d{a,b}", 2, 5)
    make_pair_shard(tmp_path / "da" / "000000.tar", 100, 5)
    make_pair_shard(tmp_path / "db" / "000000.tar", 200, 5)
    folder = str(tmp_path / "d{a,b}")
    assert build_index(f"{folder}/*.tar").keys == keys(0, 10)
    assert build_index(f"{folder}/00000{{0..1}}.tar").keys == keys(0, 10)
    assert build_index(f"{folder}/00000{{0,1}}.tar").keys == keys(0, 10)
    # a brace in the part that does not exist is still a pattern, under any leading folder
    assert build_index(f"{tmp_path}/d{{a,b}}/000000.tar").keys == keys(0, 5)  # (exists as written: the folder's)
    assert build_index(f"{tmp_path}/{{da,db}}/000000.tar").keys == keys(100, 5) + keys(200, 5)
    for p in (tmp_path / "db").iterdir():
        p.unlink()
    assert build_index(f"{folder}/*.tar").keys == keys(0, 10)


def test_appledouble_tar_files_beside_the_shards_are_not_shards(tmp_path):
    """._000000.tar (macOS's metadata beside 000000.tar after a copy onto FAT, SMB or NFS) was read as a damaged
    shard, and with nshards.txt the folder was refused: "says 2 shards but ... holds 4 .tar files"."""
    shards = make_shard_dir(tmp_path / "mac", 2, 3, nshards_file=True)
    for s in shards:
        (s.parent / f"._{s.name}").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    assert [p for _, p in resolve_spec(str(tmp_path / "mac"))] == [str(s) for s in shards]
    (tmp_path / "mac" / "nshards.txt").unlink()
    index = build_index(str(tmp_path / "mac"))
    assert index.keys == keys(0, 6) and not index.damaged
    # the folder and its glob (which skips dot files) are the same shards, as documented
    assert expand_spec(str(tmp_path / "mac" / "*.tar")) == [str(s) for s in shards]


def _image(path: Path) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (200, 10, 10)).save(path)


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symlinks")
def test_a_class_folder_linked_under_another_name_keeps_its_own_images(tmp_path):
    """A link to a class folder that sorted before it took its images (the real class reported empty, its
    images labelled with the link's name). A folder the walk reaches anyway is read once, under its own name:
    the links to it (an alias class, latest -> v2) add nothing, so no sample is read twice."""
    root = tmp_path / "ds" / "train"
    for cls in ("cat", "dog"):
        for i in range(3):
            _image(root / cls / f"{i}.png")
    os.symlink(root / "cat", root / "alias_cat")  # sorts before cat
    os.symlink(root / "cat", root / "kitten")  # sorts after
    seen = {os.path.relpath(d, root): sorted(f) for d, _, f in walk_folder(root) if d != str(root)}
    assert seen == {name: ["0.png", "1.png", "2.png"] for name in ("cat", "dog")}
    assert len(list_images(root)) == 6


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symlinks")
def test_folders_linked_from_outside_are_read_once_each(tmp_path):
    """A subset made by linking class folders from elsewhere is read (it was read as classes with no images), and
    two links to one outside folder read it once."""
    for cls in ("cat", "dog"):
        _image(tmp_path / "all" / cls / "0.png")
    subset = tmp_path / "subset"
    subset.mkdir()
    os.symlink(tmp_path / "all" / "cat", subset / "cat")
    os.symlink(tmp_path / "all" / "cat", subset / "cat_again")
    os.symlink(tmp_path / "all" / "dog", subset / "dog")
    assert sorted(os.path.relpath(p, subset) for p in list_images(subset)) == ["cat/0.png", "dog/0.png"]


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symlinks")
def test_links_that_loop_are_walked_once(tmp_path):
    """A link to a folder above it, and two folders linked to each other, would loop: each folder is read once."""
    _image(tmp_path / "a" / "x.png")
    _image(tmp_path / "b" / "y.png")
    os.symlink(tmp_path, tmp_path / "a" / "up")  # to the root
    os.symlink(tmp_path / "b", tmp_path / "a" / "to_b")
    os.symlink(tmp_path / "a", tmp_path / "b" / "to_a")  # a <-> b
    found = sorted(os.path.relpath(p, tmp_path) for p in list_images(tmp_path))
    assert found == ["a/x.png", "b/y.png"]


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symlinks")
def test_a_link_to_an_image_that_is_gone_is_listed_to_be_counted(tmp_path, capsys):
    """`embed` left a dangling x.jpg link out without a word, where an unreadable image is skipped and counted."""
    import torch

    import kizuna
    from kizuna.apps.cli import main

    _image(tmp_path / "imgs" / "a.png")
    os.symlink(tmp_path / "gone.png", tmp_path / "imgs" / "b.png")
    assert [p.name for p in list_images(tmp_path / "imgs")] == ["a.png", "b.png"]
    torch.manual_seed(0)
    kizuna.save_model(kizuna.create_model("ViT-mu-8"), tmp_path / "model")
    assert main(["embed", "--model", str(tmp_path / "model"), "--images", str(tmp_path / "imgs"), "--out",
                 str(tmp_path / "e.npy"), "--workers", "0", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "skipped 1 unreadable image(s)" in err and "b.png: no such file" in err
