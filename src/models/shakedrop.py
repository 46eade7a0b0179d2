"""ShakeDrop regularisation (Yamada et al. 2019, "ShakeDrop Regularization for Deep Residual Learning").

A residual unit ``x + F(x)`` becomes ``x + D(F(x))`` where, in training,

* forward:  ``D(F) = (b + α − bα) · F``   with b ~ Bernoulli(p_l), α ~ U[−1, 1]
* backward: ``dD/dF = (b + β − bβ)``       with the same b and β ~ U[0, 1]

and in evaluation ``D(F) = E[b + α − bα] · F = p_l · F``. α and β are drawn per sample; b per
mini-batch (the paper's default) or per sample. Unit l of L keeps with
``p_l = 1 − (l / L)(1 − p_L)`` (:func:`linear_decay_keep_probs`).

Everything is drawn on the input's device with tensor ops: no ``.item()`` and no Python branch on
a tensor value, so the forward never synchronises with the host. The multiplier is cast to the
branch's dtype, so bf16 autocast keeps bf16 activations (and gradients) through the unit.
"""
from __future__ import annotations

import torch
from torch import nn


class ShakeDropFunction(torch.autograd.Function):
    """``y = (b + α − bα) · x`` forward, ``dx = (b + β − bβ) · dy`` backward.

    ``b``, ``alpha`` and ``beta`` are tensors broadcastable to ``x`` (shape ``(N, 1, 1, 1)`` or
    ``(1, 1, 1, 1)``); passing them in makes the rule testable with fixed draws."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, b: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor):
        ctx.save_for_backward(b, beta)
        return x * (b + alpha - b * alpha).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        b, beta = ctx.saved_tensors
        return grad_output * (b + beta - b * beta).to(grad_output.dtype), None, None, None


def linear_decay_keep_probs(num_units: int, p_last: float = 0.5) -> list[float]:
    """``p_l = 1 − (l / L)(1 − p_L)`` for l = 1 … L (the last unit keeps with p_L)."""
    return [1.0 - (l / num_units) * (1.0 - p_last) for l in range(1, num_units + 1)]


class ShakeDrop(nn.Module):
    """Apply to a residual branch before the addition. ``gate``: ``"batch"`` draws one b per
    mini-batch, ``"sample"`` one per sample."""

    def __init__(
        self,
        p: float,
        gate: str = "batch",
        alpha_range: tuple[float, float] = (-1.0, 1.0),
        beta_range: tuple[float, float] = (0.0, 1.0),
    ):
        super().__init__()
        if gate not in ("batch", "sample"):
            raise ValueError(f"ShakeDrop gate must be 'batch' or 'sample', got '{gate}'")
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"ShakeDrop keep probability must lie in [0, 1], got {p}")
        self.p = float(p)
        self.gate = gate
        self.alpha_range = tuple(float(a) for a in alpha_range)
        self.beta_range = tuple(float(b) for b in beta_range)

    def extra_repr(self) -> str:
        return f"p={self.p:.4f}, gate={self.gate}"

    def draw(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(b, α, β) for a batch like ``x``, float32 on ``x``'s device, in this order."""
        n = x.shape[0]
        shape = (n,) + (1,) * (x.dim() - 1)
        gate_shape = shape if self.gate == "sample" else (1,) * x.dim()
        kw = dict(device=x.device, dtype=torch.float32)
        b = (torch.rand(gate_shape, **kw) < self.p).to(torch.float32)
        lo, hi = self.alpha_range
        alpha = torch.rand(shape, **kw) * (hi - lo) + lo
        lo, hi = self.beta_range
        beta = torch.rand(shape, **kw) * (hi - lo) + lo
        return b, alpha, beta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x * self.p
        return ShakeDropFunction.apply(x, *self.draw(x))
