"""The per-stage accuracy and loss: exact over uneven batches, and equal to torchmetrics' own."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torchmetrics.classification import MulticlassAccuracy

from src.lit.stage_stats import StageStats


def test_accuracy_and_loss_are_per_image_over_uneven_batches():
    torch.manual_seed(0)
    stats, reference = StageStats(), MulticlassAccuracy(7, average="micro")
    logits, targets = torch.randn(103, 7), torch.randint(0, 7, (103,))
    for lo, hi in ((0, 64), (64, 100), (100, 103)):  # the last batch is short
        loss = F.cross_entropy(logits[lo:hi], targets[lo:hi])
        stats.update(logits[lo:hi], targets[lo:hi], loss)
        reference.update(logits[lo:hi], targets[lo:hi])
    acc, loss = stats.compute()
    assert acc.item() == (logits.argmax(1) == targets).float().mean().item() == reference.compute().item()
    # the mean over images, not the mean of the three batch means (which would weigh 3 images like 64)
    torch.testing.assert_close(loss, F.cross_entropy(logits, targets))
    batch_means = torch.stack([F.cross_entropy(logits[a:b], targets[a:b]) for a, b in ((0, 64), (64, 100), (100, 103))])
    assert abs(loss.item() - batch_means.mean().item()) > 1e-3


def test_reset_and_no_graph_kept():
    stats = StageStats()
    logits = torch.randn(4, 3, requires_grad=True)
    loss = F.cross_entropy(logits, torch.tensor([0, 1, 2, 0]))
    stats.update(logits, torch.tensor([0, 1, 2, 0]), loss)
    assert not stats.loss_sum.requires_grad  # the step's graph is not held until the epoch ends
    stats.reset()
    assert stats.seen.item() == 0 and torch.isnan(stats.compute()[0])
