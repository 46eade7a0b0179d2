"""Wide ResNet (Zagoruyko & Komodakis 2016), WRN-d-k for CIFAR: (d−4)/6 pre-activation blocks per
stage at 16k/32k/64k channels, BN → act → conv3×3 → BN → act → dropout → conv3×3, a 1×1
projection where the width or stride changes (applied to the pre-activated input).

Parameter counts for 10 classes: WRN-16-4 2,748,890; WRN-28-10 36,479,194 (the paper's 2.7M,
36.5M).
"""
from __future__ import annotations

from torch import nn

from src.models.activations import ActivationFactory, as_factory


class WideBasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int, act: ActivationFactory, dropout: float):
        super().__init__()
        self.preact = nn.Sequential(nn.BatchNorm2d(in_planes), act())
        self.branch = nn.Sequential(
            nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False),
            nn.BatchNorm2d(planes),
            act(),
            nn.Dropout(dropout) if dropout > 0 else nn.Identity(),
            nn.Conv2d(planes, planes, 3, 1, 1, bias=False),
        )
        self.projection = (
            nn.Conv2d(in_planes, planes, 1, stride, bias=False)
            if (stride != 1 or in_planes != planes)
            else None
        )

    def forward(self, x):
        o = self.preact(x)
        shortcut = x if self.projection is None else self.projection(o)
        return self.branch(o) + shortcut


class WideResNet(nn.Module):
    """``depth`` = 6n+4 (16, 22, 28, 40), ``widen_factor`` k, ``dropout`` between the convolutions
    of each block (the paper used 0.3 on some runs)."""

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 10,
        act_layer: str | ActivationFactory | None = "relu",
        depth: int = 28,
        widen_factor: int = 10,
        dropout: float = 0.0,
    ):
        super().__init__()
        if (depth - 4) % 6 or depth < 10:
            raise ValueError(f"WideResNet depth must be 6n+4 (16, 22, 28, 40, ...), got {depth}")
        act = as_factory(act_layer)
        n = (depth - 4) // 6
        widths = [16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.stem = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        blocks, in_planes = [], 16
        for i, planes in enumerate(widths):
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(WideBasicBlock(in_planes, planes, stride, act, dropout))
                in_planes = planes
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.BatchNorm2d(in_planes), act(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(in_planes, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x):
        return self.fc(self.head(self.blocks(self.stem(x))))
