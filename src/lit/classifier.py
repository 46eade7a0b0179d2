"""One LightningModule for every study: cross-entropy on any model, per-stage torchmetrics, and
the timings (epoch wall time, training images/s) that every study table reports."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import lightning as L
import torch
from torch import nn
from torchmetrics import MaxMetric
from torchmetrics.classification import MulticlassConfusionMatrix

from src.lit.clock import RunClock
from src.lit.losses import IGNORE, build_loss, split_decay_groups
from src.lit.mixing import build_mixer
from src.lit.stage_stats import StageStats
from src.lit.warmup import WarmupTiming
from src.lit.tta import check_tta


class Diverged(RuntimeError):
    """The training loss became NaN or Inf."""

    def __init__(self, epoch: int, step: int):
        super().__init__(f"training loss became non-finite at epoch {epoch}, step {step}")
        self.epoch, self.step = epoch, step


STAGES = ("train", "val", "test")


class ClassifierModule(WarmupTiming, L.LightningModule):
    def __init__(
        self,
        model: nn.Module,
        optimizer: Callable,
        scheduler: Callable | None = None,
        num_classes: int = 10,
        label_smoothing: float = 0.0,
        loss: str = "ce",
        no_decay_norm_bias: bool = False,
        input_noise_std: float = 0.0,
        divergence_check_every: int = 50,
        log_images: bool = True,
        activation: Callable | None = None,
        mixup: dict | None = None,
        tta: str = "none",
    ):
        super().__init__()
        mixup = dict(mixup or {})  # a plain dict in the checkpoint's hyperparameters (loaded weights_only)
        self.save_hyperparameters(ignore=["model", "optimizer", "scheduler", "activation"], logger=False)
        self.activation = activation  # the study's activation factory, only for its TensorBoard plot
        self.model = model
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.criterion = build_loss(loss, num_classes, label_smoothing)
        # mixup/CutMix (src/lit/mixing.py): None when off; test-time augmentation (src/lit/tta.py)
        self.mixer = build_mixer(mixup, num_classes, loss, label_smoothing)
        self.tta = check_tta(tta)
        # keyed "train_"... because nn.Module already has an attribute named "train"; accuracy and
        # loss on the device, read once per epoch (a NaN loss is caught by the divergence check)
        self.stats = nn.ModuleDict({f"{s}_": StageStats() for s in STAGES + (("test_tta",) if tta != "none" else ())})
        self.val_acc_best = MaxMetric()
        self.confusion = MulticlassConfusionMatrix(num_classes, ignore_index=IGNORE, validate_args=False)
        # Plain Python state for metrics.json; filled once per epoch, never per step.
        self.best_val_epoch: int | None = None
        self.clock = RunClock()
        # First step whose loss was NaN/Inf, kept on the device so checking costs no per-step sync.
        self.register_buffer("_bad_step", torch.tensor(-1), persistent=False)

    def forward(self, x):
        return self.model(x)

    # ------------------------------------------------------------------ steps
    def _step(self, stage: str, batch):
        x, y = batch[0], batch[1]  # a mixed training batch: y is each image's dominant label
        logits = self(x)
        loss = self._loss(logits, batch)  # evaluation batches may hold padding (label IGNORE)
        self.stats[stage + "_"].update(logits.detach(), y, loss, masked=stage != "train")
        return loss, logits

    def _loss(self, logits, batch):
        if len(batch) == 3:  # (x, dominant label, Mix): soft targets of mixup/CutMix
            return self.mixer.loss(logits, batch[2])
        return self.criterion(logits, batch[1])

    def training_step(self, batch, batch_idx):
        if self.mixer is not None:  # mixed once per step: SAM's second pass gets the same batch back
            batch = self.mixer.mix_once(batch, self.global_step)
        if self._sam_second_pass():  # SAM's gradient at the perturbed weights: no metrics, no BN update
            from src.lit.sam import keep_bn_stats

            self.trainer.optimizers[0].after_second_pass(keep_bn_stats(self.model))
            return self._loss(self(batch[0]), batch)
        if self.global_step == 0 and batch_idx == 0:
            self._log_image_grid(batch[0])
        if self.hparams.input_noise_std > 0:
            x = batch[0]
            batch = (x + self.hparams.input_noise_std * torch.randn_like(x), *batch[1:])
        loss, _ = self._step("train", batch)
        self.clock.count(batch[1].shape[0])
        bad = ~torch.isfinite(loss.detach())
        self._bad_step = torch.where(bad & (self._bad_step < 0), self.global_step, self._bad_step)
        return loss

    def _sam_second_pass(self) -> bool:
        return self._trainer is not None and getattr(self.trainer.optimizers[0], "in_second_pass", False)

    def on_train_batch_end(self, outputs, batch, batch_idx):
        self._warmup_end(batch)
        # also on the epoch's last batch: before any epoch-end hook can checkpoint diverged weights
        last = batch_idx + 1 >= self.trainer.num_training_batches
        if last or (batch_idx + 1) % self.hparams.divergence_check_every == 0:
            self._raise_if_diverged()

    def _raise_if_diverged(self) -> None:
        bad = self._bad_step
        if self._trainer is not None and self.trainer.world_size > 1:
            # DDP: every rank checks at the same step and all stop together (a rank raising alone
            # would leave the others waiting in the next all-reduce); a bad step of any rank counts
            bad = bad.clone()
            torch.distributed.all_reduce(bad, op=torch.distributed.ReduceOp.MAX)
        step = int(bad)  # one host sync every `divergence_check_every` steps
        if step >= 0:
            raise Diverged(self.current_epoch, step)

    def validation_step(self, batch, batch_idx):
        self._step("val", batch)

    def test_step(self, batch, batch_idx):
        _, logits = self._step("test", batch)
        self.confusion.update(logits, batch[1])  # padding (IGNORE) is left out
        if self.tta != "none":  # test/acc_tta beside test/acc, over the same images
            from src.lit.tta import tta_logits

            tta = tta_logits(self, batch[0], logits, self.tta)
            self.stats["test_tta_"].update(tta, batch[1], self.criterion(tta, batch[1]), masked=True)

    # ------------------------------------------------------------------ epoch bookkeeping
    def _log_stage(self, stage: str) -> float:
        acc, loss = self.stats[stage + "_"].compute()  # already summed over processes
        self.log(f"{stage}/acc", acc)
        self.log(f"{stage}/loss", loss)
        self.stats[stage + "_"].reset()
        return acc

    def on_train_epoch_start(self):
        self.clock.start_epoch(self.device)

    def on_validation_epoch_start(self):
        if self.trainer.training:  # validation runs inside the training epoch: stop its clock first
            self._raise_if_diverged()  # and never validate (or checkpoint) diverged weights
            self.clock.train_done(self.device)

    def on_validation_epoch_end(self):
        if self.trainer.sanity_checking:
            self.stats["val_"].reset()
            return
        acc = self._log_stage("val")
        before = self.val_acc_best.compute() if self.val_acc_best.update_count else None
        self.val_acc_best.update(acc)
        if before is None or acc > before:
            self.best_val_epoch = self.current_epoch
        self.log("val/acc_best", self.val_acc_best.compute(), sync_dist=True)

    def on_train_epoch_end(self):
        self._raise_if_diverged()
        self.clock.end_epoch(self.device)
        self._log_stage("train")
        self.log("time/epoch_s", self.clock.epoch_times[-1])
        self.log("time/train_images_per_s", self.clock.last_images_per_s)

    def on_test_epoch_start(self):
        self.clock.start_eval(self.device)

    def on_test_epoch_end(self):
        self.clock.end_eval(self.device, int(self.stats["test_"].seen))  # real images, not padding
        self._log_stage("test")
        if self.tta != "none":
            from src.lit.tta import log_tta

            log_tta(self)
        self._log_confusion()

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self):
        params = split_decay_groups(self.model) if self.hparams.no_decay_norm_bias else self.parameters()
        from src.lit.schedules import optimizers_for

        return optimizers_for(self.trainer, self.optimizer_factory(params=params), self.scheduler_factory)

    # ------------------------------------------------------------------ resume
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Run statistics travel with the checkpoint so a resumed run reports the whole run."""
        best = self.val_acc_best.compute().item() if self.val_acc_best.update_count else None
        checkpoint["run_stats"] = {**self.clock.state_dict(), "best_val_epoch": self.best_val_epoch,
                                   "val_acc_best": best}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        stats = checkpoint.get("run_stats")
        # only when resuming a fit: testing the best checkpoint must not rewind the run's history
        if not stats or self._trainer is None or self.trainer.state.fn != "fit":
            return
        self.clock.load_state_dict(stats)
        self.best_val_epoch = stats["best_val_epoch"]
        if stats["val_acc_best"] is not None:
            self.val_acc_best.update(torch.tensor(stats["val_acc_best"]))

    # ------------------------------------------------------------------ figures
    def _tensorboard(self):
        if self._trainer is not None and not self.trainer.is_global_zero:
            return None  # DDP: figures are rank 0's (ranks > 0 would draw them for nothing)
        for lg in self.loggers:
            if hasattr(lg.experiment, "add_figure"):
                return lg.experiment
        return None

    def on_fit_start(self):
        tb = self._tensorboard()
        if tb is not None and self.activation is not None and self.hparams.log_images:
            from src.run_figures import activation_figure

            tb.add_figure("activation", activation_figure([self.activation]), 0)

    def _log_image_grid(self, x: torch.Tensor) -> None:
        tb = self._tensorboard()
        dm = getattr(self.trainer, "datamodule", None)
        if not self.hparams.log_images or tb is None or dm is None:
            return
        from src.run_figures import log_image_grid

        log_image_grid(tb, x, dm.denormalize)

    def _log_confusion(self) -> None:
        """The test confusion matrix: test_confusion.csv in the run dir (rows = true class, columns
        = predicted), which per-class reports aggregate over seeds, and a figure in TensorBoard; both
        from src/run_figures.py, where the trackers draw their PNG of it too."""
        from src import run_figures

        dm = getattr(self.trainer, "datamodule", None)
        root = self.trainer.default_root_dir if self.trainer.is_global_zero else None
        run_figures.log_confusion(self.confusion.compute().cpu().numpy(), list(getattr(dm, "classes", []) or []),
                                  Path(root) if root else None, self._tensorboard(), self.global_step)
        self.confusion.reset()
