"""Seeded, stratified subsets and hold-outs (per-class proportions are kept)."""
from __future__ import annotations

import torch


def _check_fraction(name: str, f: float) -> None:
    if not (isinstance(f, (int, float)) and 0 < f <= 1):
        from src.errors import ConfigError

        raise ConfigError(f"data.{name}={f!r} is out of range: use a fraction with 0 < f <= 1 (e.g. data.{name}=0.2)")


def stratified_subset(labels: torch.Tensor, fraction: float, seed: int) -> torch.Tensor:
    """Indices of a ``fraction`` of every class (at least one image per present class), sorted."""
    if fraction >= 1:
        return torch.arange(len(labels))
    g = torch.Generator().manual_seed(seed)
    keep = []
    for c in labels.unique():
        idx = (labels == c).nonzero().flatten()
        n = max(1, round(fraction * len(idx)))
        keep.append(idx[torch.randperm(len(idx), generator=g)[:n]])
    return torch.cat(keep).sort().values


def stratified_holdout(labels: torch.Tensor, val_size: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split into (train, val) indices; ``val_size`` is a count (>= 1) or a fraction (< 1)."""
    n = len(labels)
    n_val = round(val_size * n) if val_size < 1 else int(val_size)
    if not 0 < n_val < n:
        from src.errors import ConfigError

        raise ConfigError(f"data.val_size={val_size} leaves no training or no validation images out of {n}")
    val_fraction = n_val / n
    val = stratified_subset(labels, val_fraction, seed)
    mask = torch.ones(n, dtype=torch.bool)
    mask[val] = False
    return mask.nonzero().flatten(), val
