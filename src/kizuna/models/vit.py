"""Vision Transformer (Dosovitskiy et al., "An Image is Worth 16x16 Words").

    z0 = [x_class; x_p^1 E; ...; x_p^N E] + E_pos
    z'_l = MSA(LN(z_{l-1})) + z_{l-1};   z_l = MLP(LN(z'_l)) + z'_l;   y = LN(z_L^0)

The patch embedding E is a linear projection of flattened patches, written as a strided conv.
CLIP's variant adds a LayerNorm before the blocks (``norm_pre``), drops the patch bias and
projects the pooled feature into the joint space (``output_dim``).
"""
from __future__ import annotations

import copy
import math
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .layers import (ACTIVATIONS, INTEL, AttentionPool, Transformer, autocast_off, building_on_meta,
                     check_optional_size, env_switch, hooked, linear, python_int, python_ints, watched,
                     weight_dtype)


@contextmanager
def grid_warning_silenced():
    """Without VisionConfig's warning that image_size is not a multiple of the patch: for configs built on the
    way to a model (a converter's, load_model's at another size), which the model's own config says again."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"image_size \d+x\d+ is not a multiple of ", UserWarning)
        yield


def _pair(x) -> tuple[int, int]:
    x = python_int(x)  # (a numpy int was indexed as a pair: "invalid index to scalar variable")
    return (x, x) if isinstance(x, int) else (int(x[0]), int(x[1]))


@dataclass
class VisionConfig:
    image_size: int | tuple[int, int] = 224
    patch_size: int = 16
    width: int = 768
    depth: int = 12
    heads: int = 12
    mlp_dim: int = 3072
    act: str = "gelu"
    eps: float = 1e-6
    class_token: bool = True
    pool: str = "cls"  # "cls" | "gap" (mean of patch tokens) | "max" (per-channel max) | "map" (attention pool)
    norm_pre: bool = False
    # timm's fc_norm: apply the final LayerNorm to the pooled feature instead of to every token. With
    # max pooling this matters: normalising each token first blows up near-constant background tokens.
    norm_after_pool: bool = False
    patch_bias: bool = True
    output_dim: int | None = None  # projection into the joint space (no bias), CLIP only
    num_classes: int = 0  # classification head (zero-initialised), supervised ViT only
    stem: str = "patch"  # "patch" | "resnet" (the paper's hybrid) | "conv" (conv+ReLU+max-pool stem, models/hybrid.py)
    stem_channels: list[int] = field(default_factory=lambda: [64, 128, 256])

    def __post_init__(self):
        if isinstance(self.image_size, list):
            self.image_size = tuple(self.image_size)
        python_ints(self, ("image_size", "patch_size", "width", "depth", "heads", "mlp_dim", "output_dim",
                           "num_classes"))
        self._check_sizes()
        if self.pool not in ("cls", "gap", "max", "map"):
            raise ValueError(f"vision pool must be 'cls', 'gap', 'max' or 'map', got {self.pool!r}")
        if self.pool == "cls" and not self.class_token:
            raise ValueError("pool='cls' needs class_token=True")
        h, w = _pair(self.image_size)
        stride = self.patch_size * self.stem_stride
        if h % stride or w % stride:
            if self.stem != "resnet":  # patches and the conv stem's max-pools round down, as the grid does
                what = "patch_size" if self.stem == "patch" else f"the {self.stem} stem's stride x patch_size ="
                warnings.warn(f"image_size {h}x{w} is not a multiple of {what} {stride}: the patch grid is "
                              f"{self.grid[0]}x{self.grid[1]} and the last {h % stride} pixel rows and {w % stride} "
                              "columns are never seen (as in timm and HF)", stacklevel=3)
            else:  # the ResNet stem's padded strided convolutions round up, the configured grid rounds down
                fh, fw = self.stem_map
                p = self.patch_size
                if (fh // p, fw // p) == self.grid:  # rounded up, then down by the patches: the same grid
                    warnings.warn(f"image_size {h}x{w} is not a multiple of the {self.stem} stem's stride x "
                                  f"patch_size = {stride}: the patch grid is {self.grid[0]}x{self.grid[1]} and the "
                                  f"last {fh % p} rows and {fw % p} columns of the stem's {fh}x{fw} feature map are "
                                  "never seen", stacklevel=3)
                else:
                    warnings.warn(f"image_size {h}x{w} is not a multiple of the {self.stem} stem's stride x "
                                  f"patch_size = {stride}: its feature map is larger than the "
                                  f"{self.grid[0]}x{self.grid[1]} grid of position embeddings, which are resized on "
                                  f"every forward pass; use a multiple of {stride}", stacklevel=3)

    def _check_sizes(self) -> None:
        """Sizes that would otherwise fail deep inside the model (a division by zero, a 0x0 grid) or build a
        model with no blocks that trains anyway."""
        size = self.image_size
        if not (isinstance(size, int) or (isinstance(size, tuple) and len(size) == 2
                                          and all(isinstance(s, int) for s in size))) or isinstance(size, bool):
            raise ValueError(f"vision image_size must be an int or two ints (height, width), got {size!r}")
        for name in ("patch_size", "width", "depth", "heads", "mlp_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:  # (depth=True built 1 block)
                raise ValueError(f"vision {name} must be a positive int, got {value!r}")
        if self.width % self.heads:
            raise ValueError(f"vision width {self.width} is not divisible by heads {self.heads}")
        check_optional_size("vision output_dim", self.output_dim)
        if self.act not in ACTIVATIONS:  # a KeyError deep in the block's constructor
            raise ValueError(f"vision act must be one of {', '.join(ACTIVATIONS)}, got {self.act!r}")
        check_optional_size("vision num_classes", self.num_classes)
        if self.stem not in ("patch", "resnet", "conv"):
            raise ValueError(f"vision stem must be 'patch', 'resnet' or 'conv', got {self.stem!r}")
        channels = self.stem_channels
        if self.stem != "patch" and not (isinstance(channels, (list, tuple)) and channels and all(
                isinstance(c, int) and not isinstance(c, bool) and c >= 1 for c in channels)):
            # [] was an IndexError in the stem (and a stride of 0.5), [0] a division by zero
            raise ValueError(f"vision stem_channels must be a non-empty list of positive ints (one per stage of the "
                             f"{self.stem} stem), got {channels!r}")
        if min(self.grid) < 1:
            raise ValueError(f"vision image_size {size} is smaller than one patch ({self.patch_size * self.stem_stride} "
                             "pixels with the stem's stride)")

    @property
    def stem_map(self) -> tuple[int, int]:
        """The feature map the stem gives at ``image_size`` (the image itself for patches): the ResNet stem's
        padded strided convolutions round up at each stage, the conv stem's max-pools down."""
        h, w = _pair(self.image_size)
        if self.stem == "resnet":
            for _ in self.stem_channels:  # each stage: a 3x3 convolution of stride 2, padding 1
                h, w = -(-h // 2), -(-w // 2)
        elif self.stem != "patch":
            h, w = h // self.stem_stride, w // self.stem_stride
        return h, w

    @property
    def grid(self) -> tuple[int, int]:
        h, w = _pair(self.image_size)
        stride = self.patch_size * (self.stem_stride if self.stem != "patch" else 1)
        return h // stride, w // stride

    @property
    def stem_stride(self) -> int:
        if self.stem == "resnet":
            return 2 ** len(self.stem_channels)
        if self.stem == "conv":
            return 2 ** (len(self.stem_channels) - 1)
        return 1

    @property
    def num_prefix_tokens(self) -> int:
        return 1 if self.class_token else 0

    def to_dict(self) -> dict:
        return asdict(self)


def interpolate_2d(x: torch.Tensor, size: tuple[int, int], mode: str, antialias: bool = False) -> torch.Tensor:
    """F.interpolate of [N, C, H, W] with ``align_corners=False`` where the mode takes it: torch refuses the option
    for "nearest", "nearest-exact" and "area" (resample_pos_embed(mode="nearest") raised)."""
    kwargs = {} if mode in ("nearest", "nearest-exact", "area") else {"align_corners": False}
    return F.interpolate(x, size=size, mode=mode, antialias=antialias, **kwargs)


def resample_pos_embed(
    pos_embed: torch.Tensor,
    new_grid: tuple[int, int],
    old_grid: tuple[int, int] | None = None,
    num_prefix_tokens: int = 1,
    mode: str = "bicubic",
    antialias: bool = False,
) -> torch.Tensor:
    """Resample learned position embeddings [1, prefix + h*w, D] (or [prefix + h*w, D]) to a new grid.

    The prefix (class) token is kept aside and the patch part is interpolated in 2-D, as the ViT paper
    does for fine-tuning at a higher resolution. The same size returns the input tensor itself.
    Defaults (bicubic, no antialias, align_corners=False) match HF's ``interpolate_pos_encoding``.
    """
    squeeze = pos_embed.dim() == 2
    pe = pos_embed.unsqueeze(0) if squeeze else pos_embed
    if pe.dim() != 3 or pe.shape[0] != 1:
        raise ValueError(f"position embeddings must be [1, tokens, dim] or [tokens, dim], got "
                         f"{list(pos_embed.shape)}")
    n_patch = pe.shape[1] - num_prefix_tokens
    if not 0 <= num_prefix_tokens <= pe.shape[1]:
        raise ValueError(f"num_prefix_tokens {num_prefix_tokens} is not within the table's {pe.shape[1]} tokens")
    if old_grid is None:
        side = int(math.isqrt(n_patch))
        if side * side != n_patch:
            raise ValueError(f"cannot infer a square grid from {n_patch} position embeddings; pass old_grid")
        old_grid = (side, side)
    old_grid, new_grid = _pair(old_grid), _pair(new_grid)
    if min(new_grid) < 1:
        raise ValueError(f"new grid {new_grid} must have at least one row and one column")
    if old_grid[0] * old_grid[1] != n_patch:  # (checked before the same size returns the input unchanged)
        raise ValueError(f"old grid {old_grid} does not hold {n_patch} position embeddings")
    if old_grid == new_grid:
        return pos_embed
    prefix, patch = pe[:, :num_prefix_tokens], pe[:, num_prefix_tokens:]
    dim = pe.shape[-1]
    orig_dtype = patch.dtype
    patch = patch.reshape(1, old_grid[0], old_grid[1], dim).permute(0, 3, 1, 2).float()
    patch = interpolate_2d(patch, new_grid, mode, antialias)
    patch = patch.permute(0, 2, 3, 1).reshape(1, new_grid[0] * new_grid[1], dim).to(orig_dtype)
    out = torch.cat([prefix, patch], dim=1)
    return out[0] if squeeze else out


def _patch_gemm_default() -> bool:
    """Whether CPU patch embeddings run as one GEMM (``patch_gemm``) rather than as the conv. Yes on Intel,
    where it was measured faster forward and backward (see ``PatchEmbed``). Not elsewhere: on a Zen 4 EPYC
    (section ``cpu_switches``, BENCHMARKS.md) it won at ViT-B/32 (1.15-1.39x fp32) but not at ViT-B/16
    (0.76-1.00x fp32) and lost at the CIFAR configs' sizes (0.75-0.88x); on an AVX2 EPYC it was mixed (fp32 0.89-1.16x,
    1.50x for the hybrid's 1 x 1 patch; docs/benchmarks/AVX2.md). ``KIZUNA_PATCH_GEMM=0/1`` overrides."""
    return env_switch("KIZUNA_PATCH_GEMM", INTEL)


PATCH_GEMM = _patch_gemm_default()


def patch_gemm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``F.conv2d(x, weight, bias, stride=P)`` for a [width, C, P, P] kernel, as a reshape and one GEMM
    (``layers.linear``: oneDNN or MKL as ``layers.GEMM`` says). Rows and columns past the last whole patch
    are dropped, as the conv drops them. Returns [B, width, H // P, W // P], a view of [B, tokens, width]."""
    p = weight.shape[-1]
    B, C, H, W = x.shape
    gh, gw = H // p, W // p
    if (gh * p, gw * p) != (H, W):
        x = x[:, :, : gh * p, : gw * p]
    patches = x.reshape(B, C, gh, p, gw, p).permute(0, 2, 4, 1, 3, 5).reshape(B, gh * gw, C * p * p)
    tokens = linear(patches, weight.reshape(weight.shape[0], -1), bias)
    return tokens.transpose(1, 2).reshape(B, weight.shape[0], gh, gw)


class PatchEmbed(nn.Module):
    """Linear projection of flattened P x P patches. The weight is a conv's (kernel = stride = P), as in every
    ViT checkpoint, but on the CPU it runs as a reshape and one GEMM (``patch_gemm``): the same numbers, and a
    much cheaper backward. On a 2-core Xeon, ViT-B/32's patch embedding at batch 32 took 83 ms forward and
    backward as a conv and 62 ms as a GEMM in fp32; under bf16 autocast 405 ms against 27 ms (oneDNN's bf16
    conv weight gradient is slow)."""

    def __init__(self, patch_size: int, in_chans: int, width: int, bias: bool):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, width, kernel_size=patch_size, stride=patch_size, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] -> [B, width, H // P, W // P]. Other devices, and CPUs where the GEMM form was not
        measured faster (``PATCH_GEMM``), keep the conv."""
        if x.device.type != "cpu" or not PATCH_GEMM or type(self.proj) is not nn.Conv2d or watched(self):
            return self.proj(x)  # also where hooks (pruning's too) or a swapped layer expect the conv to be called
        return patch_gemm(x, self.proj.weight, self.proj.bias)


class VisionTransformer(nn.Module):
    """A ViT (Dosovitskiy et al.) as configured by :class:`VisionConfig`: patch embedding (or a conv/ResNet stem),
    optional class token, pre-norm blocks, then pooling and a projection (a CLIP image tower) or a classifier head
    (``num_classes``). timm's API: ``forward_features``, ``forward_head(pre_logits=...)``, ``reset_classifier``,
    ``forward_intermediates``. Build one with :func:`kizuna.create_vit` or :func:`kizuna.create_model`."""

    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.cfg = cfg = copy.deepcopy(cfg)  # its own: a config shared by two models changed under the other
        D = cfg.width
        if cfg.stem == "patch":
            self.stem = None
            self.patch_embed = PatchEmbed(cfg.patch_size, 3, D, cfg.patch_bias)
        elif cfg.stem in ("resnet", "conv"):
            from .hybrid import ConvStem, ResNetStem

            self.stem = (ResNetStem if cfg.stem == "resnet" else ConvStem)(cfg.stem_channels)
            self.patch_embed = PatchEmbed(cfg.patch_size, cfg.stem_channels[-1], D, cfg.patch_bias)
        else:
            raise ValueError(f"unknown stem {cfg.stem!r}; choose 'patch', 'resnet' or 'conv'")
        gh, gw = cfg.grid
        self.cls_token = nn.Parameter(torch.zeros(1, 1, D)) if cfg.class_token else None
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.num_prefix_tokens + gh * gw, D))
        self.norm_pre = nn.LayerNorm(D, eps=cfg.eps) if cfg.norm_pre else nn.Identity()
        self.transformer = Transformer(D, cfg.depth, cfg.heads, cfg.mlp_dim, cfg.act, cfg.eps)
        self.norm = nn.LayerNorm(D, eps=cfg.eps)
        self.attn_pool = AttentionPool(D, cfg.heads, cfg.mlp_dim, cfg.act, cfg.eps) if cfg.pool == "map" else None
        self.proj = nn.Linear(D, cfg.output_dim, bias=False) if cfg.output_dim else None
        self.head = nn.Linear(D, cfg.num_classes) if cfg.num_classes else None
        # FLIP: fraction of patch tokens dropped at random while training (0 = off).
        self.patch_dropout = 0.0
        # With class-token pooling, forward() runs the last block for the class token only (exact: the
        # other tokens' last-block outputs are never read). Off only to measure what it saves.
        self.prune_last_block = True
        if not building_on_meta():
            self.init_weights()

    # ----- initialisation -------------------------------------------------------------------
    def init_weights(self):
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        w = self.patch_embed.proj.weight
        nn.init.trunc_normal_(w.view(w.shape[0], -1), std=math.sqrt(1.0 / w[0].numel()))
        nn.init.normal_(self.pos_embed, std=0.02)
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=0.02)
        if self.proj is not None:
            nn.init.normal_(self.proj.weight, std=self.cfg.width**-0.5)
        if self.head is not None:
            # The paper zero-initialises the classification head (also when fine-tuning).
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    def reset_classifier(self, num_classes: int):
        """Drop the head and attach a zero-initialised one for a new label set."""
        self.cfg.num_classes = num_classes
        self.head = nn.Linear(self.cfg.width, num_classes) if num_classes else None
        if self.head is not None:
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)
            self.head.to(device=self.pos_embed.device, dtype=self.pos_embed.dtype)

    def set_grad_checkpointing(self, enable: bool = True):
        self.transformer.grad_checkpointing = enable

    def no_weight_decay(self) -> set[str]:
        return {"pos_embed", "cls_token", "attn_pool.probe"}

    # ----- forward --------------------------------------------------------------------------
    def embed(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Image -> tokens with position embeddings (resampled if the input grid differs)."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"expected preprocessed images, a tensor [B, 3, H, W], got {type(x).__name__}; "
                            "make one with kizuna.get_preprocess(model)(image)[None]")
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected images of shape [B, 3, H, W], got {tuple(x.shape)}")
        if not x.dtype.is_floating_point:  # raw 0..255 pixels (pil_to_tensor) were encoded as they were
            raise ValueError(f"expected normalised float pixels, got {x.dtype} (raw pixel values?); "
                             "preprocess images with kizuna.get_preprocess(model)")
        # Pixels come as float32 from every transform; a bf16 model (``model.to(torch.bfloat16)``) takes them
        # in its own dtype. Under autocast the weights stay float32 and so do the pixels.
        first = self.stem if self.stem is not None else self.patch_embed
        images_hw = tuple(x.shape[-2:])

        def too_small():  # (failed inside the position embedding's interpolation, or in the conv: on AMD the
            # patches run as the conv, which refuses a kernel larger than its input)
            return ValueError(f"images of {images_hw[0]}x{images_hw[1]} pixels are smaller than one patch of this "
                              f"model (it takes {self.cfg.image_size} pixels); preprocess with "
                              "kizuna.get_preprocess(model)")

        if self.stem is None and min(images_hw) < self.cfg.patch_size:
            raise too_small()
        x = x.to(next(first.parameters()).dtype)
        if self.stem is not None:
            try:  # (a ResNet stem is padded, its map rounds up: a few pixels still make a patch; a conv stem's
                x = self.stem(x)  # unpadded convolutions refuse an input smaller than their kernel)
            except RuntimeError:
                if min(images_hw) < self.cfg.patch_size * self.cfg.stem_stride:
                    raise too_small() from None
                raise
            if min(x.shape[-2:]) < self.cfg.patch_size:
                raise too_small()
        x = self.patch_embed(x)
        grid = (x.shape[-2], x.shape[-1])
        if 0 in grid:
            raise too_small()
        x = x.flatten(2).transpose(1, 2)
        pos = resample_pos_embed(self.pos_embed, grid, self.cfg.grid, self.cfg.num_prefix_tokens)
        if self.cls_token is not None:
            # view first: at batch 1 the expand is a no-op, and the class token's gradient was then a slice of
            # the concatenation's, strided [T*D, D, 1]; DDP warned on every rank that it did not match its bucket
            # (two processes with one image each). The view's backward gives it its own, plain strides.
            x = torch.cat([self.cls_token.view(1, 1, -1).expand(x.shape[0], -1, -1), x], dim=1)
        # The residual stream takes the position embedding's dtype: float32 under autocast (the stem's bf16
        # output is promoted here, as the text tower's is by its embedding), bf16 in a bf16 model.
        x = x.to(pos.dtype) + pos
        if self.training and self.patch_dropout > 0:
            x = self._drop_patches(x)
        return self.norm_pre(x), grid

    def _drop_patches(self, x: torch.Tensor) -> torch.Tensor:
        p = self.cfg.num_prefix_tokens
        B, T, D = x.shape
        n = T - p
        keep = max(1, int(round(n * (1.0 - self.patch_dropout))))
        idx = torch.rand(B, n, device=x.device).argsort(dim=1)[:, :keep]
        patches = x[:, p:].gather(1, idx.unsqueeze(-1).expand(-1, -1, D))
        return torch.cat([x[:, :p], patches], dim=1)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens after the final LayerNorm (before it with ``norm_after_pool``), [B, prefix + N, D]."""
        x, _ = self.embed(x)
        x, _, _ = self.transformer(x)
        return x if self.cfg.norm_after_pool else self.norm(x)

    def pool(self, tokens: torch.Tensor) -> torch.Tensor:
        """``forward_features`` tokens -> one feature per image (LayerNormed last with ``norm_after_pool``)."""
        pooled = self._pool(tokens)
        return self.norm(pooled) if self.cfg.norm_after_pool else pooled

    def _pool(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.cfg.pool == "cls":
            return tokens[:, 0]
        if self.cfg.pool == "gap":
            return tokens[:, self.cfg.num_prefix_tokens :].mean(dim=1)
        if self.cfg.pool == "max":
            # A small object on a large background survives a max; a mean dilutes it by the area ratio.
            return tokens[:, self.cfg.num_prefix_tokens :].amax(dim=1)
        return self.attn_pool(tokens)

    def forward_head(self, tokens: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        pooled = self.pool(tokens)
        if pre_logits:
            return pooled
        if self.head is not None:
            # float32, also under autocast and in a bf16 model (it is tiny): bf16 logits tied exactly for 2% of
            # CIFAR-10 test images, and a tie went to the lower class (the trainer's bf16 evaluation 21.33%, a bf16
            # `vit eval` 21.00% of the same model)
            with autocast_off(pooled.device.type):
                if type(self.head) is nn.Linear and not watched(self.head):
                    return F.linear(pooled.float(), self.head.weight.float(), self.head.bias.float())
                # hooks (pruning's too), a quantized or adapted head: the head's own call, in its own dtype
                return self.head(pooled.to(weight_dtype(self.head))).float()
        return self.proj(pooled) if self.proj is not None else pooled

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the class token's row alone through the last block; not where hooks on the transformer or the final
        # norm expect every token (they saw [B, 1, D])
        if self.prune_last_block and self.cfg.pool == "cls" and not (hooked(self.transformer) or watched(self.norm)):
            x, _ = self.embed(x)
            rows = torch.zeros(x.shape[0], 1, dtype=torch.long, device=x.device)
            x, _, _ = self.transformer(x, rows=rows)  # [B, 1, D]: the class token after the last block
            return self.forward_head(x if self.cfg.norm_after_pool else self.norm(x))
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(
        self, x: torch.Tensor, return_attention: bool = True
    ) -> dict[str, object]:
        """Every block's tokens (and attention maps [B, heads, T, T]) for analysis."""
        x, grid = self.embed(x)
        x, tokens, attentions = self.transformer(x, return_tokens=True, return_attention=return_attention)
        if not self.cfg.norm_after_pool:
            x = self.norm(x)
        return {
            "tokens": tokens,
            "attentions": attentions,
            "features": x,
            "pooled": self.pool(x),
            "grid": grid,
            "num_prefix_tokens": self.cfg.num_prefix_tokens,
        }
