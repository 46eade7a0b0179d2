"""The Optuna search space, written as hydra-optuna-sweeper users know it:

    hydra.sweeper.params:
      optimizer.lr: tag(log, interval(1e-4, 1e-1))   # float, log-uniform
      data.batch_size: choice(32, 64, 128, 256, 512)  # categorical
      model.depth: range(10, 50, step=4)               # int grid 10, 14, ..., 46 (stop excluded)
      lit.label_smoothing: interval(0.0, 0.2)         # float, uniform
      model.width: tag(int, interval(8, 64))          # int, uniform

Parsed with Hydra's own override grammar, turned into Optuna distributions, and checked against
the composed config (unknown key, malformed or empty range, a bound the schema refuses) before any
trial runs.
"""
from __future__ import annotations

import math
from typing import Any

from omegaconf import DictConfig, OmegaConf

from src.errors import ConfigError

SYNTAX = "choice(a, b, ...), range(start, stop[, step]), interval(low, high), tag(log|int, interval(...))"


def parse_space(params: Any) -> dict[str, Any]:
    """``hydra.sweeper.params`` as ``{key: optuna distribution}``; a one-line ConfigError when a
    value is not a search range or the space is empty."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = OmegaConf.to_container(params, resolve=False) if isinstance(params, DictConfig) else dict(params or {})
    if not params:
        raise ConfigError("the search space is empty: set hydra.sweeper.params, e.g. "
                          "hydra.sweeper.params.optimizer.lr='tag(log, interval(1e-4, 1e-1))' (or pick hparams_search=...)")
    parser = OverridesParser.create()
    space = {}
    for key, text in _flat(params).items():
        try:
            override = parser.parse_override(f"{key}={text}")
        except Exception as e:
            raise ConfigError(f"hydra.sweeper.params.{key}={text!r} does not parse ({' '.join(str(e).split())[:120]}): "
                              f"use {SYNTAX}") from None
        space[key] = _distribution(key, override.value(), text)
    return space


def split_arguments(arguments: list[str]) -> tuple[list[str], dict[str, Any]]:
    """The command line of a search: fixed overrides, and search ranges in the same syntax
    (``optimizer.lr='tag(log, interval(1e-4, 1e-1))'``, ``activation=relu,swish`` as a choice),
    which join (and win over) ``hydra.sweeper.params``."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    fixed, space = [], {}
    for o in OverridesParser.create().parse_overrides(list(arguments)):
        if not o.is_sweep_override():
            fixed.append(o.input_line)
            continue
        key = o.get_key_element()
        if key == "seed":
            raise ConfigError(f"{o.input_line}: seeds are not searched; use hydra.sweeper.seeds_per_trial=k "
                              f"(each trial runs seed..seed+k-1) and hydra.sweeper.confirm_seeds=n")
        space[key] = _distribution(key, o.value(), o.input_line.split("=", 1)[1])
    return fixed, space


def _flat(params: dict, prefix: str = "") -> dict:
    """``{optimizer: {lr: ...}}`` (from ``hydra.sweeper.params.optimizer.lr=...`` on the command
    line, which OmegaConf nests) as ``{optimizer.lr: ...}`` (how presets write it)."""
    out = {}
    for k, v in params.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _distribution(key: str, value: Any, text: Any):
    from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    where = f"hydra.sweeper.params.{key}={text!r}"
    tags = set(getattr(value, "tags", set()) or set())
    if tags - {"log", "int"}:
        raise ConfigError(f"{where}: unknown tag {sorted(tags - {'log', 'int'})}: use tag(log, ...) or tag(int, ...)")
    if isinstance(value, ChoiceSweep):
        choices = [_plain(c) for c in value.list]
        if not choices:
            raise ConfigError(f"{where}: choice() is empty: give at least one value")
        if len(set(map(repr, choices))) != len(choices):
            raise ConfigError(f"{where}: choice() repeats a value: list each value once")
        if tags:
            raise ConfigError(f"{where}: tags apply to interval()/range(), not to choice()")
        return CategoricalDistribution(choices)
    if isinstance(value, RangeSweep):
        start, stop, step = value.start, value.stop, value.step if value.step is not None else 1
        if "log" in tags:
            raise ConfigError(f"{where}: a stepped range cannot be log-scaled: use tag(log, interval(low, high))")
        if step <= 0 or stop <= start:
            raise ConfigError(f"{where}: range(start, stop, step) needs start < stop and step > 0 (stop is excluded)")
        last = start + step * math.ceil((stop - start) / step - 1)  # the largest start + k*step below stop
        if all(isinstance(v, int) for v in (start, stop, step)):
            return IntDistribution(int(start), int(last), step=int(step))
        return FloatDistribution(float(start), float(last), step=float(step)) if last > start else \
            CategoricalDistribution([float(start)])
    if isinstance(value, IntervalSweep):
        low, high = value.start, value.end
        if low is None or high is None or not low < high:
            raise ConfigError(f"{where}: interval(low, high) needs low < high")
        log = "log" in tags
        if log and low <= 0:
            raise ConfigError(f"{where}: a log-scaled interval needs low > 0")
        if "int" in tags or (isinstance(low, int) and isinstance(high, int) and not isinstance(low, bool)):
            if int(low) != low or int(high) != high:
                raise ConfigError(f"{where}: tag(int, ...) needs integer bounds")
            return IntDistribution(int(low), int(high), log=log)
        return FloatDistribution(float(low), float(high), log=log)
    raise ConfigError(f"{where} is a fixed value, not a search range: put fixed values on the command line "
                      f"(or in the preset), ranges as {SYNTAX}")


def _plain(v: Any) -> Any:
    """Choice values as Optuna stores them (None, bool, int, float, str)."""
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    return str(v)


def bounds(dist) -> list[Any]:
    """The values that test a distribution's reach: its ends, or every choice."""
    from optuna.distributions import CategoricalDistribution

    if isinstance(dist, CategoricalDistribution):
        return list(dist.choices)
    return [dist.low, dist.high]


def grid_of(space: dict[str, Any]) -> dict[str, list[Any]]:
    """The grid sampler's search space; refused for continuous ranges (they have no grid)."""
    from optuna.distributions import CategoricalDistribution

    grid = {}
    for key, dist in space.items():
        if isinstance(dist, CategoricalDistribution):
            grid[key] = list(dist.choices)
        elif getattr(dist, "step", None):
            n = round((dist.high - dist.low) / dist.step)
            grid[key] = [dist.low + i * dist.step for i in range(n + 1)]
        else:
            raise ConfigError(f"sampler=grid needs a finite grid: hydra.sweeper.params.{key} is a continuous "
                              f"interval; use choice(...) or range(start, stop, step), or sampler=tpe")
    return grid


def override(key: str, value: Any) -> str:
    """A job override that Hydra parses back to exactly ``value`` (floats by repr: 1e-05, 0.1)."""
    if isinstance(value, str):
        return f"{key}={value}"
    if value is None:
        return f"{key}=null"
    if isinstance(value, bool):
        return f"{key}={str(value).lower()}"
    return f"{key}={value!r}"


def check_space(cfg: DictConfig, space: dict[str, Any]) -> None:
    """Every searched key exists in the composed job config, and the config stays valid at every
    bound (src/config_schema.py): a space that can sample a value the run would refuse is refused
    now, in one line, not after hours of trials."""
    from src.config_schema import validate

    job = OmegaConf.masked_copy(cfg, [k for k in cfg.keys() if k != "hydra"])
    group_keys = {"activation", "model", "data", "optimizer", "scheduler", "trainer", "logger", "callbacks"}
    for key, dist in space.items():
        if key in group_keys:  # a config group: choice(relu, swish) picks options of conf/<group>/
            from src.compose import CONF_DIR

            options = sorted(p.stem for p in (CONF_DIR / key).glob("*.yaml"))
            for value in bounds(dist):
                if str(value) not in options:
                    raise ConfigError(f"hydra.sweeper.params.{key}: unknown {key} '{value}': choose from {', '.join(options)}")
            continue
        missing = object()
        if OmegaConf.select(job, key, default=missing, throw_on_resolution_failure=False) is missing:
            parent = key.rsplit(".", 1)[0] if "." in key else ""
            node = OmegaConf.select(job, parent) if parent else job
            known = ", ".join(sorted(str(k) for k in node.keys())[:12]) if isinstance(node, DictConfig) else ""
            raise ConfigError(f"hydra.sweeper.params.{key}: no such key in the config" +
                              (f" ({parent or 'top level'} has {known})" if known else "") +
                              " (see `python train.py --cfg job`)")
        for value in bounds(dist):
            trial = job.copy()
            OmegaConf.update(trial, key, value, merge=False)
            try:
                validate(trial)
            except ConfigError as e:
                raise ConfigError(f"hydra.sweeper.params.{key} reaches {value!r}, which the run refuses: {e}") from None
