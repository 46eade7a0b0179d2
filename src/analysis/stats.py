"""The statistics of a study's seeds: per-setting description, two-setting comparisons, p-value
adjustment, equivalence and power. scipy and statsmodels do the arithmetic; this module only
chooses the test, guards the edge cases (n = 1, zero spread, NaN) and names what it did.

Everything here takes plain sequences of numbers (one value per seed, in any unit) and returns
numbers; it knows nothing of sweeps, tables or figures.

Why these choices:

- intervals of a mean are t-based: a percentile bootstrap under-covers badly at the 3-5 seeds
  studies use (a nominal 95 % interval covers ~76 % at n = 3); the BCa bootstrap is added, labelled,
  from n = 10 on, where it is trustworthy and does not lean on normality;
- two settings run with the same seeds share data order and initialisation, so the per-seed
  differences are the unit (paired t-test, exact sign-flip permutation test); otherwise Welch's
  t-test (no equal-variance assumption) and the exact Mann-Whitney test;
- the exact tests assume no normality but cannot reach small p-values with few seeds (sign flip:
  2 / 2**n, i.e. 0.0625 at n = 5): :attr:`Comparison.exact_floor` says how low they can go.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats as st

CONFIDENCE = 0.95
ALPHA = 0.05
POWER = 0.8
BOOTSTRAP_MIN_N = 10       # below this the IQM and the bootstrap are not reported
BOOTSTRAP_RESAMPLES = 9999
BOOTSTRAP_SEED = 0         # fixed, so a report is reproducible
PERMUTATIONS = 2 ** 16     # all sign flips / all splits when there are at most this many, else Monte Carlo
ADJUST = {"holm": "holm", "bh": "fdr_bh", "none": None}
BOOTSTRAP_LABEL = f"BCa bootstrap, {BOOTSTRAP_RESAMPLES} resamples, rng seed {BOOTSTRAP_SEED}"


def _clean(values) -> np.ndarray:
    x = np.asarray(values, dtype=float).ravel()
    return x[np.isfinite(x)]


def _quiet(fn, *args, **kwargs):
    """scipy warns about identical values (zero spread) and small samples; the caller checks the result."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


# ------------------------------------------------------------------------------ one setting
def t_interval(values, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """t-based interval of the mean (Student, n - 1 df); NaN for n < 2."""
    x = _clean(values)
    if len(x) < 2:
        return math.nan, math.nan
    if np.ptp(x) == 0:  # zero spread: the interval is the value itself (scipy would give NaN)
        return float(x[0]), float(x[0])
    ci = _quiet(st.ttest_1samp, x, 0.0).confidence_interval(confidence)
    return float(ci.low), float(ci.high)


def bca_interval(values, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """BCa bootstrap interval of the mean (fixed rng); NaN below BOOTSTRAP_MIN_N or with no spread."""
    x = _clean(values)
    if len(x) < BOOTSTRAP_MIN_N or np.ptp(x) == 0:
        return math.nan, math.nan
    res = _quiet(st.bootstrap, (x,), np.mean, confidence_level=confidence, method="BCa",
                 n_resamples=BOOTSTRAP_RESAMPLES, rng=np.random.default_rng(BOOTSTRAP_SEED))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def describe(values) -> dict:
    """n, mean, std (ddof=1), t interval of the mean, median, min, max; IQM and the BCa interval
    when n >= BOOTSTRAP_MIN_N. ``interval`` names the interval given ("t", or why there is none)."""
    x = _clean(values)
    n = len(x)
    out = dict(n=n, mean=math.nan, std=math.nan, ci_low=math.nan, ci_high=math.nan, median=math.nan,
               min=math.nan, max=math.nan, iqm=math.nan, boot_low=math.nan, boot_high=math.nan,
               interval="no completed run" if n == 0 else "n = 1: no interval" if n == 1 else "t")
    if n == 0:
        return out
    out.update(mean=float(x.mean()), median=float(np.median(x)), min=float(x.min()), max=float(x.max()))
    if n >= 2:
        out["std"] = float(x.std(ddof=1))
        out["ci_low"], out["ci_high"] = t_interval(x)
    if n >= BOOTSTRAP_MIN_N:
        out["iqm"] = float(st.trim_mean(x, 0.25))
        out["boot_low"], out["boot_high"] = bca_interval(x)
    return out


# ---------------------------------------------------------------------------- two settings
@dataclass
class Comparison:
    """Setting A against reference B; ``delta`` = mean(A) - mean(B), in the values' unit."""
    n_a: int
    n_b: int
    paired: bool
    delta: float
    ci_low: float = math.nan
    ci_high: float = math.nan
    test: str = "none"            # "paired t" | "Welch t" | "none" (fewer than 2 runs a side)
    t: float = math.nan
    df: float = math.nan
    p: float = math.nan
    exact_test: str = "none"      # "sign-flip" | "Mann-Whitney"
    exact_p: float = math.nan
    exact_all: bool = True        # every permutation enumerated (False: Monte Carlo, fixed rng)
    exact_floor: float = math.nan  # smallest p the exact test can give at these n
    r: float = math.nan           # correlation of the paired runs (Pearson), n >= 3
    prob_better: float = math.nan  # P(A better than B): Mann-Whitney U / nm, ties count half
    wins: float = math.nan        # paired: seeds on which A is better than B
    sd: float = math.nan          # SD behind the power numbers: of the differences (paired) or pooled
    tost_p: float = math.nan

    def as_dict(self) -> dict:
        return asdict(self)


def paired_t(a, b, confidence: float = CONFIDENCE):
    """scipy's paired t-test of a - b: (t, df, p, (ci_low, ci_high))."""
    res = _quiet(st.ttest_rel, a, b)
    ci = res.confidence_interval(confidence)
    return float(res.statistic), float(res.df), float(res.pvalue), (float(ci.low), float(ci.high))


def welch_t(a, b, confidence: float = CONFIDENCE):
    """scipy's Welch t-test (equal_var=False) of mean(a) - mean(b): (t, df, p, (ci_low, ci_high))."""
    res = _quiet(st.ttest_ind, a, b, equal_var=False)
    ci = res.confidence_interval(confidence)
    return float(res.statistic), float(res.df), float(res.pvalue), (float(ci.low), float(ci.high))


def _mean_diff(x, y, axis=-1):
    return np.mean(x - y, axis=axis)


def sign_flip(a, b) -> tuple[float, bool]:
    """Two-sided sign-flip permutation test of the paired differences a - b (scipy's
    permutation_test, permutation_type="samples": a and b swap within a pair). Every one of the 2**n
    flips when 2**n <= PERMUTATIONS. Returns (p, all permutations enumerated)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    res = _quiet(st.permutation_test, (a, b), _mean_diff, permutation_type="samples", vectorized=True,
                 n_resamples=PERMUTATIONS, alternative="two-sided", rng=np.random.default_rng(0))
    return float(res.pvalue), 2 ** len(a) <= PERMUTATIONS


def mann_whitney(a, b) -> tuple[float, float, bool]:
    """Two-sided Mann-Whitney test of a vs b: (U of a, p, exact). The exact null distribution when
    there are no ties; with ties (equal accuracies are common) a permutation null, which is exact
    while the splits fit in PERMUTATIONS."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    ties = len(np.unique(np.concatenate([a, b]))) < len(a) + len(b)
    if not ties:
        res = _quiet(st.mannwhitneyu, a, b, alternative="two-sided", method="exact")
        return float(res.statistic), float(res.pvalue), True
    method = st.PermutationMethod(n_resamples=PERMUTATIONS, rng=np.random.default_rng(0))
    res = _quiet(st.mannwhitneyu, a, b, alternative="two-sided", method=method)
    return float(res.statistic), float(res.pvalue), math.comb(len(a) + len(b), len(a)) <= PERMUTATIONS


def sign_flip_floor(n: int) -> float:
    """Smallest two-sided p of the sign-flip test with n pairs (all differences one sign): 2 / 2**n."""
    return min(1.0, 2.0 / 2 ** n) if n > 0 else math.nan


def mann_whitney_floor(n: int, m: int) -> float:
    """Smallest two-sided exact Mann-Whitney p (complete separation): 2 / C(n + m, n)."""
    return min(1.0, 2.0 / math.comb(n + m, n)) if n > 0 and m > 0 else math.nan


def adjusted_floor(floor: float, comparisons: int = 1, method: str = "none") -> float:
    """The smallest *adjusted* p an exact test can give when each of the table's comparisons is as
    extreme as it can be (every p at its floor): Holm multiplies it by the number of comparisons,
    BH leaves equal p-values as they are. A ‡ and "it can from N seeds" rest on this, not on the
    unadjusted floor (6 of 6 seeds give p = 0.03125, but Holm over 2 comparisons makes it 0.0625)."""
    if not math.isfinite(floor):
        return floor
    return float(adjust(np.full(max(1, comparisons), floor), method)[0])


def seeds_for_exact(alpha: float = ALPHA, paired: bool = True, comparisons: int = 1, method: str = "none") -> int:
    """The fewest seeds per setting at which the exact test can reach ``alpha`` at all, after the
    table's adjustment over ``comparisons``."""
    n = 1
    while adjusted_floor(sign_flip_floor(n) if paired else mann_whitney_floor(n, n), comparisons, method) >= alpha:
        n += 1
    return n


def planning_alpha(alpha: float = ALPHA, comparisons: int = 1, method: str = "none") -> float:
    """The per-comparison level the power numbers assume: α/m under an adjustment (the level of
    Holm's first step and of Bonferroni; BH's smallest p meets the same), α without one."""
    return alpha / max(1, comparisons) if ADJUST.get(method) else alpha


def clip_interval(low: float, high: float, lo: float = -math.inf, hi: float = math.inf) -> tuple[float, float, bool]:
    """An interval cut to the metric's range (an accuracy lies in [0, 1]); True when it was cut."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return low, high, False
    cut = low < lo or high > hi
    return max(low, lo), min(high, hi), cut


def tost(a, b, margin: float, paired: bool) -> float:
    """Two one-sided tests (statsmodels) that mean(a) - mean(b) lies within (-margin, +margin): the p."""
    from statsmodels.stats.weightstats import ttost_ind, ttost_paired

    if paired:
        p = _quiet(ttost_paired, np.asarray(a, float), np.asarray(b, float), -margin, margin)[0]
    else:
        p = _quiet(ttost_ind, np.asarray(a, float), np.asarray(b, float), -margin, margin, usevar="unequal")[0]
    return float(p)


def compare(a, b, paired: bool, higher_is_better: bool = True, equivalence: float | None = None,
            confidence: float = CONFIDENCE) -> Comparison:
    """A against B. ``paired``: a[i] and b[i] come from the same seed (equal lengths). Tests need
    at least 2 runs a side; with fewer, only the difference of means is given. ``confidence``: of
    the interval of Δ (an adjusted one is wider than 95 %)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if paired and len(a) != len(b):
        raise ValueError(f"paired comparison needs equal lengths, got {len(a)} and {len(b)}")
    c = Comparison(len(a), len(b), paired, float(a.mean() - b.mean()) if len(a) and len(b) else math.nan)
    if min(len(a), len(b)) < 2:
        return c
    if paired:
        c.test, c.exact_test = "paired t", "sign-flip"
        c.t, c.df, c.p, (c.ci_low, c.ci_high) = paired_t(a, b, confidence)
        c.exact_p, c.exact_all = sign_flip(a, b)
        c.exact_floor = sign_flip_floor(len(a))
        c.wins = float(np.sum(a > b) if higher_is_better else np.sum(a < b))
        d = a - b
        c.sd = float(d.std(ddof=1))
        if len(a) >= 3 and np.ptp(a) > 0 and np.ptp(b) > 0:
            c.r = float(st.pearsonr(a, b).statistic)
        if c.sd == 0:  # identical differences: scipy's t is ±inf; the interval is the difference itself
            c.ci_low = c.ci_high = c.delta
    else:
        c.test, c.exact_test = "Welch t", "Mann-Whitney"
        c.t, c.df, c.p, (c.ci_low, c.ci_high) = welch_t(a, b, confidence)
        c.exact_floor = mann_whitney_floor(len(a), len(b))
        dof = len(a) + len(b) - 2
        c.sd = float(math.sqrt(((len(a) - 1) * a.var(ddof=1) + (len(b) - 1) * b.var(ddof=1)) / dof))
    u, mw_p, mw_all = mann_whitney(a, b)
    if not paired:
        c.exact_p, c.exact_all = mw_p, mw_all
    share = u / (len(a) * len(b))  # P(A > B) + P(A = B) / 2
    c.prob_better = share if higher_is_better else 1.0 - share
    if equivalence:
        c.tost_p = tost(a, b, equivalence, paired)
    return c


# --------------------------------------------------------------------------- many comparisons
def adjust(pvalues, method: str = "holm") -> np.ndarray:
    """p-values adjusted across one table's comparisons (statsmodels multipletests): "holm", "bh"
    (Benjamini-Hochberg) or "none". NaN entries (no test) stay NaN and do not count."""
    if method not in ADJUST:
        raise ValueError(f"--adjust {method}: choose one of {', '.join(ADJUST)}")
    p = np.asarray(pvalues, dtype=float)
    out = p.copy()
    ok = np.isfinite(p)
    if ADJUST[method] and ok.any():
        from statsmodels.stats.multitest import multipletests

        out[ok] = multipletests(p[ok], method=ADJUST[method])[1]
    return out


def interval_levels(pvalues, alpha: float = ALPHA, method: str = "holm") -> np.ndarray:
    """Per comparison, the error level of a Δ interval that agrees with its adjusted verdict (the
    interval at 1 − level excludes 0 exactly when the adjusted p is below α; NaN where no test).
    none: α. Holm: the level of the comparison's own step, α/(m − j) for the j-th smallest p, and
    after the first step that fails, that step's level (so the first interval is Bonferroni's
    simultaneous one). BH: R·α/m for R rejections (α/m without any): Benjamini & Yekutieli's
    false-coverage-rate intervals."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, math.nan)
    ok = np.flatnonzero(np.isfinite(p))
    m = len(ok)
    if m == 0:
        return out
    if not ADJUST[method]:
        out[ok] = alpha
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    if method == "holm":
        failed = None
        for j, i in enumerate(order):
            level = alpha / (m - j) if failed is None else failed
            if failed is None and not p[i] < level:
                failed = level
            out[i] = level
        return out
    rejected = int(np.sum(adjust(p[ok], method) < alpha))
    out[ok] = max(rejected, 1) * alpha / m
    return out


def verdict(delta: float, p_adj: float, alpha: float = ALPHA, higher_is_better: bool = True,
            tost_p_adj: float = math.nan) -> str:
    """'better' / 'worse' (adjusted t-test p < alpha, by the sign of delta and the metric's
    direction), 'equivalent' (two one-sided tests' adjusted p < alpha), else 'inconclusive'."""
    if np.isfinite(p_adj) and p_adj < alpha and np.isfinite(delta) and delta != 0:
        return "better" if (delta > 0) == higher_is_better else "worse"
    if np.isfinite(tost_p_adj) and tost_p_adj < alpha:
        return "equivalent"
    return "inconclusive"


# -------------------------------------------------------------------------------------- power
def _finite(x) -> float:
    x = float(np.asarray(x).ravel()[0]) if np.ndim(x) else float(x)
    return x if math.isfinite(x) else math.nan


def _kw(n, paired: bool) -> dict:
    return dict(nobs=n) if paired else dict(nobs1=n, ratio=1.0)


def power_of(d: float, n: float, paired: bool, alpha: float = ALPHA) -> float:
    """Power of the two-sided t-test (statsmodels TTestPower / TTestIndPower) for effect size d =
    delta / SD at n seeds per setting. The noncentral t returns NaN far in its tail (a huge d·√n);
    there the normal approximation (statsmodels NormalIndPower), which is then ~1, stands in."""
    from statsmodels.stats.power import NormalIndPower, TTestIndPower, TTestPower

    solver = TTestPower() if paired else TTestIndPower()
    p = _finite(_quiet(solver.power, effect_size=d, alpha=alpha, alternative="two-sided", **_kw(n, paired)))
    if math.isnan(p):  # ratio=0: the one-sample normal test
        p = _finite(_quiet(NormalIndPower().power, effect_size=d, nobs1=n, alpha=alpha, ratio=0.0 if paired else 1.0,
                           alternative="two-sided"))
    return p


def _solve(paired: bool, **kw) -> float:
    from statsmodels.stats.power import TTestIndPower, TTestPower

    try:
        return _finite(_quiet((TTestPower() if paired else TTestIndPower()).solve_power, alternative="two-sided", **kw))
    except (ValueError, ArithmeticError, RuntimeError):
        return math.nan


def detectable_delta(sd: float, n: int, paired: bool, alpha: float = ALPHA, power: float = POWER) -> float:
    """Smallest |delta| a two-sided t-test detects with ``power`` at n seeds per setting, given the
    seed SD (of the differences when paired). NaN when it cannot be estimated (n < 2, no spread)."""
    if n < 2 or not (math.isfinite(sd) and sd > 0):
        return math.nan
    d = _solve(paired, effect_size=None, alpha=alpha, power=power, **_kw(n, paired))
    if math.isnan(d):  # statsmodels' root finder gave up: scipy's brentq on the same power function
        from scipy.optimize import brentq

        d = brentq(lambda e: power_of(e, n, paired, alpha) - power, 1e-6, 1e3)
    return d * sd


def seeds_needed(delta: float, sd: float, paired: bool, alpha: float = ALPHA, power: float = POWER,
                 most: int = 1_000_000) -> float:
    """Seeds per setting for a two-sided t-test to detect ``delta`` with ``power`` (an integer as a
    float; inf above ``most``; NaN when there is no spread or no difference to aim at). statsmodels'
    root finder returns NaN when the answer is at the bottom of its range (a huge effect) or the
    noncentral t fails (a tiny one): both are caught by bracketing first."""
    if not (math.isfinite(delta) and math.isfinite(sd)) or sd <= 0 or delta == 0:
        return math.nan
    d = abs(delta) / sd
    if power_of(d, 2, paired, alpha) >= power:
        return 2.0
    if not power_of(d, most, paired, alpha) >= power:
        return math.inf
    n = _solve(paired, effect_size=d, alpha=alpha, power=power, **_kw(None, paired))
    if math.isnan(n):  # the solver failed inside a bracket known to hold the answer: scipy's brentq
        from scipy.optimize import brentq

        n = brentq(lambda x: power_of(d, x, paired, alpha) - power, 2, most)
    return float(math.ceil(n - 1e-9))
