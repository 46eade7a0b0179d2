"""Sweep machinery: the Hydra callback (callback.py), the live status line (status.py), GPU slots
and worker rules (slots.py), and the Optuna search (optuna_*.py, runners.py, pruning.py)."""
