"""Optuna pruning inside a trial's run: after each validation epoch the trial reports the
per-epoch form of its objective (val/acc for val/acc_best) to the study, and stops the trainer
when the pruner says the trial trails the others. The run still tests its weights and records
``status: pruned`` in metrics.json; the sweeper tells Optuna the trial was pruned."""
from __future__ import annotations

import lightning as L
from omegaconf import DictConfig, OmegaConf


class TrialPruning(L.Callback):
    """``trial`` is None on DDP ranks other than 0: rank 0 alone reports to the study and decides,
    and every rank stops with it (a rank that stopped alone would leave the others waiting)."""

    def __init__(self, trial, monitor: str):
        self.trial, self.monitor = trial, monitor
        self.pruned_epoch: int | None = None

    def on_validation_end(self, trainer, pl_module) -> None:  # after the epoch's metrics are logged
        if trainer.sanity_checking or self.pruned_epoch is not None:
            return
        epoch = trainer.current_epoch
        prune = False
        value = trainer.callback_metrics.get(self.monitor)
        # the last epoch is never pruned: the run has finished, and its result is what the search needs
        max_epochs = getattr(trainer, "max_epochs", None)
        last = max_epochs is not None and 0 < max_epochs <= epoch + 1
        if self.trial is not None and value is not None:  # no early return: the other ranks wait below
            self.trial.report(float(value), step=epoch)
            prune = self.trial.should_prune() and not last
        strategy = getattr(trainer, "strategy", None)
        if strategy is not None and getattr(trainer, "world_size", 1) > 1:
            prune = bool(strategy.broadcast(prune, src=0))
        if prune:
            self.pruned_epoch = epoch
            trainer.should_stop = True


def trial_pruning(cfg: DictConfig) -> TrialPruning | None:
    """The pruning callback of a search trial (``trial`` set by the Optuna sweeper, whose options
    are in the job's hydra config); None for any other run. Whether a run has the callback depends
    on its task config alone (``trial``, ``optimized_metric``), so that every DDP rank has it (ranks
    other than 0 are started without the hydra overrides); where pruning is off, and on those
    ranks, it holds no trial and only joins rank 0's decision."""
    number = cfg.get("trial")
    metric = str(cfg.get("optimized_metric", ""))
    if number is None or not metric.startswith("val/"):
        return None
    monitor = metric.removesuffix("_best")
    from src.ddp.ranks import is_launch_rank_zero

    sweeper = OmegaConf.select(cfg, "hydra.sweeper", default=None) if "hydra" in cfg else _hydra_sweeper()
    if not is_launch_rank_zero() or sweeper is None or "optuna" not in str(sweeper.get("_target_", "")).lower():
        return TrialPruning(None, monitor)
    if str(sweeper.pruner) == "none" or int(sweeper.seeds_per_trial) != 1 or sweeper.objectives:
        return TrialPruning(None, monitor)
    import optuna

    from pathlib import Path

    from src.sweeps import optuna_study as st

    sweep_dir = Path(str(_hydra_value("sweep.dir")))
    storage = st.make_storage(st.storage_url(sweeper.storage, sweep_dir), int(sweeper.heartbeat_s), int(sweeper.grace_s))
    study = optuna.load_study(study_name=st.study_name(sweeper, sweep_dir), storage=storage,
                              pruner=st.make_pruner(str(sweeper.pruner), int(sweeper.pruner_startup_trials),
                                                    int(sweeper.pruner_warmup_epochs)))
    # the running trial, joined by its id: Trial(study, trial_id) is public, if meant for Optuna's own loop
    return TrialPruning(optuna.trial.Trial(study, st.trial_id(storage, study, int(number))), monitor)


def _hydra_sweeper():
    try:
        from hydra.core.hydra_config import HydraConfig

        return HydraConfig.get().sweeper
    except Exception:
        return None


def _hydra_value(key: str):
    from hydra.core.hydra_config import HydraConfig

    return OmegaConf.select(HydraConfig.get(), key)
