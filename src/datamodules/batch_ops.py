"""The data-side regularisers after `data.augment` (crop/flip/...): an augmentation policy, then
cutout, then random erasing -- the order of timm and of the cutout paper (erasing last, on the
augmented image). Each is checked here, when the data module is built, before any data is read."""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from src.errors import ConfigError

POLICIES = ("none", "randaugment", "trivialaugment", "autoaugment")


def _pair(key: str, value: Sequence[float], upper: float | None) -> tuple[float, float]:
    v = tuple(value)
    if len(v) != 2 or not 0 < v[0] <= v[1] or (upper is not None and v[1] > upper):
        bound = f" <= {upper}" if upper is not None else ""
        raise ConfigError(f"data.{key}={list(v)} must be [low, high] with 0 < low <= high{bound}")
    return float(v[0]), float(v[1])


def build_batch_ops(policy: str = "none", policy_n: int = 2, policy_m: int = 9, cutout: int = 0,
                    cutout_size: int = 16, erasing: float = 0.0, erasing_area: Sequence[float] = (0.02, 0.33),
                    erasing_ratio: Sequence[float] = (0.3, 3.3),
                    erasing_value: str = "mean") -> list[Callable[[torch.Tensor], torch.Tensor]]:
    from src.datamodules.erasing import FILLS, Cutout, RandomErasing
    from src.datamodules.policies import BatchPolicy

    if policy not in POLICIES:
        raise ConfigError(f"unknown data.policy '{policy}': choose one of {', '.join(POLICIES)}")
    if not (isinstance(policy_n, int) and 0 <= policy_n <= 10):
        raise ConfigError(f"data.policy_n={policy_n} must be an integer from 0 to 10 (RandAugment's N)")
    if not (isinstance(policy_m, int) and 0 <= policy_m <= 30):
        raise ConfigError(f"data.policy_m={policy_m} must be an integer from 0 to 30 (RandAugment's M, of 31 bins)")
    if not (isinstance(cutout, int) and cutout >= 0):
        raise ConfigError(f"data.cutout={cutout} must be a number of holes >= 0 (0 = off)")
    if not (isinstance(cutout_size, int) and cutout_size >= 2):
        raise ConfigError(f"data.cutout_size={cutout_size} must be an integer side length >= 2 pixels")
    if not 0 <= erasing <= 1:
        raise ConfigError(f"data.erasing={erasing} must be a probability in [0, 1] (0 = off)")
    area = _pair("erasing_area", erasing_area, 1.0)
    ratio = _pair("erasing_ratio", erasing_ratio, None)
    if erasing_value not in FILLS:
        raise ConfigError(f"data.erasing_value='{erasing_value}' must be one of {', '.join(FILLS)}")
    ops: list[Callable[[torch.Tensor], torch.Tensor]] = []
    if policy != "none" and not (policy == "randaugment" and policy_n == 0):
        ops.append(BatchPolicy(policy, policy_n, policy_m))
    if cutout:
        ops.append(Cutout(cutout, cutout_size))
    if erasing > 0:
        ops.append(RandomErasing(erasing, area, ratio, erasing_value))
    return ops
