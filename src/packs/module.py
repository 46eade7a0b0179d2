"""One LightningModule that trains K members of one setting (different seeds) as one vectorised model.

Each member is an ordinary ClassifierModule (src/lit/classifier.py) built under its own seed: its
loss, mixer, TTA mode and confusion matrix are its own; only its network moves into the stacked
model (src/packs/stack.py). The training loss is the sum of the members' mean losses, so each
member's gradient is exactly its standalone gradient; what takes a norm or a decision over a whole
model works per member: SAM's epsilon (src/lit/sam.py ``pack_size``), gradient clipping by norm
(``configure_gradient_clipping``), the divergence check (a member whose loss turned NaN/Inf is
frozen out: no more logs or checkpoints, recorded ``diverged``; the others go on), the best
validation epoch (src/packs/checkpoints.py). EMA/SWA (src/lit/averaging.py) average element-wise,
which on stacked weights is per member already.

Every metric is logged as ``member<k>/<name>``; src/packs/logger.py routes it to member k's own
loggers as ``<name>``, so each run folder's CSV and TensorBoard files read like a standalone run's.
"""
from __future__ import annotations

import copy
from typing import Callable

import lightning as L
import torch
from torch import nn

from src.datamodules.augment import _none as no_augment
from src.datamodules.augment import normalize
from src.lit.clock import RunClock
from src.lit.losses import split_decay_groups
from src.lit.sam import member_norms
from src.lit.schedules import optimizers_for
from src.lit.warmup import WarmupTiming
from src.packs.rng import MemberRNG
from src.packs.stack import StackedModel
from src.packs.stats import PackStats

PREFIX = "member"


def member_key(k: int, name: str) -> str:
    return f"{PREFIX}{k}/{name}"


class PackModule(WarmupTiming, L.LightningModule):
    def __init__(self, members: list, datamodules: list, rng: MemberRNG, dirs: list | None = None):
        super().__init__()
        self.dirs = list(dirs or [])  # the members' run folders (their test_confusion.csv)
        self.size = len(members)
        self.model = StackedModel([m.model for m in members])
        for m in members:  # the member keeps a weightless copy: its parameter count, for metrics.json
            m.model = m.model.to("meta")
        self.__dict__["members"] = members  # not submodules: their networks live in self.model
        self.__dict__["datamodules"] = datamodules
        self.rng = rng
        lead = members[0]
        self.criterion, self.tta, self.hp = lead.criterion, lead.tta, lead.hparams
        # keyed "train_"...: nn.Module already has an attribute named "train" (as in ClassifierModule)
        self.stats = nn.ModuleDict({f"{s}_": PackStats(self.size) for s in ("train", "val", "test", "test_tta")})
        self.confusions = nn.ModuleList([m.confusion for m in members])
        self.register_buffer("_bad_step", torch.full((self.size,), -1), persistent=False)
        self.alive = [True] * self.size
        self.best_val: list[float | None] = [None] * self.size
        self.best_val_epoch: list[int | None] = [None] * self.size
        self.clock = RunClock()
        self.test_results: list[dict] = [{} for _ in members]
        self.on_diverged: Callable[[int, int, int], None] = lambda k, epoch, step: None
        self._prepared: tuple | None = None
        self._stats_alike: bool | None = None  # see _same_stats

    def forward(self, x, shared: bool = False):
        return self.model(x, shared=shared)

    # ------------------------------------------------------------------ per-member losses
    def _losses(self, logits: torch.Tensor, y: torch.Tensor, mixes=None) -> torch.Tensor:
        """[K] mean losses; with mixup/CutMix each member's loss on its own soft targets."""
        if mixes is not None:
            return torch.stack([self.members[k].mixer.loss(logits[k], mixes[k]) for k in range(self.size)])
        return torch.vmap(self.criterion)(logits, y)

    # ------------------------------------------------------------------ training
    def _member_rng_needed(self) -> bool:
        return (any(dm.augment is not no_augment for dm in self.datamodules) or self.members[0].mixer is not None
                or self.hp.input_noise_std > 0 or (self.global_step == 0 and self.hp.log_images))

    def _prepare(self, batch, batch_idx: int):
        """Augment, normalise and mix each member's uint8 batch in its own random stream, in the
        standalone order (the data module's augmentation, then mixing, the image grid, the noise).
        Done once per optimizer step: SAM's second pass gets the same batch back."""
        x, y = batch
        key = (self.global_step, id(x))
        if self._prepared is not None and self._prepared[0] == key:
            return self._prepared[1]
        dms = self.datamodules
        if not self._member_rng_needed() and self._same_stats():
            prepared = (self._normalize(dms[0], x), y, None)
        else:
            xs, ys, mixes = [], [], []
            for k, dm in enumerate(dms):
                with self.rng.member(k, x.device):
                    xk = self._normalize(dm, dm.augment(x[k]))
                    yk, mix = y[k], None
                    if self.members[k].mixer is not None:  # its loss uses mix, its accuracy the dominant label
                        xk, mix = self.members[k].mixer.mix(xk, yk)
                        yk = mix.dominant
                    if self.global_step == 0 and batch_idx == 0:
                        self._log_image_grid(k, xk)
                    if self.hp.input_noise_std > 0:
                        xk = xk + self.hp.input_noise_std * torch.randn_like(xk)
                xs.append(xk)
                ys.append(yk)
                mixes.append(mix)
            prepared = (torch.stack(xs), torch.stack(ys), mixes if self.members[0].mixer is not None else None)
        self._prepared = (key, prepared)
        return prepared

    def _normalize(self, dm, x: torch.Tensor) -> torch.Tensor:
        """A member's normalisation, its statistics moved to the batch's device once (as the data
        module's own hook does), not copied there every step."""
        if dm.mean.device != x.device:
            dm.mean, dm.std = dm.mean.to(x.device), dm.std.to(x.device)
        return normalize(x, dm.mean, dm.std)

    def _same_stats(self) -> bool:
        """All members normalise alike (the same data.mean/std, or the same training split's)."""
        if self._stats_alike is None:
            first = self.datamodules[0]
            self._stats_alike = all(torch.equal(dm.mean.cpu(), first.mean.cpu())
                                    and torch.equal(dm.std.cpu(), first.std.cpu()) for dm in self.datamodules)
        return self._stats_alike

    def training_step(self, batch, batch_idx):
        x, y, mixes = self._prepare(batch, batch_idx)
        if getattr(self.trainer.optimizers[0], "in_second_pass", False):  # SAM at the perturbed weights
            from src.lit.sam import keep_bn_stats

            self.trainer.optimizers[0].after_second_pass(keep_bn_stats(self.model))
            return self._losses(self(x), y, mixes).sum()
        logits = self(x)
        losses = self._losses(logits, y, mixes)
        self.stats["train_"].update(logits.detach(), y, losses.detach())
        self.clock.count(y.numel())
        bad = ~torch.isfinite(losses.detach())
        self._bad_step = torch.where(bad & (self._bad_step < 0), self.global_step, self._bad_step)
        return losses.sum()  # d(sum)/d(member k's weights) is member k's own gradient

    # ------------------------------------------------------------------ divergence, per member
    def _check_diverged(self) -> None:
        """Freeze out the members whose loss turned NaN/Inf (one host sync); when none is left,
        stop the pack (train_pack records each member's outcome)."""
        from src.lit.classifier import Diverged

        bad = self._bad_step.tolist()
        for k, step in enumerate(bad):
            if step >= 0 and self.alive[k]:
                self.alive[k] = False
                self.on_diverged(k, self.current_epoch, step)
        if not any(self.alive):
            raise Diverged(self.current_epoch, min(s for s in bad if s >= 0))

    def on_train_batch_end(self, outputs, batch, batch_idx):
        self._warmup_end(batch)
        last = batch_idx + 1 >= self.trainer.num_training_batches
        if last or (batch_idx + 1) % self.hp.divergence_check_every == 0:
            self._check_diverged()

    # ------------------------------------------------------------------ evaluation
    def _eval_batch(self, batch):
        x, y = batch
        dm = self.datamodules[0]
        shared = x.dim() == 4  # one batch for every member (PackData.shared_eval)
        if shared:
            return self._normalize(dm, x), y.expand(self.size, -1), True
        xs = [self._normalize(d, x[k]) for k, d in enumerate(self.datamodules)]
        return torch.stack(xs), y, False

    def validation_step(self, batch, batch_idx):
        x, y, shared = self._eval_batch(batch)
        logits = self(x, shared=shared)
        self.stats["val_"].update(logits, y, self._losses(logits, y), masked=True)

    def test_step(self, batch, batch_idx):
        x, y, shared = self._eval_batch(batch)
        logits = self(x, shared=shared)
        self.stats["test_"].update(logits, y, self._losses(logits, y), masked=True)
        for k in range(self.size):
            self.confusions[k].update(logits[k], y[k])
        if self.tta != "none":
            tta = self._tta(x, logits, shared)
            self.stats["test_tta_"].update(tta, y, self._losses(tta, y), masked=True)

    def _tta(self, x, logits, shared: bool) -> torch.Tensor:
        """Test-time augmentation per member: src/lit/tta.py on a flattened [K*B] batch view."""
        from src.lit.tta import tta_logits

        k, b = logits.shape[:2]
        flat = x if shared else x.flatten(0, 1)

        def model(v):
            return self(v, shared=True) if shared else self(v.unflatten(0, (k, b))).flatten(0, 1)

        out = tta_logits(model, flat, logits if shared else logits.flatten(0, 1), self.tta)
        return out.view(k, b, -1) if not shared else out

    # ------------------------------------------------------------------ epoch bookkeeping
    def _log_members(self, values: dict[str, torch.Tensor]) -> None:
        for k in range(self.size):
            if self.alive[k]:
                for name, v in values.items():
                    self.log(member_key(k, name), v[k])

    def _stage(self, stage: str) -> tuple[torch.Tensor, torch.Tensor]:
        acc, loss = self.stats[stage + "_"].compute()
        self.stats[stage + "_"].reset()
        return acc, loss

    def on_train_epoch_start(self):
        self.clock.start_epoch(self.device)

    def on_validation_epoch_start(self):
        if self.trainer.training:
            self._check_diverged()
            self.clock.train_done(self.device)

    def on_validation_epoch_end(self):
        if self.trainer.sanity_checking:
            self.stats["val_"].reset()
            return
        acc, loss = self._stage("val")
        accs = acc.tolist()
        for k in range(self.size):  # strictly better, as ModelCheckpoint counts
            if self.alive[k] and (self.best_val[k] is None or accs[k] > self.best_val[k]):
                self.best_val[k], self.best_val_epoch[k] = accs[k], self.current_epoch
        best = torch.tensor([b if b is not None else float("nan") for b in self.best_val])
        self._log_members({"val/acc": acc, "val/loss": loss, "val/acc_best": best})

    def on_train_epoch_end(self):
        self._check_diverged()
        self.clock.end_epoch(self.device)
        acc, loss = self._stage("train")
        per_member = torch.full((self.size,), self.clock.last_images_per_s / self.size)
        self._log_members({"train/acc": acc, "train/loss": loss, "time/train_images_per_s": per_member})
        self.log("time/epoch_s", self.clock.epoch_times[-1])

    def on_test_epoch_start(self):
        self.clock.start_eval(self.device)

    def on_test_epoch_end(self):
        self.clock.end_eval(self.device, int(self.stats["test_"].seen.sum()))
        acc, loss = self._stage("test")
        values = {"test/acc": acc, "test/loss": loss}
        if self.tta != "none":
            values.update(zip(("test/acc_tta", "test/loss_tta"), self._stage("test_tta")))
        self._log_members(values)
        for k in range(self.size):
            self.test_results[k] = {name: float(v[k]) for name, v in values.items()}
            self._log_confusion(k)

    # ------------------------------------------------------------------ figures, per member
    def on_fit_start(self):
        if self.members[0].activation is None or not self.hp.log_images:
            return
        from src.run_figures import activation_figure

        figure = None  # one figure for all: the members share their activation
        for k in range(self.size):
            if (tb := self._tensorboard(k)) is not None:
                figure = figure or activation_figure([self.members[0].activation])
                tb.add_figure("activation", figure, 0, close=False)

    def _tensorboard(self, k: int):
        loggers = self.trainer.loggers if self._trainer is not None else []
        return loggers[0].tensorboard(k) if loggers and hasattr(loggers[0], "tensorboard") else None

    def _log_confusion(self, k: int) -> None:
        """Member k's test_confusion.csv in its run folder and its TensorBoard figure, as
        ClassifierModule._log_confusion writes a standalone run's."""
        from src import run_figures

        counts = self.confusions[k].compute().cpu().numpy()
        self.confusions[k].reset()
        if self.alive[k]:
            run_figures.log_confusion(counts, list(self.datamodules[k].classes or []),
                                      self.dirs[k] if k < len(self.dirs) else None, self._tensorboard(k), self.global_step)

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self):
        lead = self.members[0]
        params = split_decay_groups(self.model, stacked=1) if self.hp.no_decay_norm_bias else self.model.parameters()
        optimizer = lead.optimizer_factory(params=params)
        if hasattr(optimizer, "pack_size"):  # SAM: its epsilon per member
            optimizer.pack_size = self.size
        return optimizers_for(self.trainer, optimizer, lead.scheduler_factory)

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        """Clipping by norm clips each member by its own norm (torch's clip_grad_norm_ per member)."""
        if not gradient_clip_val:
            return
        if gradient_clip_algorithm not in (None, "norm"):
            return self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        norms = member_norms(grads)
        coef = (float(gradient_clip_val) / (norms + 1e-6)).clamp(max=1.0)
        torch._foreach_mul_(grads, [coef.view(-1, *([1] * (g.dim() - 1))).to(g.dtype) for g in grads])

    # ------------------------------------------------------------------ compile warm-up timing
    def _batch_images(self, batch) -> int:
        """Every member's images: a shared evaluation batch ([B] labels) serves all K members."""
        return self.size * batch[1].shape[-1]

    # ------------------------------------------------------------------ members' view, resume
    def member_clock(self, k: int) -> RunClock:
        """Member k's clock: the pack's times, its own images (a K-th of the pack's)."""
        clock = copy.copy(self.clock)
        clock.train_images = self.clock.train_images // self.size
        clock.eval_images = self.clock.eval_images // self.size
        return clock

    def member_run_stats(self, k: int) -> dict:
        return {**self.member_clock(k).state_dict(), "best_val_epoch": self.best_val_epoch[k],
                "val_acc_best": self.best_val[k]}

    def load_member_run_stats(self, stats: list[dict]) -> None:
        """A resumed pack: the members' histories (their checkpoints' run_stats)."""
        self.clock.load_state_dict(stats[0])
        self.clock.train_images = sum(s["train_images"] for s in stats)
        for k, s in enumerate(stats):
            self.best_val_epoch[k], self.best_val[k] = s.get("best_val_epoch"), s.get("val_acc_best")

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Every member's run statistics travel with the pack's checkpoint (cut per member by
        src/packs/checkpoints.py into each member's own ``run_stats``)."""
        checkpoint["pack"] = {"alive": list(self.alive), "stats": [self.member_run_stats(k) for k in range(self.size)]}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        pack = checkpoint.get("pack")
        if pack and self._trainer is not None and self.trainer.state.fn == "fit":
            self.load_member_run_stats(pack["stats"])

    def _log_image_grid(self, k: int, x: torch.Tensor) -> None:
        tb = self._tensorboard(k)
        if not self.hp.log_images or tb is None:
            return
        from src.run_figures import log_image_grid

        log_image_grid(tb, x, self.datamodules[k].denormalize)

