"""SigLIP's text tokenizer: a sentencepiece model, with the text canonicalised as Hugging Face's
``SiglipTokenizer`` does.

Hugging Face SigLIP folders ship it as ``spiece.model`` (read by ``SiglipTokenizer``, which needs the
``sentencepiece`` package). kizuna reads the same file, so an HF SigLIP checkpoint zero-shots,
retrieves and draws its prediction panel in kizuna with the ids it was trained on:

1. canonicalise: lower-case (``do_lower_case``), drop ASCII punctuation, collapse whitespace, strip.
   This follows HF, which differs from big_vision's ``_canonicalize`` on one character: big_vision
   first replaces "_" by a space, HF deletes it with the other punctuation, so "snow_leopard" is
   "snow leopard" there and "snowleopard" here (other ids);
2. encode ``"<unk>" + "▁" + text`` with sentencepiece and drop the pieces of ``<unk>``: the models are
   built without sentencepiece's dummy prefix, so this is how a text gets its leading word boundary
   (the "▁" is put before canonicalising, as HF does, so a leading space survives as "▁ ");
3. append EOS (``</s>``), cut to the context length keeping EOS last, pad with the pad token (``</s>``
   again) to the full context length: SigLIP's text tower pools the *last* position, so every text
   fills the context.

The model file travels inside the kizuna config (base64, as a trained BPE travels as its JSON), so a
checkpoint saved by kizuna keeps its tokenizer. Tested against ``transformers.SiglipTokenizer``.
A literal special token inside a text (``"</s>"`` typed by a user) is tokenised as plain text here,
where HF would split it out; kizuna's other tokenizers do the same.

There is no attention mask: the text tower attends to the padding, as in big_vision and in HF's
``SiglipModel`` given ``input_ids`` alone. transformers 5's ``SiglipTokenizer`` also returns an
``attention_mask``; passed on (``get_text_features(**tokenizer(...))``) it changes the features, so
compare with ``input_ids`` only.
"""
from __future__ import annotations

import base64
import json
import re
import string
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kizuna.extras import require

from .tokenizer import MAX_TRUNCATED_CHARS, _no_lone_surrogates, checked_context_length, checked_texts, clean_text

__all__ = ["SiglipTokenizer", "siglip_tokenizer_config", "write_hf_tokenizer"]

_PUNCTUATION = str.maketrans("", "", string.punctuation)
_WORD_BOUNDARY = "\u2581"  # sentencepiece's "▁"
_ROOM = "room for the end token"


def _sentencepiece():
    return require("sentencepiece", "SigLIP's tokenizer", "siglip", "pip install sentencepiece")


def _token(value, default: str) -> str:
    """A special token from tokenizer_config.json: a string, or an AddedToken dict with "content"."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) and value else default


def _config(model: bytes, context_length: int, lower: bool, eos: str, pad: str, unk: str) -> dict[str, Any]:
    return {"type": "sentencepiece", "context_length": int(context_length), "lower": bool(lower), "eos": eos,
            "pad": pad, "unk": unk, "model": base64.b64encode(model).decode("ascii")}


def _model_problem(model: bytes) -> str | None:
    """Why sentencepiece cannot parse ``model`` (None when it can, or when sentencepiece is not installed:
    the tokenizer then says to install it when it is first used)."""
    try:
        sentencepiece = _sentencepiece()
    except ImportError:
        return None
    try:
        sentencepiece.SentencePieceProcessor(model_proto=model)
    except Exception as e:  # sentencepiece raises RuntimeError (or OSError, by version) from its C++ parser
        return f"{type(e).__name__}: {str(e).strip()[:200]}"
    return None


def siglip_tokenizer_config(folder: str | Path, context_length: int) -> dict[str, Any] | None:
    """The kizuna tokenizer config of an HF SigLIP folder (None when it has no ``spiece.model``)."""
    from kizuna.models.checkpoint import CheckpointError

    folder = Path(folder)
    model_file = folder / "spiece.model"
    if not model_file.is_file():
        return None
    settings: dict = {}
    config_file = folder / "tokenizer_config.json"
    if config_file.is_file():
        try:
            settings = json.loads(config_file.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:  # the last: nested too deep
            raise CheckpointError(f"{config_file}: not readable JSON ({e})") from None
        if not isinstance(settings, dict):
            raise CheckpointError(f"{config_file}: expected a JSON object, got {type(settings).__name__}")
    model = model_file.read_bytes()
    problem = _model_problem(model)
    if problem:
        raise CheckpointError(f"{model_file}: not a sentencepiece model ({problem}); replace it with the "
                              "checkpoint's original spiece.model, or remove it to load the model without a tokenizer")
    return _config(model, context_length, settings.get("do_lower_case", True),
                   _token(settings.get("eos_token"), "</s>"), _token(settings.get("pad_token"), "</s>"),
                   _token(settings.get("unk_token"), "<unk>"))


def write_hf_tokenizer(cfg: dict[str, Any], folder: str | Path) -> None:
    """The inverse of :func:`siglip_tokenizer_config`: ``spiece.model`` + ``tokenizer_config.json`` in an HF
    SigLIP folder, from a kizuna sentencepiece tokenizer config."""
    from kizuna.models.checkpoint import atomic_write, atomic_write_text

    folder = Path(folder)
    settings = {"tokenizer_class": "SiglipTokenizer", "model_max_length": int(cfg.get("context_length", 64)),
                "do_lower_case": cfg.get("lower", True), "eos_token": cfg.get("eos", "</s>"),
                "pad_token": cfg.get("pad", "</s>"), "unk_token": cfg.get("unk", "<unk>")}
    atomic_write(folder / "spiece.model", lambda tmp: Path(tmp).write_bytes(base64.b64decode(cfg["model"])))
    atomic_write_text(folder / "tokenizer_config.json", json.dumps(settings, indent=2))


class SiglipTokenizer:
    """``tokenizer(texts) -> LongTensor [N, context_length]``: ``[ids..., EOS, PAD, PAD, ...]``."""

    def __init__(self, model_proto: bytes, context_length: int = 64, lower: bool = True, eos: str = "</s>",
                 pad: str = "</s>", unk: str = "<unk>"):
        context_length = checked_context_length(context_length, 1, _ROOM)
        sentencepiece = _sentencepiece()
        try:
            self.sp = sentencepiece.SentencePieceProcessor(model_proto=model_proto)
        except Exception as e:  # the C++ parser's error names no file; say what the bytes were meant to be
            raise ValueError(f"the tokenizer's 'model' is not a sentencepiece model ({type(e).__name__}: "
                             f"{str(e).strip()[:200]})") from None
        self._proto = model_proto
        self.context_length = int(context_length)
        self.lower, self.eos, self.pad, self.unk = lower, eos, pad, unk
        self.eot_token_id, self.pad_token_id = self.sp.piece_to_id(eos), self.sp.piece_to_id(pad)
        if self.sp.id_to_piece(self.eot_token_id) != eos or self.sp.id_to_piece(self.pad_token_id) != pad:
            raise ValueError(f"the sentencepiece model has no piece {eos!r} or {pad!r} for end and padding")
        self.vocab_size = self.sp.get_piece_size()
        self._unk_pieces = len(self.sp.encode(unk))

    def canonicalize(self, text: str) -> str:
        if self.lower:
            text = text.lower()
        return re.sub(r"\s+", " ", text.translate(_PUNCTUATION)).strip()

    def _beginning(self, text: str) -> str:
        """A very long text's beginning that gives the tokens the whole text starts with: its canonical form (the
        punctuation deleted, as encode does) cut at a space once it holds MAX_TRUNCATED_CHARS // 2 characters,
        each a token at most (pieces do not cross spaces). Cut by CLIP's cleaning, which keeps punctuation, a
        million dots before the words kept none of them."""
        canonical = self.canonicalize(text)
        if len(canonical) <= MAX_TRUNCATED_CHARS:
            return canonical
        cut = canonical.find(" ", MAX_TRUNCATED_CHARS // 2, MAX_TRUNCATED_CHARS)
        return canonical[:cut if cut > 0 else MAX_TRUNCATED_CHARS]

    def encode(self, text: str) -> list[int]:
        """Ids of one text, without EOS and without truncation."""
        # lone surrogates as U+FFFD (as __call__ has them): SentencePiece failed on one ("Unable to cast")
        text = _no_lone_surrogates(text)
        text = self.canonicalize(_WORD_BOUNDARY + text.replace(_WORD_BOUNDARY, " "))
        return self.sp.encode(self.unk + text)[self._unk_pieces:]

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [self.encode(t) for t in texts]

    def __call__(self, texts: str | Sequence[str], context_length: int | None = None,
                 on_overflow: str = "truncate") -> torch.LongTensor:
        ctx = self.context_length if context_length is None else checked_context_length(context_length, 1, _ROOM)
        texts = checked_texts(texts, on_overflow, bound=False)
        out = np.full((len(texts), ctx), self.pad_token_id, dtype=np.int64)
        for i, text in enumerate(texts):
            blank = not text.strip() and not clean_text(text)  # of the text as given (a million dots: not blank)
            if on_overflow == "truncate" and len(text) > MAX_TRUNCATED_CHARS:
                text = self._beginning(text)
            # Blank by both str.strip and clean_text: what training's caption filter (clean_text, in
            # kizuna.data.sources._with_text) keeps must never stop a run here. They differ: "\x85" strips to
            # nothing but ftfy cleans it to "…"; "&nbsp;" cleans to nothing, but is not refused either, as SigLIP
            # does not unescape html and tokenizes it as "nbsp" (HF's ids).
            if blank:
                raise ValueError(f"empty text at index {i}")
            ids = self.encode(text)
            if len(ids) + 1 > ctx and on_overflow == "error":
                raise ValueError(f"text at index {i} is {len(ids) + 1} tokens long (with the end token), over "
                                 f"the context length {ctx}: {text[:60]!r}")
            ids = ids[: ctx - 1] + [self.eot_token_id]
            out[i, : len(ids)] = ids
        return torch.from_numpy(out)

    def decode(self, ids: Sequence[int] | torch.Tensor, skip_special_tokens: bool = True) -> str:
        if isinstance(ids, torch.Tensor):
            if ids.dim() != 1:
                raise ValueError(f"decode takes one sequence (1-D), got shape {tuple(ids.shape)}")
            ids = ids.tolist()
        ids = [int(i) for i in ids]
        if skip_special_tokens and self.eot_token_id in ids:
            ids = ids[: ids.index(self.eot_token_id)]
        return self.sp.decode(ids)

    def to_config(self) -> dict[str, Any]:
        return _config(self._proto, self.context_length, self.lower, self.eos, self.pad, self.unk)

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> SiglipTokenizer:
        if "model" not in cfg:
            raise ValueError("sentencepiece tokenizer config lacks 'model' (the base64 spiece.model)")
        ctx = checked_context_length(cfg.get("context_length", 64), 1, _ROOM, "the tokenizer config's context_length")
        return cls(base64.b64decode(cfg["model"]), ctx, bool(cfg.get("lower", True)),
                   cfg.get("eos", "</s>"), cfg.get("pad", "</s>"), cfg.get("unk", "<unk>"))

    def __repr__(self) -> str:
        return f"SiglipTokenizer(vocab_size={self.vocab_size}, context_length={self.context_length})"
