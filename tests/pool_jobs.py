"""Jobs for the pool tests (tests/test_faults.py), in a module of their own: a loky worker imports
the module of the function it runs, and this one imports nothing heavy (the test modules import
torch, pandas and Hydra, which cost each fresh worker many seconds on a loaded machine)."""
from __future__ import annotations

import os
import signal
import time


def sleep_pid(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def retire_and_report() -> tuple[int, bool]:
    from src.sweeps.slots import retire_worker

    return os.getpid(), retire_worker()
