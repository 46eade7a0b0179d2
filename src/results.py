"""What a finished run leaves behind: metrics.json (written atomically) and the hparams entry that
lets TensorBoard compare runs by their real final metrics."""
from __future__ import annotations

import json
import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from src.config_schema import val_is_test_split


def task_overrides() -> list[str]:
    from hydra.core.hydra_config import HydraConfig

    try:
        return list(HydraConfig.get().overrides.task)
    except ValueError:  # composed without @hydra.main (tests, notebooks)
        return []


def group_choices(cfg: DictConfig) -> dict[str, str]:
    from hydra.core.hydra_config import HydraConfig

    try:
        choices = HydraConfig.get().runtime.choices
        return {k: str(v) for k, v in choices.items() if not k.startswith("hydra") and v is not None}
    except ValueError:
        return {"data": cfg.data.name, "model": cfg.model._target_.rsplit(".", 1)[-1].lower(),
                "activation": cfg.activation.name}


def _scalar(v):
    return v.item() if hasattr(v, "item") else v


def _compile_report(trainer, module) -> dict:
    """compiled, compile_mode, compile_fallback, compile_graphs, graphs_compiled_while_timed: the
    SpeedUp callback's state (src/lit/speed.py), with the graphs the module's clock saw compiled
    inside its timed-apart warm-up calls."""
    from src.lit.speed import SpeedUp, speedup_of

    speedup = speedup_of(trainer) or SpeedUp("off")  # a Trainer not from build_trainer: eager
    return speedup.report(module.clock.warm_graphs)


def debug_mode(cfg: DictConfig) -> str | None:
    """The debug mode a run was started in (the `debug` group's choice, or Lightning's own
    fast_dev_run / overfit_batches set by hand), None for a real run. A debug run's numbers come
    from a batch or a few steps: metrics.json says status "debug", never "completed", so that
    resume never keeps it and the report never tables it. trainer.limit_*_batches alone is no
    debug mode: a short run by a budget of batches is a result (the tests run that way)."""
    if choice := group_choices(cfg).get("debug"):
        return choice
    if OmegaConf.select(cfg, "trainer.fast_dev_run", default=False):
        return "fast_dev_run"
    if OmegaConf.select(cfg, "trainer.overfit_batches", default=0):
        return "overfit_batches"
    return None


def collect(cfg: DictConfig, trainer, module, test_metrics: dict, wall_time_s: float,
            started: str | None = None, overrides: list[str] | None = None) -> dict:
    """metrics.json of a finished run. ``wall_time_s`` is this session's; the clock adds what
    earlier sessions of a resumed run spent (src/lit/clock.py). ``started``: the session's start, UTC.
    ``overrides``: the run's own task overrides (a fused seed pack's member), else the Hydra job's."""
    import torch

    from src.provenance import provenance, utc_now
    from src.run_config import result_config

    device = module.device
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    debug = debug_mode(cfg)
    overrides = task_overrides() if overrides is None else overrides
    return {
        "status": "debug" if debug else "completed",
        **({"debug": debug} if debug else {}),
        "test/acc": _scalar(test_metrics.get("test/acc")),
        "test/loss": _scalar(test_metrics.get("test/loss")),
        # lit.tta: the test-time-augmented accuracy, beside the plain one
        **{k: _scalar(test_metrics[k]) for k in ("test/acc_tta", "test/loss_tta") if k in test_metrics},
        "val/acc_best": _scalar(module.val_acc_best.compute()) if module.val_acc_best.update_count else None,
        "val/acc_best_epoch": module.best_val_epoch,
        # data.val_size=0 validates on the test split: the best val/acc is then a peak of the test
        # curve, selected on the test set, and never reported as test/acc (train.py tests the final weights);
        # k-fold runs (data.folds) validate on their fold instead
        "val_is_test_split": val_is_test_split(cfg),
        # callbacks=ema|swa: the tested (and checkpointed) weights were that average; null: the raw weights
        "averaged_weights": next((c.averaged_weights for c in trainer.callbacks if hasattr(c, "averaged_weights")),
                                 None),
        **module.clock.summary(),
        **_compile_report(trainer, module),
        **module.clock.sessions(wall_time_s),  # resumed, sessions, wall_time_s (all), session_wall_time_s
        "peak_gpu_mem_mb": round(peak, 1) if peak is not None else None,
        "params": sum(p.numel() for p in module.model.parameters()),
        "threads": torch.get_num_threads(),  # trainer.threads, or torch's / a sweep worker's share (auto)
        "choices": group_choices(cfg),
        "overrides": overrides,
        "seed": cfg.get("seed"),
        "provenance": _recorded(provenance, trainer, device, started or utc_now(), overrides),
        "config": _recorded(result_config, cfg),  # what resume=true compares (src/run_config.py)
    }


def _recorded(fn, *args):
    """A record about the run, never a reason to lose its result: an error here (a library that
    reports no version, an odd config value) becomes a one-line note in its place."""
    try:
        return fn(*args)
    except Exception as e:  # noqa: BLE001
        return {"error": f"{type(e).__name__}: {' '.join(str(e).split())}"[:300]}


# how a run may end without a fault: a debug run did not fail, though it is no result (never tabled)
ENDED_WELL = frozenset({"completed", "debug"})


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    try:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
        os.replace(tmp, path)
    except OSError as e:  # a full disk: no half-written temp file left behind, and the error names the file
        tmp.unlink(missing_ok=True)
        raise OSError(e.errno, e.strerror, str(path)) from e


def hparams(cfg: DictConfig) -> dict:
    """The knobs a study compares, flattened to scalars TensorBoard's hparams tab can show."""
    flat = {f"choice/{k}": v for k, v in group_choices(cfg).items()}
    for key in ("seed", "data.batch_size", "data.train_fraction", "trainer.max_epochs", "optimizer.lr",
                "optimizer.weight_decay", "lit.label_smoothing", "lit.mixup.alpha", "lit.mixup.cutmix_alpha",
                "lit.tta", "data.policy", "data.cutout", "data.erasing"):
        v = OmegaConf.select(cfg, key)
        if v is not None:
            flat[key] = v
    return flat


def log_hparams(loggers, cfg: DictConfig, metrics: dict) -> None:
    values = {f"hp/{k.replace('/', '_')}": metrics[k] for k in ("test/acc", "test/loss", "val/acc_best")
              if metrics.get(k) is not None}
    from lightning.pytorch.loggers import TensorBoardLogger

    for lg in loggers:
        if isinstance(lg, TensorBoardLogger):
            lg.log_hyperparams(hparams(cfg), metrics=values)
        else:
            lg.log_hyperparams(hparams(cfg))
        lg.save()
