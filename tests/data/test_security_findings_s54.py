"""Security findings of stop 54: what kizuna reads from data and shared folders cannot run another program, write
through a planted link, or hang on a special file."""
import io
import os
import sys
import threading
from pathlib import Path

import pytest
from PIL import Image

from kizuna.data.images import ImageError, decode_image

EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 32 32\nshowpage\n"


def test_an_image_is_decoded_only_by_the_formats_kizuna_reads(tmp_path, monkeypatch):
    # a fake Ghostscript on PATH: Pillow's EPS plugin ran it on a "photo.jpg" holding PostScript
    ran = tmp_path / "gs_ran"
    gs = tmp_path / "bin" / "gs"
    gs.parent.mkdir()
    gs.write_text(f"#!/bin/sh\necho \"$*\" >> {ran}\n[ \"$1\" = --version ] && echo 10.02.1\nexit 1\n")
    gs.chmod(0o755)
    monkeypatch.setenv("PATH", f"{gs.parent}:/usr/bin:/bin")
    with pytest.raises(ImageError, match=r"photo\.jpg: not an image file in a format kizuna reads"):
        decode_image(EPS, "photo.jpg")
    assert not ran.exists()
    image = Image.new("RGB", (8, 8), "red")
    for fmt in ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "PPM", "MPO"):
        data = io.BytesIO()
        image.save(data, fmt)
        assert decode_image(data.getvalue(), f"x.{fmt}").size == (8, 8)
    data = io.BytesIO()
    image.save(data, "TGA")  # a format Pillow reads and no IMAGE_EXTENSIONS name
    with pytest.raises(ImageError, match="not an image file"):
        decode_image(data.getvalue(), "x.tga")


@pytest.mark.parametrize("kind", ["symlink", "dangling"])
def test_the_run_lock_is_not_written_through_a_planted_link(tmp_path, kind):
    from kizuna.eval.suite import results_folder_lock
    from kizuna.train.checkpointing import RUN_LOCK, run_lock_holder

    out, victim = tmp_path / "shared_out", tmp_path / "victim.txt"
    out.mkdir()
    lock = out / RUN_LOCK
    if kind == "symlink":
        victim.write_text("precious\n")
    lock.symlink_to(victim)
    with pytest.raises(ValueError, match=r"\.kizuna-run\.lock: is a symbolic link or not a plain file"):
        with results_folder_lock(out):
            pass
    assert run_lock_holder(out) is None
    if kind == "dangling":
        assert not victim.exists()  # (it was made, holding the pid)
    else:
        assert victim.read_text() == "precious\n"  # (truncated to the pid)
    lock.unlink()
    with results_folder_lock(out):  # a plain lock file works as before
        assert lock.is_file() and not lock.is_symlink()


@pytest.mark.parametrize("plant", ["fifo", "dev_zero", "too_large"])
def test_a_special_file_in_the_shared_index_cache_is_a_miss_not_a_hang(tmp_path, plant):
    sys.path.insert(0, str(Path(__file__).parent))
    from _shards import make_pair_shard

    from kizuna.data import tar_index

    shard, cache = tmp_path / "s.tar", tmp_path / "cache"
    make_pair_shard(shard, 0, 3, captions=[f"caption {i}" for i in range(3)])
    tar_index.clear_cache()
    tar_index.index_tar(shard, cache_dir=cache)
    (entry,) = cache.glob("*.json")
    entry.unlink()
    if plant == "fifo":
        os.mkfifo(entry)  # (opened to read, it waited for a writer for ever)
    elif plant == "dev_zero":
        entry.symlink_to("/dev/zero")
    else:
        entry.write_text(" " * (17 << 20) + "{}")  # past any index of a 3-sample shard
    tar_index.clear_cache()
    found = []
    reader = threading.Thread(target=lambda: found.append(tar_index.index_tar(shard, cache_dir=cache)), daemon=True)
    reader.start()
    reader.join(60)
    if plant == "fifo" and reader.is_alive():  # a writer lets the hung reader go (and the test end)
        with open(entry, "w") as f:
            f.write("{}")
        reader.join(10)
        pytest.fail("reading a FIFO in the index cache hung")
    assert found and found[0].captions == [("caption 0",), ("caption 1",), ("caption 2",)]


@pytest.mark.parametrize("count, error, said", [
    ("100000000000", FileNotFoundError, "says 100000000000 shards but .* holds 2 .tar files: 99999999998 missing"),
    ("9" * 5000, ValueError, r"nshards.txt: expected the number of shards"),
    ("\u0662", ValueError, r"nshards.txt: expected the number of shards"),  # Arabic-Indic 2: 2 shards, read as such
])
def test_a_bad_nshards_count_is_refused_at_once_naming_the_file(tmp_path, count, error, said):
    sys.path.insert(0, str(Path(__file__).parent))
    from _shards import make_shard_dir

    from kizuna.data.sources import build_index

    make_shard_dir(tmp_path / "d", 2, 2, nshards_file=True)
    (tmp_path / "d" / "nshards.txt").write_text(count, encoding="utf-8")
    with pytest.raises(error, match=said):  # (10^11 names were made first: the memory filled)
        build_index(str(tmp_path / "d"))


def test_control_characters_from_data_are_escaped_where_they_are_said(tmp_path):
    sys.path.insert(0, str(Path(__file__).parent))
    from _shards import image_bytes, write_tar

    from kizuna.apps.common import format_table, one_line, shown_line
    from kizuna.data.sources import build_index

    title = "c\x1b]0;OWNED\x07at"  # (set the terminal's title when printed raw)
    assert shown_line(title) == "c\\x1b]0;OWNED\\x07at" and shown_line("a\tb\u00e9\u65e5") == "a\tb\u00e9\u65e5"
    # a file's rows (kizuna embed's .txt) keep them: only line breaks are escaped there, so rows map back to texts
    assert one_line(title) == title and one_line("a\nb\x93") == "a\\nb\x93"
    assert "\x1b" not in format_table([[title, "1.0"]], ["class", "top-1"])
    write_tar(tmp_path / "s.tar", [("good.jpg", image_bytes()), ("good.txt", b"a cat"),
                                   ("miss\x1b]0;TITLE\x07ing.txt", b"no image")])
    idx = build_index(str(tmp_path / "s.tar"), require="caption")
    said = str(idx.skips)
    assert "miss\\x1b]0;TITLE\\x07ing" in said and "\x1b" not in said


def test_a_hard_linked_run_lock_still_locks_and_is_not_rewritten(tmp_path):
    """A hard link (a backup's `cp -al` of a run folder, or a planted one): the lock is taken and tested as ever (a
    refusal hid a live run, and removing the file as it advised started a second run there), and the pid is not
    written through it into the other name."""
    import subprocess

    from kizuna.eval.suite import results_folder_lock
    from kizuna.train.checkpointing import RUN_LOCK, run_lock_holder

    out, other = tmp_path / "run", tmp_path / "snapshot.lock"
    out.mkdir()
    other.write_text("precious\n")
    (out / RUN_LOCK).hardlink_to(other)
    with results_folder_lock(out):
        assert other.read_text() == "precious\n"
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'a+'); "
                               "fcntl.lockf(f, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)",
                               str(out / RUN_LOCK)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert run_lock_holder(out) is not None  # (None: "no run", while one held it)
        with pytest.raises(ValueError, match="another kizuna run"):
            with results_folder_lock(out):
                pass
    finally:
        holder.kill()
        holder.wait()
