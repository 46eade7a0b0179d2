"""Typed schemas for the options users set most, checked on the composed config before any data
is read or a GPU is touched. One dataclass per config group; a field's metadata gives its range or
its allowed values. Only keys present in the config are checked (optimizers differ in options)."""
from __future__ import annotations

import ast
import dataclasses
import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from src.compose import CONF_DIR
from src.errors import ConfigError


class Lazy:
    """A module's tuple of allowed values, kept where the code that uses them lives. Those modules
    import torch or Lightning (~7 s), which no refusal should wait for: the literal tuple is read from
    the module's source (ast), and the module is imported only if it is not a literal there."""

    def __init__(self, module: str, name: str):
        self.module, self.name = module, name
        self._values: tuple | None = None

    def __call__(self) -> tuple:
        if self._values is None:  # read once: validate() runs for every job of a sweep
            self._values = self._read()
        return self._values

    def _read(self) -> tuple:
        source = Path(__file__).resolve().parent.parent.joinpath(*self.module.split(".")).with_suffix(".py")
        try:
            for node in ast.parse(source.read_text()).body:
                if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == self.name for t in node.targets):
                    return tuple(ast.literal_eval(node.value))
        except (OSError, SyntaxError, ValueError):
            pass
        return tuple(getattr(importlib.import_module(self.module), self.name))


AUGMENT_PRESETS = Lazy("src.datamodules.augment", "AUGMENT_PRESETS")
LABEL_TYPES = Lazy("src.datamodules.cifar100_svhn", "LABEL_TYPES")
LOSSES = Lazy("src.lit.losses", "LOSSES")
INTERVALS = Lazy("src.lit.schedules", "INTERVALS")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")  # torch.compile's
POOLS = Lazy("src.models.lenet", "POOLS")
TTA_MODES = Lazy("src.lit.tta", "MODES")


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
    accumulate_grad_batches: int = opt(int, ge=1)
    max_steps: int = opt(int, ge=-1)
    num_nodes: int = opt(int, ge=1)
    threads: Any = opt((int, str), ge=1, choices=("auto",))  # torch threads of the run (src/lit/trainer.py)


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
    tta: str = opt(str, choices=TTA_MODES)


@dataclass
class MixupOptions:  # lit.mixup (src/lit/mixing.py); its keys are all here: an unknown one is refused
    alpha: float = opt(NUMBER, ge=0)
    cutmix_alpha: float = opt(NUMBER, ge=0)
    prob: float = opt(NUMBER, ge=0, le=1)
    switch_prob: float = opt(NUMBER, ge=0, le=1)


@dataclass
class RootOptions:
    seed: int = opt(int, ge=0, nullable=True)
    resume: bool = opt(bool)
    overwrite: bool = opt(bool)


SCHEMAS = {"data": DataOptions, "trainer": TrainerOptions, "optimizer": OptimizerOptions,
           "scheduler": SchedulerOptions, "model": ModelOptions, "lit": LitOptions, "lit.mixup": MixupOptions,
           "": RootOptions}
CLOSED = ("lit.mixup",)  # groups whose every key is in the schema


def _choices(m: dict) -> tuple | None:
    return m["choices"]() if callable(m["choices"]) else m["choices"]


def _allowed(m: dict) -> str:
    choices, kinds = _choices(m), m["kind"] if isinstance(m["kind"], tuple) else (m["kind"],)
    if choices is not None and not (int in kinds and m["ge"] is not None):
        return "one of " + ", ".join(str(c).lower() if isinstance(c, bool) else str(c) for c in choices)
    if choices is not None:  # a number or a word (threads: an integer >= 1 or auto)
        return f"an integer >= {m['ge']} or " + " or ".join(str(c) for c in choices)
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
    choices = _choices(m)
    if choices is not None and (m["ge"] is None or isinstance(value, str)):  # threads: a word or a number in range
        return any(value == c and type(value) is type(c) for c in choices)
    return ((m["gt"] is None or value > m["gt"]) and (m["ge"] is None or value >= m["ge"])
            and (m["lt"] is None or value < m["lt"]) and (m["le"] is None or value <= m["le"]))


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError naming the first bad key, its value and what is allowed. Two passes: the
    values checked against a Lazy tuple or given by an interpolation (a resolver may import torch)
    come second, so that a plain bad value is refused before those imports."""
    for deferred in (False, True):
        for group, schema in SCHEMAS.items():
            node = cfg if group == "" else OmegaConf.select(cfg, group, default=None)
            if not isinstance(node, DictConfig):
                continue
            names = {f.name for f in dataclasses.fields(schema)}
            keys = set(node.keys())  # not `name in node`: that resolves the value (a resolver may import torch)
            if group in CLOSED and not deferred and (unknown := sorted(keys - names)):
                raise ConfigError(f"{group}.{unknown[0]} is not an option of {group}: use {', '.join(sorted(names))}")
            for f in dataclasses.fields(schema):
                if f.name not in keys or OmegaConf.is_missing(node, f.name):
                    continue
                late = callable(f.metadata["choices"]) or OmegaConf.is_interpolation(node, f.name)
                if late != deferred:
                    continue
                value = OmegaConf.select(node, f.name, throw_on_resolution_failure=False)
                key = f"{group}.{f.name}" if group else f.name
                if not _ok(value, f.metadata):
                    shown = "null" if value is None else repr(value)
                    raise ConfigError(f"{key}={shown} is not valid: use {_allowed(f.metadata)}")
        if not deferred:
            check_combinations(cfg)
    check_val_reactions(cfg)


def check_combinations(cfg: DictConfig) -> None:
    """Values each valid alone that make no sense together, or a shape a dataclass field cannot say."""
    sel = lambda key, default=None: OmegaConf.select(cfg, key, default=default, throw_on_resolution_failure=False)
    warmup, epochs = sel("scheduler.warmup_epochs", 0), sel("trainer.max_epochs")
    if isinstance(warmup, (int, float)) and isinstance(epochs, int) and warmup and warmup >= epochs:
        raise ConfigError(f"scheduler.warmup_epochs={warmup} is not shorter than the run (trainer.max_epochs={epochs}): "
                          f"use a warm-up below {epochs} epochs, or more epochs")
    milestones = sel("scheduler.milestones")
    if milestones is not None and not (OmegaConf.is_list(milestones) and all(
            isinstance(m, int) and not isinstance(m, bool) and m >= 1 for m in milestones)):
        shown = OmegaConf.to_container(milestones) if OmegaConf.is_list(milestones) else milestones
        raise ConfigError(f"scheduler.milestones={shown} is not valid: use a list of epochs >= 1, e.g. [30,45]")
    devices = sel("trainer.devices")
    if devices is not None and not (
            devices == "auto" or (isinstance(devices, int) and not isinstance(devices, bool) and (devices >= 1 or devices == -1))
            or (isinstance(devices, str) and all(p.strip().isdigit() for p in devices.split(",") if p.strip()))
            or (OmegaConf.is_list(devices) and all(isinstance(d, int) and d >= 0 for d in devices))):
        raise ConfigError(f"trainer.devices={devices!r} is not valid: use an integer >= 1 (processes), -1 or auto "
                          f"(every device), or a list of GPU indices such as [0,1]")
    val_size, limit = sel("data.val_size", 0), sel("trainer.limit_val_batches")
    if val_size and limit == 0:
        raise ConfigError(f"trainer.limit_val_batches=0 turns validation off, so data.val_size={val_size} holds out "
                          f"training images that nothing uses: set data.val_size=0, or drop trainer.limit_val_batches=0")


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
