"""How a search hands single jobs to the machine without a batch barrier.

With the parallel launcher (conf/hydra/launcher/parallel.yaml) a job goes straight to the pool of
loky workers the launcher itself uses (src/sweeps/pool.py), through hydra-joblib-launcher's own
``execute_job``: the workers, their GPU slots (taken in ``on_job_start``, src/sweeps/callback.py)
and their logging are those of a grid sweep, but a new job starts the moment any job ends.
hydra-optuna-sweeper instead launches ``n_jobs`` trials at a time and waits for the slowest.

Any other launcher (sequential, SLURM, Ray) gets its jobs in batches of ``n_jobs`` through its
own ``launch``: there the batch is the launcher's unit of work.
"""
from __future__ import annotations

import concurrent.futures as cf
from pathlib import Path
from typing import Any, Sequence

from omegaconf import OmegaConf


def is_joblib(launcher: Any) -> bool:
    # a subclass check by name: our ParallelLauncher extends it, and the plugin need not be imported
    return any(c.__name__ == "JoblibLauncher" for c in type(launcher).__mro__)


class PoolRunner:
    """Jobs on loky workers, one future each (src/sweeps/pool.py: a dead worker costs its own job)."""

    def __init__(self, launcher: Any, n_jobs: int):
        from hydra.core.singleton import Singleton
        from hydra.core.utils import configure_log, setup_globals

        from src.sweeps.pool import shared_pool

        setup_globals()
        cfg = launcher.config
        configure_log(cfg.hydra.hydra_logging, cfg.hydra.verbose)
        Path(str(cfg.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        self.launcher, self.n_jobs = launcher, n_jobs
        self.singleton_state = Singleton.get_state()
        self.pool = shared_pool(n_jobs)

    def submit(self, idx: int, overrides: Sequence[str]) -> cf.Future:
        from hydra_plugins.hydra_joblib_launcher._core import execute_job

        la = self.launcher
        return self.pool.submit(execute_job, idx, list(overrides), la.hydra_context, la.config,
                                la.task_function, self.singleton_state)

    def wait(self, futures) -> set:
        return self.pool.wait(futures)


class BatchRunner:
    """Jobs through ``launcher.launch``: submitted jobs wait until ``wait`` launches them together."""

    def __init__(self, launcher: Any, n_jobs: int):
        self.launcher, self.n_jobs = launcher, n_jobs
        self.pending: list[tuple[int, list[str], cf.Future]] = []

    def submit(self, idx: int, overrides: Sequence[str]) -> cf.Future:
        future: cf.Future = cf.Future()
        self.pending.append((idx, list(overrides), future))
        return future

    def wait(self, futures) -> set:
        batch, self.pending = self.pending, []
        if batch:
            try:
                returns = self.launcher.launch([ov for _, ov, _ in batch], initial_job_idx=batch[0][0])
                for (_, _, f), ret in zip(batch, returns):
                    f.set_result(ret)
            except BaseException as e:  # the launcher itself broke: every job of the batch failed
                for _, _, f in batch:
                    if not f.done():
                        f.set_exception(e)
        return {f for f in futures if f.done()}


def make_runner(launcher: Any, n_jobs: int):
    return PoolRunner(launcher, n_jobs) if is_joblib(launcher) else BatchRunner(launcher, n_jobs)


def launcher_jobs(launcher: Any) -> int:
    """The parallel launcher's n_jobs (GPUs × jobs_per_gpu, resolved); 1 for other launchers."""
    if not is_joblib(launcher):
        return 1
    joblib = launcher.joblib if isinstance(launcher.joblib, dict) else OmegaConf.to_container(launcher.joblib, resolve=True)
    n = int(joblib.get("n_jobs") or 1)
    if n < 0:
        from src.sweeps.slots import cpu_cores

        n = cpu_cores()
    return max(1, n)


def job_outcome(future: cf.Future, objectives: list[str]) -> dict:
    """A finished job as ``{status, values, run_dir, error, metrics}``: read from the run's
    metrics.json (the project's record of every outcome), else from the task's return value (an
    app that writes none)."""
    import json
    import math

    try:
        ret = future.result()
    except BaseException as e:
        return {"status": "failed", "values": None, "run_dir": None, "error": f"{type(e).__name__}: {e}", "metrics": {}}
    run_dir = None
    try:
        run_dir = Path(str(ret.hydra_cfg.hydra.runtime.output_dir))
    except Exception:
        pass
    metrics: dict = {}
    if run_dir is not None and (run_dir / "metrics.json").exists():
        try:
            metrics = json.loads((run_dir / "metrics.json").read_text())
        except (OSError, ValueError):
            metrics = {"status": "failed", "error": "unreadable metrics.json"}
    out = {"run_dir": str(run_dir) if run_dir else None, "metrics": metrics, "error": metrics.get("error")}
    if not metrics:
        if ret.status.name != "COMPLETED":
            return {**out, "status": "failed", "values": None, "error": f"{type(ret._return_value).__name__}: "
                    f"{' '.join(str(ret._return_value).split())[:300]}"}
        metrics = {"status": "completed", objectives[0]: ret.return_value} if len(objectives) == 1 else {}
    status = metrics.get("status", "completed")
    if status != "completed":
        return {**out, "status": status, "values": None}
    values = [metrics.get(k) for k in objectives]
    if any(not isinstance(v, (int, float)) or not math.isfinite(v) for v in values):
        missing = [k for k, v in zip(objectives, values) if not isinstance(v, (int, float))]
        return {**out, "status": "failed", "values": None,
                "error": f"no value for {', '.join(missing)} in metrics.json" if missing else "objective is not finite"}
    return {**out, "status": "completed", "values": [float(v) for v in values]}
