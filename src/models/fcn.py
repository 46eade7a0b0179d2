"""A fully connected network (multi-layer perceptron) on the flattened image: Linear → act for each
hidden size, then Linear to the classes. The default 300-100 is LeCun et al. 1998's two-hidden-layer
net, the baseline the LeNet-5 comparison uses.

Parameter counts for 10 classes with hidden sizes (300, 100): 953,010 on CIFAR-10 (3×32×32),
266,610 on MNIST (1×28×28).
"""
from __future__ import annotations

from typing import Sequence

from torch import nn

from src.models.activations import ActivationFactory, as_factory


class FCN(nn.Module):
    """``image_size`` (square side) fixes the input width ``in_channels·image_size²``;
    ``hidden_sizes`` the hidden layers (empty: a linear classifier); ``dropout`` after each hidden
    activation."""

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        act_layer: str | ActivationFactory | None = "relu",
        image_size: int = 28,
        hidden_sizes: Sequence[int] = (300, 100),
        dropout: float = 0.0,
    ):
        super().__init__()
        act = as_factory(act_layer)
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_channels * image_size * image_size
        for h in hidden_sizes:
            layers += [nn.Linear(width, int(h)), act()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = int(h)
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)
