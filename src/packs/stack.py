"""K models of one architecture as one: their parameters and buffers stacked along a new first
dimension, the forward pass ``torch.func.vmap`` of ``functional_call`` over it.

Under vmap a convolution over stacked weights and stacked inputs is one grouped convolution, a
linear layer one batched matmul, BatchNorm normalises each member with its own batch statistics
and updates its own slice of the stacked running statistics; so K small models make one large
kernel each, where K separate processes on one GPU would take turns. The stacked module keeps the
member's own parameter names (``conv1.weight``, shape [K, ...]): a member's state is the
``[k]`` slice of every tensor, which is how src/packs/checkpoints.py writes each member an ordinary
checkpoint.

Randomness inside the model (dropout) is drawn per member (``randomness="different"``), but from
the process's generator, not the member's own: a model with dropout trains equally well in a pack,
but not draw for draw as its standalone run (the pack's equality tests use models without dropout).
"""
from __future__ import annotations

import copy

import torch
from torch import nn
from torch.func import functional_call, vmap


def _owner(root: nn.Module, name: str) -> tuple[nn.Module, str]:
    path, _, leaf = name.rpartition(".")
    return (root.get_submodule(path) if path else root), leaf


class StackedModel(nn.Module):
    """``StackedModel([m0, m1, ...])``: one module whose forward takes [K, B, ...] inputs (or [B, ...]
    with ``shared=True``: the same batch for every member, e.g. the test split) and returns
    [K, B, classes]. The members' tensors are copied; the member modules are not kept."""

    is_pack = True  # src/lit/speed.py: no channels_last for 5-D stacked weights

    def __init__(self, models: list[nn.Module]):
        super().__init__()
        if not models:
            raise ValueError("a pack needs at least one model")
        names = [n for n, _ in models[0].named_parameters()]
        for m in models[1:]:
            if [n for n, _ in m.named_parameters()] != names or any(
                    a.shape != b.shape for a, b in zip(m.parameters(), models[0].parameters())):
                raise ValueError("the models of a pack must have one architecture (same parameter names and shapes)")
        cumulative = [n for n, m in models[0].named_modules()
                      if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training and m.momentum is None]
        if cumulative:  # its update reads the batch count on the host, which vmap cannot do
            raise ValueError(f"BatchNorm {cumulative[0]} has momentum=None (a cumulative average): packs need a "
                             f"momentum (e.g. 0.1), or seeds_per_job=1")
        self.size = len(models)
        self.net = copy.deepcopy(models[0])  # the structure; its tensors are replaced by stacked ones
        with torch.no_grad():
            for name, p in models[0].named_parameters():
                owner, leaf = _owner(self.net, name)
                stacked = torch.stack([m.get_parameter(name).detach() for m in models])
                owner._parameters[leaf] = nn.Parameter(stacked, requires_grad=p.requires_grad)
            for name, _ in models[0].named_buffers():
                owner, leaf = _owner(self.net, name)
                owner._buffers[leaf] = torch.stack([m.get_buffer(name).detach() for m in models])

    def forward(self, x: torch.Tensor, shared: bool = False) -> torch.Tensor:
        params = dict(self.net.named_parameters())
        buffers = dict(self.net.named_buffers())

        def one(p, b, xi):
            return functional_call(self.net, (p, b), (xi,))

        return vmap(one, in_dims=(0, 0, None if shared else 0), randomness="different")(params, buffers, x)

    # ------------------------------------------------------------------ members
    def member_state(self, k: int) -> dict[str, torch.Tensor]:
        """Member k's state_dict (the standalone model's names and shapes), copied."""
        return {name: t[k].detach().clone() for name, t in self.net.state_dict().items()}

    @torch.no_grad()
    def load_member_state(self, k: int, state: dict[str, torch.Tensor]) -> None:
        own = self.net.state_dict()
        missing = set(own) - set(state)
        if missing:
            raise KeyError(f"member state lacks {sorted(missing)[:3]}")
        for name, t in own.items():
            t[k].copy_(state[name])
