"""One job as the experiment trackers see it (issue 18): its names, tags, parameters and its end.

train.py runs every job inside :func:`tracked_runs`. A tracker logger (MLflow, W&B) built in the
job registers itself here; when the job ends -- completed, failed, diverged or interrupted -- each
one is closed with the outcome metrics.json records, so a tracker never says "finished" for a job
that failed, and the error it shows is the same line as the run folder's. A tracker the job never
got to build (it failed before the loggers) is built then, so every job has its run.

Nothing here imports mlflow or wandb: a run without trackers pays nothing.
"""
from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import re
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from src.errors import UserError

# logger _target_ -> (the package it needs, the pyproject extra that installs it)
TRACKERS = {
    "src.tracking.mlflow_logger.MLflowTracker": ("mlflow", "mlflow"),
    "src.tracking.wandb_logger.WandbTracker": ("wandb", "wandb"),
}
SINGLE_RUNS_STUDY = "runs"  # single runs live in outputs/runs/, so their study is called that
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}$")
_KEY = re.compile(r"[^\w./\- ]")  # what MLflow allows in a key (W&B is laxer)



def tracker_entries(cfg) -> dict[str, str]:
    """logger-group key -> _target_ of the entries that are experiment trackers."""
    loggers = OmegaConf.select(cfg, "logger", default=None) or {}
    return {k: str(v.get("_target_")) for k, v in loggers.items()
            if isinstance(v, DictConfig) and str(v.get("_target_")) in TRACKERS}


def require(target: str) -> None:
    """A one-line error naming the extra when a tracker's package is not installed."""
    module, extra = TRACKERS[target]
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # ValueError: present in sys.modules as None (blocked)
        found = False
    if not found:
        raise UserError(f"logger={module} needs the {module} package: pip install -e \".[{extra}]\"")


# ---------------------------------------------------------------------------------- names
@dataclass(frozen=True)
class JobIdentity:
    study: str              # MLflow experiment, W&B group: the sweep
    setting: str            # the swept values but the seed ("default" when only the seed is swept)
    run_name: str           # <setting>/seed=<n>
    seed: object
    run_dir: str
    sweep_dir: str | None
    overrides: list[str] = field(default_factory=list)


def study_name(sweep_dir: str | Path) -> str:
    """The sweep folder's name; a dated layout (multirun/<date>/<time>) keeps its date too."""
    p = Path(str(sweep_dir))
    return f"{p.parent.name}/{p.name}" if _DATE.match(p.parent.name) else p.name


def identity(cfg=None) -> JobIdentity:
    from hydra.core.hydra_config import HydraConfig

    from src import settings
    from src.results import task_overrides
    from src.runs import in_multirun

    try:
        hc = HydraConfig.get()
    except ValueError:  # built outside a Hydra job
        hc = None
    seed = cfg.get("seed") if cfg is not None else None
    run_dir = str(OmegaConf.select(cfg, "paths.output_dir", default="")) if cfg is not None else ""
    if not run_dir and hc is not None:
        run_dir = str(hc.runtime.output_dir or "")
    overrides = task_overrides()
    sweep_dir = str(hc.sweep.dir) if hc is not None and in_multirun() else None
    # which overrides define a setting: the rule folder names and the report's table use too
    if sweep_dir:  # what tells this job from the others of its sweep: the swept settings
        swept = swept_keys(Path(sweep_dir))
        setting = settings.setting_name([o for o in overrides if _key_of(o) in swept])
    else:  # a single run: every setting it changed, named as its folder is
        setting = settings.folder_name(overrides)
    study = study_name(sweep_dir) if sweep_dir else SINGLE_RUNS_STUDY
    return JobIdentity(study, setting, f"{setting}/seed={seed}", seed, run_dir, sweep_dir, overrides)


def _key_of(override: str) -> str:
    return override.partition("=")[0].lstrip("+~")


def swept_keys(sweep_dir: Path) -> set[str]:
    """The keys the sweep gave several values (Hydra's multirun.yaml, written before the first
    job), but the seed."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from src.results import task_overrides

    try:
        hydra = OmegaConf.load(sweep_dir / "multirun.yaml").hydra
        task = [str(t) for t in hydra.overrides.task]  # the command line's, then a preset's sweeper.params
        task += [f"{k}={v}" for k, v in (OmegaConf.select(hydra, "sweeper.params") or {}).items()]
        parsed = OverridesParser.create().parse_overrides(task)
    except Exception:  # no multirun.yaml (another launcher's layout): name runs by all overrides
        return {_key_of(o) for o in task_overrides()} - {"seed"}
    return {o.key_or_group for o in parsed if o.is_sweep_override()} - {"seed"}


def override_tags(overrides: list[str]) -> dict[str, str]:
    """Every command-line override as a tag (override.<key> = value), plus all of them in one."""
    tags = {"overrides": " ".join(overrides)}
    for o in overrides:
        key, _, value = o.partition("=")
        deleted = key.startswith("~")
        tags[f"override.{_KEY.sub('_', key.lstrip('+~'))}"] = "(deleted)" if deleted and not value else value
    return tags


def job_tags(job: JobIdentity) -> dict[str, str]:
    tags = {"study": job.study, "setting": job.setting, "seed": str(job.seed), "run_dir": job.run_dir,
            **override_tags(job.overrides)}
    if job.sweep_dir:
        tags["sweep_dir"] = job.sweep_dir
    return tags


def config_container(cfg) -> dict:
    """The composed config as plain data, resolved where it can be (a value that needs Hydra's
    runtime outside a job stays an interpolation rather than failing the run)."""
    try:
        return OmegaConf.to_container(cfg, resolve=True)
    except Exception:
        return OmegaConf.to_container(cfg, resolve=False)


def flat_config(cfg) -> dict[str, str]:
    """The composed config flattened to dotted keys and string values (MLflow params)."""
    out: dict[str, str] = {}

    def walk(node, prefix: str) -> None:
        if isinstance(node, dict) and node:
            for k, v in node.items():
                walk(v, f"{prefix}.{k}" if prefix else str(k))
        elif prefix:
            out[_KEY.sub("_", prefix)] = str(node)

    walk(config_container(cfg), "")
    return out


# -------------------------------------------------------------------------------- outcome
def fingerprint(path: Path) -> tuple | None:
    """Which metrics.json is there: write_json replaces the file, so a new one is a new inode (a
    time stamp alone could miss a fast failure on a file system with coarse times)."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def job_outcome(run_dir: Path, before: tuple | None) -> dict:
    """metrics.json written by this job (completed, failed, diverged); else the job was stopped."""
    path = run_dir / "metrics.json"
    with contextlib.suppress(OSError, ValueError):
        if fingerprint(path) not in (None, before):
            return json.loads(path.read_text())
    return {"status": "killed", "error": "the job stopped before recording its outcome in metrics.json"}


def final_numbers(outcome: dict) -> dict[str, float]:
    """The numbers of metrics.json (test/acc, val/acc_best, epoch times, images/s, ...); the seed
    names the run (a param and a tag), it is no result."""
    return {k: float(v) for k, v in outcome.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and k != "seed"}


def final_labels(outcome: dict) -> dict[str, str]:
    """Its words and flags (status, error, tested_weights, val_is_test_split, ...)."""
    return {_KEY.sub("_", k): str(v) for k, v in outcome.items() if isinstance(v, (str, bool))}


@dataclass(frozen=True)
class Artifact:
    path: Path
    folder: str | None = None   # where it goes in the tracker's run (None: top level)


def artifacts(cfg, run_dir: Path, tmp: Path, outcome: dict) -> list[Artifact]:
    """metrics.json, the test confusion matrix (CSV and figure), the activation figure and the
    job's Hydra config; the figures are drawn here because the classifier draws its own only for
    TensorBoard. lit.log_images=false turns the figures off here too."""
    files = [Artifact(run_dir / name) for name in ("metrics.json", "test_confusion.csv")]
    files += [Artifact(run_dir / ".hydra" / n, "hydra") for n in ("config.yaml", "overrides.yaml")]
    files = [f for f in files if f.path.is_file()]
    if outcome.get("status") != "completed" or not OmegaConf.select(cfg, "lit.log_images", default=True):
        return files
    from src.tracking.figures import activation_png, confusion_png

    for draw, args in ((confusion_png, (run_dir / "test_confusion.csv", tmp / "confusion_matrix.png")),
                       (activation_png, (cfg.get("activation"), tmp / "activation.png"))):
        try:
            if (png := draw(*args)) is not None:
                files.append(Artifact(png))
        except Exception as e:  # a figure is not worth failing the job's record for
            _warn(f"could not draw {args[-1].name}: {type(e).__name__}: {e}")
    return files


# ------------------------------------------------------------------------------- the job
class TrackedJob:
    """One job's trackers: train.py builds its loggers through :meth:`build`, which hands a tracker
    the job's config and keeps it, so that :func:`tracked_runs` can close it with the outcome. The
    state lives here, in the object the context yields, not in module globals."""

    def __init__(self, cfg, wanted: dict[str, str] | None = None):
        self.cfg, self.wanted = cfg, dict(wanted or {})
        self.trackers: list = []

    def build(self, node):
        """A logger from its config node; a tracker also gets this job (its names, its config)."""
        from hydra.utils import instantiate

        if str(node.get("_target_")) not in TRACKERS:
            return instantiate(node)
        tracker = instantiate(node, job=self)
        self.trackers.append(tracker)
        return tracker


def _target(obj) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


@contextlib.contextmanager
def tracked_runs(cfg):
    """Around one job (outside recorded_outcome, so metrics.json is written when this closes);
    yields the :class:`TrackedJob` that builds the job's loggers."""
    from src.ddp.ranks import is_launch_rank_zero

    wanted = tracker_entries(cfg)
    if not wanted or not is_launch_rank_zero():  # DDP: one tracked run, rank 0's (src/ddp/)
        yield TrackedJob(cfg)
        return
    for target in wanted.values():
        require(target)
    job = TrackedJob(cfg, wanted)
    before = fingerprint(Path(str(cfg.paths.output_dir)) / "metrics.json")  # overwrite=true: an old one
    try:
        yield job
    finally:
        _close(job, before)


def _close(job: TrackedJob, before: tuple | None) -> None:
    cfg = job.cfg
    run_dir = Path(str(cfg.paths.output_dir))
    outcome = job_outcome(run_dir, before)
    trackers = list(job.trackers)
    for key, target in job.wanted.items():
        if not any(_target(t) == target for t in trackers):
            try:  # the job failed before its loggers existed: its run still records the failure
                trackers.append(job.build(cfg.logger[key]))
            except Exception as e:
                _warn(f"{key}: no run for this job: {type(e).__name__}: {' '.join(str(e).split())[:300]}")
    with tempfile.TemporaryDirectory(prefix="imgcls-tracking-") as tmp:
        files = artifacts(cfg, run_dir, Path(tmp), outcome)
        for t in trackers:
            try:
                t.close_job(outcome, files)
            except Exception as e:  # the job's own result (metrics.json) stands either way
                _warn(f"{type(t).__name__} could not close its run: {type(e).__name__}: "
                      f"{' '.join(str(e).split())[:300]}")


def _warn(message: str) -> None:
    print(f"[tracking] {message}", file=sys.stderr)
