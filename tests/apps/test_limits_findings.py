"""Paths at their limits and waits for ever (hang hunt, stop 44): multibyte temp folders, file names of 255 bytes,
an --out near the path limit."""
import errno
import os
import tempfile

import pytest


def test_a_temp_dir_too_long_in_bytes_for_a_socket_moves_multiprocessings_folder_to_tmp(monkeypatch):
    """The check counted characters: a TMPDIR of 33 characters that is 93 bytes (CJK) passed, and loader workers
    hung on "AF_UNIX path too long" (the socket path is TMPDIR/pymp-XXXXXXXX/listener-XXXXXXXX, at most 107 bytes)."""
    from multiprocessing import process

    from kizuna.data import loader

    config = process.current_process()._config
    monkeypatch.delitem(config, "tempdir", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", "/t/" + "絆" * 30)  # (only measured, never made)
    loader.use_a_short_multiprocessing_temp_dir(0)
    assert "tempdir" not in config  # no workers: nothing made
    loader.use_a_short_multiprocessing_temp_dir(1)
    made = config["tempdir"]  # removed at exit by multiprocessing
    assert made.startswith("/tmp/pymp-") and os.path.isdir(made)


def test_a_file_name_of_255_bytes_in_cjk_is_written_atomically(tmp_path):
    """The temp name kept 200 characters of the target's (600 bytes of CJK): over the 255-byte name limit, and
    `kizuna embed --out <83 CJK characters>.npy` lost its work to "File name too long"."""
    from kizuna.models.checkpoint import atomic_write_text

    target = tmp_path / ("結" * 83 + ".txt")  # 253 bytes
    atomic_write_text(target, "ok\n")
    assert target.read_text() == "ok\n" and [p.name for p in tmp_path.iterdir()] == [target.name]


def test_an_out_near_the_path_limit_is_refused_before_the_work(tmp_path):
    """A folder a little under PATH_MAX passed the check; every file written inside it failed after the work."""
    from kizuna.apps.common import check_writable

    deep = os.path.join(str(tmp_path), *["d" * 200] * 20)  # ~4,050 bytes, no name over 255
    with pytest.raises(ValueError, match=r"bytes long, and the files written inside it would pass the file system's "
                                         r"\d+-byte path limit"):
        check_writable(deep, "checkpoints")
    check_writable(tmp_path / "out", "checkpoints")


def test_a_checkpoint_write_that_failed_for_its_path_does_not_blame_the_disk(tmp_path):
    """ENAMETOOLONG was reported as "disk full? (46.8 GiB free there)", with "free space" as the way out."""
    from kizuna.train.checkpointing import CheckpointManager

    run = CheckpointManager(tmp_path)
    said = str(run._write_failed(tmp_path / "step_0000003", OSError(errno.ENAMETOOLONG, "File name too long")))
    assert "a path too long for the file system, not a full disk" in said and "use a shorter --out" in said
    assert "disk full" not in said
    said = str(run._write_failed(tmp_path / "step_0000003", OSError(errno.ENOSPC, "No space left on device")))
    assert "disk full?" in said


def test_a_file_out_needs_room_for_its_temp_name_only_and_no_limit_refuses_nothing(tmp_path, monkeypatch):
    """embed's .npy is written beside itself: the folders' 160 bytes of room refused a 3,943-byte file path that
    writes fine; and a path limit of -1 ("none") refused every --out."""
    from kizuna.apps import common

    monkeypatch.setattr(common.os, "pathconf", lambda path, name: 1024)  # (macOS's)
    deep = os.path.join(str(tmp_path), *["d" * 100] * ((1000 - len(str(tmp_path))) // 101))
    deep += "/" + "x" * (999 - len(deep))  # 1,000 bytes
    common.check_writable(deep)  # a file: its temp name beside it fits
    with pytest.raises(ValueError, match="the files written inside it would pass"):
        common.check_writable(deep, "checkpoints")
    monkeypatch.setattr(common.os, "pathconf", lambda path, name: -1)
    common.check_writable(tmp_path / "out", "checkpoints")


def test_a_path_too_long_after_a_saved_checkpoint_says_to_move_the_run(tmp_path):
    """"use a shorter --out and continue with --out <the same long path> --resume latest" could not be followed."""
    from kizuna.train.checkpointing import CheckpointManager

    from kizuna.models.vit import VisionConfig, VisionTransformer

    run = CheckpointManager(tmp_path / "run")
    run.save(1, VisionTransformer(VisionConfig(image_size=8, patch_size=4, width=8, depth=1, heads=2)), {"step": 1})
    said = str(run._write_failed(tmp_path / "step_0000002", OSError(errno.ENAMETOOLONG, "File name too long")))
    assert f"move {tmp_path / 'run'} to a shorter path and continue with --out <that path> --resume latest" in said
