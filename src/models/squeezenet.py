"""SqueezeNet 1.0 and 1.1 (Iandola et al. 2016), CIFAR adaptation: a 3×3 stride-1 stem (ImageNet:
7×7 or 3×3 at stride 2) and BatchNorm after every convolution of the fire modules. The three
3×3/2 max-pools stay, so 32×32 input ends at 4×4. Classifier as in the original: dropout →
conv1×1 to the classes → act → global average pool (``final_activation=false`` drops that act,
which bounded activations such as sigmoid otherwise squash into the logits).

Parameter counts for 10 classes: 1.0 732,010; 1.1 730,570.
"""
from __future__ import annotations

import torch
from torch import nn

from src.models.activations import ActivationFactory, as_factory


def conv_bn_act(cin: int, cout: int, k: int, act: ActivationFactory) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, 1, k // 2, bias=False), nn.BatchNorm2d(cout), act())


class Fire(nn.Module):
    """squeeze conv1×1 → (expand conv1×1 ‖ expand conv3×3), each followed by BN and act."""

    def __init__(self, cin: int, squeeze: int, expand1: int, expand3: int, act: ActivationFactory):
        super().__init__()
        self.squeeze = conv_bn_act(cin, squeeze, 1, act)
        self.expand1 = conv_bn_act(squeeze, expand1, 1, act)
        self.expand3 = conv_bn_act(squeeze, expand3, 3, act)

    def forward(self, x):
        s = self.squeeze(x)
        return torch.cat((self.expand1(s), self.expand3(s)), dim=1)


def _pool() -> nn.MaxPool2d:
    return nn.MaxPool2d(3, 2, ceil_mode=True)  # 32 -> 16 -> 8 -> 4 as in the original's ceil mode


class SqueezeNet(nn.Module):
    """``version``: "1.0" (96-channel stem, pools after fire 3 and 7) or "1.1" (64-channel stem,
    pools after fire 2 and 4, about 2.4x fewer operations)."""

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 10,
        act_layer: str | ActivationFactory | None = "relu",
        version: str | float = "1.1",
        dropout: float = 0.5,
        final_activation: bool = True,
    ):
        super().__init__()
        version = str(version).replace("_", ".")
        act = as_factory(act_layer)
        if version == "1.0":
            stem = 96
            body = [
                _pool(),
                Fire(96, 16, 64, 64, act), Fire(128, 16, 64, 64, act), Fire(128, 32, 128, 128, act),
                _pool(),
                Fire(256, 32, 128, 128, act), Fire(256, 48, 192, 192, act),
                Fire(384, 48, 192, 192, act), Fire(384, 64, 256, 256, act),
                _pool(),
                Fire(512, 64, 256, 256, act),
            ]
        elif version == "1.1":
            stem = 64
            body = [
                _pool(),
                Fire(64, 16, 64, 64, act), Fire(128, 16, 64, 64, act),
                _pool(),
                Fire(128, 32, 128, 128, act), Fire(256, 32, 128, 128, act),
                _pool(),
                Fire(256, 48, 192, 192, act), Fire(384, 48, 192, 192, act),
                Fire(384, 64, 256, 256, act), Fire(512, 64, 256, 256, act),
            ]
        else:
            raise ValueError(f"SqueezeNet version must be '1.0' or '1.1', got '{version}'")
        self.features = nn.Sequential(conv_bn_act(in_channels, stem, 3, act), *body)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.final_conv = nn.Conv2d(512, num_classes, 1)
        self.final_act = act() if final_activation else nn.Identity()
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        for m in self.modules():
            if isinstance(m, nn.Conv2d) and m is not self.final_conv:
                nn.init.kaiming_uniform_(m.weight)
        nn.init.normal_(self.final_conv.weight, 0.0, 0.01)  # as the reference's final convolution
        nn.init.zeros_(self.final_conv.bias)

    def forward(self, x):
        return self.pool(self.final_act(self.final_conv(self.dropout(self.features(x)))))
