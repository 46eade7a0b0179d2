"""The small Keras-style CNN one study used on MNIST: conv 32@5×5 'same' → act → max-pool 2 →
conv 64@2×2 'same' → act → max-pool 2 → dropout 0.25 → dense 1000 → act → dropout 0.5 → dense
classes. 3,156,098 parameters on MNIST; 4,117,698 on CIFAR-10 (the dense layer sees 8×8×64).

That study changed only the dense layer's activation: ``conv_activation`` (default ``None``: the
study activation ``act_layer``) keeps, e.g., ReLU in the convolutions.
"""
from __future__ import annotations

from torch import nn

from src.models.activations import ActivationFactory, as_factory


class SimpleCNN(nn.Module):
    """``image_size`` sets the dense layer's input: the feature map after the two pools
    (``image_size // 4``: 7 on MNIST, 8 on CIFAR-10) is adaptively max-pooled to at most
    ``max_grid`` (so horses-or-humans' 150×150 gives 8×8, not 37×37 and 88M weights)."""

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        act_layer: str | ActivationFactory | None = "relu",
        conv_activation: str | ActivationFactory | None = None,
        image_size: int = 28,
        max_grid: int = 8,
        hidden: int = 1000,
        conv_dropout: float = 0.25,
        dense_dropout: float = 0.5,
    ):
        super().__init__()
        act = as_factory(act_layer)
        conv_act = act if conv_activation is None else as_factory(conv_activation)
        grid = max(1, min(image_size // 4, max_grid))
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, 5, padding=2),
            conv_act(),
            nn.MaxPool2d(2),
            nn.ZeroPad2d((0, 1, 0, 1)),  # Keras 'same' for an even kernel pads right/bottom
            nn.Conv2d(32, 64, 2),
            conv_act(),
            nn.MaxPool2d(2),
            nn.AdaptiveMaxPool2d(grid),  # identity on 28x28 and 32x32 input
        )
        self.classifier = nn.Sequential(
            nn.Dropout(conv_dropout),
            nn.Flatten(),
            nn.Linear(64 * grid * grid, hidden),
            act(),
            nn.Dropout(dense_dropout),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x):
        return self.classifier(self.features(x))
