"""Hydra callback for sweeps (``python train.py -m ...``), configured in conf/hydra/default.yaml.

In the launching process:
- ``on_multirun_start``: tells the parallel launcher's workers which GPUs there are and how many
  jobs share the machine, starts a live one-line summary (jobs done / running / failed, ETA) and
  keeps the installed package list in ``environment.txt`` (src/provenance.py);
- ``on_multirun_end``: writes the report (src/analysis/report.py) into the sweep directory, prints which
  jobs failed or diverged and then exits non-zero if any did.

In each job (a loky worker of the parallel launcher, conf/hydra/launcher/parallel.yaml):
- ``on_job_start``: the first job a worker runs takes a free GPU slot, a per-GPU file lock
  (``jobs_per_gpu`` slots per GPU), before any CUDA call, sets ``CUDA_VISIBLE_DEVICES`` to that
  GPU and keeps both for the worker's life (loky reuses workers, and CUDA reads the variable only
  once); it also divides the CPU cores between the parallel jobs (``torch.set_num_threads``) and
  records the slot in ``<run dir>/sweep_job.json``.

The live status line is src/sweeps/status.py, the GPU slots src/sweeps/slots.py.
``IMGCLS_FAKE_GPUS=0,1`` pretends the machine has those GPUs (for tests on the CPU).
"""
from __future__ import annotations

import atexit
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from src import env
from src.env import ENV_GPUS, ENV_N_JOBS, ENV_PARENT, ENV_PER_GPU, ENV_SLOT_DIR
from src.results import write_json
from src.sweeps import slots
from src.sweeps.slots import cpu_cores, take_slot, visible_gpus
from src.sweeps.status import LiveStatus, _console, count_jobs


# ---------------------------------------------------------------------------------- callback
class SweepCallback(Callback):
    """See the module docstring. Options (conf/hydra/default.yaml, ``hydra.callbacks.sweep.*``):
    report, metric, by, plot_vs, train_vs_test, live, interval_s, heartbeat_s, fail_on."""

    def __init__(self, report: bool = True, metric: str = "test/acc", by: list[str] | None = None, live: bool = True,
                 interval_s: float = 2.0, heartbeat_s: float = 60.0, fail_on: list[str] | None = None,
                 plot_vs: list[str] | None = None, train_vs_test: bool = False, reference: str | None = None,
                 adjust: str = "holm", alpha: float = 0.05, equivalence: float | None = None) -> None:
        self.report, self.metric, self.by = report, metric, list(by) if by else None
        self.plot_vs, self.train_vs_test = (list(plot_vs) if plot_vs is not None else None), train_vs_test
        # the comparisons' options, as `python -m src.analysis.report` takes them
        self.compare = dict(reference=reference, adjust=adjust, alpha=alpha, equivalence=equivalence)
        self.live, self.interval_s, self.heartbeat_s = live, interval_s, heartbeat_s
        self.fail_on = list(fail_on) if fail_on is not None else ["failed", "diverged"]
        self._status: LiveStatus | None = None

    def __getstate__(self) -> dict:  # the launcher pickles callbacks to its workers: no thread
        return {k: v for k, v in self.__dict__.items() if k != "_status"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._status = None

    # ------------------------------------------------------------------ launching process
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        from src.tracking.sweep import sweep_start

        sweep_start(config)  # MLflow/W&B loggers: packages present, the sweep's parent run (src/tracking/)
        from src.provenance import write_environment

        write_environment(sweep_dir)  # the installed packages, once per sweep folder (runs record versions)
        if _is_parallel(config):
            n_jobs = int(config.hydra.launcher.n_jobs)
            n_jobs = cpu_cores() if n_jobs < 0 else n_jobs
            gpus = visible_gpus()
            os.environ[ENV_GPUS] = ",".join(gpus)
            os.environ[ENV_N_JOBS] = str(n_jobs)
            os.environ[ENV_PER_GPU] = str(int(OmegaConf.select(config, "jobs_per_gpu", default=1) or 1))
            os.environ[ENV_PARENT] = str(os.getpid())
            # workers inherit this: torch.cuda.is_available()/device_count() then ask NVML and leave
            # the CUDA driver alone until the worker's slot has set CUDA_VISIBLE_DEVICES
            os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
            if env.get(ENV_SLOT_DIR) is None:  # one folder per launching process, removed when it exits
                os.environ[ENV_SLOT_DIR] = str(Path(tempfile.gettempdir()) /
                                               f"imgcls-gpu-slots-{os.getuid()}-{os.getpid()}")
                atexit.register(shutil.rmtree, env.get(ENV_SLOT_DIR), ignore_errors=True)
            where = f"GPUs {','.join(gpus)} x {env.get(ENV_PER_GPU)} job(s) each" if gpus else \
                f"CPU only, {max(1, cpu_cores() // n_jobs)} torch thread(s) per job"
            _console().print(f"[cyan]\\[sweep][/cyan] {n_jobs} parallel job(s): {where}; outputs in {sweep_dir}")
        if self.live:
            self._status = LiveStatus(sweep_dir, count_jobs(config), self.interval_s, self.heartbeat_s)
            self._status.start()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        if self._status is not None:
            self._status.stop()
            self._status.show(force=True)
        console = _console()
        from src.sweeps.optuna_sweep import is_optuna

        search = is_optuna(config)  # an Optuna search wrote its own report (src/sweeps/optuna_report.py)
        if self.report and not search:
            try:
                from src.analysis.report import write_report

                # the configured reference is a preference (a preset's): a sweep that does not vary its
                # key compares with its first setting, and the table says so
                kwargs = dict(console=console, show_problems=False, plot_vs=self.plot_vs, reference_is_default=True,
                              **getattr(self, "compare", {}))
                try:
                    s = write_report(sweep_dir, self.metric, self.by, train_vs_test=self.train_vs_test, **kwargs)
                except FileNotFoundError as e:  # no CSV logs for train_vs_test: still the table
                    if not self.train_vs_test:
                        raise
                    console.print(f"[yellow]\\[sweep] {e}[/yellow]")
                    s = write_report(sweep_dir, self.metric, self.by, **kwargs)
                console.print(f"[cyan]\\[sweep][/cyan] table and figures in {sweep_dir}/{', '.join(s.files)}")
            except Exception as e:  # a broken report must not hide the sweep's outcome
                console.print(f"[red]\\[sweep] report failed:[/red] {type(e).__name__}: {e}")
        from src.tracking.sweep import sweep_end

        sweep_end(config, sweep_dir)  # the summary table to MLflow/W&B, if configured; never raises
        # in a search a diverged trial (too high an lr) is a result Optuna learns from, not a fault
        fail_on = [s for s in self.fail_on if not (search and s == "diverged")]
        # a job lost with its worker (src/sweeps/launch.py) is a failure too, whatever fail_on lists
        bad = _bad_runs(sweep_dir, fail_on + [s for s in ("killed", "interrupted") if "failed" in fail_on])
        if bad:
            console.print(f"[red]\\[sweep] {len(bad)} job(s) did not complete:[/red]")
            for run, status, error in bad:
                console.print(f"  [red]{status}[/red] {run}: {error or ''}", soft_wrap=True)
            from rich.markup import escape

            from src.sweeps.launch import resume_command

            console.print("[red]\\[sweep] exiting with status 1[/red] (to keep completed jobs and retry the rest: "
                          f"{escape(resume_command(sweep_dir))})", soft_wrap=True)
            sys.stdout.flush()
            raise SystemExit(1)

    # ---------------------------------------------------------------------------- each job
    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not _is_parallel(config) or env.get(ENV_PARENT) in (None, str(os.getpid())):
            return  # not a parallel-launcher worker (single run, sequential sweep, SLURM, Ray)
        gpus = [g for g in env.get(ENV_GPUS, "").split(",") if g]
        slot = take_slot(gpus, int(env.get(ENV_PER_GPU, "1")), int(env.get(ENV_N_JOBS, "1")),
                         Path(env.get(ENV_SLOT_DIR)))
        _write_job_record(config, {**slot, "pid": os.getpid(), "start": time.time(), "end": None})

    def on_job_end(self, config: DictConfig, job_return: Any = None, **kwargs: Any) -> None:
        if slots._slot is None:
            return
        path = _job_record_path(config)
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError, TypeError):
            return
        record["end"] = time.time()
        write_json(path, record)


def _is_parallel(config: DictConfig) -> bool:
    from hydra.types import RunMode

    try:
        mode = config.hydra.mode
        target = str(OmegaConf.select(config, "hydra.launcher._target_", default=""))
    except Exception:
        return False
    return mode == RunMode.MULTIRUN and any(k in target.lower() for k in ("joblib", "parallel_launcher"))


def _job_record_path(config: DictConfig) -> Path:
    return Path(str(config.hydra.runtime.output_dir)) / "sweep_job.json"


def _write_job_record(config: DictConfig, record: dict) -> None:
    try:
        write_json(_job_record_path(config), record)
    except OSError:
        pass




def _bad_runs(sweep_dir: Path, statuses: list[str]) -> list[tuple[str, str, str | None]]:
    out = []
    for mj in sorted(sweep_dir.rglob("metrics.json")):
        try:
            data = json.loads(mj.read_text())
        except (OSError, ValueError):
            out.append((mj.parent.relative_to(sweep_dir).as_posix(), "failed", "unreadable metrics.json"))
            continue
        if data.get("status") in statuses:
            out.append((mj.parent.relative_to(sweep_dir).as_posix(), data["status"], data.get("error")))
    return out
