"""Image preprocessing without torchvision.

Evaluation: RGB -> resize the shortest side (bicubic) -> centre crop -> [0, 1] -> normalise.
Training: RGB -> random resized crop (scale 0.9-1.0 by default) -> optional flip / colour jitter ->
normalise. Training transforms take an explicit ``random.Random`` so a resumed run draws the same
crops (see ``PairDataset``), instead of reading hidden global RNG state.
"""
from __future__ import annotations

import copy
import functools
import math
import numbers
import random
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image, ImageEnhance

from .images import upright

INTERPOLATION = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "nearest": Image.NEAREST}

#: Raise it with any change that gives a sample other training pixels for the same seed and step (decoding, crops,
#: augmentations): a checkpoint records it, and a resume by a kizuna of another version says that the run goes on
#: with other pixels than it would have (not bit-exactly). 1: JPEGs decoded whole for a training crop; 2 (2026-12-05):
#: decoded at a draft size first (crop_draft_size), which gives other pixels.
TRAINING_PIXELS_VERSION = 2


def _keyed_or_palette_alpha(img: Image.Image) -> bool:
    """A colour key (info["transparency"]), or a palette with alpha: what Image.quantize() makes of an RGBA image
    (its transparent pixels came out as their palette colour, white once saved as PNG and reopened). A palette
    whose alphas are all 0 is opaque: PIL gives a TGA's 32-bit colour map an RGBA palette whatever its header's
    alpha bits say, and those images came out white."""
    if "transparency" in img.info:
        return True
    palette = img.palette if img.mode == "P" else None
    if palette is None or not palette.mode.endswith("A"):
        return False
    alphas = bytes(palette.palette)[len(palette.mode) - 1::len(palette.mode)]
    return any(alphas) and any(a != 255 for a in alphas)


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL image -> RGB, upright. A camera's EXIF orientation is applied (:func:`~kizuna.data.images.upright`;
    decoded by kizuna it already is, but an image a user opened with PIL, as the README's snippet does, was
    encoded on its side). Transparent pixels are composited onto white (as HF's convert_rgb does), so a logo
    with a transparent background does not turn into black noise: an alpha channel, or a transparent colour
    key (PNG tRNS) in a palette, grey or RGB image; CMYK and palette images go through PIL's converters.
    Grey of more than 8 bits: 16-bit samples scale by the bit depth; 32-bit integer and float values already in
    0..255 are kept, as PIL's convert("RGB") and HF keep them; float intensities in 0..1 are scaled by 255, and
    other float ranges stretched over their finite pixels (:func:`_float_to_grey`)."""
    if not isinstance(img, Image.Image):
        hint = ("open it with PIL.Image.open(path)" if isinstance(img, (str, bytes)) or hasattr(img, "__fspath__")
                else "make one with PIL.Image.fromarray(array)" if hasattr(img, "__array__") else "pass a PIL image")
        raise TypeError(f"expected a PIL image, got {type(img).__name__}; {hint}")
    img = upright(img)
    if img.mode in ("P", "L", "RGB", "1") and _keyed_or_palette_alpha(img):
        img = img.convert("RGBA")  # PIL turns the colour key into alpha
    if img.mode == "RGB":
        return img
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        img = img.convert("RGBA")
        if img.getchannel("A").getextrema()[0] == 255:  # opaque throughout: no compositing (1.5x the decode)
            return img.convert("RGB")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, img).convert("RGB")
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit samples scale by the bit depth (30000 is a mid grey, whatever else the image holds); 32-bit ones
        # ("I") that all lie in 0..255 are kept as they are, as PIL's convert("RGB") and HF keep them (200 became
        # 1; a 16-bit PNG opens as I;16 from Pillow 10.3, below kizuna's floor); only 32-bit values past 16 bits
        # fall back to the image's own maximum
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
        top = 255.0 if img.mode == "I" and 0.0 <= lo and hi <= 255.0 else 65535.0 if hi <= 65535 else hi
        grey = (np.clip(arr, 0, None) / top * 255.0).round().astype(np.uint8)
        key = img.info.get("transparency")
        if isinstance(key, int):  # a colour key (PNG tRNS) in a 16-bit grey image: white, as for 8 bits
            grey[arr == key] = 255
        return Image.fromarray(grey, "L").convert("RGB")
    if img.mode == "F":
        return Image.fromarray(_float_to_grey(np.asarray(img, dtype=np.float64)), "L").convert("RGB")
    return img.convert("RGB")


def _float_to_grey(arr: np.ndarray) -> np.ndarray:
    """A float ("F") image -> 8-bit grey, judged on its finite pixels: intensities in 0..1 are scaled by 255 (a
    constant 0.5 is mid grey); values already in 0..255 are kept, rounded, as PIL's convert("RGB") and HF keep
    them (a photo of 100..150 was stretched to 0..255, a constant 200 was black); any other range (a depth map,
    negative values) is stretched from its minimum to its maximum, and a constant image outside 0..255 is
    clipped to it, as PIL does. NaN and -inf pixels go to the bottom, +inf to the top: one inf pixel made the
    whole image black."""
    finite = np.isfinite(arr)
    values = arr[finite]
    lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if 0.0 <= lo and hi <= 1.0:
        lo, hi = 0.0, 1.0
    elif (0.0 <= lo and hi <= 255.0) or lo == hi:
        lo, hi = 0.0, 255.0
    arr = np.where(finite, arr, np.where(arr > 0, hi, lo))  # NaN compares False: the bottom
    return (np.clip((arr - lo) / (hi - lo), 0.0, 1.0) * 255.0).round().astype(np.uint8)


def _size_pair(size) -> tuple[int, int]:
    """(height, width) from an int (a numpy one too: check_geometry takes it, and it failed at the first image with
    "invalid index to scalar variable") or a pair."""
    if isinstance(size, numbers.Integral) and not isinstance(size, bool):
        return (int(size), int(size))
    return (int(size[0]), int(size[1]))


def check_augmentation(scale=None, ratio=None, hflip=None, color_jitter=None) -> None:
    """The random augmentation's settings, refused where a training transform is made (``get_preprocess(...,
    train=True, **overrides)``) as the command line refuses them: ``hflip=True`` mirrored every image, a scale
    over 1 (or of 0) left every image to the crop's fallback, the whole image (no random crop at all)."""
    def number(v) -> bool:
        return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)

    def pair(v) -> tuple | None:
        v = tuple(v) if isinstance(v, (list, tuple)) else (v,)
        return v if len(v) == 2 and all(number(x) for x in v) else None

    if scale is not None and not ((s := pair(scale)) and 0.0 < s[0] <= s[1] <= 1.0):
        raise ValueError(f"scale {scale!r}: expected two area shares (LOW, HIGH) with 0 < LOW <= HIGH <= 1, e.g. "
                         "(0.08, 1.0)")
    if ratio is not None and not ((r := pair(ratio)) and min(r) > 0):
        raise ValueError(f"ratio {ratio!r}: expected two aspect ratios (width / height) above 0, e.g. (3/4, 4/3)")
    if hflip is not None and not (number(hflip) and 0.0 <= hflip <= 1.0):
        raise ValueError(f"hflip {hflip!r}: expected the probability of a flip, a number in [0, 1] (not a bool)")
    if color_jitter is not None and not (number(color_jitter) and color_jitter >= 0):
        raise ValueError(f"color_jitter {color_jitter!r}: expected a strength >= 0 (0 = off)")


def center_crop(img: Image.Image, size) -> Image.Image:
    th, tw = _size_pair(size)
    w, h = img.size
    if w < tw or h < th:  # pad small images with black, centred (as torchvision does) rather than fail; not
        # ImageOps.pad, which scales the image up to fill the new size first (10x5 -> 20x20 was 200 image pixels)
        canvas = Image.new(img.mode, (max(w, tw), max(h, th)))
        canvas.paste(img, ((canvas.width - w) // 2, (canvas.height - h) // 2))
        img = canvas
        w, h = img.size
    left = int(round((w - tw) / 2.0))
    top = int(round((h - th) / 2.0))
    return img.crop((left, top, left + tw, top + th))


HUGE_RESIZE_PIXELS = 2**25  # past this, fit_shortest resizes only the crop's region (32 Mpx, ~100 MB of RGB)


def fit_shortest(img: Image.Image, size, interpolation: str = "bicubic", crop_pct: float = 1.0) -> Image.Image:
    """RGB, resized keeping its aspect, then centre-cropped to ``size`` (an int or (height, width)): the short
    side is resized to the crop's short side / ``crop_pct`` (CLIP's Resize + CenterCrop; HF's ``shortest_edge``,
    which may be above the crop's, as timm's crop_pct), or, where that would not cover a non-square crop
    (a square photo for a 32x48 model came out 32x32 and was padded with black columns), until it covers the
    crop / ``crop_pct``. At ``crop_pct`` 1 an image already that size is returned as it is."""
    h, w = _size_pair(size)
    img = to_rgb(img)
    if img.size == (w, h) and crop_pct == 1.0:
        return img
    interp = INTERPOLATION[interpolation]
    iw, ih = img.size
    edge = round(min(h, w) / crop_pct)
    # the short side at the edge, the long side int(edge * long / short), as transformers rounds it
    nw, nh = (edge, int(edge * ih / iw)) if iw <= ih else (int(edge * iw / ih), edge)
    if nw < w or nh < h:
        scale = max(h / ih, w / iw) / crop_pct
        nw, nh = max(w, round(iw * scale)), max(h, round(ih * scale))
    if (nw, nh) == img.size:
        return center_crop(img, (h, w))
    if nw * nh > HUGE_RESIZE_PIXELS:
        # a sliver (1 x 20,000 pixels, a few hundred bytes of PNG) resized whole would be a gigapixel image for
        # a 224-pixel crop: resize only the part of it that the crop keeps
        left, top = int(round((nw - w) / 2.0)), int(round((nh - h) / 2.0))
        sx, sy = iw / nw, ih / nh
        # Only the source pixels the crop's filters reach (cut exactly: whole pixels), then one axis at a time, in
        # the order Pillow's full resize takes them: its box resize of both axes in one call picks its order from
        # the box's sizes, not the full image's, and was not resize-then-crop (19/255 off on a 3 x 900 sliver);
        # each pass alone is, but for a rounding of the box's coordinates (1/255 now and then)
        x0, x1 = _reach(left, w, sx, iw)
        y0, y1 = _reach(top, h, sy, ih)
        region = img.crop((x0, y0, x1, y1))
        across = (left * sx - x0, (left + w) * sx - x0)
        down = (top * sy - y0, (top + h) * sy - y0)
        if _rows_first(iw, ih, nw, nh):
            rows = region.resize((x1 - x0, h), interp, box=(0, down[0], x1 - x0, down[1]))
            return rows.resize((w, h), interp, box=(across[0], 0, across[1], h))
        columns = region.resize((w, y1 - y0), interp, box=(across[0], 0, across[1], y1 - y0))
        return columns.resize((w, h), interp, box=(0, down[0], w, down[1]))
    return center_crop(img.resize((nw, nh), interp), (h, w))


def _reach(start: int, n: int, scale: float, size: int) -> tuple[int, int]:
    """The source pixels ``[a, b)`` that output pixels ``start .. start + n`` draw on at ``scale`` source pixels per
    output pixel: the widest filter's reach (Lanczos: 3 pixels, widened by a shrink) and one for rounding."""
    reach = 3 * max(scale, 1.0) + 1
    return max(0, math.floor(start * scale - reach)), min(size, math.ceil((start + n) * scale + reach))


def _rows_first(iw: int, ih: int, nw: int, nh: int) -> bool:
    """Whether Pillow resizes an ``iw x ih`` image to ``nw x nh`` rows first: since Pillow 13 where the height
    shrinks by more than twice what the width does (python-pillow/Pillow#9549), before that never."""
    return ih - nh > 0 and ih - nh > (iw - nw) * 2 and _pillow_may_take_rows_first()


@functools.lru_cache(maxsize=1)
def _pillow_may_take_rows_first() -> bool:
    """Whether this Pillow takes the rows first where the height shrinks most, found on a probe whose two orders
    give other pixels (the version it came in is not what is checked: a build may carry it or not)."""
    probe = Image.frombytes("L", (33, 100), bytes((i * 37) % 251 for i in range(33 * 100)))
    full = probe.resize((32, 96), Image.Resampling.BICUBIC)
    columns_first = probe.resize((32, 100), Image.Resampling.BICUBIC).resize((32, 96), Image.Resampling.BICUBIC)
    return full.tobytes() != columns_first.tobytes()


def check_normalisation(mean, std) -> None:
    """A preprocess config's ``mean`` and ``std``: finite numbers, ``std`` above 0 (the pixels are divided by it). A
    checkpoint with a std of 0 gave inf/NaN pixels and NaN embeddings, written or printed as results. A
    ValueError naming the config field."""
    for key, values in (("mean", mean), ("std", std)):
        try:  # text ("0.5") is no number: ["0.5", ...] failed inside torch as "too many dimensions 'str'"
            if isinstance(values, (str, bytes)) or any(isinstance(v, (str, bytes, bool)) for v in values):
                raise TypeError
            numbers = [float(v) for v in values]
        except (TypeError, ValueError):
            numbers = None
        if numbers is None or len(numbers) != 3:  # two or four failed as a reshape traceback at the first image
            raise ValueError(f"preprocess {key} must be 3 numbers, one per RGB channel, got {values!r} (the "
                             '"preprocess" of the model\'s config.json)')
        if not all(math.isfinite(v) for v in numbers) or (key == "std" and not all(v > 0 for v in numbers)):
            need = "finite and above 0 (the pixels are divided by it)" if key == "std" else "finite"
            raise ValueError(f"preprocess {key} must be {need}, got {numbers!r} (the \"preprocess\" of the "
                             "model's config.json)")


def check_geometry(image_size, interpolation: str, resize_mode: str = "shortest", crop_pct=1.0) -> None:
    """A preprocess config's size, resampling filter, resize mode and crop fraction. Unchecked, a hand-edited or
    foreign config.json failed at the first image as a KeyError or IndexError traceback ("lanczos", [32]), read
    "32" as 3 x 2 pixels, or ran another preprocessing without a word (any resize_mode but "squash" was
    "shortest"). A ValueError naming the config field."""
    where = '(the "preprocess" of the model\'s config.json)'

    def whole(v) -> bool:
        return isinstance(v, numbers.Integral) and not isinstance(v, bool) and v > 0

    pair = not isinstance(image_size, (str, bytes)) and hasattr(image_size, "__len__")  # a list, tuple, array
    if not (whole(image_size) or (pair and len(image_size) == 2 and all(whole(v) for v in image_size))):
        raise ValueError(f"preprocess image_size must be a whole number of pixels or [height, width], got "
                         f"{image_size!r} {where}")
    # a typo's 1000000 was killed by the kernel at 21 GB, minutes into resizing the first image
    if max(image_size if pair else [image_size]) > MAX_IMAGE_SIDE:
        raise ValueError(f"preprocess image_size {image_size!r} {where} is past {MAX_IMAGE_SIDE} pixels a side: "
                         "a typo? CLIP models take 224 to 1024")
    if interpolation not in INTERPOLATION:
        raise ValueError(f"preprocess interpolation must be one of {', '.join(INTERPOLATION)}, got "
                         f"{interpolation!r} {where}")
    if resize_mode not in RESIZE_MODES:
        raise ValueError(f"preprocess resize_mode must be one of {', '.join(RESIZE_MODES)}, got {resize_mode!r} "
                         f"{where}")
    if not isinstance(crop_pct, numbers.Real) or isinstance(crop_pct, bool) or not 0.0 < float(crop_pct) <= 1.0:
        raise ValueError(f"preprocess crop_pct must be in (0, 1], got {crop_pct!r} {where}")


RESIZE_MODES = ("shortest", "squash")
MAX_IMAGE_SIDE = 8192  # an 8192-px side is 0.75 GiB of float32 pixels per image: past it, a config's typo


def to_tensor(img: Image.Image, mean, std) -> torch.Tensor:
    arr = np.array(img, dtype=np.uint8)  # (a writable copy: asarray's, read-only, was copied again)
    x = torch.from_numpy(arr).permute(2, 0, 1).float().div_(255.0)
    m, s = _mean_std(tuple(map(float, mean)), tuple(map(float, std)))
    return x.sub_(m).div_(s)


@functools.lru_cache(maxsize=32)
def _mean_std(mean: tuple, std: tuple) -> tuple[torch.Tensor, torch.Tensor]:
    """The normalisation's [3, 1, 1] tensors, made once (two torch.tensor calls an image were 16 us of its ~100)."""
    return (torch.tensor(mean, dtype=torch.float32).view(3, 1, 1),
            torch.tensor(std, dtype=torch.float32).view(3, 1, 1))


@dataclass
class Preprocess:
    """Evaluation preprocessing, built from a checkpoint's ``preprocess`` config."""

    image_size: int | list = 224
    mean: list = field(default_factory=lambda: [0.48145466, 0.4578275, 0.40821073])
    std: list = field(default_factory=lambda: [0.26862954, 0.26130258, 0.27577711])
    interpolation: str = "bicubic"
    resize_mode: str = "shortest"  # "shortest" (resize + centre crop) | "squash" (resize to size)
    # resize to image_size / crop_pct first, then crop the centre: "shortest" keeps the aspect (HF shortest_edge
    # 256 for a 224 crop: 0.875), "squash" does not (HF size {"height": 256, "width": 256} and a 224 crop)
    crop_pct: float = 1.0

    def __post_init__(self):
        check_geometry(self.image_size, self.interpolation, self.resize_mode, self.crop_pct)
        check_normalisation(self.mean, self.std)

    def geometry(self, img: Image.Image) -> Image.Image:
        """The RGB image at the model's size: resized and cropped, not yet normalised (the robustness probes
        corrupt this image)."""
        if self.resize_mode != "squash":
            return fit_shortest(img, self.image_size, self.interpolation, self.crop_pct)
        h, w = _size_pair(self.image_size)
        sh, sw = (h, w) if self.crop_pct == 1.0 else (round(h / self.crop_pct), round(w / self.crop_pct))
        img = to_rgb(img)
        img = img.resize((sw, sh), INTERPOLATION[self.interpolation]) if img.size != (sw, sh) else img
        return center_crop(img, (h, w)) if (sh, sw) != (h, w) else img

    def __call__(self, img: Image.Image) -> torch.Tensor:
        return to_tensor(self.geometry(img), self.mean, self.std)


@dataclass
class TrainTransform:
    """Random resized crop + optional flip and colour jitter; randomness from the ``rng`` passed in."""

    image_size: int | list = 224
    mean: list = field(default_factory=lambda: [0.48145466, 0.4578275, 0.40821073])
    std: list = field(default_factory=lambda: [0.26862954, 0.26130258, 0.27577711])
    interpolation: str = "bicubic"
    scale: tuple = (0.9, 1.0)
    ratio: tuple = (3 / 4, 4 / 3)
    hflip: float = 0.0
    color_jitter: float = 0.0  # strength for brightness, contrast and saturation
    needs_rng = True

    def __post_init__(self):
        check_geometry(self.image_size, self.interpolation)
        check_normalisation(self.mean, self.std)
        check_augmentation(self.scale, self.ratio, self.hflip, self.color_jitter)

    def crop_box(self, width: int, height: int, rng: random.Random) -> tuple[int, int, int, int]:
        area = width * height
        low, high = min(self.ratio), max(self.ratio)  # either order, as torchvision takes it
        log_ratio = (math.log(low), math.log(high))
        for _ in range(10):
            target = area * rng.uniform(*self.scale)
            aspect = math.exp(rng.uniform(*log_ratio))
            w = int(round(math.sqrt(target * aspect)))
            h = int(round(math.sqrt(target / aspect)))
            if 0 < w <= width and 0 < h <= height:
                left = rng.randint(0, width - w)
                top = rng.randint(0, height - h)
                return left, top, left + w, top + h
        # Fall back (as torchvision does) to the largest centre crop whose aspect is within ``ratio``.
        in_ratio = width / height
        if in_ratio < low:  # (at least a pixel: a 1-px image at ratios (2, 4) gave a box 0 high)
            w, h = width, max(1, int(round(width / low)))
        elif in_ratio > high:
            w, h = max(1, int(round(height * high))), height
        else:
            w, h = width, height
        left, top = (width - w) // 2, (height - h) // 2
        return left, top, left + w, top + h

    def __call__(self, img: Image.Image, rng: random.Random | None = None) -> torch.Tensor:
        rng = rng or random  # the module's global RNG, which PairDataset seeds per sample
        img = to_rgb(img)
        h, w = _size_pair(self.image_size)
        img = img.resize((w, h), INTERPOLATION[self.interpolation], box=self.crop_box(*img.size, rng))
        if self.hflip and rng.random() < self.hflip:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        if self.color_jitter:
            j = self.color_jitter
            for enhancer in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
                img = enhancer(img).enhance(rng.uniform(max(0.0, 1 - j), 1 + j))
        return to_tensor(img, self.mean, self.std)


def crop_draft_size(side: int, scale_low: float, ratio: tuple = TrainTransform.ratio) -> int:
    """The side a JPEG may be decoded down to (draft mode) and still give a random resized crop its pixels
    at full resolution: the smallest crop covers ``scale_low`` of the area at the narrowest aspect, so its
    short side is ``sqrt(scale_low * min(ratio, 1/ratio))`` of the image's (for a square image; a longer
    one has more area)."""
    narrowest = min(min(ratio), 1 / max(ratio))
    return math.ceil(side / math.sqrt(scale_low * narrowest))


def preprocess_from_config(cfg: dict, train: bool = False, **train_overrides):
    # the transform's own mean/std lists: shared with the model's config, `pp.mean[:] = ...` on a transform also
    # changed the normalisation save_model recorded for the model
    cfg = copy.deepcopy(cfg)
    if train:
        keys = ("image_size", "mean", "std", "interpolation")
        # (an override of a key the model's config has, image_size=64, was "got multiple values for keyword")
        return TrainTransform(**{**{k: cfg[k] for k in keys if k in cfg}, **train_overrides})
    return Preprocess(**cfg)
