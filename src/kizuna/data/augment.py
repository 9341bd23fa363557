"""Image-classification augmentation with PIL: RandAugment and the supervised ViT's training transform.

RandAugment (Cubuk et al., 2020): for every image, ``num_ops`` operations are drawn uniformly (with
replacement) from a fixed set and applied with one shared magnitude ``M`` on a 0..10 scale (values
outside it are clamped to it); every op grows stronger with ``M``.

For the geometric ops, the enhance ops and solarize, ``M`` maps to strength as in timm's *increasing*
RandAugment (``rand_augment_transform`` with ``inc1``, ``_MAX_LEVEL = 10``). Without ``inc1``, timm's
ops differ: the enhance factor is ``0.1 + 1.8 * M/10`` with no random sign, and solarize and posterize
get weaker as ``M`` grows.

Posterize follows neither of timm's: kizuna keeps ``8 - round(4 * M/10)`` bits, from 8 at M=0 down to
4 at M=9 and M=10. That is the 4..8-bit range of the AutoAugment paper, growing stronger with ``M``,
and it equals torchvision's ``RandAugment`` posterize with ``M/10`` in place of
``magnitude / (num_magnitude_bins - 1)``. At M=9, timm's ``PosterizeIncreasing`` keeps
``4 - int(4 * M/10)`` = 1 bit and its ``Posterize`` keeps ``int(4 * M/10)`` = 3, so a timm recipe at the
same ``M`` posterizes much harder.

=============  =================================================  =================
op             strength at magnitude M                            random sign
=============  =================================================  =================
rotate         ``30 * M/10`` degrees                              yes
shear_x/y      ``0.3 * M/10`` (affine shear factor)               yes
translate_x/y  ``0.45 * M/10`` of the image side                  yes
brightness     enhance factor ``1 ± 0.9 * M/10``                  yes
contrast       same                                               yes
color          same (saturation)                                  yes
posterize      keep ``8 - round(4 * M/10)`` bits (8 down to 4)    no
solarize       invert pixels >= ``256 - int(256 * M/10)``         no
autocontrast   (no magnitude)                                     no
equalize       (no magnitude)                                     no
=============  =================================================  =================

Geometric ops fill uncovered pixels with grey (128). All randomness (which ops, signs, whether
an op fires) comes from the ``random.Random`` passed in - or, when none is given, from the global
``random`` module, which :class:`kizuna.data.sources.PairDataset` seeds per (seed, epoch, sample).
Either way, a resumed run or any number of loader workers draws exactly the same augmentations.

:class:`ClassificationTrainTransform` is the full training pipeline: a random crop (CIFAR-style
pad-and-crop, or a random resized crop), a horizontal flip, optional RandAugment, then
normalisation to a float tensor. Mixup / CutMix act on whole batches and live in
:mod:`kizuna.train.supervised`.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from PIL import Image, ImageEnhance, ImageOps

from .transforms import (INTERPOLATION, TrainTransform, _size_pair, check_augmentation, check_geometry,
                         check_normalisation, fit_shortest, to_rgb, to_tensor)

__all__ = [
    "OPS",
    "ClassificationTrainTransform",
    "RandAugment",
    "apply_op",
]

MAX_LEVEL = 10.0
FILL = (128, 128, 128)


def _signed(value: float, rng) -> float:
    return -value if rng.random() < 0.5 else value


def _level(magnitude: float) -> float:
    return min(max(float(magnitude), 0.0), MAX_LEVEL) / MAX_LEVEL


# The strength of each op at the top magnitude (timm's increasing ops); both augmentation paths read it here.
MAX_STRENGTH = {"rotate": 30.0, "shear_x": 0.3, "shear_y": 0.3, "translate_x": 0.45, "translate_y": 0.45,
                "brightness": 0.9, "contrast": 0.9, "color": 0.9}


def strength(name: str, magnitude: float) -> float:
    """Op ``name``'s unsigned strength at ``magnitude``: degrees, shear factor, share of the side, or
    enhance offset (see the table above)."""
    return MAX_STRENGTH[name] * _level(magnitude)


def posterize_bits(magnitude: float) -> int:
    """Bits kept: 8 at M=0 down to 4 at M=10 (torchvision's mapping, not timm's; see the module docstring)."""
    return max(1, 8 - int(round(4 * _level(magnitude))))


def solarize_threshold(magnitude: float) -> int:
    # timm's: 256 - int(256 * M/10), truncated (rounded, M = 1, 3, 6, 8 inverted one level more than timm)
    return 256 - int(256 * _level(magnitude))


def _rotate(img, m, rng):
    return img.rotate(_signed(strength("rotate", m), rng), resample=Image.BILINEAR, fillcolor=FILL)


def _shear_x(img, m, rng):
    s = _signed(strength("shear_x", m), rng)
    return img.transform(img.size, Image.AFFINE, (1, s, 0, 0, 1, 0), resample=Image.BILINEAR, fillcolor=FILL)


def _shear_y(img, m, rng):
    s = _signed(strength("shear_y", m), rng)
    return img.transform(img.size, Image.AFFINE, (1, 0, 0, s, 1, 0), resample=Image.BILINEAR, fillcolor=FILL)


def _translate_x(img, m, rng):
    dx = _signed(strength("translate_x", m), rng) * img.size[0]
    return img.transform(img.size, Image.AFFINE, (1, 0, dx, 0, 1, 0), resample=Image.BILINEAR, fillcolor=FILL)


def _translate_y(img, m, rng):
    dy = _signed(strength("translate_y", m), rng) * img.size[1]
    return img.transform(img.size, Image.AFFINE, (1, 0, 0, 0, 1, dy), resample=Image.BILINEAR, fillcolor=FILL)


def _enhance(cls, name):
    def op(img, m, rng):
        return cls(img).enhance(max(0.0, 1.0 + _signed(strength(name, m), rng)))

    return op


def _posterize(img, m, rng):
    return ImageOps.posterize(img, posterize_bits(m))


def _solarize(img, m, rng):
    return ImageOps.solarize(img, solarize_threshold(m))


def _autocontrast(img, m, rng):
    return ImageOps.autocontrast(img)


def _equalize(img, m, rng):
    return ImageOps.equalize(img)


OPS: dict[str, Callable] = {
    "rotate": _rotate,
    "shear_x": _shear_x,
    "shear_y": _shear_y,
    "translate_x": _translate_x,
    "translate_y": _translate_y,
    "brightness": _enhance(ImageEnhance.Brightness, "brightness"),
    "contrast": _enhance(ImageEnhance.Contrast, "contrast"),
    "color": _enhance(ImageEnhance.Color, "color"),
    "posterize": _posterize,
    "solarize": _solarize,
    "autocontrast": _autocontrast,
    "equalize": _equalize,
}


def apply_op(img: Image.Image, name: str, magnitude: float, rng: random.Random | None = None) -> Image.Image:
    """Apply one named op (see :data:`OPS`) to an RGB image; ``rng`` decides the sign where there is one."""
    if name not in OPS:
        raise ValueError(f"unknown augmentation op {name!r}; known: {', '.join(OPS)}")
    return OPS[name](img, magnitude, rng or random)


@dataclass
class RandAugment:
    """``num_ops`` random ops of magnitude ``magnitude`` (0..10); each fires with probability ``prob``."""

    num_ops: int = 2
    magnitude: float = 9.0
    ops: Sequence[str] = tuple(OPS)
    prob: float = 1.0
    needs_rng = True

    def __post_init__(self):
        self.ops = (self.ops,) if isinstance(self.ops, str) else tuple(self.ops)  # (a generator passed as no ops)
        unknown = [o for o in self.ops if o not in OPS]
        if unknown:
            raise ValueError(f"unknown augmentation op(s) {unknown}; known: {', '.join(OPS)}")
        if not self.ops:
            raise ValueError("RandAugment needs at least one op")

    def __call__(self, img: Image.Image, rng: random.Random | None = None) -> Image.Image:
        rng = rng or random
        img = to_rgb(img)
        for _ in range(self.num_ops):
            name = self.ops[rng.randrange(len(self.ops))]
            if self.prob >= 1.0 or rng.random() < self.prob:
                img = OPS[name](img, self.magnitude, rng)
        return img


@dataclass
class ClassificationTrainTransform:
    """Random crop -> horizontal flip -> RandAugment (optional) -> normalised float tensor.

    ``crop``: ``"pad"`` (resize the shortest side to ``image_size`` and centre-crop, pad by
    ``padding`` pixels of black on every side, take a random ``image_size`` crop - the CIFAR
    recipe), ``"rrc"`` (random resized crop with ``scale`` / ``ratio``, the ImageNet recipe) or
    ``"none"`` (resize + centre crop only).
    """

    image_size: int | list = 224
    mean: list = field(default_factory=lambda: [0.5, 0.5, 0.5])
    std: list = field(default_factory=lambda: [0.5, 0.5, 0.5])
    interpolation: str = "bicubic"
    crop: str = "pad"
    padding: int = 4
    scale: tuple = (0.08, 1.0)
    ratio: tuple = (3 / 4, 4 / 3)
    hflip: float = 0.5
    randaug_ops: int = 0  # 0 = no RandAugment
    randaug_magnitude: float = 9.0
    needs_rng = True

    def __post_init__(self):
        if self.crop not in ("pad", "rrc", "none"):
            raise ValueError(f"crop must be 'pad', 'rrc' or 'none', got {self.crop!r}")
        check_geometry(self.image_size, self.interpolation)
        check_normalisation(self.mean, self.std)
        check_augmentation(self.scale, self.ratio, self.hflip)
        self._randaug = RandAugment(self.randaug_ops, self.randaug_magnitude) if self.randaug_ops > 0 else None

    def _crop(self, img: Image.Image, rng) -> Image.Image:
        h, w = _size_pair(self.image_size)
        if self.crop == "rrc":
            rrc = TrainTransform(image_size=self.image_size, scale=tuple(self.scale), ratio=tuple(self.ratio))
            return img.resize((w, h), INTERPOLATION[self.interpolation], box=rrc.crop_box(*img.size, rng))
        img = fit_shortest(img, (h, w), self.interpolation)
        if self.crop == "none" or self.padding <= 0:
            return img
        p = int(self.padding)
        padded = ImageOps.expand(img, border=p, fill=(0, 0, 0))
        left, top = rng.randint(0, 2 * p), rng.randint(0, 2 * p)
        return padded.crop((left, top, left + w, top + h))

    def augment(self, img: Image.Image, rng: random.Random | None = None) -> Image.Image:
        """The augmented PIL image (before normalisation)."""
        rng = rng or random
        img = self._crop(to_rgb(img), rng)
        if self.hflip and rng.random() < self.hflip:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        if self._randaug is not None:
            img = self._randaug(img, rng)
        return img

    def __call__(self, img: Image.Image, rng: random.Random | None = None) -> torch.Tensor:
        return to_tensor(self.augment(img, rng), self.mean, self.std)
