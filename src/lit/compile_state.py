"""torch.compile bookkeeping for one run: a clean compiler state per run, graph counts from Dynamo's
counters, and an eager fallback for `compile=auto` when Inductor, Triton or ptxas fails.

Why a clean state: Dynamo keeps at most `recompile_limit` (8) compiled versions of one code object
per process, shared by every instance of a model class. A sweep worker that runs several jobs (the
sequential launcher, a reused loky worker) would otherwise run its third job eagerly after one
warning, and report eager speeds as compiled ones.
"""
from __future__ import annotations

import warnings

import torch
from torch import nn


def graphs_compiled() -> int:
    """Graphs Dynamo has compiled in this process (its `unique_graphs` counter, never reset)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def fresh_compiler_state(device: torch.device) -> None:
    """Forget every compiled graph (and CUDA graph tree) of earlier runs in this process, and start
    the peak-memory count for this run."""
    torch._dynamo.reset()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _is_compile_error(exc: BaseException) -> bool:
    """Raised while compiling (Dynamo, Inductor, Triton, ptxas), not by the model's own maths.
    Dynamo wraps backend failures in BackendCompilerFailed; Inductor raises InductorError."""
    from torch._dynamo.exc import TorchDynamoException

    if isinstance(exc, TorchDynamoException):
        return True
    name = f"{type(exc).__module__}.{type(exc).__name__}"
    return name.startswith(("torch._inductor", "triton")) or "InductorError" in name


class CompiledOrEager:
    """The compiled ``_call_impl`` of a module; on the first compile failure it switches the module
    back to eager for good, tells ``on_fallback`` why, and reruns the call eagerly (a compile
    failure happens before any output exists, so nothing is half done). A genuine error of the
    model then surfaces from the eager call."""

    def __init__(self, module: nn.Module, compiled, on_fallback):
        self.module, self.compiled, self.on_fallback = module, compiled, on_fallback

    def __call__(self, *args, **kwargs):
        import torch._functorch.config as functorch_config

        try:
            # the backward graph is lowered with the forward one, inside this call, where a failure
            # can still be undone; patched per call (not set for the process), so the option stays
            # the user's everywhere else
            with functorch_config.patch(force_non_lazy_backward_lowering=True):
                return self.compiled(*args, **kwargs)
        except Exception as e:
            if not _is_compile_error(e):
                raise
            self.module._compiled_call_impl = None  # nn.Module then calls its plain _call_impl
            self.on_fallback(e)
            return self.module._call_impl(*args, **kwargs)


def compile_in_place(module: nn.Module, mode: str, backend="inductor", fallback: bool = False,
                     on_fallback=None) -> None:
    """``module.compile(...)`` (parameter names stay plain, so checkpoints load into eager models),
    optionally with the eager fallback. With the fallback the backward graph is lowered together
    with the forward one, so every compile failure surfaces in the forward call, where it can still
    be undone (Inductor lowers the backward lazily by default, inside loss.backward())."""
    kwargs = {"mode": mode} if backend == "inductor" else {}
    if not isinstance(backend, str) or backend != "inductor":
        kwargs["backend"] = backend
    compiled = torch.compile(module._call_impl, dynamic=False, **kwargs)
    if fallback:
        compiled = CompiledOrEager(module, compiled, on_fallback or (lambda e: None))
    module._compiled_call_impl = compiled


def fallback_warning(exc: BaseException) -> str:
    reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
    warnings.warn(f"torch.compile failed, training eagerly instead (trainer.compile=auto): {reason}; "
                  f"set trainer.compile=off to skip compiling, or a mode to see the full error", stacklevel=2)
    return reason
