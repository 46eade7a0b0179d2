"""Running tracked sweeps in tests: `python train.py -m` from a scratch folder (so the trackers'
default paths, outputs/mlflow.db and outputs/mlartifacts, land there), with W&B given no API key
and every attempt to reach the network recorded instead of trusted away."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

from tests.conftest import QUICK, ROOT

TINY = ["model=lenet5", "data=mnist", "data.verify_counts=false", "trainer.enable_progress_bar=false", *QUICK,
        "hydra.job_logging.root.level=WARNING"]

# Loaded by every Python process of the sweep (launcher, loky workers) through PYTHONPATH: an audit
# hook logs each connection or name lookup that is not for this machine.
NET_GUARD = '''
import os, socket, sys
_LOG = os.environ["IMGCLS_NETLOG"]
_LOCAL = {"localhost", "127.0.0.1", "::1", "0.0.0.0", "", None, socket.gethostname()}

def _remote(host):
    host = host.decode() if isinstance(host, bytes) else host
    return host not in _LOCAL and not str(host).startswith("127.") and not str(host).startswith("/")

def _hook(event, args):
    if event == "socket.connect" and isinstance(args[1], tuple) and _remote(args[1][0]):
        line = f"connect {args[1]}"
    elif event == "socket.getaddrinfo" and _remote(args[0]):
        line = f"getaddrinfo {args[0]}"
    else:
        return
    with open(_LOG, "a") as f:
        f.write(f"{os.getpid()} {line}\\n")

sys.addaudithook(_hook)
'''


class Listener(threading.Thread):
    """A local port standing in for the W&B server: it counts who knocks."""

    def __init__(self):
        super().__init__(daemon=True)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.requests: list[bytes] = []  # the first bytes of each connection, to say who knocked
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            conn.settimeout(1)
            try:
                self.requests.append(conn.recv(300))
            except OSError:
                self.requests.append(b"")
            conn.close()

    def stop(self) -> None:
        self.stopped.set()
        self.join(timeout=2)
        self.sock.close()


def guarded_env(work: Path, data_dir: Path, listener: Listener, **extra) -> dict:
    guard = work / "net_guard"
    guard.mkdir(parents=True, exist_ok=True)
    (guard / "sitecustomize.py").write_text(NET_GUARD)
    env = {k: v for k, v in os.environ.items()
           if k not in ("WANDB_API_KEY", "WANDB_MODE", "MLFLOW_TRACKING_URI", "MLFLOW_DISABLE_TELEMETRY")}
    env.update({
        "DATA_DIR": str(data_dir), "IMGCLS_CACHE_DIR": str(data_dir / "cache"), "HYDRA_FULL_ERROR": "0",
        "MPLBACKEND": "Agg", "PYTHONPATH": os.pathsep.join(filter(None, [str(guard), env.get("PYTHONPATH")])),
        "IMGCLS_NETLOG": str(work / "netlog.txt"),
        "NETRC": str(work / "no-netrc"),  # no `wandb login` entry either
        "WANDB_BASE_URL": f"http://127.0.0.1:{listener.port}",
        **{k: str(work / "wandb-home" / k.lower()) for k in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR")},
        **extra,
    })
    return env


def run_sweep(args: list[str], work: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "train.py"), "-m", *TINY, *args], cwd=work, env=env,
                          capture_output=True, text=True, timeout=600)


def search_runs(work: Path, experiment: str):
    """The experiment's runs as mlflow.search_runs gives them (a DataFrame, one row per run)."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{work / 'outputs' / 'mlflow.db'}")
    return mlflow.search_runs(experiment_names=[experiment], max_results=100)
