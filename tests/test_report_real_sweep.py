"""A real study end to end: LeNet-5 on a stratified 10 % of the real MNIST's training split (tested
on a stratified 20 % of its test split: evaluated twice per job, the full 10,000 cost more than the
training), relu vs tanh vs sigmoid, 3 seeds, 1 epoch, run as a user runs it (``python train.py -m
...``). The sweep must write summary.md/.csv/.tex and both summary figures, and the p-values in
summary.csv must be what scipy computes from the runs' own metrics.json files."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sst
from statsmodels.stats.multitest import multipletests

from tests.conftest import ROOT
from tests.test_real_mnist import real_data_dir

ACTIVATIONS = ("relu", "tanh", "sigmoid")


@pytest.fixture(scope="module")
def real_sweep(tmp_path_factory):
    data = real_data_dir()
    if data is None:
        pytest.skip("real MNIST not found (set DATA_DIR)")
    out = tmp_path_factory.mktemp("real_sweep") / "act"
    env = {**os.environ, "DATA_DIR": str(data), "HYDRA_FULL_ERROR": "0", "MPLBACKEND": "Agg"}
    cmd = [sys.executable, "train.py", "-m", "experiment=mnist_lenet5", f"activation={','.join(ACTIVATIONS)}",
           "seed=0,1,2", "data.train_fraction=0.1", "data.test_fraction=0.2", "~callbacks.progress_bar",
           "hydra.job_logging.root.level=WARNING",
           f"hydra.sweep.dir={out}"]
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    return out, p


def _accs(out, act: str) -> dict:
    runs = {}
    for mj in out.rglob("metrics.json"):
        d = json.loads(mj.read_text())
        if f"activation={act}" in d["overrides"] and d["status"] == "completed":
            runs[d["seed"]] = d["test/acc"]
    return dict(sorted(runs.items()))


@pytest.mark.slow
@pytest.mark.real_data
def test_real_mnist_sweep_report_with_verdicts(real_sweep):
    out, p = real_sweep
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    for name in ("summary.md", "summary.csv", "summary.tex", "summary_strip.png", "summary_comparison.png"):
        assert (out / name).stat().st_size > 0, name
    t = pd.read_csv(out / "summary.csv").set_index("activation")
    assert list(t.index) == list(ACTIVATIONS) and t["n"].eq(3).all()
    relu = _accs(out, "relu")
    raw = []
    for act in ("tanh", "sigmoid"):
        mine = _accs(out, act)
        assert mine.keys() == relu.keys() == {0, 1, 2}
        res = sst.ttest_rel(list(mine.values()), list(relu.values()))  # same seeds: paired by seed
        row = t.loc[act]
        assert row["test"] == "paired t" and row["p"] == pytest.approx(res.pvalue)
        assert row["delta"] == pytest.approx(np.mean(list(mine.values())) - np.mean(list(relu.values())))
        assert row["exact_cannot_reach_alpha"]  # 3 seeds: the sign flip's best p is 0.25
        raw.append(res.pvalue)
    adjusted = multipletests(raw, method="holm")[1]
    assert list(t.loc[["tanh", "sigmoid"], "p_adj"]) == pytest.approx(list(adjusted))
    md, tex = (out / "summary.md").read_text(), (out / "summary.tex").read_text()
    printed = p.stdout + p.stderr
    for act in ("tanh", "sigmoid"):
        verdict = t.loc[act, "verdict"]
        assert verdict in ("better", "worse", "inconclusive")
        assert verdict == ("inconclusive" if t.loc[act, "p_adj"] >= 0.05 else
                           "better" if t.loc[act, "delta"] > 0 else "worse")
        line = next(x for x in md.splitlines() if x.startswith(f"| {act} |"))
        assert f"| {t.loc[act, 'p_adj']:.3g} | {verdict} |" in line
    assert "verdict" in printed and "Holm" in tex and r"\toprule" in tex
    print(md)
