"""Sweep machinery: the Hydra callback (callback.py), the live status line (status.py), GPU slots
and worker rules (slots.py), the parallel launcher's job loop and worker pool (launch.py, pool.py:
a dead worker costs only its own job), and the Optuna search (optuna_*.py, runners.py, pruning.py)."""
