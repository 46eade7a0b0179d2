"""How the parallel launcher (hydra_plugins/imgcls_parallel_launcher/, conf/hydra/launcher/parallel.yaml)
runs a sweep's jobs: on a :class:`~src.sweeps.pool.SlotPool`, one job per worker at a time, with
the hydra-joblib-launcher's own ``execute_job`` (same workers, GPU slots and logging as before).

Faults stay with their job:
- a worker that dies (kill -9, the OOM killer, a segfault) costs its own job only: the launching
  process writes that job's metrics.json with status ``killed`` and the cause, retries it once
  with resume=true if ``hydra.launcher.retry_killed`` says so, and the other jobs run on; the
  table then lists it and the sweep exits non-zero (src/sweeps/callback.py);
- Ctrl-C stops the workers, marks the jobs in flight ``interrupted`` (unless they wrote their own
  metrics.json) and prints one line with the command that resumes the sweep; exit status 130.

With ``seeds_per_job`` other than 1 the jobs that differ only in their seed run as fused seed packs
(src/sweeps/packing.py): one submitted job (one worker, one GPU slot) per pack, and the faults above
apply to every member of the pack (a killed pack is retried whole, with resume=true; its completed
members are kept). Hydra's sweeper still gets one JobReturn per original job, in its order.
"""
from __future__ import annotations

import math
import shlex
import signal
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from src.sweeps.pool import WorkerDied

INTERRUPTED_EXIT = 130  # the shell's status for a process ended by SIGINT


def launch_jobs(launcher: Any, job_overrides: Sequence[Sequence[str]], initial_job_idx: int, retry_killed: int = 0):
    from src.sweeps.packing import member_returns, pack_overrides, plan_packs
    from src.sweeps.runners import PoolRunner, launcher_jobs

    runner = PoolRunner(launcher, launcher_jobs(launcher))  # workers kept from one batch of jobs to the next
    pool, sweep_dir = runner.pool, Path(str(launcher.config.hydra.sweep.dir))
    jobs = {initial_job_idx + i: list(ov) for i, ov in enumerate(job_overrides)}
    # leader idx -> the jobs its one submitted job runs (just itself, unless seeds_per_job packs seeds)
    packs = {initial_job_idx + p[0]: [initial_job_idx + i for i in p]
             for p in plan_packs(job_overrides, launcher.config.get("seeds_per_job", 1), runner.n_jobs)}
    futures: dict = {}   # our future -> (leader idx, overrides as submitted, submitted at)
    retries = dict.fromkeys(packs, 0)
    results: dict[int, Any] = {}
    metric = str(launcher.config.get("optimized_metric", "test/acc"))

    def submit(idx: int, overrides: list[str]) -> None:
        f = runner.submit(idx, overrides)
        futures[f] = (idx, overrides, time.time())

    def members(idx: int, submitted: list[str]) -> list[tuple[int, list[str]]]:
        # a lone job is recorded with the overrides it ran with (resume=true once retried), as always
        return [(idx, submitted)] if len(packs[idx]) == 1 else [(m, jobs[m]) for m in packs[idx]]

    def what(idx: int) -> str:
        return f"job #{idx}" if len(packs[idx]) == 1 else f"pack #{idx} ({len(packs[idx])} seeds)"

    try:
        for idx, pack in packs.items():
            submit(idx, pack_overrides(job_overrides, [m - initial_job_idx for m in pack]))
        while futures:
            for f in pool.wait(list(futures)):
                idx, ov, started = futures.pop(f)
                exc = f.exception()
                if exc is None:
                    if len(packs[idx]) == 1:
                        results[idx] = f.result()
                    else:  # one JobReturn per member, read from its own run folder
                        results.update(member_returns(f.result(), members(idx, ov), metric,
                                                      lambda o, i: job_dir(launcher, o, i)))
                    continue
                if not isinstance(exc, WorkerDied):  # raised past train()'s own record (a refused run
                    pool.shutdown(kill=True)         # folder): ends the sweep, as joblib.Parallel did
                    raise exc
                note, status = str(exc), "killed"
                # a worker that died after writing its result (in teardown) keeps that result; so does
                # each member of a pack that completed before its worker died
                run_dirs = {m: record_outcome(launcher, m_ov, m, status, note, unless_written_since=started)
                            for m, m_ov in members(idx, ov)}
                if retries[idx] < retry_killed:
                    retries[idx] += 1
                    _say(f"{what(idx)} was killed ({run_dirs[idx] or ' '.join(ov)}): retrying it with resume=true")
                    submit(idx, [*(o for o in ov if not o.lstrip("+").startswith("resume=")), "resume=true"])
                    continue
                _say(f"{what(idx)} {status}: {note}")
                if len(packs[idx]) == 1:
                    results[idx] = _failed_return(ov, run_dirs[idx])
                else:  # NaN for the members it cost, the value of those that completed before
                    results.update(member_returns(_failed_return(ov, None), members(idx, ov), metric,
                                                  lambda o, i: run_dirs[i]))
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
        running = [futures[f] for f in pool.in_flight() if f in futures]
        in_flight = sum(len(packs[idx]) for idx, _, _ in running)  # jobs, a pack's members each counted
        waiting = sum(len(packs[idx]) for idx, _, _ in futures.values()) - in_flight
        pool.shutdown(kill=True)
        for idx, ov, started in running:
            for m, m_ov in members(idx, ov):
                record_outcome(launcher, m_ov, m, "interrupted", "the sweep was interrupted (Ctrl-C) during this job",
                               unless_written_since=started)
        _say(f"interrupted: {in_flight} job(s) in flight marked interrupted, {waiting} not started; "
             f"continue with: {resume_command(sweep_dir)}")
        raise SystemExit(INTERRUPTED_EXIT) from None
    return [results[idx] for idx in jobs]


def job_dir(launcher: Any, overrides: Sequence[str], idx: int) -> Path | None:
    """The run folder Hydra gives this job, computed in the launching process as the worker's
    ``execute_job`` does (the sweep config's cache keeps ${now:} the same)."""
    from omegaconf import open_dict

    try:
        sc = launcher.hydra_context.config_loader.load_sweep_config(launcher.config, list(overrides))
        with open_dict(sc):
            sc.hydra.job.num = idx
        return Path(str(sc.hydra.sweep.dir)) / str(sc.hydra.sweep.subdir)
    except Exception:
        return None


def record_outcome(launcher: Any, overrides: Sequence[str], idx: int, status: str, error: str,
                   unless_written_since: float | None = None) -> Path | None:
    """metrics.json for a job whose worker could not write one (it died, or was stopped); kept as it
    is if the job wrote its own after ``unless_written_since``, and a result that ended well is never
    overwritten, however old (resume=true kept it: a pack member completed in an earlier try)."""
    from src.results import ENDED_WELL, write_json
    from src.runs import read_status
    from src.sweeps.packing import seed_of

    run_dir = job_dir(launcher, overrides, idx)
    if run_dir is None:
        return None
    mj = run_dir / "metrics.json"
    prev = read_status(run_dir) or {}
    if prev.get("status") in ENDED_WELL:
        return run_dir
    if unless_written_since is not None and prev.get("status") and mj.stat().st_mtime >= unless_written_since:
        return run_dir  # the job ended on its own before its worker died or was stopped
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(mj, {"status": status, "error": error, "overrides": list(overrides), "seed": seed_of(overrides)})
    except OSError:
        pass
    return run_dir


def _failed_return(overrides: Sequence[str], run_dir: Path | None):
    """What Hydra's sweeper gets for a lost job: completed with NaN, as train() returns for a failed
    job in a sweep (a FAILED JobReturn would make Hydra end the sweep); metrics.json says why."""
    from hydra.core.utils import JobReturn, JobStatus

    return JobReturn(overrides=list(overrides), status=JobStatus.COMPLETED, _return_value=math.nan,
                     working_dir=str(run_dir) if run_dir else None)


def resume_command(sweep_dir: Path) -> str:
    """The command line of this sweep, into the same sweep folder, with resume=true."""
    args = [a for a in sys.argv[1:] if not a.lstrip("+").startswith(("resume=", "hydra.sweep.dir="))]
    return shlex.join(["python", sys.argv[0] if sys.argv and sys.argv[0] else "train.py", *args,
                       f"hydra.sweep.dir={sweep_dir}", "resume=true"])


def _say(text: str) -> None:
    print(f"[sweep] {text}", file=sys.stderr, flush=True)
