"""A sweep (or several merged) as one row per setting: the runs grouped by the overrides that
differ between them (the seed, paths and run-control keys aside), rows in the order the sweep's
command line gave, each row described by :func:`src.analysis.stats.describe` (n, mean, SD, t
interval of the mean, median, min, max; IQM and a BCa interval from 10 seeds on), the failed /
diverged / missing counts and the mean epoch time. Values stay in the metric's own unit
(accuracies as fractions, as in metrics.json); the tables scale them for display.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

from src.analysis import stats
from src.analysis.runs import as_text, is_number, load_sweeps, sweep_order, value_order

FAILED_STATUSES = ("failed", "diverged", "missing")
DESCRIBED = ("n", "mean", "std", "ci_low", "ci_high", "median", "min", "max", "iqm", "boot_low", "boot_high")


@dataclass
class Summary:
    sweep_dir: Path                  # the first sweep; the output folder unless told otherwise
    metric: str
    keys: list[str]
    common: dict[str, str]
    table: pd.DataFrame              # one row per setting, raw units (comparison columns added by compare())
    runs: pd.DataFrame               # one row per run, with a "setting" label
    percent: bool
    problems: pd.DataFrame = field(default_factory=pd.DataFrame)
    files: list[str] = field(default_factory=list)  # written by write_report, in order
    sources: list[Path] = field(default_factory=list)  # every sweep merged, in the order given
    warnings: list[str] = field(default_factory=list)
    options: dict = field(default_factory=dict)   # what compare() was asked (reference, alpha, adjust, ...)
    pooled: dict = field(default_factory=dict)    # key -> values: varied among the runs, not a grouping key
    folds: int = 0                                # k-fold: folds per seed, averaged within the seed

    @property
    def n_failed(self) -> int:
        return int(self.table[["failed", "diverged", "missing"]].to_numpy().sum()) if len(self.table) else 0

    @property
    def scale(self) -> float:
        """Raw value -> displayed value: accuracies are shown in %."""
        return 100.0 if self.percent else 1.0

    @property
    def higher_is_better(self) -> bool:
        return not ("loss" in self.metric or "time" in self.metric)

    @property
    def name(self) -> str:
        return " + ".join(p.name for p in self.sources) if len(self.sources) > 1 else self.sweep_dir.name


def is_accuracy(metric: str) -> bool:
    return "acc" in metric.rsplit("/", 1)[-1] and not metric.endswith("_epoch")


def metric_bounds(metric: str) -> tuple[float, float]:
    """The range a metric's values can take: an accuracy [0, 1], a loss or a time [0, ∞)."""
    if is_accuracy(metric):
        return 0.0, 1.0
    if any(w in metric for w in ("loss", "time", "epoch", "params")):
        return 0.0, math.inf
    return -math.inf, math.inf


def label(s: Summary, setting: str) -> str:
    """A setting as the figures name it: the value alone when one key is swept."""
    return setting if len(s.keys) != 1 else setting.split("=", 1)[1]


def summarize(sweep_dir: Path | list[Path], metric: str = "test/acc", by: list[str] | None = None) -> Summary:
    dirs = [Path(d) for d in (sweep_dir if isinstance(sweep_dir, (list, tuple)) else [sweep_dir])]
    runs, warnings = load_sweeps(dirs)
    if runs.empty:
        raise FileNotFoundError(f"no metrics.json below {', '.join(map(str, dirs))}: is it a sweep directory?")
    given_keys, given_values = sweep_order(dirs)
    cfg_cols = [c for c in runs.columns if c.startswith("cfg:")]

    def column(key: str) -> pd.Series:  # an override, else the group choice the run recorded
        col = runs.get(f"cfg:{key}")
        choice = runs.get(f"choice:{key}")
        if col is None and choice is None:
            raise KeyError(f"--by {key}: no run overrides or records '{key}' "
                           f"(known: {', '.join(sorted(c[4:] for c in cfg_cols)) or 'none'})")
        out = col if col is not None else pd.Series([None] * len(runs), index=runs.index)
        if choice is not None:
            out = out.fillna(choice)
        return out.fillna("default").astype(str)

    # keys whose value differs between runs (a run that did not set one has its own value, not set)
    varying = [c[4:] for c in cfg_cols if runs[c].map(as_text).nunique() > 1]
    if by:
        keys = list(by)
    else:
        keys = [k for k in given_keys if k in varying] + sorted(k for k in varying if k not in given_keys)
    common = {c[4:]: str(runs[c].iloc[0]) for c in cfg_cols
              if c[4:] not in keys and runs[c].notna().all() and runs[c].astype(str).nunique() == 1}

    for k in keys:
        runs[f"key:{k}"] = column(k)
    key_cols = [f"key:{k}" for k in keys]
    runs["setting"] = runs[key_cols].apply(lambda r: ",".join(f"{k}={v}" for k, v in zip(keys, r)), axis=1) \
        if keys else "all"
    if metric not in runs.columns:
        runs[metric] = None
    runs[metric] = pd.to_numeric(runs[metric], errors="coerce")
    completed = runs["status"] == "completed"
    if completed.any() and runs.loc[completed, metric].isna().all():
        numeric = [c for c in runs.columns if not c.startswith(("cfg:", "choice:", "key:"))
                   and c not in ("run", "path", "status", "error", "setting", "seed", "fold", metric)
                   and pd.to_numeric(runs.loc[completed, c], errors="coerce").notna().any()]
        raise KeyError(f"--metric {metric}: no completed run records it (known: {', '.join(numeric)})")

    done = runs[completed & runs[metric].notna()]
    group_cols = key_cols or ["setting"]
    # keys that vary among the runs but do not group them: each row pools their values, and a
    # comparison pairs runs on them (src/analysis/comparisons.py)
    pooled = {k: value_order(k, list(dict.fromkeys(runs[f"cfg:{k}"].map(as_text))), given_values)
              for k in varying if k not in keys}
    runs["_unit"] = _units(runs, pooled)
    done = runs[completed & runs[metric].notna()]
    lo, hi = metric_bounds(metric)
    rows = {}
    for group, g in done.groupby(group_cols, sort=False):
        d = stats.describe(g.groupby("_unit", sort=False)[metric].mean())  # k-fold: folds of a seed averaged
        for a, b in (("ci_low", "ci_high"), ("boot_low", "boot_high")):
            d[a], d[b], cut = stats.clip_interval(d[a], d[b], lo, hi)
            if cut and a == "ci_low":
                d["interval"] = CLIPPED
        if d["n"] == 2 and d["interval"] in ("t", CLIPPED):
            d["interval"] = UNINFORMATIVE
        rows[group if isinstance(group, tuple) else (group,)] = d
    described = pd.DataFrame.from_dict(rows, orient="index")[[*DESCRIBED, "interval"]] if rows else \
        pd.DataFrame(columns=[*DESCRIBED, "interval"])
    if rows:
        described.index = pd.MultiIndex.from_tuples(described.index, names=group_cols) if len(group_cols) > 1 \
            else pd.Index([i[0] for i in described.index], name=group_cols[0])
    epoch = done.groupby(group_cols, sort=False)["epoch_time_mean_s"].mean().rename("epoch_time_s")
    # a job lost with its worker (killed) or stopped by Ctrl-C (interrupted) counts as failed
    counts = pd.crosstab([runs[c] for c in group_cols], runs["status"].replace({"killed": "failed",
                                                                                  "interrupted": "failed"}))
    for st in FAILED_STATUSES:
        if st not in counts.columns:
            counts[st] = 0
    counts["runs"] = counts.sum(axis=1)
    table = counts[["runs", *FAILED_STATUSES]].join(described, how="left").join(epoch, how="left")
    for c in DESCRIBED:
        table[c] = pd.to_numeric(table[c], errors="coerce")
    table["n"] = table["n"].fillna(0).astype(int)
    table["interval"] = table["interval"].fillna("no completed run")
    table = table.reset_index()
    if keys:  # paper order: the sweep command's order of keys and values
        for k in keys:
            order = value_order(k, list(table[f"key:{k}"].unique()), given_values)
            table[f"key:{k}"] = pd.Categorical(table[f"key:{k}"], categories=order, ordered=True)
        table = table.sort_values(key_cols).reset_index(drop=True)
        for k in keys:
            table[f"key:{k}"] = table[f"key:{k}"].astype(str)
    table = table.rename(columns={f"key:{k}": k for k in keys}).drop(columns=["setting"], errors="ignore")
    table.insert(len(keys), "setting", [",".join(f"{k}={row[k]}" for k in keys) or "all"
                                         for _, row in table.iterrows()])
    table.insert(len(keys) + 1, "metric", metric)
    problems = runs[runs["status"] != "completed"][["run", "status", "error"]]
    folds = int(done.groupby("_unit")["fold"].nunique().max()) if "fold" in done and done["fold"].notna().any() else 0
    for col in PROVENANCE:  # where each setting's runs came from: a confound when they differ
        if col in done and done[col].notna().any():
            values = done.groupby("setting", sort=False)[col].agg(lambda v: "; ".join(sorted(set(map(str, v.dropna())))))
            table[col] = table["setting"].map(values).fillna("")
    return Summary(dirs[0], metric, keys, common, table, runs, percent=is_accuracy(metric), problems=problems,
                   sources=dirs, warnings=warnings, pooled=pooled, folds=folds)


def reference_map(s: Summary, reference: str | None) -> dict[str, str]:
    """setting -> the setting it is compared with. ``reference`` "k=v[,k2=v2]": the setting with these
    values and the same values of the other keys (relu at depth 20 for swish at depth 20); None: the
    first value of the first key in the command line's order, matched on the other keys the same
    way (with one key: the first setting). A bad key or value is a KeyError whose message is the one
    line the user sees."""
    settings = list(s.table["setting"])
    if not reference:
        if not s.keys:
            return {x: settings[0] for x in settings}
        reference = default_reference(s)
    want = {}
    for part in reference.split(","):
        key, sep, value = part.partition("=")
        if not sep or key not in s.keys:
            raise KeyError(f"--reference {reference}: give key=value with a grouping key "
                           f"({', '.join(s.keys) or 'none: there is a single setting'})")
        if value not in set(s.table[key]):
            raise KeyError(f"--reference {reference}: no setting has {key}={value} "
                           f"(values: {', '.join(dict.fromkeys(s.table[key]))})")
        want[key] = value
    rows = {tuple(r[k] for k in s.keys): r["setting"] for _, r in s.table.iterrows()}
    out = {}
    for _, r in s.table.iterrows():
        ref = rows.get(tuple(want.get(k, r[k]) for k in s.keys))
        if ref is not None:
            out[r["setting"]] = ref
    return out


DATASET_KEYS = ("data", "data.name", "data.root")


def default_reference(s: Summary) -> str | None:
    """The first value of the first key ("activation=relu"), as the command line gave them; never a
    dataset key while another key is swept: the comparisons then stay within a dataset (MNIST
    against MNIST), as the others are matched on it."""
    if not s.keys or not len(s.table):
        return None
    key = next((k for k in s.keys if k not in DATASET_KEYS), s.keys[0])
    return f"{key}={s.table[key].iloc[0]}"


# provenance recorded in metrics.json (src/analysis/runs.py reads them): runs of one table that differ
# in any of these differ in more than their setting
PROVENANCE = {"commit": "git commit", "device": "device type", "precision": "precision", "torch": "torch version"}
CLIPPED = "t, clipped to the metric's range"
UNINFORMATIVE = "n = 2: uninformative"


def _units(runs: pd.DataFrame, pooled: dict) -> pd.Series:
    """Each run's unit of replication: its seed (the folds of one seed share their training data,
    so they are averaged, never counted as seeds), with the values of the pooled keys (runs of one
    seed at two depths are two units, paired on the depth). A run without a seed is its own unit."""
    unit = runs["seed"].map(as_text)
    for k in pooled:
        unit = unit + f"|{k}=" + runs[f"cfg:{k}"].map(as_text)
    return unit.where(runs["seed"].notna(), "run:" + runs["path"].astype(object).map(str))


def run_values(s: Summary, setting: str) -> pd.DataFrame:
    """One value per unit of replication of a setting (its completed runs, the folds of a seed
    averaged): columns seed (the unit: the seed, with the pooled keys' values) and value, the unit
    two settings are paired on."""
    r = s.runs[(s.runs["setting"] == setting) & (s.runs["status"] == "completed") & s.runs[s.metric].notna()]
    unit = r["_unit"] if "_unit" in r else r["seed"].map(as_text)
    v = r[s.metric].astype(float).groupby(unit.to_numpy(), sort=False).mean()
    return pd.DataFrame({"seed": v.index.to_numpy(), "value": v.to_numpy(float)})


# -------------------------------------------------------------------------------- epoch logs
EPOCH_AXIS = "epoch (from 0, as in the CSV logs)"  # every figure and CSV numbers epochs alike


def held_out_name(s: Summary) -> str:
    """'test' when every completed run validated on the test split (data.val_size 0), else 'val'."""
    for run in s.runs.loc[s.runs["status"] == "completed", "path"]:
        try:
            cfg = yaml.safe_load((Path(run) / ".hydra" / "config.yaml").read_text()) or {}
        except (OSError, yaml.YAMLError):
            continue
        if (cfg.get("data") or {}).get("val_size") not in (None, 0, 0.0, "0"):
            return "val"
    return "test"


def epoch_curves(s: Summary, cols: tuple[str, ...] = ("val/acc", "val/loss")) -> pd.DataFrame:
    """Per completed run and epoch, the last logged value of each of ``cols`` (long format: epoch,
    the columns, setting, run). Train and validation values sit on different rows of Lightning's
    CSV log; per epoch each column keeps its last non-empty value."""
    frames = []
    for _, run in s.runs[s.runs["status"] == "completed"].iterrows():
        try:
            df = pd.read_csv(Path(run["path"]) / "csv" / "metrics.csv")
        except (OSError, ValueError, pd.errors.EmptyDataError):
            continue
        present = [c for c in cols if c in df.columns]
        if "epoch" not in df.columns or not present:
            continue
        per_epoch = df.dropna(subset=present, how="all").groupby("epoch")[present].last().reset_index()
        per_epoch["epoch"] = per_epoch["epoch"].astype(int)
        per_epoch["setting"], per_epoch["run"] = run["setting"], run["run"]
        frames.append(per_epoch)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


__all__ = ["Summary", "summarize", "reference_map", "run_values", "epoch_curves", "label", "is_accuracy",
           "is_number", "FAILED_STATUSES"]
