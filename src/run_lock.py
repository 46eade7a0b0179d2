"""One run per run folder at a time: rank 0 of a run holds an flock on ``<run dir>/.run.lock``
(with its PID and host written in it) from the run-dir checks (src/runs.py) to the end of the run.

Two identical commands started together used to write one folder's metrics.csv and event files
at once and both fail. The OS drops an flock when its process dies, so a killed run's stale lock
is simply taken over; the PID/host text is only there to name the holder in the refusal.
"""
from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from src.errors import UserError

LOCK_NAME = ".run.lock"
_held: dict[str, int] = {}   # run dir -> fd of the lock this process holds on it


def lock_run_dir(out: Path, alongside: bool = False) -> None:
    """Take the run folder's lock or refuse in one line naming the holder. A process that already
    holds it keeps it (tests and loky workers run several jobs in one process; a second flock on a
    new fd of the same file would refuse this very process). ``alongside``: keep the locks already
    held (a fused seed pack holds every member's folder, src/packs/train.py)."""
    import fcntl

    key = str(Path(out).resolve())
    if key in _held:
        return
    if not alongside:
        release_run_dirs()  # a loky worker's next job: the previous job's folder is free again
    out.mkdir(parents=True, exist_ok=True)
    fd = os.open(out / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = _holder(fd)
        os.close(fd)
        raise UserError(f"{out} is in use by another run ({holder}): wait for it to end, or choose another "
                        f"hydra.run.dir / hydra.sweep.dir") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                              "since": time.strftime("%Y-%m-%d %H:%M:%S")}).encode() + b"\n", 0)
    _held[key] = fd


def release_run_dirs() -> None:
    """Drop every run-folder lock this process holds (the run ended; the lock file stays)."""
    import fcntl

    for key in list(_held):
        fd = _held.pop(key)
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


def _holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        info = {}
    if not info:
        return "PID unknown"
    return f"PID {info.get('pid')} on host {info.get('host')}, since {info.get('since')}"
