"""Which DDP process this is, known before any Trainer exists (from the variables its launcher
set), so that train() can keep the run-directory guards, metrics.json and trackers to rank 0.

Lightning's launcher gives the processes it starts LOCAL_RANK >= 1 (and NODE_RANK per machine);
SLURM gives every task SLURM_PROCID; torchrun gives RANK. The launching process itself has none
of them until its Trainer starts the others: it is rank 0.
"""
from __future__ import annotations

import os

# what Lightning's launcher puts into the launching process's own environment
LAUNCH_VARS = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")


def launch_rank() -> int:
    """This process's global rank as its launcher announced it (0 when it announced none)."""
    env = os.environ
    if env.get("RANK", "").isdigit():
        return int(env["RANK"])
    # a SLURM job of several tasks (hydra/launcher=slurm with trainer=ddp): one task per GPU
    if env.get("SLURM_PROCID", "").isdigit() and int(env.get("SLURM_NTASKS", "1") or 1) > 1:
        return int(env["SLURM_PROCID"])
    local = int(env["LOCAL_RANK"]) if env.get("LOCAL_RANK", "").isdigit() else 0
    node = int(env["NODE_RANK"]) if env.get("NODE_RANK", "").isdigit() else 0
    return local if node == 0 else max(1, local + node)  # any process off node 0 is not rank 0


def is_launch_rank_zero() -> bool:
    return launch_rank() == 0
