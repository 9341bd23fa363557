"""Loader workers' failures said where they happen (session 51)."""
import io

import pytest
import torch
from PIL import Image

from kizuna.data import images
from kizuna.data.loader import Collate


def test_a_workers_batch_puts_its_small_tensors_in_shared_memory_too(monkeypatch):
    """A /dev/shm without room failed for a 128-byte labels tensor in the worker's queue thread, where the main
    process never heard of it and waited for the batch for ever; in shared memory already, it fails in the worker."""
    samples = [{"image": torch.zeros(3, 4, 4), "label": i, "index": i, "key": str(i), "caption": "x"} for i in range(3)]
    monkeypatch.setattr(torch.utils.data, "get_worker_info", lambda: object())
    batch = Collate()(samples)
    assert batch["labels"].is_shared() and batch["indices"].is_shared()
    monkeypatch.setattr(torch.utils.data, "get_worker_info", lambda: None)
    assert not Collate()(samples)["labels"].is_shared()  # the main process's own batches stay private


class PluginError(Exception):
    pass


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buf, format="PNG")
    return buf.getvalue()


def test_a_decoders_own_error_type_is_a_corrupt_image(monkeypatch):
    def broken(*a, **k):
        raise PluginError("bad chunk")

    monkeypatch.setattr(images.Image, "open", broken)
    with pytest.raises(images.ImageError, match="corrupt or truncated image \\(bad chunk\\)"):
        images.decode_image(_png())


def test_running_out_of_memory_while_decoding_is_not_a_corrupt_image(monkeypatch):
    def no_memory(*a, **k):
        raise MemoryError

    monkeypatch.setattr(images.Image, "open", no_memory)
    with pytest.raises(MemoryError):
        images.decode_image(_png())
