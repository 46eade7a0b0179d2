"""`trainer.strategy=ddp` as Lightning's DDPStrategy, with the processes it starts made to fit Hydra.

Lightning starts ranks 1..n-1 of a machine by running the script again from ``sys.argv`` (plus
``hydra.run.dir=<rank 0's run.dir>``). Under Hydra that goes wrong twice (lightning-hydra-template
issue 393): in a multirun ``sys.argv`` holds ``-m`` and the whole sweep, so every rank would start
the sweep again; and ``hydra.run.dir`` is the single-run folder, not the job's. Here each rank is
started as a single run of *this job*: ``train.py`` with the job's own overrides, its output folder
as ``hydra.run.dir`` and ``hydra.output_subdir=null`` (rank 0 alone writes ``.hydra/``). The ranks
therefore share one run folder even when it is named by ``${now:...}``.

Each rank also gets its own random stream after the model is built (augmentation, dropout, mixup
would otherwise draw the same numbers on every rank); the weights are rank 0's, broadcast by DDP.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher

from src import env
from src.ddp.ranks import LAUNCH_VARS
# LAUNCHER_PID is set in the launching process once it has started ranks (its children inherit the
# value, which is then not their own pid): the next job of a sequential sweep there clears what is left
from src.env import LAUNCHER_PID

TRAIN_SCRIPT = Path(__file__).resolve().parents[2] / "train.py"


def _hydra_value(text: str) -> str:
    """``text`` as a quoted Hydra override value (a path may hold '=' and ',')."""
    quote = "'" if "'" not in text else '"'
    return f"{quote}{text}{quote}"


def rank_command(local_rank: int) -> tuple[list[str], str]:
    """(command, cwd) that starts ``local_rank`` as a single run of the current Hydra job."""
    from hydra.core.hydra_config import HydraConfig

    hc = HydraConfig.get()
    command = [sys.executable, str(TRAIN_SCRIPT), *hc.overrides.task,
               f"hydra.run.dir={_hydra_value(str(hc.runtime.output_dir))}", "hydra.output_subdir=null",
               f"hydra.job.name={hc.job.name}_rank{local_rank}"]  # its own log file beside rank 0's
    return command, hc.runtime.cwd


class _RankLauncher(_SubprocessScriptLauncher):
    def _call_children_scripts(self) -> None:
        from hydra.core.hydra_config import HydraConfig

        if not HydraConfig.initialized():  # not under train.py (a notebook, a test): Lightning's own way
            return super()._call_children_scripts()
        self._check_can_spawn_children()
        self.procs = []
        env = self.cluster_environment
        os.environ.update(MASTER_ADDR=env.main_address, MASTER_PORT=str(env.main_port),
                          NODE_RANK=str(env.node_rank()), LOCAL_RANK=str(env.local_rank()),
                          WORLD_SIZE=str(self.num_processes * self.num_nodes))
        os.environ[LAUNCHER_PID] = str(os.getpid())
        for local_rank in range(1, self.num_processes):
            child_env = {**os.environ, "LOCAL_RANK": str(local_rank)}
            if os.environ.get("PL_GLOBAL_SEED") is None:
                child_env.pop("PL_GLOBAL_SEED", None)
            command, cwd = rank_command(local_rank)
            self.procs.append(subprocess.Popen(command, env=child_env, cwd=cwd))


class RunDDPStrategy(DDPStrategy):
    """DDP whose extra ranks are started by :func:`rank_command` (one launcher per strategy)."""

    def __init__(self, **kwargs):
        forget_earlier_ranks()  # before Lightning reads the environment to pick its cluster environment
        super().__init__(**kwargs)

    def _configure_launcher(self) -> None:
        super()._configure_launcher()
        if isinstance(self._launcher, _SubprocessScriptLauncher):
            self._launcher = _RankLauncher(self.cluster_environment, self.num_processes, self.num_nodes)

    def setup_environment(self) -> None:
        super().setup_environment()
        if self.world_size > 1:  # the same seed on every rank would give every rank the same augmentation
            torch.manual_seed((torch.initial_seed() + 1_000_003 * self.global_rank) % 2**63)


def forget_earlier_ranks() -> None:
    """In a process that started DDP ranks for an earlier job (a sequential sweep): end that job's
    process group and forget what the launcher put into the environment. With LOCAL_RANK still set,
    Lightning would take this job's ranks for started already and wait for them forever."""
    if env.get(LAUNCHER_PID) != str(os.getpid()):
        return
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    for var in (*LAUNCH_VARS, LAUNCHER_PID):
        os.environ.pop(var, None)
