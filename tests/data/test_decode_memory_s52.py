"""`--augment-on device` decodes the whole set into this process's memory first: a set larger than the memory
available was decoded until the out-of-memory killer ended the run (session 52: refused before the decode)."""
import pytest

from kizuna.data import batch_augment
from kizuna.data.batch_augment import available_memory, decode_images


def test_available_memory_reads_memavailable(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24000000 kB\nMemFree:         1000000 kB\nMemAvailable:    2000000 kB\n")
    assert available_memory(str(meminfo)) == 2_000_000 * 1024
    meminfo.write_text("MemTotal:       24000000 kB\n")  # an old kernel
    assert available_memory(str(meminfo)) is None
    assert available_memory(str(tmp_path / "absent")) is None


class _Index(list):
    labels = []


def test_a_set_larger_than_the_available_memory_is_refused_before_decoding(monkeypatch):
    monkeypatch.setattr(batch_augment, "available_memory", lambda: 1 << 30)  # 1 GiB free
    index = _Index([None] * 400_000)  # 400k images at 32x32: 1.1 GiB
    with pytest.raises(ValueError, match=r"need 1\.1 GiB decoded, more than the 1\.0 GiB of memory available "
                                         r"here allows.*--augment-on loader"):
        decode_images(index, 32)


def test_a_set_that_fits_is_not_refused_by_the_check(monkeypatch):
    monkeypatch.setattr(batch_augment, "available_memory", lambda: None)  # the system does not say
    index = _Index([None] * 400_000)

    class Reached(Exception):
        pass

    def stop(*a, **k):
        raise Reached

    monkeypatch.setattr("kizuna.data.sources.PairDataset", stop)
    with pytest.raises(Reached):  # past the checks, into the decode
        decode_images(index, 32)
