"""SLURM parameters of a DDP job (conf/hydra/launcher/slurm.yaml): one task per GPU, on
`trainer.num_nodes` nodes, and Lightning's SLURMEnvironment takes the ranks from SLURM_PROCID.
A job that is not DDP keeps one task. Registered as OmegaConf resolvers in src/resolvers.py."""
from __future__ import annotations

from src.errors import ConfigError


def _is_ddp(strategy) -> bool:
    return str(strategy).split("_", 1)[0] == "ddp"  # ddp, ddp_find_unused_parameters_true, ...


def slurm_tasks_per_node(strategy, gpus_per_node, devices) -> int:
    """Tasks per node: one per GPU under DDP (Lightning checks that trainer.devices agrees)."""
    if not _is_ddp(strategy):
        return 1
    gpus = int(gpus_per_node)
    if str(devices).lstrip("-").isdigit() and int(devices) not in (-1, gpus):
        raise ConfigError(f"trainer.devices={devices} but hydra.launcher.gpus_per_node={gpus}: on SLURM each GPU "
                          f"of a node is one DDP task; set hydra.launcher.gpus_per_node={devices} or trainer.devices=auto")
    return gpus


def slurm_nodes(strategy, num_nodes) -> int:
    return int(num_nodes) if _is_ddp(strategy) else 1
