"""Two-tower image-text model (CLIP, Radford et al.; SigLIP, Zhai et al.).

image -> ViT -> projection \
                             > L2-normalise -> logits = exp(t) * I T^T (+ b for SigLIP)
text  -> Transformer -> projection /

The config carries the preprocessing and the tokenizer so a saved model reloads with exactly the
inputs it was trained on (no silent QuickGELU/GELU or mean/std mismatches).
"""
from __future__ import annotations

import copy
import functools
import math
import numbers
from dataclasses import asdict, dataclass, field, replace

import torch
from torch import nn

from .layers import unit_rows, weight_dtype
from .losses import _logits, clip_loss, siglip_loss
from .text import TextConfig, TextTransformer
from .vit import VisionConfig, VisionTransformer

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
LN_FLOAT32_MAX = math.log(torch.finfo(torch.float32).max)  # 88.72: exp() of more is inf in float32
BPE_TOKENIZERS = ("clip_bpe", "openai", "trained_bpe")  # the CLIP-style BPEs (kizuna.data.tokenizer)


@functools.lru_cache(maxsize=4)
def _trained_bpe_ids(tokenizer_json: str) -> tuple[int, int] | None:
    """(vocabulary size, end-of-text id) of a trained_bpe tokenizer; None where it cannot be built (get_tokenizer
    says why). Cached: a config is built again at every load and override, and a 49k vocabulary takes 0.2 s."""
    from kizuna.data.tokenizer import tokenizer_from_config

    try:
        tok = tokenizer_from_config({"type": "trained_bpe", "tokenizer_json": tokenizer_json})
    except ValueError:
        return None
    return tok.vocab_size, tok.eot_token_id


@dataclass
class ClipConfig:
    embed_dim: int = 512
    vision: VisionConfig = field(default_factory=VisionConfig)
    text: TextConfig = field(default_factory=TextConfig)
    loss: str = "clip"  # "clip" | "siglip"
    init_logit_scale: float = math.log(1 / 0.07)
    init_logit_bias: float | None = None  # SigLIP: -10
    max_logit_scale: float | None = math.log(100)  # CLIP clamps exp(t) at 100
    preprocess: dict = field(default_factory=dict)
    tokenizer: dict | None = None  # None: OpenAI's BPE at the text tower's context length
    name: str = ""

    def __post_init__(self):
        if isinstance(self.vision, dict):
            self.vision = VisionConfig(**self.vision)
        if isinstance(self.text, dict):
            self.text = TextConfig(**self.text)
        if self.loss not in ("clip", "siglip"):
            raise ValueError(f"loss must be 'clip' or 'siglip', got {self.loss!r}")
        # a NaN max_logit_scale made every probability NaN (`kizuna zeroshot` printed "cat nan%"), in silence
        for name, optional in (("init_logit_scale", False), ("init_logit_bias", True), ("max_logit_scale", True)):
            value = getattr(self, name)
            if not ((value is None and optional) or (isinstance(value, numbers.Real) and not isinstance(value, bool)
                                                     and math.isfinite(value))):
                raise ValueError(f"{name} must be a finite number{' or None' if optional else ''}, got {value!r}")
        # exp(t) past float32's largest number (t > 88.72) is inf: the first loss was NaN, blamed on the learning rate
        start = min(self.init_logit_scale, math.inf if self.max_logit_scale is None else self.max_logit_scale)
        if start > LN_FLOAT32_MAX:
            raise ValueError(f"init_logit_scale {self.init_logit_scale:g}: its exp() is infinite in float32 (ln of the "
                             f"largest float32 is {LN_FLOAT32_MAX:.2f}); CLIP starts at ln(1/0.07) = 2.66, SigLIP at "
                             "ln(10) = 2.30")
        if self.loss == "siglip" and self.init_logit_bias is None:
            # the sigmoid loss adds the learned bias b to every logit; without the parameter it cannot train
            raise ValueError("loss='siglip' needs a logit bias: set init_logit_bias (SigLIP starts at -10, with "
                             "init_logit_scale=log(10) and max_logit_scale=None)")
        if not isinstance(self.embed_dim, int) or isinstance(self.embed_dim, bool) or self.embed_dim < 1:
            raise ValueError(f"embed_dim must be a positive int, got {self.embed_dim!r}")
        # Both towers must land in the same embed_dim-wide joint space (a mismatch would otherwise be a
        # shape error deep inside the first matmul, or a silently narrower space than configured).
        vision_dim = self.vision.output_dim or self.vision.width
        text_dim = self.embed_dim if self.text.kind == "minilm" else (self.text.output_dim or self.text.width)
        if not vision_dim == text_dim == self.embed_dim:
            raise ValueError(
                f"embed_dim {self.embed_dim} disagrees with the towers' outputs (vision.output_dim -> {vision_dim}, "
                f"text.output_dim -> {text_dim}); set vision.output_dim and text.output_dim to embed_dim"
            )
        if self.tokenizer is None:  # OpenAI's BPE, as long as the tower (a fixed 77 did not fit a shorter one)
            self.tokenizer = {"type": "clip_bpe", "context_length": self.text.context_length}
        if not self.preprocess:
            size = self.vision.image_size
            self.preprocess = {
                "image_size": size if isinstance(size, int) else list(size),
                "mean": list(OPENAI_MEAN),
                "std": list(OPENAI_STD),
                "interpolation": "bicubic",
                "resize_mode": "shortest",
            }

    def _bpe_tokenizer(self) -> dict | None:
        tok = self.tokenizer
        ok = self.text.kind != "minilm" and isinstance(tok, dict) and tok.get("type") in BPE_TOKENIZERS
        return tok if ok else None

    def trained_bpe_ids(self) -> tuple[int, int] | None:
        """(vocabulary size, end-of-text id) of a trained BPE tokenizer; None for any other."""
        tok = self._bpe_tokenizer() or {}
        json_text = tok.get("tokenizer_json")
        return _trained_bpe_ids(json_text) if tok.get("type") == "trained_bpe" and isinstance(json_text, str) else None

    def pooled_eot_mismatch(self) -> int | None:
        """The trained BPE's end-of-text id where the text tower pools (pool='eot') at another id, one that
        tokenizer never emits (text features taken at the padding); None where they agree or there is no trained
        BPE."""
        ids = self.trained_bpe_ids()
        return ids[1] if ids and self.text.pool == "eot" and self.text.eot_token_id != ids[1] else None

    def check_tokenizer(self, tokenizer_to_come: bool = False) -> None:
        """Fit a new model's text tower to its BPE tokenizer, where a config is made (clip_config, the trainer's
        model_config), not in the constructor: a saved model loads as it was saved, and towers fed ids directly
        (tests at a tiny context) keep the default tokenizer they never use.

        A tokenizer longer than the tower, or with more ids than it embeds, is refused (every encode_text would
        fail). A trained BPE's end-of-text id becomes the tower's where the tower kept the default (OpenAI's 49407,
        which that tokenizer never emits: the tower pooled at the padding; only `kizuna train` set it), and
        another one where the tower pools at the EOT is refused."""
        tok, text = self._bpe_tokenizer() or {}, self.text
        length = tok.get("context_length", 77)
        if tok and isinstance(length, int) and length > text.context_length:
            raise ValueError(f"the tokenizer's context_length {length} is longer than the text tower's "
                             f"{text.context_length} (text.context_length): every encode_text would fail; give "
                             "them the same length")
        ids = self.trained_bpe_ids()
        if ids is None:
            # OpenAI's BPE: a tower with a vocabulary of its own is fed ids directly (left alone); one that embeds
            # OpenAI's 49,408 ids and pools at another end-of-text id never finds it (49406, the start of text,
            # gave every text the same feature; a million pooled at the padding), and trained that way
            openai_eot = TextConfig.eot_token_id  # (``tokenizer_to_come``: a BPE is to be trained, with its own)
            if (not tokenizer_to_come and tok.get("type") in ("clip_bpe", "openai")
                    and text.vocab_size == openai_eot + 1 and text.pool == "eot" and text.eot_token_id != openai_eot):
                raise ValueError(f"text.eot_token_id {text.eot_token_id} is not OpenAI's BPE's end-of-text id "
                                 f"{openai_eot}, where the text tower pools (pool='eot'); leave it out or set "
                                 f"{openai_eot}")
            return
        vocab, eot = ids
        if vocab > text.vocab_size:
            raise ValueError(f"the tokenizer has {vocab} ids but the text tower embeds {text.vocab_size}: give "
                             f"text.vocab_size >= {vocab}")
        if text.eot_token_id == TextConfig.eot_token_id != eot:
            self.text = replace(text, eot_token_id=eot)
        elif self.pooled_eot_mismatch() is not None:
            raise ValueError(f"text.eot_token_id {text.eot_token_id} is not the tokenizer's end-of-text id {eot}, "
                             f"where the text tower pools (pool='eot'); leave it out or set {eot}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ClipConfig":
        return cls(**copy.deepcopy(d))


def _unit(x: torch.Tensor) -> torch.Tensor:
    """L2-normalised in float32, also under autocast: the loss computes its logits in float32 (losses._logits),
    and features normalised in bf16 (as CPU autocast leaves them) kept most of the error that avoids: norms
    off by up to 0.003, logits off by up to 0.17 at scale 100 against 0.22 all in bf16. Overflow-safe
    (:func:`~kizuna.models.layers.unit_rows`)."""
    return unit_rows(x)


class ClipModel(nn.Module):
    """An image tower (``visual``, a :class:`~kizuna.models.vit.VisionTransformer`) and a text tower (``text``) whose
    outputs share one embedding space, with a learned logit scale (and, for SigLIP, a bias). ``forward(images,
    tokens)`` returns unit-norm ``image_features`` / ``text_features`` and ``logit_scale`` / ``logit_bias``;
    ``encode_image`` / ``encode_text`` give one tower's features. Build one with :func:`kizuna.create_model`."""

    def __init__(self, cfg: ClipConfig):
        super().__init__()
        # the model's own copy: a config shared by two models changed under the other one (reset_classifier on
        # one made the other's saved config a head it does not have); the towers' configs are the same objects
        # as this one's parts, so a change to either is seen by both
        self.cfg = cfg = copy.deepcopy(cfg)
        self.visual = VisionTransformer(cfg.vision)
        cfg.vision = self.visual.cfg
        if cfg.text.kind == "minilm":
            from .minilm import MiniLMTextTower

            self.text = MiniLMTextTower(cfg.embed_dim)
        else:
            self.text = TextTransformer(cfg.text)
            cfg.text = self.text.cfg
        self.logit_scale = nn.Parameter(torch.tensor(float(cfg.init_logit_scale)))
        self.logit_bias = (
            nn.Parameter(torch.tensor(float(cfg.init_logit_bias))) if cfg.init_logit_bias is not None else None
        )
        eot = cfg.pooled_eot_mismatch()
        if eot is not None:  # a config made by hand (ClipConfig(...)) skips check_tokenizer; a saved model keeps
            import warnings  # its pooling

            warnings.warn(f"the text tower pools at token id {cfg.text.eot_token_id}, which its trained BPE tokenizer "
                          f"never emits (its end-of-text id is {eot}): text features are taken at the padding. For "
                          "a new model, make the config with kizuna.clip_config / create_model, or call "
                          f"cfg.check_tokenizer() (they set text.eot_token_id={eot})", UserWarning, stacklevel=2)

    # ----- the familiar API -------------------------------------------------------------------
    # normalize=True gives float32 unit vectors whatever the model's dtype: normalised in bf16, `kizuna embed`
    # stored rows with norms from 0.996 to 1.004, and zero-shot logits at scale 100 were off by up to 0.36
    def encode_image(self, images: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """Image features [N, embed_dim] from preprocessed pixels [N, 3, H, W]; unit-norm rows with ``normalize``."""
        x = self.visual(images)
        return _unit(x) if normalize else x

    def encode_text(self, tokens: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """Text features [N, embed_dim] from token ids [N, context_length] (the model's tokenizer:
        :func:`kizuna.get_tokenizer`); unit-norm rows with ``normalize``."""
        x = self.text(tokens)
        return _unit(x) if normalize else x

    def scale(self) -> torch.Tensor:
        """exp(t), with t clamped at max_logit_scale (ln 100 for CLIP)."""
        t = self.logit_scale
        if self.cfg.max_logit_scale is not None:
            t = t.clamp(max=self.cfg.max_logit_scale)
        return t.exp()

    def bias(self) -> torch.Tensor | float:
        return self.logit_bias if self.logit_bias is not None else 0.0

    def forward(
        self, images: torch.Tensor | None = None, tokens: torch.Tensor | None = None,
        text_embeddings: torch.Tensor | None = None,
    ) -> dict:
        """Normalised features (float32) and the logit scale/bias. ``text_embeddings`` replaces ``tokens`` when a
        locked MiniLM text tower's outputs are cached (``model.text.sentence_embeddings(tokens)``: only the
        projection runs)."""
        # The text tower goes first: its token checks and padding trim read values back (a GPU waits for its
        # queue), which after the image tower meant waiting for all of it, then idling while the text launched.
        # Only a training MiniLM tower's dropout draws random numbers there (it then draws before patch dropout).
        text = None
        if tokens is not None:
            text = _unit(self.encode_text(tokens))
        elif text_embeddings is not None:  # in the projection's dtype, as pixels take the image tower's (a float32
            # cache into a bf16 model failed inside F.linear: "expected m1 and m2 to have the same dtype")
            # Only the MiniLM tower has an output before its projection; kizuna's own tower's one per-text output is
            # encode_text's, already projected: projected again, its features were unrelated (cosine -0.02 with the
            # tokens' on ViT-S-32, whose text width equals its embedding width, so nothing failed).
            if not hasattr(self.text, "sentence_embeddings"):
                raise ValueError("text_embeddings are a MiniLM text tower's sentence embeddings (before its "
                                 "projection); this model's text tower has no such output: pass tokens (encode_text's "
                                 "features are already projected: compare them with encode_image's directly)")
            if not (isinstance(text_embeddings, torch.Tensor) and text_embeddings.is_floating_point()):
                raise TypeError("text_embeddings must be a float tensor [N, width] of the text tower's outputs, got "
                                f"{getattr(text_embeddings, 'dtype', type(text_embeddings).__name__)}")
            proj = self.text.proj
            text = _unit(text_embeddings if proj is None else proj(text_embeddings.to(weight_dtype(proj))))
        out = {"logit_scale": self.scale(), "logit_bias": self.logit_bias}
        if images is not None:
            out["image_features"] = _unit(self.encode_image(images))
        if text is not None:
            out["text_features"] = text
        return out

    def logits(self, images: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits_per_image [Ni, Nt], logits_per_text [Nt, Ni])."""
        out = self(images, tokens)
        # float32 under a caller's autocast too (they came out bf16), as the loss computes them
        logits_per_image = _logits(out["image_features"], out["text_features"], out["logit_scale"]) + self.bias()
        return logits_per_image, logits_per_image.T

    def loss(self, out: dict) -> torch.Tensor:
        img, txt = out["image_features"], out["text_features"]
        if self.cfg.loss == "siglip":
            return siglip_loss(img, txt, out["logit_scale"], out["logit_bias"])
        return clip_loss(img, txt, out["logit_scale"])

    # ----- training helpers -------------------------------------------------------------------
    def set_grad_checkpointing(self, enable: bool = True):
        self.visual.set_grad_checkpointing(enable)
        self.text.set_grad_checkpointing(enable)

    def no_weight_decay(self) -> set[str]:
        names = {"logit_scale", "logit_bias"}
        names |= {f"visual.{n}" for n in self.visual.no_weight_decay()}
        names |= {f"text.{n}" for n in self.text.no_weight_decay()}
        return names

    @property
    def image_size(self) -> tuple[int, int]:
        s = self.cfg.vision.image_size
        return (s, s) if isinstance(s, int) else tuple(s)
