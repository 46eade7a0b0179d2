"""`data.batch_size` under DDP: per process (per GPU) by default, or global with
`data.batch_size_is_global=true`. The learning rate is never scaled for the user: a global batch
k times larger may want a larger lr (linear scaling, warm-up), which is a study's choice."""
from __future__ import annotations

from src.errors import ConfigError


def per_process_batch(global_batch: int, world: int) -> int:
    if global_batch % world:
        raise ConfigError(f"data.batch_size={global_batch} with data.batch_size_is_global=true does not divide over "
                          f"{world} processes: use a multiple of {world} (e.g. {global_batch - global_batch % world or world}), "
                          f"or data.batch_size_is_global=false for {global_batch} per process")
    return global_batch // world
