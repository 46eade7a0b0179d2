"""The Optuna study behind a search: its storage (SQLite in the sweep dir, or any SQLAlchemy URL),
sampler, pruner, the trial budget shared by every process on one study, and crash recovery.

Crash recovery is Optuna's heartbeat: the launching process beats for each trial it runs; a
trial whose beat is older than the grace period (its launcher was killed) is failed and asked
again with the same parameters (``RetryHeartbeatStaleTrialCallback``), so it never counts as
complete and the budget still ends at ``n_trials``.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from src.errors import ConfigError
from src.log_filters import quiet_optuna

SAMPLERS = ("tpe", "random", "grid", "cmaes")
PRUNERS = ("median", "none")


def storage_url(storage: str | None, sweep_dir: Path) -> str:
    if storage:
        return str(storage)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(sweep_dir / 'optuna.db').resolve()}"


def study_name(options, sweep_dir: Path) -> str:
    """``hydra.sweeper.study_name``, else the sweep dir's name (the sweeper and each trial's pruner)."""
    return str(options.study_name or sweep_dir.name)


def make_storage(url: str, heartbeat_s: int, grace_s: int):
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    # SQLite locks the whole file per write: several processes (parallel trials, cluster jobs)
    # wait for each other instead of failing with "database is locked"
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    quiet_optuna()  # src/log_filters.py: its INFO lines and per-call warnings
    last = None
    for _ in range(5):  # two processes creating the tables of a new file at once: the loser retries
        try:
            return RDBStorage(url, engine_kwargs=engine, heartbeat_interval=int(heartbeat_s), grace_period=int(grace_s),
                              heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=3))
        except Exception as e:  # sqlalchemy OperationalError / IntegrityError
            last = e
            import time

            time.sleep(0.5)
    raise ConfigError(f"cannot open the Optuna storage {url}: {' '.join(str(last).split())[:200]}")


def make_sampler(name: str, seed: int | None, space: dict[str, Any], n_objectives: int):
    import optuna

    from src.sweeps.optuna_space import grid_of

    if name == "tpe":
        # constant_liar: a parallel trial's pending parameters count as bad, so n_jobs trials asked
        # together do not all land on the same spot
        return optuna.samplers.TPESampler(seed=seed, constant_liar=True, multivariate=True)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "grid":
        return optuna.samplers.GridSampler(grid_of(space), seed=seed)
    if name == "cmaes":
        if n_objectives > 1:
            raise ConfigError("sampler=cmaes is single-objective: use sampler=tpe for objectives with several directions")
        try:
            import cmaes  # noqa: F401
        except ImportError:
            raise ConfigError("sampler=cmaes needs the cmaes package: pip install cmaes (or use sampler=tpe)") from None
        return optuna.samplers.CmaEsSampler(seed=seed)
    raise ConfigError(f"hydra.sweeper.sampler={name} is not valid: use {' | '.join(SAMPLERS)}")


def make_pruner(name: str, startup_trials: int = 5, warmup_epochs: int = 1):
    import optuna

    if name in ("none", None):
        return optuna.pruners.NopPruner()
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=startup_trials, n_warmup_steps=warmup_epochs)
    raise ConfigError(f"hydra.sweeper.pruner={name} is not valid: use {' | '.join(PRUNERS)}")


def open_study(storage, url: str, name: str, directions: list[str], sampler, pruner):
    """The study ``name`` in ``storage`` (from :func:`make_storage`: the caller keeps it for the
    heartbeats and trial look-ups, which Optuna's Study exposes only privately); ``url`` names it
    in errors."""
    import optuna

    try:
        study = optuna.create_study(storage=storage, study_name=name, directions=directions, sampler=sampler,
                                    pruner=pruner, load_if_exists=True)
    except ValueError as e:  # an existing study of other directions
        raise ConfigError(f"the study '{name}' in {url} exists with other directions: {e}; "
                          f"choose another hydra.sweeper.study_name") from None
    if [d.name.lower() for d in study.directions] != [d.lower() for d in directions]:
        raise ConfigError(f"the study '{name}' in {url} was created with directions "
                          f"{[d.name.lower() for d in study.directions]}, not {directions}: "
                          f"use another hydra.sweeper.study_name or the same direction")
    return study


def counted_trials(study) -> list:
    """Trials that use up the budget: complete, pruned, failed (a diverged lr is a result too) and
    running ones; not a trial failed because its launcher died (it is asked again), nor one told
    over budget."""
    from optuna.storages import RetryHeartbeatStaleTrialCallback as Retry
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    retried = {n for t in trials for n in Retry.retry_history(t)}
    states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)
    return [t for t in trials if t.state in states and t.number not in retried
            and not t.user_attrs.get("over_budget")]


def within_budget(study, trial, n_trials: int) -> bool:
    """After ``ask``: is ``trial`` among the first ``n_trials`` counted trials? Several processes
    may ask at once; trial numbers are handed out in order by the storage, so the lowest numbers
    win and the others step back (told FAIL, marked over budget, never counted)."""
    mine = [t for t in counted_trials(study) if t.number <= trial.number]
    if len(mine) <= n_trials:
        return True
    from optuna.trial import TrialState

    trial.set_user_attr("over_budget", True)
    study.tell(trial, state=TrialState.FAIL)
    return False


def budget_left(study, n_trials: int) -> int:
    return n_trials - len(counted_trials(study))


def waiting_trials(study) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))


def running_trials(study) -> list:
    from optuna.trial import TrialState

    return study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))


def fail_stale(study) -> list[int]:
    """Fail the trials whose launcher stopped beating (killed); they are queued again. Returns
    their numbers."""
    import warnings

    import optuna

    before = {t.number for t in running_trials(study)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    after = {t.number for t in running_trials(study)}
    return sorted(before - after)


def trial_id(storage, study, number: int) -> int:
    """The storage's id of trial ``number``, which its heartbeat and get_trial take (a Trial holds
    it only as the private ``_trial_id``)."""
    return storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study.study_name), number)


class Heartbeat(threading.Thread):
    """Beats for every trial this process runs (by trial number), every ``interval_s``."""

    def __init__(self, study, storage, interval_s: float):
        super().__init__(name="optuna-heartbeat", daemon=True)
        self.study, self.storage, self.interval_s = study, storage, interval_s
        self.trial_ids: dict[int, int] = {}  # trial number -> the storage's trial id
        self.lock = threading.Lock()
        self.stop_event = threading.Event()

    def add(self, number: int) -> None:
        i = trial_id(self.storage, self.study, number)
        with self.lock:
            self.trial_ids[number] = i
        self.storage.record_heartbeat(i)

    def remove(self, number: int) -> None:
        with self.lock:
            self.trial_ids.pop(number, None)

    def numbers(self) -> set[int]:
        with self.lock:
            return set(self.trial_ids)

    def run(self) -> None:
        while not self.stop_event.wait(self.interval_s):
            with self.lock:
                ids = list(self.trial_ids.values())
            for i in ids:
                try:
                    self.storage.record_heartbeat(i)
                except Exception:  # a busy database: the next beat tries again
                    pass

    def stop(self) -> None:
        self.stop_event.set()
