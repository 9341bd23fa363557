"""Windows / macOS behaviour, simulated on Linux: no os.pread, O_BINARY descriptors, spawned loader workers,
no /proc."""

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _shards import image_bytes, make_pair_shard, write_tar  # noqa: E402

from kizuna.data.sources import PairDataset, build_index  # noqa: E402
from kizuna.data.tar_index import clear_cache, index_tar, read_range  # noqa: E402

# --- no os.pread (Windows) ---------------------------------------------------------------------------------


def test_read_range_without_pread_leaves_the_file_offset(tmp_path, monkeypatch):
    monkeypatch.delattr(os, "pread")
    f = tmp_path / "data.bin"
    f.write_bytes(bytes(range(256)) * 4)
    fd = os.open(f, os.O_RDONLY)
    try:
        os.lseek(fd, 10, os.SEEK_SET)  # where another reader of this descriptor (tarfile) stands
        assert read_range(fd, 300, 5) == bytes([44, 45, 46, 47, 48])
        assert os.lseek(fd, 0, os.SEEK_CUR) == 10
        assert read_range(fd, 1020, 100) == bytes([252, 253, 254, 255])  # short at EOF
        assert os.lseek(fd, 0, os.SEEK_CUR) == 10
    finally:
        os.close(fd)


def test_index_tar_without_pread_finds_every_sample(tmp_path, monkeypatch):
    keys = make_pair_shard(tmp_path / "000000.tar", 0, 5)
    monkeypatch.delattr(os, "pread")
    clear_cache()
    idx = index_tar(tmp_path / "000000.tar")
    assert list(idx.keys) == keys and not idx.truncated
    assert idx.captions[0] == ("caption 000000000",)


# --- shard descriptors opened in binary mode (Windows: text mode alters JPEG bytes) -------------------------


def test_shard_reads_open_binary_descriptors(tmp_path, monkeypatch):
    make_pair_shard(tmp_path / "000000.tar", 0, 2)
    idx = build_index(str(tmp_path / "000000.tar"))
    flags, real_open, o_binary = [], os.open, 0x8000  # Windows' value
    monkeypatch.setattr(os, "O_BINARY", o_binary, raising=False)

    def recording_open(path, flag, *args, **kwargs):
        flags.append(flag)
        return real_open(path, flag & ~o_binary, *args, **kwargs)

    monkeypatch.setattr(os, "open", recording_open)
    assert idx.read_bytes(0)[:2] == b"\xff\xd8"
    ds = PairDataset(idx)
    assert ds[1] is not None
    del ds
    assert len(flags) == 2 and all(f & o_binary for f in flags)


# --- spawned loader workers (macOS / Windows default start method) -----------------------------------------


def test_spawned_workers_get_the_main_process_max_image_pixels(tmp_path, monkeypatch):
    from PIL import Image

    from kizuna.data.loader import make_loader
    from kizuna.data.sampler import EpochSampler

    keys = [f"{i:09d}" for i in range(4)]
    members = []
    for k in keys:
        members += [(f"{k}.jpg", image_bytes(size=(32, 32))), (f"{k}.txt", b"a caption")]
    write_tar(tmp_path / "000000.tar", members)
    ds = PairDataset(build_index(str(tmp_path / "000000.tar")))
    # lowered, so 32x32 counts as too large: shows whether the workers see the main process's setting
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    loader = make_loader(ds, EpochSampler(4, 4, seed=0), num_workers=1, multiprocessing_context="spawn",
                         pin_memory=False)
    try:
        batches = list(loader)
    finally:
        loader.close()
    assert sum(len(b["keys"]) for b in batches) == 0
    assert loader.skips.as_dict() == {"image_too_large": 4}


class _Built(Exception):
    pass


def _recording_dataloader(monkeypatch):
    seen = {}

    def dataloader(*args, **kwargs):
        seen.update(kwargs)
        raise _Built

    monkeypatch.setattr(torch.utils.data, "DataLoader", dataloader)
    return seen


def test_eval_and_embed_loaders_use_the_shared_worker_init(tmp_path, monkeypatch):
    from kizuna.apps import embed
    from kizuna.data.loader import _WorkerInit
    from kizuna.eval.encode import encode_images

    class Stub:
        name, positions = "stub", np.arange(4)

        def __len__(self):
            return 4

        def pair_dataset(self, transform, **kwargs):
            return []

    seen = _recording_dataloader(monkeypatch)
    with pytest.raises(_Built):
        encode_images(torch.nn.Linear(1, 1), Stub(), transform=lambda x: x, num_workers=2, progress=False)
    assert isinstance(seen.get("worker_init_fn"), _WorkerInit)

    (tmp_path / "a.jpg").write_bytes(image_bytes())
    monkeypatch.setattr("kizuna.get_preprocess", lambda model: (lambda img: img))
    seen.clear()
    with pytest.raises(_Built):
        embed.embed_images(None, tmp_path, workers=2, progress=False)
    assert isinstance(seen.get("worker_init_fn"), _WorkerInit)


# --- no /proc (macOS) --------------------------------------------------------------------------------------


@pytest.mark.parametrize("umask", [0o077, 0o002])
def test_process_umask_without_proc_is_the_real_one(umask, monkeypatch):
    from kizuna.models.checkpoint import _probed_umask, process_umask

    _probed_umask.cache_clear()  # probed once per process: a fresh probe under this umask
    real = Path.read_text

    def read_text(self, *args, **kwargs):
        if str(self).startswith("/proc/"):
            raise FileNotFoundError(2, "No such file or directory", str(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", read_text)
    old = os.umask(umask)
    try:
        assert process_umask() == umask
    finally:
        os.umask(old)
        _probed_umask.cache_clear()
