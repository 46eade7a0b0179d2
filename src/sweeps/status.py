"""The live one-line status of a sweep (in the launching process): jobs finished / running /
failed / pruned and an ETA, judged from the run folders' files."""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path

from omegaconf import DictConfig

from src.results import ENDED_WELL


# ------------------------------------------------------------------------------ live status
def count_jobs(config: DictConfig) -> int | None:
    """Jobs the basic sweeper will launch for this command (None for other sweepers)."""
    try:
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
        from hydra.core.override_parser.overrides_parser import OverridesParser

        from src.sweeps.optuna_sweep import is_optuna, planned_jobs

        if is_optuna(config):
            return planned_jobs(config)
        if not str(config.hydra.sweeper._target_).endswith("BasicSweeper"):
            return None
        overrides = [str(o) for o in config.hydra.overrides.task]
        params = config.hydra.sweeper.get("params") or {}
        overrides += [f"{k}={v}" for k, v in params.items()]
        parsed = OverridesParser.create().parse_overrides(overrides)
        return sum(len(batch) for batch in BasicSweeper.split_arguments(parsed, None))
    except Exception:
        return None


def sweep_state(sweep_dir: Path, since: float) -> dict[str, list[str]]:
    """Run folders by state, judged from files: a job started in this invocation rewrote its
    .hydra/overrides.yaml; it finished once its metrics.json is newer than that. A completed
    metrics.json from before this invocation is kept (resume=true skips the job)."""
    state = {"done": [], "kept": [], "failed": [], "diverged": [], "pruned": [], "running": []}
    for ov in sweep_dir.rglob(".hydra/overrides.yaml"):
        run = ov.parent.parent
        mj = run / "metrics.json"
        try:
            started = ov.stat().st_mtime >= since
            m_time = mj.stat().st_mtime if mj.exists() else None
            status = json.loads(mj.read_text()).get("status") if m_time is not None else None
        except (OSError, ValueError):
            continue
        name = run.relative_to(sweep_dir).as_posix()
        if m_time is not None and m_time >= since:
            # a debug run (debug=...) did what it was asked: done, though never a result
            state[status if status in ("diverged", "pruned") else
                  ("done" if status in ENDED_WELL else "failed")].append(name)
        elif status == "completed":
            state["kept"].append(name)
        elif started:
            state["running"].append(name)
    return state


def _hms(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class LiveStatus(threading.Thread):
    """Prints '[sweep] 4/12 done · 2 running · 1 failed · ETA 0:03:10' whenever it changes (and
    every ``heartbeat_s``). One line at a time on stderr: parallel jobs print too, so a redrawn
    panel would be torn apart."""

    def __init__(self, sweep_dir: Path, total: int | None, interval_s: float = 2.0, heartbeat_s: float = 60.0):
        super().__init__(name="sweep-status", daemon=True)
        self.sweep_dir, self.total, self.interval_s, self.heartbeat_s = sweep_dir, total, interval_s, heartbeat_s
        self.start_time = time.time()
        self.stop_event = threading.Event()
        self._last, self._last_print = None, 0.0
        self.console = _console()

    def line(self) -> str:
        st = sweep_state(self.sweep_dir, self.start_time)
        finished_now = len(st["done"]) + len(st["failed"]) + len(st["diverged"]) + len(st["pruned"])
        finished = finished_now + len(st["kept"])
        total = self.total if self.total is not None else finished + len(st["running"])
        parts = [f"[bold]{finished}/{total}[/bold] finished", f"{len(st['running'])} running"]
        if st["kept"]:
            parts.append(f"{len(st['kept'])} kept from before (resume)")
        parts.append(f"[red]{len(st['failed'])} failed[/red]" if st["failed"] else "0 failed")
        if st["diverged"]:
            parts.append(f"[yellow]{len(st['diverged'])} diverged[/yellow]")
        if st["pruned"]:
            parts.append(f"{len(st['pruned'])} pruned")
        elapsed = time.time() - self.start_time
        parts.append(f"elapsed {_hms(elapsed)}")
        remaining = total - finished
        if finished_now and remaining > 0:
            parts.append(f"ETA {_hms(elapsed / finished_now * remaining)}")
        return "[cyan]\\[sweep][/cyan] " + " · ".join(parts)

    def show(self, force: bool = False) -> None:
        try:
            text = self.line()
        except Exception:
            return
        now = time.time()
        if force or text.split(" · elapsed")[0] != self._last or now - self._last_print >= self.heartbeat_s:
            self.console.print(text)
            self._last, self._last_print = text.split(" · elapsed")[0], now

    def run(self) -> None:
        while not self.stop_event.wait(self.interval_s):
            self.show()

    def stop(self) -> None:
        self.stop_event.set()
        if self.is_alive():
            self.join(timeout=5)


def _console():
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)
