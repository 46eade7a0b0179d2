"""Where a run came from, for metrics.json's ``provenance`` key: the code (git commit and whether
the checkout had uncommitted changes), the library versions, the device and the precision the
Trainer actually used, the determinism switches, the host, when it started and the command that
runs it again. Two runs of one setting that differ here may differ for that reason alone (a new
torch, another GPU, bf16 instead of fp32), so the report can say so.

Cheap by design: one `git` call per run with a short timeout (a sweep of hundreds of jobs must not
wait on it), the rest are attributes already in memory. A sweep folder also keeps the installed
package list once (``environment.txt``, :func:`write_environment`, from the sweep callback).
"""
from __future__ import annotations

import datetime as dt
import platform
import shlex
import socket
import subprocess
import sys
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parent.parent  # the code that runs, whatever the working directory
GIT_TIMEOUT_S = 3
# run control that would make the command do something else in a fresh folder (keep a run, overwrite one)
NOT_IN_COMMAND = ("resume=", "overwrite=")


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def git_state(root: Path = CHECKOUT) -> tuple[str | None, bool | None]:
    """(commit, dirty) of the checkout the code runs from; (None, None) without git or a checkout.
    One call: porcelain v2 prints the commit in its header and one line per changed tracked file
    (untracked files are left out, as `git describe --dirty` does: scanning them costs time in a
    folder full of run outputs, and a new file only matters once it is tracked)."""
    try:
        out = subprocess.run(["git", "-C", str(root), "status", "--porcelain=v2", "--branch", "--untracked-files=no"],
                             capture_output=True, text=True, timeout=GIT_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError):  # no git, or it hung (a network file system)
        return None, None
    if out.returncode != 0:
        return None, None
    lines = out.stdout.splitlines()
    oid = next((ln.split()[2] for ln in lines if ln.startswith("# branch.oid ")), None)
    if oid is None or oid == "(initial)":
        return None, None
    return oid, any(not ln.startswith("#") for ln in lines)


def rerun_command(overrides: list[str]) -> str:
    """``python train.py`` and the job's own overrides (a sweep job's: its values, not the sweep's
    lists), shell-quoted so that it can be pasted as it is."""
    kept = [str(o) for o in overrides if not str(o).startswith(NOT_IN_COMMAND)]
    return shlex.join(["python", "train.py", *kept])


def _version(module: str) -> str | None:
    mod = sys.modules.get(module)
    if mod is None:
        try:
            mod = __import__(module)
        except ImportError:
            return None
    return str(getattr(mod, "__version__", None) or "") or None


def _device(trainer, device) -> dict:
    import torch

    cuda = device.type == "cuda"
    name = torch.cuda.get_device_name(device) if cuda else _cpu_name() if device.type == "cpu" else device.type
    return {
        "device": name,
        "device_type": device.type,
        "device_count": int(getattr(trainer, "num_devices", 1) or 1),  # what the run used (DDP: its ranks)
        "cuda": torch.version.cuda if cuda else None,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
    }


def _cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux), else the architecture."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def provenance(trainer, device, started: str, overrides: list[str]) -> dict:
    """metrics.json's ``provenance``: see the module docstring. ``device`` is the module's device,
    ``started`` this session's start (UTC, ISO 8601), ``overrides`` the job's task overrides."""
    import torch

    commit, dirty = git_state()
    return {
        "commit": commit,
        "dirty": dirty,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": _version("torchvision"),
        "lightning": _version("lightning"),
        "hydra": _version("hydra"),
        "numpy": _version("numpy"),
        **_device(trainer, device),
        "precision": str(trainer.precision),  # after resolution: ${auto_precision:} and Lightning's aliases
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "host": socket.gethostname(),
        "started": started,
        "command": rerun_command(overrides),
    }


def installed_packages() -> list[str]:
    """``name==version`` of every installed distribution, sorted (as `pip freeze` would list them)."""
    from importlib.metadata import distributions

    seen = {}
    for d in distributions():
        name = d.metadata.get("Name") if d.metadata else None
        if name:
            seen.setdefault(name.lower(), f"{name}=={d.version}")
    return [seen[k] for k in sorted(seen)]


def write_environment(sweep_dir: Path) -> Path | None:
    """The package list into ``<sweep>/environment.txt`` once. A resumed sweep whose packages
    changed keeps the first list and adds ``environment_<UTC time>.txt`` beside it, so no run's
    environment is lost. Never raises: provenance must not stop a sweep."""
    try:
        text = f"# python {platform.python_version()} ({sys.executable})\n" + "\n".join(installed_packages()) + "\n"
        path = Path(sweep_dir) / "environment.txt"
        if path.exists():
            if path.read_text() == text:
                return path
            path = path.with_name(f"environment_{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%SZ}.txt")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path
    except OSError:
        return None
