"""What the report exports besides the comparisons: summary.tex (booktabs, bold best mean, daggers
and their footnote), merged sweeps (a run of the same setting and seed counted once, with a
warning), a single run's row (no interval, said plainly), the IQM and BCa interval from 10 seeds,
and the two summary figures."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sst

from src.analysis import report
from tests.test_report_figures import one_line_error
from tests.test_report_stats import make_sweep, values


@pytest.fixture(scope="module")
def clear_sweep(tmp_path_factory):
    """tanh clearly above relu on every one of 6 seeds, sigmoid clearly below: both significant."""
    rng = np.random.default_rng(5)
    relu = 0.96 + rng.normal(0, 0.002, 6)
    accs = {"relu": dict(enumerate(relu)), "tanh": dict(enumerate(relu + 0.006 + rng.normal(0, 0.0005, 6))),
            "sigmoid": dict(enumerate(relu - 0.02 + rng.normal(0, 0.0005, 6)))}
    sd = make_sweep(tmp_path_factory.mktemp("clear") / "sweep", accs, extra=("model=lenet5", "data.name=mnist_1"))
    out = tmp_path_factory.mktemp("clear_out")
    return sd, out, report.write_report(sd, out_dir=out, show=False)


def test_summary_tex_is_a_booktabs_table_with_bold_best_and_daggers(clear_sweep):
    sd, out, s = clear_sweep
    tex = (out / "summary.tex").read_text()
    for cmd in (r"\begin{tabular}", r"\toprule", r"\midrule", r"\bottomrule", r"\end{table}"):
        assert tex.count(cmd) == 1, cmd
    rows = {line.split(" & ")[0]: line for line in tex.splitlines() if " & " in line and line.endswith(r"\\")}
    tanh = np.array(list(values(sd, "activation=tanh").values())) * 100
    assert rf"\textbf{{{tanh.mean():.2f} $\pm$ {tanh.std(ddof=1):.2f}}}$^\dagger$" in rows["tanh"]
    assert r"$^\dagger$" in rows["sigmoid"] and r"\dagger" not in rows["relu"] and "reference" in rows["relu"]
    t = s.table.set_index("activation")
    assert f"{t.loc['sigmoid', 'p_adj']:.3g}" in rows["sigmoid"]
    foot = tex[tex.index(r"\footnotesize"):]
    assert r"$^\dagger$ Different from relu" in foot and "paired t-test" in foot and "Holm-adjusted over 2" in foot
    assert r"data.name=mnist\_1" in foot  # LaTeX specials escaped
    # the header row names the unit of Δ
    assert r"$\Delta$ vs relu (pp) [95\% CI]" in tex


def test_both_summary_figures_are_written(clear_sweep):
    _, out, s = clear_sweep
    for name in ("summary_strip.png", "summary_comparison.png"):
        assert name in s.files and (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_no_comparison_figure_for_a_single_setting(tmp_path):
    sd = make_sweep(tmp_path / "s", {"relu": {0: 0.95, 1: 0.96}})
    s = report.write_report(sd, out_dir=tmp_path, show=False)
    assert "summary_comparison.png" not in s.files and "summary_strip.png" in s.files
    assert "Δ vs" not in (tmp_path / "summary.md").read_text()


def test_a_single_run_gets_no_interval_and_ten_seeds_get_the_bootstrap(tmp_path):
    ten = [0.951, 0.955, 0.949, 0.953, 0.957, 0.950, 0.952, 0.960, 0.948, 0.954]
    sd = make_sweep(tmp_path / "s", {"relu": dict(enumerate(ten)), "tanh": {0: 0.962}})
    report.write_report(sd, out_dir=tmp_path, show=False, plots=False)
    md = (tmp_path / "summary.md").read_text()
    tanh = next(line for line in md.splitlines() if line.startswith("| tanh |"))
    assert "| **96.20** | 1 |" in tanh and "n = 1: no interval" in tanh and "±" not in tanh  # best, bold
    assert "| IQM | BCa 95% CI |" in md and "BCa bootstrap, 9999 resamples, rng seed 0" in md
    row = pd.read_csv(tmp_path / "summary.csv").set_index("activation").loc["relu"]
    assert row["iqm"] == pytest.approx(sst.trim_mean(ten, 0.25))
    boot = sst.bootstrap((np.array(ten),), np.mean, method="BCa", n_resamples=9999,
                         rng=np.random.default_rng(0)).confidence_interval
    assert (row["boot_low"], row["boot_high"]) == (pytest.approx(boot.low), pytest.approx(boot.high))
    ci = sst.ttest_1samp(ten, 0).confidence_interval()
    assert (row["ci_low"], row["ci_high"]) == (pytest.approx(ci.low), pytest.approx(ci.high))
    assert f"[{ci.low * 100:.2f}, {ci.high * 100:.2f}]" in md
    t = pd.read_csv(tmp_path / "summary.csv").set_index("activation").loc["tanh"]
    assert t["interval"] == "n = 1: no interval" and t["test"] == "none" and t["verdict"] == "inconclusive"
    assert t["delta"] == pytest.approx(0.962 - np.mean(ten)) and np.isnan(t["p"])


def test_merged_sweeps_count_a_repeated_seed_once_and_say_so(tmp_path, capsys):
    first = make_sweep(tmp_path / "first", {"relu": {0: 0.95, 1: 0.96, 2: 0.94}, "tanh": {0: 0.97, 1: 0.975, 2: 0.97}})
    # a later sweep that added seeds 3 and 4 and ran seed 2 again (with another result)
    later = make_sweep(tmp_path / "later", {"relu": {2: 0.90, 3: 0.955, 4: 0.945}, "tanh": {2: 0.99, 3: 0.965, 4: 0.972}})
    out = tmp_path / "merged"
    assert report.main([str(first), str(later), "--out", str(out), "--no-plots"]) == 0
    captured = capsys.readouterr()
    assert "2 run(s) appear in more than one sweep" in captured.out + captured.err
    t = pd.read_csv(out / "summary.csv").set_index("activation")
    for act in ("relu", "tanh"):
        kept = {**values(later, f"activation={act}"), **values(first, f"activation={act}")}  # the first given wins
        assert t.loc[act, "n"] == 5 == len(kept)
        assert t.loc[act, "mean"] == pytest.approx(np.mean(list(kept.values())))
    assert bool(t.loc["tanh", "paired"]) and t.loc["tanh", "pairs"] == 5
    md = (out / "summary.md").read_text()
    assert "Merged sweeps:" in md and "counted once" in md
    assert report.main([str(first), str(later)]) == 2  # where would a merged report go?
    one_line_error(capsys, "--out DIR")


def test_a_completed_duplicate_wins_over_a_failed_one(tmp_path):
    first = make_sweep(tmp_path / "first", {"relu": {0: 0.95, 1: None}, "tanh": {0: 0.96, 1: 0.97}})
    later = make_sweep(tmp_path / "later", {"relu": {1: 0.955}})
    s = report.write_report([first, later], out_dir=tmp_path / "out", show=False, plots=False)
    relu = s.table.set_index("activation").loc["relu"]
    assert relu["n"] == 2 and relu["diverged"] == 0 and relu["mean"] == pytest.approx((0.95 + 0.955) / 2)
    assert any("counted once" in w for w in s.warnings)
    kept = s.runs[s.runs["setting"] == "activation=relu"]
    assert sorted(json.loads((Path(r) / "metrics.json").read_text())["status"] for r in kept["path"]) == \
        ["completed", "completed"]


def test_merging_sweeps_whose_override_keys_differ(tmp_path, capsys):
    """One sweep set trainer.max_epochs=2, the other did not: the unset key is a value of its own
    ("not set"), never NaN (pandas 3 kept it as NA and the merge crashed joining the keys)."""
    from src.analysis.runs import NOT_SET, load_sweeps

    short = make_sweep(tmp_path / "short", {"relu": {0: 0.95, 1: 0.96}, "tanh": {0: 0.97, 1: 0.975}},
                       extra=("model=lenet5", "trainer.max_epochs=2"))
    full = make_sweep(tmp_path / "full", {"relu": {0: 0.98, 1: 0.985}, "tanh": {0: 0.982, 1: 0.99}})
    runs, warnings = load_sweeps([short, full])
    assert len(runs) == 8 and warnings == []  # same activation and seed, another max_epochs: no duplicate
    assert runs["cfg:trainer.max_epochs"].isna().sum() == 4  # the full sweep's runs did not set it
    out = tmp_path / "merged"
    assert report.main([str(short), str(full), "--out", str(out), "--no-plots"]) == 0
    t = pd.read_csv(out / "summary.csv")
    assert len(t) == 4 and set(t["n"]) == {2}
    row = t[(t["activation"] == "relu") & (t["trainer.max_epochs"].astype(str) == "2")]
    assert row["mean"].item() == pytest.approx((0.95 + 0.96) / 2)
    # a missing key as its own value, also when the same seed ran in both sweeps without it
    again = make_sweep(tmp_path / "again", {"relu": {0: 0.5}})
    runs, warnings = load_sweeps([full, again])
    assert len(runs) == 4 and "counted once" in warnings[0] and NOT_SET not in runs["cfg:activation"].tolist()


def test_analysis_imports_go_one_way():
    """stats knows nothing of sweeps, tables or figures, and no module of src/analysis imports
    another that (directly or not) imports it back."""
    import ast

    pkg = Path(__file__).resolve().parent.parent / "src" / "analysis"
    graph = {}
    for f in pkg.glob("*.py"):
        names = set()
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names |= {f"{node.module}.{a.name}" for a in node.names} | {node.module}
            elif isinstance(node, ast.Import):
                names |= {a.name for a in node.names}
        graph[f.stem] = {n.split(".")[2] for n in names if n.startswith("src.analysis.")} - {f.stem}
        if f.stem == "stats":
            assert not {n for n in names if n.startswith("src")}, names
            assert {n.split(".")[0] for n in names} <= {"__future__", "math", "warnings", "dataclasses", "numpy",
                                                       "scipy", "statsmodels"}, names

    def reaches(a: str, b: str, seen=()) -> bool:
        return any(n == b or (n not in seen and reaches(n, b, (*seen, n))) for n in graph.get(a, ()))

    assert graph["stats"] == set() and "stats" in graph["comparisons"]
    for mod in graph:
        assert not reaches(mod, mod), f"import cycle through src.analysis.{mod}"
    assert max(len(f.read_text().splitlines()) for f in pkg.glob("*.py")) < 400
