"""Compose the real config outside `python train.py` (tests, benchmarks, notebooks), with Hydra's
runtime information set so that train() behaves as it does under @hydra.main."""
from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

import src.resolvers  # noqa: F401

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


def compose_config(overrides: list[str], output_dir: str | Path) -> DictConfig:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[*overrides, f"paths.output_dir={output_dir}"], return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg
