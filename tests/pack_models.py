"""A model for the pack tests: LeNet-5 whose output turns NaN after 3 training calls in the run
seeded ``nan_seed`` only (it reads the seed the run set before building it), so one member of a
pack diverges at a known step and its standalone run at the same one."""
from __future__ import annotations

import torch

from src.models.lenet import LeNet5


class NaNForSeed(LeNet5):
    def __init__(self, *args, nan_seed: int = 1, **kwargs):
        super().__init__(*args, **kwargs)
        self.register_buffer("poisoned", torch.tensor(float(torch.initial_seed() == nan_seed)))
        self.register_buffer("calls", torch.tensor(0.0))

    def forward(self, x):
        out = super().forward(x)
        if not self.training:
            return out
        self.calls.add_(1)
        bad = (self.calls > 3) & (self.poisoned > 0)  # tensors only: the same code runs under vmap
        return out * torch.where(bad, torch.tensor(float("nan")), torch.tensor(1.0))
