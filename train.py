"""Train and test one image classifier; every choice comes from conf/ (see `--help`, `--cfg job`).

    python train.py model=lenet5 data=mnist trainer.max_epochs=1
    python train.py -m activation=relu,swish seed=0,1,2
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import hydra
import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig

import src.resolvers  # noqa: F401  (registers the ${auto_precision:} etc. resolvers)
from src.cli import check_group_choices, one_line_errors
from src.results import collect, log_hparams, write_json


def train(cfg: DictConfig) -> float:
    start = time.perf_counter()
    if cfg.get("seed") is not None:  # not `if cfg.get("seed")`: seed 0 is a seed
        L.seed_everything(cfg.seed, workers=True)

    datamodule = instantiate(cfg.data)
    model = instantiate(cfg.model)  # the activation factory arrives through ${activation}
    module = instantiate(cfg.lit, model=model)
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values()]
    loggers = [instantiate(lg) for lg in (cfg.get("logger") or {}).values()]
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)

    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    test_metrics = trainer.test(module, datamodule=datamodule, ckpt_path=_best_or_last(trainer))[0]

    metrics = collect(cfg, trainer, module, test_metrics, time.perf_counter() - start)
    write_json(Path(cfg.paths.output_dir) / "metrics.json", metrics)
    log_hparams(loggers, cfg, metrics)
    return metrics[cfg.optimized_metric]


def _best_or_last(trainer: L.Trainer) -> str | None:
    ckpt = trainer.checkpoint_callback
    if ckpt is None:  # fast_dev_run or no checkpoint callback: test the weights in memory
        return None
    return ckpt.best_model_path or ckpt.last_model_path or None


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float:
    with one_line_errors():
        return train(cfg)


if __name__ == "__main__":
    with one_line_errors():
        check_group_choices(sys.argv[1:])
    main()
