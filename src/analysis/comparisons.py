"""Every setting of a summary against its reference setting: Δ with its 95 % interval, the t-test
(paired by seed when both settings ran the same seeds, else Welch) and the exact test beside it,
p-values adjusted across the table, a verdict in words and a power estimate for planning.

The numbers come from :mod:`src.analysis.stats`; this module decides what is compared with what
and writes the results as columns of ``Summary.table`` (raw units, like ``mean``), so the CSV,
markdown, LaTeX, printed table and figures all read the same numbers.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from src.analysis import stats
from src.analysis.summary import Summary, default_reference, reference_map, run_values

COLUMNS = ("reference", "paired", "test", "delta", "delta_ci_low", "delta_ci_high", "t", "df", "p", "p_adj",
           "verdict", "exact_test", "exact_p", "exact_p_adj", "exact_all", "exact_floor", "exact_cannot_reach_alpha",
           "exact_disagrees", "normal_only", "r", "prob_better", "wins", "pairs", "tost_p", "tost_p_adj",
           "power_sd", "detectable_delta", "power_delta", "seeds_needed")


def check_options(alpha: float = stats.ALPHA, adjust: str = "holm", equivalence: float | None = None,
                  target_delta: float | None = None) -> None:
    """One-line errors for bad statistics options, before any file is read."""
    if not 0 < alpha < 1:
        raise ValueError(f"--alpha {alpha}: give a level between 0 and 1, e.g. 0.05")
    if adjust not in stats.ADJUST:
        raise ValueError(f"--adjust {adjust}: choose one of {', '.join(stats.ADJUST)}")
    for name, v in (("--equivalence", equivalence), ("--target-delta", target_delta)):
        if v is not None and not (math.isfinite(v) and v > 0):
            raise ValueError(f"{name} {v}: give a positive margin in the table's unit (percentage points "
                             "for accuracies)")


def _pairs(a: pd.DataFrame, b: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, bool]:
    """The two settings' values, aligned by seed when both ran exactly the same seeds (each once):
    then the seed fixed data order and initialisation for both, and the differences are the unit."""
    sa, sb = a["seed"].astype(str), b["seed"].astype(str)
    same = (a["seed"].notna().all() and b["seed"].notna().all() and sa.is_unique and sb.is_unique
            and set(sa) == set(sb) and len(a) >= 2)
    if not same:
        return a["value"].to_numpy(), b["value"].to_numpy(), False
    order = sorted(sa)
    return (a.set_index(sa)["value"].loc[order].to_numpy(), b.set_index(sb)["value"].loc[order].to_numpy(), True)


def compare(s: Summary, reference: str | None = None, alpha: float = stats.ALPHA, adjust: str = "holm",
            equivalence: float | None = None, target_delta: float | None = None) -> Summary:
    """Add the comparison columns (:data:`COLUMNS`) to ``s.table`` and the options to ``s.options``.
    ``equivalence`` and ``target_delta`` are in the displayed unit (percentage points for
    accuracies), as a reader of the table thinks of them."""
    check_options(alpha, adjust, equivalence, target_delta)
    refs = reference_map(s, reference)  # a bad --reference fails here, before anything is computed
    scale, higher = s.scale, s.higher_is_better
    margin = equivalence / scale if equivalence else None
    rows = []
    for setting in s.table["setting"]:
        ref = refs.get(setting)
        row = dict.fromkeys(COLUMNS, math.nan)
        row.update(reference=ref, verdict="reference" if ref == setting else "no reference",
                   test="", exact_test="", paired=False, exact_all=False, exact_cannot_reach_alpha=False,
                   exact_disagrees=False, normal_only=False)
        if ref is not None and ref != setting:
            a, b, paired = _pairs(run_values(s, setting), run_values(s, ref))
            c = stats.compare(a, b, paired, higher, margin)
            n = min(len(a), len(b))
            aim = target_delta / scale if target_delta else abs(c.delta)
            row.update(paired=paired, test=c.test, delta=c.delta, delta_ci_low=c.ci_low, delta_ci_high=c.ci_high,
                       t=c.t, df=c.df, p=c.p, exact_test=c.exact_test, exact_p=c.exact_p, exact_all=c.exact_all,
                       exact_floor=c.exact_floor, r=c.r, prob_better=c.prob_better, wins=c.wins,
                       pairs=len(a) if paired else math.nan, tost_p=c.tost_p, power_sd=c.sd,
                       detectable_delta=stats.detectable_delta(c.sd, n, paired, alpha),
                       power_delta=aim, seeds_needed=stats.seeds_needed(aim, c.sd, paired, alpha), verdict="")
        rows.append(row)
    cmp = pd.DataFrame(rows, columns=list(COLUMNS))
    # one family per table: every comparison with a test, adjusted together
    cmp["p_adj"] = stats.adjust(cmp["p"].to_numpy(float), adjust)
    cmp["exact_p_adj"] = stats.adjust(cmp["exact_p"].to_numpy(float), adjust)
    cmp["tost_p_adj"] = stats.adjust(cmp["tost_p"].to_numpy(float), adjust)
    for i, r in cmp.iterrows():
        if r["verdict"] != "":
            continue
        v = stats.verdict(r["delta"], r["p_adj"], alpha, higher, r["tost_p_adj"])
        t_sig = v in ("better", "worse")
        exact_sig = bool(np.isfinite(r["exact_p_adj"]) and r["exact_p_adj"] < alpha)
        cannot = bool(r["exact_floor"] > alpha)
        cmp.loc[i, ["verdict", "exact_cannot_reach_alpha", "exact_disagrees", "normal_only"]] = \
            [v, cannot, (not cannot) and t_sig != exact_sig, t_sig and not exact_sig]
    for c in ("paired", "exact_all", "exact_cannot_reach_alpha", "exact_disagrees", "normal_only"):
        cmp[c] = cmp[c].astype(bool)
    s.table = pd.concat([s.table.drop(columns=[c for c in COLUMNS if c in s.table], errors="ignore"),
                         cmp.set_index(s.table.index)], axis=1)
    s.options = dict(reference=reference or default_reference(s), alpha=alpha,
                     adjust=adjust, equivalence=equivalence, target_delta=target_delta,
                     comparisons=int(np.isfinite(cmp["p"].to_numpy(float)).sum()), power=stats.POWER)
    return s


def compared(s: Summary) -> pd.DataFrame:
    """The rows of ``s.table`` that were compared with a reference (not the reference itself)."""
    if "verdict" not in s.table:
        return s.table.iloc[0:0]
    return s.table[~s.table["verdict"].isin(["reference", "no reference"])]


def notice(s: Summary) -> str | None:
    """One line for under the printed table: each verdict that rests on the normal assumption alone
    and each inconclusive one, with the seeds per setting it would take (a planning estimate)."""
    t = compared(s)
    alpha, power = s.options.get("alpha", stats.ALPHA), s.options.get("power", stats.POWER)
    target = s.options.get("target_delta")
    aim = f"a Δ of {target:g}{' pp' if s.percent else ''}" if target else "the observed Δ"
    parts = []
    for _, r in t.iterrows():
        name = versus(s, r["setting"], r["reference"])
        if r["normal_only"]:
            need = stats.seeds_for_exact(alpha, paired=bool(r["paired"]))
            why = "cannot reach" if r["exact_cannot_reach_alpha"] else "does not reach"
            parts.append(f"{name} is {r['verdict']} on the t-test alone (its exact test {why} α = {alpha:g}; it "
                         f"can from {need} seeds{' per setting' if not r['paired'] else ''})")
        elif r["verdict"] == "inconclusive":
            need = _seeds(r["seeds_needed"])
            parts.append(f"{name} is inconclusive (" + (f"{need} seeds per setting would detect {aim} with "
                         f"{power:.0%} power, a planning estimate)" if need != "?" else "too few runs to estimate "
                         "the seeds it would take)"))
    return "; ".join(parts) + "." if parts else None


def versus(s: Summary, setting: str, reference: str) -> str:
    """'tanh vs relu'; with several keys only the reference's differing values ('activation=swish,
    model.depth=4 vs activation=relu')."""
    from src.analysis.summary import label

    if len(s.keys) <= 1:
        return f"{label(s, setting)} vs {label(s, reference)}"
    try:
        mine = dict(kv.split("=", 1) for kv in setting.split(","))
        other = [kv for kv in reference.split(",") if mine.get(kv.split("=", 1)[0]) != kv.split("=", 1)[1]]
    except (ValueError, IndexError):  # a value with a comma in it: name the reference in full
        other = []
    return f"{setting} vs {','.join(other) or reference}"


def _seeds(x: float) -> str:
    if not math.isfinite(x):
        return "> 10^6" if x == math.inf else "?"
    return f"{int(x)}"
