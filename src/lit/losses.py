"""Training losses the studies compare: cross-entropy (with label smoothing) and the squared error
between the softmax output and the one-hot target (the LeNet study's MSE variant)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


# The label of the padding images that fill a compiled model's short last evaluation batch: both
# losses, StageStats and the confusion matrix leave them out, so every image counts exactly once.
IGNORE = -1


def softmax_mse(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per image: the mean squared error between the softmax output and a probability target
    (one-hot, or the soft targets of mixup/CutMix)."""
    return (logits.softmax(dim=1) - target).pow(2).mean(dim=1)


class SoftmaxMSELoss(nn.Module):
    def __init__(self, num_classes: int):
        super().__init__()
        self.num_classes = num_classes

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        valid = target != IGNORE
        one_hot = F.one_hot(target.clamp_min(0), self.num_classes).to(logits.dtype)
        per_image = softmax_mse(logits, one_hot)
        return (per_image * valid).sum() / valid.sum().clamp_min(1)


# lit.loss: what build_loss builds (src/config_schema.py checks a config against it)
LOSSES = ("ce", "mse")


def build_loss(name: str, num_classes: int, label_smoothing: float = 0.0) -> nn.Module:
    if name == "ce":
        return nn.CrossEntropyLoss(label_smoothing=label_smoothing, ignore_index=IGNORE)
    if name == "mse":
        return SoftmaxMSELoss(num_classes)
    from src.errors import ConfigError

    raise ConfigError(f"unknown lit.loss '{name}': choose ce (cross-entropy) or mse (softmax vs one-hot)")


def split_decay_groups(module: nn.Module, stacked: int = 0) -> list[dict]:
    """Parameter groups with weight decay off for biases and normalisation weights (1-D tensors).
    ``stacked``: leading dimensions that stack models (1 for a fused seed pack's members)."""
    decay, no_decay = [], []
    for p in module.parameters():
        if p.requires_grad:
            (no_decay if p.ndim - stacked <= 1 else decay).append(p)
    return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]
