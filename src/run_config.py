"""The config a result depends on, recorded in metrics.json (``config``), and the check that
resume=true keeps a finished run only for the very config it was trained with.

Without the check, resume kept any completed metrics.json in the folder: a sweep resumed with
other values (or one whose first pass was `debug=fdr`) tabled results of another config under the
new one. Hydra rewrites ``.hydra/config.yaml`` when a job starts, before train() can look, so the
old config is taken from metrics.json instead.

Recorded: every leaf of the resolved config (dotted keys), less what cannot change the result:
what src/settings.py's rule calls no setting (run control, locations, loggers, the progress bar),
except the replicate keys (the seed, the fold), which do change it; values that are locations
(an absolute path, anything built from ``paths.*`` or the run folder); pure references to another
node (``lit.optimizer: ${optimizer}``: that node is recorded itself); and NO_EFFECT below.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf

from src.settings import REPLICATE_KEYS, is_setting, parse

# read-only checks and fetching: how a data set is obtained and checked, never what it holds
NO_EFFECT = frozenset({"data.download", "data.verify_counts"})
_REFERENCE = re.compile(r"^\$\{[A-Za-z_][\w.]*\}$")   # ${optimizer}, ${data.num_classes}
_LOCATION = ("${paths.", "${hydra:")
MISSING = "<absent>"
SHOWN = 4  # differing keys named in the refusal; the rest are counted


def counts(key: str, raw=None) -> bool:
    """Whether ``key`` (with its unresolved value ``raw``) can change a run's result."""
    if key in NO_EFFECT or key == "hydra" or key.startswith("hydra."):
        return False
    if isinstance(raw, str) and (_REFERENCE.match(raw) or any(t in raw for t in _LOCATION)):
        return False
    return key in REPLICATE_KEYS or is_setting(key)


def result_config(cfg: DictConfig) -> dict:
    """The flat, resolved, JSON-ready config of what a result depends on (see the module docstring)."""
    flat: dict = {}

    def walk(node, prefix: str) -> None:
        for k, raw in node.items():
            key = f"{prefix}{k}"
            if isinstance(raw, dict):
                walk(raw, key + ".")
                continue
            if not counts(key, raw):
                continue
            try:
                value = OmegaConf.select(cfg, key, throw_on_resolution_failure=True)
            except Exception:  # a resolver that cannot run here: compare what was written
                value = raw
            if isinstance(value, (DictConfig, ListConfig)):
                value = OmegaConf.to_container(value, resolve=True)
            if isinstance(value, str) and value.startswith("/"):
                continue  # an absolute path is a location
            flat[key] = value

    walk(OmegaConf.to_container(cfg, resolve=False), "")
    return json.loads(json.dumps(flat, default=str))  # as metrics.json will hold it (tuples -> lists)


def _from_overrides(overrides) -> dict:
    """Fallback for runs recorded before ``config`` was: their overrides that can change the result."""
    out = {}
    for o in overrides or []:
        kv = parse(str(o))
        if kv and counts(kv[0]) and not str(kv[1]).startswith("/"):
            out[kv[0]] = kv[1]
    return out


def differences(prev: dict, new: dict, new_overrides: list[str]) -> list[str]:
    """``key: old -> new`` for every key in which the recorded run and the new job differ."""
    if isinstance(prev.get("config"), dict) and "error" not in prev["config"]:  # see results._recorded
        old = prev["config"]
    else:
        old, new = _from_overrides(prev.get("overrides")), _from_overrides(new_overrides)
    keys = sorted(k for k in old.keys() | new.keys() if old.get(k, MISSING) != new.get(k, MISSING))
    return [f"{k}: {_show(old.get(k, MISSING))} -> {_show(new.get(k, MISSING))}" for k in keys]


def _show(v) -> str:
    text = "null" if v is None else json.dumps(v) if not isinstance(v, str) else v
    return text if len(text) <= 40 else text[:37] + "..."


def refusal(run_dir: Path, diffs: list[str], others: int = 0) -> str:
    """The one line that refuses to keep a completed run of another config."""
    named = "; ".join(diffs[:SHOWN]) + (f"; {len(diffs) - SHOWN} more" if len(diffs) > SHOWN else "")
    more = f" (and {others} more job(s) like it)" if others else ""
    return (f"{run_dir} holds a completed run of another config ({named}){more}: resume=true keeps only "
            f"runs of the same config; pass overwrite=true to train again into it, or choose another folder")


def check_resumed_jobs(argv: list[str], jobs: list[list[str]]) -> None:
    """The pre-check's part (src/cli.py check_jobs): with resume=true into a given folder, every
    job whose folder holds a completed run of another config is refused in one line before any
    job starts (train() refuses it again per job, for launchers and callers that skip this).
    Without hydra.run.dir / hydra.sweep.dir the folder is a new, dated one: nothing to keep."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from src.compose import CONF_DIR
    from src.errors import UserError
    from src.runs import read_status

    multirun = bool({"-m", "--multirun"} & set(argv))
    key = "hydra.sweep.dir=" if multirun else "hydra.run.dir="
    given = [a.split("=", 1)[1] for a in argv if a.startswith(key)]
    asked = any((parse(a) or ("", ""))[0] == "resume" for a in argv if not a.startswith("-"))
    if not (asked and given) or "${" in given[-1] or any(a.startswith("hydra.sweep.subdir=") for a in argv):
        return  # (a custom subdir: the job's own check in train() sees its folder)
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser, refused = OverridesParser.create(), []
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            composed = {}
            for job in jobs:
                # jobs that differ only in the seed share one composition (Hydra takes ~0.3 s a job)
                setting = tuple(o for o in job if not o.startswith("seed="))
                if setting not in composed:
                    composed[setting] = compose("train", overrides=job, return_hydra_config=True)
                cfg = composed[setting]
                for o in parser.parse_overrides([o for o in job if o.startswith("seed=")]):
                    OmegaConf.update(cfg, "seed", o.value(), merge=False)  # typed as Hydra types it
                if not cfg.get("resume"):
                    continue
                run_dir = Path(given[-1]) / str(cfg.hydra.sweep.subdir) if multirun else Path(given[-1])
                prev = read_status(run_dir)
                if not prev or prev.get("status") != "completed" or cfg.get("overwrite"):
                    continue
                if diffs := differences(prev, result_config(cfg), job):
                    refused.append((run_dir, diffs))
    finally:
        GlobalHydra.instance().clear()
    if refused:
        raise UserError(refusal(refused[0][0], refused[0][1], len(refused) - 1))
