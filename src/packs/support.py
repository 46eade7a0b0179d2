"""What a fused seed pack can train, checked on each job's composed config before any job starts.

A pack trains its members as one vectorised model (src/packs/stack.py). Everything that takes a norm
or a decision over a whole model is done per member (SAM's epsilon, gradient clipping by norm, the
divergence check, best-checkpoint selection, EMA/SWA, mixup/CutMix, TTA); what is not per member
yet is refused here in one line, never trained wrongly:

- DDP (several processes per run) and an Optuna search (a trial is one run with its own sampled
  values, not a seed of a setting);
- early stopping: Lightning's EarlyStopping stops the whole Trainer, so a member whose val/loss
  stalled would stop the others;
- gradient accumulation: SAM and the per-member clipping see one batch per step;
- ``16-mixed`` precision: its GradScaler skips a step for every member when one member's gradient
  is not finite (bf16-mixed and 32-true have no scaler);
- experiment trackers (MLflow, W&B): they log one run per process, a pack writes K runs (its members'
  TensorBoard and CSV logs are written as usual);
- a model with a BatchNorm whose momentum is None (a cumulative average reads its batch count on
  the host, which vmap cannot do), checked when the pack is built.
"""
from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from src.errors import ConfigError

SIZES_HELP = "seeds_per_job=1 trains each seed as its own job"


def requested_size(value) -> int | str:
    """``seeds_per_job`` as given: a positive int or ``auto``."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    try:
        k = int(value)
    except (TypeError, ValueError):
        k = 0
    if k < 1 or str(value).strip() not in (str(k), f"{k}.0"):
        raise ConfigError(f"seeds_per_job={value!r} is not valid: use auto, 1 (no packs) or a number of seeds K >= 2")
    return k


def check_pack(cfg: DictConfig) -> None:
    """Refuse, in one line, a job config a pack cannot train member by member."""
    if OmegaConf.select(cfg, "trial") is not None or OmegaConf.select(cfg, "hparams_search") is not None:
        raise ConfigError(f"seeds_per_job packs the seeds of a grid sweep; an Optuna search's trials are no seeds "
                          f"of one setting: {SIZES_HELP}")
    trainer = cfg.get("trainer") or {}
    devices, nodes = trainer.get("devices", 1), trainer.get("num_nodes", 1)
    if "ddp" in str(trainer.get("strategy", "")) or (isinstance(devices, int) and devices > 1) or nodes not in (1, None):
        raise ConfigError(f"seeds_per_job packs cannot run under DDP (trainer.strategy/devices/num_nodes): {SIZES_HELP}")
    if int(trainer.get("accumulate_grad_batches", 1) or 1) > 1:
        raise ConfigError(f"seeds_per_job packs need trainer.accumulate_grad_batches=1: {SIZES_HELP}")
    if str(trainer.get("precision", "")).startswith("16"):
        raise ConfigError(f"seeds_per_job packs cannot use trainer.precision=16-mixed (its GradScaler would skip "
                          f"every member's step for one member's overflow): use bf16-mixed or 32-true, or {SIZES_HELP}")
    from src.tracking.job import tracker_entries

    if trackers := tracker_entries(cfg):
        raise ConfigError(f"seeds_per_job packs write K runs from one process, which the experiment tracker(s) "
                          f"{', '.join(sorted(trackers))} cannot log: use logger=default (TensorBoard + CSV), or {SIZES_HELP}")
    for name, cb in (cfg.get("callbacks") or {}).items():
        target = str((cb or {}).get("_target_", ""))
        if target.endswith("EarlyStopping"):
            raise ConfigError(f"early stopping (callbacks.{name}) stops the whole pack, not one member: drop it "
                              f"(callbacks=default) or set {SIZES_HELP}")
