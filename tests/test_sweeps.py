"""Sweeps as a user runs them: `python train.py -m ...` on the parallel launcher (fake GPU ids on the
CPU), the report it writes at the end, failure isolation and exit status, resume=true; the report
on its own (python -m src.analysis.report, imgcls-report) and the launcher configs (parallel, slurm, ray)."""
from __future__ import annotations

import importlib.util
import json
import math
import multiprocessing as mp
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from tests import fabricate
from tests.conftest import CONF, QUICK, ROOT

TINY = ["model=lenet5", "data=mnist", "data.verify_counts=false", "trainer.enable_progress_bar=false",
        *QUICK, "hydra.job_logging.root.level=WARNING"]


def sweep(args: list[str], sweep_dir: Path, data_dir: Path, **env) -> subprocess.CompletedProcess:
    environ = {**os.environ, "DATA_DIR": str(data_dir), "IMGCLS_CACHE_DIR": str(data_dir / "cache"),
               "HYDRA_FULL_ERROR": "0", **env}
    return subprocess.run([sys.executable, "train.py", "-m", *TINY, *args, f"hydra.sweep.dir={sweep_dir}"],
                          cwd=ROOT, env=environ, capture_output=True, text=True, timeout=400)


def metrics_files(sweep_dir: Path) -> list[Path]:
    return sorted(sweep_dir.rglob("metrics.json"))


def job_records(sweep_dir: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(sweep_dir.rglob("sweep_job.json"))]


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals], key=lambda t: (t[0], t[1]))
    now = peak = 0
    for _, step in events:
        now += step
        peak = max(peak, now)
    return peak


@pytest.fixture(scope="module")
def mnist_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sweep_data")
    fabricate.write_idx(root / "MNIST" / "raw", seed=1)
    return root


# ------------------------------------------------- 2 activations x 3 seeds, 2 fake GPUs, 1 job each
def run_main_sweep(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """The session's `main_sweep` (tests/conftest.py). Every process of it loads test_sweep_workers'
    CUDA probe (a sitecustomize that logs each CUDA query to <out>.cuda_calls.jsonl), so that the
    workers test checks this sweep's log instead of paying for a second sweep of its own."""
    from tests.test_sweep_workers import PROBE

    root = tmp_path_factory.mktemp("sweep")
    fabricate.write_idx(root / "data" / "MNIST" / "raw", seed=1)
    (root / "probe").mkdir()
    (root / "probe" / "sitecustomize.py").write_text(PROBE)
    out = root / "main"
    pythonpath = os.pathsep.join(filter(None, [str(root / "probe"), os.environ.get("PYTHONPATH")]))
    p = sweep(["activation=relu,tanh", "seed=0,1,2", "trainer.max_epochs=2"], out, root / "data",
              IMGCLS_FAKE_GPUS="0,1", CUDA_PROBE_LOG=str(cuda_log(out)), PYTHONPATH=pythonpath)
    return out, p


def cuda_log(sweep_dir: Path) -> Path:
    return sweep_dir.with_name(sweep_dir.name + ".cuda_calls.jsonl")


def test_sweep_runs_every_job_in_parallel_one_job_per_gpu(main_sweep):
    out, p = main_sweep
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "2 parallel job(s): GPUs 0,1 x 1 job(s) each" in p.stderr
    records = job_records(out)
    assert len(records) == 6 and all(r["end"] is not None and r["end"] >= r["start"] for r in records)
    assert {r["gpu"] for r in records} <= {"0", "1"} and all(r["locked"] for r in records)
    assert max_overlap([(r["start"], r["end"]) for r in records]) == 2, records  # ran concurrently
    for gpu in ("0", "1"):  # never two jobs on one GPU at once
        assert max_overlap([(r["start"], r["end"]) for r in records if r["gpu"] == gpu]) <= 1
    by_pid = {}
    for r in records:  # a worker keeps its GPU for its life
        by_pid.setdefault(r["pid"], set()).add(r["gpu"])
    assert all(len(g) == 1 for g in by_pid.values()) and len(by_pid) == 2
    assert all(r["threads"] == max(1, (len(os.sched_getaffinity(0))) // 2) for r in records)
    statuses = [json.loads(m.read_text())["status"] for m in metrics_files(out)]
    assert statuses == ["completed"] * 6


def test_six_jobs_share_one_terminal_quietly(main_sweep):
    _, p = main_sweep
    out = p.stdout + p.stderr
    assert "[sweep] 6/6 finished" in out
    # no job's own chatter: model summary, Lightning's notes, warnings nobody can act on, test table
    for noise in ("Total params", "GPU available", "Seed set to", "LeafSpec", "logging interval",
                  "Restoring states", "Test metric"):
        assert noise not in out, noise


def test_the_sweep_keeps_its_package_list_and_each_job_the_command_that_reruns_it(main_sweep):
    """Issue 22.8: environment.txt once per sweep folder; each run's provenance names its own job."""
    import shlex
    from importlib.metadata import version

    out, _ = main_sweep
    assert f"torch=={version('torch')}" in (out / "environment.txt").read_text().splitlines()
    runs = [json.loads(m.read_text()) for m in metrics_files(out)]
    commands = [shlex.split(r["provenance"]["command"]) for r in runs]
    assert len({tuple(c) for c in commands}) == 6  # the job's values, never the sweep's lists
    for r, c in zip(runs, commands):
        assert c[:2] == ["python", "train.py"] and set(r["overrides"]) <= set(c[2:])
        assert "activation=relu,tanh" not in c and "seed=0,1,2" not in c


def test_sweep_writes_the_table_from_the_runs_metrics(main_sweep):
    out, p = main_sweep
    for name in ("summary.md", "summary.csv", "summary_strip.png", "curves.png"):
        assert (out / name).stat().st_size > 0, name
    runs = [json.loads(m.read_text()) for m in metrics_files(out)]
    acc = pd.DataFrame({"activation": [next(o.split("=")[1] for o in r["overrides"] if o.startswith("activation="))
                                       for r in runs],
                        "acc": [r["test/acc"] for r in runs], "epoch_s": [r["epoch_time_mean_s"] for r in runs]})
    table = pd.read_csv(out / "summary.csv")
    assert list(table["activation"]) == ["relu", "tanh"]  # the command line's order
    md = (out / "summary.md").read_text()
    for _, row in table.iterrows():
        mine = acc[acc["activation"] == row["activation"]]["acc"]
        assert row["n"] == 3 == len(mine) and row["failed"] == 0 and row["diverged"] == 0
        assert row["mean"] == pytest.approx(mine.mean()) and row["std"] == pytest.approx(mine.std(ddof=1))
        assert row["min"] == pytest.approx(mine.min()) and row["max"] == pytest.approx(mine.max())
        assert row["epoch_time_s"] == pytest.approx(acc[acc["activation"] == row["activation"]]["epoch_s"].mean())
        shown = f"{mine.mean() * 100:.2f} ± {mine.std(ddof=1) * 100:.2f}"
        assert row["mean_std"] == shown and shown in md and shown in p.stderr  # file and terminal
    assert "`model=lenet5`" in md and "| activation |" in md


def test_report_curves_and_cli_options(main_sweep, tmp_path):
    from src.analysis import report
    from src.analysis.summary import epoch_curves

    out, _ = main_sweep
    s = report.summarize(out)
    curves = epoch_curves(s)
    assert sorted(curves["epoch"].unique()) == [0, 1] and curves["run"].nunique() == 6
    assert report.main([str(out), "--metric", "val/acc_best", "--by", "activation", "--out", str(tmp_path)]) == 0
    t = pd.read_csv(tmp_path / "summary.csv")
    best = [json.loads(m.read_text())["val/acc_best"] for m in metrics_files(out)]
    assert t["metric"].eq("val/acc_best").all() and t["n"].sum() == 6
    assert (t["mean"] * 3).sum() == pytest.approx(sum(best))
    assert report.main([str(out), "--by", "nosuchkey", "--out", str(tmp_path)]) == 2


# ------------------------------------------------------- a failing job, 2 jobs packed on one GPU
@pytest.fixture(scope="module")
def failing_sweep(mnist_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep") / "failing"
    # data.val_size=1000 asks for more validation images than the 120 fabricated ones: that job raises
    args = ["data.val_size=0,1000", "seed=0", "jobs_per_gpu=2"]
    first = sweep(args, out, mnist_dir, IMGCLS_FAKE_GPUS="0")
    times = {m.parent.parent.name: m.stat().st_mtime_ns for m in metrics_files(out)}
    again = sweep([*args, "resume=true"], out, mnist_dir, IMGCLS_FAKE_GPUS="0")
    return out, first, again, times


def test_failed_job_is_reported_and_sweep_exits_nonzero(failing_sweep):
    out, p, _, _ = failing_sweep
    assert p.returncode == 1, p.stdout[-3000:] + p.stderr[-3000:]
    assert "2 parallel job(s): GPUs 0 x 2 job(s) each" in p.stderr
    assert "1 job(s) did not complete" in p.stderr and "data.val_size=1000" in p.stderr
    failed = [json.loads(m.read_text()) for m in metrics_files(out) if "val_size=1000" in str(m)]
    assert failed[0]["status"] == "failed" and "val_size=1000" in failed[0]["error"]
    table = pd.read_csv(out / "summary.csv")  # the table is still written, with the failure counted
    assert list(table["data.val_size"]) == [0, 1000]
    assert list(table["n"]) == [1, 0] and list(table["failed"]) == [0, 1]
    assert math.isnan(table["mean"][1]) and table["mean"][0] >= 0
    md = (out / "summary.md").read_text()
    assert "**failed**" in md and "leaves no training or no validation images" in md
    assert {r["gpu"] for r in job_records(out)} == {"0"}  # jobs_per_gpu=2: both jobs on GPU 0


def test_resume_keeps_completed_jobs_and_retries_the_rest(failing_sweep):
    out, _, p, before = failing_sweep
    assert p.returncode == 1, p.stderr[-3000:]
    assert "1 kept from before (resume)" in p.stderr
    after = {m.parent.parent.name: m.stat().st_mtime_ns for m in metrics_files(out)}
    assert after.keys() == before.keys() and len(after) == 2  # resume=true is not part of the folder names
    ok = next(k for k in after if "val_size=0," in k)
    bad = next(k for k in after if "val_size=1000" in k)
    assert after[ok] == before[ok]       # completed: skipped
    assert after[bad] > before[bad]      # failed: run again
    assert list(pd.read_csv(out / "summary.csv")["n"]) == [1, 0]


# ----------------------------------------------------------------------- report on fabricated runs
def _fake_run(sweep_dir: Path, setting: str, seed: int, metrics: dict | None, overrides: list[str],
              epochs: list[tuple[float, float]] = ()) -> None:
    run = sweep_dir / setting / f"seed={seed}"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in [*overrides, f"seed={seed}"]))
    if metrics is not None:
        (run / "metrics.json").write_text(json.dumps({**metrics, "overrides": [*overrides, f"seed={seed}"],
                                                      "seed": seed}))
    if epochs:
        (run / "csv").mkdir()
        rows = [{"epoch": e, "step": e, "val/acc": a, "val/loss": l} for e, (a, l) in enumerate(epochs)]
        pd.DataFrame(rows).to_csv(run / "csv" / "metrics.csv", index=False)


def test_report_aggregates_formats_and_orders_like_a_paper(tmp_path):
    from src.analysis.report import write_report

    sd = tmp_path / "sweep"
    (sd).mkdir()
    (sd / "multirun.yaml").write_text("hydra:\n  overrides:\n    task:\n    - activation=swish,relu\n"
                                      "    - seed=0,1,2\n    - paths.data_dir=/data\n    - model=lenet5\n")
    common = ["model=lenet5", "paths.data_dir=/data"]
    accs = {"swish": [0.9171, 0.9192, 0.9213], "relu": [0.95, 0.96]}
    for act, values in accs.items():
        for seed, a in enumerate(values):
            _fake_run(sd, f"activation={act}", seed, {"status": "completed", "test/acc": a, "test/loss": 1 - a,
                                                      "epoch_time_mean_s": 2.0 + seed},
                      [f"activation={act}", *common], epochs=[(a - 0.1, 0.5), (a, 0.4)])
    _fake_run(sd, "activation=relu", 2, {"status": "diverged", "error": "loss is nan at epoch 0"},
              ["activation=relu", *common])
    _fake_run(sd, "activation=tanh", 0, None, ["activation=tanh", *common])  # killed: no metrics.json
    _fake_run(sd, "activation=tanh", 1, {"status": "failed", "error": "RuntimeError: boom"},
              ["activation=tanh", *common])

    s = write_report(sd, show=False)
    t = s.table
    assert list(t["activation"]) == ["swish", "relu", "tanh"]  # command-line order, then the rest
    assert s.common == {"model": "lenet5"} and s.keys == ["activation"]  # paths and seed dropped
    swish = t[t["activation"] == "swish"].iloc[0]
    assert swish["n"] == 3 and swish["mean"] == pytest.approx(0.9192) and swish["std"] == pytest.approx(0.0021)
    assert swish["epoch_time_s"] == pytest.approx(3.0)
    relu = t[t["activation"] == "relu"].iloc[0]
    assert (relu["n"], relu["diverged"], relu["failed"]) == (2, 1, 0)
    tanh = t[t["activation"] == "tanh"].iloc[0]
    assert (tanh["n"], tanh["failed"], tanh["missing"]) == (0, 1, 1)
    md = (sd / "summary.md").read_text()
    assert "| swish | 91.92 ± 0.21 | 3 | 91.71 | 92.13 |" in md
    assert "**95.50 ± 0.71**" in md  # the best mean in bold
    assert "**diverged**: loss is nan" in md and "**missing**" in md and "RuntimeError: boom" in md
    csv = pd.read_csv(sd / "summary.csv")
    assert list(csv["mean_std"]) == ["91.92 ± 0.21", "95.50 ± 0.71", "–"]
    assert (sd / "summary_strip.png").stat().st_size > 0 and (sd / "curves.png").stat().st_size > 0


# ------------------------------------------------------------------------------ GPU slot locks
def _hold_slot(lock_dir, gpus, k, n_jobs, barrier, queue):
    from src.sweeps import slots

    slot = slots.take_slot(gpus, k, n_jobs, Path(lock_dir))
    queue.put((os.getpid(), slot["gpu"], slot["slot"], slot["locked"], os.environ.get("CUDA_VISIBLE_DEVICES")))
    barrier.wait(timeout=60)  # every process holds its slot at the same time


def test_slot_locks_pack_k_jobs_per_gpu_and_spread_over_gpus(tmp_path):
    ctx = mp.get_context("fork")
    n = 5  # 2 GPUs x 2 slots, and one worker too many
    barrier, queue = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_hold_slot, args=(tmp_path, ["0", "1"], 2, 4, barrier, queue)) for _ in range(n)]
    for p in procs:
        p.start()
    got = [queue.get(timeout=60) for _ in range(n)]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    locked = [(g, s) for _, g, s, ok, _ in got if ok]
    assert sorted(locked) == [("0", 0), ("0", 1), ("1", 0), ("1", 1)]  # each slot once, k=2 per GPU
    assert all(cvd == g for _, g, _, _, cvd in got)
    assert sum(not ok for *_, ok, _ in got) == 1  # the extra worker shares, unlocked, and says so


# ------------------------------------------------------------------------------ launcher configs
def _hydra_cfg(overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides=overrides, return_hydra_config=True)


def test_parallel_launcher_is_the_default_and_sizes_itself(monkeypatch):
    import src.resolvers  # noqa: F401  (registers the n_jobs resolver, as train.py does)

    monkeypatch.setenv("IMGCLS_FAKE_GPUS", "0,1")
    cfg = _hydra_cfg(["jobs_per_gpu=3", "resume=true"])
    assert cfg.hydra.launcher._target_.endswith("ParallelLauncher") and cfg.hydra.launcher.n_jobs == 6
    assert cfg.hydra.launcher.retry_killed == 0  # a killed job is recorded, not retried, unless asked
    assert cfg.hydra.callbacks.sweep._target_ == "src.sweeps.callback.SweepCallback"
    assert cfg.hydra.sweep.subdir == "default/seed=0"  # resume (and jobs_per_gpu) name no folder
    monkeypatch.setenv("IMGCLS_FAKE_GPUS", "")  # CPU only: cores shared between jobs
    from src.sweeps.slots import cpu_parallel_jobs

    assert _hydra_cfg([]).hydra.launcher.n_jobs == cpu_parallel_jobs() >= 1
    with pytest.raises(Exception, match="jobs_per_gpu=0"):
        _ = _hydra_cfg(["jobs_per_gpu=0"]).hydra.launcher.n_jobs
    assert _hydra_cfg(["hydra/launcher=sequential"]).hydra.launcher._target_.endswith("BasicLauncher")


def test_slurm_launcher_config():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="pip install -e .[slurm]")
    launcher = _hydra_cfg(["hydra/launcher=slurm"]).hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.gpus_per_node == 1 and launcher.tasks_per_node == 1 and launcher.timeout_min > 0
    assert launcher.array_parallelism > 1 and launcher.max_num_timeout > 0


def test_ray_launcher_config():
    pytest.importorskip("hydra_plugins.hydra_ray_launcher", reason="pip install -e .[ray]")
    launcher = _hydra_cfg(["hydra/launcher=ray", "hydra.launcher.ray.remote.num_gpus=0.25"]).hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_ray_launcher.ray_launcher.RayLauncher"
    assert launcher.ray.remote.num_gpus == 0.25 and launcher.ray.init.address is None


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="pip install -e .[ray]")
def test_two_job_sweep_on_local_ray(mnist_dir, tmp_path):
    pytest.importorskip("hydra_plugins.hydra_ray_launcher")
    out = tmp_path / "ray"
    p = sweep(["hydra/launcher=ray", "hydra.launcher.ray.remote.num_gpus=0", "hydra.launcher.ray.remote.num_cpus=1",
               "activation=relu,tanh", "seed=0"], out, mnist_dir)
    assert p.returncode == 0, p.stderr[-3000:]
    assert len(pd.read_csv(out / "summary.csv")) == 2
