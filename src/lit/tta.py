"""Test-time augmentation (``lit.tta``): logits averaged over views of each test image, reported as
test/acc_tta and test/loss_tta beside the plain test/acc and test/loss (never instead of them).

- ``flip``: the image and its mirror, averaged.
- ``flip_translate``: airbench94's TTA: half the flip average, half the average of the flip pair at
  two 1-pixel diagonal shifts (reflect-padded by 1, crops at offsets (0, 0) and (2, 2)).

Every view has the batch's shape, so a compiled model runs its one evaluation graph. The padding
images of a compiled model's last batch (label -1) are masked as in the plain accuracy, so each
test image counts exactly once.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from src.errors import ConfigError

MODES = ("none", "flip", "flip_translate")


def check_tta(mode: str) -> str:
    if mode not in MODES:
        raise ConfigError(f"unknown lit.tta '{mode}': choose one of {', '.join(MODES)}")
    return mode


def _mirror_mean(model, x: torch.Tensor, plain: torch.Tensor | None = None) -> torch.Tensor:
    # each output is used (cloned into a new tensor) before the next call: a CUDA-graphed model
    # overwrites its output buffer on every replay
    a = model(x).float().clone() if plain is None else plain
    return (a + model(x.flip(-1)).float()) / 2


def tta_logits(model, x: torch.Tensor, plain: torch.Tensor, mode: str) -> torch.Tensor:
    """Averaged logits of ``model`` over the ``mode`` views of batch ``x``; ``plain`` is model(x),
    already computed (it is copied first)."""
    logits = _mirror_mean(model, x, plain.float().clone())
    if mode == "flip_translate":
        h, w = x.shape[-2:]
        padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
        # contiguous crops: a compiled model guards on strides and would compile a second graph
        up_left, down_right = padded[..., 0:h, 0:w].contiguous(), padded[..., 2:h + 2, 2:w + 2].contiguous()
        shifted = (_mirror_mean(model, up_left) + _mirror_mean(model, down_right)) / 2
        logits = (logits + shifted) / 2
    return logits


def log_tta(module) -> None:
    """Log the epoch's TTA accuracy and loss as test/acc_tta, test/loss_tta."""
    acc, loss = module.stats["test_tta_"].compute()
    module.log("test/acc_tta", acc)
    module.log("test/loss_tta", loss)
    module.stats["test_tta_"].reset()
