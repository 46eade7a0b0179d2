"""The compile warm-up timing hooks every training module shares (ClassifierModule, a fused seed
pack's PackModule): the first calls of a compiled model per batch shape are timed apart as compile
time and their images left out of images/s (src/lit/clock.py). The compile state is the SpeedUp
callback's (src/lit/speed.py): asked through the trainer, never copied into the module."""
from __future__ import annotations

from src.lit.compile_state import graphs_compiled
from src.lit.speed import speedup_of


class WarmupTiming:
    """Mixin for a LightningModule with a ``clock`` (RunClock); ``_batch_images`` says how many
    images a batch holds."""

    def _batch_images(self, batch) -> int:
        return batch[1].shape[0]

    def _warmup_start(self, stage: str, batch) -> None:
        speedup = speedup_of(self._trainer)
        if speedup is not None and speedup.compiled:
            self.clock.warmup_start(stage, batch[0].shape, speedup.warmup_calls, self.device, graphs_compiled)

    def _warmup_end(self, batch) -> None:  # also after an eager fallback inside a warm-up call
        self.clock.warmup_end(self.device, graphs_compiled, self._batch_images(batch))

    def on_train_batch_start(self, batch, batch_idx):
        self._warmup_start("train", batch)

    def on_validation_batch_start(self, batch, batch_idx, dataloader_idx=0):
        self._warmup_start("val", batch)

    def on_validation_batch_end(self, outputs, batch, batch_idx, dataloader_idx=0):
        self._warmup_end(batch)

    def on_test_batch_start(self, batch, batch_idx, dataloader_idx=0):
        self._warmup_start("test", batch)

    def on_test_batch_end(self, outputs, batch, batch_idx, dataloader_idx=0):
        self._warmup_end(batch)
