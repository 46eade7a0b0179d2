"""Every filter on what a run or a sweep prints, in one place: which lines are hidden, and why.

Each of them was printed by every run (or by every job of a sweep, where the jobs share one
terminal with the sweep's status line) and asked nothing of the user. Warnings and errors that a
user can act on always show. Callers: src/lit/trainer.py (every run), src/lit/trainer_options.py
(our model summary), src/tracking/ (MLflow) and src/sweeps/optuna_study.py (Optuna's storage).
Every function may be called any number of times: a sweep worker runs several jobs in one process.

Scoped silencing (``warnings.catch_warnings()`` around one call, as in src/analysis/stats.py) is not
a filter of this kind and stays with its call.
"""
from __future__ import annotations

import logging
import warnings

# Lightning's two rank-zero loggers (lightning_utilities' and Lightning's own re-export)
RANK_ZERO_LOGGERS = ("lightning_utilities.core.rank_zero", "lightning.pytorch.utilities.rank_zero")

# Lightning's ads for its cloud services, every run
CLOUD_TIP = "💡 Tip"

# Lightning's note on finding our model summary callback (src/lit/trainer_options.py), every run
SKIPPED_SUMMARY_NOTE = "Trainer already configured with model summary callbacks"

# Warnings every run printed that no user can act on: Lightning 2.6's own use of a torch API that
# torch 2.14 deprecates, the per-step logging interval (we log once per epoch, never per step), and
# under DDP the advice to log with sync_dist: StageStats already sums its states over the processes,
# so every rank logs the same global accuracy and loss (the timings are each rank's own).
IRRELEVANT_WARNINGS = (r".*isinstance\(treespec, LeafSpec\)` is deprecated",
                       r"The number of training batches \(\d+\) is smaller than the logging interval",
                       r"It is recommended to use `self\.log\('(train|val|test|test_tta|time)/")


class HideLines(logging.Filter):
    """Drops the records whose message starts with ``prefix``."""

    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


def hide_lines(prefix: str, *loggers: str) -> None:
    """Hide the lines starting with ``prefix`` from these loggers (once, however often called)."""
    for name in loggers:
        logger = logging.getLogger(name)
        if not any(isinstance(f, HideLines) and f.prefix == prefix for f in logger.filters):
            logger.addFilter(HideLines(prefix))


def quiet_lightning() -> None:
    """Every run (build_trainer): no cloud tips, none of the irrelevant warnings."""
    hide_lines(CLOUD_TIP, *RANK_ZERO_LOGGERS)
    for message in IRRELEVANT_WARNINGS:
        warnings.filterwarnings("ignore", message=message)


def hide_summary_note() -> None:
    hide_lines(SKIPPED_SUMMARY_NOTE, "lightning.pytorch.utilities.rank_zero")


def quiet_sweep_worker() -> None:
    """A parallel sweep's job: Lightning's notes ("GPU available", "Restoring states") from every
    worker would bury the sweep's status line; warnings and errors still show."""
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)


def quiet_mlflow() -> None:
    """MLflow and alembic log at INFO (table creation, migrations): once per sweep worker would
    drown the sweep's status lines."""
    import mlflow  # noqa: F401  (importing it sets its logger to INFO: set the level after)

    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)


def quiet_optuna() -> None:
    """Optuna's INFO lines per trial, and its warnings about heartbeats with ask-and-tell (what
    Optuna's own distributed guide does) and about the experimental flag, on every call: once per
    process is noise enough."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
