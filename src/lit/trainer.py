"""The Trainer every run uses (``trainer._target_`` in conf/trainer/default.yaml): Lightning's,
with the GPU fast path (the SpeedUp callback, src/lit/speed.py), our logger/callback pairing rules
(src/lit/trainer_options.py), the sweep worker's quiet terminal and the DDP strategy of src/ddp/."""
from __future__ import annotations

import lightning as L

from src.lit.speed import SpeedUp, target_device
from src.lit.trainer_options import reconcile
from src.log_filters import quiet_lightning, quiet_sweep_worker


def build_trainer(compile="auto", channels_last="auto", callbacks=None, benchmark=None, deterministic=False,
                  compile_backend="inductor", **kwargs) -> L.Trainer:
    """lightning.Trainer plus the SpeedUp callback; cuDNN autotuning unless determinism is asked for.
    In a parallel sweep's worker there is no progress bar, no model summary and no info notes: the
    jobs share one terminal, where the sweep prints its status line (the parameter count is in
    metrics.json)."""
    quiet_lightning()
    threads = kwargs.pop("threads", "auto")  # ours, not a Trainer argument (conf/trainer/default.yaml)
    if threads != "auto":  # validated (an int >= 1) by src/config_schema.py; it wins over a sweep worker's share
        import torch

        torch.set_num_threads(int(threads))
    limit = kwargs.get("limit_test_batches")
    if limit not in (None, 1, 1.0):  # the first batches of a split sorted by class test a few classes only
        import logging

        logging.getLogger(__name__).warning(
            "trainer.limit_test_batches=%s tests the first batches of the test split, which an image folder "
            "holds sorted by class (horses-or-humans: only horses): use data.test_fraction=%s for a "
            "stratified subset instead", limit, limit if isinstance(limit, float) else "0.1")
    if benchmark is None:
        benchmark = not deterministic
    speedup = SpeedUp(compile, channels_last, compile_backend)
    callbacks = [*(callbacks or []), speedup]
    if speedup.will_compile(target_device(kwargs.get("accelerator", "auto"))):
        # Lightning validates under torch.inference_mode(); compiling (and capturing CUDA graphs)
        # there first and then training is a known PyTorch bug class (pytorch issue 135892)
        kwargs["inference_mode"] = False
    from src import env

    if env.get(env.ENV_PARENT):  # a job of a parallel sweep
        from lightning.pytorch.callbacks import ProgressBar

        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
        kwargs["enable_progress_bar"] = False
        kwargs["enable_model_summary"] = False
        quiet_sweep_worker()
    if kwargs.get("strategy") == "ddp":  # its ranks started as single runs of this Hydra job (src/ddp/)
        from src.ddp.strategy import RunDDPStrategy

        kwargs["strategy"] = RunDDPStrategy()
    callbacks, kwargs = reconcile(callbacks, kwargs)  # flags win over callbacks, estimate line (trainer_options.py)
    return L.Trainer(callbacks=callbacks, benchmark=benchmark, deterministic=deterministic, **kwargs)
