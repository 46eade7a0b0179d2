"""DenseNet-BC for CIFAR (Huang et al. 2017): three dense blocks of (depth − 4)/6 bottleneck layers
(BN → act → conv1×1 (4k) → BN → act → conv3×3 (k)), transitions BN → act → conv1×1 (×compression)
→ 2×2 average pool, a 3×3 stem of 2k channels, head BN → act → global average pool → FC.

DenseNet-BC-100 (k = 12): 769,162 parameters for 10 classes (the paper's 0.8M).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from src.models.activations import ActivationFactory, as_factory


class DenseLayer(nn.Module):
    def __init__(self, in_planes: int, growth_rate: int, act: ActivationFactory, dropout: float):
        super().__init__()
        self.body = nn.Sequential(
            nn.BatchNorm2d(in_planes),
            act(),
            nn.Conv2d(in_planes, 4 * growth_rate, 1, bias=False),
            nn.BatchNorm2d(4 * growth_rate),
            act(),
            nn.Conv2d(4 * growth_rate, growth_rate, 3, 1, 1, bias=False),
            nn.Dropout(dropout) if dropout > 0 else nn.Identity(),
        )

    def forward(self, x):
        return torch.cat((x, self.body(x)), dim=1)


class Transition(nn.Sequential):
    def __init__(self, in_planes: int, out_planes: int, act: ActivationFactory):
        super().__init__(
            nn.BatchNorm2d(in_planes),
            act(),
            nn.Conv2d(in_planes, out_planes, 1, bias=False),
            nn.AvgPool2d(2),
        )


class DenseNetBC(nn.Module):
    """``depth`` = 6n+4 (100, 190, 250; 40 for a small one), ``growth_rate`` k, ``compression``
    θ of the transitions, ``dropout`` after each 3×3 convolution (the paper: 0.2 without
    augmentation)."""

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 10,
        act_layer: str | ActivationFactory | None = "relu",
        depth: int = 100,
        growth_rate: int = 12,
        compression: float = 0.5,
        dropout: float = 0.0,
    ):
        super().__init__()
        if (depth - 4) % 6 or depth < 10:
            raise ValueError(f"DenseNetBC depth must be 6n+4 (40, 100, 190, ...), got {depth}")
        act = as_factory(act_layer)
        n = (depth - 4) // 6
        planes = 2 * growth_rate
        layers: list[nn.Module] = [nn.Conv2d(in_channels, planes, 3, 1, 1, bias=False)]
        for stage in range(3):
            for _ in range(n):
                layers.append(DenseLayer(planes, growth_rate, act, dropout))
                planes += growth_rate
            if stage < 2:
                out = int(math.floor(planes * compression))
                layers.append(Transition(planes, out, act))
                planes = out
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.BatchNorm2d(planes), act(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(planes, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x):
        return self.fc(self.head(self.features(x)))
