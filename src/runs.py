"""A run directory's life: refuse to overwrite a finished run, skip it on resume, and record how a
run ended (completed, debug, diverged, failed) in metrics.json so no outcome is ever lost."""
from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import sys
from pathlib import Path

from omegaconf import DictConfig

from src.ddp.ranks import is_launch_rank_zero
from src.errors import UserError
from src.results import ENDED_WELL, task_overrides, write_json
from src.run_lock import lock_run_dir, release_run_dirs


STORAGE_ERRNOS = {errno.ENOSPC, errno.EACCES, errno.EROFS, errno.EDQUOT, errno.EPERM}


def read_status(run_dir: Path) -> dict | None:
    try:
        data = json.loads((Path(run_dir) / "metrics.json").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def previous_result(cfg: DictConfig) -> dict | None:
    """A completed result to reuse (resume=true), or None to train. Refuses to overwrite one.
    Only rank 0 guards the run dir: DDP ranks > 0 are started after rank 0 passed this check, into
    the same dir (src/ddp/), and must not refuse it or delete its files."""
    out = Path(cfg.paths.output_dir)
    if not is_launch_rank_zero():
        return None
    lock_run_dir(out)  # held until recorded_outcome ends: one run per folder (src/run_lock.py)
    try:
        kept = _previous_result(cfg, out)
    except BaseException:
        release_run_dirs()
        raise
    if kept is not None:  # nothing will be written: the folder is free again
        release_run_dirs()
    return kept


def _previous_result(cfg: DictConfig, out: Path) -> dict | None:
    prev = read_status(out)
    if prev and prev.get("status") == "debug":
        _clear_debug_run(out)
        return None
    if not prev or prev.get("status") != "completed":
        _check_unfinished(cfg, out, prev)
        return None
    if cfg.get("resume"):
        # kept only for the config it was trained with (src/run_config.py); overwrite=true trains again
        from src.run_config import differences, refusal, result_config

        diffs = differences(prev, result_config(cfg), task_overrides())
        if not diffs:
            return prev
        if not cfg.get("overwrite"):
            raise UserError(refusal(out, diffs))
    elif not cfg.get("overwrite"):
        raise UserError(f"{out} already holds a completed run: pass resume=true to keep it, "
                        f"overwrite=true to train again into it, or choose another hydra.run.dir")
    clear_leftovers(out)  # overwrite=true: the old run's result, log, checkpoints and events go too
    return None


def leftovers(out: Path) -> list[str]:
    """What an unfinished (killed, failed) run left in its folder that a new run would mix with its
    own: checkpoints (resume would continue from them), CSV rows and TensorBoard event files."""
    found = [p for p in (out / "checkpoints").glob("*") if p.is_file()]
    found += [p for p in [out / "csv" / "metrics.csv"] if p.exists()]
    found += sorted(out.glob("events.out.tfevents.*"))
    return [p.relative_to(out).as_posix() for p in found]


def clear_leftovers(out: Path) -> None:
    import shutil

    shutil.rmtree(out / "checkpoints", ignore_errors=True)
    for name in ["metrics.json", "csv/metrics.csv", *(p.name for p in out.glob("events.out.tfevents.*"))]:
        (out / name).unlink(missing_ok=True)


def _check_unfinished(cfg: DictConfig, out: Path, prev: dict | None) -> None:
    """A folder without a completed result: an unfinished run's leftovers are continued (resume=true,
    ckpt_path) or cleared (overwrite=true), never silently trained over; resume=true into a folder
    that holds nothing names the folder it needs."""
    if cfg.get("overwrite"):
        clear_leftovers(out)
        return
    left = leftovers(out)
    if left and not (cfg.get("resume") or cfg.get("ckpt_path")):
        status = (prev or {}).get("status", "killed: no metrics.json")
        shown = ", ".join(left[:3]) + (f" and {len(left) - 3} more" if len(left) > 3 else "")
        raise UserError(f"{out} holds an unfinished run ({status}; {shown}): pass resume=true to continue it, "
                        f"or overwrite=true to start over (its logs, checkpoints and events are cleared first)")
    if left and cfg.get("resume") and not cfg.get("ckpt_path") and not (out / "checkpoints" / "last.ckpt").exists():
        clear_leftovers(out)  # killed before its first checkpoint: nothing to continue, no old rows to keep
        print(f"[run] {out}: the unfinished run left no last.ckpt: training afresh", file=sys.stderr)
        return
    if cfg.get("resume") and not left and prev is None and _fresh_single_run_folder():
        raise UserError(f"resume=true continues a run in its folder, but this run was given the new folder {out}: "
                        f"add hydra.run.dir=<the killed run's folder>")


def _fresh_single_run_folder() -> bool:
    """A single run whose folder nobody chose (hydra.run.dir's default is a new timestamped one)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    try:
        hc = HydraConfig.get()
        given = [str(o) for o in [*hc.overrides.hydra, *hc.overrides.task]]
    except Exception:
        return False
    if hc.mode == RunMode.MULTIRUN:
        return False
    return not any(o.lstrip("+").startswith(("hydra.run.dir=", "paths.output_dir=")) for o in given)


def _clear_debug_run(out: Path) -> None:
    """A debug run (status "debug", src/results.py) is no result: a real run trains afresh over it,
    with resume=true too, and never continues from its checkpoints or appends to its log."""
    clear_leftovers(out)
    print(f"[run] {out} held a debug run (no result): training afresh", file=sys.stderr)


def resume_checkpoint(cfg: DictConfig) -> str | None:
    """``ckpt_path`` as given; with resume=true an unfinished run continues from its last.ckpt."""
    if cfg.get("ckpt_path"):
        return cfg.ckpt_path
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    return str(last) if cfg.get("resume") and last.exists() else None


def in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    try:
        return HydraConfig.get().mode == RunMode.MULTIRUN
    except ValueError:
        return False


def one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:500]


@contextlib.contextmanager
def recorded_outcome(cfg: DictConfig):
    """See _recorded_outcome; the run-folder lock taken in previous_result goes once the outcome is
    written (a loky worker's next job, or a test's next run, may use the folder)."""
    try:
        with _recorded_outcome(cfg):
            yield
    finally:
        release_run_dirs()
        if is_launch_rank_zero():  # rank 0 wrote the outcome; other ranks keep their own logs
            log_outcome(Path(cfg.paths.output_dir))


def log_outcome(out: Path) -> None:
    """The run's log (Hydra's <job>.log in the run folder) gets the run's outcome in one line: the
    status and its error or its test accuracy, so that it is never left empty."""
    import logging

    status = read_status(out) or {"status": "killed", "error": "no metrics.json was written"}
    detail = status.get("error") or ", ".join(f"{k}={status[k]:.4f}" for k in ("test/acc", "test/loss")
                                              if isinstance(status.get(k), (int, float)))
    level = logging.INFO if status.get("status") in ENDED_WELL | {"pruned"} else logging.ERROR
    logging.getLogger("train").log(level, "[outcome] %s%s (metrics.json in %s)", status.get("status"),
                                   f": {detail}" if detail else "", out)


@contextlib.contextmanager
def _recorded_outcome(cfg: DictConfig):
    """Write metrics.json for a run that diverged or raised. In a sweep the error stays with this
    job (the sweep goes on and reports it at the end); a single run re-raises it."""
    from src.lit.classifier import Diverged

    out = Path(cfg.paths.output_dir)
    if not is_launch_rank_zero():  # DDP rank > 0: rank 0 records the outcome; an error ends this rank
        yield
        return
    base = {"overrides": task_overrides(), "seed": cfg.get("seed")}
    try:
        yield
    except Diverged as d:
        write_json(out / "metrics.json", diverged_record(d, base))
        if not in_multirun():
            raise UserError(f"run diverged: {d}; last good checkpoint kept in {out / 'checkpoints'}; "
                            f"try a lower optimizer.lr") from None
        print(f"[diverged] {out}: {d}", file=sys.stderr)
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as e:
        with contextlib.suppress(OSError):  # the disk may be the problem
            write_json(out / "metrics.json", {"status": "failed", "error": one_line(e), **base})
        if not in_multirun():
            if isinstance(e, OSError) and e.errno in STORAGE_ERRNOS:
                raise UserError(f"cannot write {e.filename or out}: {e.strerror}; free space or choose a "
                                f"writable hydra.run.dir") from None
            raise
        print(f"[failed] {out}: {one_line(e)}", file=sys.stderr)
        from src.sweeps.slots import is_cuda_error, retire_worker

        if is_cuda_error(e) and retire_worker():  # its CUDA context would fail every later job too
            print(f"[failed] CUDA error: worker {os.getpid()} retires after this job; a fresh one takes its place",
                  file=sys.stderr)


def diverged_record(d, base: dict) -> dict:
    """metrics.json of a run whose loss became NaN/Inf (``d``: src.lit.classifier.Diverged)."""
    return {"status": "diverged", "error": str(d), "diverged_epoch": d.epoch, "diverged_step": d.step, **base}


FAILED_VALUE = math.nan  # what a failed or diverged sweep job returns to the sweeper
