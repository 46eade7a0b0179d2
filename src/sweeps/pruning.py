"""Optuna pruning inside a trial's run: after each validation epoch the trial reports the
per-epoch form of its objective (val/acc for val/acc_best) to the study, and stops the trainer
when the pruner says the trial trails the others. The run still tests its weights and records
``status: pruned`` in metrics.json; the sweeper tells Optuna the trial was pruned."""
from __future__ import annotations

import lightning as L
from omegaconf import DictConfig, OmegaConf


class TrialPruning(L.Callback):
    def __init__(self, trial, monitor: str):
        self.trial, self.monitor = trial, monitor
        self.pruned_epoch: int | None = None

    def on_validation_end(self, trainer, pl_module) -> None:  # after the epoch's metrics are logged
        if trainer.sanity_checking or self.pruned_epoch is not None:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            return
        epoch = trainer.current_epoch
        self.trial.report(float(value), step=epoch)
        if self.trial.should_prune():
            self.pruned_epoch = epoch
            trainer.should_stop = True


def trial_pruning(cfg: DictConfig) -> TrialPruning | None:
    """The pruning callback of a search trial (``trial`` set by the Optuna sweeper, whose options
    are in the job's hydra config); None for any other run or when pruning is off."""
    number = cfg.get("trial")
    sweeper = OmegaConf.select(cfg, "hydra.sweeper", default=None) if "hydra" in cfg else _hydra_sweeper()
    if number is None or sweeper is None or "optuna" not in str(sweeper.get("_target_", "")).lower():
        return None
    if str(sweeper.pruner) == "none" or int(sweeper.seeds_per_trial) != 1 or sweeper.objectives:
        return None
    metric = str(cfg.get("optimized_metric", ""))
    if not metric.startswith("val/"):
        return None
    import optuna

    from src.sweeps import optuna_study as st
    from pathlib import Path

    sweep_dir = Path(str(_hydra_value("sweep.dir")))
    storage = st.make_storage(st.storage_url(sweeper.storage, sweep_dir), int(sweeper.heartbeat_s), int(sweeper.grace_s))
    study = optuna.load_study(study_name=str(sweeper.study_name or sweep_dir.name), storage=storage,
                              pruner=st.make_pruner(str(sweeper.pruner), int(sweeper.pruner_startup_trials),
                                                    int(sweeper.pruner_warmup_epochs)))
    trial_id = storage.get_trial_id_from_study_id_trial_number(study._study_id, int(number))
    return TrialPruning(optuna.trial.Trial(study, trial_id), metric.removesuffix("_best"))


def _hydra_sweeper():
    try:
        from hydra.core.hydra_config import HydraConfig

        return HydraConfig.get().sweeper
    except Exception:
        return None


def _hydra_value(key: str):
    from hydra.core.hydra_config import HydraConfig

    return OmegaConf.select(HydraConfig.get(), key)
