"""LeNet-5 (LeCun et al. 1998): conv6@5x5 → pool → conv16@5x5 → pool → 120 → 84 → classes."""
from __future__ import annotations

from torch import nn

from src.models.activations import ActivationFactory, as_factory

POOLS = ("avg", "max")  # model.pool (src/config_schema.py checks a config against it)


class LeNet5(nn.Module):
    """Classic LeNet-5 on 32x32 input. 28x28 sets are zero-padded by 2 in the first convolution,
    as in the original paper; other sizes are pooled to 5x5 before the classifier."""

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        act_layer: str | ActivationFactory | None = "tanh",
        pool: str = "avg",
        image_size: int = 32,
    ):
        super().__init__()
        if pool not in POOLS:
            raise ValueError(f"LeNet5 pool must be 'avg' or 'max', got '{pool}'")
        act = as_factory(act_layer, default="tanh")
        pool_layer = nn.AvgPool2d if pool == "avg" else nn.MaxPool2d
        adaptive = nn.AdaptiveAvgPool2d if pool == "avg" else nn.AdaptiveMaxPool2d
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, 5, padding=2 if image_size == 28 else 0),
            act(),
            pool_layer(2),
            nn.Conv2d(6, 16, 5),
            act(),
            pool_layer(2),
            adaptive(5),  # identity for 28/32 input; lets larger images (horses-or-humans) through
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(16 * 5 * 5, 120),
            act(),
            nn.Linear(120, 84),
            act(),
            nn.Linear(84, num_classes),
        )

    def forward(self, x):
        return self.classifier(self.features(x))
