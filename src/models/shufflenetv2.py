"""ShuffleNetV2 (Ma et al. 2018), CIFAR adaptation: the 3×3 stem has stride 1 and there is no
max-pool after it, so the three stride-2 stages take 32×32 input to 4×4 (ImageNet: 224 → 7).
Units as in the paper: stride 1 splits the channels in half and transforms one half
(conv1×1 → BN → act → depthwise conv3×3 → BN → conv1×1 → BN → act); stride 2 transforms the
whole input in two branches; the halves are concatenated and channel-shuffled (2 groups).

Parameter counts for 10 classes: width 0.5 352,042; 1.0 1,263,854; 1.5 2,488,874; 2.0 5,365,486.
"""
from __future__ import annotations

import torch
from torch import nn

from src.models.activations import ActivationFactory, as_factory

# width multiplier -> channels of (stem, stage 2, stage 3, stage 4, final conv)
SHUFFLENETV2_WIDTHS: dict[float, tuple[int, ...]] = {
    0.5: (24, 48, 96, 192, 1024),
    1.0: (24, 116, 232, 464, 1024),
    1.5: (24, 176, 352, 704, 1024),
    2.0: (24, 244, 488, 976, 2048),
}


def interleave(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``channel_shuffle(cat(a, b), groups=2)`` in one step: channels a0, b0, a1, b1, …
    A channels_last input stays channels_last."""
    out = torch.stack((a, b), dim=2).flatten(1, 2)
    if a.is_contiguous(memory_format=torch.channels_last) and not a.is_contiguous():
        out = out.contiguous(memory_format=torch.channels_last)
    return out


def _pw(cin: int, cout: int, act: ActivationFactory | None) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout)]
    return layers + [act()] if act is not None else layers


def _dw(c: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(c, c, 3, stride, 1, groups=c, bias=False), nn.BatchNorm2d(c)]


class ShuffleUnit(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, act: ActivationFactory):
        super().__init__()
        self.stride = stride
        half = cout // 2
        if stride == 1:
            if cin != cout:
                raise ValueError("a stride-1 ShuffleNetV2 unit keeps its width")
            self.left = nn.Identity()
            right_in = half
        else:
            self.left = nn.Sequential(*_dw(cin, stride), *_pw(cin, half, act))
            right_in = cin
        self.right = nn.Sequential(*_pw(right_in, half, act), *_dw(half, stride), *_pw(half, half, act))

    def forward(self, x):
        if self.stride == 1:
            a, b = x.chunk(2, dim=1)
            return interleave(a, self.right(b))
        return interleave(self.left(x), self.right(x))


class ShuffleNetV2(nn.Module):
    """``width``: 0.5, 1.0, 1.5 or 2.0; ``stages``: units per stage (4, 8, 4 in the paper)."""

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 10,
        act_layer: str | ActivationFactory | None = "relu",
        width: float = 1.0,
        stages: tuple[int, int, int] = (4, 8, 4),
        dropout: float = 0.0,
    ):
        super().__init__()
        width = float(width)
        if width not in SHUFFLENETV2_WIDTHS:
            raise ValueError(f"ShuffleNetV2 width must be one of {sorted(SHUFFLENETV2_WIDTHS)}, got {width}")
        act = as_factory(act_layer)
        chans = SHUFFLENETV2_WIDTHS[width]
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, chans[0], 3, 1, 1, bias=False),  # stride 1, no max-pool (CIFAR)
            nn.BatchNorm2d(chans[0]),
            act(),
        ]
        c = chans[0]
        for n, out in zip(stages, chans[1:4]):
            for i in range(n):
                layers.append(ShuffleUnit(c, out, 2 if i == 0 else 1, act))
                c = out
        layers += _pw(c, chans[4], act)
        self.features = nn.Sequential(*layers)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(chans[4], num_classes)

    def forward(self, x):
        return self.fc(self.dropout(self.pool(self.features(x))))
