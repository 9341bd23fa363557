"""--resampled draws batches with replacement, not samples within a batch: with repeats inside a batch, a
contrastive loss treats the copy (another caption of the same image) as a negative of itself."""
from __future__ import annotations

import numpy as np

from kizuna.data.sampler import EpochSampler


def _ids(batch):
    return [key[0] for key in batch]


def test_a_resampled_batch_holds_distinct_samples_and_the_ranks_are_disjoint():
    # Flickr8k-sized: with replacement inside a batch, two of three batches of 128 held a sample twice
    for world in (1, 2):
        ranks = [EpochSampler(6091, 128, rank=r, world_size=world, seed=1, resampled=True, steps_per_epoch=47)
                 for r in range(world)]
        for s in ranks:
            s.set_epoch(0)
        for batches in zip(*ranks):
            drawn = [i for batch in batches for i in _ids(batch)]
            assert len(drawn) == 128 * world and len(set(drawn)) == len(drawn)
    # still with replacement across batches: over an epoch some samples recur, some are never drawn
    s = EpochSampler(600, 64, seed=1, resampled=True, steps_per_epoch=9)
    s.set_epoch(0)
    counts = np.bincount([i for batch in s for i in _ids(batch)], minlength=600)
    assert counts.max() > 1 and (counts == 0).any()


def test_a_resampled_batch_larger_than_the_data_takes_every_sample_before_any_twice():
    s = EpochSampler(5, 6, rank=0, world_size=2, seed=0, resampled=True, steps_per_epoch=3)
    r1 = EpochSampler(5, 6, rank=1, world_size=2, seed=0, resampled=True, steps_per_epoch=3)
    for a, b in zip(s, r1):
        counts = np.bincount(_ids(a) + _ids(b), minlength=5)
        assert sorted(counts.tolist()) == [2, 2, 2, 3, 3]  # 12 draws of 5 samples, as even as can be


def test_a_resampled_batch_is_the_same_computed_directly_or_iterated_and_after_a_resume():
    s = EpochSampler(1000, 32, seed=4, resampled=True)
    s.set_epoch(2)
    it = iter(s)
    head = [_ids(next(it)) for _ in range(3)]
    assert head == [s.batch(2, b) for b in range(3)]
    fresh = EpochSampler(1000, 32, seed=4, resampled=True)
    fresh.load_state_dict(s.state_dict())
    fresh.set_epoch(2)
    assert _ids(next(iter(fresh))) == s.batch(2, 3)


def test_a_folder_of_netpbm_and_jfif_images_is_read(tmp_path):
    """GTSRB's images are .ppm, and a browser saves JPEGs as .jfif: a folder of them was "no images found" (a
    class folder of them "holds no images"), while the same files given alone or in a CSV were read."""
    from PIL import Image

    from kizuna.data.images import list_images, load_image
    from kizuna.eval.datasets import load_dataset

    for k, cls in enumerate(["00000", "00001"]):
        folder = tmp_path / "test" / cls
        folder.mkdir(parents=True)
        Image.new("RGB", (8, 8), (200 * k, 10, 10)).save(folder / "a.ppm")
        Image.new("L", (8, 8), 90).save(folder / "b.pgm")
        Image.new("RGB", (8, 8), (10, 10, 10)).save(folder / "c.jfif", format="JPEG")
    listed = list_images(tmp_path / "test")
    assert [p.name for p in listed] == ["a.ppm", "b.pgm", "c.jfif"] * 2
    assert all(load_image(p).size == (8, 8) for p in listed)
    ds = load_dataset(str(tmp_path / "test"), classnames=["stop", "yield"])
    assert len(ds) == 6 and sorted(ds.labels) == [0, 0, 0, 1, 1, 1]


def test_a_shard_sample_with_an_image_of_another_type_is_counted_as_such(tmp_path):
    """A .gif in a shard (shards are read for jpg, jpeg, png, webp) was counted as missing_image, and the skip
    report's one example sat after the last reason, read as that reason's."""
    import io
    import tarfile

    from PIL import Image

    from kizuna.data.sources import build_index

    def png(fmt):
        buf = io.BytesIO()
        Image.new("RGB", (4, 4)).save(buf, format=fmt)
        return buf.getvalue()

    members = [("000000000.png", png("PNG")), ("000000000.txt", b"a red square"),
               ("000000001.gif", png("GIF")), ("000000001.txt", b"a gif"),
               ("000000002.txt", b"no image at all"),
               ("000000003.png", png("PNG")), ("000000003.txt", b"  "),
               ("000000004.png", png("PNG")), ("000000004.txt", b""),
               ("000000005.png", png("PNG")), ("000000005.txt", b"")]
    with tarfile.open(tmp_path / "s.tar", "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    idx = build_index(str(tmp_path / "s.tar"))
    assert idx.skips == {"unsupported_image": 1, "missing_image": 1, "empty_caption": 3}
    assert idx.skips.examples["unsupported_image"][0].startswith("key 000000001.gif (shard samples are read for .jpg")
    report = idx.skips.report()
    assert report.startswith("skipped 5 samples: empty_caption=3 (e.g. ") and report.endswith(
        "), missing_image=1, unsupported_image=1")


def test_a_resampled_run_saved_before_distinct_draws_resumes_with_its_own():
    """A run started with per-rank draws with replacement, resumed after the change: its remaining batches are the
    ones it would have drawn (a killed run resumes exactly), while a new run draws distinct samples."""
    old_state = EpochSampler(50, 8, seed=3, resampled=True, steps_per_epoch=6).state_dict()
    del old_state["resampled_draws"]  # as a state saved before the version was recorded
    old_state["batches_consumed"] = 2
    resumed = EpochSampler(50, 8, seed=3, resampled=True, steps_per_epoch=6)
    resumed.load_state_dict(old_state)
    resumed.set_epoch(0)
    expected = [np.random.Generator(np.random.PCG64(np.random.SeedSequence([3, 0, 0, b, 0x5EED]))).integers(
        0, 50, size=8).tolist() for b in (2, 3, 4, 5)]
    assert [_ids(batch) for batch in resumed] == expected
    assert resumed.state_dict()["resampled_draws"] == 1  # and saved again as such
    fresh = EpochSampler(50, 8, seed=3, resampled=True, steps_per_epoch=6)
    assert fresh.state_dict()["resampled_draws"] == 2
    fresh.load_state_dict(fresh.state_dict())
    assert fresh.resampled_draws == 2
