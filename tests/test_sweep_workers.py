"""The worker side of parallel sweeps: CUDA untouched until the GPU slot is set, compile pools
shared out, a worker with a broken CUDA context retired (and replaced by loky), and packed jobs
refused when their data copies would not fit on one GPU."""
from __future__ import annotations

import json
import os
import textwrap

import pytest

from tests.test_sweeps import cuda_log, job_records

PROBE = textwrap.dedent('''
    # Loaded by every Python process of the sweep (PYTHONPATH): logs each CUDA query with the
    # CUDA_VISIBLE_DEVICES it saw. Importing torch here initialises nothing on the GPU.
    import json, os, torch
    def _wrap(name):
        real = getattr(torch.cuda, name)
        def probe(*args, **kwargs):
            with open(os.environ["CUDA_PROBE_LOG"], "a") as f:
                f.write(json.dumps({"pid": os.getpid(), "call": name,
                                    "cvd": os.environ.get("CUDA_VISIBLE_DEVICES"),
                                    "nvml": os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK")}) + "\\n")
            return real(*args, **kwargs)
        setattr(torch.cuda, name, probe)
    for _n in ("is_available", "device_count", "get_device_capability", "mem_get_info", "init", "_lazy_init"):
        _wrap(_n)
''')


def test_workers_ask_for_cuda_only_after_their_slot(main_sweep):
    """test_sweeps.py's 6-job sweep on 2 fake GPUs, run with PROBE on PYTHONPATH (tests/conftest.py)."""
    out, p = main_sweep
    log = cuda_log(out)
    assert p.returncode == 0, p.stderr[-3000:]
    records = {r["pid"]: r for r in job_records(out)}
    assert len(records) >= 1
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    worker_calls = [c for c in calls if c["pid"] in records]
    assert worker_calls, "the probe saw no CUDA query in a worker (the precision resolver makes one)"
    for c in worker_calls:  # every query came after the slot had set CUDA_VISIBLE_DEVICES, via NVML
        assert c["cvd"] == records[c["pid"]]["gpu"], c
        assert c["nvml"] == "1", c
    for r in records.values():
        assert "gpu_uuid" in r  # None here: fake GPUs have no NVML entry
        assert r["compile_threads"] == r["threads"]


def test_compile_threads_are_shared_between_parallel_jobs(monkeypatch):
    import torch._inductor.config as inductor_config

    from src.env import ENV_COMPILE_THREADS_SET
    from src.sweeps import slots

    monkeypatch.delenv("TORCHINDUCTOR_COMPILE_THREADS", raising=False)
    monkeypatch.delenv(ENV_COMPILE_THREADS_SET, raising=False)
    with inductor_config.patch(compile_threads=32):  # torch's own patch, undone on exit
        slots.share_compile_threads(3)
        assert os.environ["TORCHINDUCTOR_COMPILE_THREADS"] == "3" and inductor_config.compile_threads == 3
    monkeypatch.setenv("TORCHINDUCTOR_COMPILE_THREADS", "7")  # the user's own setting wins
    monkeypatch.delenv(ENV_COMPILE_THREADS_SET)
    slots.share_compile_threads(2)
    assert os.environ["TORCHINDUCTOR_COMPILE_THREADS"] == "7"


@pytest.mark.parametrize("message, poisoned", [
    ("CUDA error: an illegal memory access was encountered", True),
    ("CUDNN_STATUS_EXECUTION_FAILED", True),
    ("mat1 and mat2 shapes cannot be multiplied", False),
])
def test_cuda_errors_are_told_apart(message, poisoned):
    from src.sweeps.slots import is_cuda_error

    assert is_cuda_error(RuntimeError(message)) is poisoned
    assert is_cuda_error(type("OutOfMemoryError", (RuntimeError,), {})("CUDA error: out of memory")) is False


def _retire_and_report():
    from src.sweeps.slots import retire_worker

    return os.getpid(), retire_worker()


def _pid():
    return os.getpid()


def test_a_retired_worker_is_replaced_and_no_job_is_lost():
    """loky's own shutdown path: the worker's result arrives, it exits, a new worker runs the rest."""
    from joblib.externals.loky import get_reusable_executor

    ex = get_reusable_executor(max_workers=1, reuse=False)
    first = ex.submit(_retire_and_report)
    later = [ex.submit(_pid) for _ in range(3)]
    pid, retired = first.result(timeout=120)
    assert retired is True
    pids = [f.result(timeout=120) for f in later]
    assert pid not in pids and len(set(pids)) == 1
    ex.shutdown(wait=True)


def test_retire_outside_a_worker_is_a_no_op():
    from src.sweeps.slots import retire_worker

    assert retire_worker() is False


def test_packed_jobs_refused_when_their_data_would_not_fit():
    from src.datamodules.image_classification import check_shared_gpu_fits
    from src.errors import ConfigError

    gib = 2**30
    check_shared_gpu_fits(10 * gib, 80 * gib, jobs_per_gpu=4)  # 40 of 80 GiB: fine
    with pytest.raises(ConfigError, match="jobs_per_gpu=8 would keep 8 copies"):
        check_shared_gpu_fits(10 * gib, 80 * gib, jobs_per_gpu=8)
    check_shared_gpu_fits(60 * gib, 80 * gib, jobs_per_gpu=1)  # one job: the single-run rule applies
