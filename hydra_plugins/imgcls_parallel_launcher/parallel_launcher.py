"""Hydra finds its plugins in the ``hydra_plugins`` namespace package: this shim registers the
parallel launcher and its options. It is hydra-joblib-launcher's JoblibLauncher (same options,
same workers) whose ``launch`` keeps a dead worker's fault to its own job: src/sweeps/launch.py."""
# No `from __future__ import annotations`: Hydra imports plugin modules outside sys.modules, where
# dataclasses cannot resolve string annotations.
from dataclasses import dataclass
from typing import Any, Sequence

from hydra.core.config_store import ConfigStore
from hydra_plugins.hydra_joblib_launcher.config import JobLibLauncherConf
from hydra_plugins.hydra_joblib_launcher.joblib_launcher import JoblibLauncher


@dataclass
class ParallelLauncherConf(JobLibLauncherConf):
    _target_: str = "hydra_plugins.imgcls_parallel_launcher.parallel_launcher.ParallelLauncher"
    # a job whose worker died (kill -9, OOM killer, segfault) is run again this many times, with resume=true
    retry_killed: int = 0


ConfigStore.instance().store(group="hydra/launcher", name="imgcls_parallel", node=ParallelLauncherConf,
                             provider="imgcls-studies")


class ParallelLauncher(JoblibLauncher):
    def __init__(self, retry_killed: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)  # the joblib options (n_jobs, ...): self.joblib, as the runners read them
        self.retry_killed = int(retry_killed)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Any:
        from src.sweeps.launch import launch_jobs

        return launch_jobs(self, job_overrides, initial_job_idx, retry_killed=self.retry_killed)
