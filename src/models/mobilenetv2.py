"""MobileNetV2 (Sandler et al. 2018), CIFAR adaptation: the stem convolution and the first
24-channel block have stride 1 (instead of 2), so 32×32 input ends at 4×4 (ImageNet: 224 → 7).
Inverted residual blocks: [conv1×1 expand → BN → act] → depthwise conv3×3 → BN → act → conv1×1
project → BN (linear bottleneck), identity shortcut when stride is 1 and widths match. The
original's ReLU6 is the study activation here.

2,236,682 parameters for 10 classes at width 1.0.
"""
from __future__ import annotations

from torch import nn

from src.models.activations import ActivationFactory, as_factory

# t (expansion), c (channels), n (blocks), s (stride of the first block); ImageNet's s=2 of the
# 24-channel stage is 1 here.
MOBILENETV2_SETTINGS = [
    (1, 16, 1, 1),
    (6, 24, 2, 1),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
]


def make_divisible(v: float, divisor: int = 8) -> int:
    """Round ``v`` to a multiple of ``divisor``, never below 90 % of ``v`` (as the reference does)."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


def conv_bn_act(cin: int, cout: int, k: int, stride: int, act: ActivationFactory, groups: int = 1):
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        act(),
    )


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand_ratio: int, act: ActivationFactory):
        super().__init__()
        hidden = int(round(cin * expand_ratio))
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(conv_bn_act(cin, hidden, 1, 1, act))
        layers += [
            conv_bn_act(hidden, hidden, 3, stride, act, groups=hidden),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.body = nn.Sequential(*layers)
        self.use_residual = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.body(x) if self.use_residual else self.body(x)


class MobileNetV2(nn.Module):
    """``width_mult`` scales every width (rounded to multiples of 8; the last 1280 is never
    narrowed); ``dropout`` before the classifier (0.2 as in the reference)."""

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 10,
        act_layer: str | ActivationFactory | None = "relu",
        width_mult: float = 1.0,
        dropout: float = 0.2,
    ):
        super().__init__()
        act = as_factory(act_layer)
        c = make_divisible(32 * width_mult)
        last = make_divisible(1280 * max(1.0, width_mult))
        layers: list[nn.Module] = [conv_bn_act(in_channels, c, 3, 1, act)]  # stride 1 (CIFAR)
        for t, ch, n, s in MOBILENETV2_SETTINGS:
            out = make_divisible(ch * width_mult)
            for i in range(n):
                layers.append(InvertedResidual(c, out, s if i == 0 else 1, t, act))
                c = out
        layers.append(conv_bn_act(c, last, 1, 1, act))
        self.features = nn.Sequential(*layers)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(last, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        return self.fc(self.dropout(self.pool(self.features(x))))
