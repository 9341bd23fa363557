"""Probes of what zero-shot accuracy hides: robustness, typographic attacks, relation swaps.

Robustness (:func:`evaluate_robustness`)
    Zero-shot accuracy under synthetic distribution shifts, each at a few severities (ImageNet-C
    parameters, applied at the model's input resolution after resize + centre crop): Gaussian blur
    (sigma 1/2/3/4/6 px at 224 px, scaled with the resolution), Gaussian noise (std 0.08 .. 0.38 of
    the [0, 1] range), JPEG re-encoding (quality 25 .. 7) and contrast reduction (to 0.4 .. 0.05 of
    the original). Noise is seeded per position in the dataset, so runs repeat exactly. The table lists clean
    accuracy against shifted accuracy, the drop, and the share of clean accuracy kept; the
    "effective robustness" of Taori et al. (2020) is the shifted accuracy above what a baseline
    trend predicts from clean accuracy - :func:`effective_robustness` computes it given a baseline
    fit (slope, intercept in logit space), e.g. one fitted over several models of a suite.

Typographic attack (:func:`typographic_attack`)
    A wrong class name, chosen per image with a fixed seed, is written onto the image (white text
    with a black outline on the lower part, PIL's scalable default font). Reported: clean and attacked
    accuracy, the drop, and ``follow_rate`` - the share of predictions equal to the written class
    (CLIP reads: Goh et al. 2021, "Multimodal neurons").

Relation swap, Winoground-style (:func:`winoground_scores`, :func:`relation_swap_probe`)
    Groups of two images and two captions that differ only in the order of the words ("a red circle
    left of a blue square" / "a blue square left of a red circle"). Given the 2x2 similarity
    ``s[image, caption]`` of a group (correct pairs on the diagonal): text score = both images pick
    their caption (``s00 > s01 and s11 > s10``), image score = both captions pick their image
    (``s00 > s10 and s11 > s01``), group score = both. Strict ``>``: ties fail. Chance: 25%, 25%, 16.7%.
    Data: :func:`kizuna.data.synthetic.make_probes` ``relation_swap`` pairs.
"""
from __future__ import annotations

import io
import math
import os
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter

from kizuna.data.sources import SkipCounter
from kizuna.data.synthetic import default_font
from kizuna.models.layers import unit_rows
from kizuna.models.losses import similarity

from .classification import class_embeddings, classify_features, refuse_one_class
from .encode import check_finite, dist_info, encode_images, eval_mode, gather_shards, is_count, shard_bounds
from .zeroshot import text_list

__all__ = [
    "CORRUPTIONS", "RobustnessResult", "TypographicResult", "corrupt", "effective_robustness",
    "evaluate_robustness", "relation_swap_probe", "render_text", "typographic_attack", "winoground_scores",
]


# ----------------------------------------------------------------------------------- corruptions
def _blur(img: Image.Image, severity: int, rng: random.Random) -> Image.Image:
    sigma = (1, 2, 3, 4, 6)[severity - 1] * min(img.size) / 224
    return img.filter(ImageFilter.GaussianBlur(radius=sigma))


def _noise(img: Image.Image, severity: int, rng: random.Random) -> Image.Image:
    std = (0.08, 0.12, 0.18, 0.26, 0.38)[severity - 1]
    x = np.asarray(img, dtype=np.float32) / 255.0
    gen = np.random.default_rng(rng.getrandbits(64))
    x = np.clip(x + gen.normal(0.0, std, size=x.shape).astype(np.float32), 0.0, 1.0)
    return Image.fromarray((x * 255.0 + 0.5).astype(np.uint8), "RGB")


def _jpeg(img: Image.Image, severity: int, rng: random.Random) -> Image.Image:
    quality = (25, 18, 15, 10, 7)[severity - 1]
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    out = Image.open(buf)
    out.load()
    return out.convert("RGB")


def _contrast(img: Image.Image, severity: int, rng: random.Random) -> Image.Image:
    c = (0.4, 0.3, 0.2, 0.1, 0.05)[severity - 1]
    x = np.asarray(img, dtype=np.float32) / 255.0
    mean = x.mean(axis=(0, 1), keepdims=True)
    x = np.clip((x - mean) * c + mean, 0.0, 1.0)
    return Image.fromarray((x * 255.0 + 0.5).astype(np.uint8), "RGB")


CORRUPTIONS: dict[str, Callable[[Image.Image, int, random.Random], Image.Image]] = {
    "gaussian_blur": _blur, "gaussian_noise": _noise, "jpeg": _jpeg, "contrast": _contrast,
}


def corrupt(img: Image.Image, name: str, severity: int, rng: random.Random | None = None) -> Image.Image:
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r} (known: {', '.join(CORRUPTIONS)})")
    if not (is_count(severity) and severity <= 5):
        raise ValueError(f"severity must be a whole number 1..5, got {severity!r}")  # (2.0 indexed a tuple)
    from kizuna.data.transforms import to_rgb

    # as the model's preprocessing reads it (transparency onto white, EXIF upright): convert("RGB") put an RGBA
    # logo on black, a change of background on top of the corruption
    return CORRUPTIONS[name](to_rgb(img), int(severity), rng or random.Random(0))


class _ImageOpTransform:
    """preprocess(op(geometry(img))): the op runs at the model's input resolution when ``preprocess``
    is kizuna's :class:`~kizuna.data.transforms.Preprocess`, else on the raw image."""

    def __init__(self, preprocess, op: Callable[[Image.Image], Image.Image]):
        self.preprocess, self.op = preprocess, op

    def __call__(self, img: Image.Image) -> torch.Tensor:
        from kizuna.data.transforms import Preprocess, to_tensor

        p = self.preprocess
        if isinstance(p, Preprocess):
            return to_tensor(self.op(p.geometry(img)), p.mean, p.std)
        return p(self.op(img.convert("RGB")))


class _CorruptOp:
    def __init__(self, name: str, severity: int):
        self.name, self.severity = name, severity

    def __call__(self, img: Image.Image) -> Image.Image:
        # PairDataset seeds `random` per sample (seed_transform=True): noise repeats exactly.
        return corrupt(img, self.name, self.severity, random.Random(random.getrandbits(64)))


# ----------------------------------------------------------------------------------- robustness
def effective_robustness(clean_acc: float, shifted_acc: float, baseline: tuple[float, float]) -> float:
    """Shifted accuracy minus the baseline's prediction ``sigmoid(slope * logit(clean) + intercept)``."""
    eps = 1e-6
    c = min(max(clean_acc, eps), 1 - eps)
    pred = 1 / (1 + math.exp(-(baseline[0] * math.log(c / (1 - c)) + baseline[1])))
    return shifted_acc - pred


@dataclass
class RobustnessResult:
    clean_acc: float
    rows: list[dict]  # {"corruption", "severity", "acc", "drop", "relative"}
    skipped: SkipCounter = field(default_factory=SkipCounter)
    dataset: str = ""
    n: int = 0

    @property
    def metrics(self) -> dict[str, float]:
        m = {"clean_acc1": self.clean_acc}
        for r in self.rows:
            m[f"{r['corruption']}_s{r['severity']}_acc1"] = r["acc"]
        by = {}
        for r in self.rows:
            by.setdefault(r["corruption"], []).append(r["acc"])
        for name, accs in by.items():
            m[f"{name}_acc1"] = float(np.mean(accs))
        m["shifted_acc1"] = float(np.mean([r["acc"] for r in self.rows])) if self.rows else float("nan")
        m["shifted_drop"] = self.clean_acc - m["shifted_acc1"]
        return m

    def table(self) -> str:
        from kizuna.apps.common import format_table

        rows = [["clean", "-", f"{100 * self.clean_acc:.2f}", "", ""]]
        for r in self.rows:
            rows.append([r["corruption"], r["severity"], f"{100 * r['acc']:.2f}", f"{100 * r['drop']:+.2f}",
                         _percent(r["relative"])])
        m = self.metrics
        rows.append(["all shifts (mean)", "-", f"{100 * m['shifted_acc1']:.2f}", f"{100 * m['shifted_drop']:+.2f}",
                     _percent(_kept(m["shifted_acc1"], self.clean_acc))])
        return format_table(rows, ["shift", "severity", "top-1 %", "drop (points)", "kept"])

    def to_dict(self) -> dict:
        return {"metrics": self.metrics, "rows": self.rows, "n": self.n, "skipped": self.skipped.as_dict()}

    def plot(self, path, model: str = ""):
        """Accuracy against severity per shift; ``model`` (a run's name or checkpoint) goes in the title, so
        that the figures of two checkpoints of one preset are told apart."""
        from pathlib import Path

        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator

        fig = Figure(figsize=(6.0, 4.0), dpi=120)
        ax = fig.subplots()
        by: dict[str, list[tuple[int, float]]] = {}
        for r in self.rows:
            by.setdefault(r["corruption"], []).append((r["severity"], r["acc"]))
        for i, (name, pts) in enumerate(by.items()):
            pts.sort()
            ax.plot([0] + [p[0] for p in pts], [100 * self.clean_acc] + [100 * p[1] for p in pts], "o-",
                    color=f"C{i}", label=name)
        ax.axhline(100 * self.clean_acc, color="k", linestyle="--", linewidth=1, label="clean")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))  # severities are whole levels (no 0.5, 1.5)
        ax.set_xlabel("severity (0 = clean)")
        ax.set_ylabel("zero-shot top-1 (%)")
        ax.set_title(f"{model + ': ' if model else ''}{self.dataset}: accuracy under distribution shift")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        fig.set_layout_engine("tight")  # laid out as it is saved, once save_figure has made every "$" a dollar
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        from kizuna.models.checkpoint import save_figure

        save_figure(fig, path)  # (in place, Ctrl-C left a cut-off PNG)
        return path


def _weights(model, tokenizer, dataset, templates, cache_dir):
    # (text_list: a template string was split into letters, "template 'a' has no '{c}' placeholder")
    given = text_list(templates, "templates") if templates is not None else []
    return class_embeddings(model, tokenizer, dataset.classnames, given or list(dataset.templates),
                            cache_dir=cache_dir)


def evaluate_robustness(model, tokenizer, dataset, *, corruptions: Sequence[str] = tuple(CORRUPTIONS),
                        severities: Sequence[int] = (1, 3, 5), templates=None, batch_size: int = 64, device=None,
                        num_workers: int = 0, progress: bool = True, seed: int = 0, cache_dir=None,
                        clean_features=None) -> RobustnessResult:
    import kizuna

    # (read once: a generator was used up by the check, and nothing was evaluated but the clean pass)
    corruptions, severities = [corruptions] if isinstance(corruptions, str) else list(corruptions), list(severities)
    unknown = [name for name in corruptions if name not in CORRUPTIONS]  # before the clean pass, not after it
    if unknown:
        raise ValueError(f"unknown corruption(s) {', '.join(map(repr, unknown))} (known: {', '.join(CORRUPTIONS)})")
    # (int(s) passed 1.5 and True here, which corrupt() refused after the whole clean pass)
    if any(not (is_count(s) and s <= 5) for s in severities) or len(set(severities)) != len(severities):
        # a level given twice weighed twice in the mean over shifts
        raise ValueError(f"severities are distinct levels 1..5, got {list(severities)}")
    corruptions = list(dict.fromkeys(corruptions))  # likewise a corruption named twice
    refuse_one_class(dataset, "the robustness probe")
    model = getattr(model, "module", model)
    pre = kizuna.get_preprocess(model)
    weights = _weights(model, tokenizer, dataset, templates, cache_dir)
    clean = clean_features or encode_images(model, dataset, transform=pre, batch_size=batch_size, device=device,
                                            num_workers=num_workers, progress=progress, desc="robustness: clean")
    labels = dataset.labels
    skipped = SkipCounter()
    skipped.update(dataset.skips)
    skipped.update(clean.skips)
    clean_res = classify_features(clean.features, labels, weights, dataset.classnames, valid=clean.valid)
    rows = []
    for name in corruptions:
        for s in severities:
            tf = _ImageOpTransform(pre, _CorruptOp(name, s))
            f = encode_images(model, dataset, transform=tf, batch_size=batch_size, device=device,
                              num_workers=num_workers, progress=progress, desc=f"robustness: {name} s{s}",
                              seed_transform=True, seed=seed)
            # compare on the same images: those that decoded (corrupt files fail in both passes)
            acc = classify_features(f.features, labels, weights, dataset.classnames, valid=f.valid & clean.valid
                                    ).metrics["acc1"]
            rows.append({"corruption": name, "severity": int(s), "acc": acc, "drop": clean_res.metrics["acc1"] - acc,
                         "relative": _kept(acc, clean_res.metrics["acc1"])})
    return RobustnessResult(clean_res.metrics["acc1"], rows, skipped, dataset.name, clean_res.n)


def _kept(acc: float, clean_acc: float) -> float:
    """The share of the clean accuracy kept under a shift; NaN when the clean accuracy is 0 (nothing to keep:
    it was divided by 1e-12 and printed as 8333333333333%)."""
    return acc / clean_acc if clean_acc > 0 else float("nan")


def _percent(share: float) -> str:
    return "-" if share != share else f"{100 * share:.0f}%"


# ----------------------------------------------------------------------------------- typographic
def render_text(img: Image.Image, text: str, height_fraction: float = 0.16, font: str | None = None) -> Image.Image:
    """Write ``text`` in white with a black outline, centred horizontally on the lower part of the image;
    the font shrinks until the word fits 94% of the width, down to 6 px (smaller is no legible text): on a 32-px
    image a long name ("automobile") runs edge to edge. ``font``: a TrueType file (default: Pillow's own, which
    draws ASCII only: see :func:`font_for`)."""
    img = img.convert("RGB").copy()
    w, h = img.size
    draw = ImageDraw.Draw(img)
    px = max(6, int(h * height_fraction))
    while True:
        font_px = _font(font, px)
        box = draw.textbbox((0, 0), text, font=font_px, stroke_width=max(1, px // 8))
        tw, th = box[2] - box[0], box[3] - box[1]
        if tw <= w * 0.94 or px <= 6:
            break
        px = max(6, int(px * 0.85))
    x = (w - tw) / 2 - box[0]
    y = h * 0.78 - th / 2 - box[1]
    draw.text((x, y), text, font=font_px, fill=(255, 255, 255), stroke_width=max(1, px // 8), stroke_fill=(0, 0, 0))
    return img


def _font(path: str | None, px: int):
    from PIL import ImageFont

    return default_font(px) if path is None else ImageFont.truetype(path, px)


def font_for(words: Sequence[str], font: str | None = None) -> str | None:
    """The font the typographic attack writes ``words`` in: ``font`` (a TrueType file) where given, else Pillow's
    default (None) where it draws every character, else matplotlib's DejaVu Sans (Latin, Greek, Cyrillic, Hebrew,
    Arabic, ...). Pillow's default draws ASCII only: every other character (é, ß, Cyrillic, CJK, emoji) was the
    same missing-glyph box, so "猫" and "狗" were one image, and the attack's numbers were scored all the same.
    Raises ValueError naming the words and characters no font here draws."""
    chars = sorted({c for w in words for c in w if not c.isspace()})
    missing = _undrawn(chars, font)
    if not missing:
        return font
    if font is None and (dejavu := _dejavu()) is not None:  # (a font the caller gave is the one checked)
        missing = _undrawn(missing, dejavu)
        if not missing:
            return dejavu
    names = [w for w in words if any(c in missing for c in w)]
    shown = ", ".join(repr(w) for w in names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    where = f"the font {font}" if font is not None else "neither Pillow's default font nor DejaVu Sans"
    raise ValueError(f"the typographic attack cannot write the class name(s) {shown}: {where} draws "
                     f"{''.join(missing[:20])!r} (each would be the same missing-glyph box); pass a font that "
                     "draws them (typographic_attack(font=PATH.ttf)), or skip the attack (--no-typographic)")


def _dejavu() -> str | None:
    """matplotlib's DejaVu Sans, where matplotlib is installed."""
    try:
        import matplotlib

        path = os.path.join(matplotlib.get_data_path(), "fonts", "ttf", "DejaVuSans.ttf")
    except Exception:  # (not installed, or broken: the default font's words are still written)
        return None
    return path if os.path.isfile(path) else None


def _undrawn(chars: Sequence[str], font: str | None) -> list[str]:
    """The characters of ``chars`` that ``font`` draws as its missing-glyph box (that of U+FFFF, a noncharacter)."""
    drawn_in = _font(font, 24)

    def ink(ch: str) -> bytes | None:
        canvas = Image.new("L", (72, 48))
        try:
            ImageDraw.Draw(canvas).text((12, 8), ch, font=drawn_in, fill=255)
        except UnicodeEncodeError:  # Pillow's bitmap font (a build without FreeType): Latin-1 only
            return None
        return canvas.tobytes()

    box = ink("\uffff")
    return [c for c in chars if (drawn := ink(c)) is None or drawn == box]


def _wrong_classes(labels: np.ndarray, num_classes: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    offsets = rng.integers(1, num_classes, size=len(labels))
    return (labels + offsets) % num_classes


class _TextOp:
    """Writes one word on every image (picklable, for DataLoader workers)."""

    def __init__(self, word: str, font: str | None = None):
        self.word, self.font = word, font

    def __call__(self, img: Image.Image) -> Image.Image:
        return render_text(img, self.word, font=self.font)


class _WrittenWordTransform:
    """Writes on each image its own word, ``words[word_of_row[index]]`` (``index``: the sample's row in the
    dataset's index, which :class:`~kizuna.data.sources.PairDataset` passes to a transform that ``needs_index``):
    the attack's one pass over every image. A pass per written class started its loader's workers once per class:
    under spawn (macOS) or forkserver (Linux from Python 3.14) seconds each, 18-50x the attack's time on CIFAR-10."""

    needs_index = True

    def __init__(self, preprocess, words: list[str], word_of_row: np.ndarray, font: str | None = None):
        self.preprocess, self.words, self.word_of_row, self.font = preprocess, list(words), word_of_row, font

    def __call__(self, img: Image.Image, index: int) -> torch.Tensor:
        return _ImageOpTransform(self.preprocess, _TextOp(self.words[self.word_of_row[index]], self.font))(img)


@dataclass
class TypographicResult:
    metrics: dict[str, float]  # clean_acc1, attacked_acc1, drop, follow_rate, follow_rate_of_correct
    written: np.ndarray  # class written on each image
    predictions: torch.Tensor
    dataset: str = ""
    n: int = 0  # images scored (decoded clean and attacked)
    skipped: SkipCounter = field(default_factory=SkipCounter)
    font: str = "Pillow's default"  # what the words were written in (see font_for)

    def table(self) -> str:
        from kizuna.apps.common import format_table

        m = self.metrics
        rows = [["clean", f"{100 * m['clean_acc1']:.2f}", "-"],
                ["wrong class name written on the image", f"{100 * m['attacked_acc1']:.2f}",
                 f"{100 * m['follow_rate']:.2f}"]]
        of_correct = m["follow_rate_of_correct"]
        switched = ("none could switch: no image was classified correctly when clean"
                    if of_correct is None or math.isnan(of_correct) else  # (printed "nan%")
                    f"{100 * of_correct:.1f}% switch to the written word")
        return (format_table(rows, ["images", "top-1 %", "predicts the written word %"])
                + f"\naccuracy drop {100 * m['drop']:.2f} points; of the images classified correctly when clean, "
                  + switched)

    def to_dict(self) -> dict:
        return {"metrics": self.metrics, "n": self.n, "skipped": self.skipped.as_dict(),  # as RobustnessResult
                "font": self.font}


def typographic_attack(model, tokenizer, dataset, *, templates=None, batch_size: int = 64, device=None,
                       num_workers: int = 0, progress: bool = True, seed: int = 0, cache_dir=None,
                       clean_features=None, font: str | None = None) -> TypographicResult:
    """Write a wrong class name onto every image and measure how often the model follows the word. ``font``: a
    TrueType file to write in (default: see :func:`font_for`, which refuses names no font here can draw)."""
    import kizuna

    model = getattr(model, "module", model)
    pre = kizuna.get_preprocess(model)
    weights = _weights(model, tokenizer, dataset, templates, cache_dir)
    labels = dataset.labels
    c = dataset.num_classes
    if c < 2:
        raise ValueError("the typographic attack needs at least two classes")
    font = font_for(dataset.classnames, font)  # before any image is encoded
    written = _wrong_classes(labels, c, seed)
    clean = clean_features or encode_images(model, dataset, transform=pre, batch_size=batch_size, device=device,
                                            num_workers=num_workers, progress=progress, desc="typographic: clean")
    n = len(dataset)
    feats = torch.zeros_like(clean.features)
    valid = torch.zeros(n, dtype=torch.bool)
    usable = clean.valid.numpy()  # the same on every rank; corrupt images are left out below anyway
    sel = np.flatnonzero(usable)
    if len(sel):
        word_of_row = np.zeros(int(dataset.positions.max()) + 1, dtype=np.int32)
        # a sample repeated in a subset (ds.subset([5, 5, 7])) is one image to the loader: each copy gets the first
        # copy's word, and the record says so (each copy's own draw was scored against an image with another word)
        word_of_row[dataset.positions[::-1]] = written[::-1]
        written = word_of_row[dataset.positions]
        f = encode_images(model, dataset.subset(sel),
                          transform=_WrittenWordTransform(pre, dataset.classnames, word_of_row, font),
                          batch_size=batch_size, device=device, num_workers=num_workers, progress=progress,
                          desc="typographic: attacked")
        feats[torch.as_tensor(sel)] = f.features
        valid[torch.as_tensor(sel)] = f.valid
    ok = valid & clean.valid
    clean_res = classify_features(clean.features, labels, weights, dataset.classnames, valid=ok)
    att = classify_features(feats, labels, weights, dataset.classnames, valid=ok)
    v = ok.numpy()
    pred = att.predictions.numpy()
    follows = pred[v] == written[v]
    was_right = clean_res.predictions.numpy()[v] == labels[v]
    metrics = {"clean_acc1": clean_res.metrics["acc1"], "attacked_acc1": att.metrics["acc1"],
               "drop": clean_res.metrics["acc1"] - att.metrics["acc1"],
               "follow_rate": float(follows.mean()) if len(follows) else float("nan"),
               "follow_rate_of_correct": float(follows[was_right].mean()) if was_right.any() else float("nan")}
    skipped = SkipCounter()
    skipped.update(dataset.skips)
    skipped.update(clean.skips)
    return TypographicResult(metrics, written, att.predictions, dataset.name, int(ok.sum()), skipped,
                             "Pillow's default" if font is None else os.path.basename(font))


# ----------------------------------------------------------------------------------- Winoground
def winoground_scores(sims: torch.Tensor) -> dict[str, float]:
    """Text / image / group scores from ``sims [G, 2, 2]`` (``sims[g, i, c]``: image i vs caption c;
    caption c describes image c)."""
    s = torch.as_tensor(sims, dtype=torch.float64)
    if s.dim() != 3 or s.shape[1:] != (2, 2):
        raise ValueError(f"expected similarities of shape [G, 2, 2], got {tuple(s.shape)}")
    text = (s[:, 0, 0] > s[:, 0, 1]) & (s[:, 1, 1] > s[:, 1, 0])
    image = (s[:, 0, 0] > s[:, 1, 0]) & (s[:, 1, 1] > s[:, 0, 1])
    group = text & image
    g = len(s) or float("nan")  # (no groups: no score, not 0%)
    return {"text_score": float(text.sum()) / g, "image_score": float(image.sum()) / g,
            "group_score": float(group.sum()) / g, "groups": float(len(s))}


@torch.inference_mode()
def _encode_pil(model, images: list[Image.Image], transform, batch_size: int, device) -> torch.Tensor:
    """Normalised embeddings of in-memory images, sharded across ranks like :func:`encode_images`."""
    rank, world = dist_info()
    bounds = shard_bounds(len(images), batch_size, world)
    s0, s1 = bounds[rank]
    device = device or next(model.parameters()).device
    out = []
    with eval_mode(model):  # as encode_images: no dropout from a model left in train mode
        for i in range(s0, s1, batch_size):
            x = torch.stack([transform(im) for im in images[i : min(i + batch_size, s1)]]).to(device)
            out.append(unit_rows(model.encode_image(x)).cpu())
    dim = model.cfg.embed_dim if hasattr(model, "cfg") else None
    local = torch.cat(out) if out else torch.zeros(0, dim or 0)
    return gather_shards(local, bounds)


def relation_swap_probe(model, tokenizer, *, n_groups: int = 100, seed: int = 1, image_size: int | None = None,
                        batch_size: int = 64, device=None, probes=None) -> dict[str, float]:
    """Winoground-style scores on the synthetic ``relation_swap`` pairs (:mod:`kizuna.data.synthetic`),
    plus plain two-way caption accuracy (``caption_acc``). The scenes are drawn at ``image_size``, by default
    the model's own, as the training's probes draw them (at a fixed 64 px, `kizuna eval probes` scored the
    demo's 48-px model on rescaled scenes: 1.2% group score where the demo's own probe said 2.0%)."""
    import kizuna
    from kizuna.data.synthetic import make_probes

    from .encode import encode_texts_sharded

    model = getattr(model, "module", model)
    if image_size is None:
        image_size = model.image_size[0]
    p = probes or make_probes(seed=seed, image_size=image_size, n_per_task=2 * n_groups,
                              tasks=["relation_swap"])["relation_swap"]
    pre = kizuna.get_preprocess(model)
    img = _encode_pil(model, p.images, pre, batch_size, device)
    # (gathered: every rank refuses together) NaN compares false, and a NaN tower scored 0% / caption_acc 50%
    check_finite(img, None, "relation swap: images")
    texts = sorted({t for i in range(len(p)) for t in p.candidates_for(i)})
    txt = encode_texts_sharded(model, tokenizer, texts, device=device).features
    where = {t: k for k, t in enumerate(texts)}
    sims = similarity(img, txt)
    groups = []
    for a, b in p.groups:
        ca = where[p.candidates_for(a)[p.labels[a]]]
        cb = where[p.candidates_for(b)[p.labels[b]]]
        groups.append(sims[[a, b]][:, [ca, cb]])
    out = winoground_scores(torch.stack(groups))
    correct = [int(sims[i, [where[t] for t in p.candidates_for(i)]].argmax()) == p.labels[i] for i in range(len(p))]
    out["caption_acc"] = float(np.mean(correct))
    return out
