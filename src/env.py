"""The project's own environment variables (all named ``IMGCLS_*``): each is named here once and
read through :func:`get`, so a rename or a typo cannot split one variable into two.

Most carry state from a launching process to the jobs and ranks it starts (a sweep's GPU slots, an
MLflow parent run, the DDP launcher); a few are user switches (fake GPUs for CPU tests, no Triton,
where compiled kernels and decoded data sets are kept). Other tools' variables (CUDA_VISIBLE_DEVICES,
TORCHINDUCTOR_*, MLFLOW_*, WANDB_*) are read where they are used.

Imports nothing of the project, Lightning or Hydra: the data layer, the models and the sweep
launcher all read it without an import cycle.
"""
from __future__ import annotations

import os

# a parallel sweep (src/sweeps/callback.py sets them in the launching process; its workers read them)
ENV_GPUS = "IMGCLS_SWEEP_GPUS"         # the parent's GPU ids, comma-separated ("" = CPU only)
ENV_N_JOBS = "IMGCLS_SWEEP_N_JOBS"     # parallel jobs of the sweep
ENV_PER_GPU = "IMGCLS_SWEEP_JOBS_PER_GPU"
ENV_SLOT_DIR = "IMGCLS_GPU_SLOT_DIR"   # where the slot lock files live (one folder per launching process)
ENV_PARENT = "IMGCLS_SWEEP_PARENT_PID"  # set: this process is a job of a parallel sweep
ENV_COMPILE_THREADS_SET = "IMGCLS_COMPILE_THREADS_SET"  # we set TORCHINDUCTOR_COMPILE_THREADS (not the user)
FAKE_GPUS = "IMGCLS_FAKE_GPUS"         # user/test switch: pretend these GPU ids exist ("0,1")

# experiment tracking and DDP
ENV_PARENT_RUN = "IMGCLS_MLFLOW_PARENT_RUN"  # set by the sweep's launching process for its jobs
LAUNCHER_PID = "IMGCLS_DDP_LAUNCHER_PID"     # the process that started this job's DDP ranks

# user switches
NO_TRITON = "IMGCLS_NO_TRITON"    # 1: fused activations run their torch code, never Triton kernels
KERNEL_DIR = "IMGCLS_KERNEL_DIR"  # where generated Triton kernels are written (default: the temp dir)
CACHE_DIR = "IMGCLS_CACHE_DIR"    # decoded data sets; read by conf/paths/default.yaml (paths.cache_dir)

NAMES = frozenset({ENV_GPUS, ENV_N_JOBS, ENV_PER_GPU, ENV_SLOT_DIR, ENV_PARENT, ENV_COMPILE_THREADS_SET,
                   FAKE_GPUS, ENV_PARENT_RUN, LAUNCHER_PID, NO_TRITON, KERNEL_DIR, CACHE_DIR})


def get(name: str, default: str | None = None) -> str | None:
    """The value of one of the variables above (``default`` when unset)."""
    if name not in NAMES:  # a misspelt name would silently read nothing
        raise KeyError(f"{name} is not one of the project's environment variables (src/env.py)")
    return os.environ.get(name, default)
