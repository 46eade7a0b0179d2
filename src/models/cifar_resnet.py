"""The CIFAR ResNets of He et al. 2016 (section 4.2): depth 6n+2, three stages of n basic blocks at
16/32/64 channels, 3×3 stride-1 stem, option-A shortcuts (identity, strided and zero-padded: no
extra parameters). ShakeDrop (Yamada et al. 2019) is an option on every residual branch.

Parameter counts for 10 classes: ResNet-20 269,722; ResNet-56 853,018; ResNet-110 1,727,962
(the paper's 0.27M, 0.85M, 1.7M).
"""
from __future__ import annotations

from torch import nn

from src.models.activations import ActivationFactory, as_factory
from src.models.residual import add_zero_padded
from src.models.shakedrop import ShakeDrop, linear_decay_keep_probs


class CifarBasicBlock(nn.Module):
    """conv3×3 → BN → act → conv3×3 → BN (→ ShakeDrop), + shortcut, → act."""

    def __init__(
        self,
        in_planes: int,
        planes: int,
        stride: int,
        act: ActivationFactory,
        shakedrop: ShakeDrop | None = None,
    ):
        super().__init__()
        self.branch = nn.Sequential(
            nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False),
            nn.BatchNorm2d(planes),
            act(),
            nn.Conv2d(planes, planes, 3, 1, 1, bias=False),
            nn.BatchNorm2d(planes),
        )
        self.stride = stride
        self.shakedrop = shakedrop if shakedrop is not None else nn.Identity()
        self.act = act()

    def residual(self, x):
        return self.shakedrop(self.branch(x))

    def shortcut(self, x):
        # Option A: subsample by taking every other pixel (matches the strided conv for odd sizes).
        return x[:, :, :: self.stride, :: self.stride] if self.stride != 1 else x

    def forward(self, x):
        return self.act(add_zero_padded(self.residual(x), self.shortcut(x)))


class CifarResNet(nn.Module):
    """``depth`` = 6n+2 (20, 32, 44, 56, 110, …). ``shakedrop=True``: keep probability decays
    linearly to ``shakedrop_p_last`` over all 3n blocks; ``shakedrop_gate``: b per ``batch`` or
    per ``sample``."""

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 10,
        act_layer: str | ActivationFactory | None = "relu",
        depth: int = 20,
        widths: tuple[int, int, int] = (16, 32, 64),
        shakedrop: bool = False,
        shakedrop_p_last: float = 0.5,
        shakedrop_gate: str = "batch",
    ):
        super().__init__()
        if (depth - 2) % 6 or depth < 8:
            raise ValueError(f"CifarResNet depth must be 6n+2 (20, 56, 110, ...), got {depth}")
        act = as_factory(act_layer)
        n = (depth - 2) // 6
        keep = linear_decay_keep_probs(3 * n, shakedrop_p_last) if shakedrop else None
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), act()
        )
        blocks, in_planes, l = [], widths[0], 0
        for i, planes in enumerate(widths):
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                sd = ShakeDrop(keep[l], gate=shakedrop_gate) if shakedrop else None
                blocks.append(CifarBasicBlock(in_planes, planes, stride, act, sd))
                in_planes, l = planes, l + 1
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(in_planes, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        return self.fc(self.pool(self.blocks(self.stem(x))))
