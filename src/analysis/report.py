"""From a sweep directory to the paper's table: mean ± std over seeds per setting, plus two figures.

    python -m src.report outputs/multirun/2026-11-23/10-00-00
    python -m src.report <sweep_dir> --metric val/acc_best --by model activation
    python -m src.report <sweep_dir> --plot-vs model.depth --train-vs-test

Reads every ``metrics.json`` below the sweep directory (and notices run folders that never wrote
one), groups the runs by the overrides that differ between them (the seed, paths and run-control
keys aside) and writes into the sweep directory:

- ``summary.md`` / ``summary.csv``: per setting the mean, std (over seeds, ddof=1), n, min and max
  of the metric (accuracies in % with two decimals: "91.92 ± 0.21"), the failed / diverged /
  missing counts and the mean epoch time, rows in the order the sweep's command line gave;
- ``summary_bar.png``: mean ± std per setting;
- ``curves.png``: validation accuracy and loss per epoch, mean line and ±std band per setting,
  from each run's ``csv/metrics.csv``;
- ``vs_<key>.png`` / ``.csv`` (``--plot-vs model.depth``, and by itself for every numeric key swept
  over at least 3 values): the metric against that key, one line per value of the other keys;
- ``train_vs_test.png`` / ``.csv`` (``--train-vs-test``): train and validation loss and accuracy
  per epoch per setting, to see over-fitting.

The figures live in :mod:`src.report_figures`; per-class accuracy and confusion in :mod:`src.per_class`.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from src.report_tables import markdown, mean_std, print_table

# Keys that never define a setting: the seed (what we average over) and run control / locations.
DROPPED_KEYS = {"seed", "resume", "overwrite", "ckpt_path", "jobs_per_gpu", "optimized_metric"}
DROPPED_PREFIXES = ("hydra.", "hydra/", "paths.")
DROPPED_SUFFIXES = ("_dir", ".dir", "_path", ".path")
FAILED_STATUSES = ("failed", "diverged", "missing")
METRIC_COLUMNS = ("test/acc", "test/loss", "val/acc_best", "val/acc_best_epoch", "epochs", "wall_time_s",
                  "epoch_time_mean_s", "train_images_per_s", "params")


# ------------------------------------------------------------------------------------------ runs
def _parse_override(text: str) -> tuple[str, str] | None:
    """'+a.b=c' -> ('a.b', 'c'); deletions ('~key') and bare words are no setting."""
    if "=" not in text or text.startswith("~"):
        return None
    key, value = text.split("=", 1)
    return key.lstrip("+"), value


def is_setting_key(key: str, value: str | None = None) -> bool:
    if key in DROPPED_KEYS or key.startswith(DROPPED_PREFIXES) or key.endswith(DROPPED_SUFFIXES):
        return False
    return not (value and value.startswith("/"))  # an absolute path is a location, not a setting


def setting_of(overrides: list[str]) -> dict[str, str]:
    out = {}
    for o in overrides or []:
        kv = _parse_override(str(o))
        if kv and is_setting_key(*kv):
            out[kv[0]] = kv[1]
    return out


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


def load_runs(sweep_dir: Path) -> pd.DataFrame:
    """One row per run folder: status, metrics, seed, the setting's overrides (as ``cfg:<key>``)."""
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
        row = {"run": run_dir.relative_to(sweep_dir).as_posix() or ".", "status": data.get("status", "unknown"),
               "seed": data.get("seed"), "error": data.get("error")}
        row.update({k: data.get(k) for k in METRIC_COLUMNS})
        row.update({k: v for k, v in data.items() if k not in row and k != "seed"
                    and isinstance(v, (int, float)) and not isinstance(v, bool)})
        row.update({f"cfg:{k}": v for k, v in setting_of(overrides).items()})
        row.update({f"choice:{k}": v for k, v in (data.get("choices") or {}).items()})
        rows.append(row)
    runs = pd.DataFrame(rows)
    for k in METRIC_COLUMNS:
        runs[k] = pd.to_numeric(runs.get(k), errors="coerce") if k in runs else float("nan")
    return runs


# ------------------------------------------------------------------------------------ grouping
def _sweep_order(sweep_dir: Path) -> tuple[list[str], dict[str, list[str]]]:
    """Keys and values in the order the sweep command gave them (from Hydra's multirun.yaml)."""
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


def _is_number(v) -> bool:
    try:
        float(v)
        return True
    except (TypeError, ValueError):
        return False


def _value_order(key: str, present: list[str], given: dict[str, list[str]]) -> list[str]:
    first = [v for v in given.get(key, []) if v in present]
    rest = [v for v in present if v not in first]
    rest = sorted(rest, key=float) if all(_is_number(v) for v in rest) else sorted(rest)
    return first + rest


@dataclass
class Summary:
    sweep_dir: Path
    metric: str
    keys: list[str]
    common: dict[str, str]
    table: pd.DataFrame              # one row per setting, raw units
    runs: pd.DataFrame               # one row per run, with a "setting" label
    percent: bool
    problems: pd.DataFrame = field(default_factory=pd.DataFrame)
    files: list[str] = field(default_factory=list)  # written by write_report, in order

    @property
    def n_failed(self) -> int:
        return int(self.table[["failed", "diverged", "missing"]].to_numpy().sum()) if len(self.table) else 0


def summarize(sweep_dir: Path, metric: str = "test/acc", by: list[str] | None = None) -> Summary:
    sweep_dir = Path(sweep_dir)
    runs = load_runs(sweep_dir)
    if runs.empty:
        raise FileNotFoundError(f"no metrics.json below {sweep_dir}: is it a sweep directory?")
    given_keys, given_values = _sweep_order(sweep_dir)
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

    if by:
        keys = list(by)
    else:
        varying = [c[4:] for c in cfg_cols if runs[c].fillna("default").astype(str).nunique() > 1]
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
                   and c not in ("run", "status", "error", "setting", "seed", metric)
                   and pd.to_numeric(runs.loc[completed, c], errors="coerce").notna().any()]
        raise KeyError(f"--metric {metric}: no completed run records it (known: {', '.join(numeric)})")

    done = runs[runs["status"] == "completed"]
    group_cols = key_cols or ["setting"]
    stats = done.groupby(group_cols, sort=False)[metric].agg(["mean", "std", "count", "min", "max"])
    stats = stats.rename(columns={"count": "n"})
    epoch = done.groupby(group_cols, sort=False)["epoch_time_mean_s"].mean().rename("epoch_time_s")
    counts = pd.crosstab([runs[c] for c in group_cols], runs["status"])
    for s in FAILED_STATUSES:
        if s not in counts.columns:
            counts[s] = 0
    counts["runs"] = counts.sum(axis=1)
    table = counts[["runs", *FAILED_STATUSES]].join(stats, how="left").join(epoch, how="left")
    table["n"] = table["n"].fillna(0).astype(int)
    table = table.reset_index()
    if keys:  # paper order: the sweep command's order of keys and values
        for k in keys:
            order = _value_order(k, list(table[f"key:{k}"].unique()), given_values)
            table[f"key:{k}"] = pd.Categorical(table[f"key:{k}"], categories=order, ordered=True)
        table = table.sort_values(key_cols).reset_index(drop=True)
        for k in keys:
            table[f"key:{k}"] = table[f"key:{k}"].astype(str)
    table = table.rename(columns={f"key:{k}": k for k in keys}).drop(columns=["setting"], errors="ignore")
    table.insert(len(keys), "setting", [",".join(f"{k}={row[k]}" for k in keys) or "all"
                                         for _, row in table.iterrows()])
    table.insert(len(keys) + 1, "metric", metric)
    problems = runs[runs["status"] != "completed"][["run", "status", "error"]]
    return Summary(sweep_dir, metric, keys, common, table, runs, percent=_is_accuracy(metric), problems=problems)


def _is_accuracy(metric: str) -> bool:
    return "acc" in metric.rsplit("/", 1)[-1] and not metric.endswith("_epoch")


# -------------------------------------------------------------------------------- epoch logs
def _label(s: Summary, setting: str) -> str:
    return setting if len(s.keys) != 1 else setting.split("=", 1)[1]


def epoch_curves(s: Summary, cols: tuple[str, ...] = ("val/acc", "val/loss")) -> pd.DataFrame:
    """Per completed run and epoch, the last logged value of each of ``cols`` (long format: epoch,
    the columns, setting, run). Train and validation values sit on different rows of Lightning's
    CSV log; per epoch each column keeps its last non-empty value."""
    frames = []
    for _, run in s.runs[s.runs["status"] == "completed"].iterrows():
        csv = s.sweep_dir / run["run"] / "csv" / "metrics.csv"
        try:
            df = pd.read_csv(csv)
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


# ------------------------------------------------------------------------------------ writing
def write_report(sweep_dir: Path, metric: str = "test/acc", by: list[str] | None = None, out_dir: Path | None = None,
                 plots: bool = True, console=None, show: bool = True, show_problems: bool = True,
                 plot_vs: list[str] | None = None, train_vs_test: bool = False) -> Summary:
    """The table and figures. ``plot_vs``: keys to plot the metric against (``vs_<key>.png/.csv``);
    None picks every swept numeric key with at least 3 values, [] none. ``train_vs_test``: also
    ``train_vs_test.png/.csv``. The files written are listed in ``Summary.files``."""
    from src import report_figures as figs

    s = summarize(sweep_dir, metric, by)
    out = Path(out_dir or sweep_dir)
    keys = plot_vs if plot_vs is not None else (figs.auto_vs_keys(s) if plots else [])
    vs = {x: figs.vs_table(s, x) for x in keys}  # bad keys fail here, before anything is written
    tvt = figs.train_vs_test_table(s) if train_vs_test else None
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.md").write_text(markdown(s))
    csv = s.table.copy()
    shown = [mean_std(m, d, s.percent) for m, d in zip(csv["mean"], csv["std"])]
    csv.insert(csv.columns.get_loc("mean"), "mean_std", shown)
    csv.to_csv(out / "summary.csv", index=False)
    s.files += ["summary.md", "summary.csv"]
    if plots:
        figs.bar_chart(s, out / "summary_bar.png")
        figs.curves_chart(s, out / "curves.png")
        s.files += ["summary_bar.png", "curves.png"]
    for x, table in vs.items():
        s.files += figs.write_vs(s, table, x, out)
    if train_vs_test:
        s.files += figs.write_train_vs_test(s, out, tvt)
    if show:
        print_table(s, console, show_problems)
    return s


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m src.report", description=__doc__.split("\n\n")[0])
    p.add_argument("sweep_dir", type=Path, help="a multirun directory (outputs/multirun/<date>/<time>)")
    p.add_argument("--metric", default="test/acc", help="metrics.json key to aggregate (default: test/acc)")
    p.add_argument("--by", nargs="+", metavar="KEY", help="group by these keys (default: every swept key but the seed)")
    p.add_argument("--out", type=Path, help="write the files here instead of the sweep directory")
    p.add_argument("--no-plots", action="store_true", help="only summary.md and summary.csv (and what is asked below)")
    p.add_argument("--plot-vs", nargs="+", metavar="KEY", help="plot the metric against this numeric swept key, one "
                   "line per value of the other keys: vs_<KEY>.png/.csv (default: every numeric key swept over >= 3 "
                   "values)")
    p.add_argument("--train-vs-test", action="store_true", help="also train_vs_test.png/.csv: train and "
                   "validation (= test split by default) loss and accuracy per epoch per setting")
    a = p.parse_args(argv)
    if not a.sweep_dir.is_dir():
        print(f"error: {a.sweep_dir} is not a directory", file=sys.stderr)
        return 2
    try:
        s = write_report(a.sweep_dir, a.metric, a.by, a.out, plots=not a.no_plots, plot_vs=a.plot_vs,
                         train_vs_test=a.train_vs_test)
    except (FileNotFoundError, KeyError, ValueError) as e:
        print(f"error: {e.args[0] if e.args else e}", file=sys.stderr)
        return 2
    print(f"wrote {a.out or a.sweep_dir}/{', '.join(s.files)}")
    if s.n_failed:
        print(f"{s.n_failed} run(s) did not complete (listed in summary.md)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
