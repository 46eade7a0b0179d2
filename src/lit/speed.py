"""The GPU fast path, switched by `trainer.compile` and `trainer.channels_last`.

`compile`: off | auto | a torch.compile mode (default, reduce-overhead, max-autotune,
max-autotune-no-cudagraphs). auto = reduce-overhead (inductor fusion + CUDA graphs) on a GPU and off
on the CPU, where compiling costs more than it saves for short runs.
"""
from __future__ import annotations

import logging
import os
import warnings

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from src.errors import ConfigError
from src.lit.trainer_options import reconcile

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def resolve_compile(setting, device: torch.device) -> str | None:
    setting = "off" if setting in (None, False, "false") else ("auto" if setting is True else setting)
    if setting == "off":
        return None
    if setting == "auto":
        return "reduce-overhead" if device.type == "cuda" else None
    if setting not in COMPILE_MODES:
        raise ConfigError(f"trainer.compile={setting!r} is not valid: use off, auto or one of {', '.join(COMPILE_MODES)}")
    return setting


def target_device(accelerator) -> torch.device:
    """The device a Trainer with this ``accelerator`` will train on (NVML-based check in sweeps, so
    asking does not initialise CUDA before a worker's GPU slot is set)."""
    if str(accelerator) in ("gpu", "cuda") or (accelerator in (None, "auto") and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def _resolve_backend(backend):
    """A torch.compile backend: a registered name ("inductor", "eager", "aot_eager") or the dotted
    path of a callable (tests use one that raises)."""
    if callable(backend) or backend in (None, "inductor"):
        return backend or "inductor"
    if "." in str(backend):
        from hydra.utils import get_method

        return get_method(str(backend))
    return str(backend)


class SpeedUp(Callback):
    """channels_last weights (every conv then runs NHWC) and an in-place torch.compile of the model,
    so checkpoints keep their plain parameter names. Each run starts from a clean compiler state,
    asks the data module for static batch shapes when compiled (one graph for training, one for
    evaluation) and, with ``compile=auto``, falls back to eager if compiling fails."""

    def __init__(self, compile="auto", channels_last="auto", backend="inductor"):
        self.compile, self.channels_last, self.backend = compile, channels_last, backend
        resolve_compile(compile, torch.device("cpu"))  # validate now, before any data is read
        self._done = False

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self._done:
            return
        self._done = True
        from src.lit.compile_state import compile_in_place, fallback_warning, fresh_compiler_state, graphs_compiled

        device = trainer.strategy.root_device
        fresh_compiler_state(device)
        pl_module.graphs_at_start = graphs_compiled()
        if self.channels_last is True or (self.channels_last == "auto" and device.type == "cuda"):
            pl_module.model.to(memory_format=torch.channels_last)
        mode = resolve_compile(self.compile, device)
        pl_module.compile_info = {"compiled": mode is not None, "compile_mode": mode, "compile_fallback": None}
        if mode is None:
            return

        def on_fallback(exc: BaseException) -> None:
            pl_module.compile_info.update(compiled=False, compile_fallback=fallback_warning(exc))

        auto = self.compile in ("auto", True)
        compile_in_place(pl_module.model, mode, _resolve_backend(self.backend), fallback=auto, on_fallback=on_fallback)
        # CUDA graph trees record a graph on its second call: both first calls are warm-up
        pl_module.warmup_calls = 2 if mode == "reduce-overhead" and device.type == "cuda" else 1
        dm = trainer.datamodule
        if dm is not None and hasattr(dm, "static_shapes"):
            dm.static_shapes = True


def _no_cloud_tips(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("💡 Tip")  # Lightning's ads for its cloud services, every run


# Warnings every run printed that no user can act on: Lightning 2.6's own use of a torch API that
# torch 2.14 deprecates, the per-step logging interval (we log once per epoch, never per step), and
# under DDP the advice to log with sync_dist: StageStats already sums its states over the processes,
# so every rank logs the same global accuracy and loss (the timings are each rank's own).
IRRELEVANT_WARNINGS = (r".*isinstance\(treespec, LeafSpec\)` is deprecated",
                       r"The number of training batches \(\d+\) is smaller than the logging interval",
                       r"It is recommended to use `self\.log\('(train|val|test|test_tta|time)/")


def _quiet() -> None:
    for name in ("lightning_utilities.core.rank_zero", "lightning.pytorch.utilities.rank_zero"):
        if _no_cloud_tips not in logging.getLogger(name).filters:
            logging.getLogger(name).addFilter(_no_cloud_tips)
    for message in IRRELEVANT_WARNINGS:
        warnings.filterwarnings("ignore", message=message)


def build_trainer(compile="auto", channels_last="auto", callbacks=None, benchmark=None, deterministic=False,
                  compile_backend="inductor", **kwargs) -> L.Trainer:
    """lightning.Trainer plus the SpeedUp callback; cuDNN autotuning unless determinism is asked for.
    In a parallel sweep's worker there is no progress bar, no model summary and no info notes: the
    jobs share one terminal, where the sweep prints its status line (the parameter count is in
    metrics.json)."""
    _quiet()
    if benchmark is None:
        benchmark = not deterministic
    callbacks = [*(callbacks or []), SpeedUp(compile, channels_last, compile_backend)]
    if resolve_compile(compile, target_device(kwargs.get("accelerator", "auto"))) is not None:
        # Lightning validates under torch.inference_mode(); compiling (and capturing CUDA graphs)
        # there first and then training is a known PyTorch bug class (pytorch issue 135892)
        kwargs["inference_mode"] = False
    if os.environ.get("IMGCLS_SWEEP_PARENT_PID"):
        from lightning.pytorch.callbacks import ProgressBar

        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
        kwargs["enable_progress_bar"] = False
        kwargs["enable_model_summary"] = False
        # Lightning's notes ("GPU available", "Restoring states") from every worker would bury the
        # sweep's status line; warnings and errors still show
        logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    if kwargs.get("strategy") == "ddp":  # its ranks started as single runs of this Hydra job (src/ddp/)
        from src.ddp.strategy import RunDDPStrategy

        kwargs["strategy"] = RunDDPStrategy()
    callbacks, kwargs = reconcile(callbacks, kwargs)  # flags win over callbacks, estimate line (trainer_options.py)
    return L.Trainer(callbacks=callbacks, benchmark=benchmark, deterministic=deterministic, **kwargs)
