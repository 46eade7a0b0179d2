"""Plain deep networks for the accuracy-vs-depth study: ``depth`` identical layers of fixed width,
no residual connections, so depth is the only thing that changes along a sweep.

``DeepMLP`` (``model=deepmlp``): flatten → ``depth`` × [Linear(width) → (BatchNorm1d) → act] →
Linear(classes). ``DeepCNN`` (``model=deepcnn``): ``depth`` × [Conv3×3(width) → (BatchNorm2d) →
act] with ``downsample`` of the convolutions at stride 2 → global average pool → Linear(classes).

Parameter counts (D = in_channels·image_size², c = in_channels, w = width, k = classes, L = depth;
with batch norm the layers before it have no bias and the norm adds 2w instead):

    DeepMLP: D·w + (L−1)·w² + L·w·(2 if batch_norm else 1) + w·k + k
    DeepCNN: 9·c·w + (L−1)·9·w² + L·w·(2 if batch_norm else 1) + w·k + k

On MNIST (1×28×28, 10 classes) at the configs' defaults, no batch norm: DeepMLP depth 10,
width 128: 250,378 (251,658 with batch norm); DeepCNN depth 10, width 32: 83,882 (84,202).

Batch norm is off by default: in a deep stack without skip connections it makes the gradients
explode at initialisation (Yang et al. 2019, "A mean field theory of batch normalization"); a
quick MNIST check at depth 50 (Adam, 400 steps) stalled near chance with it for ReLU and Swish,
while the same nets without it reached 55-62 %. ``batch_norm=true`` is a variant of the study,
not the default.

Initialisation (``init``), the same for every activation so that only the activation differs:
``kaiming`` (default) — He et al. 2015 normal, fan-in, ReLU gain √2, zero biases; ``xavier`` —
Glorot normal, zero biases; ``torch`` — PyTorch's own default (Kaiming-uniform with a = √5, i.e.
U(±1/√fan_in), and uniform biases). Batch-norm weights start at 1 and biases at 0 in every case.
"""
from __future__ import annotations

from torch import nn

from src.models.activations import ActivationFactory, as_factory

INITS = ("kaiming", "xavier", "torch")


def _check(depth: int, width: int, init: str) -> None:
    if int(depth) < 1:
        raise ValueError(f"depth must be at least 1, got {depth}")
    if int(width) < 1:
        raise ValueError(f"width must be at least 1, got {width}")
    if init not in INITS:
        raise ValueError(f"init must be one of {', '.join(INITS)}, got '{init}'")


def _initialise(model: nn.Module, init: str) -> None:
    if init == "torch":
        return
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            if init == "kaiming":
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            else:
                nn.init.xavier_normal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def downsample_positions(depth: int, downsample: int) -> list[int]:
    """Indices (0-based) of the convolutions with stride 2: ⌊j·depth/(downsample+1)⌋ for
    j = 1..downsample, without repeats — evenly spread, e.g. 16 and 33 for depth 50 (3, 6 for 10)."""
    return sorted({(j * depth) // (downsample + 1) for j in range(1, downsample + 1)})


class DeepMLP(nn.Module):
    """``depth`` hidden layers of ``width`` units on the flattened ``in_channels×image_size²``
    input, each Linear → (BatchNorm1d) → activation, then a linear classifier."""

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        act_layer: str | ActivationFactory | None = "relu",
        image_size: int = 28,
        depth: int = 10,
        width: int = 128,
        batch_norm: bool = False,
        init: str = "kaiming",
    ):
        super().__init__()
        _check(depth, width, init)
        act = as_factory(act_layer)
        self.depth, self.width, self.batch_norm = int(depth), int(width), bool(batch_norm)
        layers: list[nn.Module] = [nn.Flatten()]
        fan_in = in_channels * image_size * image_size
        for _ in range(self.depth):
            layers.append(nn.Linear(fan_in, self.width, bias=not self.batch_norm))
            if self.batch_norm:
                layers.append(nn.BatchNorm1d(self.width))
            layers.append(act())
            fan_in = self.width
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(self.width, num_classes)
        _initialise(self, init)

    def forward(self, x):
        return self.fc(self.features(x))


class DeepCNN(nn.Module):
    """``depth`` 3×3 convolutions of ``width`` channels (padding 1), each → (BatchNorm2d) →
    activation; ``downsample`` of them have stride 2 (:func:`downsample_positions`); then a global
    average pool and a linear classifier. Any input size works (28×28, 32×32, larger)."""

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        act_layer: str | ActivationFactory | None = "relu",
        depth: int = 10,
        width: int = 32,
        batch_norm: bool = False,
        downsample: int = 2,
        init: str = "kaiming",
    ):
        super().__init__()
        _check(depth, width, init)
        if int(downsample) < 0:
            raise ValueError(f"downsample must be 0 or more, got {downsample}")
        act = as_factory(act_layer)
        self.depth, self.width, self.batch_norm = int(depth), int(width), bool(batch_norm)
        self.strided = downsample_positions(self.depth, int(downsample)) if downsample else []
        layers: list[nn.Module] = []
        c = in_channels
        for i in range(self.depth):
            stride = 2 if i in self.strided else 1
            layers.append(nn.Conv2d(c, self.width, 3, stride=stride, padding=1, bias=not self.batch_norm))
            if self.batch_norm:
                layers.append(nn.BatchNorm2d(self.width))
            layers.append(act())
            c = self.width
        self.features = nn.Sequential(*layers)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(self.width, num_classes)
        _initialise(self, init)

    def forward(self, x):
        return self.fc(self.pool(self.features(x)))
