"""Moved to the src/sweeps/ package: the Hydra callback is src/sweeps/callback.py, the live status
src/sweeps/status.py, the GPU slots src/sweeps/slots.py. Kept so that older configs
(``_target_: src.sweep_callbacks.SweepCallback``) and imports keep working."""
from src.sweeps.callback import SweepCallback, _bad_runs, _is_parallel  # noqa: F401
from src.sweeps.slots import (  # noqa: F401
    ENV_GPUS, ENV_N_JOBS, ENV_PARENT, ENV_PER_GPU, ENV_SLOT_DIR, FAKE_GPUS, cpu_cores, cpu_parallel_jobs,
    is_cuda_error, parallel_jobs, retire_worker, take_slot, visible_gpus)
from src.sweeps.status import LiveStatus, count_jobs, sweep_state  # noqa: F401
