"""Hydra finds its plugins in the ``hydra_plugins`` namespace package: this shim registers the
sweeper and its options and leaves all the work to src/sweeps/."""
from __future__ import annotations

from typing import Any, List

from hydra.core.config_store import ConfigStore
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from src.sweeps.optuna_config import OptunaSweeperConf

ConfigStore.instance().store(group="hydra/sweeper", name="optuna", node=OptunaSweeperConf, provider="imgcls-studies")


class OptunaSweeper(Sweeper):
    def __init__(self, **options: Any) -> None:
        self.options = options
        self.config: DictConfig | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: List[str]) -> Any:
        from src.sweeps.optuna_sweep import sweep

        return sweep(self.config, self.launcher, arguments)
