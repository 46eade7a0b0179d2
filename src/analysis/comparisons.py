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
from src.analysis.summary import (CLIPPED, PROVENANCE, UNINFORMATIVE, Summary, default_reference, label,
                                  metric_bounds, reference_map, run_values)

COLUMNS = ("reference", "paired", "test", "delta", "delta_ci_low", "delta_ci_high", "delta_aci_low", "delta_aci_high",
           "ci_level", "delta_ci_clipped", "t", "df", "p", "p_adj",
           "verdict", "exact_test", "exact_p", "exact_p_adj", "exact_all", "exact_floor", "exact_floor_adj", "exact_cannot_reach_alpha",
           "exact_disagrees", "normal_only", "r", "prob_better", "wins", "pairs", "tost_p", "tost_p_adj",
           "power_sd", "detectable_delta", "power_delta", "seeds_needed")


CI_CHOICES = ("unadjusted", "adjusted")


def check_options(alpha: float = stats.ALPHA, adjust: str = "holm", equivalence: float | None = None,
                  target_delta: float | None = None, ci: str = "unadjusted") -> None:
    """One-line errors for bad statistics options, before any file is read."""
    if ci not in CI_CHOICES:
        raise ValueError(f"--ci {ci}: choose one of {', '.join(CI_CHOICES)}")
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


def _interval(a, b, paired: bool, delta: float, level: float) -> tuple[float, float]:
    """The t interval of Δ at confidence 1 − level (the same test as the p-value's)."""
    if not np.isfinite(level):
        return math.nan, math.nan
    if paired and np.ptp(np.asarray(a) - np.asarray(b)) == 0:  # identical differences: Δ itself
        return delta, delta
    _, _, _, ci = (stats.paired_t if paired else stats.welch_t)(a, b, 1 - level)
    return ci


def compare(s: Summary, reference: str | None = None, alpha: float = stats.ALPHA, adjust: str = "holm",
            equivalence: float | None = None, target_delta: float | None = None, ci: str = "unadjusted") -> Summary:
    """Add the comparison columns (:data:`COLUMNS`) to ``s.table`` and the options to ``s.options``.
    ``equivalence`` and ``target_delta`` are in the displayed unit (percentage points for
    accuracies), as a reader of the table thinks of them. ``ci``: the table's Δ intervals at 95 %
    ("unadjusted") or at the level that agrees with each adjusted verdict ("adjusted",
    :func:`stats.interval_levels`); the latter are always kept too (``delta_aci_*``), for the
    comparison figure."""
    check_options(alpha, adjust, equivalence, target_delta, ci)
    refs = reference_map(s, reference)  # a bad --reference fails here, before anything is computed
    scale, higher = s.scale, s.higher_is_better
    margin = equivalence / scale if equivalence else None
    lo, hi = metric_bounds(s.metric)
    span = hi - lo  # a difference of two values in [lo, hi] lies in [-span, span]
    m = sum(1 for x in s.table["setting"] if refs.get(x) not in (None, x)  # the family adjusted together
            and min(len(run_values(s, x)), len(run_values(s, refs[x]))) >= 2
            and not no_test_reason(s, run_values(s, x), run_values(s, refs[x])))
    pairs = {}
    rows = []
    for setting in s.table["setting"]:
        ref = refs.get(setting)
        row = dict.fromkeys(COLUMNS, math.nan)
        row.update(reference=ref, verdict="reference" if ref == setting else "no reference",
                   test="", exact_test="", paired=False, exact_all=False, exact_cannot_reach_alpha=False,
                   exact_disagrees=False, normal_only=False)
        untestable = ref is not None and ref != setting and no_test_reason(s, run_values(s, setting),
                                                                          run_values(s, ref))
        if untestable:
            row.update(verdict=untestable)
        elif ref is not None and ref != setting:
            a, b, paired = _pairs(run_values(s, setting), run_values(s, ref))
            pairs[setting] = (a, b, paired)
            c = stats.compare(a, b, paired, higher, margin)
            n = min(len(a), len(b))
            aim = target_delta / scale if target_delta else abs(c.delta)
            plan = stats.planning_alpha(alpha, m, adjust)  # the power numbers at the adjusted level
            row.update(paired=paired, test=c.test, delta=c.delta, delta_ci_low=c.ci_low, delta_ci_high=c.ci_high,
                       t=c.t, df=c.df, p=c.p, exact_test=c.exact_test, exact_p=c.exact_p, exact_all=c.exact_all,
                       exact_floor=c.exact_floor, exact_floor_adj=stats.adjusted_floor(c.exact_floor, m, adjust), r=c.r,
                       prob_better=c.prob_better, wins=c.wins,
                       pairs=len(a) if paired else math.nan, tost_p=c.tost_p, power_sd=c.sd,
                       detectable_delta=stats.detectable_delta(c.sd, n, paired, plan),
                       power_delta=aim, seeds_needed=stats.seeds_needed(aim, c.sd, paired, plan), verdict="")
        rows.append(row)
    cmp = pd.DataFrame(rows, columns=list(COLUMNS))
    # one family per table: every comparison with a test, adjusted together
    cmp["p_adj"] = stats.adjust(cmp["p"].to_numpy(float), adjust)
    cmp["exact_p_adj"] = stats.adjust(cmp["exact_p"].to_numpy(float), adjust)
    cmp["tost_p_adj"] = stats.adjust(cmp["tost_p"].to_numpy(float), adjust)
    cmp["ci_level"] = stats.interval_levels(cmp["p"].to_numpy(float), alpha, adjust)
    for i, setting in enumerate(s.table["setting"]):
        if setting not in pairs or not np.isfinite(cmp.at[i, "p"]):
            continue
        a, b, paired = pairs[setting]
        cmp.loc[i, ["delta_aci_low", "delta_aci_high"]] = _interval(a, b, paired, cmp.at[i, "delta"],
                                                                    cmp.at[i, "ci_level"])
    if ci == "adjusted":
        cmp["delta_ci_low"], cmp["delta_ci_high"] = cmp["delta_aci_low"], cmp["delta_aci_high"]
    clipped = []
    for i in range(len(cmp)):
        cuts = []
        for low, high in (("delta_ci_low", "delta_ci_high"), ("delta_aci_low", "delta_aci_high")):
            cmp.at[i, low], cmp.at[i, high], cut = stats.clip_interval(cmp.at[i, low], cmp.at[i, high], -span, span)
            cuts.append(cut)
        clipped.append(cuts[0])
    cmp["delta_ci_clipped"] = clipped
    for i, r in cmp.iterrows():
        if r["verdict"] != "":
            continue
        v = stats.verdict(r["delta"], r["p_adj"], alpha, higher, r["tost_p_adj"])
        t_sig = v in ("better", "worse")
        exact_sig = bool(np.isfinite(r["exact_p_adj"]) and r["exact_p_adj"] < alpha)
        cannot = bool(r["exact_floor_adj"] >= alpha)  # after the adjustment not even a perfect result reaches α
        cmp.loc[i, ["verdict", "exact_cannot_reach_alpha", "exact_disagrees", "normal_only"]] = \
            [v, cannot, (not cannot) and t_sig != exact_sig, t_sig and not exact_sig]
    for c in ("paired", "exact_all", "exact_cannot_reach_alpha", "exact_disagrees", "normal_only"):
        cmp[c] = cmp[c].astype(bool)
    s.table = pd.concat([s.table.drop(columns=[c for c in COLUMNS if c in s.table], errors="ignore"),
                         cmp.set_index(s.table.index)], axis=1)
    s.options = dict(reference=reference or default_reference(s), alpha=alpha,
                     adjust=adjust, equivalence=equivalence, target_delta=target_delta,
                     comparisons=int(np.isfinite(cmp["p"].to_numpy(float)).sum()), power=stats.POWER,
                     ci=ci if stats.ADJUST[adjust] else "unadjusted",
                     planning_alpha=stats.planning_alpha(alpha, m, adjust))
    return s


SELECTED_ON_TEST = "no test: selected on the test split"
POOLED_UNPAIRED = "no test: pooled, not paired"


def selected_on_test(s: Summary) -> bool:
    """A validation metric (val/acc_best, ...) of runs that validated on the test split: the best
    epoch was chosen by looking at the test set, so it may be shown, never tested."""
    runs = s.runs[s.runs["status"] == "completed"]
    return s.metric.startswith("val/") and "val_is_test_split" in runs and \
        bool(runs["val_is_test_split"].fillna(False).astype(bool).any())


def no_test_reason(s: Summary, a: pd.DataFrame, b: pd.DataFrame) -> str:
    """Why this pair gets no p-value or verdict ("" when it can be tested)."""
    if selected_on_test(s):
        return SELECTED_ON_TEST
    if s.pooled and not (set(a["seed"]) == set(b["seed"]) and len(a) >= 2):
        return POOLED_UNPAIRED  # a mixture of pooled settings against another mixture proves nothing
    return ""


def compared(s: Summary) -> pd.DataFrame:
    """The rows of ``s.table`` that were compared with a reference (not the reference itself)."""
    if "verdict" not in s.table:
        return s.table.iloc[0:0]
    return s.table[~s.table["verdict"].isin(["reference", "no reference", SELECTED_ON_TEST, POOLED_UNPAIRED])]


def integrity_notes(s: Summary) -> list[str]:
    """The lines under every rendering of the table (printed, summary.md, summary.tex) that keep it
    from saying more than the runs support."""
    notes = []
    if s.folds:
        notes.append(f"k-fold: the {s.folds} folds of each seed are averaged first; n counts seeds, the unit "
                     "of replication (the folds of one seed share their training data).")
    for k, values in s.pooled.items():
        notes.append(f"Pooled over {k} ({', '.join(values)}): it varies among the runs but is not a grouping "
                     f"key, so each row mixes its values; comparisons pair runs on {k} and seed "
                     f"(or give no test). Add --by {k} to separate them.")
    if selected_on_test(s):
        notes.append(f"{s.metric} was selected on the test split (validation = test split, data.val_size=0): "
                     "shown, but no p-value or verdict; hold out a validation split (data.val_size=5000) to "
                     "test it.")
    t = s.table
    for col, what in PROVENANCE.items():
        done = s.runs[(s.runs["status"] == "completed")] if col in s.runs else s.runs.iloc[0:0]
        if done[col].dropna().map(str).nunique() < 2:
            continue
        short = (lambda v: str(v)[:10]) if col == "commit" else str
        per_setting = {x: sorted({short(v) for v in g.dropna()}) for x, g in done.groupby("setting", sort=False)[col]}
        if len({tuple(v) for v in per_setting.values()}) == 1:  # the same mix in every setting: no confound
            notes.append(f"The runs span several {what}s ({', '.join(next(iter(per_setting.values())))}), alike in "
                         "every setting.")
            continue
        per = "; ".join(f"{label(s, x)}: {', '.join(v)}" for x, v in per_setting.items())
        notes.append(f"Confound: the runs differ in {what} ({per}), so a difference may come from it, not "
                     "from the setting.")
    if "interval" in t and (t["interval"] == UNINFORMATIVE).any():
        notes.append("n = 2: a t interval of the mean spans ±12.7 SD, so it is not shown; run more seeds.")
    if "interval" in t and (t["interval"] == CLIPPED).any():
        notes.append("Intervals marked (clipped) were cut to the metric's range.")
    cmp = compared(s)
    if len(cmp) and s.options.get("adjust", "none") != "none" and s.options.get("comparisons", 0) > 1:
        if s.options.get("ci") == "adjusted":
            notes.append("Intervals of Δ are adjusted: each excludes 0 exactly when its adjusted p is below α "
                         "(Holm: the level of its step, α/m for the first; BH: R·α/m).")
        else:
            notes.append("Intervals of Δ are unadjusted 95 % intervals while the verdicts are adjusted: one may "
                         "exclude 0 with an inconclusive verdict (--ci adjusted gives intervals that agree).")
    if "delta_ci_clipped" in cmp and cmp["delta_ci_clipped"].fillna(False).astype(bool).any():
        notes.append("Some intervals of Δ were cut to the metric's range.")
    return notes


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
            m, method = s.options.get("comparisons", 1), s.options.get("adjust", "none")
            need = stats.seeds_for_exact(alpha, bool(r["paired"]), m, method)
            why = "cannot reach" if r["exact_cannot_reach_alpha"] else "does not reach"
            parts.append(f"{name} is {r['verdict']} on the t-test alone (its exact test {why} α = {alpha:g}"
                         f"{_adjusted(s)}; it can from {need} seeds{' per setting' if not r['paired'] else ''})")
        elif r["verdict"] == "inconclusive":
            need = _seeds(r["seeds_needed"])
            plan = s.options.get("planning_alpha", alpha)
            parts.append(f"{name} is inconclusive (" + (f"{need} seeds per setting would detect {aim} with "
                         f"{power:.0%} power at α = {plan:.3g}{_adjusted(s)}, a planning estimate)" if need != "?"
                         else "too few runs to estimate the seeds it would take)"))
    return "; ".join(parts) + "." if parts else None


def _adjusted(s: Summary) -> str:
    """' after Holm's adjustment over 2 comparisons' (nothing without an adjustment)."""
    method, m = s.options.get("adjust", "none"), s.options.get("comparisons", 1)
    names = {"holm": "Holm's", "bh": "Benjamini-Hochberg's"}
    return f" after {names[method]} adjustment over {m} comparisons" if method in names and m > 1 else ""


def versus(s: Summary, setting: str, reference: str) -> str:
    """'tanh vs relu'; with several keys only the reference's differing values ('activation=swish,
    model.depth=4 vs activation=relu')."""
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
