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


def stratified_holdout(labels: torch.Tensor, val_size: float, seed: int,
                       what: str = "data.val_size", held: str = "validation") -> tuple[torch.Tensor, torch.Tensor]:
    """Split into (train, val) indices; ``val_size`` is a count (>= 1) or a fraction (< 1)."""
    n = len(labels)
    n_val = round(val_size * n) if val_size < 1 else int(val_size)
    if not 0 < n_val < n:
        from src.errors import ConfigError

        raise ConfigError(f"{what}={val_size} leaves no training or no {held} images out of {n}")
    val_fraction = n_val / n
    val = stratified_subset(labels, val_fraction, seed)
    mask = torch.ones(n, dtype=torch.bool)
    mask[val] = False
    return mask.nonzero().flatten(), val


def portable_permutation(n: int, seed: int) -> torch.Tensor:
    """A permutation of range(n) that depends on nothing but (n, seed): indices sorted by a
    splitmix64 hash of (seed, index), in plain 64-bit integer arithmetic, so the same seed gives
    the same folds on every machine and every torch/numpy version (torch.randperm promises neither)."""
    import numpy as np

    with np.errstate(over="ignore"):  # wrap-around multiplication is the hash
        z = np.arange(n, dtype=np.uint64) + np.uint64((int(seed) * 0x9E3779B97F4A7C15) % 2**64)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return torch.from_numpy(np.argsort(z, kind="stable").astype(np.int64))


def fold_of_each(labels: torch.Tensor, folds: int, seed: int) -> torch.Tensor:
    """The fold (0..folds-1) of every index: each class's images in a seeded order, dealt out in
    turn across the folds continuing from class to class, so every fold holds each class within
    one image of its share and the fold sizes differ by at most one."""
    order = portable_permutation(len(labels), seed)
    by_class = torch.cat([order[labels[order] == c] for c in labels.unique()])
    out = torch.empty(len(labels), dtype=torch.int64)
    out[by_class] = torch.arange(len(labels)) % folds
    return out


def stratified_kfold(labels: torch.Tensor, folds: int, fold: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, val) indices, sorted, of fold ``fold`` of ``folds`` stratified folds."""
    from src.errors import ConfigError

    if len(labels) < folds:
        raise ConfigError(f"data.folds={folds} needs at least {folds} training images, there are {len(labels)}")
    which = fold_of_each(labels, folds, seed)
    return (which != fold).nonzero().flatten(), (which == fold).nonzero().flatten()
