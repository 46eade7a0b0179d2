"""What a *setting* is: the one rule that decides which command-line overrides tell one study
condition from another. Three places read it and must agree: the run folder's name (the Hydra
resolvers `setting_dir` / `run_suffix` in conf/hydra/default.yaml), the report's grouping
(src/analysis/runs.py) and the experiment trackers' run names (src/tracking/job.py).

An override is a setting unless its key is
- a replicate: what a table averages over (`seed`, and the k-fold `data.fold`); each has its own
  folder level below the setting,
- run control: how a run is started or resumed, never what it computes (`resume`, `overwrite`,
  `ckpt_path`, `jobs_per_gpu`, `optimized_metric`, the Optuna search's `trial` and preset, and the
  fused seed packs' `seeds_per_job` and `pack_seeds`: a pack's members are the runs of their seeds),
- a location: `paths.*`, `hydra.*`, keys ending in `_dir`/`_path`, or an absolute path as value,
- without effect on a result: loggers and trackers (`logger`, `logger.*`), the progress bar, the
  model summary, the log interval, image logging and the run-time estimate.
Everything else counts, `debug` included: a debug run computes something else (one batch, a few
steps), so `-m debug=limit,fdr` writes two folders and the two never pass for one another.

Pure string handling: imported by Hydra resolvers, the analysis and the trackers alike.
"""
from __future__ import annotations

import hashlib
import re

REPLICATE_KEYS = frozenset({"seed", "data.fold"})
CONTROL_KEYS = frozenset({"resume", "overwrite", "ckpt_path", "jobs_per_gpu", "optimized_metric", "trial",
                          "hparams_search", "seeds_per_job", "pack_seeds"})
NO_EFFECT_KEYS = frozenset({"logger", "callbacks.progress_bar", "callbacks.learning_rate_monitor",
                            "trainer.enable_progress_bar", "trainer.enable_model_summary",
                            "trainer.log_every_n_steps", "trainer.estimate_minutes", "lit.log_images",
                            "trainer.threads"})  # threads: speed only (runs recorded before it had none)
NO_EFFECT_PREFIXES = ("logger.", "logger/", "callbacks.progress_bar.", "callbacks.learning_rate_monitor.")
LOCATION_PREFIXES = ("hydra.", "hydra/", "paths.")
LOCATION_SUFFIXES = ("_dir", ".dir", "_path", ".path")
DEFAULT_SETTING = "default"   # the folder / name of a setting with no override (only seeds swept)
DELETED = "(deleted)"         # the value of a `~key` override
MAX_FOLDER = 180              # characters; longer names are cut and end in a hash of the whole


def parse(text: str) -> tuple[str, str] | None:
    """'+a.b=c' -> ('a.b', 'c'); '~key' -> ('key', DELETED); a bare word (no '=') -> None."""
    text = str(text)
    if text.startswith("~"):
        key, _, value = text[1:].partition("=")
        return key, DELETED
    if "=" not in text:
        return None
    key, value = text.split("=", 1)
    return key.lstrip("+"), value


def is_setting(key: str, value: str | None = None) -> bool:
    key = str(key)
    if key in REPLICATE_KEYS or key in CONTROL_KEYS or key in NO_EFFECT_KEYS:
        return False
    if key.startswith(LOCATION_PREFIXES + NO_EFFECT_PREFIXES) or key.endswith(LOCATION_SUFFIXES):
        return False
    return not (value and str(value).startswith("/"))  # an absolute path is a location, not a setting


def _settings(overrides) -> list[tuple[str, tuple[str, str]]]:
    """(the override as typed, (key, value)) for each override that defines the setting."""
    parsed = [(str(o), parse(o)) for o in overrides or []]
    return [(text, kv) for text, kv in parsed if kv and is_setting(*kv)]


def setting_lines(overrides) -> list[str]:
    """The overrides that define the setting, as typed, sorted as Hydra sorts `override_dirname`."""
    return sorted(text for text, _ in _settings(overrides))


def setting_of(overrides) -> dict[str, str]:
    """key -> value of the overrides that define the setting (the report's `cfg:<key>` columns)."""
    return dict(kv for _, kv in _settings(overrides))


def setting_name(overrides) -> str:
    """The setting as one line (a tracker's run name before /seed=<n>): 'a=1,b=2', or 'default'."""
    return ",".join(setting_lines(overrides)) or DEFAULT_SETTING


def folder_name(overrides) -> str:
    """The setting as one safe folder name. Long names are cut with a hash of the whole, so
    settings that differ late never share a folder."""
    name = re.sub(r"[^A-Za-z0-9=,._+-]", "_", ",".join(setting_lines(overrides)))
    if len(name) > MAX_FOLDER:
        name = f"{name[:MAX_FOLDER - 10]}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"
    return name or DEFAULT_SETTING


def run_suffix(overrides) -> str:
    """A single run's folder suffix: '_<setting>' (nothing when it changed no setting)."""
    return "" if not setting_lines(overrides) else "_" + folder_name(overrides)
