"""The sweep report's summary figures (:func:`src.analysis.report.write_report` calls them):

- :func:`strip_chart` (``summary_strip.png``, which replaced the bar chart): every seed as a point over
  its setting's mean and 95 % t-interval, settings in the swept order, the reference marked;
- :func:`comparison_chart` (``summary_comparison.png``): Δ vs the reference with its 95 % CI per
  setting, coloured by verdict;
- :func:`curves_chart` (``curves.png``): validation accuracy and loss per epoch, mean line and ±std
  band per setting.

The study figures (metric vs a key, train vs test) are in :mod:`src.analysis.vs_figures`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from src.analysis.summary import Summary, epoch_curves, run_values
from src.analysis.summary import label as setting_label

VERDICT_COLOURS = {"better": "tab:green", "worse": "tab:red", "equivalent": "tab:blue", "inconclusive": "0.45"}


def plt_agg():
    """pyplot on the Agg backend: reports are written on machines (and in sweep workers) with no display."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def file_stem(key: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in key)


def _references(s: Summary) -> set[str]:
    if "verdict" not in s.table:
        return set()
    return set(s.table.loc[s.table["verdict"] != "no reference", "reference"].dropna())


def strip_chart(s: Summary, path: Path) -> None:
    """Bars hide how few seeds there are and how they spread; dots show both."""
    plt = plt_agg()
    t, scale = s.table, s.scale
    refs = _references(s)
    fig, ax = plt.subplots(figsize=(max(4.5, 1.0 * len(t) + 2), 4.2), layout="constrained")
    shown = []
    for i, r in t.iterrows():
        v = run_values(s, r["setting"])["value"].to_numpy() * scale
        colour = "tab:orange" if r["setting"] in refs else "tab:blue"
        if len(v):  # even spread by rank: reproducible, and equal values stay visible side by side
            offsets = np.linspace(-0.18, 0.18, len(v)) if len(v) > 1 else np.zeros(1)
            ax.scatter(i + offsets[np.argsort(np.argsort(v))], v, s=22, color=colour, alpha=0.85, zorder=5,
                       edgecolor="white", linewidth=0.5)  # above the mean bar: no seed is hidden under it
            shown += list(v)
        if pd.isna(r["mean"]):
            ax.annotate("no completed run", (i, 0.02), xycoords=("data", "axes fraction"), ha="center",
                        fontsize=8, color="tab:red", rotation=90)
            continue
        m = r["mean"] * scale
        ax.hlines(m, i - 0.3, i + 0.3, color="black", lw=1.5, alpha=0.8, zorder=4)
        if pd.notna(r["ci_low"]):
            lo, hi = r["ci_low"] * scale, r["ci_high"] * scale
            ax.errorbar(i + 0.32, m, yerr=[[m - lo], [hi - m]], fmt="none", ecolor="black", capsize=4, lw=1.2)
            shown += [lo, hi]
        ax.annotate(f"{m:.2f}" if s.percent else f"{m:.3g}", (i + 0.34, m), xytext=(3, 0), textcoords="offset points",
                    ha="left", va="center", fontsize=8)
    ref_means = t.loc[t["setting"].isin(refs), "mean"].dropna()
    if len(ref_means) == 1:
        ax.axhline(ref_means.iloc[0] * scale, color="tab:orange", ls="--", lw=0.8, alpha=0.8)
    names = [setting_label(s, x) + ("\n(reference)" if x in refs else "") for x in t["setting"]]
    ax.set_xticks(range(len(t)), names, rotation=30 if len(t) > 4 else 0, ha="right" if len(t) > 4 else "center")
    if shown:  # zoom in on the differences; accuracies near 100 % would all look alike
        lo, hi = float(np.min(shown)), float(np.max(shown))
        pad = max(hi - lo, 1e-3 * max(abs(hi), 1)) * 0.15
        lo, hi = lo - pad, hi + pad
        if s.percent:  # a t-interval may pass 100 %; the axis need not
            lo, hi = max(lo, -pad), min(hi, 100 + pad)
        ax.set_ylim(lo, hi)
    ax.set_xlim(-0.6, len(t) - 0.2)
    ax.set_ylabel(s.metric + (" (%)" if s.percent else ""))
    ax.set_xlabel(", ".join(s.keys) if len(s.keys) == 1 else "setting")
    ax.set_title(f"{s.metric}: every seed (dots), mean (bar) and 95 % t-CI; n = {', '.join(map(str, t['n']))}",
                 fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def comparison_chart(s: Summary, path: Path) -> bool:
    """Δ vs the reference with its CI per compared setting, coloured by verdict; False (nothing
    written) when no setting was compared."""
    from matplotlib.lines import Line2D

    from src.analysis.comparisons import compared, versus

    t = compared(s)
    if t.empty:
        return False
    plt = plt_agg()
    scale, o = s.scale, s.options
    names = [versus(s, a, b) for a, b in zip(t["setting"], t["reference"])]
    # wide enough for the longest name beside the plot: nothing cut at the figure's edge
    width = 5.5 + 0.075 * max(len(n) for n in names)
    fig, ax = plt.subplots(figsize=(width, 1.4 + 0.55 * len(t)), layout="constrained")
    y = np.arange(len(t))[::-1]  # the table's order, top to bottom
    if o.get("equivalence"):
        ax.axvspan(-o["equivalence"], o["equivalence"], color="tab:blue", alpha=0.08)
    ax.axvline(0, color="0.3", lw=0.8)
    # under an adjustment the intervals drawn are the adjusted ones, so that a point whose interval
    # clears 0 is never grey (inconclusive); the table may still show unadjusted ones (--ci)
    adjusted = o.get("adjust", "none") != "none"
    low, high = ("delta_aci_low", "delta_aci_high") if adjusted and "delta_aci_low" in t else \
        ("delta_ci_low", "delta_ci_high")
    for yi, (_, r) in zip(y, t.iterrows()):
        colour = VERDICT_COLOURS.get(r["verdict"], "0.45")
        if pd.isna(r["delta"]):
            continue
        d = r["delta"] * scale
        err = None if pd.isna(r[low]) else [[d - r[low] * scale], [r[high] * scale - d]]
        ax.errorbar(d, yi, xerr=err, fmt="o", color=colour, ecolor=colour, capsize=4, ms=6)
        p = "" if pd.isna(r["p_adj"]) else f"p = {r['p_adj']:.3g}, "
        ax.annotate(f"{p}{r['verdict']}", (d, yi), xytext=(0, 7), textcoords="offset points", ha="center",
                    fontsize=7, color=colour)
    ax.set_yticks(y, names)
    ax.margins(x=0.15)  # room for the verdict labels centred over the outermost points
    ax.set_ylim(-0.7, len(t) - 0.3)
    unit = " (pp)" if s.percent else ""
    what = f"{o['adjust']}-adjusted CI" if adjusted else "unadjusted 95 % CI"
    ax.set_xlabel(f"Δ {s.metric}{unit} with {what}\n({'higher' if s.higher_is_better else 'lower'} is better)")
    ax.grid(axis="x", alpha=0.3)
    handles = [Line2D([], [], marker="o", ls="", color=c, label=v) for v, c in VERDICT_COLOURS.items()
               if v in set(t["verdict"])]
    ax.legend(handles=handles, fontsize=8, loc="best")
    ax.set_title(f"{s.name}: vs reference, {o.get('adjust', 'holm')}-adjusted p, α = {o.get('alpha', 0.05):g}",
                 fontsize=9)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def curves_chart(s: Summary, path: Path) -> None:
    plt = plt_agg()
    from matplotlib.ticker import MaxNLocator

    from src.analysis.summary import EPOCH_AXIS, held_out_name

    curves = epoch_curves(s)
    held = "validation (= test split)" if held_out_name(s) == "test" else "validation"
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    for ax, col, label in ((axes[0], "val/acc", f"{held} accuracy (%)"), (axes[1], "val/loss", f"{held} loss")):
        ax.set_xlabel(EPOCH_AXIS)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        if curves.empty or col not in curves.columns:
            ax.text(0.5, 0.5, "no CSV logs", transform=ax.transAxes, ha="center")
            continue
        scale = 100 if col == "val/acc" else 1
        for setting in s.table["setting"]:  # table order, as the strip plot
            g = curves[curves["setting"] == setting].groupby("epoch")[col].agg(["mean", "std", "count"])
            if g.empty:
                continue
            m, sd = g["mean"] * scale, g["std"].fillna(0) * scale
            label = f"{setting_label(s, setting)} (n={int(g['count'].max())})"
            if len(g) == 1:  # one epoch: a band would have no width
                ax.errorbar(g.index, m, yerr=sd, fmt="o", capsize=4, label=label)
                continue
            ax.plot(g.index, m, marker="o" if len(g) < 12 else None, ms=3, label=label)
            ax.fill_between(g.index, m - sd, m + sd, alpha=0.2)
        if curves["epoch"].max() < 1:
            ax.set_xticks([0])
    if axes[0].get_legend_handles_labels()[0]:  # beside the axes: it never covers a curve
        axes[1].legend(*axes[0].get_legend_handles_labels(), fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1),
                       borderaxespad=0)
    fig.suptitle(f"{s.name}: mean ± std over seeds per setting", fontsize=10)
    fig.savefig(path, dpi=120)
    plt.close(fig)


