"""Convolutional stems for the ViT paper's hybrid: a small CNN whose feature map is embedded with patch size 1.

``ResNetStem`` (``stem="resnet"``, the paper's kind of stem at CIFAR scale, not its ResNet-50: basic blocks, no
weight standardisation): every stage is a residual block that halves the resolution, so a ``stem_channels`` list
of length s gives a stride of 2**s (the paper's R50 hybrid has stride 16). GroupNorm instead of
BatchNorm (as BiT, the paper's ResNet) so the stem behaves the same at any batch size and under
gradient accumulation.

``ConvStem`` (``stem="conv"``): plain 3x3 conv + ReLU layers with a 2x2 max-pool between them, so a
list of length s gives a stride of 2**(s-1). No normalisation. On the built-in shapes world this is
the stem that learns object shape within a CPU demo's budget under contrastive training (the ResNet
stem and the plain ViT stay near chance on shape for the first thousand steps; docs/RESULTS.md).
"""
from __future__ import annotations

import torch
from torch import nn

from .layers import watched


class GroupNorm32(nn.GroupNorm):
    """GroupNorm whose statistics are computed in its parameters' dtype (float32 when training under
    autocast). CUDA autocast runs group_norm in float32, CPU autocast in its input's dtype: the bf16 output
    of the convolution before it. Normalised in bf16, the stem cost the CIFAR-10 hybrid 14 points after
    1,500 steps (31.4% against 45.5%; docs/TRAINING.md). A bf16 model (bf16 parameters) normalises in bf16."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != self.weight.dtype:
            x = x.to(self.weight.dtype)
        return super().forward(x)


def _norm(c: int) -> nn.GroupNorm:
    """GroupNorm with up to 32 groups of at least 4 channels: the most groups that divide ``c`` (GroupNorm
    needs that), so any channel count builds (18 or 200 failed with ``min(32, c // 4)`` groups)."""
    most = max(1, min(32, c // 4))
    return GroupNorm32(next(g for g in range(most, 0, -1) if c % g == 0), c)


class ResidualStage(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False)
        self.norm1 = _norm(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.norm2 = _norm(cout)
        self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=2, bias=False), _norm(cout))
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.norm1(self.conv1(x)))
        h = self.norm2(self.conv2(h))
        return self.act(h + self.shortcut(x))


class ResNetStem(nn.Module):
    def __init__(self, channels: list[int]):
        super().__init__()
        c0 = channels[0]
        self.conv = nn.Sequential(nn.Conv2d(3, c0, 3, padding=1, bias=False), _norm(c0), nn.ReLU(inplace=True))
        stages, cin = [], c0
        for c in channels:
            stages.append(ResidualStage(cin, c))
            cin = c
        self.stages = nn.Sequential(*stages)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.conv(x))


class ConvStem(nn.Module):
    def __init__(self, channels: list[int]):
        super().__init__()
        layers, cin = [], 3
        for i, c in enumerate(channels):
            if i:
                layers.append(nn.MaxPool2d(2))
            layers += [nn.Conv2d(cin, c, 3, padding=1), nn.ReLU(inplace=True)]
            cin = c
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu" and not torch.is_grad_enabled() and not watched(self):
            # oneDNN's convolutions and max-pool run channels-last far faster on the CPU: encode_image 1.45x, a
            # zero-shot evaluation 20% (features within 2e-6). Inference only, so training stays bit for bit what
            # it was (its runs resume exactly, and recorded runs repeat); not where a hook sees the layers'
            # outputs, which it may .view(); and returned NCHW, as a caller of the stem expects it
            return self.layers(x.contiguous(memory_format=torch.channels_last)).contiguous()
        return self.layers(x)
