"""Sharpness-aware minimisation (Foret et al. 2021) around any torch optimizer.

One ``step(closure)`` is two forward/backward passes:

1. ``closure()`` — gradient g at the weights w;
2. move to the worst nearby point  w + e,  e = rho * g / ||g||  (``adaptive``: ASAM's element-wise
   scaling, e = rho * w^2 * g / ||w * g||);
3. ``closure()`` again — gradient at w + e;
4. restore w and let the base optimizer step with that second gradient.

Lightning's automatic optimisation passes exactly such a closure (zero_grad + training_step +
backward, returning the loss) to ``optimizer.step(closure=...)`` — also under ``bf16-mixed``,
whose precision plugin calls the plain ``optimizer.step(closure=...)``. ``16-mixed`` (GradScaler)
steps the optimizer without a closure and is refused with a one-line error.

SAM shares its ``param_groups`` and ``state`` with the base optimizer, so LR schedulers, Lightning's
LR monitor, gradient clipping and checkpoints see one ordinary ``torch.optim.Optimizer``.

Notes: each training step runs ``training_step`` twice; ``SAM.in_second_pass`` is True during the
second (perturbed-weights) pass, so a training_step can skip its metrics and, with
``bn_stats_frozen(model)``, BatchNorm's running-statistics update there. Gradient accumulation is
not supported (the second pass would see only the last micro-batch).
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

import torch
from torch import nn
from torch.optim import Optimizer

from src.errors import ConfigError


class SAM(Optimizer):
    """``SAM(params, base_optimizer=torch.optim.SGD, rho=0.05, lr=0.1, momentum=0.9)``: every keyword
    other than ``rho``/``adaptive`` goes to ``base_optimizer`` (a class or a partial)."""

    def __init__(self, params, base_optimizer: Callable[..., Optimizer] = torch.optim.SGD, rho: float = 0.05,
                 adaptive: bool = False, **kwargs: Any):
        if rho <= 0:
            raise ConfigError(f"optimizer.rho={rho} must be > 0 (the SAM neighbourhood radius)")
        super().__init__(params, dict(rho=rho, adaptive=adaptive, **kwargs))
        self.base_optimizer = base_optimizer(self.param_groups, **kwargs)
        # one set of groups and one state for both: schedulers and checkpoints see a single optimizer
        self.param_groups = self.base_optimizer.param_groups
        self.state = self.base_optimizer.state
        self.defaults.update(self.base_optimizer.defaults)
        self.in_second_pass = False  # True while the closure runs at the perturbed weights

    @torch.no_grad()
    def _perturbation(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The parameters that have a gradient and their ascent steps e."""
        params, scaled = [], []
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    params.append(p)
                    scaled.append(p.grad * p.abs() if group["adaptive"] else p.grad)
        if not params:
            return [], []
        norm = torch.nn.utils.get_total_norm(scaled, norm_type=2.0)
        steps, i = [], 0
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                scale = group["rho"] / (norm.to(p.device) + 1e-12)
                e = scaled[i] * p.abs() if group["adaptive"] else scaled[i]
                steps.append(e * scale.to(e.dtype))
                i += 1
        return params, steps

    def step(self, closure: Callable[[], Any] | None = None):  # type: ignore[override]
        if closure is None:
            raise ConfigError("SAM needs optimizer.step(closure): it runs two forward/backward passes per step "
                              "(use trainer.precision=bf16-mixed or 32, not 16-mixed, whose GradScaler steps "
                              "without a closure; and accumulate_grad_batches=1)")
        closure = torch.enable_grad()(closure)
        loss = closure()  # gradient at w
        params, steps = self._perturbation()
        if not params:  # the step was skipped (training_step returned None): nothing to do
            return loss
        with torch.no_grad():
            torch._foreach_add_(params, steps)  # w + e
        self.zero_grad(set_to_none=True)
        self.in_second_pass = True
        try:
            closure()  # gradient at w + e
        finally:
            self.in_second_pass = False
            with torch.no_grad():
                torch._foreach_sub_(params, steps)  # back to w
        self.base_optimizer.step()
        return loss

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        # Optimizer.load_state_dict rebinds self.state/param_groups: share them with the base again
        self.base_optimizer.param_groups = self.param_groups
        self.base_optimizer.state = self.state


@contextlib.contextmanager
def bn_stats_frozen(module: nn.Module) -> Iterator[None]:
    """BatchNorm layers inside ``module`` keep their running statistics unchanged (momentum 0) while
    still normalising with the batch's statistics: for SAM's second pass."""
    saved = [(m, m.momentum) for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m, _ in saved:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum in saved:
            m.momentum = momentum
