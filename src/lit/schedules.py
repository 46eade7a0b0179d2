"""Learning-rate schedules as Hydra partials: ``schedule(optimizer, total_steps=, steps_per_epoch=)``
returns Lightning's scheduler dict, so each schedule knows whether it steps per epoch or per step."""
from __future__ import annotations

from torch.optim import lr_scheduler


def cosine(optimizer, *, total_steps: int, steps_per_epoch: int, interval: str = "step", eta_min: float = 0.0):
    """Cosine annealing from the optimizer's lr to ``eta_min`` over the whole run."""
    length = total_steps if interval == "step" else max(1, round(total_steps / max(1, steps_per_epoch)))
    return {"scheduler": lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, length), eta_min=eta_min),
            "interval": interval}


def multistep(optimizer, *, total_steps: int, steps_per_epoch: int, milestones=(30, 45), gamma: float = 0.1):
    """Multiply the lr by ``gamma`` at each milestone epoch."""
    return {"scheduler": lr_scheduler.MultiStepLR(optimizer, milestones=list(milestones), gamma=gamma),
            "interval": "epoch"}


def constant(optimizer, *, total_steps: int, steps_per_epoch: int):
    return {"scheduler": lr_scheduler.LambdaLR(optimizer, lambda _: 1.0), "interval": "epoch"}
