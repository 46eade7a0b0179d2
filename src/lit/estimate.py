"""One line, early in a run that will take long: `[estimate] ~31 h on cpu (62 min per epoch); ...`.

Someone without a GPU who types the README's first command (ResNet18, CIFAR-10, 30 epochs) would
otherwise find out after an hour that the first epoch is not done. The estimate times a few training
steps after the warm-up ones (a compiled model's first steps compile and record CUDA graphs, which
would inflate it tenfold), extrapolates to the whole run and prints only when it exceeds the
threshold (`trainer.estimate_minutes`, 30 by default; null = never).
"""
from __future__ import annotations

import math
import shlex
import sys
import time
from pathlib import Path

from lightning.pytorch.callbacks import Callback

from src.errors import ConfigError
from src.lit.speed import speedup_of

QUICK_TRY = "python train.py experiment=mnist_lenet5"  # prefixed with the run's DATA_DIR (quick_try)
# An evaluation batch runs the forward pass only: about a third of a training step's
# forward + backward + update (a rule of thumb for conv nets, close enough for an estimate).
EVAL_STEP_FRACTION = 1 / 3


def _now() -> float:  # module-level so tests can replace the clock
    return time.perf_counter()


def _sync(trainer) -> None:
    # the GPU runs ahead of Python: without a sync the timed steps would be only their launch time;
    # two syncs per run, never per step
    from src.lit.clock import sync

    sync(trainer.strategy.root_device)


def _duration(seconds: float) -> str:
    minutes = seconds / 60
    if minutes < 1:
        return f"{seconds:.0f} s"
    if minutes < 120:
        return f"{minutes:.0f} min"
    hours = minutes / 60
    return f"{hours:.1f} h" if hours < 10 else f"{hours:.0f} h"


class DurationEstimate(Callback):
    """Times `steps` training batches once `warmup` batches have run (1, or more when compiled)."""

    def __init__(self, minutes: float | None = 30.0, steps: int = 5, warmup: int | None = None):
        if minutes is not None and (isinstance(minutes, bool) or not isinstance(minutes, (int, float))
                                    or minutes < 0):
            raise ConfigError(f"trainer.estimate_minutes={minutes!r} must be a number >= 0 (or null: never)")
        self.minutes, self.steps, self.warmup = minutes, steps, warmup
        self.done = minutes is None
        self.message: str | None = None
        self._first_epoch = True

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._seen, self._t0, self._timed = 0, None, 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.done or trainer.fast_dev_run or trainer.sanity_checking:
            return
        self._seen += 1
        # later epochs: only their first batch is skipped (the time before it is validation's)
        warmup = self._warmup(speedup_of(trainer)) if self._first_epoch else 1
        if self._seen == warmup:
            _sync(trainer)
            self._t0 = _now()
        elif self._t0 is not None:
            self._timed += 1
            if self._timed >= self.steps:
                self._finish(trainer)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        # an epoch shorter than warm-up + steps: estimate from the batches it timed
        if not self.done and self._t0 is not None and self._timed:
            self._finish(trainer)
        self._first_epoch = False

    def _warmup(self, speedup) -> int:
        """Batches to skip; ``speedup``: the trainer's SpeedUp callback (None: an eager model)."""
        if self.warmup is not None:
            return self.warmup
        if not getattr(speedup, "compiled", False):
            return 1
        # compiled: SpeedUp's warm-up calls per batch shape (compile; with CUDA graphs also the
        # recording call) plus one as a margin: starting too early would count compile time into
        # every epoch of the estimate, starting one step late costs nothing
        return 1 + getattr(speedup, "warmup_calls", 2)

    def _finish(self, trainer) -> None:
        _sync(trainer)
        per_step = (_now() - self._t0) / self._timed
        self.done = True
        epoch_s, total_s = self.extrapolate(trainer, per_step)
        if total_s is None or total_s <= self.minutes * 60:
            return
        device = {"cuda": "gpu"}.get(trainer.strategy.root_device.type, trainer.strategy.root_device.type)
        self.message = (f"[estimate] ~{_duration(total_s)} on {device} ({_duration(epoch_s)} per epoch); "
                        f"for a quick try: {quick_try(getattr(trainer, 'datamodule', None))}")
        if trainer.is_global_zero:
            print(self.message, file=sys.stderr, flush=True)

    @staticmethod
    def extrapolate(trainer, per_step: float) -> tuple[float, float | None]:
        """(seconds per epoch, seconds for the rest of the run) from one training step's time."""
        train_batches = trainer.num_training_batches
        if not math.isfinite(train_batches):
            return 0.0, None
        dm = getattr(trainer, "datamodule", None)
        bs, eval_bs = getattr(dm, "batch_size", None), getattr(dm, "eval_batch_size", None)
        eval_step = per_step * EVAL_STEP_FRACTION * ((eval_bs / bs) if bs and eval_bs else 1.0)
        val_batches = _val_batches(trainer)
        every = trainer.check_val_every_n_epoch or 1
        epoch_s = train_batches * per_step + val_batches * eval_step / every
        if trainer.max_epochs is not None and trainer.max_epochs >= 0:
            epochs = trainer.max_epochs - trainer.current_epoch
        elif trainer.max_steps and trainer.max_steps > 0:
            epochs = max(trainer.max_steps - trainer.global_step, 0) / max(train_batches, 1)
        else:
            return epoch_s, None
        return epoch_s, epochs * epoch_s + val_batches * eval_step  # + the test pass, about one validation


def quick_try(datamodule) -> str:
    """The quick-try command with the data folder this run reads: without DATA_DIR it would look in
    ./data and, not finding MNIST there, download it into a new folder (or fail offline)."""
    data_dir = getattr(datamodule, "data_dir", None)
    if data_dir is None:
        return QUICK_TRY
    return f"DATA_DIR={shlex.quote(str(Path(data_dir).resolve()))} {QUICK_TRY}"


def _val_batches(trainer) -> float:
    n = trainer.num_val_batches  # known once validation (or the sanity check) has set up its data
    n = sum(n) if isinstance(n, list) else n
    if n or not trainer.enable_validation:
        return n if math.isfinite(n) else 0
    try:  # no sanity check ran: the loader's length, limited as the trainer will limit it
        full = len(trainer.datamodule.val_dataloader())
    except Exception:
        return 0
    limit = trainer.limit_val_batches
    return min(full, int(limit)) if isinstance(limit, int) else int(full * limit)
