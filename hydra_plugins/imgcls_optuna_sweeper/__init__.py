"""``hydra/sweeper=optuna``: the project's Optuna sweeper (logic in src/sweeps/optuna_search.py)."""
