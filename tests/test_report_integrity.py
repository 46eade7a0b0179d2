"""A table that cannot mislead (issue 22): pooled keys are named and paired on, a metric selected
on the test split gets no verdict, the exact test's floor is the adjusted one, intervals stay in
the metric's range (none at n = 2), and intervals say whether they are adjusted."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sst

from src.analysis import report, stats
from src.analysis.comparisons import POOLED_UNPAIRED, SELECTED_ON_TEST, compare, integrity_notes, notice
from src.analysis.summary import UNINFORMATIVE, summarize
from tests.test_report_stats import make_sweep

RELU = {0: 0.950, 1: 0.955, 2: 0.948, 3: 0.952, 4: 0.951}


def test_pooling_is_named_and_the_comparison_pairs_within_strata(tmp_path):
    """--by activation on an activation x depth sweep: depth varies, so it is pooled; the test
    pairs each run with the reference's run of the same depth and seed (n = 6 units, not seeds)."""
    sweep = tmp_path / "sweep"
    make_sweep(sweep, {"relu": {0: 0.97, 1: 0.96}}, extra=("model=fcn", "model.depth=2"))
    acc = {2: (0.97, 0.96), 4: (0.93, 0.92), 10: (0.80, 0.70)}
    for depth, (a, b) in acc.items():
        make_sweep(sweep, {"relu": {0: a, 1: b}, "tanh": {0: a + 0.01, 1: b + 0.012}},
                   extra=("model=fcn", f"model.depth={depth}"))
    s = compare(summarize(sweep, by=["activation"]), reference="activation=relu")
    assert list(s.pooled) == ["model.depth"] and sorted(s.pooled["model.depth"], key=int) == ["2", "4", "10"]
    row = s.table.set_index("activation").loc["tanh"]
    assert row["n"] == 6 and bool(row["paired"]) and row["pairs"] == 6
    assert row["delta"] == pytest.approx(np.mean([0.01, 0.012] * 3))
    assert any(n.startswith("Pooled over model.depth (") and "comparisons pair runs on model.depth and seed" in n
               for n in integrity_notes(s))
    # a pooled setting without a partner at each depth and seed is not tested at all
    make_sweep(sweep, {"sigmoid": {0: 0.5}}, extra=("model=fcn", "model.depth=4"))
    t = compare(summarize(sweep, by=["activation"]), reference="activation=relu").table.set_index("activation")
    assert t.loc["sigmoid", "verdict"] == POOLED_UNPAIRED and np.isnan(t.loc["sigmoid", "p"])


def test_loggers_are_no_setting_when_sweeps_are_merged(tmp_path):
    """Identical runs tracked by MLflow in one sweep and W&B in the other are one setting."""
    a = make_sweep(tmp_path / "a", {"relu": {0: 0.95, 1: 0.96}}, extra=("model=lenet5", "logger=default_mlflow"))
    b = make_sweep(tmp_path / "b", {"relu": {2: 0.95, 3: 0.96}}, extra=("model=lenet5", "logger=default_wandb"))
    s = compare(summarize([a, b]))
    assert len(s.table) == 1 and s.table["n"].iloc[0] == 4 and "logger" not in s.keys


def test_a_metric_selected_on_the_test_split_gets_no_verdict(tmp_path):
    sweep = make_sweep(tmp_path / "s", {"relu": RELU, "tanh": {k: v + 0.02 for k, v in RELU.items()}})
    for mj in sweep.rglob("metrics.json"):  # val_size=0: validation was the test split
        m = json.loads(mj.read_text())
        mj.write_text(json.dumps({**m, "val/acc_best": m["test/acc"], "val_is_test_split": True}))
    s = report.write_report(sweep, metric="val/acc_best", out_dir=tmp_path / "out", show=False, plots=False)
    row = s.table.set_index("activation").loc["tanh"]
    assert row["verdict"] == SELECTED_ON_TEST and np.isnan(row["p"])
    assert row["mean"] == pytest.approx(np.mean(list(RELU.values())) + 0.02)  # still shown
    md = (tmp_path / "out" / "summary.md").read_text()
    assert "selected on the test split" in md and "data.val_size=5000" in md and "better" not in md
    # the same numbers held out of the test split are tested as usual
    for mj in sweep.rglob("metrics.json"):
        mj.write_text(json.dumps({**json.loads(mj.read_text()), "val_is_test_split": False}))
    s = report.write_report(sweep, metric="val/acc_best", out_dir=tmp_path / "out2", show=False, plots=False)
    assert s.table.set_index("activation").loc["tanh", "verdict"] == "better"


def test_the_exact_floor_is_the_adjusted_one(tmp_path):
    """tanh wins 6 of 6 seeds: sign-flip p = 0.03125, but Holm over 2 comparisons makes its floor
    0.0625, so ‡ (cannot reach α) and 7 seeds, not 6, are what it takes."""
    relu = {s: 0.95 + 0.001 * s for s in range(6)}
    tanh = {s: v + 0.01 + 0.001 * (s % 3) for s, v in relu.items()}
    sigmoid = {s: v - 0.02 + 0.002 * (s % 2) for s, v in relu.items()}
    s = compare(summarize(make_sweep(tmp_path / "s", {"relu": relu, "tanh": tanh, "sigmoid": sigmoid})))
    row = s.table.set_index("activation").loc["tanh"]
    assert row["exact_p"] == pytest.approx(0.03125) and row["exact_floor"] == pytest.approx(0.03125)
    assert row["exact_floor_adj"] == pytest.approx(0.0625) and bool(row["exact_cannot_reach_alpha"])
    assert stats.seeds_for_exact(0.05, True, 2, "holm") == 7 and stats.seeds_for_exact(0.05, True) == 6
    text = notice(s)
    assert "can from 7 seeds" in text and "after Holm's adjustment over 2 comparisons" in text


def test_intervals_stay_in_range_and_n_2_is_called_uninformative(tmp_path):
    sweep = make_sweep(tmp_path / "s", {"wild": {0: 0.10, 1: 0.95}, "top": {0: 0.999, 1: 0.995, 2: 0.95}})
    s = report.write_report(sweep, out_dir=tmp_path / "out", show=False)
    t = s.table.set_index("activation")
    assert t.loc["wild", "interval"] == UNINFORMATIVE
    lo, hi = sst.ttest_1samp([0.999, 0.995, 0.95], 0).confidence_interval()
    assert hi > 1 and t.loc["top", "ci_high"] == 1.0 and t.loc["top", "ci_low"] == pytest.approx(lo)
    md = (tmp_path / "out" / "summary.md").read_text()
    assert "n = 2: uninformative" in md and "(clipped)" in md and "-" not in md.split("| top |")[1].split("|")[5]
    assert all(0 <= x <= 1 for x in t[["ci_low", "ci_high"]].to_numpy().ravel() if np.isfinite(x))


def test_adjusted_intervals_agree_with_the_verdicts(tmp_path):
    """Two Δs whose unadjusted 95 % CIs exclude 0 are inconclusive under Holm (p ≈ 0.03 each):
    the default table says its intervals are unadjusted; --ci adjusted widens them past 0."""
    d = np.array([0.013, 0.001, 0.010, 0.004, 0.007])
    sweep = make_sweep(tmp_path / "s", {"relu": RELU, **{act: {k: v + d[k] + eps for k, v in RELU.items()}
                                                         for act, eps in (("tanh", 0.0), ("swish", 1e-4))}})
    plain = report.write_report(sweep, out_dir=tmp_path / "a", show=False)
    for act in ("tanh", "swish"):
        r = plain.table.set_index("activation").loc[act]
        assert r["delta_ci_low"] > 0 and r["p_adj"] >= 0.05 and r["verdict"] == "inconclusive"
        assert r["delta_aci_low"] < 0 < r["delta_aci_high"]  # what the comparison figure draws
    assert "unadjusted 95 % intervals while the verdicts are adjusted" in (tmp_path / "a" / "summary.md").read_text()
    adj = report.write_report(sweep, out_dir=tmp_path / "b", show=False, ci="adjusted")
    for act in ("tanh", "swish"):
        r = adj.table.set_index("activation").loc[act]
        a, b = np.array([RELU[k] + d[k] for k in RELU]), np.array(list(RELU.values()))
        level = r["ci_level"]
        assert level == pytest.approx(0.025)  # Holm's first step failed: its level, α/2, for both
        ci = sst.ttest_rel(a + (1e-4 if act == "swish" else 0), b).confidence_interval(1 - level)
        assert (r["delta_ci_low"], r["delta_ci_high"]) == (pytest.approx(ci.low), pytest.approx(ci.high))
        assert r["delta_ci_low"] < 0
    assert "Intervals of Δ are adjusted" in (tmp_path / "b" / "summary.md").read_text()
    assert "CI of $\\Delta$ adjusted alike" in (tmp_path / "b" / "summary.tex").read_text()


def test_interval_levels_agree_with_holm_and_bh():
    p = np.array([0.001, 0.03, np.nan, 0.02, 0.2])
    for method in ("holm", "bh"):
        levels, adj = stats.interval_levels(p, 0.05, method), stats.adjust(p, method)
        ok = np.isfinite(p)
        # a t interval at 1 - level excludes 0 exactly when p < level: the same call as the verdict's
        assert ((p[ok] < levels[ok]) == (adj[ok] < 0.05)).all(), method


def test_a_grid_with_two_datasets_compares_within_each_dataset(tmp_path):
    """lenet_grid's command line gives data first: its rows were all tested against Fashion-MNIST.
    The reference is never the dataset key, and the preset names its own (activation=tanh)."""
    from tests.test_setting_rule import _compose

    sweep = tmp_path / "grid"
    accs = {("fashion_mnist", "tanh"): 0.88, ("fashion_mnist", "relu"): 0.89, ("mnist", "tanh"): 0.98,
            ("mnist", "relu"): 0.985}
    from tests.test_report_figures import fake_run, multirun_yaml

    multirun_yaml(sweep, ["data=fashion_mnist,mnist", "data.batch_size=40,400", "activation=tanh,relu", "seed=0,1"])
    for (data, act), acc in accs.items():
        for batch in (40, 400):
            for seed in (0, 1):
                fake_run(sweep, [f"data={data}", f"data.batch_size={batch}", f"activation={act}"], seed,
                         {"status": "completed", "test/acc": acc + 0.001 * seed - 0.0001 * batch / 40})
    s = compare(summarize(sweep))
    assert s.options["reference"] == "data.batch_size=40"  # the first key that is not the dataset
    for _, r in s.table.iterrows():
        assert r["reference"].startswith(f"data={r['data']},")  # MNIST against MNIST
    s = compare(summarize(sweep), reference="activation=tanh")  # the preset's own
    for _, r in s.table.iterrows():
        assert r["reference"] == f"data={r['data']},data.batch_size={r['data.batch_size']},activation=tanh"
    assert _compose(["experiment=lenet_grid"], True).hydra.callbacks.sweep.reference == "activation=tanh"
    from rich.console import Console
    import io

    from src.analysis.tables import print_table
    buf = io.StringIO()
    print_table(s, Console(file=buf, width=100), show_problems=False)
    assert "data.batch_size" in buf.getvalue() and "data.batch_s…" not in buf.getvalue()


def test_latex_says_no_test_at_n_1_uses_a_math_minus_and_names_each_rows_test(tmp_path):
    one = make_sweep(tmp_path / "one", {"relu": {0: 0.95}, "tanh": {0: 0.93}})
    report.write_report(one, out_dir=tmp_path / "o1", show=False, plots=False)
    tex = (tmp_path / "o1" / "summary.tex").read_text()
    assert "No test was run" in tex and "over 0 comparison" not in tex
    # tanh: paired (same seeds) and worse; sigmoid: other seeds, so Welch
    sweep = make_sweep(tmp_path / "mixed", {"relu": RELU, "tanh": {k: v - 0.02 for k, v in RELU.items()},
                                            "sigmoid": {k + 10: v - 0.01 for k, v in RELU.items()}})
    s = report.write_report(sweep, out_dir=tmp_path / "o2", show=False, plots=False)
    assert set(s.table["test"]) >= {"paired t", "Welch t"}
    tex = (tmp_path / "o2" / "summary.tex").read_text()
    body = tex.split(r"\midrule")[1].split(r"\bottomrule")[0]
    assert "$-$2.00" in body and " -2.00" not in body and "[-" not in body
    assert r"$^\mathrm{p}$" in body and r"$^\mathrm{w}$" in body and "paired t-test" in tex and "Welch t-test" in tex


def test_figures_say_what_their_intervals_and_validation_are(tmp_path, monkeypatch):
    """Labels read off the figures as they are saved: the held-out curve is the test split, the
    comparison's intervals are adjusted (the verdicts are), epochs count from 0 as the CSVs do."""
    from matplotlib.figure import Figure

    from tests.test_report_figures import fake_run, multirun_yaml

    labels = {}
    real = Figure.savefig

    def record(fig, path, *a, **k):
        labels[Path(path).name] = [t for ax in fig.axes for t in (ax.get_xlabel(), ax.get_ylabel(), ax.get_title())]
        return real(fig, path, *a, **k)

    monkeypatch.setattr(Figure, "savefig", record)
    sweep = tmp_path / "s"
    multirun_yaml(sweep, ["activation=relu,tanh", "seed=0,1,2"])
    for act, base in (("relu", 0.90), ("tanh", 0.95)):
        for seed in range(3):
            ep = [{"train/loss": 1.0, "train/acc": base, "val/loss": 1.1, "val/acc": base + 0.001 * seed}]
            fake_run(sweep, [f"activation={act}"], seed, {"status": "completed", "test/acc": base + 0.001 * seed},
                     epochs=ep)
    report.write_report(sweep, out_dir=tmp_path / "out", show=False, train_vs_test=True)
    assert "validation (= test split) accuracy (%)" in labels["curves.png"]
    assert "epoch (from 0, as in the CSV logs)" in labels["curves.png"] + labels["train_vs_test.png"]
    assert any("holm-adjusted CI" in t for t in labels["summary_comparison.png"])


def test_runs_that_differ_in_provenance_are_named_a_confound(tmp_path):
    """relu ran on torch 2.14.1 in one sweep, tanh on 2.11.0 in the other: a line under the table says
    so, and summary.csv carries the column."""
    a = make_sweep(tmp_path / "a", {"relu": {0: 0.95, 1: 0.96}})
    b = make_sweep(tmp_path / "b", {"tanh": {0: 0.97, 1: 0.975}})
    for sweep, version in ((a, "2.14.1"), (b, "2.11.0")):
        for mj in sweep.rglob("metrics.json"):
            m = json.loads(mj.read_text())
            mj.write_text(json.dumps({**m, "provenance": {"torch": version, "device": "cpu", "precision": "32-true",
                                                          "commit": "abc1234"}}))
    s = report.write_report([a, b], out_dir=tmp_path / "out", show=False, plots=False)
    notes = [n for n in integrity_notes(s) if n.startswith("Confound")]
    assert len(notes) == 1 and "torch version" in notes[0] and "relu: 2.14.1" in notes[0] and "tanh: 2.11.0" in notes[0]
    csv = pd.read_csv(tmp_path / "out" / "summary.csv").set_index("activation")
    assert csv.loc["relu", "torch"] == "2.14.1" and csv.loc["tanh", "device"] == "cpu"
    assert "Confound: the runs differ in torch version" in (tmp_path / "out" / "summary.md").read_text()


def test_a_mix_of_provenance_alike_in_every_setting_is_no_confound(tmp_path):
    a = make_sweep(tmp_path / "a", {"relu": {0: 0.95}, "tanh": {0: 0.97}})
    b = make_sweep(tmp_path / "b", {"relu": {1: 0.96}, "tanh": {1: 0.975}})
    for sweep, commit in ((a, "1111111aaaaaaaa"), (b, "2222222bbbbbbbb")):
        for mj in sweep.rglob("metrics.json"):
            mj.write_text(json.dumps({**json.loads(mj.read_text()), "provenance": {"commit": commit}}))
    notes = integrity_notes(compare(summarize([a, b])))
    assert not any(n.startswith("Confound") for n in notes)
    assert "The runs span several git commits (1111111aaa, 2222222bbb), alike in every setting." in notes


def test_a_presets_reference_that_the_sweep_does_not_vary_falls_back_to_the_first_setting(tmp_path):
    sweep = make_sweep(tmp_path / "s", {"2": {0: 0.9, 1: 0.91}, "4": {0: 0.92, 1: 0.93}}, key="model.depth")
    s = report.write_report(sweep, out_dir=tmp_path / "out", show=False, plots=False,
                            reference="activation=relu", reference_is_default=True)
    assert s.options["reference"] == "model.depth=2"
    assert any("--reference activation=relu" in w and "first setting instead" in w for w in s.warnings)
    with pytest.raises(KeyError, match="--reference activation=relu"):  # asked for on the command line: refused
        report.write_report(sweep, out_dir=tmp_path / "out2", show=False, plots=False, reference="activation=relu")
