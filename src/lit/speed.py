"""The GPU fast path, switched by `trainer.compile` and `trainer.channels_last`.

`compile`: off | auto | a torch.compile mode (default, reduce-overhead, max-autotune,
max-autotune-no-cudagraphs). auto = reduce-overhead (inductor fusion + CUDA graphs) on a GPU and off
on the CPU, where compiling costs more than it saves for short runs. The Trainer that carries the
SpeedUp callback is built in src/lit/trainer.py; the compile bookkeeping is src/lit/compile_state.py.
"""
from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from src.errors import ConfigError

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
    evaluation) and, with ``compile=auto``, falls back to eager if compiling fails.

    The run's compile state is this callback's own, not the LightningModule's: the module asks for
    it through the trainer (:func:`speedup_of`) to time its warm-up calls apart, the duration
    estimate to skip them, and metrics.json gets :meth:`report`."""

    def __init__(self, compile="auto", channels_last="auto", backend="inductor"):
        self.compile, self.channels_last, self.backend = compile, channels_last, backend
        resolve_compile(compile, torch.device("cpu"))  # validate now, before any data is read
        self._done = False
        # compiled turns False again after an eager fallback (compile=auto), which says why
        self.info: dict = {"compiled": False, "compile_mode": None, "compile_fallback": None}
        self.warmup_calls = 1    # calls per batch shape that compile (CUDA graphs: and record)
        self.graphs_at_start = 0  # Dynamo's process-wide graph count when this run began

    @property
    def compiled(self) -> bool:
        """The model runs compiled (False before setup and after an eager fallback)."""
        return self.info["compiled"]

    def will_compile(self, device: torch.device) -> bool:
        return resolve_compile(self.compile, device) is not None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self._done:
            return
        self._done = True
        from src.lit.compile_state import compile_in_place, fallback_warning, fresh_compiler_state, graphs_compiled

        device = trainer.strategy.root_device
        fresh_compiler_state(device)
        self.graphs_at_start = graphs_compiled()
        # a fused seed pack's conv weights are 5-D (members stacked): channels_last is for 4-D ones
        packed = getattr(pl_module.model, "is_pack", False)
        if not packed and (self.channels_last is True or (self.channels_last == "auto" and device.type == "cuda")):
            pl_module.model.to(memory_format=torch.channels_last)
        mode = resolve_compile(self.compile, device)
        self.info = {"compiled": mode is not None, "compile_mode": mode, "compile_fallback": None}
        if mode is None:
            return

        def on_fallback(exc: BaseException) -> None:
            self.info.update(compiled=False, compile_fallback=fallback_warning(exc))

        auto = self.compile in ("auto", True)
        compile_in_place(pl_module.model, mode, _resolve_backend(self.backend), fallback=auto, on_fallback=on_fallback)
        # CUDA graph trees record a graph on its second call: both first calls are warm-up
        self.warmup_calls = 2 if mode == "reduce-overhead" and device.type == "cuda" else 1
        dm = trainer.datamodule
        if dm is not None and hasattr(dm, "static_shapes"):
            dm.static_shapes = True

    def report(self, warm_graphs: int) -> dict:
        """For metrics.json: whether the model ran compiled, how many graphs that took, and how
        many of them were compiled inside timed steps (0 when the batch shapes are static);
        ``warm_graphs``: those compiled during the warm-up calls (the module's RunClock counts them)."""
        from src.lit.compile_state import graphs_compiled

        graphs = graphs_compiled() - self.graphs_at_start
        return {**self.info, "compile_graphs": graphs, "graphs_compiled_while_timed": graphs - warm_graphs}


def speedup_of(trainer) -> SpeedUp | None:
    """The trainer's SpeedUp callback; None without a trainer, or for one not made by build_trainer
    (src/lit/trainer.py), whose model then runs eagerly."""
    if trainer is None:
        return None
    return next((c for c in trainer.callbacks if isinstance(c, SpeedUp)), None)
