"""Text Transformer (CLIP's text tower).

Token + learned position embeddings -> pre-LN blocks (causal for CLIP, bidirectional for SigLIP) ->
final LayerNorm -> the feature at the end-of-text token (CLIP) or the last position (SigLIP) ->
linear projection into the joint space.

With causal attention the feature at position p depends on tokens 0..p only, so the padding after
the last end-of-text token of a batch cannot change the pooled output. ``forward`` therefore cuts
the batch to that length before running the blocks (``trim_padding``): Flickr8k captions are about
15 tokens of CLIP's 77, so this is most of the text tower's cost. SigLIP's bidirectional tower
pools at the last position and is never trimmed. Likewise only the pooled token is read from the last
block, so that block runs for it alone (``prune_last_block``; keys and values still use every token).
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass

import torch
from torch import nn

from .layers import (ACTIVATIONS, Transformer, building_on_meta, capturing_graph, check_optional_size, hooked,
                     python_ints, watched)


@dataclass
class TextConfig:
    vocab_size: int = 49408
    context_length: int = 77
    width: int = 512
    depth: int = 12
    heads: int = 8
    mlp_dim: int = 2048
    act: str = "gelu"
    eps: float = 1e-5
    causal: bool = True
    pool: str = "eot"  # "eot" (first end-of-text token) | "argmax" (highest id, OpenAI) | "last"
    eot_token_id: int = 49407
    output_dim: int | None = 512
    proj_bias: bool = False
    kind: str = "transformer"  # "transformer" | "minilm" (pretrained sentence encoder, see minilm.py)

    def __post_init__(self):
        python_ints(self, ("vocab_size", "context_length", "width", "depth", "heads", "mlp_dim", "eot_token_id",
                           "output_dim"))
        if self.pool not in ("eot", "argmax", "last"):
            raise ValueError(f"text pool must be 'eot', 'argmax' or 'last', got {self.pool!r}")
        if self.kind not in ("transformer", "minilm"):
            raise ValueError(f"text kind must be 'transformer' or 'minilm', got {self.kind!r}")
        # As VisionConfig's: sizes that would fail deep inside the model (heads 0 divided by zero, mlp_dim -1 in
        # a Linear) or build a model that runs anyway (no blocks, no positions, an empty vocabulary).
        for name in ("vocab_size", "context_length", "width", "depth", "heads", "mlp_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"text {name} must be a positive int, got {value!r}")
        if self.width % self.heads:
            raise ValueError(f"text width {self.width} is not divisible by heads {self.heads}")
        check_optional_size("text output_dim", self.output_dim)
        if self.act not in ACTIVATIONS:  # a KeyError deep in the block's constructor
            raise ValueError(f"text act must be one of {', '.join(ACTIVATIONS)}, got {self.act!r}")

    def to_dict(self) -> dict:
        return asdict(self)


def widen_token_ids(tokens):
    """Token ids stored in a narrower integer type (uint16 holds CLIP's 49,408 ids) as int64: the range check
    and nn.Embedding take int32 and int64 only, and failed inside torch on the others. Anything else is
    returned as it came, for the tower's checks to name."""
    if isinstance(tokens, torch.Tensor) and tokens.dtype in _NARROW_INTEGERS:
        return tokens.long()
    return tokens


_NARROW_INTEGERS = {torch.uint8, torch.int8, torch.int16, torch.uint16, torch.uint32, torch.uint64}


class TextTransformer(nn.Module):
    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.cfg = cfg = copy.deepcopy(cfg)  # its own: a config shared by two models changed under the other
        D = cfg.width
        meta = building_on_meta()
        # nn.Embedding draws its own init unless given a weight (init_weights draws it again off meta).
        self.token_embed = nn.Embedding(cfg.vocab_size, D, _weight=torch.empty(cfg.vocab_size, D) if meta else None)
        self.pos_embed = nn.Parameter(torch.zeros(cfg.context_length, D))
        self.transformer = Transformer(D, cfg.depth, cfg.heads, cfg.mlp_dim, cfg.act, cfg.eps)
        self.norm = nn.LayerNorm(D, eps=cfg.eps)
        self.proj = nn.Linear(D, cfg.output_dim, bias=cfg.proj_bias) if cfg.output_dim else None
        # Exact for causal towers (see the module docstring); off only to measure what it saves.
        self.trim_padding = True
        # The last block runs for the pooled token only (exact: no other row of it is read); same switch.
        self.prune_last_block = True
        if not meta:  # see building_on_meta
            self.init_weights()

    def init_weights(self):
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.normal_(self.token_embed.weight, std=0.02)
        nn.init.normal_(self.pos_embed, std=0.01)
        if self.proj is not None:
            nn.init.normal_(self.proj.weight, std=self.cfg.width**-0.5)

    def set_grad_checkpointing(self, enable: bool = True):
        self.transformer.grad_checkpointing = enable

    def no_weight_decay(self) -> set[str]:
        return {"pos_embed"}

    def check_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """``tokens`` checked, as int64 where they came in a narrower integer type (:func:`widen_token_ids`)."""
        tokens = widen_token_ids(tokens)
        if not isinstance(tokens, torch.Tensor):
            raise TypeError(f"expected token ids, a tensor [B, T], got {type(tokens).__name__}; tokenize the text "
                            "first: kizuna.get_tokenizer(model)(texts)")
        if tokens.dim() != 2:
            raise ValueError(f"expected token ids of shape [B, T], got {tuple(tokens.shape)}")
        if tokens.dtype.is_floating_point or tokens.dtype.is_complex or tokens.dtype == torch.bool:
            raise ValueError(f"expected integer token ids, got {tokens.dtype}; tokenize the text first "
                             "(kizuna.get_tokenizer / the model's tokenizer)")
        if tokens.shape[1] == 0:  # failed in argmax pooling ("Expected reduction dim 1 to have non-zero size")
            raise ValueError("expected token ids of shape [B, T] with T >= 1, got T = 0; tokenize the text with the "
                             "model's tokenizer, which gives start and end tokens")
        if tokens.shape[1] > self.cfg.context_length:
            raise ValueError(
                f"token sequence of length {tokens.shape[1]} exceeds the model's context length "
                f"{self.cfg.context_length}; tokenize with context_length={self.cfg.context_length}"
            )
        # Out-of-range ids would fail deep inside nn.Embedding ("index out of range in self"). One reduction
        # and one read-back. Compiled, a read-back would break the graph: a traced assertion instead on the CPU,
        # where Inductor's embedding kernel otherwise threw a C++ exception that aborted the process (a notebook's
        # kernel died); on a GPU the embedding's own device assertion is no worse than one of ours.
        if capturing_graph():  # a read-back would be frozen into a trace as the example's value
            if tokens.device.type == "cpu":
                torch._assert_async(((tokens >= 0) & (tokens < self.cfg.vocab_size)).all(),
                                    f"a token id is outside the model's vocabulary (0..{self.cfg.vocab_size - 1}); "
                                    "tokenize with the model's own tokenizer")
            return tokens
        if tokens.numel() and not tokens.is_meta:  # meta: no values
            lo, hi = torch.stack(torch.aminmax(tokens)).tolist()
            if lo < 0 or hi >= self.cfg.vocab_size:
                raise ValueError(
                    f"token id {lo if lo < 0 else hi} is outside the model's vocabulary (0..{self.cfg.vocab_size - 1}); "
                    "tokenize with the model's own tokenizer (a different vocabulary gives different ids)"
                )
        return tokens

    def pool_positions(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.cfg.pool == "argmax":
            return tokens.argmax(dim=-1)
        if self.cfg.pool == "last":
            return torch.full((tokens.shape[0],), tokens.shape[1] - 1, device=tokens.device, dtype=torch.long)
        is_eot = tokens == self.cfg.eot_token_id
        # A sequence without an end-of-text token (truncated by hand) pools at its last position.
        return torch.where(is_eot.any(dim=-1), is_eot.int().argmax(dim=-1), tokens.shape[1] - 1)

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token + position embeddings of ``tokens`` already checked by :meth:`check_tokens` (the callers do)."""
        return self.token_embed(tokens) + self.pos_embed[: tokens.shape[1]]

    def forward_features(self, tokens: torch.Tensor) -> torch.Tensor:
        tokens = self.check_tokens(tokens)
        return self._features(tokens)

    def _features(self, tokens: torch.Tensor) -> torch.Tensor:
        x, _, _ = self.transformer(self.embed(tokens), causal=self.cfg.causal)
        return self.norm(x)

    def positions_run(self, tokens: torch.Tensor, positions: torch.Tensor | None = None) -> int:
        """How many of the batch's positions ``forward`` runs: up to the last pooled position when the
        padding trim applies (causal tower, pooled at EOT/argmax), else all of them. Not under
        torch.compile: the trimmed length depends on the data, so a graph would be recompiled (or broken)
        for every batch; a compiled tower runs the whole, static length. Nor under torch.jit.trace, which froze
        the example's length in (a longer caption failed with an index out of bounds)."""
        if capturing_graph() or tokens.is_meta:  # meta (shape inference): no values to trim by
            return tokens.shape[1]
        if not (self.trim_padding and self.cfg.causal and self.cfg.pool != "last" and len(tokens)):
            return tokens.shape[1]
        positions = self.pool_positions(tokens) if positions is None else positions
        return int(positions.max()) + 1

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        tokens = self.check_tokens(tokens)
        positions = self.pool_positions(tokens)
        tokens = tokens[:, : self.positions_run(tokens, positions)]
        # the pooled row alone through the last block; not where hooks on the transformer or the final norm
        # expect every position (they saw [B, 1, D])
        if self.prune_last_block and not (hooked(self.transformer) or watched(self.norm)):
            x, _, _ = self.transformer(self.embed(tokens), causal=self.cfg.causal, rows=positions.unsqueeze(1))
            pooled = self.norm(x[:, 0])
        else:
            x = self._features(tokens)  # checked above
            pooled = x[torch.arange(x.shape[0], device=x.device), positions]
        return self.proj(pooled) if self.proj is not None else pooled
