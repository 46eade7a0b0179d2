"""k-fold cross-validation: stratified, seeded folds of the training split that partition it
exactly and come out the same on every machine; fold k validates and the rest trains, the test
split stays apart; the report groups folds as it groups seeds, and a real -m sweep of seeds x folds
lays its runs out as <setting>/seed=<n>/fold=<k>/."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from src.analysis import report
from src.analysis.summary import summarize
from src.datamodules import ImageClassificationDataModule
from src.datamodules.sources import MNIST
from src.datamodules.splits import fold_of_each, portable_permutation, stratified_kfold
from src.errors import ConfigError

LABELS = torch.arange(103) % 4 + (torch.arange(103) > 90).long()  # 4 classes + a skew: 26, 26+12, ...


def test_folds_partition_the_training_set_exactly_and_stay_stratified():
    counts = torch.bincount(LABELS)
    seen = []
    for k in range(5):
        train, val = stratified_kfold(LABELS, 5, k, seed=3)
        assert set(train.tolist()).isdisjoint(val.tolist()) and len(train) + len(val) == len(LABELS)
        seen += val.tolist()
        per_class = torch.bincount(LABELS[val], minlength=len(counts))
        assert ((per_class - counts / 5).abs() <= 1).all(), per_class  # every class within one of its share
        assert abs(len(val) - len(LABELS) / 5) <= 1
    assert sorted(seen) == list(range(len(LABELS)))  # each index validated exactly once


def test_folds_are_identical_across_runs_and_machines_for_a_seed():
    a = [stratified_kfold(LABELS, 5, k, seed=0)[1] for k in range(5)]
    b = [stratified_kfold(LABELS, 5, k, seed=0)[1] for k in range(5)]
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    other = [stratified_kfold(LABELS, 5, k, seed=1)[1] for k in range(5)]
    assert not all(torch.equal(x, y) for x, y in zip(a, other))  # repeated k-fold: a new partition per seed
    # pinned values: the permutation is integer arithmetic on (seed, index), no library RNG stream,
    # so these hold on any machine and any torch/numpy version
    assert portable_permutation(10, 0).tolist() == [0, 7, 3, 1, 9, 5, 4, 6, 8, 2]
    assert portable_permutation(10, 1).tolist() == [3, 5, 7, 4, 1, 2, 8, 9, 6, 0]
    assert fold_of_each(torch.arange(12) % 3, 3, 0).tolist() == [0, 0, 2, 1, 1, 0, 0, 2, 1, 2, 1, 2]


def test_datamodule_validates_on_fold_k_and_keeps_the_test_split(fake_data, tmp_path):
    def dm(fold, **kw):
        d = ImageClassificationDataModule(MNIST(), data_dir=str(fake_data), cache_dir=str(tmp_path), channels=1,
                                          image_size=28, verify_counts=False, folds=4, fold=fold, seed=5, **kw)
        d.setup()
        return d

    full = ImageClassificationDataModule(MNIST(), data_dir=str(fake_data), channels=1, image_size=28,
                                         verify_counts=False)
    full.setup()
    fx, _ = full.split("train")
    key = {bytes(img.numpy().tobytes()): i for i, img in enumerate(fx)}
    val_rows = []
    for k in range(4):
        d = dm(k)
        (tx, ty), (vx, vy), (sx, sy) = d.split("train"), d.split("val"), d.split("test")
        assert len(tx) + len(vx) == len(fx) == 120 and torch.bincount(vy).tolist() == [3] * 10
        rows = [key[bytes(img.numpy().tobytes())] for img in vx]
        assert not set(rows) & {key[bytes(img.numpy().tobytes())] for img in tx}
        val_rows += rows
        assert torch.equal(sx, full.split("test")[0]) and torch.equal(sy, full.split("test")[1])
    assert sorted(val_rows) == list(range(120))
    assert torch.equal(dm(2).split("val")[0], dm(2).split("val")[0])
    half = dm(0, train_fraction=0.5)  # folds are cut from the (stratified) training subset
    assert len(half.split("train")[1]) + len(half.split("val")[1]) == 60


@pytest.mark.parametrize("kw, match", [
    (dict(folds=5, fold=5), "0 <= fold < folds"),
    (dict(folds=1, fold=0), "folds >= 2"),
    (dict(folds=5, fold=0, val_size=0.1), "set data.val_size=0"),
    (dict(folds=0, fold=2), "use folds >= 2"),
])
def test_bad_fold_options_are_refused_before_loading(kw, match, tmp_path):
    with pytest.raises(ConfigError, match=match):
        ImageClassificationDataModule(MNIST(), data_dir=str(tmp_path / "nowhere"), **kw)


# ---------------------------------------------------------------------------------- the report
def fake_fold_run(sweep: Path, setting: list[str], seed: int, fold: int, acc: float) -> None:
    run = sweep / ",".join(setting) / f"seed={seed}" / f"fold={fold}"
    (run / ".hydra").mkdir(parents=True)
    ovs = [*setting, f"data.fold={fold}", f"seed={seed}"]
    (run / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in ovs))
    (run / "metrics.json").write_text(json.dumps({"status": "completed", "test/acc": acc, "test/loss": 1 - acc,
                                                  "epoch_time_mean_s": 1.0, "overrides": ovs, "seed": seed}))


def fold_sweep(root: Path, accs: dict, seeds=(0, 1), folds=3) -> Path:
    root.mkdir(parents=True)
    task = ["activation=" + ",".join(accs), f"data.folds={folds}",
            "data.fold=" + ",".join(map(str, range(folds))), "seed=" + ",".join(map(str, seeds))]
    (root / "multirun.yaml").write_text("hydra:\n  overrides:\n    task:\n" + "".join(f"    - {t}\n" for t in task))
    for act, per in accs.items():
        for (seed, fold), acc in per.items():
            fake_fold_run(root, [f"activation={act}", f"data.folds={folds}"], seed, fold, acc)
    return root


def test_report_averages_the_folds_of_a_seed_and_pairs_on_the_seed(tmp_path):
    """The folds of one seed share their training data: the seed is the unit of replication."""
    relu = {(s, k): 0.90 + 0.01 * k + 0.002 * s for s in (0, 1) for k in range(3)}
    tanh = {sk: v + 0.01 for sk, v in relu.items()}
    sweep = fold_sweep(tmp_path / "sweep", {"relu": relu, "tanh": tanh})
    s = summarize(sweep)
    assert s.keys == ["activation"] and s.common == {"data.folds": "3"}  # the fold never defines a setting
    t = s.table.set_index("activation")
    assert t.loc["relu", "n"] == 2 and t.loc["relu", "runs"] == 6  # 2 seeds, 6 runs
    assert t.loc["relu", "mean"] == pytest.approx(sum(relu.values()) / 6)
    assert sorted(s.runs["fold"]) == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]
    report.write_report(sweep, out_dir=tmp_path / "out", show=False, plots=False)
    csv = pd.read_csv(tmp_path / "out" / "summary.csv").set_index("activation")
    assert bool(csv.loc["tanh", "paired"]) and csv.loc["tanh", "pairs"] == 2  # paired on the seed
    assert csv.loc["tanh", "delta"] == pytest.approx(0.01)
    assert "the 3 folds of each seed are averaged first" in (tmp_path / "out" / "summary.md").read_text()


def test_folds_are_not_counted_as_independent_seeds(tmp_path):
    """Fold-level pairs would call tanh better (p < 0.05); the 2 seeds cannot say so."""
    from scipy import stats as sst

    from src.analysis.comparisons import compare

    relu = {(s, k): 0.90 + 0.003 * k for s in (0, 1) for k in range(3)}
    gain = {0: 0.02, 1: 0.005}  # the seed decides most of the gain; folds add a little noise
    tanh = {(s, k): v + gain[s] + 0.001 * (k - 1) for (s, k), v in relu.items()}
    fold_level = sst.ttest_rel([tanh[k] for k in sorted(tanh)], [relu[k] for k in sorted(relu)])
    assert fold_level.pvalue < 0.05  # what counting folds as seeds said
    s = compare(summarize(fold_sweep(tmp_path / "sweep", {"relu": relu, "tanh": tanh})))
    row = s.table.set_index("activation").loc["tanh"]
    per_seed = [[sum(v[(s_, k)] for k in range(3)) / 3 for s_ in (0, 1)] for v in (tanh, relu)]
    assert row["pairs"] == 2 and row["p"] == pytest.approx(sst.ttest_rel(*per_seed).pvalue)
    assert row["p"] > 0.05 and row["verdict"] == "inconclusive"


def test_merged_fold_sweeps_keep_every_fold_of_a_seed(tmp_path):
    first = fold_sweep(tmp_path / "a", {"relu": {(0, k): 0.9 for k in range(3)}}, seeds=(0,))
    later = fold_sweep(tmp_path / "b", {"relu": {(1, k): 0.8 for k in range(3)}}, seeds=(1,))
    s = summarize([first, later])
    row = s.table.iloc[0]
    assert int(row["n"]) == 2 and int(row["runs"]) == 6 and not s.warnings
    assert row["mean"] == pytest.approx(0.85)


@pytest.mark.slow
def test_seeds_x_folds_sweep_end_to_end(tmp_path):
    """python train.py -m data.folds=2 data.fold=0,1 seed=0,1: four runs, each in its own
    seed=<n>/fold=<k>/ folder, validated on its fold, and one setting of 4 runs and n=2 (seeds) in the table."""
    from tests import fabricate
    from tests.test_sweeps import sweep

    data = tmp_path / "data"
    fabricate.write_idx(data / "MNIST" / "raw", seed=1)
    out = tmp_path / "sweep"
    p = sweep(["data.folds=2", "data.fold=0,1", "seed=0,1"], out, data)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    runs = sorted(m.parent.relative_to(out) for m in out.rglob("metrics.json"))
    assert [r.parts[1:] for r in runs] == [(f"seed={s}", f"fold={k}") for s in (0, 1) for k in (0, 1)]
    setting = runs[0].parts[0]  # one setting folder: the fold is a level of its own, not part of the name
    assert {r.parts[0] for r in runs} == {setting} and "data.folds=2" in setting and "data.fold=" not in setting
    for r in runs:
        m = json.loads((out / r / "metrics.json").read_text())
        assert m["status"] == "completed" and not m["val_is_test_split"]
    t = pd.read_csv(out / "summary.csv")
    assert len(t) == 1 and t["n"].iloc[0] == 2 and t["runs"].iloc[0] == 4  # folds of a seed averaged
