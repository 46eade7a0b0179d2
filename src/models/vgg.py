"""VGG with batch normalisation, CIFAR variant (Simonyan & Zisserman 2015; the common CIFAR
adaptation): conv3×3 → BN → act stacks between five 2×2 max-pools, global average pool, one linear
classifier on the 512 features.

Parameter counts for 10 classes: VGG-11 9,231,114; VGG-13 9,416,010; VGG-16 14,728,266;
VGG-19 20,040,522.
"""
from __future__ import annotations

from torch import nn

from src.models.activations import ActivationFactory, as_factory

# channels per conv layer, "M" a 2x2 max-pool
VGG_CONFIGS: dict[int, list] = {
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    13: [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    19: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
         512, 512, 512, 512, "M"],
}


class VGG(nn.Module):
    """``depth`` 11, 13, 16 or 19. The pools use ``ceil_mode`` so 28×28 input reaches 1×1
    (28 → 14 → 7 → 4 → 2 → 1) and 32×32 input is pooled exactly as usual; larger input is
    averaged globally before the classifier."""

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 10,
        act_layer: str | ActivationFactory | None = "relu",
        depth: int = 16,
        dropout: float = 0.0,
    ):
        super().__init__()
        if depth not in VGG_CONFIGS:
            raise ValueError(f"VGG depth must be one of {sorted(VGG_CONFIGS)}, got {depth}")
        act = as_factory(act_layer)
        layers: list[nn.Module] = []
        c = in_channels
        for v in VGG_CONFIGS[depth]:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2, ceil_mode=True))
            else:
                layers += [nn.Conv2d(c, v, 3, padding=1), nn.BatchNorm2d(v), act()]
                c = v
        self.features = nn.Sequential(*layers)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(c, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, x):
        return self.fc(self.dropout(self.pool(self.features(x))))
