"""What model tests share: a parameter count, a marker activation only a factory can place, the
built-in activation modules that must not appear, and one torch thread for many small ops."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.overrides import TorchFunctionMode


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


class Marker(nn.Module):
    """A ReLU spelt without any activation function: only the factory can have put it there."""

    def forward(self, x):
        return (x + x.abs()) * 0.5


BUILTIN_ACTIVATIONS = (
    nn.ReLU, nn.ReLU6, nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.SiLU, nn.Mish, nn.GELU,
    nn.Tanh, nn.Sigmoid, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.PReLU, nn.RReLU, nn.Softplus,
    nn.LogSigmoid, nn.Softsign, nn.Tanhshrink, nn.Threshold, nn.GLU,
)

# torch functions (by name) that are activations, and those that synchronise with the host.
ACTIVATION_FUNCS = {
    "relu", "relu_", "relu6", "hardtanh", "hardtanh_", "hardswish", "hardsigmoid", "silu", "mish",
    "gelu", "tanh", "tanh_", "sigmoid", "sigmoid_", "leaky_relu", "leaky_relu_", "elu", "elu_",
    "selu", "celu", "softplus", "logsigmoid", "prelu", "rrelu", "threshold", "glu", "softsign",
    "tanhshrink",
}
HOST_SYNC_FUNCS = {"item", "tolist", "__bool__", "__float__", "__int__", "__index__", "numpy", "nonzero", "cpu"}


class RecordCalls(TorchFunctionMode):
    """Every torch function / tensor method called while active, by name."""

    def __init__(self):
        super().__init__()
        self.names: set[str] = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.names.add(getattr(func, "__name__", str(func)))
        return func(*args, **(kwargs or {}))


@pytest.fixture
def one_thread():
    """Many small ops: one thread is as fast when the CPU is free and many times faster when other
    processes share the two cores (idle OpenMP workers spin); restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
