"""Inputs a careless or hostile source writes, and what each cost before kizuna reacted: a CSV whose quote is
never closed (the rows after it were gone, their text one sample's caption), a model config whose preprocess
size was a typo's million pixels (the kernel killed the process at 21 GB)."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest

from kizuna.data.sources import build_index
from kizuna.data.transforms import check_geometry


def _csv(path, rows, header="filepath,title"):
    path.write_text(header + "\n" + "".join(row + "\n" for row in rows), encoding="utf-8")
    return path


def test_a_caption_whose_quote_is_never_closed_is_named_not_read_over_the_rest(tmp_path):
    rows = ["a.jpg,a cat", 'b.jpg,"Best day ever', "c.jpg,a third cat", "d.jpg,a dog", "e.jpg,another dog"]
    path = _csv(tmp_path / "pairs.csv", rows)
    with pytest.raises(ValueError, match=r"pairs\.csv: the quoted field that starts on line 3 is never closed: "
                                         r"csv reads the rest of the file into it \(lines 3-6\)"):
        build_index(str(path), require="caption", check_files=False)


def test_quoted_captions_over_several_lines_and_stray_quotes_inside_still_read(tmp_path):
    rows = ['a.jpg,"a caption\nover two lines"', 'b.jpg,"a ""quoted"" word"', 'c.jpg,a "quote" inside',
            'd.jpg,"closed" then text']
    index = build_index(str(_csv(tmp_path / "ok.csv", rows)), require="caption", check_files=False)
    assert [c[0] for c in index.captions] == ["a caption\nover two lines", 'a "quoted" word', 'a "quote" inside',
                                              "closed then text"]


@pytest.fixture
def small_field_limit(monkeypatch):
    """csv's field size limit at 100 characters (kizuna raises it to 64 MiB: asked for, kept at 100)."""
    real = csv.field_size_limit
    before = real()
    monkeypatch.setattr(csv, "field_size_limit", lambda *new: real(100) if new else real())
    yield
    real(before)


def test_a_field_past_csvs_size_limit_is_named(tmp_path, small_field_limit):
    """A swallowed rest of the file past 64 MiB was a bare `_csv.Error: field larger than field limit`, naming
    neither the file nor the row."""
    path = _csv(tmp_path / "big.csv", ["a.jpg,a cat", 'b.jpg,"' + "x " * 100 + '"', "c.jpg,a dog"])
    with pytest.raises(ValueError, match=r"big\.csv: a field of the row that starts on line 3 runs past 100 "
                                         r"characters .*a quote never closed\?"):
        build_index(str(path), require="caption", check_files=False)


def test_a_preprocess_size_past_any_models_is_refused_before_an_image_is_resized():
    with pytest.raises(ValueError, match=r"preprocess image_size 1000000 .*past 8192 pixels a side: a typo\?"):
        check_geometry(1_000_000, "bicubic")
    with pytest.raises(ValueError, match=r"preprocess image_size \[224, 9000\]"):
        check_geometry([224, 9000], "bicubic")
    check_geometry(8192, "bicubic")  # large, and allowed
    check_geometry([224, 1024], "bicubic")


def test_a_shard_whose_images_are_hard_or_symbolic_links_to_earlier_members_reads_them(tmp_path):
    """`tar cf` stores a file's second hard link as a link member: a folder whose duplicate images were
    de-duplicated with hard links gave shards whose duplicates were counted as missing images."""
    import io
    import tarfile

    from kizuna.data.tar_index import clear_cache, index_tar

    shard = tmp_path / "s.tar"
    with tarfile.open(shard, "w", format=tarfile.GNU_FORMAT) as tf:
        def add(name, data=None, link=None, kind=tarfile.REGTYPE):
            info = tarfile.TarInfo(name)
            if link is not None:
                info.type, info.linkname = kind, link
                tf.addfile(info)
            else:
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))

        add("d/0.jpg", b"first image")
        add("d/0.txt", b"a cat")
        add("d/1.jpg", link="d/0.jpg", kind=tarfile.LNKTYPE)  # hard links name the target from the root
        add("d/1.txt", b"the same cat")
        add("d/2.jpg", link="0.jpg", kind=tarfile.SYMTYPE)  # symbolic ones from the link's folder
        add("d/2.txt", b"a third")
        add("d/3.jpg", link="/etc/passwd", kind=tarfile.SYMTYPE)  # out of the shard: no bytes here
        add("d/3.txt", b"gone")
    clear_cache()
    index = index_tar(shard)
    assert index.keys == ["d/0", "d/1", "d/2"] and index.skipped == {"missing_image": 1}
    assert len(set(zip(index.offsets, index.sizes))) == 1 and index.sizes[0] == len(b"first image")
    assert [c[0] for c in index.captions] == ["a cat", "the same cat", "a third"]


def test_a_link_to_a_sparse_member_is_skipped_with_it_and_dot_slash_names_resolve(tmp_path):
    """A hard link to a GNU sparse caption got past the sparse skip: its "caption" ran into the next members'
    bytes. And a shard made with `tar cf x.tar .` (./0001.jpg) had its symbolic links missed."""
    import io
    import tarfile

    from kizuna.data.tar_index import clear_cache, index_tar

    shard = tmp_path / "s.tar"
    with tarfile.open(shard, "w", format=tarfile.GNU_FORMAT) as tf:
        def add(name, data=b"", link=None, kind=tarfile.REGTYPE):
            info = tarfile.TarInfo(name)
            info.type = kind
            if link is not None:
                info.linkname = link
                tf.addfile(info)
            else:
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))

        add("./0001.jpg", b"an image")
        add("./0001.txt", b"a cat", kind=tarfile.GNUTYPE_SPARSE)  # (its header says sparse: enough here)
        add("./0002.jpg", link="0001.jpg", kind=tarfile.SYMTYPE)
        add("./0002.txt", link="./0001.txt", kind=tarfile.LNKTYPE)  # to the sparse one: skipped with it
    clear_cache()
    index = index_tar(shard)
    assert index.keys == ["./0001", "./0002"] and index.captions == [None, None]
    assert index.offsets[0] == index.offsets[1]


def test_loader_workers_over_a_small_shared_memory_are_warned_about(tmp_path, monkeypatch):
    """Docker's default /dev/shm is 64 MB: a worker's batch that did not fit was lost and the main process waited
    for it for ever (`kizuna embed` at its defaults hung; a training run's SIGTERM never ended its step)."""
    import os
    import types
    import warnings

    from kizuna.data.loader import warn_if_shared_memory_is_small

    small = types.SimpleNamespace(f_bavail=64 * 2**20 // 4096, f_frsize=4096)
    monkeypatch.setattr(os, "statvfs", lambda path: small)
    with pytest.warns(RuntimeWarning, match=r"only 64 MiB of shared memory is free \(/dev/shm\): loader "
                                            r"worker.* Pass --workers 0, or .*--shm-size"):
        warn_if_shared_memory_is_small(2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_if_shared_memory_is_small(0)  # no workers: nothing goes through it
        monkeypatch.setattr(os, "statvfs", lambda path: types.SimpleNamespace(f_bavail=2**20, f_frsize=4096))
        warn_if_shared_memory_is_small(2)  # 4 GiB free


def test_a_workers_batch_is_stacked_into_shared_memory_where_a_shortage_is_an_error(monkeypatch):
    """Stacked privately, a batch past /dev/shm failed in the worker's queue thread as it was copied there, was
    lost, and the main process waited for it for ever (Docker's 64 MB: `kizuna embed` hung). Stacked into shared
    memory in the worker (torch's collate), the shortage is an error the main process receives."""
    import torch

    from kizuna.apps.cli import _out_of_memory
    from kizuna.apps.embed import _collate
    from kizuna.data.loader import Collate

    images = [{"image": torch.rand(3, 8, 8), "caption": "a", "label": 1, "key": str(i), "index": i} for i in range(3)]
    assert not Collate()(images)["images"].is_shared()  # in the main process: a plain stack
    monkeypatch.setattr(torch.utils.data, "get_worker_info", lambda: object())  # as inside a worker
    batch = Collate()(images)
    assert batch["images"].is_shared() and torch.equal(batch["images"], torch.stack([s["image"] for s in images]))
    assert _collate([(0, torch.rand(3, 8, 8), None), (1, torch.rand(3, 8, 8), None)])[1].is_shared()
    said = _out_of_memory(RuntimeError("unable to allocate shared memory(shm) for file </torch_1_2_3>: No space "
                                       "left on device (28)"))
    assert said.startswith("out of shared memory (/dev/shm)") and "--workers 0" in said and "--shm-size" in said


def test_a_shard_made_with_macos_tar_keeps_its_samples(tmp_path):
    """macOS tar stores an AppleDouble ._NAME member before each file with extended attributes: its key "" split
    every sample's run (0 of 6 samples, a "repack with tar --sort=name" warning macOS tar cannot follow)."""
    import sys
    import warnings as _warnings

    sys.path.insert(0, str(Path(__file__).parent))
    from _shards import color_of, image_bytes, write_tar

    from kizuna.data import tar_index
    from kizuna.data.sources import build_index

    members = []
    for i in range(6):
        members += [(f"._{i:06d}.jpg", b"\x00\x05\x16\x07 AppleDouble"), (f"{i:06d}.jpg", image_bytes(color_of(i))),
                    (f"._{i:06d}.txt", b"\x00\x05\x16\x07 AppleDouble"), (f"{i:06d}.txt", f"sample {i}".encode())]
    write_tar(tmp_path / "mac.tar", members)
    tar_index.clear_cache()
    with _warnings.catch_warnings():
        _warnings.simplefilter("error")  # no "members are not next to each other" warning
        idx = build_index(str(tmp_path / "mac.tar"), require="caption")
    assert len(idx) == 6 and not idx.skips and idx.captions[3] == ("sample 3",)


def test_a_shard_rewritten_in_place_replaces_its_index_in_memory(tmp_path):
    """The in-memory index cache was keyed by (path, mtime, size, ...): every version of a shard rewritten in place
    stayed in a long-lived process's memory."""
    import os
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from _shards import image_bytes, write_tar

    from kizuna.data import tar_index

    tar_index.clear_cache()
    path = write_tar(tmp_path / "s.tar", [("a.jpg", image_bytes()), ("a.txt", b"one")])
    for version in range(4):
        os.utime(path, (1000 + version, 1000 + version))
        assert tar_index.index_tar(path).num_members == 2
    assert len(tar_index._memory_cache) == 1
