"""A procedurally generated image–caption world for training a small CLIP with no external data.

Every sample is a pure function of ``(seed, split, index)``: a scene description
(:class:`SceneMeta`) is drawn first, its caption is part of that description, and the
image is then rendered from the description alone (:func:`render_scene`).  That split
lets tests check captions and held-out guarantees from metadata, without pixel analysis,
and lets the probe sets re-render the *same* scene with one thing changed (a word
removed, two objects swapped).

Scenes are a few flat shapes on a noisy grey background:

* ``single``   — one object; the caption names colour and shape, sometimes size or position
  (a small share name only the shape or only the colour, so that zero-shot prompts such as
  "a photo of a star." have support in the training text);
* ``relation`` — two objects, one left of / above the other;
* ``count``    — one to four identical small objects;
* ``text``     — an object plus a rendered word (or the word alone) that the caption quotes,
  so that the model learns to read and can later be attacked typographically.

A fixed set of colour×shape pairs (:data:`HELDOUT_PAIRS`) is never drawn in the
``train``/``val`` splits, not even as a secondary object, so :func:`make_probes` can
measure compositional generalisation on them.  :func:`evaluate_probes` scores any
model given two encoder callables.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

__all__ = [
    "COLOURS",
    "SHAPES",
    "HELDOUT_PAIRS",
    "ObjectSpec",
    "SceneMeta",
    "SyntheticWorld",
    "ProbeSet",
    "render_scene",
    "make_probes",
    "evaluate_probes",
    "make_grid",
]

# --------------------------------------------------------------------------------------
# Vocabulary
# --------------------------------------------------------------------------------------

# Saturated colours chosen to be far apart in hue (white for a non-hue colour); the
# background is a dark-to-mid grey so every one of them has strong contrast.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 40, 40),
    "orange": (245, 140, 20),
    "yellow": (240, 225, 40),
    "green": (40, 175, 60),
    "cyan": (40, 210, 225),
    "blue": (45, 80, 235),
    "purple": (150, 60, 210),
    "white": (240, 240, 240),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross", "diamond")

# 10 of the 48 pairs (~21%).  Picked by hand so that no colour and no shape loses more than
# two partners: every colour is still seen with >= 4 shapes and every shape with >= 6 colours.
# Fixed (not seed-dependent) so a model trained with any seed can be probed with any seed.
HELDOUT_PAIRS: tuple[tuple[str, str], ...] = (
    ("red", "triangle"),
    ("orange", "star"),
    ("yellow", "square"),
    ("green", "circle"),
    ("cyan", "cross"),
    ("blue", "diamond"),
    ("purple", "circle"),
    ("white", "star"),
    ("red", "diamond"),
    ("blue", "square"),
)

NUMBER_WORDS = ("one", "two", "three", "four")
# Extra words for the text scenes: colour/shape names teach the model to read the words the
# typographic probes later use; unrelated nouns keep "reading" from being a shape detector.
OTHER_WORDS = (
    "cat", "dog", "car", "tree", "house", "fish", "bird", "sun",
    "moon", "boat", "book", "cup", "key", "hat", "apple", "ball",
)
TEXT_WORDS: tuple[str, ...] = tuple(COLOURS) + SHAPES + OTHER_WORDS

# Object radius ranges as fractions of the image side.  Small and large do not overlap so
# the size words in captions are unambiguous.
SIZE_RANGES = {"small": (0.09, 0.12), "large": (0.19, 0.24)}
MEDIUM_RANGE = (0.12, 0.16)  # relation scenes: two objects must fit side by side
TEXT_OBJ_RANGE = (0.14, 0.19)  # text scenes: object shares the image with a word
COUNT_RANGE = (0.08, 0.105)  # count scenes: up to four objects in a 3x3 grid
FONT_FRACTION = 0.19  # rendered word height ~ 19% of the image side (12 px at 64 px)

DEFAULT_MIX = {"single": 0.50, "relation": 0.20, "count": 0.15, "text": 0.15}
SPLITS = ("train", "val", "heldout")


def _a(phrase: str) -> str:
    """English indefinite article: 'an orange star', 'a red star'."""
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _plural(shape: str) -> str:
    return shape + ("es" if shape.endswith(("s", "x")) else "s")


def _count_phrase(n: int, colour: str, shape: str) -> str:
    return f"{NUMBER_WORDS[n - 1]} {colour} {shape if n == 1 else _plural(shape)}"


# --------------------------------------------------------------------------------------
# Scene description
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ObjectSpec:
    """One drawn object.  Geometry is in fractions of the image side, so one description
    renders at any ``image_size``."""

    colour: str
    shape: str
    size: str  # "small" | "large" | "medium" (medium is never named in a caption)
    x: float  # centre
    y: float
    r: float  # nominal radius
    angle: float  # degrees of rotation (small: a rotated square must not become a diamond)
    rgb: tuple[int, int, int]  # jittered fill colour


@dataclass(frozen=True)
class SceneMeta:
    """Everything needed to render a scene, plus its caption and ground truth.

    ``relation`` states how ``objects[0]`` lies relative to ``objects[1]``
    ("left of" or "above"); the caption may phrase it the other way round
    ("a blue square right of a red circle").  ``position`` is the region of a single
    object when the caption names it.  ``word`` is the rendered word, if any.
    """

    kind: str  # "single" | "relation" | "count" | "text"
    caption: str
    objects: tuple[ObjectSpec, ...]
    background: tuple[int, int, int]
    noise_amp: int
    noise_seed: int
    position: str | None = None
    relation: str | None = None
    word: str | None = None
    word_x: float = 0.0  # horizontal jitter in [-1, 1]; mapped to the free width at render time
    word_y: float = 0.5  # vertical centre of the word (fraction)
    text_grey: int = 230

    @property
    def pairs(self) -> tuple[tuple[str, str], ...]:
        return tuple((o.colour, o.shape) for o in self.objects)


# --------------------------------------------------------------------------------------
# Sampling scene descriptions (pure Python ``random.Random``: fast scalar draws, and
# string seeding is stable across platforms and PYTHONHASHSEED)
# --------------------------------------------------------------------------------------


def _jitter_rgb(rng: random.Random, colour: str) -> tuple[int, int, int]:
    # Mostly a shared brightness shift plus a little per-channel tint: independent +-18 per
    # channel would turn "white" visibly pink or blue.
    shift = rng.randint(-18, 12)
    return tuple(min(255, max(0, c + shift + rng.randint(-6, 6))) for c in COLOURS[colour])


def _angle(rng: random.Random, shape: str) -> float:
    return 0.0 if shape == "circle" else rng.uniform(-12.0, 12.0)


def _obj(rng, pair, size, x, y, r) -> ObjectSpec:
    colour, shape = pair
    return ObjectSpec(colour, shape, size, x, y, r, _angle(rng, shape), _jitter_rgb(rng, colour))


def _background(rng: random.Random) -> dict:
    grey = rng.randint(35, 90)
    return dict(
        background=tuple(grey + rng.randint(-8, 8) for _ in range(3)),
        noise_amp=rng.randint(4, 14),
        noise_seed=rng.getrandbits(32),
    )


def _region_xy(rng: random.Random, region: str | None, r: float) -> tuple[float, float]:
    """Object centre inside a named region (or anywhere it fits when ``region`` is None)."""
    lo, hi = r + 0.03, 1.0 - r - 0.03
    mid_lo, mid_hi = max(lo, 0.3), min(hi, 0.7)
    near_hi = max(lo, 0.35)  # centre stays in the outer 35% so "on the left" is clearly true
    if region == "left":
        return rng.uniform(lo, near_hi), rng.uniform(mid_lo, mid_hi)
    if region == "right":
        return rng.uniform(1 - near_hi, hi), rng.uniform(mid_lo, mid_hi)
    if region == "top":
        return rng.uniform(mid_lo, mid_hi), rng.uniform(lo, near_hi)
    if region == "bottom":
        return rng.uniform(mid_lo, mid_hi), rng.uniform(1 - near_hi, hi)
    return rng.uniform(lo, hi), rng.uniform(lo, hi)


_POSITION_PHRASE = {
    "left": "on the left", "right": "on the right", "top": "at the top", "bottom": "at the bottom",
}


def _sample_single(rng: random.Random, pairs: Sequence[tuple[str, str]],
                   pair: tuple[str, str] | None = None) -> SceneMeta:
    # The draw is made even when ``pair`` is forced, so a twin (see SyntheticWorld.hard_negative_meta)
    # consumes the same random stream and keeps the original's size, caption template and position.
    drawn = rng.choice(pairs)
    pair = pair or drawn
    colour, shape = pair
    size = rng.choice(("small", "large"))
    r = rng.uniform(*SIZE_RANGES[size])
    u = rng.random()
    # Caption family: 70% full colour+shape phrase, 12% shape only, 12% colour only,
    # 6% "a <shape> that is <colour>".  Position is named in a quarter of full phrases.
    position = None
    if u < 0.70:
        np_ = f"{size} {colour} {shape}" if rng.random() < 0.4 else f"{colour} {shape}"
        if rng.random() < 0.25:
            position = rng.choice(("left", "right", "top", "bottom"))
            caption = f"{_a(np_)} {_POSITION_PHRASE[position]}"
        else:
            tpl = rng.choice(("{}", "{}", "a picture of {}", "a photo of {}.", "an image of {}", "there is {}"))
            caption = tpl.format(_a(np_))
    elif u < 0.82:
        caption = rng.choice(("a photo of {}.", "{}", "a picture of {}")).format(_a(shape))
    elif u < 0.94:
        tpl = rng.choice(("a photo of {a} object.", "{a} object", "something {c}"))
        caption = tpl.format(a=_a(colour), c=colour)
    else:
        caption = f"{_a(shape)} that is {colour}"
    x, y = _region_xy(rng, position, r)
    return SceneMeta("single", caption, (_obj(rng, pair, size, x, y, r),), position=position, **_background(rng))


def _relation_layout(rng: random.Random, relation: str):
    """Centres for objects 0 and 1 with object 0 ``relation`` ("left of"/"above") object 1."""
    # Along the relation axis the centres are >= 0.36 apart, more than two MEDIUM radii, so
    # the objects never overlap and the relation is unambiguous.
    a = rng.uniform(0.18, 0.32)
    b = rng.uniform(0.68, 0.82)
    c0, c1 = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7)  # across it
    if relation == "left of":
        return (a, c0), (b, c1)
    return (c0, a), (c1, b)


def _sample_relation(rng: random.Random, pairs: Sequence[tuple[str, str]]) -> SceneMeta:
    p0, p1 = rng.sample(list(pairs), 2)
    relation = rng.choice(("left of", "above"))
    r0, r1 = rng.uniform(*MEDIUM_RANGE), rng.uniform(*MEDIUM_RANGE)
    (x0, y0), (x1, y1) = _relation_layout(rng, relation)
    A, B = _a(" ".join(p0)), _a(" ".join(p1))
    u = rng.random()
    # The probe phrasing ("A left of B", "A above B") is the most common; its inverses and
    # the "to the left of" variant teach that order, not position in the sentence, matters.
    if u < 0.45:
        caption = f"{A} {relation} {B}"
    elif u < 0.75:
        caption = f"{B} {'right of' if relation == 'left of' else 'below'} {A}"
    elif u < 0.90:
        caption = f"{A} to the left of {B}" if relation == "left of" else f"{B} underneath {A}"
    else:
        caption = f"{A} and {B}"
    objs = (_obj(rng, p0, "medium", x0, y0, r0), _obj(rng, p1, "medium", x1, y1, r1))
    return SceneMeta("relation", caption, objs, relation=relation, **_background(rng))


def _count_layout(rng: random.Random, n: int, r: float) -> list[tuple[float, float]]:
    # A jittered 3x3 grid guarantees the objects never overlap, so the count is unambiguous.
    cells = rng.sample(range(9), n)
    slack = max(0.0, 0.15 - r - 0.01)
    return [
        (0.2 + 0.3 * (c % 3) + rng.uniform(-slack, slack), 0.2 + 0.3 * (c // 3) + rng.uniform(-slack, slack))
        for c in cells
    ]


def _sample_count(rng: random.Random, pairs: Sequence[tuple[str, str]], n: int | None = None) -> SceneMeta:
    pair = rng.choice(pairs)
    n = n or rng.randint(1, 4)
    r = rng.uniform(*COUNT_RANGE)
    objs = tuple(_obj(rng, pair, "small", x, y, r) for x, y in _count_layout(rng, n, r))
    phrase = _count_phrase(n, *pair)
    if n == 1 and rng.random() < 0.3:
        caption = _a(" ".join(pair))
    else:
        caption = rng.choice(("{}", "{}", "a picture of {}", "a photo of {}.", "there are {}")).format(phrase)
        if n == 1:
            caption = caption.replace("there are", "there is")
    return SceneMeta("count", caption, objs, **_background(rng))


def _text_layout(rng: random.Random, r: float) -> tuple[float, float, float, float]:
    """Word strip at the top or bottom; object in the remaining part.  Returns (x, y, word_x, word_y)."""
    top = rng.random() < 0.5
    word_y = 0.15 if top else 0.85
    free_lo, free_hi = (0.32, 0.97) if top else (0.03, 0.68)
    x = rng.uniform(r + 0.05, 1 - r - 0.05)
    y = rng.uniform(free_lo + r, max(free_lo + r, free_hi - r))
    return x, y, rng.uniform(-1.0, 1.0), word_y


def _text_meta(rng: random.Random, pair: tuple[str, str] | None, word: str) -> SceneMeta:
    """A text scene for ``pair`` (or a word alone when ``pair`` is None); caption left empty."""
    if pair is None:
        objs: tuple[ObjectSpec, ...] = ()
        wx, wy = rng.uniform(-1.0, 1.0), rng.uniform(0.3, 0.7)
    else:
        r = rng.uniform(*TEXT_OBJ_RANGE)
        x, y, wx, wy = _text_layout(rng, r)
        objs = (_obj(rng, pair, "medium", x, y, r),)
    return SceneMeta(
        "text", "", objs, word=word, word_x=wx, word_y=wy, text_grey=rng.randint(200, 255), **_background(rng)
    )


def _sample_text(rng: random.Random, pairs: Sequence[tuple[str, str]]) -> SceneMeta:
    word = rng.choice(TEXT_WORDS)
    if rng.random() < 0.25:
        meta = _text_meta(rng, None, word)
        caption = rng.choice(("the word '{}'", "the text '{}'", "a sign that says '{}'")).format(word)
        return replace(meta, caption=caption)
    meta = _text_meta(rng, rng.choice(pairs), word)
    np_ = _a(" ".join(meta.pairs[0]))
    where = "above" if meta.word_y < 0.5 else "below"
    caption = rng.choice(
        (f"{np_} with the word '{word}'", f"{np_} and the text '{word}'",
         f"the word '{word}' {where} {np_}", f"{np_} labelled '{word}'")
    )
    return replace(meta, caption=caption)


_SAMPLERS = {"single": _sample_single, "relation": _sample_relation, "count": _sample_count, "text": _sample_text}


# --------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------

_SS = 2  # supersampling factor: draw at 2x, box-downsample = cheap antialiasing


def _rot(points, cx, cy, angle_deg):
    a = math.radians(angle_deg)
    ca, sa = math.cos(a), math.sin(a)
    return [(cx + px * ca - py * sa, cy + px * sa + py * ca) for px, py in points]


def _star_points(r: float) -> list[tuple[float, float]]:
    pts = []
    for k in range(10):
        rad = r * 1.05 if k % 2 == 0 else r * 0.44
        a = -math.pi / 2 + k * math.pi / 5
        pts.append((rad * math.cos(a), rad * math.sin(a)))
    return pts


def _shape_points(shape: str, r: float) -> list[tuple[float, float]]:
    """Polygon (centred at the origin) for every non-circle shape; sizes tuned so the
    shapes look about equally large at the same nominal radius."""
    if shape == "square":
        h = 0.8 * r
        return [(-h, -h), (h, -h), (h, h), (-h, h)]
    if shape == "triangle":
        R = 1.05 * r
        return [(R * math.cos(a), R * math.sin(a)) for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)]
    if shape == "star":
        return _star_points(r)
    if shape == "cross":
        w, L = 0.32 * r, 0.95 * r
        return [(-w, -L), (w, -L), (w, -w), (L, -w), (L, w), (w, w), (w, L), (-w, L), (-w, w), (-L, w), (-L, -w), (-w, -w)]
    if shape == "diamond":
        return [(0, -r), (0.62 * r, 0), (0, r), (-0.62 * r, 0)]
    raise ValueError(f"unknown shape {shape!r}")


@lru_cache(maxsize=16)
def default_font(px: int):
    # Pillow >= 10.1 ships a scalable default font; older or FreeType-less builds only have
    # the fixed ~11 px bitmap font, which is still legible at 64 px.
    try:
        return ImageFont.load_default(size=px)
    except (TypeError, ImportError, OSError, AttributeError):
        return ImageFont.load_default()


def render_scene(meta: SceneMeta, image_size: int = 64) -> Image.Image:
    """Render a scene description to an RGB image; deterministic in ``meta``."""
    S = image_size * _SS
    img = Image.new("RGB", (S, S), meta.background)
    draw = ImageDraw.Draw(img)
    for o in meta.objects:
        cx, cy, r = o.x * S, o.y * S, o.r * S
        if o.shape == "circle":
            rr = 0.9 * r
            draw.ellipse((cx - rr, cy - rr, cx + rr, cy + rr), fill=o.rgb)
        else:
            draw.polygon(_rot(_shape_points(o.shape, r), cx, cy, o.angle), fill=o.rgb)
    if meta.word:
        font = default_font(max(6, round(FONT_FRACTION * S)))
        l, t, rgt, b = draw.textbbox((0, 0), meta.word, font=font)
        w = rgt - l
        free = max(0.0, (S - w) / 2 - 0.02 * S)  # keep the word fully inside the image
        x = S / 2 + meta.word_x * free
        y = meta.word_y * S
        draw.text((x - (l + rgt) / 2, y - (t + b) / 2), meta.word, fill=(meta.text_grey,) * 3, font=font)
    img = img.reduce(_SS)
    if meta.noise_amp:
        # Luminance noise from a byte stream: one randbytes call is far cheaper than numpy
        # Generator construction per sample, and is exactly reproducible.
        n = image_size * image_size
        raw = np.frombuffer(random.Random(meta.noise_seed).randbytes(n), dtype=np.uint8)
        noise = ((raw.astype(np.int16) * (2 * meta.noise_amp + 1)) >> 8) - meta.noise_amp
        arr = np.asarray(img, dtype=np.int16) + noise.reshape(image_size, image_size, 1)
        img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")
    return img


# --------------------------------------------------------------------------------------
# The training dataset
# --------------------------------------------------------------------------------------


class SyntheticWorld(torch.utils.data.Dataset):
    """Map-style dataset of ``length`` virtual (image, caption) samples.

    ``split``: ``"train"`` and ``"val"`` draw only seen colour×shape pairs (independent
    random streams); ``"heldout"`` draws only :data:`HELDOUT_PAIRS` (for inspection or
    retrieval evaluation on unseen compositions).  ``mix`` sets the share of each scene kind.
    ``transform`` (e.g. a model's preprocessing) is applied to the PIL image in ``__getitem__``.
    The object is cheap to pickle, so it works with multi-worker DataLoaders.
    """

    colours: tuple[str, ...] = tuple(COLOURS)
    shapes: tuple[str, ...] = SHAPES
    heldout_pairs: tuple[tuple[str, str], ...] = HELDOUT_PAIRS

    def __init__(
        self,
        seed: int = 0,
        image_size: int = 64,
        split: str = "train",
        length: int = 100_000,
        mix: dict[str, float] | None = None,
        transform: Callable | None = None,
    ):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        mix = dict(DEFAULT_MIX if mix is None else mix)
        unknown = set(mix) - set(_SAMPLERS)
        if unknown or not mix or min(mix.values()) < 0 or sum(mix.values()) <= 0:
            raise ValueError(f"bad mix {mix!r}; kinds are {sorted(_SAMPLERS)}")
        self.seed, self.image_size, self.split, self.length = seed, image_size, split, length
        self.transform = transform
        self._kinds = [k for k, v in mix.items() if v > 0]
        total = sum(mix[k] for k in self._kinds)
        self._cum = list(np.cumsum([mix[k] / total for k in self._kinds]))
        self._pairs = self.heldout_pairs if split == "heldout" else self.seen_pairs

    @property
    def all_pairs(self) -> tuple[tuple[str, str], ...]:
        return tuple((c, s) for c in self.colours for s in self.shapes)

    @property
    def seen_pairs(self) -> tuple[tuple[str, str], ...]:
        return tuple(p for p in self.all_pairs if p not in self.heldout_pairs)

    def __len__(self) -> int:
        return self.length

    def _index(self, i: int) -> int:
        if i < 0:
            i += self.length
        if not 0 <= i < self.length:
            raise IndexError(i)
        return i

    def _draw_meta(self, i: int, single_pair: tuple[str, str] | None = None) -> SceneMeta:
        # One random stream per sample. With ``single_pair`` the scene kind is drawn (and ignored) all
        # the same, so the single-object scene that follows gets the same size, position and template.
        rng = random.Random(f"kizuna-world:{self.seed}:{self.split}:{self._index(i)}")
        u = rng.random()
        if single_pair is not None:
            return _sample_single(rng, self._pairs, pair=single_pair)
        kind = next((k for k, c in zip(self._kinds, self._cum) if u < c), self._kinds[-1])
        return _SAMPLERS[kind](rng, self._pairs)

    def sample_meta(self, i: int) -> SceneMeta:
        """The scene description (objects, caption, word, ...) of sample ``i``, without rendering."""
        return self._draw_meta(i)

    def hard_negative_meta(self, i: int) -> SceneMeta | None:
        """The hard-negative twin of sample ``i``: the same single-object scene (size, position,
        caption template) with one attribute changed - the shape when the caption names it, else the
        colour - so its caption differs from the original's in exactly that word. ``None`` for
        scenes with several objects or words. The new colour x shape pair is one this split may draw
        (held-out pairs stay held out)."""
        meta = self.sample_meta(i)
        if meta.kind != "single":
            return None
        colour, shape = meta.pairs[0]
        choose = random.Random(f"kizuna-twin:{self.seed}:{self.split}:{self._index(i)}")
        if re.search(rf"\b{shape}\b", meta.caption):
            options = [(colour, s) for s in self.shapes if s != shape and (colour, s) in self._pairs]
        else:
            options = [(c, shape) for c in self.colours if c != colour and (c, shape) in self._pairs]
        if not options:
            return None
        return self._draw_meta(i, single_pair=choose.choice(options))

    def render(self, meta: SceneMeta):
        img = render_scene(meta, self.image_size)
        return (self.transform(img) if self.transform else img), meta.caption

    def __getitem__(self, i: int):
        return self.render(self.sample_meta(i))

    def __repr__(self) -> str:
        return (f"SyntheticWorld(seed={self.seed}, image_size={self.image_size}, "
                f"split={self.split!r}, length={self.length})")


# --------------------------------------------------------------------------------------
# Probe (evaluation) sets
# --------------------------------------------------------------------------------------


@dataclass
class ProbeSet:
    """Images, candidate texts and correct indices for one zero-shot task.

    ``candidates`` is either one list shared by every image or one list per image.
    ``groups`` (relation_swap only) lists Winoground-style pairs ``(i, j)``: images i and j
    show the same two objects with positions swapped, have the same two candidate captions,
    and ``labels[i] != labels[j]``.  ``distractors`` (typographic only) is, per image, the
    candidate index named by the rendered word.  ``metas`` are the scene descriptions.
    """

    name: str
    images: list[Image.Image]
    candidates: list[str] | list[list[str]]
    labels: list[int]
    description: str
    metas: list[SceneMeta] = field(default_factory=list, repr=False)
    groups: list[tuple[int, int]] = field(default_factory=list)
    distractors: list[int] | None = None

    @property
    def shared(self) -> bool:
        return bool(self.candidates) and isinstance(self.candidates[0], str)

    def candidates_for(self, i: int) -> list[str]:
        return self.candidates if self.shared else self.candidates[i]  # type: ignore[return-value]

    @property
    def chance(self) -> float:
        return float(np.mean([1.0 / len(self.candidates_for(i)) for i in range(len(self))]))

    def __len__(self) -> int:
        return len(self.images)


PROBE_TASKS = (
    "shape", "colour", "unseen_combos", "seen_combos", "counting", "relation_swap",
    "typographic", "typographic_clean", "typographic_colour", "typographic_colour_clean",
)


def _single_probe_meta(rng: random.Random, pair: tuple[str, str]) -> SceneMeta:
    size = rng.choice(("small", "large"))
    r = rng.uniform(*SIZE_RANGES[size])
    x, y = _region_xy(rng, None, r)
    return SceneMeta("single", _a(" ".join(pair)), (_obj(rng, pair, size, x, y, r),), **_background(rng))


def make_probes(
    seed: int = 1, image_size: int = 64, n_per_task: int = 200, tasks: Sequence[str] | None = None
) -> dict[str, ProbeSet]:
    """Build the evaluation sets (see :data:`PROBE_TASKS`).

    Scenes come from their own random namespace, so they never coincide with training
    samples whatever the seeds.  Only ``unseen_combos`` uses :data:`HELDOUT_PAIRS`; every
    other task uses seen pairs so it measures one skill at a time.  Classes are cycled so
    each task is balanced.  ``relation_swap`` has ``n_per_task`` rounded up to an even number.
    """
    tasks = PROBE_TASKS if tasks is None else tuple(tasks)
    bad = set(tasks) - set(PROBE_TASKS)
    if bad:
        raise ValueError(f"unknown probe tasks {sorted(bad)}")
    colours, shapes = tuple(COLOURS), SHAPES
    all_pairs = [(c, s) for c in colours for s in shapes]
    seen = [p for p in all_pairs if p not in HELDOUT_PAIRS]

    def rng_for(task: str, i: int) -> random.Random:
        # typographic and typographic_clean share a namespace: same scenes, word removed.
        return random.Random(f"kizuna-probe:{seed}:{task.replace('_clean', '')}:{i}")

    shape_prompts = [f"a photo of {_a(s)}." for s in shapes]
    colour_prompts = [f"a photo of {_a(c)} object." for c in colours]
    pair_prompts = [_a(f"{c} {s}") for c, s in all_pairs]
    out: dict[str, ProbeSet] = {}

    def finish(name, metas, candidates, labels, description, **kw):
        images = [render_scene(m, image_size) for m in metas]
        out[name] = ProbeSet(name, images, candidates, labels, description, metas, **kw)

    def single(task: str, i: int, pool: list[tuple[str, str]]) -> SceneMeta:
        rng = rng_for(task, i)
        return _single_probe_meta(rng, rng.choice(pool))

    n = n_per_task
    ns, nc = len(shapes), len(colours)
    if "shape" in tasks:
        metas = [single("shape", i, [p for p in seen if p[1] == shapes[i % ns]]) for i in range(n)]
        finish("shape", metas, shape_prompts, [i % ns for i in range(n)],
               "one object (seen colour/shape pair); pick its shape among all shapes")
    if "colour" in tasks:
        metas = [single("colour", i, [p for p in seen if p[0] == colours[i % nc]]) for i in range(n)]
        finish("colour", metas, colour_prompts, [i % nc for i in range(n)],
               "one object (seen pair); pick its colour among all colours")
    for name, pool in (("unseen_combos", list(HELDOUT_PAIRS)), ("seen_combos", seen)):
        if name in tasks:
            pairs = [pool[i % len(pool)] for i in range(n)]
            metas = [_single_probe_meta(rng_for(name, i), p) for i, p in enumerate(pairs)]
            finish(name, metas, pair_prompts, [all_pairs.index(p) for p in pairs],
                   f"one object of a {'held-out (never trained)' if name[0] == 'u' else 'seen'} colour/shape "
                   f"pair; pick 'a <colour> <shape>' among all {len(all_pairs)} pairs")
    if "counting" in tasks:
        metas = [_sample_count(rng_for("counting", i), seen, n=i % 4 + 1) for i in range(n)]
        cands = [[_count_phrase(k, *m.pairs[0]) for k in range(1, 5)] for m in metas]
        finish("counting", metas, cands, [i % 4 for i in range(n)],
               "1-4 identical objects; pick 'one/two/three/four <colour> <shape>s'")
    if "relation_swap" in tasks:
        metas, cands, labels, groups = [], [], [], []
        for g in range((n + 1) // 2):
            rng = rng_for("relation_swap", g)
            p0, p1 = rng.sample(seen, 2)
            relation = ("left of", "above")[g % 2]
            r0, r1 = rng.uniform(*MEDIUM_RANGE), rng.uniform(*MEDIUM_RANGE)
            (x0, y0), (x1, y1) = _relation_layout(rng, relation)
            o0, o1 = _obj(rng, p0, "medium", x0, y0, r0), _obj(rng, p1, "medium", x1, y1, r1)
            bg = _background(rng)
            c_true = f"{_a(' '.join(p0))} {relation} {_a(' '.join(p1))}"
            c_swap = f"{_a(' '.join(p1))} {relation} {_a(' '.join(p0))}"
            # The swapped image keeps every position/size/angle and exchanges only identities.
            s0, s1 = replace(o1, x=o0.x, y=o0.y, r=o0.r, angle=o0.angle), replace(o0, x=o1.x, y=o1.y, r=o1.r, angle=o1.angle)
            pair_cands = [c_true, c_swap] if rng.random() < 0.5 else [c_swap, c_true]  # no positional bias
            metas += [SceneMeta("relation", c_true, (o0, o1), relation=relation, **bg),
                      SceneMeta("relation", c_swap, (s0, s1), relation=relation, **bg)]
            cands += [pair_cands, pair_cands]
            labels += [pair_cands.index(c_true), pair_cands.index(c_swap)]
            groups.append((2 * g, 2 * g + 1))
        finish("relation_swap", metas, cands, labels,
               "two objects; pick 'A left of/above B' vs the swapped caption. Groups pair each image "
               "with its position-swapped twin for Winoground text/image/group scores", groups=groups)
    for base, vocab, prompts, attr in (("typographic", shapes, shape_prompts, 1),
                                       ("typographic_colour", colours, colour_prompts, 0)):
        if base not in tasks and base + "_clean" not in tasks:
            continue
        metas, labels, distract = [], [], []
        for i in range(n):
            rng = rng_for(base, i)
            true = vocab[i % len(vocab)]
            pair = rng.choice([p for p in seen if p[attr] == true])
            word = rng.choice([v for v in vocab if v != true])
            metas.append(replace(_text_meta(rng, pair, word), caption=f"{_a(' '.join(pair))} with the word '{word}'"))
            labels.append(vocab.index(true))
            distract.append(vocab.index(word))
        what = "shape" if attr == 1 else "colour"
        if base in tasks:
            finish(base, metas, prompts, labels,
                   f"one object with a rendered word naming a different {what}; pick the true {what}",
                   distractors=distract)
        if base + "_clean" in tasks:
            clean = [replace(m, word=None, caption=_a(" ".join(m.pairs[0]))) for m in metas]
            finish(base + "_clean", clean, prompts, labels,
                   f"the '{base}' scenes with the word removed (clean baseline)")
    return {t: out[t] for t in tasks}


# --------------------------------------------------------------------------------------
# Model-agnostic scoring
# --------------------------------------------------------------------------------------


def _encode_batched(fn, items, batch_size):
    chunks = [torch.as_tensor(fn(items[i:i + batch_size])) for i in range(0, len(items), batch_size)]
    return torch.nn.functional.normalize(torch.cat(chunks).float(), dim=-1)


@torch.no_grad()
def evaluate_probes(
    probes: dict[str, ProbeSet],
    encode_images: Callable[[list[Image.Image]], torch.Tensor],
    encode_texts: Callable[[list[str]], torch.Tensor],
    batch_size: int = 256,
) -> dict[str, float]:
    """Zero-shot accuracy of every probe: argmax cosine similarity over its candidates.

    ``encode_images(list[PIL.Image]) -> [N, D]`` and ``encode_texts(list[str]) -> [M, D]``
    (re-normalised here anyway).  Images are passed as the probe's own PIL objects.
    Extra keys: ``relation_swap/{text,image,group}_score`` (Winoground; strict ``>``, so
    ties fail) and ``<typographic task>/attack_rate`` (share predicted as the written word).
    """
    results: dict[str, float] = {}
    for name, p in probes.items():
        img = _encode_batched(encode_images, p.images, batch_size)
        texts = sorted({t for i in range(len(p)) for t in p.candidates_for(i)})
        txt = _encode_batched(encode_texts, texts, batch_size)
        where = {t: k for k, t in enumerate(texts)}
        sims = img @ txt.T  # [N images, M unique texts]
        cand_idx = [[where[t] for t in p.candidates_for(i)] for i in range(len(p))]
        scores = [sims[i, idx] for i, idx in enumerate(cand_idx)]
        preds = torch.tensor([int(s.argmax()) for s in scores])
        labels = torch.tensor(p.labels)
        # float64: a float32 mean put digits no count has into the log (0.14499999582767487 for 29 of 200)
        results[name] = float((preds == labels).double().mean())
        if p.distractors is not None:
            results[f"{name}/attack_rate"] = float((preds == torch.tensor(p.distractors)).double().mean())
        if p.groups:
            t_ok = i_ok = g_ok = 0
            for a, b in p.groups:
                ca, cb = cand_idx[a][p.labels[a]], cand_idx[b][p.labels[b]]  # correct text of a, of b
                s = sims[[a, b]][:, [ca, cb]]  # s[image, caption]
                text_ok = bool(s[0, 0] > s[0, 1]) and bool(s[1, 1] > s[1, 0])
                image_ok = bool(s[0, 0] > s[1, 0]) and bool(s[1, 1] > s[0, 1])
                t_ok, i_ok, g_ok = t_ok + text_ok, i_ok + image_ok, g_ok + (text_ok and image_ok)
            n = len(p.groups)
            results[f"{name}/text_score"] = t_ok / n
            results[f"{name}/image_score"] = i_ok / n
            results[f"{name}/group_score"] = g_ok / n
    return results


def make_grid(images: Sequence[Image.Image], cols: int = 8, pad: int = 2, scale: int = 1) -> Image.Image:
    """Tile images into one contact sheet (for eyeballing samples)."""
    w, h = images[0].size
    w, h = w * scale, h * scale
    rows = math.ceil(len(images) / cols)
    sheet = Image.new("RGB", (cols * (w + pad) + pad, rows * (h + pad) + pad), (255, 255, 255))
    for k, im in enumerate(images):
        im = im.resize((w, h), Image.NEAREST) if scale != 1 else im
        sheet.paste(im, (pad + (k % cols) * (w + pad), pad + (k // cols) * (h + pad)))
    return sheet
