"""What model tests share: a parameter count, a marker activation only a factory can place, the
built-in activation modules that must not appear, and one torch thread for many small ops."""
from __future__ import annotations

import pytest
import torch
from torch import nn


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


@pytest.fixture
def one_thread():
    """Many small ops: one thread is as fast when the CPU is free and many times faster when other
    processes share the two cores (idle OpenMP workers spin); restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
