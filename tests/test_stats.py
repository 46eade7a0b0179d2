"""src.analysis.stats against published numbers: R's t.test on the ``sleep`` data, the smallest
p-values the exact tests can give, Holm and BH adjustment, t-test power tables, a t-interval by
hand. Every expected value comes from outside this code base (R, the closed forms 2/2^n and
2/C(2n, n), G*Power-style sample sizes)."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sst

from src.analysis import stats

# R: sleep$extra by group (Cushny & Peebles via Student); t.test(g1, g2, paired=TRUE) / (default Welch)
G1 = [0.7, -1.6, -0.2, -1.2, -0.1, 3.4, 3.7, 0.8, 0.0, 2.0]
G2 = [1.9, 0.8, 1.1, 0.1, -0.1, 4.4, 5.5, 1.6, 4.6, 3.4]


def test_paired_t_matches_r_on_the_sleep_data():
    t, df, p, (lo, hi) = stats.paired_t(G1, G2)
    assert t == pytest.approx(-4.0621, abs=5e-5) and df == 9
    assert p == pytest.approx(0.002833, abs=5e-7)
    assert (lo, hi) == (pytest.approx(-2.4599, abs=5e-5), pytest.approx(-0.7001, abs=5e-5))
    c = stats.compare(G1, G2, paired=True)
    assert c.test == "paired t" and c.delta == pytest.approx(-1.58) and c.p == pytest.approx(p)
    assert (c.ci_low, c.ci_high) == (pytest.approx(lo), pytest.approx(hi))
    assert c.wins == 0 and c.exact_test == "sign-flip" and c.exact_all  # 2^10 flips, all enumerated
    assert c.r == pytest.approx(np.corrcoef(G1, G2)[0, 1])


def test_welch_t_matches_r_on_the_sleep_data():
    t, df, p, (lo, hi) = stats.welch_t(G1, G2)
    assert t == pytest.approx(-1.8608, abs=5e-5) and df == pytest.approx(17.776, abs=5e-4)
    assert p == pytest.approx(0.07939, abs=5e-6)
    assert (lo, hi) == (pytest.approx(-3.3655, abs=5e-5), pytest.approx(0.2055, abs=5e-5))
    c = stats.compare(G1, G2, paired=False)
    assert c.test == "Welch t" and c.exact_test == "Mann-Whitney" and math.isnan(c.wins)
    u = sst.mannwhitneyu(G1, G2).statistic
    assert c.prob_better == pytest.approx(u / 100)  # P(A > B) = U / nm


@pytest.mark.parametrize("n, floor", [(3, 0.25), (4, 0.125), (5, 0.0625), (6, 0.03125)])
def test_sign_flip_smallest_p_is_two_over_two_to_the_n(n, floor):
    rng = np.random.default_rng(n)
    b = rng.normal(90, 1, n)
    a = b + rng.uniform(0.1, 1.0, n)  # every difference positive: the most extreme of the 2^n flips
    p, exact = stats.sign_flip(a, b)
    assert exact and p == pytest.approx(floor) and stats.sign_flip_floor(n) == pytest.approx(floor)
    c = stats.compare(a, b, paired=True)
    assert c.exact_p == pytest.approx(floor) and c.exact_floor == pytest.approx(floor) and c.wins == n


@pytest.mark.parametrize("n, floor", [(3, 0.1), (4, 0.028571), (5, 0.0079365)])
def test_mann_whitney_complete_separation(n, floor):
    a, b = np.arange(n) + 100.0, np.arange(n) * 1.0
    u, p, exact = stats.mann_whitney(a, b)
    assert exact and u == n * n and p == pytest.approx(floor, rel=1e-4)
    assert stats.mann_whitney_floor(n, n) == pytest.approx(floor, rel=1e-4)
    c = stats.compare(a, b, paired=False)
    assert c.exact_p == pytest.approx(floor, rel=1e-4) and c.prob_better == 1.0


def test_mann_whitney_with_ties_is_still_exact_for_small_samples():
    a, b = [0.91, 0.92, 0.92, 0.93], [0.90, 0.91, 0.91, 0.92]
    _, p, exact = stats.mann_whitney(a, b)
    assert exact and 0 < p <= 1
    # the same as scipy's permutation version with every split enumerated
    ref = sst.mannwhitneyu(a, b, method=sst.PermutationMethod(n_resamples=10 ** 6)).pvalue
    assert p == pytest.approx(ref)


def test_holm_and_bh_adjustment():
    assert stats.adjust([0.01, 0.04, 0.03], "holm") == pytest.approx([0.03, 0.06, 0.06])
    assert stats.adjust([0.01, 0.04, 0.03], "bh") == pytest.approx([0.03, 0.04, 0.04])
    assert stats.adjust([0.01, 0.04, 0.03], "none") == pytest.approx([0.01, 0.04, 0.03])
    out = stats.adjust([0.01, float("nan"), 0.03], "holm")  # no test: stays NaN and does not count
    assert out[0] == pytest.approx(0.02) and math.isnan(out[1]) and out[2] == pytest.approx(0.03)
    with pytest.raises(ValueError, match="--adjust bonferroni"):
        stats.adjust([0.1], "bonferroni")


@pytest.mark.parametrize("d, paired, n", [(1.0, False, 17), (0.5, False, 64), (1.0, True, 10), (0.5, True, 34)])
def test_seeds_needed_for_80_percent_power(d, paired, n):
    sd = 0.37  # any SD: the answer depends on delta / sd only
    assert stats.seeds_needed(d * sd, sd, paired) == n
    # and n seeds are enough to detect that effect, n - 1 are not
    assert stats.detectable_delta(sd, n, paired) <= d * sd < stats.detectable_delta(sd, n - 1, paired)


def test_power_never_returns_nan_where_an_answer_exists():
    for paired in (True, False):
        assert stats.seeds_needed(50.0, 1.0, paired) == 2          # statsmodels alone returns NaN here
        tiny = stats.seeds_needed(1e-4, 1.0, paired)
        assert tiny == math.inf or tiny > 10 ** 5                    # huge, never NaN
        for n in (2, 3, 5, 20):
            assert math.isfinite(stats.detectable_delta(0.2, n, paired))
    assert math.isnan(stats.seeds_needed(0.1, 0.0, True))  # no spread: nothing to plan from
    assert math.isnan(stats.detectable_delta(0.2, 1, True))


def test_t_interval_of_three_seeds_and_no_bootstrap_below_ten():
    d = stats.describe([90.1, 90.3, 90.2])
    assert (d["ci_low"], d["ci_high"]) == (pytest.approx(89.952, abs=5e-4), pytest.approx(90.448, abs=5e-4))
    assert d["interval"] == "t" and math.isnan(d["boot_low"]) and math.isnan(d["iqm"])
    assert d["std"] == pytest.approx(0.1) and d["median"] == pytest.approx(90.2)
    one = stats.describe([91.2])
    assert one["interval"] == "n = 1: no interval" and math.isnan(one["ci_low"]) and math.isnan(one["std"])


def test_ten_seeds_add_the_iqm_and_a_reproducible_bca_interval():
    x = [90.1, 90.4, 89.8, 90.0, 90.6, 90.2, 89.9, 90.3, 91.5, 90.1]
    d = stats.describe(x)
    assert d["iqm"] == pytest.approx(sst.trim_mean(x, 0.25))
    assert d["boot_low"] < np.mean(x) < d["boot_high"]
    assert (d["boot_low"], d["boot_high"]) == stats.bca_interval(x)  # fixed rng: same numbers every time
    ref = sst.bootstrap((np.array(x),), np.mean, method="BCa", n_resamples=stats.BOOTSTRAP_RESAMPLES,
                        rng=np.random.default_rng(stats.BOOTSTRAP_SEED)).confidence_interval
    assert d["boot_low"] == pytest.approx(ref.low) and d["boot_high"] == pytest.approx(ref.high)
    assert "BCa" in stats.BOOTSTRAP_LABEL


def test_verdicts_follow_the_adjusted_p_and_the_metric_direction():
    assert stats.verdict(0.5, 0.01) == "better" and stats.verdict(-0.5, 0.01) == "worse"
    assert stats.verdict(0.5, 0.01, higher_is_better=False) == "worse"  # a loss that went up
    assert stats.verdict(0.5, 0.2) == "inconclusive" and stats.verdict(0.5, float("nan")) == "inconclusive"
    assert stats.verdict(0.01, 0.6, tost_p_adj=0.01) == "equivalent"


def test_equivalence_by_two_one_sided_tests():
    rng = np.random.default_rng(1)
    b = rng.normal(98.0, 0.1, 8)
    a = b + rng.normal(0.0, 0.02, 8)
    c = stats.compare(a, b, paired=True, equivalence=0.2)
    assert c.tost_p < 0.05 and c.p > 0.05
    assert stats.compare(a, b, paired=True, equivalence=0.001).tost_p > 0.05
    from statsmodels.stats.weightstats import ttost_ind
    assert stats.compare(a, b, paired=False, equivalence=0.2).tost_p == pytest.approx(
        ttost_ind(a, b, -0.2, 0.2, usevar="unequal")[0])


def test_too_few_runs_give_no_test_and_identical_differences_no_nan_interval():
    c = stats.compare([0.9], [0.8, 0.85], paired=False)
    assert c.test == "none" and math.isnan(c.p) and c.delta == pytest.approx(0.075)
    c = stats.compare([1.0, 2.0, 3.0], [0.5, 1.5, 2.5], paired=True)  # every difference 0.5
    assert c.ci_low == c.ci_high == pytest.approx(0.5)
    assert stats.seeds_for_exact(0.05, paired=True) == 6 and stats.seeds_for_exact(0.05, paired=False) == 4
