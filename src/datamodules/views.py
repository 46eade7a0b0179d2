"""A split as rows of a source tensor: subsets, hold-outs and folds only compose index tensors, so
a memory-mapped set larger than memory is never copied; the images are gathered once at the end
(to the GPU, or into host memory when they fit there) or, failing that, per batch by the loader."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from src.datamodules.cache import available_memory

GATHER_CHUNK = 4096  # rows per copy: bounds the temporary host memory of a gather


@dataclass(eq=False)
class View:
    images: torch.Tensor              # the source [N,C,H,W] uint8 (in memory or memory-mapped)
    labels: torch.Tensor              # one per row of the split
    index: torch.Tensor | None = None  # rows of ``images`` in the split; None: all, in order

    @classmethod
    def of(cls, images: torch.Tensor, labels: torch.Tensor, index: torch.Tensor | None = None) -> "View":
        return cls(images, labels, index)

    def take(self, positions: torch.Tensor) -> "View":
        """The sub-split at ``positions`` (indices into this split); all of it is this view itself."""
        if len(positions) == len(self.labels) and torch.equal(positions, torch.arange(len(self.labels))):
            return self
        rows = positions if self.index is None else self.index[positions]
        return View(self.images, self.labels[positions], rows)

    @property
    def nbytes(self) -> int:
        return len(self.labels) * self.images[0].numel()

    def gather(self, device: torch.device) -> torch.Tensor:
        """The split's images as one tensor on ``device``, copied in chunks."""
        if self.index is None:
            return self.images.to(device)
        out = torch.empty((len(self.index), *self.images.shape[1:]), dtype=self.images.dtype, device=device)
        for lo in range(0, len(self.index), GATHER_CHUNK):
            part = self.index[lo: lo + GATHER_CHUNK]
            out[lo: lo + len(part)] = self.images.index_select(0, part).to(device, non_blocking=False)
        return out

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        return (self.images if self.index is None else self.images[self.index]), self.labels


def place(parts: dict[str, View], device: torch.device) -> dict[str, View]:
    """Each distinct view moved to ``device`` once (val and test share one when val is the test
    split). On the CPU a view stays a view when copying it would take over half the free memory."""
    out: dict[int, View] = {}
    for v in parts.values():
        if id(v) in out:
            continue
        if device.type != "cpu" or v.index is None:
            out[id(v)] = View(v.gather(device), v.labels.to(device))
        elif v.nbytes < available_memory() // 2:
            out[id(v)] = View(v.gather(device), v.labels)
        else:  # larger than memory: the loader gathers each batch from the memory-mapped source
            out[id(v)] = v
    return {k: out[id(v)] for k, v in parts.items()}

