"""Helpers shared by the residual families (PyramidNet, CIFAR ResNet)."""
from __future__ import annotations

import torch


def add_zero_padded(residual: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
    """``residual + [shortcut, 0]``: the identity shortcut with its missing channels zero-padded
    (He et al.'s option A, PyramidNet's shortcut). No zeros are allocated; ``torch.cat`` keeps a
    channels_last input channels_last."""
    c = shortcut.shape[1]
    if c == residual.shape[1]:
        return residual + shortcut
    return torch.cat((residual[:, :c] + shortcut, residual[:, c:]), dim=1)
