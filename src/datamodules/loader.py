"""A DataLoader replacement over tensors already in memory (or on the GPU): slicing a uint8
tensor by a shuffled index is all the work, so there are no workers and no per-sample Python."""
from __future__ import annotations

import torch


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
    ):
        """``pad_last``: fill a short last batch up to ``batch_size`` with copies of the first
        images labelled -1 (``src.lit.losses.IGNORE``), which the losses and metrics leave out; a
        compiled model then sees one evaluation shape and compiles no second graph. ``index``: the
        split is these rows of ``images`` (a memory-mapped set too large to copy), gathered per batch."""
        if len(images if index is None else index) != len(labels):
            raise ValueError(f"{len(images if index is None else index)} images but {len(labels)} labels")
        self.images, self.labels, self.index = images, labels, index
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.seed, self.pad_last = seed, pad_last
        self.epoch = 0  # each pass draws a new order, reproducible from (seed, epoch)

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        n = len(self.labels)
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(n, generator=g).to(self.images.device, non_blocking=True)
        else:
            order = None
        self.epoch += 1
        for i in range(len(self)):
            lo, hi = i * self.batch_size, min((i + 1) * self.batch_size, n)
            if order is None:
                x, y = self._rows(slice(lo, hi)), self.labels[lo:hi]
            else:
                idx = order[lo:hi]
                x, y = self._rows(idx), self.labels.index_select(0, idx)
            if self.pad_last and hi - lo < self.batch_size and n > self.batch_size:
                fill = self.batch_size - (hi - lo)
                x = torch.cat([x, self._rows(slice(0, fill))])
                y = torch.cat([y, torch.full((fill,), -1, dtype=y.dtype, device=y.device)])
            yield x, y

    def _rows(self, which) -> torch.Tensor:
        """Images at split positions ``which`` (a slice or an index tensor)."""
        if self.index is None:
            return self.images[which] if isinstance(which, slice) else self.images.index_select(0, which)
        rows = self.index[which] if isinstance(which, slice) else self.index.index_select(0, which.to(self.index.device))
        return self.images.index_select(0, rows)
