"""ResNet18, CIFAR variant (He et al. 2016; the 3x3 stride-1 stem used for 32x32 images)."""
from __future__ import annotations

from torch import nn

from src.models.activations import ActivationFactory, as_factory


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int, act: ActivationFactory):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.act1 = act()
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )
        self.act2 = act()

    def forward(self, x):
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act2(out + self.shortcut(x))


class ResNet18(nn.Module):
    """Stages 64/128/256/512 with two basic blocks each; no max-pool; adaptive average pooling, so
    any input of at least 28x28 and 1 or 3 channels works. 11,173,962 parameters for 10 classes."""

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 10,
        act_layer: str | ActivationFactory | None = "relu",
        dropout: float = 0.0,
        widths: tuple[int, ...] = (64, 128, 256, 512),
        blocks_per_stage: tuple[int, ...] = (2, 2, 2, 2),
    ):
        super().__init__()
        act = as_factory(act_layer)
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), act()
        )
        layers, in_planes = [], widths[0]
        for i, (planes, n) in enumerate(zip(widths, blocks_per_stage)):
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                layers.append(BasicBlock(in_planes, planes, stride, act))
                in_planes = planes
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(in_planes, num_classes)

    def forward(self, x):
        x = self.layers(self.stem(x))
        return self.fc(self.dropout(self.pool(x).flatten(1)))
