"""Typed schemas for the options users set most, checked on the composed config before any data
is read or a GPU is touched. One dataclass per config group; a field's metadata gives its range or
its allowed values. Only keys present in the config are checked (optimizers differ in options)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf

from src.compose import CONF_DIR
from src.datamodules.augment import AUGMENT_PRESETS
from src.datamodules.cifar100_svhn import LABEL_TYPES
from src.errors import ConfigError
from src.lit.losses import LOSSES
from src.lit.schedules import INTERVALS
from src.lit.speed import COMPILE_MODES
from src.models.lenet import POOLS


def opt(kind: type | tuple, *, gt=None, ge=None, lt=None, le=None, choices=None, nullable=False) -> Any:
    return field(default=None, metadata=dict(kind=kind, gt=gt, ge=ge, lt=lt, le=le, choices=choices,
                                             nullable=nullable))


NUMBER = (int, float)
# data.name names the conf/data/<name>.yaml it comes from (whose source: node reads the dataset)
DATA_CONFIGS = tuple(sorted(p.stem for p in (CONF_DIR / "data").glob("*.yaml")))
PRECISIONS = ("32-true", "32", "16-mixed", "bf16-mixed", "bf16-true", "16-true", "64-true", "transformer-engine")


@dataclass
class DataOptions:
    name: str = opt(str, choices=DATA_CONFIGS)
    download: Any = opt((str, bool), choices=("auto", True, False))
    channels: int = opt(int, choices=(1, 3))
    image_size: int = opt(int, ge=8, le=1024)
    num_classes: int = opt(int, ge=2)
    batch_size: int = opt(int, ge=1)
    batch_size_is_global: bool = opt(bool)
    eval_batch_size: int = opt(int, ge=1, nullable=True)
    crop_padding: int = opt(int, ge=0, le=64)
    rotate_degrees: float = opt(NUMBER, ge=0, le=180)
    augment: str = opt(str, choices=AUGMENT_PRESETS)
    train_fraction: float = opt(NUMBER, gt=0, le=1)
    test_fraction: float = opt(NUMBER, gt=0, le=1)
    val_size: float = opt(NUMBER, ge=0)
    merge_val_into_train: bool = opt(bool)
    grayscale: bool = opt(bool)
    on_device: Any = opt((str, bool), choices=("auto", True, False))
    verify_counts: bool = opt(bool)
    folds: int = opt(int, ge=0)
    fold: int = opt(int, ge=0)
    test_size: float = opt(NUMBER, gt=0)
    split_seed: int = opt(int, ge=0)
    skip_bad_images: bool = opt(bool)
    label_type: str = opt(str, choices=LABEL_TYPES)
    svhn_extra: bool = opt(bool)
    root: str = opt(str, nullable=True)


@dataclass
class TrainerOptions:
    max_epochs: int = opt(int, ge=1)
    accelerator: str = opt(str, choices=("auto", "cpu", "gpu", "cuda", "mps", "tpu"))
    precision: str = opt((str, int), choices=PRECISIONS + (32, 16, 64))
    deterministic: bool = opt((bool, str), choices=(True, False, "warn"))
    check_val_every_n_epoch: int = opt(int, ge=1)
    log_every_n_steps: int = opt(int, ge=1)
    gradient_clip_val: float = opt(NUMBER, gt=0, nullable=True)
    limit_train_batches: float = opt(NUMBER, gt=0, nullable=True)
    limit_val_batches: float = opt(NUMBER, ge=0, nullable=True)
    limit_test_batches: float = opt(NUMBER, gt=0, nullable=True)
    compile: Any = opt((str, bool), choices=("off", "auto", True, False, *COMPILE_MODES))
    channels_last: Any = opt((str, bool), choices=("auto", True, False))
    estimate_minutes: float = opt(NUMBER, ge=0, nullable=True)


@dataclass
class OptimizerOptions:
    lr: float = opt(NUMBER, gt=0)
    momentum: float = opt(NUMBER, ge=0, lt=1)
    weight_decay: float = opt(NUMBER, ge=0)
    rho: float = opt(NUMBER, gt=0)
    adaptive: bool = opt(bool)
    eps: float = opt(NUMBER, gt=0)


@dataclass
class SchedulerOptions:
    eta_min: float = opt(NUMBER, ge=0)
    gamma: float = opt(NUMBER, gt=0, le=1)
    interval: str = opt(str, choices=INTERVALS)
    warmup_epochs: float = opt(NUMBER, ge=0)
    warmup_steps: int = opt(int, ge=0)
    T_0: int = opt(int, ge=1)
    T_mult: int = opt(int, ge=1)
    factor: float = opt(NUMBER, gt=0, lt=1)
    patience: int = opt(int, ge=0)
    pct_start: float = opt(NUMBER, gt=0, lt=1)


@dataclass
class ModelOptions:
    dropout: float = opt(NUMBER, ge=0, lt=1)
    pool: str = opt(str, choices=POOLS)
    depth: int = opt(int, ge=1)


@dataclass
class LitOptions:
    label_smoothing: float = opt(NUMBER, ge=0, lt=1)
    loss: str = opt(str, choices=LOSSES)
    input_noise_std: float = opt(NUMBER, ge=0)
    divergence_check_every: int = opt(int, ge=1)


@dataclass
class RootOptions:
    seed: int = opt(int, ge=0, nullable=True)
    resume: bool = opt(bool)
    overwrite: bool = opt(bool)


SCHEMAS = {"data": DataOptions, "trainer": TrainerOptions, "optimizer": OptimizerOptions,
           "scheduler": SchedulerOptions, "model": ModelOptions, "lit": LitOptions, "": RootOptions}


def _allowed(m: dict) -> str:
    if m["choices"] is not None:
        return "one of " + ", ".join(str(c).lower() if isinstance(c, bool) else str(c) for c in m["choices"])
    kinds = m["kind"] if isinstance(m["kind"], tuple) else (m["kind"],)
    words = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
    what = "a number" if set(kinds) == {int, float} else " or ".join(words[k] for k in kinds)
    bounds = [f"{op} {v}" for op, v in (("> ", m["gt"]), (">=", m["ge"]), ("< ", m["lt"]), ("<=", m["le"]))
              if v is not None]
    bounds = [b.replace("  ", " ") for b in bounds]
    return what + (" " + " and ".join(bounds) if bounds else "") + (" (or null)" if m["nullable"] else "")


def _ok(value: Any, m: dict) -> bool:
    if value is None:
        return m["nullable"]
    kinds = m["kind"] if isinstance(m["kind"], tuple) else (m["kind"],)
    if isinstance(value, bool) and bool not in kinds:
        return False  # True is an int to Python, never a batch size to us
    if not isinstance(value, kinds):
        return False
    if m["choices"] is not None:
        return any(value == c and type(value) is type(c) for c in m["choices"])
    return ((m["gt"] is None or value > m["gt"]) and (m["ge"] is None or value >= m["ge"])
            and (m["lt"] is None or value < m["lt"]) and (m["le"] is None or value <= m["le"]))


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError naming the first bad key, its value and what is allowed."""
    for group, schema in SCHEMAS.items():
        node = cfg if group == "" else cfg.get(group)
        if node is None:
            continue
        for f in dataclasses.fields(schema):
            if f.name not in node:
                continue
            value = OmegaConf.select(node, f.name, throw_on_resolution_failure=False)
            key = f"{group}.{f.name}" if group else f.name
            if not _ok(value, f.metadata):
                shown = "null" if value is None else repr(value)
                raise ConfigError(f"{key}={shown} is not valid: use {_allowed(f.metadata)}")
    check_val_reactions(cfg)


def val_is_test_split(cfg: DictConfig) -> bool:
    """data.val_size=0 (the default) validates on the test split; k-fold runs validate on their fold."""
    return not (OmegaConf.select(cfg, "data.val_size", default=0) or OmegaConf.select(cfg, "data.folds", default=0))


def check_val_reactions(cfg: DictConfig) -> None:
    """Refuse what steers training by a val/* metric (early stopping, ReduceLROnPlateau, any node
    with a ``monitor: val/...``) while validation is the test split: the test set would then pick
    when to stop or to lower the lr. The checkpoint callback's monitor is exempt: its best file is
    only tested with a real hold-out (train.py's _weights_to_test), otherwise the final weights are.
    The Optuna search refuses the same for its objective (src/sweeps/optuna_search.py)."""
    if not val_is_test_split(cfg):
        return
    found = []

    def walk(node, prefix: str) -> None:
        for k, v in node.items():
            if isinstance(v, dict):
                walk(v, f"{prefix}{k}.")
        monitor = node.get("monitor")
        if isinstance(monitor, str) and monitor.startswith("val/") and \
                not str(node.get("_target_", "")).endswith("Checkpoint"):
            found.append(f"{prefix.rstrip('.') or 'the config'} (monitor={monitor})")

    container = OmegaConf.to_container(cfg, resolve=False)
    container.pop("hydra", None)
    walk(container, "")
    if found:
        acts = "acts" if len(found) == 1 else "act"
        raise ConfigError(f"{', '.join(found)} {acts} on validation metrics, but data.val_size=0 validates on the test "
                          f"split (the test set would steer training): set data.val_size=5000 (a hold-out of "
                          f"the training split; or a fraction such as 0.1)")
