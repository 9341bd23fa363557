"""From a model to figures and numbers: what a ViT (or a CLIP image tower) has learned.

    target = load_target("runs/cifar-s4/model")                 # ViT, CLIP, OpenAI .pt, HF folder
    numbers = full_report(target, "analysis/", images=load_images(["photos/"], target.preprocess))

Each ``*_report`` function writes one PNG and one JSON file (same stem) to ``out`` and returns the
JSON's content:

=====================  ============================  ===================================================
report                 figure                        numbers
=====================  ============================  ===================================================
filters_report         ``filters.png`` (Fig. 7 left)   explained-variance ratio of each principal component
positions_report       ``positions.png`` (centre)      row/column similarity score (``ratio`` > 1: rows and
                                                     columns are visible in the embeddings)
attention_distance_    ``attention_distance.png``     mean attention distance (pixels) per layer and head,
report                 (Fig. 7 right)                 per-layer mean/min/max, the uniform-attention level
rollout_report         ``rollout.png`` (Fig. 6)       the class-token rollout map over the patch grid
predict_report         ``predict.png`` (CLIP Fig. 21)  the class probabilities (zero-shot for CLIP, the
                                                     classifier head for a supervised ViT)
=====================  ============================  ===================================================

:func:`full_report` runs all that apply and also writes ``report.json`` with every section.
For the hybrid (ResNet-stem) ViT the "filters" are those of the stem's first 3x3 convolution (its
patch embedding is a 1x1 projection of feature maps, which has no pixel filters), and attention
distances are in input pixels (one patch = ``patch_size * stem stride`` pixels).
"""
from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import torch
from torch import nn

from kizuna.apps.common import json_safe
from kizuna.models.checkpoint import atomic_write_text

from .attention import (
    attention_rollout,
    check_discard_ratio,
    cls_rollout_map,
    grid_mean_pairwise_distance,
    last_layer_cls_attention,
    mean_attention_distance,
)
from .figures import (
    plot_attention_distance,
    plot_attention_overlay,
    plot_filter_components,
    plot_position_similarity,
    plot_prediction_panel,
)
from .filters import patch_filter_pca
from .position import position_similarity, row_column_score

if TYPE_CHECKING:
    from kizuna.data.sources import SkipCounter

__all__ = [
    "AnalysisTarget", "attention_distance_report", "check_report", "filters_report", "full_report", "load_images",
    "load_target", "positions_report", "predict_report", "prediction_inputs", "read_extra", "read_record",
    "rollout_report",
]

SECTIONS = ("filters", "positions", "attention_distance", "rollout", "predict")


# The kind of digest AnalysisTarget.weights records, before it. Earlier kizunas recorded it bare: the same sha256
# (b537ddf), and before that a blake2b of the bytes (5c6af95); compared with this one's as they stood, an upgrade
# made every report and panel of the same model "another model's" and removed them.
WEIGHTS_DIGEST = "sha256:"


def _same_weights(recorded, target: AnalysisTarget) -> bool | None:
    """Whether a report's recorded weights digest is of ``target``'s weights; None where none was recorded."""
    if not isinstance(recorded, str):
        return None
    if recorded.startswith(WEIGHTS_DIGEST):
        return recorded == target.weights
    return recorded in (target.weights[len(WEIGHTS_DIGEST):], _blake2b_digest(target.model))


def _blake2b_digest(model) -> str:
    """The digest kizuna recorded from 5c6af95 to ca9bdab: blake2b-64 of each tensor's name, flat shape, dtype and
    bytes."""
    digest = hashlib.blake2b(digest_size=8)
    for name, t in model.state_dict().items():
        t = t.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}{tuple(t.shape)}{t.dtype}".encode())
        digest.update(t.view(torch.uint8).numpy().data if t.numel() else b"")
    return digest.hexdigest()


@dataclass
class AnalysisTarget:
    """The image tower to inspect, with what is needed to feed it."""

    vit: Any  # kizuna.models.vit.VisionTransformer
    kind: str  # "vit" | "clip"
    model: nn.Module  # the whole model (the ViT itself, or the ClipModel)
    preprocess: Any  # kizuna.data.transforms.Preprocess
    source: str
    classnames: list[str] | None = None  # a supervised ViT's class names, when saved with the model
    extra: dict = field(default_factory=dict)

    @property
    def image_size(self) -> tuple[int, int]:
        s = self.vit.cfg.image_size
        return (s, s) if isinstance(s, int) else (int(s[0]), int(s[1]))

    @property
    def pixels_per_patch(self) -> int:
        cfg = self.vit.cfg
        return cfg.patch_size * (cfg.stem_stride if cfg.stem != "patch" else 1)

    @functools.cached_property
    def weights(self) -> str:  # (WEIGHTS_DIGEST: its kind, beside it)
        """A short digest of the whole model's weights (the class cache's content_hash: each tensor's name, shape,
        dtype and bytes): figures of another model saved at the same path (retrained in place) are told from this
        one's by it. Of the bytes, not of sums: a float sum's last bits depend on the thread count and the device."""
        from kizuna.eval.encode import content_hash

        return WEIGHTS_DIGEST + content_hash(self.model)[:16]

    def describe(self) -> dict:
        cfg = self.vit.cfg
        return {
            "source": self.source, "weights": self.weights, "kind": self.kind, "image_size": list(self.image_size),
            "patch_size": cfg.patch_size, "pixels_per_patch": self.pixels_per_patch, "grid": list(cfg.grid),
            "width": cfg.width, "depth": cfg.depth, "heads": cfg.heads, "stem": cfg.stem, "pool": cfg.pool,
            "class_token": cfg.class_token, "num_classes": cfg.num_classes,
            "parameters": sum(p.numel() for p in self.vit.parameters()),
        }


def read_extra(path: str | Path) -> dict:
    """The ``extra`` record kizuna.save_model stored with a model (``{}`` when none or not kizuna). Its metrics'
    nulls (a diverged run's NaN, written as strict JSON) read back as NaN: a null looked like "not evaluated"."""
    from kizuna.train.logging import nulls_as_nan

    extra = dict(read_record(path).get("extra") or {})
    if "metrics" in extra:
        extra["metrics"] = nulls_as_nan(extra["metrics"])  # (not a dict: as it was)
    return extra


def read_record(path: str | Path) -> dict:
    """The record kizuna.save_model wrote beside the weights (its ``config`` and ``extra``), read without
    the weights; ``{}`` for a file or folder of another format."""
    from safetensors import safe_open

    from kizuna.models.checkpoint import FORMAT_KEY, _record_of_the_weights, follow_latest, utf8_path

    def weights_metadata(file: Path) -> dict:
        with utf8_path(file) as readable, safe_open(readable, framework="pt") as f:
            return f.metadata() or {}

    path = follow_latest(path)  # OUT/checkpoints/latest, which load_model follows too (its stored mean was lost)
    try:
        if path.is_dir() and (path / "config.json").is_file():
            record = json.loads((path / "config.json").read_text(encoding="utf-8")).get(FORMAT_KEY, {})
            if record and (path / "model.safetensors").is_file():  # as load_model reads it (a torn save)
                record = _record_of_the_weights(path, record, weights_metadata(path / "model.safetensors"))
        elif path.suffix == ".safetensors":
            record = json.loads(weights_metadata(path).get(FORMAT_KEY, "{}"))
        else:
            return {}
    except Exception:  # unreadable (safetensors' own SafetensorError for a cut-off file too): no record, as documented
        return {}
    return dict(record) if isinstance(record, dict) else {}


def load_target(model: str | nn.Module, device: str = "cpu", allow_jit: bool = False,
                act: str | None = None, preprocess: dict | None = None,
                classnames: Sequence[str] | None = None) -> AnalysisTarget:
    """A checkpoint path (or CLIP preset name, or a model object) -> :class:`AnalysisTarget`. A model object is
    analysed in place: it is moved to ``device`` and put in eval mode (call ``.train()`` to go on training it).
    ``act``: the activation of an OpenAI-layout state dict (``create_model``'s). ``preprocess`` (the
    :class:`~kizuna.data.transforms.Preprocess` fields) and ``classnames``: a supervised ViT's, which a path
    brings with it and a model object does not (without them it is analysed with mean = std = 0.5, a warning
    says so)."""
    import kizuna
    from kizuna.data.transforms import Preprocess
    from kizuna.models.clip import ClipModel
    from kizuna.models.vit import VisionTransformer

    extra: dict = {}
    source = "<model>"
    if isinstance(model, (str, Path)):
        source = str(model)
        from kizuna.apps.common import create_model_for_command

        obj = create_model_for_command(str(model), allow_jit=allow_jit, act=act)  # a preset: seeded weights
        extra = read_extra(model)
    else:
        obj = model
    obj = obj.to(device).eval()
    if isinstance(obj, ClipModel):
        return AnalysisTarget(obj.visual, "clip", obj, kizuna.get_preprocess(obj), source, extra=extra)
    if isinstance(obj, VisionTransformer):
        pre = preprocess or extra.get("preprocess") or getattr(obj, "preprocess_config", None)
        if not pre:
            from kizuna.train.supervised import vit_preprocess

            if not isinstance(model, (str, Path)):  # a ViT fine-tuned from a CLIP tower has OpenAI's mean/std
                import warnings

                warnings.warn("a ViT model object carries no preprocessing: analysed with mean = std = 0.5; pass "
                              "preprocess= (or load it by path, which reads the saved one)", UserWarning,
                              stacklevel=2)
            pre = vit_preprocess(obj.cfg.image_size)
        names = classnames or extra.get("classnames")
        return AnalysisTarget(obj, "vit", obj, Preprocess(**pre), source,
                              classnames=list(names) if names else None, extra=extra)
    raise ValueError(f"{source}: cannot analyse a {type(obj).__name__}; expected a ViT or a CLIP model")


# ----------------------------------------------------------------------------------- helpers
def path_list(paths) -> list:
    """``paths`` (folders, files, shard specs) as a list; one path given alone is one entry, not iterated
    ("/tmp/imgs" was "/", "t", ...: load_images scanned "/", compare-runs took "/" for a run)."""
    return [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)


def _write(out: Path, name: str, numbers: dict, model: str | None = None) -> dict:
    """OUT/NAME.json; ``model`` (the analysis target's source) first, so a folder's JSONs each say whose they are
    (an interrupted `analyze all` into another model's folder mixed the two unmarked)."""
    numbers = json_safe(numbers if model is None else {"model": model, **numbers})
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / f"{name}.json", json.dumps(numbers, indent=2))
    return numbers


def _device(target: AnalysisTarget) -> torch.device:
    return next(target.vit.parameters()).device


def _display(target: AnalysisTarget, x: torch.Tensor) -> torch.Tensor:
    """A preprocessed [3, H, W] tensor back to [H, W, 3] in [0, 1] (the crop the model saw)."""
    mean = torch.tensor(target.preprocess.mean, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(target.preprocess.std, dtype=torch.float32).view(3, 1, 1)
    return (x.detach().cpu().float() * std + mean).clamp(0, 1).permute(1, 2, 0)


def load_images(specs: Sequence[str], preprocess, max_images: int = 32,
                skips: SkipCounter | None = None) -> tuple[torch.Tensor, list[str]]:
    """Image files, folders (recursive) or shard specs -> ([N, 3, H, W] preprocessed, names), the
    first ``max_images`` in order. Undecodable images are skipped with a warning that counts them and
    names the first few; pass a :class:`~kizuna.data.sources.SkipCounter` as ``skips`` to get the counts
    (e.g. to record them). None readable at all is a ValueError that says why."""
    from kizuna.data.images import IMAGE_EXTENSIONS, ImageError, ImageTooLarge, load_image
    from kizuna.data.sources import PairDataset, SkipCounter, build_index, expand_spec

    specs = path_list(specs)
    skipped = SkipCounter()
    tensors, names = [], []
    # each image once: a folder and a file in it, or a folder given twice (a/ and a), measured one image twice
    seen: set[tuple] = set()

    def image_file(path) -> bool:  # (a long `::` list: Path.is_file raised)
        return os.path.isfile(path) and Path(path).suffix.lower() in IMAGE_EXTENSIONS

    def as_files(spec) -> list:
        """A spec that names image files (a quoted glob 'imgs/*.png', braces, a `::` list): each image read as a
        named file is (build_index refused them: "unsupported data source 'imgs/a.png'"), each folder as its own
        spec, and other files the pattern caught (captions, a notes.csv, beside the images) left out, as a
        folder's reading leaves them; a spec naming no image as it is, for build_index to read or explain."""
        if os.path.exists(spec):
            return [spec]
        try:
            paths = expand_spec(spec)
        except (OSError, ValueError):  # no match: build_index says so
            return [spec]
        if not any(image_file(p) for p in paths):
            return [spec]
        return [p for p in paths if image_file(p) or os.path.isdir(p)]  # (a notes.csv beside them is no table)

    def read_named(path):
        """A named image file, decoded; None where it is skipped, counted by the reason a folder's index and decoding
        count it by (the docstring's promise: it raised for a named file)."""
        try:
            if os.path.getsize(path) > 0:
                return load_image(path)
            reason = "empty_image"
        except ImageTooLarge:
            reason = "image_too_large"
        except ImageError:
            reason = "corrupt_image"
        except OSError:  # (the size of a file gone, or unreadable)
            reason = "read_error"
        skipped.add(reason, str(path))
        return None

    for spec in [piece for spec in specs for piece in as_files(spec)]:
        if len(tensors) >= max_images:
            break
        p = Path(spec)
        if image_file(p):
            if ("file", os.path.realpath(p)) not in seen:
                seen.add(("file", os.path.realpath(p)))
                image = read_named(p)
                if image is not None:
                    tensors.append(preprocess(image))
                    names.append(str(p))
            continue
        index = build_index(spec, require="image")
        ds = PairDataset(index, preprocess, caption_sampling="first", seed_transform=False)
        read_all = True
        for i in range(len(ds)):
            if len(tensors) >= max_images:
                read_all = False
                break
            ref = index[i]
            which = (("file", os.path.realpath(ref.path)) if ref.path else
                     ("member", os.path.realpath(ref.source), ref.key))
            if which in seen:
                continue
            seen.add(which)
            item = ds[i]
            if item is not None:
                tensors.append(item["image"])
                names.append(index.where(i))
        if read_all:  # dropped while indexing (an empty file): where the cap stopped the reading, they are not
            skipped.update(index.skips)  # known to lie before it (the warning said 2 of 3 good images readable)
        skipped.update(ds.skips)  # dropped while decoding (a corrupt or truncated image)
    if skips is not None:
        skips.update(skipped)
    if not tensors:
        why = f" ({_skip_report(skipped)})" if skipped else ""
        for spec in specs:  # a dataset's root (cifar10/): its shards are a level down, which folders do not read
            splits = _shard_folders(Path(spec))
            if splits:
                why += (f"; {spec} holds split folders of shards ({', '.join(splits)}): name one, e.g. "
                        f"--images {Path(spec) / ('test' if 'test' in splits else splits[0])}")
                break
        raise ValueError(f"no readable images in {', '.join(map(str, specs))}{why}")
    if skipped:  # the numbers are over fewer images than there were; it went unsaid
        warnings.warn(f"{_skip_report(skipped)}; using the {len(tensors)} readable", stacklevel=2)
    return torch.stack(tensors), names


def _shard_folders(folder: Path) -> list[str]:
    """The names of ``folder``'s sub-folders that hold .tar shards (a dataset's train/, test/, val/)."""
    if not os.path.isdir(folder):  # (a long `::` list of shards: Path.is_dir raised ENAMETOOLONG)
        return []
    return sorted(d.name for d in folder.iterdir() if d.is_dir() and any(d.glob("*.tar")))


def _skip_report(skipped: SkipCounter, k: int = 3) -> str:
    """"skipped 2 images (corrupt_image=2): a in folder X, b in folder X": the count by reason and the first
    ``k`` images (SkipCounter.report names one)."""
    reasons = ", ".join(f"{r}={n}" for r, n in sorted(skipped.counts.items(), key=lambda kv: (-kv[1], kv[0])))
    where = [w for ex in skipped.examples.values() for w in ex]
    named = ": " + ", ".join(where[:k]) + (", ..." if skipped.total > k else "") if where else ""
    return f"skipped {skipped.total} images ({reasons}){named}"


def synthetic_images(target: AnalysisTarget, n: int = 16) -> tuple[torch.Tensor, list[str]]:
    """Scenes of the built-in shapes world (a stand-in when no images are given)."""
    from kizuna.data.synthetic import SyntheticWorld

    world = SyntheticWorld(seed=0, image_size=max(target.image_size), split="val", length=n)
    return torch.stack([target.preprocess(world[i][0]) for i in range(n)]), [f"synthetic-{i}" for i in range(n)]


# ----------------------------------------------------------------------------------- reports
def filters_report(target: AnalysisTarget, out: str | Path, components: int = 28) -> dict:
    """PCA of the patch-embedding filters (ViT Fig. 7 left) -> filters.png / filters.json."""
    out = Path(out)
    vit = target.vit
    if vit.stem is not None:
        name, first = next((n, m) for n, m in vit.stem.named_modules() if isinstance(m, torch.nn.Conv2d))
        weight, of = first.weight, f"stem.{name} (first 3x3 convolution of the hybrid's {vit.cfg.stem} stem)"
    else:
        weight, of = vit.patch_embed.proj.weight, "patch_embed.proj (linear patch embedding)"
    comps, evr = patch_filter_pca(weight.detach().float().cpu(), k=components)
    title = "Principal components of the " + ("stem filters" if vit.stem is not None else "patch-embedding filters")
    plot_filter_components(comps, out / "filters.png", explained_variance=evr, title=title)
    return _write(out, "filters", {
        "filters_of": of, "filter_shape": list(weight.shape[1:]), "num_filters": int(weight.shape[0]),
        "components": int(comps.shape[0]), "explained_variance_ratio": evr,
        "explained_variance_total": float(evr.sum()), "figure": "filters.png",
    }, model=target.source)


def _position_similarity(target: AnalysisTarget) -> torch.Tensor:
    cfg = target.vit.cfg
    return position_similarity(target.vit.pos_embed.detach().float().cpu(), cfg.grid, cfg.num_prefix_tokens)


def positions_report(target: AnalysisTarget, out: str | Path) -> dict:
    """Cosine similarity of position embeddings (ViT Fig. 7 centre) -> positions.png / .json."""
    out = Path(out)
    cfg = target.vit.cfg
    grid = cfg.grid
    sim = _position_similarity(target)
    score = row_column_score(sim, grid)
    plot_position_similarity(sim, grid, out / "positions.png",
                             title=f"Position embedding similarity ({grid[0]}x{grid[1]} patches)")
    # similarity as a function of 2-D offset (how quickly it falls off with distance)
    h, w = grid
    n = h * w
    s = sim.reshape(n, n).double()
    r = torch.arange(h).repeat_interleave(w)
    c = torch.arange(w).repeat(h)
    dist = ((r[:, None] - r[None]).abs() + (c[:, None] - c[None]).abs())
    by_distance = [float(s[dist == d].mean()) for d in range(1, int(dist.max()) + 1)]
    return _write(out, "positions", {
        "grid": list(grid), "num_prefix_tokens": cfg.num_prefix_tokens, "row_column": score,
        "row_column_ratio": score["ratio"], "row_column_excess_at_equal_distance": score["equal_distance_excess"],
        "similarity_by_manhattan_distance": by_distance,
        "figure": "positions.png",
    }, model=target.source)


@torch.no_grad()
def _attentions(target: AnalysisTarget, images: torch.Tensor, chunk: int = 16):
    """Per-block attention for all images, computed in chunks: yields (attentions, grid, batch)."""
    dev = _device(target)
    for i in range(0, len(images), chunk):
        x = images[i : i + chunk].to(dev)
        inter = target.vit.forward_intermediates(x, return_attention=True)
        yield [a.float().cpu() for a in inter["attentions"]], inter["grid"], inter["num_prefix_tokens"], len(x)


# Attention distances keep one layer's maps at a time, for a chunk of images sized to this budget: every
# layer's maps of a 16-image chunk (what forward_intermediates returns) were ~8 GB for ViT-L/14 at 336 px.
ATTENTION_BUDGET_BYTES = 256 * 2**20


def _distance_chunk(tokens: int, heads: int, budget: int | None = None, most: int = 16) -> int:
    """Images per forward pass such that one layer's float32 attention maps [B, heads, T, T] fit ``budget``
    (default :data:`ATTENTION_BUDGET_BYTES`); at least one image, at most ``most``."""
    budget = ATTENTION_BUDGET_BYTES if budget is None else budget
    return max(1, min(most, budget // (4 * heads * tokens * tokens)))


@torch.no_grad()
def attention_distance_per_head(target: AnalysisTarget, images: torch.Tensor,
                                progress: bool = True) -> tuple[torch.Tensor, tuple, int]:
    """-> (mean attention distance in pixels per layer and head [L, H] over the images, grid, pixels/patch).

    The pitch is the stride in input pixels also when the image is not a multiple of it: patches (and the
    conv stem) leave the last rows and columns unseen, and the ResNet stem's padded stride-2 convolutions
    put token ``j``'s centre at pixel ``stride * j`` (a 30 px image at stride 4: 8 tokens, 4 px apart)."""
    vit, px = target.vit, target.pixels_per_patch
    dev = _device(target)
    # an upper bound on the tokens: the ResNet stem rounds the grid up
    tokens = vit.cfg.num_prefix_tokens + math.ceil(images.shape[-2] / px) * math.ceil(images.shape[-1] / px)
    chunk = _distance_chunk(tokens, vit.cfg.heads)
    from kizuna.eval.encode import progress_bar  # (no tqdm object without a bar: see there)

    total, count, grid = None, 0, None
    # 2,000 CIFAR images took 44 s without a word
    for i in progress_bar(range(0, len(images), chunk), desc="attention distances", unit="chunk",
                          enabled=progress and len(images) > chunk):
        # forward_intermediates' pass (embed, then the blocks), each layer's maps reduced to [H] as made
        x, grid = vit.embed(images[i : i + chunk].to(dev))
        d = []
        for block in vit.transformer.blocks:
            x, attn = block(x, return_attention=True)
            d.append(mean_attention_distance(attn.float(), grid, px, vit.cfg.num_prefix_tokens).cpu())
        d = torch.stack(d).double()  # [L, H]
        b = len(x)
        total = d * b if total is None else total + d * b
        count += b
    return (total / count).float(), tuple(grid), px


def attention_distance_report(target: AnalysisTarget, images: torch.Tensor, out: str | Path,
                              images_source: str = "", skipped_images: int | None = None,
                              progress: bool = True) -> dict:
    """Mean attention distance per layer and head (ViT Fig. 7 right) -> attention_distance.png/.json.

    ``skipped_images``: how many images were unreadable (:func:`load_images`' ``skips``), recorded."""
    out = Path(out)
    per_head, grid, px = attention_distance_per_head(target, images, progress)
    _warn_if_not_finite(target, per_head, "attention distances")
    count = len(images)
    image_hw = tuple(images.shape[-2:])  # the input's; grid * px is not it off a multiple (32 for 30 or 36 px)
    plot_attention_distance(list(per_head), px, image_hw, out / "attention_distance.png", grid=grid,
                            stem=target.vit.cfg.stem != "patch")
    return _write(out, "attention_distance", {
        "pixels_per_patch": px, "image_size": list(image_hw), "grid": list(grid), "num_images": count,
        "skipped_images": skipped_images,
        "images_source": images_source, "per_head": per_head, "per_layer_mean": per_head.mean(dim=1),
        "per_layer_min": per_head.amin(dim=1), "per_layer_max": per_head.amax(dim=1),
        "uniform_reference": grid_mean_pairwise_distance(grid, px), "figure": "attention_distance.png",
    }, model=target.source)


@torch.no_grad()
def rollout_report(target: AnalysisTarget, image: torch.Tensor, out: str | Path, head_fusion: str = "mean",
                   discard_ratio: float = 0.0, image_name: str = "", labels: Sequence[str] | None = None) -> dict:
    """Attention rollout (Abnar & Zuidema; ViT Fig. 6) for one preprocessed image -> rollout.png/.json.

    A model that pools its class token (``pool="cls"``): the map is that token's row of the rollout.
    Otherwise (GAP / MAP / max pooling, with or without a class token) the output is made from the patch
    tokens, so the map is the mean over the patch tokens of the flow from each input patch; a class token
    that is carried along but never pooled does not stand for the output.
    """
    out = Path(out)
    x = image if image.dim() == 4 else image[None]
    x = x[:1]
    (attns, grid, prefix, _), = list(_attentions(target, x))
    roll = attention_rollout(attns, head_fusion=head_fusion, discard_ratio=discard_ratio)
    pooled_token = prefix >= 1 and target.vit.cfg.pool == "cls"
    if pooled_token:
        rmap = cls_rollout_map(roll, grid, prefix)[0]
        maps = {"attention rollout": rmap,
                "last layer, class token (mean of heads)": last_layer_cls_attention(attns, grid, prefix)[0].mean(0)}
    else:
        rmap = roll[0, prefix:, prefix:].mean(dim=0).reshape(grid)
        maps = {"attention rollout (mean over patch tokens)": rmap}
    _warn_if_not_finite(target, rmap, "rollout map")
    plot_attention_overlay(_display(target, x[0]), maps, out / "rollout.png", patch_size=target.pixels_per_patch,
                           title=f"Attention rollout ({head_fusion} over heads, discard {discard_ratio:g})")
    peak = int(rmap.flatten().argmax())
    numbers = {"image": image_name, "grid": list(grid), "head_fusion": head_fusion, "discard_ratio": discard_ratio,
               "class_token": pooled_token, "pool": target.vit.cfg.pool, "rollout_map": rmap, "peak_patch": [peak // grid[1], peak % grid[1]],
               "figure": "rollout.png"}
    if target.kind == "vit" and target.vit.head is not None:
        probs = target.vit(x.to(_device(target))).float().softmax(-1)[0].cpu()
        k = int(probs.argmax())
        names = list(labels) if labels else target.classnames  # the names the predict panel gives (--labels)
        numbers["prediction"] = {"class": k, "probability": float(probs[k]),
                                 "label": names[k] if names and k < len(names) else None}
    return _write(out, "rollout", numbers, model=target.source)


def _warn_if_not_finite(target: AnalysisTarget, values: torch.Tensor, what: str) -> None:
    """NaN or inf attention (a diverged run) is kept as NaN, null in the JSON (over-training plots it as a gap);
    said, as `vit eval` and `analyze predict` refuse such a model's features: the command wrote nulls and an
    empty figure under "wrote ..." and nothing else."""
    bad = int((~torch.isfinite(values)).sum())
    if bad:
        warnings.warn(f"{target.source}: {bad} of {values.numel()} {what} are NaN or inf (null in the JSON): the "
                      "model's attention is not finite (a diverged run?)", RuntimeWarning, stacklevel=3)


def _predicts(target: AnalysisTarget, labels: Sequence[str] | None) -> bool:
    """Whether :func:`full_report` draws a prediction panel: for CLIP when given labels, for a ViT with a head."""
    return ((target.kind == "clip" and labels is not None and len(labels) > 0)  # (a numpy array has no bool())
            or (target.kind == "vit" and target.vit.head is not None))


def _label_named(name: str, labels: Sequence[str]) -> str | None:
    """The label ``name`` is, compared in NFC: "café" pasted from a macOS file name (decomposed) was not the
    label "café"."""
    import unicodedata

    nfc = unicodedata.normalize("NFC", name)
    return next((label for label in labels if unicodedata.normalize("NFC", label) == nfc), None)


def prediction_inputs(target: AnalysisTarget, labels: Sequence[str] | None = None,
                      templates: Sequence[str] | None = None, true_label: str | None = None):
    """-> (labels, templates, tokenizer) that :func:`predict_report` scores with, checked without running the
    model: a ValueError naming the flag for labels missing (CLIP) or not one per class (ViT), a template for a
    supervised ViT, a true label not among the labels, labels that a CLIP model's tokenizer reads alike in every
    prompt ("Cat" and "cat"), or a CLIP model whose tokenizer cannot be built.
    ``templates`` and ``tokenizer`` are None for a supervised ViT."""
    import kizuna
    from kizuna.extras import MissingExtra

    from kizuna.eval.zeroshot import text_list

    labels, templates = text_list(labels, "labels"), text_list(templates, "templates")  # "dog" was 'd', 'o', 'g'
    if target.kind == "clip":
        if not labels:
            raise ValueError("predict needs --labels for a CLIP model (the classes to score)")
        templates = templates or ["a photo of a {c}."]
        try:
            tokenizer = kizuna.get_tokenizer(target.model)
        except MissingExtra:  # a package to install (sentencepiece), not something the model lacks
            raise
        except ValueError as e:  # e.g. an HF SigLIP folder without its spiece.model
            raise ValueError(f"--labels need the model's tokenizer, which {target.source} lacks: {e}") from e
        labels = list(labels)
        from kizuna.apps.zeroshot import check_label_prompts

        check_label_prompts(tokenizer, labels, templates)  # "Cat" and "cat": one text to the model, split 50/50
    else:
        if templates:  # the head scores its own classes; no prompt is ever built (it was ignored silently)
            raise ValueError("--template applies to two-tower (CLIP) models only; a supervised ViT predicts "
                             "with its classifier head")
        if target.vit.head is None:
            raise ValueError(f"{target.source}: a ViT without a classifier head cannot predict; "
                             "use a CLIP model or a supervised ViT")
        n = target.vit.cfg.num_classes
        given = bool(labels)
        saved = target.classnames
        if given and saved and list(labels) != list(saved) and sorted(map(str, labels)) == sorted(map(str, saved)):
            # the saved names in another order: the head's classes would be named otherwise than the model's
            raise ValueError(f"--labels name the model's classes ({', '.join(saved[:10])}"
                             f"{', ...' if len(saved) > 10 else ''}) in another order; --labels name the classes "
                             "in class order: leave --labels out to use the names saved with the model")
        labels = list(labels) if labels else (target.classnames or [str(i) for i in range(n)])
        if len(labels) != n:
            raise ValueError(f"{'--labels gave' if given else 'the class names saved with the model are'} "
                             f"{len(labels)} names but the classifier has {n} classes; give --labels, one per "
                             "class, in class order")
        templates, tokenizer = None, None
    if true_label is not None and _label_named(true_label, labels) is None:  # its rank would be reported as if it
        # were scored
        raise ValueError(f"--true-label {true_label!r} is not among the labels ({', '.join(labels[:10])}"
                         f"{', ...' if len(labels) > 10 else ''})")
    return labels, templates, tokenizer


@torch.no_grad()
def predict_report(target: AnalysisTarget, image: torch.Tensor, out: str | Path, labels: Sequence[str] | None = None,
                   templates: Sequence[str] | None = None, true_label: str | None = None, top_k: int = 5,
                   image_name: str = "") -> dict:
    """The CLIP-paper prediction panel -> predict.png / predict.json.

    CLIP: zero-shot over ``labels`` with ``templates`` (default "a photo of a {c}."). A supervised
    ViT with a classifier head: softmax over its classes, named by ``labels`` (in class order) or the
    class names saved with the model. The inputs are checked first (:func:`prediction_inputs`).
    """
    from kizuna.eval.encode import check_finite, is_count
    from kizuna.eval.zeroshot import ZeroShotClassifier

    if not is_count(top_k):  # -1 listed all labels but the last
        raise ValueError(f"top_k must be a whole number >= 1 (the classes the panel shows), got {top_k!r}")
    labels, templates, tokenizer = prediction_inputs(target, labels, templates, true_label)
    true_label = None if true_label is None else _label_named(true_label, labels)
    out = Path(out)
    x = (image if image.dim() == 4 else image[None])[:1].to(_device(target))
    if target.kind == "clip":
        clf = ZeroShotClassifier(target.model, tokenizer, labels, templates, refuse_non_finite=True)
        logits = clf.logits(x)[0].float().cpu()
        probs = clf.probabilities(logits)
        method = "zero-shot (" + ("sigmoid" if target.model.cfg.loss == "siglip" else "softmax") + ")"
    else:
        logits = target.vit(x).float()
        check_finite(logits, None, "images")
        logits = logits[0].cpu()
        probs = logits.softmax(-1)
        method = "classifier head (softmax)"
    # ranked by the logits (saturated probabilities tie at 1.0 or 0.0); ties to the lower index, as the panel
    plot_prediction_panel(_display(target, x[0]), labels, probs, out / "predict.png", true_label=true_label,
                          top_k=top_k, scores=logits)
    order = torch.sort(logits, descending=True, stable=True).indices.tolist()
    return _write(out, "predict", {
        "image": image_name, "method": method, "labels": labels, "templates": templates, "probs": probs,
        "top": [[labels[i], float(probs[i])] for i in order[:top_k]], "true_label": true_label,
        "figure": "predict.png", "weights": target.weights,
    }, model=target.source)


def check_report(target: AnalysisTarget, labels: Sequence[str] | None = None,
                 templates: Sequence[str] | None = None, true_label: str | None = None,
                 discard_ratio: float = 0.0) -> None:
    """The checks of :func:`full_report`'s settings that can fail only late: run before any figure is
    computed (attention distances take minutes on many images), so that a wrong flag costs nothing. A
    ValueError naming what is wrong."""
    check_discard_ratio(discard_ratio)
    if _predicts(target, labels):
        prediction_inputs(target, labels, templates, true_label)


def full_report(target: AnalysisTarget, out: str | Path, images: tuple[torch.Tensor, list[str]] | None = None,
                image: tuple[torch.Tensor, str] | None = None, labels: Sequence[str] | None = None,
                templates: Sequence[str] | None = None, true_label: str | None = None, components: int = 28,
                head_fusion: str = "mean", discard_ratio: float = 0.0, images_source: str = "", top_k: int = 5,
                max_images: int | None = None, skipped_images: int | None = None, progress: bool = True) -> dict:
    """Every report that applies -> the figures, one JSON each, and ``report.json`` with all of them.

    ``images`` (for attention distances) default to 16 scenes of the shapes world (at most
    ``max_images``); ``image`` (for rollout and prediction) defaults to the first of ``images``.
    ``predict`` runs for CLIP when ``labels`` are given, and for a supervised ViT with a head.
    ``skipped_images`` (unreadable ones, counted by :func:`load_images`) goes into attention_distance.json.
    """
    check_report(target, labels, templates, true_label, discard_ratio)
    out = Path(out)
    # an earlier call's report.json goes first: an interrupted call into the same folder left it (model A's)
    # beside sections already rewritten for model B. Each section's JSON names its model.
    (out / "report.json").unlink(missing_ok=True)
    if images is None:
        images = synthetic_images(target, 16 if max_images is None else min(16, max_images))
        images_source = images_source or "synthetic shapes world (no --images given)"
    if image is None:
        image = (images[0][0], images[1][0])
    report: dict = {"model": target.describe(), "report_version": REPORT_VERSION}
    report["filters"] = filters_report(target, out, components)
    report["positions"] = positions_report(target, out)
    report["attention_distance"] = attention_distance_report(target, images[0], out, images_source,
                                                             skipped_images, progress)
    report["rollout"] = rollout_report(target, image[0], out, head_fusion, discard_ratio, image[1],
                                       labels=labels if target.kind == "vit" else None)
    if _predicts(target, labels):
        report["predict"] = predict_report(target, image[0], out, labels, templates, true_label, top_k=top_k,
                                           image_name=image[1])
    # the figures this call wrote, named by each section; not every PNG in OUT (an earlier run into the same
    # folder may have left e.g. predict.png, which this one did not make)
    report["figures"] = sorted(section["figure"] for section in report.values()
                               if isinstance(section, dict) and section.get("figure"))
    if "predict" not in report:  # the only section a call may not write: another model's panel stood beside this
        # report as if part of it (its PNG names no model); this model's own, from a call with --labels on this
        # image, is kept (by its weights: a model retrained at the same path kept the old weights' panel)
        try:
            earlier = json.loads((out / "predict.json").read_text(encoding="utf-8"))
            earlier = (earlier.get("model"), earlier.get("weights"), earlier.get("image"))  # (model: the path)
        except (OSError, ValueError, AttributeError):
            earlier = None
        if earlier is not None:  # by weights (any path to them); a panel that recorded none: by the model's path
            same = _same_weights(earlier[1], target)
            if not ((earlier[0] == target.source) if same is None else same) or earlier[2] != image[1]:
                for stale in ("predict.png", "predict.json"):
                    (out / stale).unlink(missing_ok=True)
    return _write(out, "report", report)


# Bumped when an analysis measures differently (the sections of a report.json from another version are not merged
# with this one's): 2, 2026-12-07, the first recorded (4dc0235 changed the rollout's discarded count before it)
REPORT_VERSION = 2


def update_report(out: str | Path, target: AnalysisTarget, section: str, numbers: dict) -> None:
    """A single action's section (``section`` of :data:`SECTIONS`) into an earlier `analyze all` report.json in
    ``out``: of this model (and these weights), the section replaced; of another, the report removed. It stayed,
    naming the earlier model and its numbers beside the figure just redrawn for this one."""
    path = Path(out) / "report.json"
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    # the same model by its description and weights, not its path (./runs/x/model is runs/x/model); a report
    # written before the weights were recorded is judged without them
    mine = {k: v for k, v in json_safe(target.describe()).items() if k != "source"}
    theirs = report.get("model") if isinstance(report, dict) else None
    theirs = {k: v for k, v in theirs.items() if k != "source"} if isinstance(theirs, dict) else None
    if theirs is not None:  # the weights by their digest, of whichever kind (none recorded: judged without them)
        same = _same_weights(theirs.pop("weights", None), target)
        mine.pop("weights")
        if same is False:
            theirs = None
    if theirs != mine or report.get("report_version") != REPORT_VERSION:
        # (another version's: its other sections measured as that version did, 4dc0235's rollout fix say, and
        # were kept beside this one's section without a mark)
        path.unlink(missing_ok=True)
        return
    report[section] = numbers
    report["figures"] = sorted(s["figure"] for s in report.values() if isinstance(s, dict) and s.get("figure"))
    _write(Path(out), "report", report)
