"""Sweep machinery: GPU slots and worker rules (the Hydra callback is src/sweep_callbacks.py)."""
