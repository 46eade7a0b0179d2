"""A pool of loky workers in which one dead worker costs only its own job.

loky's executor treats a worker that dies (kill -9, the OOM killer, a segfault) as a broken pool:
it fails every pending job with TerminatedWorkerError and kills the other workers, so one dead
worker used to end a whole sweep. Here each slot is an executor of its own with one worker: a
death breaks that slot alone; its job fails with :class:`WorkerDied` and the slot gets a fresh
executor for the next job. Workers stay alive between jobs, as with loky's reusable executor (the
GPU slot and compile caches of src/sweeps/slots.py last for a worker's life).

Workers ignore SIGINT: Ctrl-C reaches the launching process, which stops them itself
(src/sweeps/launch.py) instead of every job printing its own traceback.
"""
from __future__ import annotations

import concurrent.futures as cf
import re
import signal
from collections import deque
from typing import Any, Callable


class WorkerDied(RuntimeError):
    """The worker process running a job died before the job returned."""


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def death_note(exc: BaseException) -> str:
    """loky's message as one line: which signal or exit code ended the worker."""
    m = re.search(r"exit codes of the workers are \{([^}]*)\}", str(exc))
    codes = m.group(1) if m else "unknown exit code"
    return (f"the worker process died during this job ({codes}: kill -9, the OOM killer or a crash); "
            f"rerun the sweep with resume=true to continue it")


class SlotPool:
    """``n`` one-worker executors; jobs wait in a queue until a slot is free. Driven from the
    launching process's thread: ``submit`` and ``wait`` move finished jobs out and queued ones in."""

    def __init__(self, n: int):
        self.n = max(1, int(n))
        self.executors: list[Any] = [None] * self.n
        self.running: dict[int, tuple[cf.Future, cf.Future]] = {}   # slot -> (loky future, our future)
        self.queued: deque = deque()

    def submit(self, fn: Callable, *args: Any) -> cf.Future:
        outer: cf.Future = cf.Future()
        self.queued.append((outer, fn, args))
        self._pump()
        return outer

    def wait(self, futures, timeout: float | None = None) -> set:
        """The given futures that are done, once at least one is (or ``timeout`` passed)."""
        futures = list(futures)
        while True:
            self._pump()
            done = {f for f in futures if f.done()}
            inner = [i for i, _ in self.running.values()]
            if done or not inner:
                return done
            _, pending = cf.wait(inner, timeout=timeout, return_when=cf.FIRST_COMPLETED)
            if len(pending) == len(inner):  # timed out
                self._pump()
                return {f for f in futures if f.done()}

    def in_flight(self) -> list[cf.Future]:
        return [outer for _, outer in self.running.values()]

    def shutdown(self, kill: bool = False) -> None:
        """Stop every worker; ``kill`` ends running jobs at once (Ctrl-C) and fails queued ones."""
        for outer, _, _ in self.queued:
            outer.cancel()
        self.queued.clear()
        for i, ex in enumerate(self.executors):
            if ex is not None:
                ex.shutdown(wait=not kill, kill_workers=kill)
            self.executors[i] = None

    # ---------------------------------------------------------------------------- internals
    def _executor(self, i: int):
        if self.executors[i] is None:
            from joblib.externals.loky import ProcessPoolExecutor

            self.executors[i] = ProcessPoolExecutor(max_workers=1, initializer=_ignore_sigint)
        return self.executors[i]

    def _pump(self) -> None:
        from concurrent.futures.process import BrokenProcessPool

        for i, (inner, outer) in list(self.running.items()):
            if not inner.done():
                continue
            del self.running[i]
            exc = inner.exception()
            if exc is None:
                outer.set_result(inner.result())
            elif isinstance(exc, BrokenProcessPool):  # loky's TerminatedWorkerError is one
                self.executors[i].shutdown(wait=False)  # loky already killed what was left of it
                self.executors[i] = None
                outer.set_exception(WorkerDied(death_note(exc)))
            else:
                outer.set_exception(exc)
        for i in range(self.n):
            while i not in self.running and self.queued:
                outer, fn, args = self.queued.popleft()
                if outer.set_running_or_notify_cancel():
                    self.running[i] = (self._executor(i).submit(fn, *args), outer)


_shared: dict[int, SlotPool] = {}


def shared_pool(n: int) -> SlotPool:
    """One pool per size for the process's life, as loky's reusable executor was: a search's loop and
    its confirmation runs share the workers (and the GPU slots each worker holds for its life)."""
    if n not in _shared:
        _shared[n] = SlotPool(n)
    return _shared[n]
