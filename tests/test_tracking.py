"""MLflow and W&B as the user gets them (issue 18): `python train.py -m ... logger=default_mlflow_wandb`
from a scratch folder, so the default local stores are used (outputs/mlflow.db, offline W&B runs).

One 2x2 parallel sweep (activation x seed, 2 fake GPUs, so each loky worker runs two jobs) is
read back through mlflow.search_runs and W&B's offline run files and compared with each job's
metrics.json; a second, sequential sweep with a failing job checks FAILED runs and that the sweep
goes on. Every process of both sweeps carries an audit hook that records any attempt to reach
another machine, and W&B's server address points at a local port that counts visitors."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

from tests import fabricate
from tests.tracking_helpers import Listener, guarded_env, run_sweep, search_runs
from tests.wandb_offline import read_run

STUDY = "2026-01-01/12-00-00"           # the sweep folder outputs/multirun/<date>/<time> names the study
FAILING_STUDY = "2026-01-01/12-30-00"


def numbers(metrics: dict) -> dict[str, float]:
    return {k: v for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "seed" and math.isfinite(v)}


def job_dirs(sweep_dir: Path) -> list[Path]:
    return sorted(m.parent for m in sweep_dir.glob("*/seed=*/metrics.json"))


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("tracking")
    data = root / "data"
    fabricate.write_idx(data / "MNIST" / "raw", seed=1)
    listener = Listener()
    listener.start()
    yield {"dir": root / "work", "data": data, "listener": listener}
    listener.stop()


@pytest.fixture(scope="module")
def tracked(work) -> dict:
    w = work["dir"]
    w.mkdir()
    env = guarded_env(w, work["data"], work["listener"], IMGCLS_FAKE_GPUS="0,1")
    p = run_sweep(["logger=default_mlflow_wandb", "activation=relu,tanh", "seed=0,1", "trainer.max_epochs=2",
                   f"hydra.sweep.dir=outputs/multirun/{STUDY}"], w, env)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-5000:]
    return {"dir": w, "sweep": w / "outputs" / "multirun" / STUDY, "proc": p, "runs": search_runs(w, STUDY)}


@pytest.fixture(scope="module")
def failing(work, tracked) -> dict:
    """Sequential launcher: both jobs in the launching process, one after the other, so the second
    job's trackers must start new runs in a process whose first job already used W&B."""
    w = tracked["dir"]
    env = guarded_env(w, work["data"], work["listener"])
    # data.val_size=1000 asks for more validation images than the 120 fabricated ones: that job raises
    p = run_sweep(["logger=default_mlflow_wandb", "data.val_size=1000,0", "seed=0", "hydra/launcher=sequential",
                   f"hydra.sweep.dir=outputs/multirun/{FAILING_STUDY}"], w, env)
    return {"sweep": w / "outputs" / "multirun" / FAILING_STUDY, "proc": p, "runs": search_runs(w, FAILING_STUDY)}


def child_runs(runs: pd.DataFrame) -> pd.DataFrame:
    return runs[runs["tags.role"] != "sweep"]


# ------------------------------------------------------------------------------------ MLflow
def test_mlflow_one_experiment_one_finished_run_per_job_nested_under_the_sweep(tracked):
    runs = tracked["runs"]
    assert (tracked["dir"] / "outputs" / "mlflow.db").is_file()  # the default local store
    assert len(runs) == 5 and runs["experiment_id"].nunique() == 1
    parent = runs[runs["tags.role"] == "sweep"]
    assert len(parent) == 1 and parent["status"].iloc[0] == "FINISHED"
    children = child_runs(runs)
    assert list(children["status"]) == ["FINISHED"] * 4
    assert set(children["tags.mlflow.parentRunId"]) == {parent["run_id"].iloc[0]}
    assert sorted(children["tags.mlflow.runName"]) == [f"activation={a}/seed={s}" for a in ("relu", "tanh")
                                                        for s in (0, 1)]
    for uri in children["artifact_uri"]:  # artifacts in the default local folder
        assert uri.startswith((tracked["dir"] / "outputs" / "mlartifacts").as_uri())


def test_mlflow_run_holds_the_jobs_config_overrides_and_metrics_json(tracked, tmp_path):
    import mlflow

    client = mlflow.MlflowClient()
    children = child_runs(tracked["runs"]).set_index("tags.run_dir")
    dirs = job_dirs(tracked["sweep"])
    assert len(dirs) == 4
    for run_dir in dirs:
        m = json.loads((run_dir / "metrics.json").read_text())
        run = children.loc[str(run_dir)]
        # tags: every override, one by one and all together
        assert run["tags.overrides"] == " ".join(m["overrides"])
        for o in m["overrides"]:
            key, _, value = o.partition("=")
            assert run[f"tags.override.{key.lstrip('~+')}"] == (value or "(deleted)"), o
        assert run["tags.status"] == "completed" and run["tags.tested_weights"] == m["tested_weights"]
        # params: the flattened composed config as the job saw it
        composed = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
        for key in ("seed", "model._target_", "optimizer.lr", "data.batch_size", "trainer.max_epochs",
                    "activation.name", "lit.loss"):
            assert run[f"params.{key}"] == str(OmegaConf.select(composed, key)), key
        assert run["params.paths.output_dir"] == str(run_dir)  # interpolations resolved
        assert run["params.seed"] == str(m["seed"])
        # final metrics: every number of metrics.json, as the value the run shows
        for key, value in numbers(m).items():
            assert run[f"metrics.{key}"] == pytest.approx(value), key
        # per-epoch metrics, and the files
        steps = [h.step for h in client.get_metric_history(run["run_id"], "val/acc")]
        assert len(steps) == 2 and steps[0] < steps[1] <= 4  # one per epoch (2 steps an epoch)
        names = {a.path for a in client.list_artifacts(run["run_id"])}
        assert {"metrics.json", "confusion_matrix.png", "activation.png", "test_confusion.csv", "hydra"} <= names
        local = Path(client.download_artifacts(run["run_id"], "metrics.json", str(tmp_path / run["run_id"])))
        assert json.loads(local.read_text()) == m


def test_mlflow_parent_run_holds_the_sweep_summary(tracked, tmp_path):
    import mlflow

    client = mlflow.MlflowClient()
    parent = tracked["runs"][tracked["runs"]["tags.role"] == "sweep"].iloc[0]
    names = {a.path for a in client.list_artifacts(parent["run_id"])}
    assert {"summary.csv", "summary.md", "curves.png", "multirun.yaml", "summary_table.json"} <= names
    got = pd.read_csv(client.download_artifacts(parent["run_id"], "summary.csv", str(tmp_path)))
    pd.testing.assert_frame_equal(got, pd.read_csv(tracked["sweep"] / "summary.csv"))
    table = client.load_table(parent["experiment_id"], "summary_table.json", run_ids=[parent["run_id"]])
    assert list(table["activation"]) == ["relu", "tanh"] and list(table["n"]) == [2, 2]
    assert parent["tags.jobs_completed"] == "4" and parent["tags.mlflow.runName"] == "sweep"


# ------------------------------------------------------------------------------------- W&B
def test_wandb_offline_one_run_per_job_in_the_sweeps_group(tracked):
    dirs = job_dirs(tracked["sweep"])
    pids = [json.loads((d / "sweep_job.json").read_text())["pid"] for d in dirs]
    assert len(dirs) == 4 and len(set(pids)) == 2  # two workers, each ran two jobs: runs must not bleed
    for run_dir in dirs:
        (offline,) = (run_dir / "wandb").glob("offline-run-*")  # one run per job, none reused
        m = json.loads((run_dir / "metrics.json").read_text())
        setting = next(o for o in m["overrides"] if o.startswith("activation="))
        r = read_run(offline)
        assert (r.project, r.group, r.job_type) == ("imgcls-studies", STUDY, setting)
        assert r.name == f"{setting}/seed={m['seed']}" and r.exit_code == 0
        assert r.tags == m["overrides"]
        assert r.config["seed"] == m["seed"] and r.config["paths"]["output_dir"] == str(run_dir)
        assert r.config["activation"]["name"] == setting.split("=")[1]
        for key, value in m.items():  # the summary: every scalar of metrics.json
            if isinstance(value, (int, float, str, bool)):
                assert r.summary[key] == (pytest.approx(value) if isinstance(value, float) else value), key
        assert len([h for h in r.history if "val/acc" in h]) == 2  # per epoch
        assert {"confusion_matrix/path", "activation/path"} <= set(r.summary)


def test_wandb_summary_run_holds_the_table(tracked):
    (offline,) = (tracked["sweep"] / "wandb").glob("offline-run-*")
    r = read_run(offline)
    assert (r.group, r.job_type, r.name, r.exit_code) == (STUDY, "summary", "summary", 0)
    assert r.summary["summary/_type"] == "table-file" and r.summary["jobs_completed"] == 4
    table = json.loads((offline / "files" / r.summary["summary/path"]).read_text())
    expected = pd.read_csv(tracked["sweep"] / "summary.csv")
    assert table["columns"] == list(expected.columns) and len(table["data"]) == len(expected)
    assert [row[table["columns"].index("activation")] for row in table["data"]] == ["relu", "tanh"]


def test_no_network_was_attempted(work, tracked, failing):
    log = work["dir"] / "netlog.txt"
    assert not log.exists(), log.read_text()
    assert work["listener"].requests == []  # nothing asked the (stand-in) W&B server


def test_tracked_sweep_keeps_the_terminal_quiet(tracked):
    out = tracked["proc"].stdout + tracked["proc"].stderr
    for noise in ("INFO mlflow", "alembic", "wandb:", "Creating it", "[tracking]"):
        assert noise not in out, noise


# ------------------------------------------------------------------------------ a failing job
def test_failing_job_ends_its_runs_failed_and_the_sweep_goes_on(failing):
    p, runs = failing["proc"], failing["runs"]
    assert p.returncode == 1 and "1 job(s) did not complete" in p.stderr, p.stderr[-3000:]
    by_name = {r["tags.mlflow.runName"]: r for _, r in child_runs(runs).iterrows()}
    ok, bad = by_name["data.val_size=0/seed=0"], by_name["data.val_size=1000/seed=0"]
    m_bad = json.loads((Path(bad["tags.run_dir"]) / "metrics.json").read_text())
    assert m_bad["status"] == "failed"
    assert bad["status"] == "FAILED" and bad["tags.status"] == "failed" and bad["tags.error"] == m_bad["error"]
    assert ok["status"] == "FINISHED"  # the job after it ran on, and so did the sweep's end
    parent = runs[runs["tags.role"] == "sweep"].iloc[0]
    assert parent["status"] == "FINISHED" and parent["tags.jobs_failed"] == "1"
    # W&B: each job its own run in the one process, the failed one ended with exit code 1
    exits = {}
    for run_dir in job_dirs(failing["sweep"]):
        (offline,) = (run_dir / "wandb").glob("offline-run-*")
        r = read_run(offline)
        exits[r.name] = r.exit_code
        assert r.summary["status"] == json.loads((run_dir / "metrics.json").read_text())["status"]
    assert exits == {"data.val_size=0/seed=0": 0, "data.val_size=1000/seed=0": 1}


# --------------------------------------------------- single runs, in this process, the same store
def _single_cfg(work: dict, tmp_path: Path, *extra: str):
    from tests.conftest import QUICK, compose_cfg

    db = work["dir"] / "outputs" / "mlflow.db"
    return compose_cfg(["model=lenet5", "data=mnist", *QUICK, "lit.log_images=false", "logger=mlflow",
                        f"logger.mlflow.tracking_uri=sqlite:///{db}",
                        f"logger.mlflow.artifact_root={work['dir'] / 'outputs' / 'mlartifacts'}", *extra],
                       tmp_path / "run", work["data"])


def _runs_of(work: dict, run_dir: Path) -> pd.DataFrame:
    runs = search_runs(work["dir"], "runs")  # single runs: the "runs" experiment, like outputs/runs/
    return runs[runs["tags.run_dir"] == str(run_dir)]


def test_single_run_is_one_finished_run_in_the_runs_experiment(work, tracked, tmp_path):
    from train import train

    cfg = _single_cfg(work, tmp_path, "seed=3")
    train(cfg)
    (_, run), = _runs_of(work, tmp_path / "run").iterrows()
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert run["status"] == "FINISHED" and run["tags.mlflow.runName"].endswith("/seed=3")
    assert pd.isna(run.get("tags.mlflow.parentRunId"))  # no sweep, no parent
    assert run["metrics.test/acc"] == pytest.approx(m["test/acc"]) and run["params.seed"] == "3"


def test_job_failing_before_its_loggers_still_gets_a_failed_run(work, tracked, tmp_path):
    from src.runs import recorded_outcome
    from src.tracking.job import tracked_runs

    cfg = _single_cfg(work, tmp_path)
    with pytest.raises(RuntimeError, match="no data today"):
        with tracked_runs(cfg), recorded_outcome(cfg):
            raise RuntimeError("no data today")  # before train.py would build any logger
    (_, run), = _runs_of(work, tmp_path / "run").iterrows()
    assert run["status"] == "FAILED" and run["tags.error"] == "RuntimeError: no data today"


def test_busy_sqlite_store_is_waited_for_not_failed(work, tracked):
    """One writer holding the store past SQLite's own 5 s wait: MLflow reports the store busy, the
    tracker's client retries instead of failing the job."""
    import sqlite3
    import threading

    from src.tracking.mlflow_logger import client_for

    db = work["dir"] / "outputs" / "mlflow.db"
    client = client_for(f"sqlite:///{db}")
    run_id = child_runs(tracked["runs"])["run_id"].iloc[0]
    client.set_tag(run_id, "warm", "up")  # the engine is open before the lock is taken
    holder = sqlite3.connect(db, isolation_level=None, check_same_thread=False)  # the timer commits
    holder.execute("BEGIN EXCLUSIVE")
    timer = threading.Timer(6.0, holder.execute, args=("COMMIT",))
    timer.start()
    try:
        client.set_tag(run_id, "written_while_busy", "yes")
    finally:
        timer.join()
        holder.close()
    assert client.get_run(run_id).data.tags["written_while_busy"] == "yes"
