"""Issue 23 (faults): a dead sweep worker costs only its own job, Ctrl-C ends a sweep in one line
that names the command resuming it, and one run folder holds one run at a time (a lock; an
unfinished run is continued or cleared, never silently trained over)."""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from src.errors import UserError
from tests.conftest import QUICK, ROOT, compose_cfg
from tests.test_sweeps import TINY, metrics_files


def start_sweep(args: list[str], sweep_dir: Path, data_dir: Path) -> subprocess.Popen:
    env = {**os.environ, "DATA_DIR": str(data_dir), "IMGCLS_CACHE_DIR": str(data_dir / "cache"),
           "HYDRA_FULL_ERROR": "0", "IMGCLS_FAKE_GPUS": "0,1"}  # 2 parallel jobs on any machine
    # a session of its own: a signal to its group reaches the launcher and its workers, as Ctrl-C does
    return subprocess.Popen([sys.executable, "train.py", "-m", *TINY, *args, f"hydra.sweep.dir={sweep_dir}"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def job_pid(sweep_dir: Path, pattern: str, proc: subprocess.Popen, timeout: float = 300) -> int:
    """The PID of the worker running the job whose folder matches ``pattern`` (its sweep_job.json)."""
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        for rec in sweep_dir.glob(f"{pattern}/sweep_job.json"):
            try:
                return json.loads(rec.read_text())["pid"]
            except (OSError, ValueError, KeyError):
                pass
        time.sleep(0.02)
    raise AssertionError(f"no job {pattern} started: {proc.communicate(timeout=60)[1][-3000:]}")


def statuses(sweep_dir: Path) -> dict[str, dict]:
    """activation -> metrics.json of its run."""
    out = {}
    for m in metrics_files(sweep_dir):
        data = json.loads(m.read_text())
        out[next(o.split("=")[1] for o in data["overrides"] if o.startswith("activation="))] = data
    return out


def kill_tanh_job(tmp_path: Path, mnist_dir: Path, extra: list[str]) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path / "sweep"
    proc = start_sweep(["activation=relu,tanh,sigmoid", "seed=0", *extra], out, mnist_dir)
    os.kill(job_pid(out, "activation=tanh*/seed=0", proc), signal.SIGKILL)
    stdout, stderr = proc.communicate(timeout=400)
    return out, subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


@pytest.fixture(scope="module")
def mnist_dir(tmp_path_factory) -> Path:
    from tests import fabricate

    root = tmp_path_factory.mktemp("fault_data")
    fabricate.write_idx(root / "MNIST" / "raw", seed=1)
    return root


# ------------------------------------------------------------------------------ sweep faults
def test_a_killed_worker_costs_only_its_own_job(mnist_dir, tmp_path):
    """kill -9 of one worker used to end the sweep with TerminatedWorkerError: the other job in flight
    died with it, the rest never started, no table. Now: that job is `killed`, the others complete."""
    out, p = kill_tanh_job(tmp_path, mnist_dir, [])
    assert p.returncode == 1, p.stderr[-3000:]
    assert "TerminatedWorkerError" not in p.stderr and "Traceback" not in p.stderr
    runs = statuses(out)
    assert runs["relu"]["status"] == runs["sigmoid"]["status"] == "completed"
    assert runs["tanh"]["status"] == "killed" and "SIGKILL" in runs["tanh"]["error"]
    table = pd.read_csv(out / "summary.csv")  # the table, with the killed job counted as failed
    assert list(table["activation"]) == ["relu", "tanh", "sigmoid"] and list(table["failed"]) == [0, 1, 0]
    assert "1 job(s) did not complete" in p.stderr and "killed" in p.stderr
    assert f"hydra.sweep.dir={out}" in p.stderr and "resume=true" in p.stderr  # the command that resumes it


def test_a_killed_job_is_retried_once_when_asked(mnist_dir, tmp_path):
    out, p = kill_tanh_job(tmp_path, mnist_dir, ["hydra.launcher.retry_killed=1"])
    assert p.returncode == 0, p.stderr[-3000:]
    assert "was killed" in p.stderr and "retrying it with resume=true" in p.stderr
    runs = statuses(out)
    assert {a: r["status"] for a, r in runs.items()} == dict.fromkeys(["relu", "tanh", "sigmoid"], "completed")
    assert list(pd.read_csv(out / "summary.csv")["n"]) == [1, 1, 1]


def test_ctrl_c_ends_a_sweep_in_one_line_naming_the_resume_command(mnist_dir, tmp_path):
    out = tmp_path / "sweep"
    proc = start_sweep(["activation=relu,tanh,sigmoid", "seed=0", "trainer.max_epochs=100",
                        "trainer.limit_train_batches=20"], out, mnist_dir)
    workers = [job_pid(out, "activation=relu*/seed=0", proc), job_pid(out, "activation=tanh*/seed=0", proc)]
    os.killpg(proc.pid, signal.SIGINT)  # as Ctrl-C in a terminal: the launcher and its workers
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    lines = [ln for ln in stderr.splitlines() if "interrupted" in ln]
    assert len(lines) == 1 and "2 job(s) in flight marked interrupted, 1 not started" in lines[0]
    assert f"hydra.sweep.dir={out}" in lines[0] and lines[0].endswith("resume=true")
    assert {a: r["status"] for a, r in statuses(out).items()} == {"relu": "interrupted", "tanh": "interrupted"}
    time.sleep(1)
    for pid in workers:  # no worker left training in the background
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


# ---------------------------------------------------------------------------- run-folder lock
def _hold_lock(run_dir: str, ready, release) -> None:
    from src.run_lock import lock_run_dir

    lock_run_dir(Path(run_dir))
    ready.set()
    release.wait(timeout=120)


def test_a_run_folder_holds_one_run_at_a_time(fake_data, tmp_path):
    """Two identical commands into one folder both failed (mixed metrics.csv and event files). Now
    the second is refused in one line naming the first one's PID and host; a dead holder's lock is
    taken over."""
    ctx = mp.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(str(tmp_path), ready, release))
    holder.start()
    assert ready.wait(timeout=60)
    cfg = compose_cfg(["model=lenet5", "data=mnist", *QUICK], tmp_path, fake_data)
    from train import train

    with pytest.raises(UserError) as e:
        train(cfg)
    msg = str(e.value)
    assert "\n" not in msg and "in use by another run" in msg
    assert f"PID {holder.pid} on host {socket.gethostname()}" in msg
    assert not (tmp_path / "metrics.json").exists()
    holder.kill()  # as kill -9: the OS drops its flock, the file with its PID stays
    holder.join(timeout=60)
    train(cfg)
    assert json.loads((tmp_path / "metrics.json").read_text())["status"] == "completed"
    assert json.loads((tmp_path / ".run.lock").read_text())["pid"] == os.getpid()


def test_ddp_ranks_above_zero_leave_the_lock_to_rank_zero(tmp_path, monkeypatch):
    """Rank 0 holds the folder's lock while ranks > 0 start into the same folder: they never refuse."""
    from src.run_lock import lock_run_dir, release_run_dirs
    from src.runs import previous_result

    cfg = compose_cfg(["model=lenet5", "data=mnist", *QUICK], tmp_path)
    ctx = mp.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    rank0 = ctx.Process(target=_hold_lock, args=(str(tmp_path), ready, release))
    rank0.start()
    try:
        assert ready.wait(timeout=60)
        monkeypatch.setenv("LOCAL_RANK", "1")
        assert previous_result(cfg) is None
        monkeypatch.delenv("LOCAL_RANK")
        with pytest.raises(UserError, match="in use by another run"):
            lock_run_dir(tmp_path)
    finally:
        release.set()
        rank0.join(timeout=60)
        release_run_dirs()


def _unfinished_run(run_dir: Path) -> None:
    """What a killed run leaves: checkpoints, CSV rows, a TensorBoard event file, no metrics.json."""
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "epoch_000.ckpt").write_bytes(b"old")
    (run_dir / "csv").mkdir()
    (run_dir / "csv" / "metrics.csv").write_text("epoch,step,val/acc\n0,0,0.5\n1,1,0.6\n2,2,0.7\n")
    (run_dir / "events.out.tfevents.1.old").write_bytes(b"old")


def test_an_unfinished_run_is_continued_or_cleared_never_trained_over(fake_data, tmp_path):
    from train import train

    _unfinished_run(tmp_path)
    base = ["model=lenet5", "data=mnist", *QUICK]
    with pytest.raises(UserError) as e:
        train(compose_cfg(base, tmp_path, fake_data))
    msg = str(e.value)
    assert "\n" not in msg and "holds an unfinished run" in msg and "resume=true" in msg and "overwrite=true" in msg
    assert (tmp_path / "checkpoints" / "epoch_000.ckpt").read_bytes() == b"old"  # nothing touched

    train(compose_cfg([*base, "overwrite=true"], tmp_path, fake_data))
    assert not (tmp_path / "events.out.tfevents.1.old").exists()
    assert (tmp_path / "checkpoints" / "epoch_000.ckpt").read_bytes() != b"old"
    log = pd.read_csv(tmp_path / "csv" / "metrics.csv")
    assert log.dropna(subset=["val/acc"])["epoch"].astype(int).tolist() == [0]  # no old rows left


def test_resume_without_a_run_folder_names_the_folder_it_needs(tmp_path):
    """A single run gets a new timestamped folder: resume=true there used to start afresh silently."""
    p = subprocess.run([sys.executable, str(ROOT / "train.py"), "model=lenet5", "data=mnist", "resume=true"],
                       cwd=tmp_path, env={**os.environ, "DATA_DIR": str(tmp_path / "none")},
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 2, p.stderr[-3000:]
    lines = p.stderr.strip().splitlines()
    assert lines[-1].startswith("error: resume=true continues a run in its folder") and "Traceback" not in p.stderr
    assert "hydra.run.dir=<the killed run's folder>" in lines[-1]


# ------------------------------------------------------------------------- the pool on its own
def _all_done(pool, futures) -> None:
    deadline = time.time() + 120
    while not all(f.done() for f in futures) and time.time() < deadline:
        pool.wait([f for f in futures if not f.done()], timeout=5)


def test_a_dead_worker_breaks_only_its_own_slot():
    """loky fails every job of an executor whose worker died and kills the others: each slot is an
    executor of its own, so the job beside it finishes and the queued ones run on a fresh worker."""
    from src.sweeps.pool import SlotPool, WorkerDied
    from tests.pool_jobs import die, sleep_pid

    pool = SlotPool(2)
    try:
        beside = pool.submit(sleep_pid, 3)
        dead = pool.submit(die)
        queued = [pool.submit(sleep_pid, 0) for _ in range(2)]
        _all_done(pool, [beside, dead, *queued])
        assert isinstance(dead.exception(), WorkerDied) and "SIGKILL" in str(dead.exception())
        assert isinstance(beside.result(), int) and all(isinstance(f.result(), int) for f in queued)
    finally:
        pool.shutdown()


def test_a_retired_worker_is_replaced_in_its_slot():
    """A worker retiring after a CUDA error (src/sweeps/slots.py) leaves its slot usable."""
    from src.sweeps.pool import SlotPool
    from tests.pool_jobs import retire_and_report, sleep_pid

    pool = SlotPool(1)
    try:
        first = pool.submit(retire_and_report)
        later = [pool.submit(sleep_pid, 0) for _ in range(2)]
        _all_done(pool, [first, *later])
        pid, retired = first.result()
        assert retired is True and pid not in {f.result() for f in later}
    finally:
        pool.shutdown()
