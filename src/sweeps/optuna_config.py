"""The options of ``hydra/sweeper=optuna`` (``hydra.sweeper.*``), registered by the Hydra plugin in
hydra_plugins/imgcls_optuna_sweeper/. A typo in an option name is refused by Hydra."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional


@dataclass
class OptunaSweeperConf:
    _target_: str = "hydra_plugins.imgcls_optuna_sweeper.optuna_sweeper.OptunaSweeper"
    # key: range, in hydra-optuna-sweeper's syntax (src/sweeps/optuna_space.py)
    params: Dict[str, Any] = field(default_factory=dict)
    n_trials: int = 20               # in total, over every process that shares the study
    n_jobs: Optional[int] = None     # jobs at once; null: the parallel launcher's GPUs x jobs_per_gpu
    direction: Any = "maximize"      # or a list, one per objective (multi-objective: Pareto front)
    objectives: Optional[List[str]] = None  # metrics.json keys; null: [optimized_metric]
    sampler: str = "tpe"             # tpe | random | grid | cmaes
    seed: Optional[int] = 0          # the sampler's seed
    pruner: str = "median"           # median | none: stops a trial whose val/acc trails the median
    pruner_startup_trials: int = 5   # trials that always run to the end before pruning starts
    pruner_warmup_epochs: int = 1    # epochs of every trial that are never pruned
    storage: Optional[str] = None    # any SQLAlchemy URL; null: sqlite:///<sweep dir>/optuna.db
    study_name: Optional[str] = None # null: the sweep dir's name
    seeds_per_trial: int = 1         # each trial runs seeds seed..seed+k-1 and Optuna gets the mean
    confirm_seeds: int = 0           # rerun the best parameters with this many fresh seeds at the end
    heartbeat_s: int = 30            # the launcher marks its running trials alive this often
    grace_s: int = 120               # a trial not marked for this long (killed launcher) is failed and re-asked
