"""Weight averaging: an EMA of the weights (``callbacks=ema``) or SWA's equal average of per-epoch
weights (``callbacks=swa``), validated, checkpointed and tested in place of the raw weights.

It follows Lightning's ``WeightAveraging`` callback (same checkpoint layout: ``state_dict`` holds
the averaged weights, ``current_model_state`` the raw ones, so any checkpoint loads as the averaged
model) but differs where our runs need it to:

- it averages the network (``pl_module.model``: parameters and buffers, so BatchNorm statistics
  too), not the whole LightningModule, whose buffers hold run state (the divergence flag);
- updates are ``torch._foreach_lerp_`` on the device with the count kept in Python:
  ``AveragedModel`` reads its on-device count on the host twice per update (a sync every step);
- the updates run in ``on_train_batch_end``, after the optimizer step, outside the compiled model
  (and outside its CUDA graphs: the swaps copy in place, so the graphs' parameter addresses hold);
- before the first update (EMA warm-up, SWA before its start epoch) validation, checkpoints and
  the test use the raw weights, and metrics.json says so (``averaged_weights: null``).

EMA (as ``AveragedModel``): the first update copies the weights, each later one does
``avg = decay * avg + (1 - decay) * w``. Updates happen after optimizer steps ``warmup_steps + 1``,
then every ``every_n_steps``. SWA: ``avg`` is the plain mean of the weights at the end of each epoch
from ``start_epoch`` on (a fraction < 1 of the epochs, or an epoch index).
"""
from __future__ import annotations

import torch
from lightning.pytorch.callbacks import Callback

from src.errors import ConfigError

MODES = ("ema", "swa")


class WeightAverage(Callback):
    def __init__(self, mode: str = "ema", decay: float = 0.999, warmup_steps: int = 0, every_n_steps: int = 1,
                 start_epoch: float = 0.75):
        if mode not in MODES:
            raise ConfigError(f"unknown weight averaging mode '{mode}': choose ema or swa")
        if not 0 < decay < 1:
            raise ConfigError(f"callbacks.weight_averaging.decay={decay} must be between 0 and 1 (0.999 is usual)")
        if not (isinstance(warmup_steps, int) and warmup_steps >= 0):
            raise ConfigError(f"callbacks.weight_averaging.warmup_steps={warmup_steps} must be an integer >= 0")
        if not (isinstance(every_n_steps, int) and every_n_steps >= 1):
            raise ConfigError(f"callbacks.weight_averaging.every_n_steps={every_n_steps} must be an integer >= 1")
        if not (0 <= start_epoch < 1 or float(start_epoch).is_integer()):
            raise ConfigError(f"callbacks.weight_averaging.start_epoch={start_epoch} must be a fraction of the "
                              f"epochs (0 <= f < 1) or an epoch index")
        self.mode, self.decay, self.warmup_steps, self.every_n_steps = mode, decay, warmup_steps, every_n_steps
        self.start_epoch = start_epoch
        self.updates = 0  # how many weight sets the average holds
        self.tested: str | None = None  # what the tested weights were: "ema", "swa" or None (raw)
        self._avg: list[torch.Tensor] | None = None
        self._current: list[torch.Tensor] = []
        self._names: list[str] = []
        self._pending: dict[str, torch.Tensor] | None = None  # averaged weights read from a checkpoint
        self._last_step = -1
        self._swapped = False

    @property
    def state_key(self) -> str:
        return f"WeightAverage[{self.mode}]"

    @property
    def averaged_weights(self) -> str | None:
        return self.tested

    # ------------------------------------------------------------------ the average
    def on_fit_start(self, trainer, pl_module) -> None:
        # here, not in setup: the model is on its device, in its memory format, compiled in place
        self.track(pl_module.model)
        self._last_step = trainer.global_step

    def track(self, model: torch.nn.Module) -> None:
        """Start averaging `model`'s parameters and buffers (a pending checkpointed average wins)."""
        named = list(model.named_parameters()) + list(model.named_buffers())
        self._names = [n for n, _ in named]
        self._current = [t for _, t in named]
        pending = self._pending or {}
        self._avg = [torch.empty_like(t).copy_(pending[n]) if n in pending else t.detach().clone() for n, t in named]
        self._pending = None
        # split once, not per update: floats are averaged, integer buffers (BatchNorm's
        # num_batches_tracked) copied as they are
        fl = [i for i, a in enumerate(self._avg) if a.is_floating_point()]
        ct = [i for i, a in enumerate(self._avg) if not a.is_floating_point()]
        self._float_avg, self._float_cur = [self._avg[i] for i in fl], [self._current[i].detach() for i in fl]
        self._count_avg, self._count_cur = [self._avg[i] for i in ct], [self._current[i].detach() for i in ct]

    def _due(self, trainer, batch_idx: int) -> bool:
        if self.mode == "ema":
            s = trainer.global_step - 1  # index of the optimizer step just taken
            return s >= self.warmup_steps and (s - self.warmup_steps) % self.every_n_steps == 0
        start = self.start_epoch if self.start_epoch >= 1 else int(self.start_epoch * (trainer.max_epochs or 1))
        # the epoch's last step, before its validation, so that validation and checkpoint include it
        return batch_idx + 1 >= trainer.num_training_batches and trainer.current_epoch >= start

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step <= self._last_step:  # no optimizer step this batch (accumulation)
            return
        self._last_step = trainer.global_step
        if self._due(trainer, batch_idx):
            self.update()

    @torch.no_grad()
    def update(self) -> None:
        if self.updates == 0:
            torch._foreach_copy_(self._avg, [t.detach() for t in self._current])
        else:
            weight = 1 - self.decay if self.mode == "ema" else 1 / (self.updates + 1)
            torch._foreach_lerp_(self._float_avg, self._float_cur, weight)
            if self._count_avg:  # the current count, not an average
                torch._foreach_copy_(self._count_avg, self._count_cur)
        self.updates += 1

    @torch.no_grad()
    def _swap(self) -> None:
        for a, c in zip(self._avg, self._current):
            raw = c.detach().clone()
            c.detach().copy_(a)
            a.copy_(raw)

    # ------------------------------------------------------------------ which weights are used
    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        if self.updates and self._avg is not None and trainer.state.fn == "fit":
            self._swap()
            self._swapped = True

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if self._swapped:
            self._swap()
            self._swapped = False

    @torch.no_grad()
    def on_train_end(self, trainer, pl_module) -> None:
        """The averaged weights become the model's: what train.py tests when it tests the final weights."""
        self.tested = self.mode if self.updates else None
        if self.updates:
            for a, c in zip(self._avg, self._current):
                c.detach().copy_(a)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        return {"updates": self.updates, "mode": self.mode}

    def load_state_dict(self, state_dict: dict) -> None:
        self.updates = int(state_dict.get("updates", 0))

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        checkpoint["averaged_weights"] = self.mode if self.updates and self._avg is not None else None
        if checkpoint["averaged_weights"] is None:
            return
        checkpoint["current_model_state"] = dict(checkpoint["state_dict"])
        for name, avg in zip(self._names, self._avg):
            checkpoint["state_dict"][f"model.{name}"] = avg.detach().clone()

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        if trainer.state.fn != "fit":  # testing a checkpoint: its state_dict is what gets tested
            self.tested = checkpoint.get("averaged_weights")
            return
        if "current_model_state" in checkpoint:  # resuming: raw weights to train on, the average kept
            prefix = "model."
            self._pending = {k[len(prefix):]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)}
            pl_module.load_state_dict(checkpoint["current_model_state"], strict=False)
