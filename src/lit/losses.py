"""Training losses the studies compare: cross-entropy (with label smoothing) and the squared error
between the softmax output and the one-hot target (the LeNet study's MSE variant)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SoftmaxMSELoss(nn.Module):
    def __init__(self, num_classes: int):
        super().__init__()
        self.num_classes = num_classes

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        one_hot = F.one_hot(target, self.num_classes).to(logits.dtype)
        return F.mse_loss(logits.softmax(dim=1), one_hot)


def build_loss(name: str, num_classes: int, label_smoothing: float = 0.0) -> nn.Module:
    if name == "ce":
        return nn.CrossEntropyLoss(label_smoothing=label_smoothing)
    if name == "mse":
        return SoftmaxMSELoss(num_classes)
    from src.errors import ConfigError

    raise ConfigError(f"unknown lit.loss '{name}': choose ce (cross-entropy) or mse (softmax vs one-hot)")


def split_decay_groups(module: nn.Module) -> list[dict]:
    """Parameter groups with weight decay off for biases and normalisation weights (1-D tensors)."""
    decay, no_decay = [], []
    for p in module.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]
