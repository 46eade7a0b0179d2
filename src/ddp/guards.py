"""Command-line guards for DDP, run before Hydra starts any job (train.py's __main__).

A sweep (`-m`) of DDP jobs runs under hydra/launcher=sequential (one job after another, each
starting its ranks: src/ddp/strategy.py) or hydra/launcher=slurm (each job its own SLURM job of
nodes x GPUs tasks). The parallel launcher cannot run them: its loky workers each hold one GPU slot
(src/sweeps/slots.py) and pin CUDA_VISIBLE_DEVICES to it, so a job's ranks would share one GPU,
or on a CPU every worker's job would start its own ranks on the same cores; Ray's tasks likewise
hold one slot each. Such a sweep is refused in one line naming the launchers that work.
"""
from __future__ import annotations

from src.errors import ConfigError

SAFE_LAUNCHERS = ("sequential", "basic", "slurm", "submitit_slurm")
MULTIRUN = {"-m", "--multirun"}


def processes(trainer_cfg) -> int:
    """DDP processes of one job on one node as Lightning will count them (1 when not DDP)."""
    strategy = str(trainer_cfg.get("strategy", "auto"))
    if not strategy.startswith("ddp"):
        return 1
    devices = trainer_cfg.get("devices", 1)
    if str(devices).lstrip("-").isdigit() and int(devices) != -1:
        return int(devices)
    if str(trainer_cfg.get("accelerator", "auto")) == "cpu":
        return 1  # Lightning's CPU 'auto' is one process
    from src.sweeps.slots import visible_gpus

    return max(1, len(visible_gpus()))


def _launcher(argv: list[str]) -> str:
    chosen = [a.split("=", 1)[1] for a in argv if a.lstrip("+").startswith("hydra/launcher=")]
    return chosen[-1] if chosen else "parallel"


def _trainer_settings(argv: list[str]) -> list[list[str]]:
    """Each distinct combination of the overrides that can change the trainer group, per job."""
    from src.cli import _job_overrides

    keys = ("trainer", "+trainer", "experiment", "+experiment", "debug", "+debug")
    seen: dict[tuple[str, ...], None] = {}
    for job in _job_overrides(argv):
        seen.setdefault(tuple(o for o in job if o.split("=", 1)[0].split(".", 1)[0] in keys), None)
    return [list(s) for s in seen]


def check_ddp_command(argv: list[str]) -> None:
    """Refuse a sweep of DDP jobs under a launcher that cannot run them, and a global batch size
    that does not divide over the processes (also checked by the data module, for devices=auto)."""
    if any(a.startswith("data.batch_size_is_global=") and a.endswith("true") for a in argv):
        _check_global_batch(argv)
    if not MULTIRUN & set(argv) or _launcher(argv) in SAFE_LAUNCHERS:
        return
    if not any("ddp" in a or "devices" in a or "experiment" in a or "strategy" in a or "debug" in a
               for a in argv):
        return  # nothing on the command line can make a job DDP (the default trainer is not)
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from src.compose import CONF_DIR

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            for setting in _trainer_settings(argv):
                n = processes(compose("train", overrides=setting).trainer)
                if n > 1:
                    raise ConfigError(
                        f"a sweep of DDP jobs ({n} processes each) cannot run under hydra/launcher="
                        f"{_launcher(argv)}, whose workers hold one GPU slot each: add hydra/launcher=sequential "
                        f"(one DDP job after another) or hydra/launcher=slurm (one SLURM job per DDP job)")
    finally:
        GlobalHydra.instance().clear()


def _check_global_batch(argv: list[str]) -> None:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from src.cli import _job_overrides
    from src.compose import CONF_DIR
    from src.ddp.batch import per_process_batch

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            for job in {tuple(o for o in j if not o.startswith("seed=")): None for j in _job_overrides(argv)}:
                cfg = compose("train", overrides=list(job))
                world = processes(cfg.trainer) * int(cfg.trainer.get("num_nodes", 1) or 1)
                if cfg.data.get("batch_size_is_global") and world > 1:
                    per_process_batch(int(cfg.data.batch_size), world)
    finally:
        GlobalHydra.instance().clear()
