"""Each member's own random stream. A standalone run draws its augmentation, mixup/CutMix, image-grid
and input-noise randomness from the process generators seeded by ``seed_everything(seed)``, after
its model was initialised. A pack keeps, per member, the generator states its standalone run would
have at that point, and swaps them in around that member's draws: member k's draws are then those
of its standalone run, draw for draw (the model's own dropout is the exception: src/packs/stack.py).
A resumed pack starts its members' streams afresh after their models were built, as a resumed
standalone run does (Lightning restores no generator state).
"""
from __future__ import annotations

import contextlib

import torch


class MemberRNG:
    def __init__(self, seeds: list[int]):
        self.seeds = list(seeds)
        self.cpu: list[torch.Tensor | None] = [None] * len(seeds)
        # None: the CUDA generator as seed_everything(seed) leaves it (model init runs on the CPU)
        self.cuda: list[torch.Tensor | None] = [None] * len(seeds)

    def capture(self, k: int) -> None:
        """Member k's CPU state now: call right after building its model under its seed."""
        self.cpu[k] = torch.get_rng_state()

    @contextlib.contextmanager
    def member(self, k: int, device: torch.device):
        cuda = device.type == "cuda"
        cpu_before = torch.get_rng_state()
        cuda_before = torch.cuda.get_rng_state(device) if cuda else None
        if self.cpu[k] is not None:
            torch.set_rng_state(self.cpu[k])
        if cuda:
            if self.cuda[k] is None:
                with torch.cuda.device(device):
                    torch.cuda.manual_seed(self.seeds[k])
            else:
                torch.cuda.set_rng_state(self.cuda[k], device)
        try:
            yield
        finally:
            self.cpu[k] = torch.get_rng_state()
            torch.set_rng_state(cpu_before)
            if cuda:
                self.cuda[k] = torch.cuda.get_rng_state(device)
                torch.cuda.set_rng_state(cuda_before, device)
