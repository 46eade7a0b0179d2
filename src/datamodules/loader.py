"""A DataLoader replacement over tensors already in memory (or on the GPU): slicing a uint8
tensor by a shuffled index is all the work, so there are no workers and no per-sample Python.

Under DDP (``world`` > 1) the training loader shards by rank without a DistributedSampler: every
rank draws the same permutation from (seed, epoch), step i's global batch is the slice
[i*B*world, (i+1)*B*world) of it and rank r takes the r-th B of that slice. So the ranks' batches of
one step together are exactly the batch a single process with batch B*world would draw, and every
rank makes the same number of steps (a collective per step would otherwise hang).
"""
from __future__ import annotations

from typing import Callable

import torch

IGNORE = -1  # src.lit.losses.IGNORE: padding the losses and metrics leave out


class TensorBatchLoader:
    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        shuffle: bool = False,
        drop_last: bool = False,
        seed: int = 0,
        pad_last: bool = False,
        index: torch.Tensor | None = None,
        rank: int = 0,
        world: int = 1,
        epoch_fn: Callable[[], int] | None = None,
        steps: int | None = None,
    ):
        """``pad_last``: fill a short last batch up to ``batch_size`` with copies of the first
        images labelled -1 (``src.lit.losses.IGNORE``), which the losses and metrics leave out; a
        compiled model then sees one evaluation shape and compiles no second graph. ``index``: the
        split is these rows of ``images`` (a memory-mapped set too large to copy), gathered per batch.
        ``rank``/``world``: this process's share of each step (training, see the module docstring).
        ``epoch_fn``: the trainer's epoch, so that a resumed run draws the orders an uninterrupted
        one would (without it the loader counts its own passes from 0). ``steps``: yield exactly
        this many batches, padding-only ones (label -1) once the split runs out -- an evaluation
        shard of a rank with one image fewer than the others still makes their number of steps."""
        if len(images if index is None else index) != len(labels):
            raise ValueError(f"{len(images if index is None else index)} images but {len(labels)} labels")
        self.images, self.labels, self.index = images, labels, index
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.seed, self.pad_last = seed, pad_last
        self.rank, self.world, self.epoch_fn, self.steps = rank, world, epoch_fn, steps
        self.epoch = 0  # each pass draws a new order, reproducible from (seed, epoch)

    def _last_part(self) -> tuple[int, int]:
        """(full steps, per-rank size of the last short step; 0 when there is none). The images
        left after a global batch of B*world are split evenly over the ranks; the fewer than
        ``world`` left over then are skipped this epoch (a different few each epoch)."""
        n, per_step = len(self.labels), self.batch_size * self.world
        full = n // per_step
        short = (n - full * per_step) // self.world
        return full, 0 if self.drop_last else short

    def __len__(self) -> int:
        if self.steps is not None:
            return self.steps
        full, short = self._last_part()
        return full + (short > 0)

    def __iter__(self):
        n = len(self.labels)
        epoch = self.epoch_fn() if self.epoch_fn is not None else self.epoch
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            order = torch.randperm(n, generator=g).to(self.images.device, non_blocking=True)
        else:
            order = None
        self.epoch = epoch + 1
        full, short = self._last_part()
        per_step = self.batch_size * self.world
        for i in range(full + (short > 0)):
            size = self.batch_size if i < full else short
            lo = i * per_step + self.rank * size
            hi = lo + size
            if order is None:
                x, y = self._rows(slice(lo, hi)), self.labels[lo:hi]
            else:
                idx = order[lo:hi]
                x, y = self._rows(idx), self.labels.index_select(0, idx)
            # a split within one batch keeps its one shape unpadded, unless other ranks' batches are full
            if self.pad_last and hi - lo < self.batch_size and (n > self.batch_size or self.steps is not None):
                fill = self.batch_size - (hi - lo)
                x = torch.cat([x, self._rows(slice(0, fill))])
                y = torch.cat([y, torch.full((fill,), IGNORE, dtype=y.dtype, device=y.device)])
            yield x, y
        for _ in range(full + (short > 0), len(self)):  # `steps`: this shard ran out before the others
            size = self.batch_size if self.pad_last else 1
            x = torch.zeros((size, *self.images.shape[1:]), dtype=self.images.dtype, device=self.images.device)
            yield x, torch.full((size,), IGNORE, dtype=self.labels.dtype, device=self.labels.device)

    def _rows(self, which) -> torch.Tensor:
        """Images at split positions ``which`` (a slice or an index tensor)."""
        if self.index is None:
            return self.images[which] if isinstance(which, slice) else self.images.index_select(0, which)
        rows = self.index[which] if isinstance(which, slice) else self.index.index_select(0, which.to(self.index.device))
        return self.images.index_select(0, rows)


def shard_bounds(n: int, rank: int, world: int) -> tuple[int, int]:
    """Rank ``rank``'s contiguous share [lo, hi) of n evaluation images: sizes differ by at most
    one and together cover every image exactly once."""
    return rank * n // world, (rank + 1) * n // world


def eval_steps(n: int, world: int, batch_size: int) -> int:
    """Evaluation steps every rank makes: those of the largest shard (at least one)."""
    largest = -(-n // world)  # ceil(n / world): shard sizes differ by at most one
    return max(1, -(-largest // batch_size))
