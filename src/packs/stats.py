"""Accuracy and mean loss of one stage for every member of a pack at once: StageStats
(src/lit/stage_stats.py) with a member dimension, so a step of K members costs the same few kernels
as one member's, not K times as many."""
from __future__ import annotations

import torch
from torchmetrics import Metric


class PackStats(Metric):
    full_state_update = False

    def __init__(self, members: int, **kwargs):
        super().__init__(**kwargs)
        self.add_state("correct", torch.zeros(members, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("seen", torch.zeros(members, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("loss_sum", torch.zeros(members), dist_reduce_fx="sum")

    def update(self, logits: torch.Tensor, target: torch.Tensor, losses: torch.Tensor, masked: bool = False) -> None:
        """``logits`` [K, B, C], ``target`` [K, B], ``losses`` [K] (each member's batch mean).
        ``masked``: labels < 0 are padding (see StageStats) and are not counted."""
        hit = logits.argmax(dim=2) == target
        if masked:
            valid = target >= 0
            n = valid.sum(dim=1)
            self.correct += (hit & valid).sum(dim=1)
            self.seen += n
            self.loss_sum += torch.where(n > 0, losses.detach().float() * n, 0.0)
            return
        n = target.shape[1]
        self.correct += hit.sum(dim=1)
        self.seen += n
        self.loss_sum += losses.detach().float() * n

    def compute(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(accuracy [K], mean loss [K]); NaN before any update."""
        seen = self.seen.float()
        return self.correct / seen, self.loss_sum / seen
