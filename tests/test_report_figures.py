"""The sweep-report figures of the studies on hand-made run folders in the real layouts
(metrics.json, .hydra/overrides.yaml, csv/metrics.csv as Lightning's CSVLogger writes it,
test_confusion.csv): accuracy vs depth, per-class accuracy and confusion, train vs test curves.
Each CSV must hold the numbers the runs imply."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from src.analysis import per_class, report, summary
from src.analysis.figures import file_stem

LOG_COLUMNS = ["epoch", "lr-SGD", "step", "test/acc", "test/loss", "time/epoch_s", "time/train_images_per_s",
               "train/acc", "train/loss", "val/acc", "val/acc_best", "val/loss"]


def fake_run(sweep_dir: Path, overrides: list[str], seed: int, metrics: dict | None,
             epochs: list[dict] = (), confusion: list[list[int]] | None = None, classes=("cat", "dog", "frog"),
             config: dict | None = None) -> Path:
    """One run folder as train.py leaves it. ``epochs``: per epoch {train/loss, train/acc, val/loss,
    val/acc}, written as the CSV logger does (an lr row, then a validation row and a train row per
    epoch, the test row last)."""
    run = sweep_dir / ",".join(overrides) / f"seed={seed}" if overrides else sweep_dir
    (run / ".hydra").mkdir(parents=True, exist_ok=True)
    ovs = [*overrides, f"seed={seed}"]
    (run / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in ovs))
    (run / ".hydra" / "config.yaml").write_text(json.dumps(config or {"data": {"val_size": 0}}))
    if metrics is not None:
        (run / "metrics.json").write_text(json.dumps({**metrics, "overrides": ovs, "seed": seed}))
    if epochs:
        rows, step = [{"epoch": None, "lr-SGD": 0.1, "step": 0}], 0
        for e, v in enumerate(epochs):
            step += 5
            rows.append({"epoch": e, "step": step, "val/acc": v["val/acc"], "val/acc_best": v["val/acc"],
                         "val/loss": v["val/loss"]})
            rows.append({"epoch": e, "step": step, "time/epoch_s": 1.0, "time/train_images_per_s": 100.0,
                         "train/acc": v["train/acc"], "train/loss": v["train/loss"]})
        rows.append({"epoch": len(epochs), "step": step + 1, "test/acc": 0.5, "test/loss": 1.0})
        (run / "csv").mkdir(exist_ok=True)
        pd.DataFrame(rows, columns=LOG_COLUMNS).to_csv(run / "csv" / "metrics.csv", index=False)
    if confusion is not None:
        pd.DataFrame(confusion, index=pd.Index(list(classes), name="true"), columns=list(classes)) \
            .to_csv(run / "test_confusion.csv")
    return run


def multirun_yaml(sweep_dir: Path, task: list[str]) -> None:
    sweep_dir.mkdir(parents=True, exist_ok=True)
    lines = "".join(f"    - {t}\n" for t in task)
    (sweep_dir / "multirun.yaml").write_text("hydra:\n  overrides:\n    task:\n" + lines)


def one_line_error(capsys, *fragments) -> None:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    for f in fragments:
        assert f in err, err


# ---------------------------------------------------------------------------------- depth sweep
DEPTH_ACC = {  # (activation, depth) -> test/acc per seed; None: that seed diverged
    ("relu", 2): [0.97, 0.95], ("relu", 4): [0.96, 0.90], ("relu", 10): [None, None],
    ("swish", 2): [0.98, 0.96], ("swish", 4): [0.97, 0.97], ("swish", 10): [0.93, None],
}


@pytest.fixture(scope="module")
def depth_sweep(tmp_path_factory) -> Path:
    sd = tmp_path_factory.mktemp("depth") / "sweep"
    multirun_yaml(sd, ["experiment=depth_study", "activation=relu,swish", "model.depth=2,4,10", "seed=0,1"])
    for (act, depth), accs in DEPTH_ACC.items():
        for seed, acc in enumerate(accs):
            m = {"status": "diverged", "error": "loss is nan"} if acc is None else \
                {"status": "completed", "test/acc": acc, "test/loss": 1 - acc, "epoch_time_mean_s": 1.0}
            fake_run(sd, [f"activation={act}", f"model.depth={depth}"], seed, m)
    return sd


def test_accuracy_vs_depth_points_are_the_aggregated_metrics(depth_sweep, tmp_path):
    s = report.write_report(depth_sweep, out_dir=tmp_path, show=False)  # numeric key, 3 values: automatic
    assert "vs_model.depth.png" in s.files and (tmp_path / "vs_model.depth.png").stat().st_size > 0
    t = pd.read_csv(tmp_path / "vs_model.depth.csv")
    assert list(t["activation"]) == ["relu"] * 3 + ["swish"] * 3 and list(t["model.depth"]) == [2, 4, 10] * 2
    assert list(t["line"]) == list(t["activation"]) and t["metric"].eq("test/acc").all()
    # expected from the metrics.json files themselves, not from the fixture's dict
    found = {}
    for mj in depth_sweep.rglob("metrics.json"):
        d = json.loads(mj.read_text())
        ov = dict(o.split("=", 1) for o in d["overrides"])
        found.setdefault((ov["activation"], int(ov["model.depth"])), []).append(d.get("test/acc"))
    for _, row in t.iterrows():
        accs = [a for a in found[(row["activation"], row["model.depth"])] if a is not None]
        assert row["n"] == len(accs) and row["runs"] == 2 and row["diverged"] == 2 - len(accs)
        if len(accs) == 0:
            assert np.isnan(row["mean"])
        else:
            assert row["mean"] == pytest.approx(np.mean(accs))
            assert (np.isnan(row["std"]) if len(accs) == 1 else row["std"] == pytest.approx(np.std(accs, ddof=1)))


def test_plot_vs_cli_adds_the_key_to_the_grouping_and_rejects_bad_keys(depth_sweep, tmp_path, capsys):
    assert report.main([str(depth_sweep), "--by", "activation", "--plot-vs", "model.depth", "--no-plots",
                        "--out", str(tmp_path)]) == 0
    t = pd.read_csv(tmp_path / "vs_model.depth.csv")
    assert len(t) == 6 and t.loc[(t["activation"] == "swish") & (t["model.depth"] == 4), "mean"].item() == \
        pytest.approx(0.97)
    assert not (tmp_path / "summary_strip.png").exists()  # --no-plots, but the asked-for figure is written
    assert list(pd.read_csv(tmp_path / "summary.csv")["activation"]) == ["relu", "swish"]
    capsys.readouterr()
    bad = tmp_path / "bad"
    assert report.main([str(depth_sweep), "--plot-vs", "activation", "--out", str(bad)]) == 2
    one_line_error(capsys, "--plot-vs activation: no numeric values", "relu")
    assert not bad.exists()  # checked before anything is written
    assert report.main([str(depth_sweep), "--plot-vs", "model.width", "--out", str(bad)]) == 2
    one_line_error(capsys, "model.width", "swept: activation, model.depth")
    # a single line (no other key) and one with two keys in its label
    s = summary.summarize(depth_sweep, by=["model.depth"])
    from src.analysis.vs_figures import vs_table
    assert list(vs_table(s, "model.depth")["line"].unique()) == ["test/acc"]
    assert file_stem("model/depth") == "model_depth"


# ------------------------------------------------------------------- per-class and train vs test
CONF = {  # (activation, seed) -> confusion counts, rows = true (cat, dog, frog), columns = predicted
    ("relu", 0): [[8, 2, 0], [1, 9, 0], [0, 10, 10]],   # per class: .8 .9 .5
    ("relu", 1): [[6, 4, 0], [0, 10, 0], [0, 6, 14]],   # .6 1.0 .7
    ("swish", 0): [[9, 1, 0], [2, 8, 0], [2, 2, 16]],   # .9 .8 .8
    ("swish", 1): [[10, 0, 0], [1, 9, 0], [0, 0, 20]],  # 1.0 .9 1.0
}
HAND = {  # per-class accuracy mean, std (ddof=1) over the two seeds, worked out by hand
    "relu": {"cat": (0.70, 0.1414214), "dog": (0.95, 0.0707107), "frog": (0.60, 0.1414214)},
    "swish": {"cat": (0.95, 0.0707107), "dog": (0.85, 0.0707107), "frog": (0.90, 0.1414214)},
}
CURVES = {  # (activation, seed) -> per epoch (train/loss, val/loss); accuracies derived below
    ("relu", 0): [(1.0, 1.1), (0.6, 0.9), (0.3, 0.95)], ("relu", 1): [(1.2, 1.3), (0.8, 1.1), (0.5, 1.05)],
    ("swish", 0): [(1.1, 1.2), (0.7, 0.8), (0.5, 0.7)], ("swish", 1): [(0.9, 1.0), (0.6, 0.7), (0.4, 0.6)],
}


def _epochs(key) -> list[dict]:
    return [{"train/loss": tr, "val/loss": va, "train/acc": 1 - tr / 2, "val/acc": 1 - va / 2}
            for tr, va in CURVES[key]]


@pytest.fixture(scope="module")
def act_sweep(tmp_path_factory) -> Path:
    sd = tmp_path_factory.mktemp("act") / "sweep"
    multirun_yaml(sd, ["activation=relu,swish", "seed=0,1,2", "model=lenet5"])
    for (act, seed), counts in CONF.items():
        fake_run(sd, [f"activation={act}", "model=lenet5"], seed, {"status": "completed", "test/acc": 0.8},
                 epochs=_epochs((act, seed)), confusion=counts)
    # a third swish seed that diverged: its log and confusion must not count
    fake_run(sd, ["activation=swish", "model=lenet5"], 2, {"status": "diverged", "error": "nan"},
             epochs=[{"train/loss": 99.0, "val/loss": 99.0, "train/acc": 0.0, "val/acc": 0.0}] * 3,
             confusion=[[0, 0, 10], [0, 0, 10], [0, 0, 20]])
    return sd


def test_per_class_numbers_are_what_the_confusion_matrices_imply(act_sweep, tmp_path):
    assert per_class.main([str(act_sweep), "--reference", "activation=relu", "--out", str(tmp_path)]) == 0
    t = pd.read_csv(tmp_path / "per_class.csv")
    assert list(t["class"]) == ["cat", "cat", "dog", "dog", "frog", "frog"]
    for _, row in t.iterrows():
        mean, std = HAND[row["activation"]][row["class"]]
        assert row["n"] == 2 and row["mean"] == pytest.approx(mean) and row["std"] == pytest.approx(std, abs=1e-6)
        assert row["reference"] == "activation=relu"
        assert row["delta"] == pytest.approx(mean - HAND["relu"][row["class"]][0], abs=1e-9)
    md = (tmp_path / "per_class.md").read_text()
    assert "| cat | 70.00 ± 14.14 | **95.00 ± 7.07** | +25.00 |" in md
    assert "| dog | **95.00 ± 7.07** | 85.00 ± 7.07 | -10.00 |" in md
    assert "| *mean over classes* | 75.00 | **90.00** | +15.00 |" in md and "Δ swish vs relu (pp)" in md
    cm = pd.read_csv(tmp_path / "per_class_confusion.csv").set_index(["setting", "true", "predicted"])["rate"]
    assert cm["activation=swish", "frog", "frog"] == pytest.approx((16 / 20 + 20 / 20) / 2)
    assert cm["activation=swish", "frog", "cat"] == pytest.approx((2 / 20 + 0) / 2)
    assert cm["activation=relu", "cat", "dog"] == pytest.approx((0.2 + 0.4) / 2)
    assert cm.groupby(["setting", "true"]).sum().to_numpy() == pytest.approx(1.0)  # rows sum to 1
    assert (tmp_path / "per_class.png").stat().st_size > 0
    # the reference by default is the first setting; another one flips the signs
    pc = per_class.per_class(act_sweep, reference="activation=swish")
    relu_cat = pc.table[(pc.table["setting"] == "activation=relu") & (pc.table["class"] == "cat")]
    assert relu_cat["delta"].item() == pytest.approx(-0.25)


def test_per_class_of_a_single_run_goes_to_its_tensorboard(act_sweep, tmp_path):
    import shutil

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    shutil.copytree(act_sweep / "activation=swish,model=lenet5" / "seed=0", run)
    assert per_class.main([str(run)]) == 0
    t = pd.read_csv(run / "per_class.csv")
    assert list(t["mean"]) == pytest.approx([0.9, 0.8, 0.8]) and t["n"].eq(1).all() and t["std"].isna().all()
    ea = EventAccumulator(str(run))
    ea.Reload()
    assert "test/per_class" in ea.Tags()["images"]


def test_per_class_reference_pairs_the_other_keys(depth_sweep):
    s = summary.summarize(depth_sweep)
    refs = summary.reference_map(s, "activation=relu")
    assert refs["activation=swish,model.depth=4"] == "activation=relu,model.depth=4"
    assert refs["activation=relu,model.depth=10"] == "activation=relu,model.depth=10"


def test_per_class_bad_arguments_are_one_line_errors(act_sweep, depth_sweep, tmp_path, capsys):
    out = ["--out", str(tmp_path)]
    assert per_class.main([str(act_sweep), "--by", "optimizer", *out]) == 2
    one_line_error(capsys, "--by optimizer", "activation")
    assert per_class.main([str(act_sweep), "--reference", "activation=gelu", *out]) == 2
    one_line_error(capsys, "no setting has activation=gelu", "relu, swish")
    assert per_class.main([str(act_sweep), "--reference", "optimizer=adam", *out]) == 2
    one_line_error(capsys, "--reference optimizer=adam")
    assert per_class.main([str(depth_sweep), *out]) == 2  # no test_confusion.csv anywhere
    one_line_error(capsys, "test_confusion.csv")
    assert per_class.main([str(tmp_path / "nowhere")]) == 2
    one_line_error(capsys, "is not a directory")
    assert not list(tmp_path.glob("per_class*"))


def test_train_vs_test_csv_is_the_per_epoch_mean_of_the_logs(act_sweep, tmp_path, capsys):
    assert report.main([str(act_sweep), "--train-vs-test", "--no-plots", "--out", str(tmp_path)]) == 0
    assert "train_vs_test.png" in capsys.readouterr().out
    assert (tmp_path / "train_vs_test.png").stat().st_size > 0
    t = pd.read_csv(tmp_path / "train_vs_test.csv")
    assert list(t["activation"]) == ["relu"] * 3 + ["swish"] * 3 and list(t["epoch"]) == [0, 1, 2] * 2
    for _, row in t.iterrows():
        logs = [_epochs((row["activation"], seed))[row["epoch"]] for seed in (0, 1)]  # the diverged seed is out
        for col in ("train/loss", "val/loss", "train/acc", "val/acc"):
            values = [e[col] for e in logs]
            assert row[f"{col}_mean"] == pytest.approx(np.mean(values))
            assert row[f"{col}_std"] == pytest.approx(np.std(values, ddof=1))
            assert row[f"{col}_count"] == 2
        assert row["loss_gap"] == pytest.approx(row["val/loss_mean"] - row["train/loss_mean"])


def test_train_vs_test_without_logs_is_a_one_line_error(depth_sweep, tmp_path, capsys):
    assert report.main([str(depth_sweep), "--train-vs-test", "--out", str(tmp_path)]) == 2
    one_line_error(capsys, "--train-vs-test", "csv/metrics.csv")


def test_sweep_end_writes_the_depth_plot_and_survives_missing_logs(depth_sweep, tmp_path, capsys):
    import shutil

    from omegaconf import OmegaConf

    from src.sweeps.callback import SweepCallback

    sd = tmp_path / "sweep"
    shutil.copytree(depth_sweep, sd)
    cb = SweepCallback(live=False, train_vs_test=True)  # no csv logs here: a warning, still the table
    with pytest.raises(SystemExit):  # the diverged runs make the sweep exit 1
        cb.on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(sd)}}}))
    err = capsys.readouterr().err
    assert "--train-vs-test: no completed run" in err and "vs_model.depth.png, vs_model.depth.csv" in err
    assert (sd / "summary.csv").exists() and (sd / "vs_model.depth.png").stat().st_size > 0
