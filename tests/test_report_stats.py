"""The report's comparisons on hand-made sweeps in the real layout: every number in summary.csv is
recomputed here with scipy / statsmodels from the runs' metrics.json files, and the tables must
show those numbers (Δ [CI] in percentage points, adjusted p to 3 significant digits, the verdict,
the exact-test marks, the notice under the printed table)."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from rich.console import Console
from scipy import stats as sst
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestPower
from statsmodels.stats.weightstats import ttost_paired

from src.analysis import report
from tests.test_report_figures import fake_run, multirun_yaml, one_line_error


def make_sweep(root: Path, accs: dict, key: str = "activation", extra: tuple = ("model=lenet5",)) -> Path:
    """accs: value -> {seed: test/acc or None (diverged)}; one run folder each, as train.py leaves it."""
    seeds = sorted({s for per in accs.values() for s in per})
    multirun_yaml(root, [f"{key}={','.join(accs)}", f"seed={','.join(map(str, seeds))}", *extra])
    for value, per in accs.items():
        for seed, acc in per.items():
            m = {"status": "diverged", "error": "loss is nan"} if acc is None else \
                {"status": "completed", "test/acc": acc, "test/loss": 1 - acc, "epoch_time_mean_s": 1.0}
            fake_run(root, [f"{key}={value}", *extra], seed, m)
    return root


def values(sweep: Path, setting: str) -> dict[int, float]:
    """seed -> test/acc of the completed runs of one setting, read back from metrics.json."""
    out = {}
    for mj in sweep.rglob("metrics.json"):
        d = json.loads(mj.read_text())
        if setting in d["overrides"] and d["status"] == "completed":
            out[d["seed"]] = d["test/acc"]
    return dict(sorted(out.items()))


def printed(s) -> str:
    from src.analysis.tables import print_table

    buf = io.StringIO()
    print_table(s, Console(file=buf, width=250), show_problems=False)
    return buf.getvalue()


@pytest.fixture(scope="module")
def paired_sweep(tmp_path_factory) -> Path:
    rng = np.random.default_rng(7)
    relu = 0.97 + rng.normal(0, 0.002, 5)
    accs = {"relu": dict(enumerate(relu)), "tanh": dict(enumerate(relu + 0.004 + rng.normal(0, 0.0008, 5))),
            "sigmoid": dict(enumerate(relu + rng.normal(0, 0.002, 5)))}
    return make_sweep(tmp_path_factory.mktemp("paired") / "sweep", accs)


def test_paired_comparisons_are_scipys_numbers_and_the_tables_show_them(paired_sweep, tmp_path):
    s = report.write_report(paired_sweep, out_dir=tmp_path, show=False, plots=False)
    csv = pd.read_csv(tmp_path / "summary.csv").set_index("activation")
    md = (tmp_path / "summary.md").read_text()
    ref = values(paired_sweep, "activation=relu")
    raw_p = {}
    for act in ("tanh", "sigmoid"):
        mine = values(paired_sweep, f"activation={act}")
        assert mine.keys() == ref.keys()  # same seeds: paired
        a, b = np.array(list(mine.values())), np.array(list(ref.values()))
        t = sst.ttest_rel(a, b)
        ci = t.confidence_interval()
        row = csv.loc[act]
        assert row["test"] == "paired t" and row["paired"] and row["reference"] == "activation=relu"
        assert row["delta"] == pytest.approx(a.mean() - b.mean())
        assert (row["delta_ci_low"], row["delta_ci_high"]) == (pytest.approx(ci.low), pytest.approx(ci.high))
        assert row["p"] == pytest.approx(t.pvalue) and row["df"] == 4
        assert row["wins"] == (a > b).sum() and row["pairs"] == 5
        assert row["prob_better"] == pytest.approx(sst.mannwhitneyu(a, b).statistic / 25)
        assert row["r"] == pytest.approx(sst.pearsonr(a, b).statistic)
        assert row["exact_test"] == "sign-flip" and row["exact_floor"] == pytest.approx(2 / 2 ** 5)
        raw_p[act] = t.pvalue
        shown = f"{(a.mean() - b.mean()) * 100:+.2f} [{ci.low * 100:+.2f}, {ci.high * 100:+.2f}]"
        assert shown in md, shown
    holm = multipletests([raw_p["tanh"], raw_p["sigmoid"]], method="holm")[1]
    assert csv.loc["tanh", "p_adj"] == pytest.approx(holm[0]) and csv.loc["sigmoid", "p_adj"] == pytest.approx(holm[1])
    for act, p_adj in zip(("tanh", "sigmoid"), holm):
        verdict = "better" if p_adj < 0.05 else "inconclusive"
        assert csv.loc[act, "verdict"] == verdict
        assert f" | {p_adj:.3g} | {verdict} | " in md
    assert csv.loc["relu", "verdict"] == "reference" and np.isnan(csv.loc["relu", "p"])
    assert "Holm-adjusted over the table's 2 comparison(s)" in md
    out = printed(s)
    assert "verdict" in out and f"{holm[0]:.3g}" in out and "Note:" in out


@pytest.mark.parametrize("n", [3, 4, 5, 6])
def test_the_table_marks_an_exact_test_that_cannot_reach_alpha(n, tmp_path):
    rng = np.random.default_rng(n)
    relu = 0.95 + rng.normal(0, 0.003, n)
    sweep = make_sweep(tmp_path / "s", {"relu": dict(enumerate(relu)),
                                        "tanh": dict(enumerate(relu + 0.01 + rng.normal(0, 0.0005, n)))})
    s = report.write_report(sweep, out_dir=tmp_path, show=False, plots=False)
    row = pd.read_csv(tmp_path / "summary.csv").set_index("activation").loc["tanh"]
    md = (tmp_path / "summary.md").read_text()
    tanh_line = next(line for line in md.splitlines() if line.startswith("| tanh |"))
    assert row["verdict"] == "better" and row["p_adj"] < 0.05  # the t-test sees it at every n
    assert row["exact_p"] == pytest.approx(2 / 2 ** n)      # the exact test's best possible p
    cannot = n <= 5
    assert bool(row["exact_cannot_reach_alpha"]) is cannot and ("‡" in tanh_line) is cannot
    assert bool(row["normal_only"]) is cannot
    assert "cannot reach α at this n" in md
    out = printed(s)
    assert ("on the t-test alone" in out) is cannot
    if cannot:
        assert "it can from 6 seeds" in out


def test_unequal_seeds_are_compared_unpaired_with_welch_and_mann_whitney(tmp_path):
    accs = {"relu": {0: 0.951, 1: 0.948, 2: 0.955, 3: 0.950}, "tanh": {0: 0.958, 1: 0.960, 2: 0.957, 3: None}}
    sweep = make_sweep(tmp_path / "s", accs)
    report.write_report(sweep, out_dir=tmp_path, show=False, plots=False)
    row = pd.read_csv(tmp_path / "summary.csv").set_index("activation").loc["tanh"]
    a, b = list(values(sweep, "activation=tanh").values()), list(values(sweep, "activation=relu").values())
    w = sst.ttest_ind(a, b, equal_var=False)
    assert row["test"] == "Welch t" and not row["paired"] and row["df"] == pytest.approx(w.df)
    assert row["p"] == pytest.approx(w.pvalue) and row["diverged"] == 1 and row["n"] == 3
    mw = sst.mannwhitneyu(a, b, method="exact")
    assert row["exact_test"] == "Mann-Whitney" and row["exact_p"] == pytest.approx(mw.pvalue)
    assert row["prob_better"] == pytest.approx(mw.statistic / 12) and np.isnan(row["wins"])


def test_reference_pairs_the_other_keys_and_bad_references_are_one_line_errors(tmp_path, capsys):
    sd = tmp_path / "grid"
    multirun_yaml(sd, ["activation=relu,swish", "model.depth=2,4", "seed=0,1,2"])
    rng = np.random.default_rng(3)
    for act in ("relu", "swish"):
        for depth in (2, 4):
            for seed in range(3):
                acc = 0.9 + 0.01 * depth + (0.01 if act == "swish" else 0) + rng.normal(0, 0.001)
                fake_run(sd, [f"activation={act}", f"model.depth={depth}"], seed,
                         {"status": "completed", "test/acc": acc, "epoch_time_mean_s": 1.0})
    out = tmp_path / "out"
    assert report.main([str(sd), "--reference", "activation=swish", "--no-plots", "--out", str(out)]) == 0
    t = pd.read_csv(out / "summary.csv").set_index("setting")
    assert t.loc["activation=relu,model.depth=4", "reference"] == "activation=swish,model.depth=4"
    assert t.loc["activation=swish,model.depth=2", "verdict"] == "reference"
    got = t.loc["activation=relu,model.depth=2", "delta"]
    relu2 = [json.loads(m.read_text())["test/acc"] for m in (sd / "activation=relu,model.depth=2").rglob("metrics.json")]
    swish2 = [json.loads(m.read_text())["test/acc"] for m in (sd / "activation=swish,model.depth=2").rglob("metrics.json")]
    assert got == pytest.approx(np.mean(relu2) - np.mean(swish2))
    # by default the first value of the first key, matched on the other keys
    default = report.write_report(sd, out_dir=out, show=False, plots=False).table.set_index("setting")
    assert default.loc["activation=swish,model.depth=4", "reference"] == "activation=relu,model.depth=4"
    assert default.loc["activation=relu,model.depth=4", "verdict"] == "reference"
    assert "Δ vs activation=relu (pp) [95% CI]" in (out / "summary.md").read_text()
    capsys.readouterr()
    bad = tmp_path / "bad"
    for args, fragments in ((["--reference", "activation=gelu"], ("no setting has activation=gelu", "relu, swish")),
                            (["--reference", "optimizer=adam"], ("--reference optimizer=adam", "activation")),
                            (["--reference", "activation"], ("--reference activation", "key=value")),
                            (["--adjust", "bonferroni"], ("--adjust bonferroni", "holm")),
                            (["--equivalence", "-1"], ("--equivalence -1",)),
                            (["--alpha", "5"], ("--alpha 5",))):
        assert report.main([str(sd), *args, "--out", str(bad)]) == 2, args
        one_line_error(capsys, *fragments)
    assert not bad.exists()  # refused before anything is written


def test_equivalence_and_target_delta_are_in_percentage_points(tmp_path):
    rng = np.random.default_rng(11)
    relu = 0.98 + rng.normal(0, 0.002, 8)
    sweep = make_sweep(tmp_path / "s", {"relu": dict(enumerate(relu)),
                                        "tanh": dict(enumerate(relu + rng.normal(0, 0.0003, 8)))})
    s = report.write_report(sweep, out_dir=tmp_path, show=False, plots=False, equivalence=0.2, target_delta=0.1)
    row = pd.read_csv(tmp_path / "summary.csv").set_index("activation").loc["tanh"]
    a, b = np.array(list(values(sweep, "activation=tanh").values())), np.array(list(values(sweep, "activation=relu").values()))
    assert row["tost_p"] == pytest.approx(ttost_paired(a, b, -0.002, 0.002)[0])  # 0.2 pp = 0.002 as a fraction
    assert row["verdict"] == "equivalent" and "equivalent within ±0.2 pp" in (tmp_path / "summary.md").read_text()
    sd_diff = np.std(a - b, ddof=1)
    want = np.ceil(TTestPower().solve_power(effect_size=0.001 / sd_diff, alpha=0.05, power=0.8))
    assert row["power_delta"] == pytest.approx(0.001) and row["seeds_needed"] == want
    assert row["power_sd"] == pytest.approx(sd_diff)
    assert row["detectable_delta"] == pytest.approx(
        TTestPower().solve_power(nobs=8, alpha=0.05, power=0.8) * sd_diff, rel=1e-4)
    narrow = report.write_report(sweep, out_dir=tmp_path, show=False, plots=False, equivalence=0.001)
    assert narrow.table.set_index("activation").loc["tanh", "verdict"] == "inconclusive"
    assert s.options["equivalence"] == 0.2


def test_bh_and_no_adjustment(paired_sweep, tmp_path):
    raw = report.write_report(paired_sweep, out_dir=tmp_path, show=False, plots=False, adjust="none").table
    bh = report.write_report(paired_sweep, out_dir=tmp_path, show=False, plots=False, adjust="bh").table
    p = raw["p"].dropna().to_numpy()
    assert raw["p_adj"].dropna().to_numpy() == pytest.approx(p)
    assert bh["p_adj"].dropna().to_numpy() == pytest.approx(multipletests(p, method="fdr_bh")[1])
    assert "p (bh)" in (tmp_path / "summary.md").read_text()


def test_the_end_of_sweep_call_prints_the_verdicts(paired_sweep, tmp_path):
    """src/sweeps/callback.py calls write_report(sweep_dir, metric, by, train_vs_test=..., console=...,
    show_problems=False, plot_vs=...) and lists ``.files``."""
    import shutil

    sd = tmp_path / "sweep"
    shutil.copytree(paired_sweep, sd)
    buf = io.StringIO()
    s = report.write_report(sd, "test/acc", None, train_vs_test=False, console=Console(file=buf, width=120),
                            show_problems=False, plot_vs=None)
    out = buf.getvalue()
    assert "verdict" in out and "reference" in out and "Note:" in out
    for name in ("summary.md", "summary.csv", "summary.tex", "summary_strip.png", "summary_comparison.png", "curves.png"):
        assert name in s.files and (sd / name).stat().st_size > 0, name
