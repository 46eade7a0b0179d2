"""PyramidNet (Han, Kim & Kim, "Deep Pyramidal Residual Networks", CVPR 2017), additive widening,
with ShakeDrop (Yamada et al. 2019) as an option.

Unit k of N (N counted over the three stages) has width ``round(16 + k·α/N)`` (×4 at the output of
a bottleneck unit). Units: BN → conv3×3 → BN → act → conv3×3 → BN (basic) or
BN → conv1×1 → BN → act → conv3×3 → BN → act → conv1×1 → BN (bottleneck), no activation after the
addition. The shortcut is the identity, 2×2 average-pooled when the unit downsamples, with the
extra channels zero-padded (no projection). Stem conv3×3 → BN; head BN → act → global average
pool → FC. Parameter counts for 10 classes, equal to the official Torch code's: 110/α48 1,772,706;
110/α84 3,904,446; 110/α270 28,485,477; bottleneck 164/α270 27,216,021, 200/α240 26,752,702,
272/α200 26,210,842 (the paper's table: 1.7M, 3.8M, 28.3M, 27.0M, 26.6M, 26.0M; its two narrow
figures are rounded down by 4 % and 3 %).
"""
from __future__ import annotations

from torch import nn

from src.models.activations import ActivationFactory, as_factory
from src.models.residual import add_zero_padded
from src.models.shakedrop import ShakeDrop, linear_decay_keep_probs


def basic_branch(in_planes: int, planes: int, stride: int, act: ActivationFactory) -> nn.Sequential:
    """BN → conv3×3 → BN → act → conv3×3 → BN (output ``planes`` channels)."""
    return nn.Sequential(
        nn.BatchNorm2d(in_planes),
        nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False),
        nn.BatchNorm2d(planes),
        act(),
        nn.Conv2d(planes, planes, 3, 1, 1, bias=False),
        nn.BatchNorm2d(planes),
    )


def bottleneck_branch(in_planes: int, planes: int, stride: int, act: ActivationFactory) -> nn.Sequential:
    """BN → conv1×1 → BN → act → conv3×3 → BN → act → conv1×1 → BN (output ``4·planes``)."""
    return nn.Sequential(
        nn.BatchNorm2d(in_planes),
        nn.Conv2d(in_planes, planes, 1, bias=False),
        nn.BatchNorm2d(planes),
        act(),
        nn.Conv2d(planes, planes, 3, stride, 1, bias=False),
        nn.BatchNorm2d(planes),
        act(),
        nn.Conv2d(planes, planes * 4, 1, bias=False),
        nn.BatchNorm2d(planes * 4),
    )


class PyramidUnit(nn.Module):
    """One residual unit: ``shortcut(x) + shakedrop(branch(x))`` with zero-padded channels."""

    def __init__(
        self,
        in_planes: int,
        planes: int,
        stride: int,
        act: ActivationFactory,
        bottleneck: bool,
        shakedrop: ShakeDrop | None = None,
    ):
        super().__init__()
        make = bottleneck_branch if bottleneck else basic_branch
        self.branch = make(in_planes, planes, stride, act)
        self.out_planes = planes * (4 if bottleneck else 1)
        # ceil_mode: odd sizes (75 → 38) match the strided convolution's output.
        self.pool = nn.AvgPool2d(2, 2, ceil_mode=True) if stride != 1 else nn.Identity()
        self.shakedrop = shakedrop if shakedrop is not None else nn.Identity()

    def residual(self, x):
        return self.shakedrop(self.branch(x))

    def shortcut(self, x):
        return self.pool(x)

    def forward(self, x):
        return add_zero_padded(self.residual(x), self.shortcut(x))


class PyramidNet(nn.Module):
    """``depth`` = 6N+2 (basic) or 9N+2 (bottleneck); ``alpha`` the total widening.

    ``shakedrop=True`` wraps every residual branch in :class:`ShakeDrop` with keep probability
    decaying linearly to ``shakedrop_p_last`` over all units; ``shakedrop_gate`` draws b per
    ``batch`` or per ``sample``."""

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 10,
        act_layer: str | ActivationFactory | None = "relu",
        depth: int = 110,
        alpha: float = 48,
        bottleneck: bool = False,
        base_width: int = 16,
        shakedrop: bool = False,
        shakedrop_p_last: float = 0.5,
        shakedrop_gate: str = "batch",
    ):
        super().__init__()
        act = as_factory(act_layer)
        per_block = 9 if bottleneck else 6
        if (depth - 2) % per_block or depth < per_block + 2:
            raise ValueError(
                f"PyramidNet depth must be {per_block}N+2 for bottleneck={bottleneck}, got {depth}"
            )
        n = (depth - 2) // per_block  # units per stage
        total = 3 * n
        keep = linear_decay_keep_probs(total, shakedrop_p_last) if shakedrop else None

        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, base_width, 3, 1, 1, bias=False), nn.BatchNorm2d(base_width)
        )
        units, in_planes = [], base_width
        for k in range(1, total + 1):
            stride = 2 if k in (n + 1, 2 * n + 1) else 1
            planes = int(round(base_width + k * alpha / total))
            sd = ShakeDrop(keep[k - 1], gate=shakedrop_gate) if shakedrop else None
            unit = PyramidUnit(in_planes, planes, stride, act, bottleneck, sd)
            units.append(unit)
            in_planes = unit.out_planes
        self.units = nn.Sequential(*units)
        self.head = nn.Sequential(
            nn.BatchNorm2d(in_planes), act(), nn.AdaptiveAvgPool2d(1), nn.Flatten()
        )
        self.fc = nn.Linear(in_planes, num_classes)
        self._init_weights()

    def _init_weights(self):
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x):
        return self.fc(self.head(self.units(self.stem(x))))
