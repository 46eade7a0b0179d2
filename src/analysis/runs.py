"""A sweep's runs as a table: one row per run folder (status, metrics, seed, the setting's
overrides), read from ``metrics.json`` and Hydra's ``.hydra/overrides.yaml``; several sweep
folders merge into one table keyed by the settings' overrides, a run that appears twice (same
setting and seed) counted once.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

# which overrides define a setting: one rule for folder names, this table and the trackers
from src.settings import is_setting as is_setting_key
from src.settings import parse as parse_override
from src.settings import setting_of

METRIC_COLUMNS = ("test/acc", "test/loss", "val/acc_best", "val/acc_best_epoch", "epochs", "wall_time_s",
                  "epoch_time_mean_s", "train_images_per_s", "params")
NOT_SET = "<not set>"
PROVENANCE_COLUMNS = ("commit", "device", "precision", "torch")  # from metrics.json's provenance


def as_text(value) -> str:
    """A cell as text, a missing one (None, NaN, pd.NA) as NOT_SET."""
    return NOT_SET if value is None or (not isinstance(value, (list, tuple, dict)) and pd.isna(value)) else str(value)


def seed_of(overrides: list[str], key: str = "seed"):
    """The ``seed=`` override (for runs that never wrote their seed into metrics.json), or another
    replicate key's (``data.fold``)."""
    for o in overrides or []:
        kv = parse_override(str(o))
        if kv and kv[0] == key:
            try:
                return int(kv[1])
            except ValueError:
                return kv[1]
    return None


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None


def _read_overrides_yaml(run_dir: Path) -> list[str]:
    from omegaconf import OmegaConf

    try:
        return [str(o) for o in OmegaConf.load(run_dir / ".hydra" / "overrides.yaml")]
    except Exception:
        return []


def load_runs(sweep_dir: Path, prefix: str = "") -> pd.DataFrame:
    """One row per run folder below ``sweep_dir``: ``run`` (its path relative to the sweep, after
    ``prefix``), ``path`` (absolute), status, seed, error, the metrics, ``cfg:<key>`` per setting
    override and ``choice:<group>`` per recorded config-group choice."""
    sweep_dir = Path(sweep_dir)
    run_dirs = {p.parent for p in sweep_dir.rglob("metrics.json")}
    run_dirs |= {p.parent.parent for p in sweep_dir.rglob(".hydra/overrides.yaml")}
    rows = []
    for run_dir in sorted(run_dirs):
        data = _read_json(run_dir / "metrics.json")
        if data is None:  # started (Hydra wrote .hydra/) but never finished, or unreadable
            data = {"status": "missing", "overrides": _read_overrides_yaml(run_dir),
                    "error": "no readable metrics.json (killed, still running, or lost)"}
        overrides = data.get("overrides") or _read_overrides_yaml(run_dir)
        rel = run_dir.relative_to(sweep_dir).as_posix()
        seed = data.get("seed")
        row = {"run": (f"{prefix}/{rel}" if rel != "." else prefix) if prefix else rel or ".",
               "path": str(run_dir.resolve()), "status": data.get("status", "unknown"),
               "seed": seed if seed is not None else seed_of(overrides), "fold": seed_of(overrides, "data.fold"),
               "error": data.get("error")}
        row.update({k: data.get(k) for k in METRIC_COLUMNS})
        row["val_is_test_split"] = data.get("val_is_test_split")  # a val/* metric is then a test-set pick
        # where the run came from (src/provenance.py): what tells runs of one setting apart besides it
        prov = data.get("provenance") if isinstance(data.get("provenance"), dict) else {}
        row.update({k: prov.get(k) for k in PROVENANCE_COLUMNS})
        # a debug run's numbers come from a batch or a few steps: listed among the problems, never
        # tabled (runs recorded before status "debug" existed are known by their debug= override)
        debug = data.get("debug") or seed_of(overrides, "debug")
        if row["status"] in ("completed", "debug") and debug not in (None, "null"):
            row.update(status="debug", error=row["error"] or f"a debug run ({debug}): no result")
        row.update({k: v for k, v in data.items() if k not in row and k != "seed"
                    and isinstance(v, (int, float)) and not isinstance(v, bool)})
        row.update({f"cfg:{k}": v for k, v in setting_of(overrides).items()})
        row.update({f"choice:{k}": v for k, v in (data.get("choices") or {}).items()})
        rows.append(row)
    runs = pd.DataFrame(rows)
    for k in METRIC_COLUMNS:
        runs[k] = pd.to_numeric(runs.get(k), errors="coerce") if k in runs else float("nan")
    return runs


def load_sweeps(sweep_dirs: list[Path]) -> tuple[pd.DataFrame, list[str]]:
    """The runs of several sweeps in one table, and warnings. A run of the same setting (same
    setting overrides) and seed found more than once counts once: a completed one is kept over a
    failed one, else the first in the order given (e.g. a later sweep that only added seeds)."""
    dirs = [Path(d) for d in sweep_dirs]
    if len(dirs) == 1:
        return without_debug(load_runs(dirs[0]), [])
    names = [d.name for d in dirs]
    prefixes = names if len(set(names)) == len(names) else [f"{i + 1}:{n}" for i, n in enumerate(names)]
    frames = [load_runs(d, p).assign(_source=i) for i, (d, p) in enumerate(zip(dirs, prefixes))]
    runs = pd.concat([f for f in frames if not f.empty], ignore_index=True)
    if runs.empty:
        return runs, []
    cfg = sorted(c for c in runs.columns if c.startswith("cfg:"))
    # a key one sweep did not set is "not set", a value of its own; every cell spelt out by hand:
    # astype(str) keeps missing values as NA under pandas 3's string dtype, and joining them fails
    text = runs[cfg + ["seed", "fold"]].map(as_text)
    key = text[cfg].agg("|".join, axis=1) + "#" + text["seed"] + "#" + text["fold"] if cfg else \
        text["seed"] + "#" + text["fold"]
    runs = runs.assign(_key=key, _done=(runs["status"] != "completed").astype(int))
    has_seed = runs["seed"].notna()
    dup = has_seed & runs.duplicated("_key", keep=False)
    warnings = []
    if dup.any():
        ranked = runs.sort_values(["_done", "_source"], kind="stable")
        keep = ranked[~(has_seed.loc[ranked.index] & ranked.duplicated("_key"))].index
        dropped = runs.index.difference(keep)
        example = runs.loc[dropped[0]]
        warnings.append(f"{len(dropped)} run(s) appear in more than one sweep (same setting and seed) and are "
                        f"counted once, a completed one or else the first given kept "
                        f"(e.g. {example['run']})")
        runs = runs.loc[sorted(keep)]
    return without_debug(runs.drop(columns=["_key", "_done", "_source"]).reset_index(drop=True), warnings)


def without_debug(runs: pd.DataFrame, warnings: list[str]) -> tuple[pd.DataFrame, list[str]]:
    """Debug runs (status "debug": one batch, a few steps) are no results: left out of the table
    with a one-line note. A sweep of nothing but debug runs (`-m debug=fdr`) keeps them, so that
    its table says "no completed run" and lists each as debug instead of failing to find any run."""
    debug = runs["status"] == "debug" if "status" in runs else pd.Series(False, index=runs.index)
    if not debug.any() or debug.all():
        return runs, warnings
    note = (f"{int(debug.sum())} debug run(s) left out (a batch or a few steps: no result), "
            f"e.g. {runs.loc[debug, 'run'].iloc[0]}")
    return runs[~debug].reset_index(drop=True), [*warnings, note]


# ------------------------------------------------------------------------------ command order
def sweep_order(sweep_dirs: list[Path]) -> tuple[list[str], dict[str, list[str]]]:
    """Keys and values in the order the sweep commands gave them (Hydra's multirun.yaml), the first
    sweep first; values a later sweep added follow."""
    keys, values = [], {}
    for sweep_dir in sweep_dirs:
        k, v = _one_sweep_order(Path(sweep_dir))
        for key in k:
            if key not in keys:
                keys.append(key)
            values[key] = values.get(key, []) + [x for x in v[key] if x not in values.get(key, [])]
    return keys, values


def _one_sweep_order(sweep_dir: Path) -> tuple[list[str], dict[str, list[str]]]:
    keys, values = [], {}
    try:
        from hydra.core.override_parser.overrides_parser import OverridesParser
        from omegaconf import OmegaConf

        task = OmegaConf.load(sweep_dir / "multirun.yaml").hydra.overrides.task
        for o in OverridesParser.create().parse_overrides([str(t) for t in task]):
            key = o.key_or_group
            if o.is_delete() or not is_setting_key(key):
                continue
            keys.append(key)
            vals = list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.get_value_element_as_str()]
            values[key] = [str(v) for v in vals]
    except Exception:  # no multirun.yaml (copied runs, another tool): fall back to sorting
        pass
    return keys, values


def is_number(v) -> bool:
    try:
        float(v)
        return True
    except (TypeError, ValueError):
        return False


def value_order(key: str, present: list[str], given: dict[str, list[str]]) -> list[str]:
    first = [v for v in given.get(key, []) if v in present]
    rest = [v for v in present if v not in first]
    rest = sorted(rest, key=float) if all(is_number(v) for v in rest) else sorted(rest)
    return first + rest
