"""``hydra/sweeper=optuna``'s entry point: run the search, write its report, keep a record of the
composed sweep config (multirun.yaml) as Hydra's grid sweeper does."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from src.errors import UserError


def sweep(config: DictConfig, launcher: Any, arguments: list[str]) -> Any:
    from rich.console import Console

    from src.sweeps.optuna_report import write_search_report
    from src.sweeps.optuna_search import Search

    console = Console(stderr=True, highlight=False, soft_wrap=True)
    sweep_dir = Path(str(config.hydra.sweep.dir))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(config, sweep_dir / "multirun.yaml")
    try:
        search = Search(config.hydra.sweeper, config, launcher)
        result = search.run(list(arguments), console)
    except UserError as e:  # reached only when train.py's pre-check was bypassed (another app)
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    write_search_report(result["study"], sweep_dir, search.objectives, result["confirm"], console)
    return result["study"]


def is_optuna(config: DictConfig) -> bool:
    return "optuna" in str(OmegaConf.select(config, "hydra.sweeper._target_", default="")).lower()


def planned_jobs(config: DictConfig) -> int | None:
    """Jobs this process may run (the live status line's total)."""
    s = config.hydra.sweeper
    try:
        return int(s.n_trials) * int(s.seeds_per_trial) + int(s.confirm_seeds)
    except Exception:
        return None
