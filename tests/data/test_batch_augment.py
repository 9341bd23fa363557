"""On-device batch augmentation (kizuna.data.batch_augment) against Pillow, op by op."""
from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from kizuna.data.augment import OPS, apply_op
from kizuna.data.batch_augment import (
    GEOMETRIC,
    BatchAugment,
    TensorBatches,
    _DecodeOnly,
    apply_op_batch,
    batch_generator,
    decode_images,
)
from kizuna.data.sampler import EpochSampler
from kizuna.data.sources import build_index


def _images(n: int = 12, size: int = 24, seed: int = 0) -> list[np.ndarray]:
    """Half noise (every neighbour differs: interpolation errors show), half smooth gradients with
    flat areas (histogram ops, contrast)."""
    rs = np.random.RandomState(seed)
    out = [rs.randint(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(n // 2)]
    for _ in range(n - n // 2):
        walk = np.cumsum(rs.randint(-9, 10, (size, size, 3)), axis=1) + rs.randint(40, 200)
        out.append(np.clip(walk, 0, 255).astype(np.uint8))
    return out


def _batch(arrays) -> torch.Tensor:
    return torch.stack([torch.from_numpy(a).permute(2, 0, 1) for a in arrays])


class _Sign:
    """A stand-in for random.Random whose draws give the sign asked for (augment._signed)."""

    def __init__(self, sign: float):
        self.sign = sign

    def random(self) -> float:
        return 0.0 if self.sign < 0 else 0.99


@pytest.mark.parametrize("name", list(OPS))
@pytest.mark.parametrize("magnitude", [9, 4])
def test_every_op_reproduces_pillow(name, magnitude):
    arrays = _images()
    x = _batch(arrays).float()
    for sign in (1.0, -1.0):
        want = np.stack([np.asarray(apply_op(Image.fromarray(a), name, magnitude, _Sign(sign))) for a in arrays])
        got = apply_op_batch(x.clone(), name, magnitude, torch.full((len(arrays),), sign))
        got = got.permute(0, 2, 3, 1).numpy()
        diff = np.abs(got - want.astype(np.float32))
        if name in GEOMETRIC:
            # bilinear weights in float64 here, Pillow's own arithmetic there: at most one grey level
            # apart where the truncation falls on the other side, on few pixels
            assert diff.max() <= 1 and (diff > 0).mean() < 0.05, (name, sign, diff.max(), (diff > 0).mean())
        else:  # autocontrast too: one level off on 0.3% of pixels (38% of images) while 255.0 / t was reciprocal
            assert diff.max() == 0, (name, sign)


def test_geometric_op_is_not_trivially_equal():
    # the comparison above must be able to fail: a rotation differs from the input and from its mirror
    x = _batch(_images()).float()
    a = apply_op_batch(x.clone(), "rotate", 9, torch.ones(len(x)))
    b = apply_op_batch(x.clone(), "rotate", 9, -torch.ones(len(x)))
    assert (a != x).float().mean() > 0.5 and (a != b).float().mean() > 0.5
    # grey (128) fills the corners a rotation uncovers
    assert torch.all(a[:, :, 0, 0] == 128)


def test_pad_crop_and_flip_give_windows_of_the_padded_image():
    arrays = _images(8, size=16)
    x = _batch(arrays)
    aug = BatchAugment(crop="pad", padding=3, hflip=0.5)
    padded = torch.nn.functional.pad(x, (3, 3, 3, 3))
    seen_offsets, flips = set(), 0
    for seed in range(20):
        out = aug.augment(x, batch_generator(torch.device("cpu"), seed))
        assert out.dtype == torch.float32 and out.shape == x.shape
        for i in range(len(x)):
            match = None
            for top in range(7):
                for left in range(7):
                    window = padded[i, :, top:top + 16, left:left + 16].float()
                    if torch.equal(out[i], window):
                        match = (top, left, False)
                    elif torch.equal(out[i], window.flip(-1)):
                        match = (top, left, True)
            assert match is not None
            seen_offsets.add(match[:2])
            flips += match[2]
    assert len(seen_offsets) > 35  # of 49: all offsets are drawn
    assert 0.3 < flips / (20 * 8) < 0.7


def test_randaugment_applies_the_drawn_op_to_each_image():
    arrays = _images(16)
    x = _batch(arrays)
    aug = BatchAugment(crop="none", hflip=0.0, randaug_ops=1, randaug_magnitude=9, ops=("posterize", "equalize"))
    out = aug.augment(x, batch_generator(torch.device("cpu"), 3))
    post = apply_op_batch(x.float(), "posterize", 9)
    equal = apply_op_batch(x.float(), "equalize", 9)
    kinds = []
    for i in range(len(x)):
        is_post, is_eq = torch.equal(out[i], post[i]), torch.equal(out[i], equal[i])
        assert is_post or is_eq, i
        kinds.append("p" if is_post else "e")
    assert set(kinds) == {"p", "e"}
    # prob 0: no op fires
    none = BatchAugment(crop="none", hflip=0.0, randaug_ops=2, prob=0.0)
    assert torch.equal(none.augment(x, batch_generator(torch.device("cpu"), 3)), x.float())


def test_full_recipe_is_seeded_and_normalised():
    x = _batch(_images(16))
    aug = BatchAugment(randaug_ops=2, randaug_magnitude=9)
    cpu = torch.device("cpu")
    a, b, c = aug(x, batch_generator(cpu, 0, 1)), aug(x, batch_generator(cpu, 0, 1)), aug(x, batch_generator(cpu, 0, 2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= -1.0 and a.max() <= 1.0  # mean/std 0.5: [-1, 1]
    raw = aug.augment(x, batch_generator(cpu, 0, 1))
    assert torch.equal(raw, torch.round(raw)) and raw.min() >= 0 and raw.max() <= 255
    assert torch.allclose(a, (raw / 255.0 - 0.5) / 0.5, atol=1e-6)


def test_bad_settings_and_input_are_refused():
    with pytest.raises(ValueError, match="rrc.*loader"):
        BatchAugment(crop="rrc")
    with pytest.raises(ValueError, match="unknown augmentation op"):
        BatchAugment(ops=("rotate", "twirl"))
    with pytest.raises(ValueError, match="uint8"):
        BatchAugment().augment(torch.zeros(2, 3, 8, 8), batch_generator(torch.device("cpu"), 0))


# ----------------------------------------------------------------------------------- decoding, batches
def _shard(path: Path, arrays, corrupt=()) -> None:
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tf:
        for i, a in enumerate(arrays):
            buf = io.BytesIO()
            Image.fromarray(a).save(buf, format="PNG")
            data = b"not an image" if i in corrupt else buf.getvalue()
            for name, payload in ((f"{i:09d}.cls", str(i % 3).encode()), (f"{i:09d}.png", data)):
                info = tarfile.TarInfo(name)
                info.size = len(payload)
                tf.addfile(info, io.BytesIO(payload))


def test_decode_images_skips_and_counts_corrupt_images(tmp_path):
    arrays = _images(10, size=20)
    _shard(tmp_path / "000000.tar", arrays, corrupt={4})
    index = build_index(str(tmp_path), require="label")
    decoded = decode_images(index, 16, batch_size=3)
    assert decoded.images.shape == (9, 3, 16, 16) and decoded.images.dtype == torch.uint8
    assert list(decoded.rows) == [0, 1, 2, 3, 5, 6, 7, 8, 9]
    assert decoded.labels.tolist() == [r % 3 for r in decoded.rows]
    assert decoded.skips.total == 1 and decoded.skips.as_dict() == {"corrupt_image": 1}
    for k, r in enumerate(decoded.rows):  # the same resize + centre crop as the PIL pipeline
        assert torch.equal(decoded.images[k], _DecodeOnly(16)(Image.fromarray(arrays[r])))
    with pytest.raises(ValueError, match="GiB.*augment_on='loader'"):
        decode_images(index, 16, max_bytes=1000)


def test_tensor_batches_resume_where_they_left_off(tmp_path):
    arrays = _images(10, size=16)
    _shard(tmp_path / "000000.tar", arrays)
    decoded = decode_images(build_index(str(tmp_path), require="label"), 16)
    aug = BatchAugment(randaug_ops=2)

    def batches(state=None, epoch=0):
        sampler = EpochSampler(10, 3, seed=5)
        loader = TensorBatches(decoded, sampler, aug, seed=5)
        if state:
            loader.load_state_dict(state)
        sampler.set_epoch(epoch)
        return loader, iter(loader)

    loader, it = batches()
    first = next(it)
    state = loader.state_dict()
    rest = [b["images"] for b in it]
    assert first["images"].shape == (3, 3, 16, 16) and len(rest) == 2 and len(loader) == 3
    _, it2 = batches(state)
    resumed = [b["images"] for b in it2]
    assert len(resumed) == 2 and all(torch.equal(a, b) for a, b in zip(rest, resumed))
    _, other_epoch = batches(epoch=1)
    assert not torch.equal(next(other_epoch)["images"], first["images"])
    with pytest.raises(ValueError, match="decoded"):
        TensorBatches(decoded, EpochSampler(7, 3), aug)


def _randaugment_one_image_at_a_time(aug: BatchAugment, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """The recipe read plainly: each slot draws every image's op, sign and firing, then each image gets its op."""
    x = x.clone()
    n = len(x)
    for _ in range(aug.randaug_ops):
        op = torch.randint(0, len(aug.ops), (n,), generator=g)
        sign = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0)
        fires = torch.rand(n, generator=g) < aug.prob
        for i in range(n):
            if fires[i]:
                x[i:i + 1] = apply_op_batch(x[i:i + 1], aug.ops[int(op[i])], aug.randaug_magnitude, sign[i:i + 1])
    return x


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_randaugment_gives_each_image_its_own_drawn_op_as_one_image_alone_would(seed):
    """Grouping the images by op (one sort, one read-back per slot) must give every image exactly what its op,
    sign and firing give it alone: every op of the list, geometric and not, some slots not firing."""
    x = _batch(_images(24, seed=seed)).float()
    aug = BatchAugment(crop="none", hflip=0.0, randaug_ops=2, randaug_magnitude=9, prob=0.8)
    got = aug.randaugment(x.clone(), batch_generator(torch.device("cpu"), seed))
    want = _randaugment_one_image_at_a_time(aug, x, batch_generator(torch.device("cpu"), seed))
    assert torch.equal(got, want)


def test_randaugment_reads_back_from_the_device_once_a_slot():
    """Each host read-back of a device tensor stalls a GPU's queue: a nonzero() per op made 8 a slot."""
    from torch.overrides import TorchFunctionMode

    reads = []

    class CountReadBacks(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            name = getattr(func, "__name__", "")
            if name in ("nonzero", "tolist", "item", "__bool__", "__int__", "__float__", "__index__", "any", "all"):
                reads.append(name)
            return func(*args, **(kwargs or {}))

    aug = BatchAugment(crop="pad", randaug_ops=2, randaug_magnitude=9)
    with CountReadBacks():
        aug(_batch(_images(16)), batch_generator(torch.device("cpu"), 0))
    assert len(reads) == aug.randaug_ops, reads


@pytest.mark.parametrize("corrupt, batch_size", [({0, 4, 9}, 2), ({1, 2, 3}, 4), ({8}, 500)])
def test_decode_images_drops_corrupt_rows_in_place(tmp_path, corrupt, batch_size):
    """The rows of corrupt images are dropped within the one buffer (session 51): indexing made a second copy of
    the whole set, one corrupt image doubling the peak past what max_bytes allows for."""
    arrays = _images(10, size=16)
    _shard(tmp_path / "000000.tar", arrays, corrupt=corrupt)
    decoded = decode_images(build_index(str(tmp_path), require="label"), 16, batch_size=batch_size)
    assert list(decoded.rows) == [r for r in range(10) if r not in corrupt]
    for k, r in enumerate(decoded.rows):
        assert torch.equal(decoded.images[k], _DecodeOnly(16)(Image.fromarray(arrays[r])))
    assert decoded.images.untyped_storage().nbytes() == 10 * 3 * 16 * 16  # the decode's own buffer, no copy
