"""A sweep :class:`~src.report.Summary` as text: the markdown table written to ``summary.md`` and
the rich table printed at the end of a sweep (same rows, best mean in bold)."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from src.report import Summary


def fmt(value, percent: bool) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if percent:
        return f"{value * 100:.2f}"
    return f"{value:.1f}" if abs(value) >= 100 else f"{value:.4f}"


def mean_std(mean, std, percent: bool) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    return f"{fmt(mean, percent)} ± {fmt(std, percent)}"


def display_rows(s: Summary) -> tuple[list[str], list[list[str]], int | None]:
    """Header, rows of strings and the index of the best setting (for bold)."""
    unit = " (%)" if s.percent else ""
    header = [*s.keys] if s.keys else ["setting"]
    header += [f"{s.metric}{unit}", "n", "min", "max", "failed", "diverged", "epoch time (s)"]
    if s.table["missing"].any():
        header.insert(-1, "missing")
    rows = []
    for _, r in s.table.iterrows():
        row = [str(r[k]) for k in s.keys] if s.keys else ["all"]
        row += [mean_std(r["mean"], r["std"], s.percent), str(r["n"]), fmt(r["min"], s.percent),
                fmt(r["max"], s.percent), str(r["failed"]), str(r["diverged"])]
        if s.table["missing"].any():
            row.append(str(r["missing"]))
        row.append("–" if pd.isna(r["epoch_time_s"]) else f"{r['epoch_time_s']:.2f}")
        rows.append(row)
    means = s.table["mean"]
    best = None
    if means.notna().sum() > 1:
        lower_is_better = "loss" in s.metric or "time" in s.metric
        best = int(means.idxmin() if lower_is_better else means.idxmax())
    return header, rows, best


def markdown(s: Summary) -> str:
    header, rows, best = display_rows(s)
    col = len(s.keys) if s.keys else 1
    lines = [f"# Sweep summary: {s.sweep_dir.name}", ""]
    what = f"`{s.metric}`" + (" in %" if s.percent else "") + ", mean ± std over seeds (std with ddof=1)"
    lines.append(f"Metric: {what}; n = completed runs per setting; best mean in bold.")
    if s.common:
        lines.append("Common to all runs: " + " ".join(f"`{k}={v}`" for k, v in s.common.items()))
    lines += ["", "| " + " | ".join(header) + " |", "|" + "|".join("---" if i < col else "---:"
                                                              for i in range(len(header))) + "|"]
    for i, row in enumerate(rows):
        cells = list(row)
        if i == best:
            cells[col] = f"**{cells[col]}**"
        lines.append("| " + " | ".join(cells) + " |")
    if len(s.problems):
        lines += ["", "Runs that did not complete:", ""]
        for _, p in s.problems.iterrows():
            err = " ".join(str(p["error"] or "").split())
            lines.append(f"- `{p['run']}`: **{p['status']}**" + (f": {err}" if err else ""))
    return "\n".join(lines) + "\n"


def print_table(s: Summary, console=None, show_problems: bool = True) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    if not console.is_terminal:  # a log file: no reason to wrap at 80 columns
        console = Console(file=console.file, width=max(console.width, 160), highlight=False)
    header, rows, best = display_rows(s)
    col = len(s.keys) if s.keys else 1
    title = f"{s.sweep_dir.name}: {s.metric}" + (" (%)" if s.percent else "") + ", mean ± std over seeds"
    table = Table(title=title, caption=" ".join(f"{k}={v}" for k, v in s.common.items()) or None)
    for i, h in enumerate(header):
        table.add_column(h, justify="left" if i < col else "right")
    for i, row in enumerate(rows):
        style = "bold" if i == best else None
        failed = int(s.table.iloc[i][["failed", "diverged", "missing"]].sum())
        table.add_row(*row, style="red" if failed and s.table.iloc[i]["n"] == 0 else style)
    console.print(table)
    for _, p in (s.problems.iterrows() if show_problems else ()):
        console.print(f"[red]{p['status']}[/red] {p['run']}: {p['error'] or ''}", highlight=False, soft_wrap=True)
