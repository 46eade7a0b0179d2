"""Learning-rate schedules as Hydra partials: ``schedule(optimizer, total_steps=, steps_per_epoch=)``
returns Lightning's scheduler dict, so each schedule knows whether it steps per epoch or per step.

Every schedule takes ``warmup_epochs`` (may be fractional) or ``warmup_steps``: a linear warm-up in
front of it. The warm-up always advances once per optimizer step, whatever the schedule's own
interval, and multiplies the schedule's lr:  lr(t) = schedule(t) * min(1, (t + 1) / W), t counting
optimizer steps from the start of the run. The schedule keeps its own clock (a milestone at epoch
30 stays at epoch 30; a run-length cosine still ends at the run's end) and its own idea of the lr
(a chainable schedule or ReduceLROnPlateau never sees the warm-up's scaling).

Epoch counts (``milestones``, ``T_0``) are in epochs; ``interval: step`` makes a schedule move
every optimizer step instead of at each epoch's end (cosine, cosine_restarts, exponential).
"""
from __future__ import annotations

from typing import Any

from torch.optim import Optimizer, lr_scheduler

from src.errors import ConfigError

INTERVALS = ("step", "epoch")


# ---------------------------------------------------------------------------- linear warm-up
class LinearWarmup(lr_scheduler.LRScheduler):
    """Wrap ``scheduler``: its lr times min(1, (steps + 1) / warmup_steps), ``steps`` counted by an
    optimizer step hook. ``step()`` (at the wrapped schedule's own interval, with the metric for
    ReduceLROnPlateau) steps the wrapped schedule on its unscaled lr."""

    def __init__(self, scheduler: lr_scheduler.LRScheduler, warmup_steps: int):
        # LRScheduler.__init__ is not called on purpose: it would take the scaled lr as the base.
        if warmup_steps < 1:
            raise ConfigError(f"warm-up needs at least one step, got {warmup_steps}")
        self.scheduler = scheduler
        self.optimizer: Optimizer = scheduler.optimizer
        self.warmup_steps = int(warmup_steps)
        self.steps_done = 0
        self.last_epoch = 0
        self.base_lrs = list(getattr(scheduler, "base_lrs", [g["lr"] for g in self.optimizer.param_groups]))
        self.scheduled_lrs = [g["lr"] for g in self.optimizer.param_groups]  # the wrapped schedule's lr
        self._hook = None
        self._sync_hook()
        self._apply()

    def factor(self) -> float:
        return min(1.0, (self.steps_done + 1) / self.warmup_steps)

    def _apply(self) -> None:
        f = self.factor()
        for group, lr in zip(self.optimizer.param_groups, self.scheduled_lrs):
            group["lr"] = lr * f
        self._last_lr = [g["lr"] for g in self.optimizer.param_groups]

    def _sync_hook(self) -> None:
        warming = self.steps_done < self.warmup_steps
        if warming and self._hook is None:
            self._hook = self.optimizer.register_step_post_hook(self._after_optimizer_step)
        elif not warming and self._hook is not None:
            self._hook.remove()
            self._hook = None

    def _after_optimizer_step(self, optimizer, args, kwargs) -> None:
        self.steps_done += 1
        self._apply()
        self._sync_hook()

    def step(self, metrics: Any = None, epoch: Any = None) -> None:  # type: ignore[override]
        for group, lr in zip(self.optimizer.param_groups, self.scheduled_lrs):
            group["lr"] = lr  # the wrapped schedule steps from its own lr, not the warm-up's
        if metrics is None:
            self.scheduler.step()
        else:
            self.scheduler.step(metrics)
        self.scheduled_lrs = [g["lr"] for g in self.optimizer.param_groups]
        self.last_epoch += 1
        self._apply()

    def state_dict(self) -> dict:
        return {"scheduler": self.scheduler.state_dict(), "warmup_steps": self.warmup_steps,
                "steps_done": self.steps_done, "last_epoch": self.last_epoch,
                "scheduled_lrs": list(self.scheduled_lrs), "base_lrs": list(self.base_lrs)}

    def load_state_dict(self, state_dict: dict) -> None:
        self.scheduler.load_state_dict(state_dict["scheduler"])
        for key in ("warmup_steps", "steps_done", "last_epoch", "scheduled_lrs", "base_lrs"):
            setattr(self, key, state_dict[key])
        self._apply()
        self._sync_hook()


def _warmup_steps(steps_per_epoch: int, warmup_epochs: float, warmup_steps: int) -> int:
    if warmup_epochs < 0 or warmup_steps < 0:
        raise ConfigError(f"scheduler.warmup_epochs={warmup_epochs} / warmup_steps={warmup_steps} must be >= 0")
    if warmup_epochs and warmup_steps:
        raise ConfigError("set scheduler.warmup_epochs or scheduler.warmup_steps, not both")
    return int(warmup_steps) if warmup_steps else round(warmup_epochs * steps_per_epoch)


def _lightning(optimizer, scheduler, interval: str, steps_per_epoch: int, warmup_epochs: float,
               warmup_steps: int, **extra) -> dict:
    """Lightning's scheduler dict, with the warm-up wrapped around ``scheduler`` when asked for."""
    n = _warmup_steps(steps_per_epoch, warmup_epochs, warmup_steps)
    if n > 0:
        scheduler = LinearWarmup(scheduler, n)
    return {"scheduler": scheduler, "interval": interval, "frequency": 1, **extra}


def _check_interval(interval: str) -> None:
    if interval not in INTERVALS:
        raise ConfigError(f"scheduler.interval='{interval}': choose step or epoch")


def _epochs(total_steps: int, steps_per_epoch: int) -> int:
    return max(1, round(total_steps / max(1, steps_per_epoch)))


# ---------------------------------------------------------------------------- schedules
def cosine(optimizer, *, total_steps: int, steps_per_epoch: int, interval: str = "step", eta_min: float = 0.0,
           warmup_epochs: float = 0, warmup_steps: int = 0):
    """Cosine annealing from the optimizer's lr to ``eta_min`` over the whole run."""
    _check_interval(interval)
    length = total_steps if interval == "step" else _epochs(total_steps, steps_per_epoch)
    sched = lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, length), eta_min=eta_min)
    return _lightning(optimizer, sched, interval, steps_per_epoch, warmup_epochs, warmup_steps)


def cosine_restarts(optimizer, *, total_steps: int, steps_per_epoch: int, T_0: float = 10, T_mult: int = 1,
                    eta_min: float = 0.0, interval: str = "epoch", warmup_epochs: float = 0, warmup_steps: int = 0):
    """SGDR (Loshchilov & Hutter 2017): cosine from lr to ``eta_min`` over ``T_0`` epochs, then restart
    at lr with each cycle ``T_mult`` times longer. ``interval: step`` anneals every step within a cycle."""
    _check_interval(interval)
    if T_0 <= 0 or int(T_mult) != T_mult or T_mult < 1:
        raise ConfigError(f"scheduler.T_0={T_0} must be > 0 epochs and scheduler.T_mult={T_mult} an integer >= 1")
    if interval == "step":
        t0 = max(1, round(T_0 * steps_per_epoch))
    else:
        if int(T_0) != T_0:
            raise ConfigError(f"scheduler.T_0={T_0} must be a whole number of epochs with interval=epoch")
        t0 = int(T_0)
    sched = lr_scheduler.CosineAnnealingWarmRestarts(optimizer, T_0=t0, T_mult=int(T_mult), eta_min=eta_min)
    return _lightning(optimizer, sched, interval, steps_per_epoch, warmup_epochs, warmup_steps)


def multistep(optimizer, *, total_steps: int, steps_per_epoch: int, milestones=(30, 45), gamma: float = 0.1,
              warmup_epochs: float = 0, warmup_steps: int = 0):
    """Multiply the lr by ``gamma`` at each milestone epoch."""
    sched = lr_scheduler.MultiStepLR(optimizer, milestones=list(milestones), gamma=gamma)
    return _lightning(optimizer, sched, "epoch", steps_per_epoch, warmup_epochs, warmup_steps)


def exponential(optimizer, *, total_steps: int, steps_per_epoch: int, gamma: float = 0.95, interval: str = "epoch",
                warmup_epochs: float = 0, warmup_steps: int = 0):
    """lr x ``gamma`` per epoch; ``interval: step`` spreads it smoothly (gamma^(1/steps_per_epoch) a step)."""
    _check_interval(interval)
    per_step = gamma ** (1.0 / max(1, steps_per_epoch)) if interval == "step" else gamma
    sched = lr_scheduler.ExponentialLR(optimizer, gamma=per_step)
    return _lightning(optimizer, sched, interval, steps_per_epoch, warmup_epochs, warmup_steps)


def plateau(optimizer, *, total_steps: int, steps_per_epoch: int, monitor: str = "val/loss", mode: str = "min",
            factor: float = 0.1, patience: int = 10, threshold: float = 1e-4, threshold_mode: str = "rel",
            cooldown: int = 0, min_lr: float = 0.0, strict: bool = True,
            warmup_epochs: float = 0, warmup_steps: int = 0):
    """ReduceLROnPlateau on ``monitor`` (checked after each validation epoch): lr x ``factor`` once it
    has not improved for ``patience`` epochs."""
    if mode not in ("min", "max"):
        raise ConfigError(f"scheduler.mode='{mode}': choose min or max")
    sched = lr_scheduler.ReduceLROnPlateau(optimizer, mode=mode, factor=factor, patience=patience,
                                           threshold=threshold, threshold_mode=threshold_mode,
                                           cooldown=cooldown, min_lr=min_lr)
    return _lightning(optimizer, sched, "epoch", steps_per_epoch, warmup_epochs, warmup_steps,
                      monitor=monitor, strict=strict, reduce_on_plateau=True)


def onecycle(optimizer, *, total_steps: int, steps_per_epoch: int, max_lr: float | None = None,
             pct_start: float = 0.3, anneal_strategy: str = "cos", div_factor: float = 25.0,
             final_div_factor: float = 1e4, three_phase: bool = False, cycle_momentum: bool | None = None,
             warmup_epochs: float = 0, warmup_steps: int = 0):
    """Smith's one-cycle policy over the whole run, stepped every step: lr rises from max_lr/div_factor
    to ``max_lr`` (default: the optimizer's lr) over ``pct_start`` of the run, then anneals to
    max_lr/div_factor/final_div_factor. Momentum (or Adam's beta1) cycles inversely when the
    optimizer has one (``cycle_momentum: null``)."""
    groups = optimizer.param_groups
    if max_lr is None:
        max_lr = [g["lr"] for g in groups]
    if cycle_momentum is None:
        cycle_momentum = all(g.get("momentum", 0) > 0 or "betas" in g for g in groups)
    sched = lr_scheduler.OneCycleLR(optimizer, max_lr=max_lr, total_steps=max(1, total_steps), pct_start=pct_start,
                                    anneal_strategy=anneal_strategy, div_factor=div_factor,
                                    final_div_factor=final_div_factor, three_phase=three_phase,
                                    cycle_momentum=cycle_momentum)
    return _lightning(optimizer, sched, "step", steps_per_epoch, warmup_epochs, warmup_steps)


def constant(optimizer, *, total_steps: int, steps_per_epoch: int, warmup_epochs: float = 0, warmup_steps: int = 0):
    return _lightning(optimizer, lr_scheduler.LambdaLR(optimizer, lambda _: 1.0), "epoch", steps_per_epoch,
                      warmup_epochs, warmup_steps)


def optimizers_for(trainer, optimizer: Optimizer, scheduler_factory):
    """What configure_optimizers returns: the optimizer, with its schedule (``lit.scheduler``, a
    partial of one of the factories above) sized to the run's optimizer steps."""
    if scheduler_factory is None:
        return optimizer
    total = int(trainer.estimated_stepping_batches)
    per_epoch = max(1, total // max(1, trainer.max_epochs or 1))
    return {"optimizer": optimizer,
            "lr_scheduler": scheduler_factory(optimizer, total_steps=total, steps_per_epoch=per_epoch)}
