"""Weights & Biases for studies (conf/logger/wandb.yaml): one run per job, one group per sweep.

Lightning's WandbLogger does the per-epoch logging; this subclass adds:
- offline by default when no API key is set (neither WANDB_API_KEY nor a `wandb login` entry in
  ~/.netrc): the runs wait in <run dir>/wandb/offline-run-*/ for `wandb sync`, nothing is sent;
- group = the study, job_type = the setting, name = setting + seed, tags = the overrides,
  config = the composed config;
- :meth:`close_job` puts metrics.json's values in the run's summary, the figures in its media,
  and calls finish -- always, also for a failed job (exit code 1). WandbLogger would otherwise
  hand the next job of a reused sweep worker the still-open ``wandb.run`` (its logs then bleed
  into the previous job's run).
"""
from __future__ import annotations

import netrc
import os
from pathlib import Path
from urllib.parse import urlparse

from lightning.pytorch.loggers import WandbLogger

from src.results import ENDED_WELL
from src.tracking.job import config_container, identity

DEFAULT_HOST = "https://api.wandb.ai"
JOB_TYPE_MAX = 64  # W&B's limits on job_type and on each tag
TAG_MAX = 64


def has_api_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL") or DEFAULT_HOST).hostname
    path = os.environ.get("NETRC") or os.path.expanduser("~/.netrc")
    try:
        return netrc.netrc(path).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def wandb_mode(mode: str | None = None) -> str:
    """The mode asked for (config, else WANDB_MODE); online only when a key is set."""
    return mode or os.environ.get("WANDB_MODE") or ("online" if has_api_key() else "offline")


def setup_mode(mode: str | None = None) -> str:
    """wandb_mode(), made the process's W&B mode too: an offline *run* alone still lets the SDK
    post its own usage metrics (OpenTelemetry) to the server, going by the process's settings."""
    import wandb

    mode = wandb_mode(mode)
    if mode in ("offline", "dryrun", "disabled"):
        wandb.setup(settings=wandb.Settings(mode=mode))
    return mode


def quiet_settings():
    """Sweep jobs share one terminal: W&B's banner and sync hints would repeat for every job."""
    import wandb

    from src.runs import in_multirun

    return wandb.Settings(silent=True) if in_multirun() else None


class WandbTracker(WandbLogger):
    def __init__(self, project: str = "imgcls-studies", entity: str | None = None, save_dir: str = ".",
                 mode: str | None = None, name: str | None = None, group: str | None = None,
                 job_type: str | None = None, tags: list[str] | None = None, log_model: bool | str = False,
                 job=None, **kwargs):
        import wandb

        if wandb.run is not None:  # left open by code outside tracked_runs: never log into it
            wandb.finish()
        cfg = job.cfg if job is not None else None  # built by TrackedJob.build (train.py)
        job = identity(cfg)
        Path(save_dir).mkdir(parents=True, exist_ok=True)
        super().__init__(name=name or job.run_name, save_dir=save_dir, project=project, log_model=log_model,
                         entity=entity, group=group or job.study, job_type=(job_type or job.setting)[:JOB_TYPE_MAX],
                         tags=[t[:TAG_MAX] for t in (tags if tags is not None else job.overrides)],
                         config=config_container(cfg) if cfg is not None else None,
                         mode=setup_mode(mode), settings=quiet_settings(), **kwargs)
        self._wandb_init.pop("anonymous", None)  # deprecated in wandb; Lightning always passes it
        _ = self.experiment  # started now: the run exists also if the job fails before its first epoch

    def close_job(self, outcome: dict, files: list) -> None:
        import wandb

        run = self.experiment
        run.summary.update({k: v for k, v in outcome.items()
                            if isinstance(v, (int, float, str, bool)) and not k.startswith("_")})
        images = {f.path.stem: wandb.Image(str(f.path)) for f in files if f.path.suffix == ".png"}
        if images:
            run.log(images)
        run.finish(exit_code=0 if outcome.get("status") in ENDED_WELL else 1)
