"""Train and test one image classifier; every choice comes from conf/ (see `--help`, `--cfg job`).

    python train.py model=lenet5 data=mnist trainer.max_epochs=1
    python train.py -m activation=relu,swish seed=0,1,2
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import hydra
from omegaconf import DictConfig

import src.resolvers  # noqa: F401  (registers the ${auto_precision:} etc. resolvers)
from src.cli import check_group_choices, check_jobs, one_line_errors
from src.ddp.guards import check_ddp_command

if TYPE_CHECKING:
    import lightning as L


def train(cfg: DictConfig) -> float:
    # imported here, not at the top: the pre-check in `__main__` refuses bad input in about a second
    # without them (Lightning alone takes ~7 s to import on a 2-core machine)
    import lightning as L
    from hydra.utils import instantiate

    from src.config_schema import validate
    from src.datamodules import build_datamodule
    from src.ddp.ranks import is_launch_rank_zero
    from src.provenance import utc_now
    from src.results import collect, log_hparams, write_json
    from src.runs import FAILED_VALUE, in_multirun, previous_result, recorded_outcome, resume_checkpoint
    from src.sweeps.pruning import trial_pruning
    from src.tracking.job import tracked_runs

    validate(cfg)
    if len(cfg.get("pack_seeds") or []) > 1:  # seeds_per_job: this job trains several seeds as one pack
        from src.packs.train import train_pack

        return train_pack(cfg)
    if (done := previous_result(cfg)) is not None:  # resume=true: a completed run is kept as it is
        return done[cfg.optimized_metric]
    start, started = time.perf_counter(), utc_now()
    # tracked_runs outside: MLflow/W&B runs end once recorded_outcome has written metrics.json
    with tracked_runs(cfg) as tracking, recorded_outcome(cfg):
        if cfg.get("seed") is not None:  # not `if cfg.get("seed")`: seed 0 is a seed
            L.seed_everything(cfg.seed, workers=True, verbose=not in_multirun())

        datamodule = build_datamodule(cfg.data)  # not instantiate(): cfg.data also holds its source's options
        model = instantiate(cfg.model)  # the activation factory arrives through ${activation}
        module = instantiate(cfg.lit, model=model)
        module.clock.session_start = start  # the session's wall time, as metrics.json reports it
        callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values()]
        if pruning := trial_pruning(cfg):  # an Optuna search trial (hydra/sweeper=optuna)
            callbacks.append(pruning)
        loggers = [tracking.build(lg) for lg in (cfg.get("logger") or {}).values()]  # trackers get the job
        trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)

        trainer.fit(module, datamodule=datamodule, ckpt_path=resume_checkpoint(cfg), weights_only=True)
        weights = _weights_to_test(cfg, trainer)
        tested = trainer.test(module, datamodule=datamodule, ckpt_path=weights, weights_only=True,
                              verbose=not in_multirun())  # a sweep prints one table at the end instead

        metrics = collect(cfg, trainer, module, tested[0], time.perf_counter() - start, started)
        metrics["tested_weights"] = "final" if weights is None else "best_val"
        if pruning and pruning.pruned_epoch is not None:
            metrics.update(status="pruned", pruned_epoch=pruning.pruned_epoch)
        if is_launch_rank_zero():  # DDP: every rank trains and tests, rank 0 alone writes the result
            write_json(Path(cfg.paths.output_dir) / "metrics.json", metrics)
        log_hparams(loggers, cfg, metrics)
        return metrics[cfg.optimized_metric]
    return FAILED_VALUE  # only reached in a sweep, after the failure was recorded


def _weights_to_test(cfg: DictConfig, trainer: L.Trainer) -> str | None:
    """The checkpoint to test, None for the final weights in memory. Only a real hold-out
    (data.val_size > 0) may pick the best epoch: with validation on the test split (the studies'
    default) the best val/acc is a maximum over the test curve, so the final weights are tested and
    the peak stays visible as val/acc_best, marked as selected on the test split."""
    ckpt = trainer.checkpoint_callback
    if not cfg.data.get("val_size") or ckpt is None:
        return None
    return ckpt.best_model_path or ckpt.last_model_path or None


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float:
    with one_line_errors():
        return train(cfg)


if __name__ == "__main__":
    with one_line_errors():
        check_group_choices(sys.argv[1:])
        check_jobs(sys.argv[1:])  # every job's config is valid before any job starts
        check_ddp_command(sys.argv[1:])  # DDP jobs a launcher cannot run are refused now
    main()
