"""The study figures of a sweep report, each with the CSV of the numbers drawn:

- :func:`vs_table` / :func:`write_vs` (``vs_<key>.png/.csv``): the metric, mean ± std over seeds,
  against a numeric swept key (``model.depth``), one line per value of the other swept keys;
- :func:`train_vs_test_table` / :func:`write_train_vs_test` (``train_vs_test.png/.csv``): train and
  held-out (the test split unless ``data.val_size`` > 0) loss and accuracy per epoch, mean ± std
  band over seeds per setting, and the loss gap between them.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from src.analysis.figures import file_stem, plt_agg
from src.analysis.summary import EPOCH_AXIS, Summary, epoch_curves, held_out_name, is_number, summarize
from src.analysis.summary import label as setting_label

STATS = ["mean", "std", "n", "runs", "failed", "diverged", "missing"]
TVT_COLS = ("train/loss", "val/loss", "train/acc", "val/acc")


# -------------------------------------------------------------------------------- metric vs key
def auto_vs_keys(s: Summary, min_values: int = 3) -> list[str]:
    """Swept keys whose values are all numbers, at least ``min_values`` of them."""
    return [k for k in s.keys if s.table[k].nunique() >= min_values and all(map(is_number, s.table[k].unique()))]


def vs_table(s: Summary, x: str) -> pd.DataFrame:
    """One row per (line, x) with the summary's statistics, x ascending within a line; lines are
    the settings of the other keys in the sweep's order. Settings whose ``x`` is no number are left
    out; rows whose runs all failed keep a NaN mean (drawn as a red cross)."""
    if x not in s.keys:
        if f"cfg:{x}" not in s.runs.columns and f"choice:{x}" not in s.runs.columns:
            raise KeyError(f"--plot-vs {x}: no run overrides '{x}' (swept: {', '.join(s.keys) or 'nothing'})")
        s = summarize(s.sources or [s.sweep_dir], s.metric, [*s.keys, x])
    t = s.table[s.table[x].map(is_number)]
    if t.empty:
        raise ValueError(f"--plot-vs {x}: no numeric values (got {', '.join(map(str, s.table[x].unique()))})")
    lines = [k for k in s.keys if k != x]
    out = pd.DataFrame({x: pd.to_numeric(t[x])})
    for k in lines:
        out[k] = t[k]
    out["line"] = [",".join(f"{k}={r[k]}" for k in lines) if len(lines) > 1 else (r[lines[0]] if lines else s.metric)
                   for _, r in t.iterrows()]
    out["metric"] = s.metric
    out[STATS] = t[STATS]
    rank = {line: i for i, line in enumerate(dict.fromkeys(out["line"]))}
    return out.assign(_r=out["line"].map(rank)).sort_values(["_r", x], kind="stable").drop(columns="_r") \
        .reset_index(drop=True)


def write_vs(s: Summary, table: pd.DataFrame, x: str, out: Path) -> list[str]:
    """``vs_<x>.csv`` (the table, raw units) and ``vs_<x>.png``; returns the file names."""
    name = f"vs_{file_stem(x)}"
    table.to_csv(out / f"{name}.csv", index=False)
    plt = plt_agg()
    scale = 100 if s.percent else 1
    fig, ax = plt.subplots(figsize=(7, 4.5), layout="constrained")
    failed_label = "all runs failed/diverged"
    for line, g in table.groupby("line", sort=False):
        ok = g[g["n"] > 0]
        ns = sorted(set(ok["n"]))
        label = f"{line} (n={ns[0]}{f'–{ns[-1]}' if len(ns) > 1 else ''})" if ns else f"{line} (no completed run)"
        bars = ax.errorbar(ok[x], ok["mean"] * scale, yerr=ok["std"].fillna(0) * scale, marker="o", ms=4,
                           capsize=3, label=label)
        lost = g[(g["n"] == 0) & (g["runs"] > 0)]
        if len(lost):
            ax.plot(lost[x], [0.02] * len(lost), "x", color=bars[0].get_color(), ms=9, mew=2,
                    transform=ax.get_xaxis_transform(), label=failed_label)
            failed_label = None
    xs = table[x].astype(float)
    if (xs > 0).all() and xs.max() / xs.min() >= 100:
        ax.set_xscale("log")
    elif len(xs.unique()) <= 12:
        ax.set_xticks(sorted(xs.unique()))
    ax.set_xlabel(x)
    ax.set_ylabel(s.metric + (" (%)" if s.percent else ""))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"{s.name}: {s.metric} vs {x}, mean ± std over seeds", fontsize=10)
    fig.savefig(out / f"{name}.png", dpi=120)
    plt.close(fig)
    return [f"{name}.png", f"{name}.csv"]


# ------------------------------------------------------------------------------ train vs test
def train_vs_test_table(s: Summary) -> pd.DataFrame:
    """Per setting and epoch (0-based, as logged): mean, std and count over the setting's runs of
    train/loss, val/loss, train/acc and val/acc, and loss_gap = val/loss mean - train/loss mean."""
    curves = epoch_curves(s, TVT_COLS)
    cols = [c for c in TVT_COLS if c in curves.columns]
    if curves.empty or not {"train/loss", "val/loss"} & set(cols):
        raise FileNotFoundError(f"--train-vs-test: no completed run below {s.sweep_dir} has a csv/metrics.csv "
                                "with train/loss or val/loss")
    g = curves.groupby(["setting", "epoch"], sort=False)[cols].agg(["mean", "std", "count"])
    g.columns = [f"{c}_{stat}" for c, stat in g.columns]
    g = g.reset_index()
    g["loss_gap"] = g.get("val/loss_mean", float("nan")) - g.get("train/loss_mean", float("nan"))
    order = {setting: i for i, setting in enumerate(s.table["setting"])}
    g = g.assign(_r=g["setting"].map(order)).sort_values(["_r", "epoch"], kind="stable").drop(columns="_r")
    keys = s.table[[*s.keys, "setting"]].drop_duplicates("setting")
    return keys.merge(g, on="setting", how="right").reset_index(drop=True)


def write_train_vs_test(s: Summary, out: Path, table: pd.DataFrame | None = None) -> list[str]:
    """``train_vs_test.csv`` and ``.png``: loss and accuracy (solid train, dashed held-out; one
    colour per setting, ±std bands) and the loss gap per epoch."""
    plt = plt_agg()
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    table = train_vs_test_table(s) if table is None else table
    table.to_csv(out / "train_vs_test.csv", index=False)
    held = held_out_name(s)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.3), layout="constrained")
    panels = (("loss", 1, "loss"), ("acc", 100, "accuracy (%)"))
    one = table["epoch"].nunique() == 1  # one epoch: points side by side with error bars, not lines
    for i, (setting, g) in enumerate(table.groupby("setting", sort=False)):
        color, x = f"C{i % 10}", g["epoch"]  # 0-based, as Lightning logs it and the CSV says
        n = int(g.filter(like="_count").max().max())
        for ax, (what, scale, _) in zip(axes, panels):
            for split, style, marker, shift in (("train", "-", "o", -0.12), ("val", "--", "s", 0.12)):
                col = f"{split}/{what}"
                if f"{col}_mean" not in g or g[f"{col}_mean"].isna().all():
                    continue
                m, sd = g[f"{col}_mean"] * scale, g[f"{col}_std"].fillna(0) * scale
                if one:
                    ax.errorbar(x + shift + 0.04 * (i - len(s.table) / 2), m, yerr=sd, fmt=marker, color=color,
                                capsize=3, ms=5)
                    continue
                ax.plot(x, m, style, color=color, marker=marker if len(g) < 12 else None, ms=3)
                ax.fill_between(x, m - sd, m + sd, color=color, alpha=0.12)
        axes[2].plot(x, g["loss_gap"], color=color, marker="o" if len(g) < 12 else None, ms=3,
                     label=f"{setting_label(s, setting)} (n={n})")
    for ax, (_, _, ylabel) in zip(axes, panels):
        ax.set_ylabel(ylabel)
    axes[2].set_ylabel(f"{held} loss - train loss")
    axes[2].axhline(0, color="grey", lw=0.8)
    last = int(table["epoch"].max())
    for ax in axes:
        ax.set_xlabel(EPOCH_AXIS)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if last < 15:  # few epochs: a tick per epoch (the locator would add fractional ones)
            ax.set_xticks(range(last + 1))
        ax.set_xlim(-0.5, last + 0.5)
        ax.grid(alpha=0.3)
    axes[0].legend([Line2D([], [], color="k", ls="-", marker="o", ms=4), Line2D([], [], color="k", ls="--", marker="s",
                                                                             ms=4)], ["train", held], fontsize=8)
    axes[2].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0)
    fig.suptitle(f"{s.name}: train vs {held} per setting, mean ± std over seeds", fontsize=10)
    fig.savefig(out / "train_vs_test.png", dpi=120)
    plt.close(fig)
    return ["train_vs_test.png", "train_vs_test.csv"]
