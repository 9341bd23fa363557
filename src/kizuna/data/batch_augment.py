"""Augmentation of whole batches on the training device, for datasets small enough to hold decoded.

The PIL pipeline of :mod:`kizuna.data.augment` runs per image in loader processes, ~1,300 CIFAR
images/s per core. On a GPU a small model trains far faster than that: the first H200 run of
``vit_cifar10_gpu`` held ~11,000 images/s on 14 loader processes while its GPU sat at 9% of its peak
(docs/RESULTS.md). This module removes the loader from the loop:

* :func:`decode_images` decodes the training set once (loader workers, corrupt images skipped and
  counted) into one ``uint8`` tensor ``[N, 3, H, W]`` at the training size - CIFAR-10's 25,000
  images are 77 MB - and moves it to the device;
* :class:`BatchAugment` applies the same recipe as :class:`~kizuna.data.augment.ClassificationTrainTransform`
  (pad-and-crop, horizontal flip, RandAugment at the PIL path's magnitudes) to a batch at once: crops by
  gathering, geometric ops by one ``grid_sample`` per RandAugment slot, point ops on the samples that
  drew them;
* :class:`TensorBatches` is the loader: it cuts the tensor into the batches of an
  :class:`~kizuna.data.sampler.EpochSampler` (same permutations, same resume state) and augments each
  with a generator seeded by ``(seed, epoch, batch position, rank)``, so a resumed run sees exactly
  the augmentations of an uninterrupted one.

Every op reproduces Pillow's arithmetic (the same look-up tables, the same truncation), so the device
path draws from the same distribution of images as the PIL one; tests/data/test_batch_augment.py
compares each op with Pillow's on random images (point ops exactly, geometric ones up to bilinear
rounding: one grey level on a few % of pixels of a square image; more at the edges of tiny or non-square
ones, see docs/VIT.md). A one-level difference can grow in a composition (a
translation, then equalize), so an image can differ more, but the distribution does not (the pixel
statistics of `kizuna vit augment` agree). Only the random streams differ: per-sample ``random.Random`` there, one
torch generator per batch here.

Geometric ops follow Pillow's conventions: pixel centres at ``i + 0.5``, rotation about the image
centre, shear about the top-left corner, grey (128) where the source falls outside the image.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .augment import FILL, OPS, posterize_bits, solarize_threshold, strength
from .sampler import EpochSampler, _rng
from .sources import SkipCounter
from .transforms import _size_pair, check_augmentation, fit_shortest

__all__ = ["BatchAugment", "DecodedImages", "TensorBatches", "batch_generator", "decode_images"]

GEOMETRIC = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")
_GREY = float(FILL[0])


# ----------------------------------------------------------------------------------- Pillow's arithmetic
def luminance(x: torch.Tensor) -> torch.Tensor:
    """Pillow's RGB -> L on integer-valued float images ``[n, 3, H, W]`` -> ``[n, 1, H, W]``:
    ``(19595 R + 38470 G + 7471 B + 0x8000) >> 16`` (exact in float64, whose mantissa holds it)."""
    w = torch.tensor([19595.0, 38470.0, 7471.0], dtype=torch.float64, device=x.device).view(1, 3, 1, 1)
    return torch.floor(((x.double() * w).sum(1, keepdim=True) + 32768.0) / 65536.0).to(x.dtype)


def blend(degenerate: torch.Tensor, x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """``Image.blend(degenerate, x, factor)``: ``degenerate + factor * (x - degenerate)``, truncated to
    an integer and clipped to 0..255 (Pillow computes it in float32 and casts)."""
    f = factor.view(-1, 1, 1, 1).to(torch.float32)
    return torch.floor(degenerate + f * (x - degenerate)).clamp_(0.0, 255.0)


def _brightness(x, factor):
    return blend(torch.zeros_like(x), x, factor)


def _contrast(x, factor):
    mean = torch.floor(luminance(x).mean(dim=(1, 2, 3), keepdim=True, dtype=torch.float64) + 0.5).to(x.dtype)
    return blend(mean.expand_as(x), x, factor)


def _color(x, factor):
    return blend(luminance(x).expand_as(x), x, factor)


def _posterize(x, bits: int):
    step = float(2 ** (8 - bits))
    return torch.floor(x / step) * step


def _solarize(x, threshold: int):
    return torch.where(x < threshold, x, 255.0 - x)


def _histograms(x: torch.Tensor) -> torch.Tensor:
    """Per image and channel: 256-bin counts ``[n, 3, 256]`` (int64)."""
    n, c = x.shape[:2]
    values = x.reshape(n * c, -1).long()
    hist = torch.zeros(n * c, 256, dtype=torch.int64, device=x.device)
    hist.scatter_add_(1, values, torch.ones_like(values))
    return hist.view(n, c, 256)


def _apply_lut(x: torch.Tensor, lut: torch.Tensor) -> torch.Tensor:
    """``lut`` ``[n, 3, 256]`` applied per image and channel."""
    n, c = x.shape[:2]
    return torch.gather(lut.to(x.dtype).view(n * c, 256), 1, x.reshape(n * c, -1).long()).view_as(x)


def _autocontrast(x):
    """``ImageOps.autocontrast`` (no cutoff): each channel's [lo, hi] stretched to [0, 255],
    ``int(i * scale + offset)`` in float64 as Pillow's Python loop does."""
    lo = x.amin(dim=(2, 3)).double()
    hi = x.amax(dim=(2, 3)).double()
    # a tensor divided by a tensor: torch computes 255.0 / t as reciprocal(t) * 255, which rounds otherwise than
    # Pillow's double division (255/221 -> 1.153846153846154 vs 1.1538461538461537), a channel's top became 254
    scale = torch.full_like(hi, 255.0) / (hi - lo).clamp(min=1.0)
    i = torch.arange(256, dtype=torch.float64, device=x.device)
    lut = torch.trunc(i * scale[..., None] - (lo * scale)[..., None]).clamp(0.0, 255.0)
    lut = torch.where((hi > lo)[..., None], lut, i)
    return _apply_lut(x, lut)


def _equalize(x):
    """``ImageOps.equalize``: per channel, ``step = (count - count of the last used level) // 255``
    and ``lut[i] = (step // 2 + pixels below i) // step``; identity where one level or ``step == 0``."""
    hist = _histograms(x)
    used = hist > 0
    last_level = 255 - used.flip(-1).int().argmax(-1, keepdim=True)
    last_count = torch.gather(hist, -1, last_level)
    total = hist.sum(-1, keepdim=True)
    step = (total - last_count) // 255
    below = torch.cumsum(hist, -1) - hist
    lut = ((step // 2 + below) // step.clamp(min=1)).clamp(max=255)
    identity = torch.arange(256, device=x.device).expand_as(lut)
    keep = (used.sum(-1, keepdim=True) <= 1) | (step == 0)
    return _apply_lut(x, torch.where(keep, identity, lut))


# ----------------------------------------------------------------------------------- geometry
def pil_affine(name: str, value: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Pillow's inverse map ``[n, 2, 3]`` (output pixel -> source, continuous coordinates) of a
    geometric op with per-sample signed strength ``value`` (degrees, shear factor, or pixels)."""
    n = value.shape[0]
    m = torch.zeros(n, 2, 3, dtype=torch.float64, device=value.device)
    m[:, 0, 0] = m[:, 1, 1] = 1.0
    v = value.double()
    if name == "rotate":  # Image.rotate: counter-clockwise about the centre
        a = -torch.deg2rad(v)
        cos, sin = torch.cos(a), torch.sin(a)
        cx, cy = width / 2.0, height / 2.0
        m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = cos, sin, -sin, cos
        m[:, 0, 2] = cx - cos * cx - sin * cy
        m[:, 1, 2] = cy + sin * cx - cos * cy
    elif name == "shear_x":
        m[:, 0, 1] = v
    elif name == "shear_y":
        m[:, 1, 0] = v
    elif name == "translate_x":
        m[:, 0, 2] = v
    elif name == "translate_y":
        m[:, 1, 2] = v
    else:
        raise ValueError(f"{name!r} is not a geometric op; geometric: {', '.join(GEOMETRIC)}")
    return m


def source_points(m: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Where each output pixel samples its source under Pillow maps ``m`` ``[n, 2, 3]``: continuous
    ``(x, y)`` ``[n, H, W, 2]``, computed as Pillow does, ``A @ (pixel + 0.5) + t`` in float64."""
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float64, device=m.device) + 0.5,
                            torch.arange(width, dtype=torch.float64, device=m.device) + 0.5, indexing="ij")
    pixels = torch.stack([xs, ys, torch.ones_like(xs)], -1)  # [H, W, 3]
    return torch.einsum("hwk,njk->nhwj", pixels, m.to(torch.float64))


def warp(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Resample integer-valued ``x`` through Pillow maps ``m`` as ``Image.transform(AFFINE, BILINEAR)``
    does: a source point outside the image gives grey; inside, bilinear between the nearest pixels
    with the edge repeated, truncated to an integer. In float64, so the truncation agrees with
    Pillow's double arithmetic (a few MB per batch even at 32 px x 512)."""
    H, W = x.shape[-2:]
    src = source_points(m, H, W)
    outside = ((src[..., 0] < 0) | (src[..., 0] >= W) | (src[..., 1] < 0) | (src[..., 1] >= H))[:, None]
    size = torch.tensor([W, H], dtype=torch.float64, device=x.device)
    grid = 2.0 * src / size - 1.0  # grid_sample's align_corners=False coordinates
    out = F.grid_sample(x.double(), grid, mode="bilinear", padding_mode="border", align_corners=False)
    # the epsilon: a blend that is an integer in exact arithmetic (190.0) can come out of grid_sample's
    # own coordinate round trip as 189.99999..., and must truncate to 190 as in Pillow
    out = torch.floor(out + 1e-6).masked_fill_(outside, _GREY)
    return out.to(x.dtype).clamp_(0.0, 255.0)


def op_strength(name: str, magnitude: float, sign: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The signed strength of op ``name`` at ``magnitude`` (augment.py's table), one per sample; the
    translations in pixels."""
    base = strength(name, magnitude) * {"translate_x": width, "translate_y": height}.get(name, 1)
    return sign.to(torch.float64) * base  # float64: Pillow gets Python floats


def apply_op_batch(x: torch.Tensor, name: str, magnitude: float, sign: torch.Tensor | None = None) -> torch.Tensor:
    """One op of :data:`kizuna.data.augment.OPS` on every image of ``x`` (integer-valued float
    ``[n, 3, H, W]`` in 0..255); ``sign`` (+-1 per image) where the op has one."""
    if name not in OPS:
        raise ValueError(f"unknown augmentation op {name!r}; known: {', '.join(OPS)}")
    H, W = x.shape[-2:]
    if sign is None:
        sign = torch.ones(x.shape[0], device=x.device)
    if name in GEOMETRIC:
        return warp(x, pil_affine(name, op_strength(name, magnitude, sign, H, W), H, W))
    if name in ("brightness", "contrast", "color"):
        factor = (1.0 + op_strength(name, magnitude, sign, H, W)).clamp(min=0.0)
        return {"brightness": _brightness, "contrast": _contrast, "color": _color}[name](x, factor)
    if name == "posterize":
        return _posterize(x, posterize_bits(magnitude))
    if name == "solarize":
        return _solarize(x, solarize_threshold(magnitude))
    return _autocontrast(x) if name == "autocontrast" else _equalize(x)


# ----------------------------------------------------------------------------------- the batch transform
@dataclass
class BatchAugment:
    """Pad-and-crop -> horizontal flip -> RandAugment -> normalised float, on a ``uint8`` batch.

    The parameters mean what they mean in :class:`~kizuna.data.augment.ClassificationTrainTransform`;
    images arrive already at the training size (resized and centre-cropped when decoded), so
    ``crop`` is ``"pad"`` or ``"none"`` (a random resized crop needs the full-size image: use the
    loader's PIL pipeline for it).
    """

    mean: list = field(default_factory=lambda: [0.5, 0.5, 0.5])
    std: list = field(default_factory=lambda: [0.5, 0.5, 0.5])
    crop: str = "pad"
    padding: int = 4
    hflip: float = 0.5
    randaug_ops: int = 0
    randaug_magnitude: float = 9.0
    ops: Sequence[str] = tuple(OPS)
    prob: float = 1.0

    def __post_init__(self):
        if self.crop not in ("pad", "none"):
            raise ValueError(f"on-device augmentation crops with 'pad' or 'none', got {self.crop!r}; "
                             "a random resized crop ('rrc') needs the loader (augment_on='loader')")
        unknown = [o for o in self.ops if o not in OPS]
        if unknown:
            raise ValueError(f"unknown augmentation op(s) {unknown}; known: {', '.join(OPS)}")
        check_augmentation(hflip=self.hflip)  # (hflip=True flipped every image, as on the loader's path)
        self.ops = tuple(self.ops)

    def _pad_crop(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        n, _, H, W = x.shape
        p = int(self.padding)
        if self.crop == "none" or p <= 0:
            return x
        top = torch.randint(0, 2 * p + 1, (n, 1), generator=g, device=x.device)
        left = torch.randint(0, 2 * p + 1, (n, 1), generator=g, device=x.device)
        padded = F.pad(x, (p, p, p, p))  # black, as ImageOps.expand(fill=0)
        rows = (top + torch.arange(H, device=x.device))[:, :, None]  # [n, H, 1]
        cols = (left + torch.arange(W, device=x.device))[:, None, :]  # [n, 1, W]
        batch = torch.arange(n, device=x.device)[:, None, None]
        return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)

    def randaugment(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """``randaug_ops`` slots; in each, every image draws an op, a sign and whether it fires."""
        n, _, H, W = x.shape
        geometric_op = torch.tensor([name in GEOMETRIC for name in self.ops], device=x.device)
        for _ in range(self.randaug_ops):
            op = torch.randint(0, len(self.ops), (n,), generator=g, device=x.device)
            sign = torch.where(torch.rand(n, generator=g, device=x.device) < 0.5, -1.0, 1.0)
            fires = torch.rand(n, generator=g, device=x.device) < self.prob
            # the geometric ops of this slot in one grid_sample
            maps = torch.zeros(n, 2, 3, dtype=torch.float64, device=x.device)
            maps[:, 0, 0] = maps[:, 1, 1] = 1.0
            for k, name in enumerate(self.ops):
                if name in GEOMETRIC:
                    strength = op_strength(name, self.randaug_magnitude, sign, H, W)
                    maps = torch.where(((op == k) & fires)[:, None, None], pil_affine(name, strength, H, W), maps)
            # Each image's group: 0 geometric, 1 + k the k-th op, the last one no op. The rows of every group come
            # from one stable sort and one read-back of the group sizes: a nonzero() per op made the GPU wait
            # for the host eight times a slot. The same rows in the same order, so the same images.
            group = torch.where(geometric_op[op], 0, 1 + op)
            group = torch.where(fires, group, 1 + len(self.ops))
            sizes = torch.bincount(group, minlength=2 + len(self.ops)).tolist()
            rows_of = torch.argsort(group, stable=True).split(sizes)
            if sizes[0]:
                rows = rows_of[0]
                x[rows] = warp(x[rows], maps[rows])
            for k, name in enumerate(self.ops):
                rows = rows_of[1 + k]
                if sizes[1 + k] and name not in GEOMETRIC:
                    x[rows] = apply_op_batch(x[rows], name, self.randaug_magnitude, sign[rows])
        return x

    def augment(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """``uint8 [n, 3, H, W]`` -> augmented, integer-valued ``float32`` in 0..255."""
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected uint8 images [n, 3, H, W], got {images.dtype} {list(images.shape)}")
        x = self._pad_crop(images, generator)
        flip = torch.rand(len(x), generator=generator, device=x.device) < self.hflip
        x = torch.where(flip[:, None, None, None], x.flip(-1), x).float()
        return self.randaugment(x, generator) if self.randaug_ops > 0 else x

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        x = self.augment(images, generator)
        mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1) * 255.0
        std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1) * 255.0
        return (x - mean) / std


def batch_generator(device: torch.device, *words: int) -> torch.Generator:
    """A torch generator on ``device`` seeded from the integers ``words`` (e.g. seed, epoch, batch, rank)."""
    return torch.Generator(device=device).manual_seed(int(_rng(*words).integers(0, 2**63)))


# ----------------------------------------------------------------------------------- decoding and batching
@dataclass
class DecodedImages:
    images: torch.Tensor  # uint8 [N, 3, H, W] on the training device
    labels: torch.Tensor  # int64 [N]
    rows: np.ndarray  # positions in the SampleIndex that decoded (corrupt ones are missing)
    skips: SkipCounter


class _DecodeOnly:
    """Resize the shortest side, centre-crop to the training size, ``uint8 [3, H, W]`` (the first step
    of the PIL pad-and-crop; what is left is random and runs on the device)."""

    def __init__(self, image_size, interpolation: str = "bicubic"):
        self.size = _size_pair(image_size)
        self.interpolation = interpolation

    def __call__(self, img) -> torch.Tensor:
        img = fit_shortest(img, self.size, self.interpolation)
        return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1)


def available_memory(meminfo: str = "/proc/meminfo") -> int | None:
    """Bytes of memory available to a new allocation without swapping (Linux's MemAvailable), or None where the
    system does not say (macOS, Windows, an old kernel)."""
    try:
        with open(meminfo) as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024  # (kB)
    except (OSError, ValueError, IndexError):
        return None
    return None


def decode_images(index, image_size, device: torch.device | str = "cpu", workers: int = 0,
                  batch_size: int = 500, max_bytes: float = 16 * 2**30, progress: bool = False) -> DecodedImages:
    """Decode every image of ``index`` (a :class:`~kizuna.data.sources.SampleIndex`) once to ``uint8``
    at ``image_size`` and stack them on ``device``. Corrupt images are skipped and counted."""
    from .loader import Collate, make_loader
    from .sources import PairDataset

    h, w = _size_pair(image_size)
    need = len(index) * 3 * h * w
    if need > max_bytes:
        raise ValueError(f"{len(index)} images at {h}x{w} need {need / 2**30:.1f} GiB decoded, more than the "
                         f"{max_bytes / 2**30:.0f} GiB allowed for on-device augmentation; use the loader "
                         "(augment_on='loader') for a dataset this large")
    available = available_memory()
    if available is not None and need > available * 0.8:  # decoded into this process's memory first, on any device:
        # past what is free, the out-of-memory killer ended the run (or a loader worker) partway through the decode
        raise ValueError(f"{len(index)} images at {h}x{w} need {need / 2**30:.1f} GiB decoded, more than the "
                         f"{available / 2**30:.1f} GiB of memory available here allows (80% of it); use the loader "
                         "(augment_on='loader', --augment-on loader) for this dataset on this machine")
    device = torch.device(device)
    if device.type == "cuda":  # the card's own memory (16 GiB passed on an 8 GiB card and failed after the decode)
        free, total = torch.cuda.mem_get_info(device)
        if need > free / 2:  # the other half for the model, its optimizer and the augmented batches
            raise ValueError(f"{len(index)} images at {h}x{w} need {need / 2**30:.1f} GiB decoded, more than half of "
                             f"the {free / 2**30:.1f} GiB free on {device} ({total / 2**30:.0f} GiB); use the loader "
                             "(augment_on='loader', --augment-on loader) for this dataset on this GPU")
    dataset = PairDataset(index, _DecodeOnly((h, w)), caption_sampling="first", seed_transform=False,
                          draft_size=max(h, w))
    sampler = EpochSampler(len(dataset), batch_size, shuffle=False, drop_last=False, with_epoch=False)
    loader = make_loader(dataset, sampler, num_workers=workers, collate=Collate(), pin_memory=False,
                         persistent_workers=False)
    images = torch.empty(len(index), 3, h, w, dtype=torch.uint8)
    kept = np.zeros(len(index), dtype=bool)
    from kizuna.eval.encode import progress_bar  # (without a bar: a line every 30 s, and no tqdm object)

    with progress_bar(total=len(index), desc="decode", enabled=progress, unit="image") as bar:
        for batch in loader:
            rows = batch["indices"]
            if len(rows):
                images[rows] = batch["images"]
                kept[rows.numpy()] = True
            bar.update(len(rows) + sum(batch["skipped"].values()))
    rows = np.flatnonzero(kept)
    labels = torch.from_numpy(np.asarray(index.labels)[rows].astype(np.int64))
    if len(rows) < len(index):  # drop the rows of corrupt images, in place: indexing made a second copy of the set
        # (one corrupt image doubled the peak, past what max_bytes allows for). Rows ascend, so each chunk's
        # sources lie at or after the positions it fills, which no earlier chunk wrote
        for start in range(0, len(rows), batch_size):
            part = torch.from_numpy(rows[start:start + batch_size])
            images[start:start + len(part)] = images[part]
        images = images[:len(rows)]
    return DecodedImages(images.to(device), labels.to(device), rows, loader.total_skips)


class TensorBatches:
    """The loader for decoded images: an :class:`EpochSampler`'s batches, augmented on the device.

    Iterate once per epoch after ``sampler.set_epoch(e)``, as :class:`kizuna.data.loader.Loader`;
    batches are ``{"images", "labels", "epoch", "position"}``; ``state_dict`` is the sampler's.
    """

    def __init__(self, decoded: DecodedImages, sampler: EpochSampler, augment: BatchAugment, seed: int = 0,
                 rank: int = 0):
        if sampler.num_samples != len(decoded.labels):
            raise ValueError(f"sampler over {sampler.num_samples} samples, {len(decoded.labels)} decoded")
        self.decoded, self.sampler, self.augment = decoded, sampler, augment
        self.seed, self.rank = int(seed), int(rank)
        self.device = decoded.images.device
        self.skips = SkipCounter()  # per epoch: nothing is skipped after decoding
        self.total_skips = decoded.skips

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[dict]:
        for keys in self.sampler:
            rows = torch.as_tensor([k[0] if isinstance(k, tuple) else k for k in keys], dtype=torch.long)
            rows = rows.to(self.device)
            g = batch_generator(self.device, self.seed, keys.epoch, keys.position, self.rank, 0xA06)
            yield {"images": self.augment(self.decoded.images[rows], g), "labels": self.decoded.labels[rows],
                   "epoch": keys.epoch, "position": keys.position}

    def report(self) -> str:
        return self.skips.report()

    def state_dict(self) -> dict:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.sampler.load_state_dict(state)
