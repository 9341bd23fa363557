"""Analytic FLOP counts (2 x multiply-accumulates of every matmul/conv), for `kizuna info` and MFU.

Element-wise work (softmax, LayerNorm, GELU) is left out, as in the usual MFU convention; the tests
check these counts against a hand count and against torch's FlopCounterMode.
"""
from __future__ import annotations

from .clip import ClipConfig
from .minilm import ENCODER_SHAPE as MINILM
from .text import TextConfig
from .vit import VisionConfig, grid_warning_silenced


def _block_flops(tokens: int, width: int, mlp_dim: int, rows: int | None = None) -> int:
    """One block over ``tokens`` tokens; ``rows``: only that many query rows computed (the pruned last
    block of a pooled tower, ``Block.forward_rows``: keys and values still for every token)."""
    T, D, R = tokens, width, tokens if rows is None else rows
    kv_q = 2 * T * D * 2 * D + 2 * R * D * D
    return kv_q + 2 * 2 * R * T * D + 2 * R * D * D + 2 * 2 * R * D * mlp_dim


def _transformer_flops(tokens: int, width: int, depth: int, mlp_dim: int, pruned: bool = False) -> int:
    if not depth:
        return 0
    last = _block_flops(tokens, width, mlp_dim, rows=1 if pruned else None)
    return (depth - 1) * _block_flops(tokens, width, mlp_dim) + last


def vision_flops(cfg: VisionConfig, image_size=None, pruned: bool = False) -> int:
    """FLOPs of one image. ``pruned``: as kizuna runs a class-token tower (last block for that token only);
    the default counts the full last block (the model's FLOPs, as other libraries run it)."""
    if image_size is not None:
        cfg = VisionConfig(**{**cfg.to_dict(), "image_size": image_size})
    gh, gw = cfg.grid
    n = gh * gw
    if cfg.stem != "patch":
        raise ValueError("analytic FLOPs are implemented for patch stems only; use measured_flops()")
    flops = 2 * n * (3 * cfg.patch_size**2) * cfg.width
    flops += _transformer_flops(n + cfg.num_prefix_tokens, cfg.width, cfg.depth, cfg.mlp_dim,
                                pruned=pruned and cfg.pool == "cls")
    if cfg.pool == "map":
        T, D = n + cfg.num_prefix_tokens, cfg.width
        flops += 2 * D * D + 2 * T * D * 2 * D + 2 * 2 * T * D + 2 * D * D + 2 * 2 * D * cfg.mlp_dim
    if cfg.num_classes:  # a classification head replaces the projection (forward_head), also where a CLIP
        flops += 2 * cfg.width * cfg.num_classes  # image tower kept its proj for fine-tuning
    elif cfg.output_dim:
        flops += 2 * cfg.width * cfg.output_dim
    return flops


def text_flops(cfg: TextConfig, context_length: int | None = None, pruned: bool = False) -> int:
    """FLOPs of one text of ``context_length`` positions; ``pruned``: last block for the pooled token only."""
    if cfg.kind == "minilm":
        # The MiniLM tower keeps the preset's sizes in its TextConfig but does not use them (counted, they gave
        # the preset's transformer, not the 384-wide, 6-layer encoder); its length and joint width are in the
        # ClipConfig (tokenizer, embed_dim): clip_flops reads them.
        raise ValueError("text_flops counts kizuna's text transformer; this text tower is kind 'minilm', whose "
                         "TextConfig sizes are not its own: use clip_flops(model.cfg), or "
                         "minilm_text_flops(context_length, embed_dim)")
    T = context_length or cfg.context_length
    flops = _transformer_flops(T, cfg.width, cfg.depth, cfg.mlp_dim, pruned=pruned)
    if cfg.output_dim:
        flops += 2 * cfg.width * cfg.output_dim
    return flops


def minilm_text_flops(context_length: int, embed_dim: int) -> int:
    """FLOPs of one text through the MiniLM tower (minilm.py): all-MiniLM-L6-v2's BERT encoder over
    ``context_length`` positions, every row (mean pooling reads them all, so nothing is pruned), then the
    projection to ``embed_dim``. The tower drops columns that are padding in every row of a batch; this counts
    the padded length, as ``text_flops`` counts the context length."""
    D = MINILM["hidden_size"]
    flops = _transformer_flops(context_length, D, MINILM["num_hidden_layers"], MINILM["intermediate_size"])
    return flops + 2 * D * embed_dim


def clip_text_flops(cfg: ClipConfig) -> int:
    """One text through a two-tower model's text tower, whichever kind it is, at its tokenizer's length: the
    rows a text is encoded as (a SigLIP tower of 64 positions behind a 16-token tokenizer ran 16, and was
    counted at 64: 4.5x)."""
    # a tokenizer's default length is 77; a checkpoint without a usable one ("unavailable") is counted at its
    # tower's (a 248-position tower was counted at 77)
    tok = cfg.tokenizer or {}
    length = tok.get("context_length", (cfg.text.context_length if tok.get("type") == "unavailable" else 77)
                     if tok else None)
    if cfg.text.kind == "minilm":  # its length is its tokenizer's (MiniLMTokenizer), its projection embed_dim wide
        return minilm_text_flops(int(length or 77), cfg.embed_dim)
    if not isinstance(length, int) or length <= 0:
        length = None
    return text_flops(cfg.text, min(length or cfg.text.context_length, cfg.text.context_length))


def clip_image_flops(cfg: ClipConfig) -> int:
    """One image through a two-tower model's image tower at the size its preprocessing makes (the tower's
    position embeddings are interpolated to it), which a config may set apart from ``vision.image_size``."""
    size = (cfg.preprocess or {}).get("image_size")
    if isinstance(size, (list, tuple)) and len(size) == 2:
        size = tuple(int(s) for s in size)
    elif not isinstance(size, int) or size <= 0:
        size = None
    with grid_warning_silenced():  # (the model's own config says it; here it was said again by `kizuna info`)
        try:
            return vision_flops(cfg.vision, size)
        except ValueError:  # a preprocessed size below one patch, which the model refuses to run: its own size
            return vision_flops(cfg.vision)


def clip_flops(cfg: ClipConfig) -> dict[str, int]:
    img, txt = clip_image_flops(cfg), clip_text_flops(cfg)
    return {"image": img, "text": txt, "total": img + txt}


def measured_flops(fn, *args) -> int:
    """FLOPs of one call as counted by torch's FlopCounterMode (matmuls, convs, attention). Attention runs
    on SDPA's math backend here: FlopCounterMode has no count for the CPU's fused kernel, which it would
    add as zero (ViT-mu-8's image tower came out 3% low under no_grad, the SigLIP pool's head missing)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        fn(*args)
    return counter.get_total_flops()
