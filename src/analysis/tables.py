"""A sweep :class:`~src.analysis.summary.Summary` as text: the markdown written to ``summary.md``
and the rich table printed at the end of a sweep (same rows and cells, best mean in bold), and the
cell formats the LaTeX table shares. Accuracies are shown in %, differences in percentage points.
"""
from __future__ import annotations

import math

import pandas as pd

from src.analysis.comparisons import compared, integrity_notes, notice
from src.analysis.summary import CLIPPED, UNINFORMATIVE, Summary, label

EXACT_FLOOR_MARK = "‡"   # the exact test cannot reach alpha at this n, however clear the result
DISAGREE_MARK = "≠"      # the exact test and the t-test fall on different sides of alpha
ADJUST_NAMES = {"holm": "Holm", "bh": "Benjamini-Hochberg", "none": "no"}


def _nan(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or pd.isna(value)


def fmt(value, percent: bool) -> str:
    if _nan(value):
        return "–"
    if percent:
        return f"{value * 100:.2f}"
    return f"{value:.1f}" if abs(value) >= 100 else f"{value:.4f}"


def mean_std(mean, std, percent: bool) -> str:
    """'91.92 ± 0.21'; a single run has no SD, so its mean stands alone."""
    if _nan(mean):
        return "–"
    return fmt(mean, percent) if _nan(std) else f"{fmt(mean, percent)} ± {fmt(std, percent)}"


def fmt_interval(low, high, percent: bool, why: str = "") -> str:
    if why == UNINFORMATIVE or _nan(low) or _nan(high):
        return why if why and why not in ("t", CLIPPED) else "–"
    return f"[{fmt(low, percent)}, {fmt(high, percent)}]" + (" (clipped)" if why == CLIPPED else "")


def fmt_signed(value, percent: bool) -> str:
    if _nan(value):
        return "–"
    text = fmt(value, percent)
    return text if text.startswith("-") else f"+{text}"


def fmt_delta(r, percent: bool) -> str:
    """'+0.55 [-0.12, +1.22]' (Δ and its 95 % CI)."""
    if _nan(r.get("delta")):
        return "–"
    ci = "" if _nan(r.get("delta_ci_low")) else \
        f" [{fmt_signed(r['delta_ci_low'], percent)}, {fmt_signed(r['delta_ci_high'], percent)}]"
    return fmt_signed(r["delta"], percent) + ci


def fmt_p(p) -> str:
    """Three significant digits, as the issue's readers compare them with alpha."""
    return "–" if _nan(p) else f"{p:.3g}"


def fmt_verdict(r, s: Summary) -> str:
    v = r.get("verdict", "")
    if v == "equivalent":
        return f"equivalent within ±{s.options['equivalence']:g}{' pp' if s.percent else ''}"
    return v if isinstance(v, str) else ""


def fmt_exact(r) -> str:
    if _nan(r.get("exact_p_adj")):
        return "–"
    marks = (EXACT_FLOOR_MARK if r["exact_cannot_reach_alpha"] else "") + (DISAGREE_MARK if r["exact_disagrees"] else "")
    return f"{fmt_p(r['exact_p_adj'])}{' ' + marks if marks else ''}"


def reference_name(s: Summary) -> str:
    """'relu' when every row has the same reference, else what --reference named ('activation=relu':
    each setting against relu at the same values of the other keys)."""
    refs = {r for r, v in zip(s.table.get("reference", []), s.table.get("verdict", [])) if v != "no reference"}
    return label(s, refs.pop()) if len(refs) == 1 else (s.options.get("reference") or "reference")


def best_row(s: Summary) -> int | None:
    means = s.table["mean"]
    if means.notna().sum() <= 1:
        return None
    return int(means.idxmax() if s.higher_is_better else means.idxmin())


def display_rows(s: Summary) -> tuple[list[str], list[list[str]], int | None]:
    """Header, rows of strings and the index of the best setting (for bold)."""
    unit, pc = (" (%)" if s.percent else ""), s.percent
    boot = bool((s.table["n"] >= 10).any())
    cmp = "verdict" in s.table and len(compared(s)) > 0
    adj = s.options.get("adjust", "holm")
    header = [*s.keys] if s.keys else ["setting"]
    header += [f"{s.metric}{unit}", "n", "min", "max", "95% CI", "median"]
    header += ["IQM", "BCa 95% CI"] if boot else []
    header += [f"Δ vs {reference_name(s)}{' (pp)' if pc else ''} [95% CI]", f"p ({adj})", "verdict",
               f"exact p ({adj})"] if cmp else []
    header += ["failed", "diverged", *(["missing"] if s.table["missing"].any() else []), "epoch time (s)"]
    rows = []
    for _, r in s.table.iterrows():
        row = [str(r[k]) for k in s.keys] if s.keys else ["all"]
        row += [mean_std(r["mean"], r["std"], pc), str(r["n"]), fmt(r["min"], pc), fmt(r["max"], pc),
                fmt_interval(r["ci_low"], r["ci_high"], pc, r["interval"]), fmt(r["median"], pc)]
        if boot:
            row += [fmt(r["iqm"], pc), fmt_interval(r["boot_low"], r["boot_high"], pc)]
        if cmp:
            ref = r["verdict"] == "reference"
            row += ["reference" if ref else fmt_delta(r, pc), "" if ref else fmt_p(r["p_adj"]),
                    "" if ref else fmt_verdict(r, s), "" if ref else fmt_exact(r)]
        row += [str(r["failed"]), str(r["diverged"])]
        if s.table["missing"].any():
            row.append(str(r["missing"]))
        row.append("–" if _nan(r["epoch_time_s"]) else f"{r['epoch_time_s']:.2f}")
        rows.append(row)
    return header, rows, best_row(s)


def method_note(s: Summary) -> str:
    """What the comparison columns mean, in one paragraph (markdown)."""
    o, t = s.options, compared(s)
    tests = sorted(set(t["test"]) - {"none", ""})
    exact = sorted(set(t["exact_test"]) - {"none", ""})
    pp = " in percentage points" if s.percent else ""
    text = (f"Δ = mean − the reference's mean{pp}, with its 95 % CI; p from the {' / '.join(tests) or 't'}-test "
            "(paired by seed when both settings ran the same seeds, else Welch), "
            f"{ADJUST_NAMES[o['adjust']]}-adjusted over the table's {o['comparisons']} comparison(s); verdict at "
            f"α = {o['alpha']:g}")
    if o.get("equivalence"):
        text += f", equivalence by two one-sided tests within ±{o['equivalence']:g}{' pp' if s.percent else ''}"
    text += (f". Exact p: {' / '.join(exact) or 'exact'} test (no normality assumed), same adjustment; "
             f"{EXACT_FLOOR_MARK} it cannot reach α at this n even for a perfect result, "
             f"{DISAGREE_MARK} it disagrees with the t-test.")
    return text


def comparison_details(s: Summary) -> list[str]:
    """A second markdown table: the tests behind each verdict and the power estimate."""
    t = compared(s)
    if t.empty:
        return []
    pc, unit = s.percent, " (pp)" if s.percent else ""
    better = "P(A>B)" if s.higher_is_better else "P(A<B)"
    header = ["setting", "vs", "test", "t", "df", "p", "exact test", "exact p", "r (paired)", better, "wins",
              f"SD used{unit}", f"smallest Δ at n{unit}", "seeds for Δ"]
    plan = s.options.get("planning_alpha", s.options["alpha"])
    lines = ["", "Comparison details (p unadjusted; power for planning: two-sided t-test, "
             f"α = {plan:.3g}{' (α/m: the adjusted level)' if plan < s.options['alpha'] else ''}, "
             f"{s.options['power']:.0%} power, from the seed SD):", "",
             "| " + " | ".join(header) + " |", "|---|---|---|" + "---:|" * (len(header) - 3)]
    for _, r in t.iterrows():
        wins = "–" if _nan(r["wins"]) or _nan(r["pairs"]) else f"{int(r['wins'])} of {int(r['pairs'])}"
        needed = "–" if _nan(r["seeds_needed"]) else ("> 10^6" if math.isinf(r["seeds_needed"])
                                                      else f"{int(r['seeds_needed'])}")
        cells = [label(s, r["setting"]), label(s, r["reference"]), r["test"] or "none",
                 "–" if _nan(r["t"]) else f"{r['t']:.3f}", "–" if _nan(r["df"]) else f"{r['df']:.3g}",
                 fmt_p(r["p"]), r["exact_test"] or "–", fmt_p(r["exact_p"]) + ("" if r["exact_all"] else " (MC)"),
                 "–" if _nan(r["r"]) else f"{r['r']:.2f}", "–" if _nan(r["prob_better"]) else f"{r['prob_better']:.2f}",
                 wins, fmt(r["power_sd"], pc), fmt(r["detectable_delta"], pc), needed]
        lines.append("| " + " | ".join(cells) + " |")
    target = s.options.get("target_delta")
    lines.append("")
    lines.append(f"Seeds for Δ: per setting, to detect {'Δ = ' + format(target, 'g') + unit if target else 'the observed Δ'}"
                 " (a planning estimate, not a result).")
    return lines


def markdown(s: Summary) -> str:
    header, rows, best = display_rows(s)
    col = len(s.keys) if s.keys else 1
    lines = [f"# Sweep summary: {s.name}", ""]
    what = f"`{s.metric}`" + (" in %" if s.percent else "") + ", mean ± SD over seeds (SD with ddof=1)"
    lines.append(f"Metric: {what}; 95 % CI = t-interval of the mean (none for a single run); n = completed runs "
                 "per setting; best mean in bold.")
    if (s.table["n"] >= 10).any():
        lines.append("IQM = interquartile mean; BCa 95 % CI = " + _boot_label() + " (settings with n ≥ 10).")
    if s.common:
        lines.append("Common to all runs: " + " ".join(f"`{k}={v}`" for k, v in s.common.items()))
    if len(s.sources) > 1:
        lines.append("Merged sweeps: " + ", ".join(f"`{p}`" for p in s.sources))
    left = {i for i, h in enumerate(header) if i < col or h == "verdict"}
    lines += ["", "| " + " | ".join(header) + " |", "|" + "|".join("---" if i in left else "---:"
                                                              for i in range(len(header))) + "|"]
    for i, row in enumerate(rows):
        cells = list(row)
        if i == best:
            cells[col] = f"**{cells[col]}**"
        lines.append("| " + " | ".join(cells) + " |")
    if len(compared(s)):
        lines += ["", method_note(s)]
        note = notice(s)
        if note:
            lines += ["", f"**Note:** {note}"]
        lines += comparison_details(s)
    for n in integrity_notes(s):
        lines += ["", n]
    for w in s.warnings:
        lines += ["", f"Warning: {w}"]
    if len(s.problems):
        lines += ["", "Runs that did not complete:", ""]
        for _, p in s.problems.iterrows():
            err = " ".join(str(p["error"] or "").split())
            lines.append(f"- `{p['run']}`: **{p['status']}**" + (f": {err}" if err else ""))
    return "\n".join(lines) + "\n"


def _boot_label() -> str:
    from src.analysis.stats import BOOTSTRAP_LABEL

    return BOOTSTRAP_LABEL


def print_table(s: Summary, console=None, show_problems: bool = True) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    if not console.is_terminal:  # a log file: no reason to wrap at 80 columns
        console = Console(file=console.file, width=max(console.width, 200), highlight=False)
    header, rows, best = display_rows(s)
    col = len(s.keys) if s.keys else 1
    title = f"{s.name}: {s.metric}" + (" (%)" if s.percent else "") + ", mean ± SD over seeds"
    caption = " ".join(f"{k}={v}" for k, v in s.common.items())
    if len(compared(s)):
        caption += (f"{'; ' if caption else ''}{EXACT_FLOOR_MARK} exact test cannot reach α at this n, "
                    f"{DISAGREE_MARK} exact test disagrees")
    table = Table(title=title, caption=caption or None)
    for i, h in enumerate(header):  # the keys' names in full (rich would cut "data.batch_size" to "data.batch_s…")
        table.add_column(h, justify="left" if i < col or h == "verdict" else "right",
                         min_width=len(h) if i < col else None)
    for i, row in enumerate(rows):
        style = "bold" if i == best else None
        failed = int(s.table.iloc[i][["failed", "diverged", "missing"]].sum())
        table.add_row(*row, style="red" if failed and s.table.iloc[i]["n"] == 0 else style)
    console.print(table)
    note = notice(s) if len(compared(s)) else None
    if note:
        console.print(f"[yellow]Note:[/yellow] {note}", highlight=False, soft_wrap=True)
    for n in integrity_notes(s):
        console.print(n, highlight=False, soft_wrap=True)
    for w in s.warnings:
        console.print(f"[yellow]warning:[/yellow] {w}", highlight=False, soft_wrap=True)
    for _, p in (s.problems.iterrows() if show_problems else ()):
        console.print(f"[red]{p['status']}[/red] {p['run']}: {p['error'] or ''}", highlight=False, soft_wrap=True)
