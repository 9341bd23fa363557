"""Transformer building blocks shared by the image and text towers.

A block is two lines, as in the ViT paper: ``x = x + attn(norm1(x))``, ``x = x + mlp(norm2(x))``.
Attention uses one fused qkv projection and ``F.scaled_dot_product_attention``; a plain path that
materialises the attention matrix exists for analysis (attention maps) and as a numerical reference.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class QuickGELU(nn.Module):
    """OpenAI CLIP's GELU approximation, x * sigmoid(1.702 x); its released weights were trained with it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


ACTIVATIONS = {
    "gelu": lambda: nn.GELU(),
    "quick_gelu": QuickGELU,
    "gelu_tanh": lambda: nn.GELU(approximate="tanh"),
}


def make_activation(name: str) -> nn.Module:
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}") from None


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden_dim: int, act: str = "gelu"):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = make_activation(act)
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.head_dim = dim // heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        # The plain path is the reference; tests switch it on to compare with SDPA.
        self.use_sdpa = True

    def forward(
        self, x: torch.Tensor, causal: bool = False, return_attention: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        if self.use_sdpa and not return_attention:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
            attn = None
        else:
            scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(self.head_dim))
            if causal:
                mask = torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1)
                scores = scores.masked_fill(mask, float("-inf"))
            attn = scores.softmax(dim=-1)
            out = attn @ v
        out = out.transpose(1, 2).reshape(B, T, C)
        return self.proj(out), attn


class Block(nn.Module):
    """Pre-LN Transformer block."""

    def __init__(self, dim: int, heads: int, mlp_dim: int, act: str = "gelu", eps: float = 1e-5):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, mlp_dim, act)

    def forward(
        self, x: torch.Tensor, causal: bool = False, return_attention: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        h, attn = self.attn(self.norm1(x), causal=causal, return_attention=return_attention)
        x = x + h
        x = x + self.mlp(self.norm2(x))
        return x, attn


class Transformer(nn.Module):
    """A stack of blocks with optional per-block gradient checkpointing and intermediates."""

    def __init__(self, dim: int, depth: int, heads: int, mlp_dim: int, act: str, eps: float):
        super().__init__()
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_dim, act, eps) for _ in range(depth))
        self.grad_checkpointing = False

    def forward(
        self,
        x: torch.Tensor,
        causal: bool = False,
        return_tokens: bool = False,
        return_attention: bool = False,
    ) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        tokens, attentions = [], []
        for block in self.blocks:
            if self.grad_checkpointing and self.training and torch.is_grad_enabled() and not return_attention:
                x, attn = torch.utils.checkpoint.checkpoint(block, x, causal, False, use_reentrant=False)
            else:
                x, attn = block(x, causal=causal, return_attention=return_attention)
            if return_tokens:
                tokens.append(x)
            if return_attention:
                attentions.append(attn)
        return x, tokens, attentions


class AttentionPool(nn.Module):
    """Multi-head attention pooling with a learned probe (SigLIP's "MAP" head)."""

    def __init__(self, dim: int, heads: int, mlp_dim: int, act: str = "gelu", eps: float = 1e-5):
        super().__init__()
        self.probe = nn.Parameter(torch.randn(1, 1, dim) * dim**-0.5)
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, mlp_dim, act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        hd = C // self.heads
        q = self.q(self.probe.expand(B, -1, -1)).view(B, 1, self.heads, hd).transpose(1, 2)
        k, v = self.kv(x).view(B, T, 2, self.heads, hd).permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, 1, C)
        out = self.proj(out)
        out = out + self.mlp(self.norm(out))
        return out[:, 0]
