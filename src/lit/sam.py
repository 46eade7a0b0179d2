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
        # a fused seed pack (src/packs/module.py) sets K: every parameter is K members stacked along
        # dim 0, and each member's epsilon uses its own gradient norm, as its standalone run would
        self.pack_size: int | None = None
        self._after_second_pass: list[Callable[[], Any]] = []

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
        if self.pack_size:
            norm = member_norms(scaled)  # [K]
        else:
            norm = torch.nn.utils.get_total_norm(scaled, norm_type=2.0)
        steps, i = [], 0
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                scale = group["rho"] / (norm.to(p.device) + 1e-12)
                if self.pack_size:
                    scale = scale.view(-1, *([1] * (p.dim() - 1)))
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
            while self._after_second_pass:  # after its backward, which may still read the buffers
                self._after_second_pass.pop(0)()
            with torch.no_grad():
                torch._foreach_sub_(params, steps)  # back to w
        self.base_optimizer.step()
        return loss

    def after_second_pass(self, fn: Callable[[], Any]) -> None:
        """Run ``fn`` once the second pass's backward is done (see ``keep_bn_stats``)."""
        self._after_second_pass.append(fn)

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        # Optimizer.load_state_dict rebinds self.state/param_groups: share them with the base again
        self.base_optimizer.param_groups = self.param_groups
        self.base_optimizer.state = self.state


def keep_bn_stats(module: nn.Module) -> Callable[[], None]:
    """Save the running statistics of the BatchNorm layers in ``module`` and return the function
    that copies them back in place: SAM's second pass normalises with its batch's statistics but
    must not count as another batch. Same numbers as running it with momentum 0, and the same
    buffers (CUDA graphs need them); changing ``momentum`` instead would make a compiled model
    compile a second graph, since BatchNorm's forward branches on it. Restore only after the pass's
    backward: a compiled BatchNorm saves the buffers for it. ``num_batches_tracked`` is restored too."""
    layers = [m for m in module.modules()
              if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats and m.training]
    with torch.no_grad():
        saved = [(m, [b.clone() for b in _stats(m)]) for m in layers]

    @torch.no_grad()
    def restore() -> None:
        for m, copies in saved:
            for buf, copy in zip(_stats(m), copies):
                buf.copy_(copy)

    return restore


@contextlib.contextmanager
def bn_stats_frozen(module: nn.Module) -> Iterator[None]:
    """``keep_bn_stats`` as a context (for eager code that runs backward inside it)."""
    restore = keep_bn_stats(module)
    try:
        yield
    finally:
        restore()


def _stats(m: nn.Module) -> list[torch.Tensor]:
    return [b for b in (m.running_mean, m.running_var, m.num_batches_tracked) if b is not None]


def member_norms(tensors: list[torch.Tensor]) -> torch.Tensor:
    """[K] 2-norms over tensors stacked along dim 0 (a fused seed pack's), per member, in
    torch.nn.utils.get_total_norm's order: each tensor's norm, then the norm of those."""
    per_tensor = torch.stack([t.flatten(1).norm(dim=1) for t in tensors])  # [tensors, K]
    return per_tensor.norm(dim=0)
