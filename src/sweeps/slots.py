"""GPU slots of the parallel sweep launcher, and the worker-side rules that keep a sweep healthy.

Each loky worker takes one slot (a per-GPU file lock, ``jobs_per_gpu`` slots per GPU) before any
CUDA call, sets ``CUDA_VISIBLE_DEVICES`` once and keeps both for its life; it gets its share of
the host's cores for torch threads and Inductor's compile pool; a worker whose job hit a CUDA
error retires after that job (its CUDA context is unusable), and loky starts a fresh one.

``IMGCLS_FAKE_GPUS=0,1`` pretends the machine has those GPUs (for tests on the CPU).
"""
from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from typing import Any

from src import env
from src.env import ENV_COMPILE_THREADS_SET, FAKE_GPUS


# ------------------------------------------------------------------------- GPUs and n_jobs
def visible_gpus() -> list[str]:
    """GPU ids this process may use, as CUDA_VISIBLE_DEVICES would name them. Never initialises
    CUDA (torch counts devices through NVML)."""
    fake = env.get(FAKE_GPUS)
    if fake is not None:
        return [g.strip() for g in fake.split(",") if g.strip()]
    try:
        import torch

        n = torch.cuda.device_count()
    except Exception:
        return []
    if n <= 0:
        return []
    cvd = os.environ.get("CUDA_VISIBLE_DEVICES")
    if cvd:
        return [g.strip() for g in cvd.split(",") if g.strip()][:n]
    return [str(i) for i in range(n)]


def cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def cpu_parallel_jobs(cores: int | None = None) -> int:
    """CPU-only machines: jobs of 2 threads each (2 jobs of 1 thread on a 2-core machine)."""
    cores = cores or cpu_cores()
    return max(1, cores // 2) if cores > 2 else cores


def parallel_jobs(jobs_per_gpu: Any = 1) -> int:
    """The parallel launcher's n_jobs: GPUs × jobs_per_gpu, or cpu_parallel_jobs() without GPUs."""
    try:
        k = int(jobs_per_gpu)
    except (TypeError, ValueError):
        k = 0
    if k < 1 or str(k) != str(jobs_per_gpu).strip():
        raise ValueError(f"jobs_per_gpu={jobs_per_gpu} is not valid: use an integer >= 1")
    gpus = visible_gpus()
    return len(gpus) * k if gpus else cpu_parallel_jobs()


# ------------------------------------------------------------------------------ GPU slots
_slot: dict | None = None   # this worker's slot, taken once, kept (with its lock) for the process's life
_slot_fd: int | None = None


def _try_lock(path: Path) -> int | None:
    import fcntl

    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def take_slot(gpus: list[str], jobs_per_gpu: int, n_jobs: int, lock_dir: Path) -> dict:
    """This process's slot: the first free (slot, GPU) pair, round the GPUs first so that the
    first len(gpus) workers land on different GPUs. Without GPUs, one of n_jobs CPU slots."""
    global _slot, _slot_fd
    if _slot is not None:
        return _slot
    lock_dir.mkdir(parents=True, exist_ok=True)
    pairs = [(s, g) for s in range(jobs_per_gpu) for g in gpus] if gpus else [(s, None) for s in range(n_jobs)]
    for s, g in pairs:
        fd = _try_lock(lock_dir / (f"gpu{g}-slot{s}.lock" if g is not None else f"cpu-slot{s}.lock"))
        if fd is not None:
            _slot, _slot_fd = {"gpu": g, "slot": s, "locked": True}, fd
            break
    else:  # more workers than slots (hydra.launcher.n_jobs set by hand): share, but say so
        s, g = pairs[os.getpid() % len(pairs)]
        warnings.warn(f"all {len(pairs)} GPU slots are taken (more parallel jobs than GPUs x jobs_per_gpu); "
                      f"this worker shares GPU {g}")
        _slot = {"gpu": g, "slot": s, "locked": False}
    if _slot["gpu"] is not None:
        try:
            import torch

            if torch.cuda.is_initialized():
                warnings.warn("CUDA was initialised before the GPU slot was taken: CUDA_VISIBLE_DEVICES "
                              "cannot take effect in this worker")
        except Exception:
            pass
        os.environ["CUDA_VISIBLE_DEVICES"] = _slot["gpu"]
        _slot["gpu_uuid"] = gpu_uuid(_slot["gpu"])
    threads = max(1, cpu_cores() // max(1, n_jobs))
    share_compile_threads(threads)
    try:
        import torch

        torch.set_num_threads(threads)
    except Exception:
        pass
    _slot["threads"] = threads
    _slot["compile_threads"] = int(os.environ.get("TORCHINDUCTOR_COMPILE_THREADS", threads))
    return _slot


def share_compile_threads(threads: int) -> None:
    """Inductor compiles with a pool of up to 32 processes per worker; n parallel jobs would start
    n pools on one host. Each gets its share of the cores, as torch threads do (unless the user set
    TORCHINDUCTOR_COMPILE_THREADS). Inductor reads the variable when its config is imported, so an
    already imported config is set too."""
    if "TORCHINDUCTOR_COMPILE_THREADS" in os.environ and env.get(ENV_COMPILE_THREADS_SET) != "1":
        return
    os.environ["TORCHINDUCTOR_COMPILE_THREADS"] = str(threads)
    os.environ[ENV_COMPILE_THREADS_SET] = "1"
    config = sys.modules.get("torch._inductor.config")
    if config is not None:
        config.compile_threads = threads


def gpu_uuid(gpu: str) -> str | None:
    """The UUID of GPU ``gpu`` (an index or a UUID as CUDA_VISIBLE_DEVICES names it), read through
    NVML so that CUDA stays uninitialised; None without NVML (CPU machines, fake GPUs)."""
    if not gpu.isdigit():
        return gpu if gpu.startswith(("GPU-", "MIG-")) else None
    try:
        import torch

        uuids = torch.cuda._raw_device_uuid_nvml()
    except Exception:
        return None
    return uuids[int(gpu)] if uuids and int(gpu) < len(uuids) else None


# ---------------------------------------------------------------------- poisoned workers
def is_cuda_error(exc: BaseException) -> bool:
    """A CUDA error that leaves the process's CUDA context unusable (illegal address, launch
    failure, ECC...). Out-of-memory is not one: the next job can run."""
    if type(exc).__name__ == "OutOfMemoryError":
        return False
    if type(exc).__name__ == "AcceleratorError":
        return True
    text = str(exc)
    return any(k in text for k in ("CUDA error", "CUBLAS_STATUS", "CUDNN_STATUS", "cudaError", "CUDA driver error"))


def retire_worker() -> bool:
    """Make this loky worker exit cleanly once its current job's result is sent: its loop's next
    ``call_queue.get()`` returns None, loky's own shutdown signal, so the worker reports its exit,
    the executor starts a replacement for the jobs still queued and the GPU slot's lock is released
    with the process. (Exiting outright would break the executor and cancel every pending job.)
    False when this process is no loky worker."""
    frame = sys._getframe()
    while frame is not None:
        if frame.f_code.co_name == "_process_worker" and "call_queue" in frame.f_locals:
            frame.f_locals["call_queue"].get = lambda *args, **kwargs: None
            return True
        frame = frame.f_back
    return False
