"""ModelCheckpoint whose last.ckpt is the newest epoch, written at most once per epoch.

Lightning 2.6's `save_last=True` writes last.ckpt as a second full copy of the top-k file (ResNet18:
2 x 89.5 MB on every epoch that improved val/acc) and, when the epoch did not improve, writes no
last.ckpt at all, so `resume=true` went back to the best epoch and trained the later ones again.
Its `save_last="link"` avoids the copy but, on an epoch that did not improve, links last.ckpt to the
older best file: the same loss of epochs. Here last.ckpt is a symlink to the top-k file when this
epoch wrote one, and a file of its own when it did not, so every epoch writes exactly one
checkpoint and last.ckpt always holds the latest epoch.
"""
from __future__ import annotations

import os

from lightning.pytorch.callbacks import ModelCheckpoint


class LatestCheckpoint(ModelCheckpoint):
    def __init__(self, *args, save_last="link", **kwargs):
        super().__init__(*args, save_last=save_last, **kwargs)

    def setup(self, trainer, pl_module, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if self.save_last == "link" and not self._last_checkpoint_saved:
            # Lightning calls _save_last_checkpoint with "link" only once this process has written a
            # checkpoint; a resumed run's first epoch that does not improve would then save no
            # last.ckpt. A non-empty value opens that gate; _save_last_checkpoint below never links to it.
            self._last_checkpoint_saved = os.devnull

    def _save_last_checkpoint(self, trainer, monitor_candidates) -> None:
        if self.save_last != "link":
            return super()._save_last_checkpoint(trainer, monitor_candidates)
        filepath = self.format_checkpoint_name(monitor_candidates, self.CHECKPOINT_NAME_LAST)
        previous, self.last_model_path = self.last_model_path, filepath
        target = self._last_checkpoint_saved
        # decided from state every rank shares (no file checks), since saving is a collective call
        if self._last_global_step_saved == trainer.global_step and target not in ("", os.devnull, filepath):
            self._link_checkpoint(trainer, target, filepath)
        else:
            if trainer.is_global_zero and os.path.islink(filepath):
                # saving through the link would overwrite the best checkpoint it points to
                os.remove(filepath)
            self._save_checkpoint(trainer, filepath)
        if previous and self._should_remove_checkpoint(trainer, previous, filepath):
            self._remove_checkpoint(trainer, previous)
        if (pending := self.__dict__.pop("_pending_removal", None)) is not None:
            super()._remove_checkpoint(trainer, pending)

    def _remove_checkpoint(self, trainer, filepath: str) -> None:
        # The old best file goes only once last.ckpt no longer links to it: a run killed in between
        # would otherwise leave a dangling last.ckpt, and resume=true would start from scratch.
        last = self.last_model_path
        if self.save_last == "link" and last and os.path.islink(last) and os.path.samefile(last, filepath):
            self._pending_removal = filepath
            return
        super()._remove_checkpoint(trainer, filepath)

    def _save_checkpoint(self, trainer, filepath: str) -> None:
        """Lightning's save, written to a temporary name beside the file and renamed into place: a
        full disk (or a kill) mid-write leaves the previous checkpoint whole and no truncated one,
        and the error names the checkpoint in the run folder, not a temporary file."""
        from weakref import proxy

        tmp = f"{filepath}.tmp{os.getpid()}"
        try:
            trainer.save_checkpoint(tmp, self.save_weights_only)
            if trainer.is_global_zero:  # the strategy writes on rank 0 only
                os.replace(tmp, filepath)
        except OSError as e:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise OSError(e.errno, e.strerror, filepath) from e
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.after_save_checkpoint(proxy(self))

