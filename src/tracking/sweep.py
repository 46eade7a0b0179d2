"""The sweep's side of tracking, run in the launching process by src/sweeps/callback.py.

- :func:`sweep_start` (before any job): refuses in one line a tracker whose package is missing,
  and opens the MLflow parent run, creating the store and the study's experiment first -- so the
  parallel jobs never race to create the SQLite tables (a slow migration) or the experiment. The
  jobs find the parent through an environment variable (loky workers, SLURM jobs inherit it) and
  nest their runs under it.
- :func:`sweep_end` (after the report): the summary table and the report's files as artifacts of
  the parent run (and as an MLflow table), and a W&B "summary" run in the sweep's group holding
  the table as a wandb.Table and the figures. It never raises: the sweep's outcome comes first.
"""
from __future__ import annotations

import json
import os
import sys
from collections import Counter
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from src import env
from src.env import ENV_PARENT_RUN
from src.errors import UserError
from src.tracking.job import TRACKERS, require, study_name

REPORT_SUFFIXES = {".md", ".csv", ".png", ".tex", ".yaml"}


def _trackers(config: DictConfig) -> dict[str, DictConfig]:
    loggers = OmegaConf.select(config, "logger", default=None) or {}
    return {str(v._target_).rsplit(".", 1)[-1]: v for v in loggers.values()
            if isinstance(v, DictConfig) and str(v.get("_target_")) in TRACKERS}


def sweep_start(config: DictConfig) -> None:
    nodes = _trackers(config)
    try:
        for node in nodes.values():
            require(str(node._target_))
    except UserError as e:  # before any job: one line, not one failed job per setting
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    if "MLflowTracker" in nodes:
        try:
            os.environ[ENV_PARENT_RUN] = _mlflow_parent(nodes["MLflowTracker"], config)
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            raise SystemExit(2) from None
        except Exception as e:  # the jobs still log, only not nested
            _warn(f"MLflow: no parent run for the sweep: {type(e).__name__}: {' '.join(str(e).split())[:300]}")


def _mlflow_parent(node: DictConfig, config: DictConfig) -> str:
    from src.log_filters import quiet_mlflow
    from src.tracking.mlflow_logger import client_for, experiment_id, local_uri

    quiet_mlflow()
    uri = local_uri(node.get("tracking_uri"))
    client = client_for(uri)
    name = node.get("experiment_name") or study_name(config.hydra.sweep.dir)
    exp = experiment_id(client, uri, name, node.get("artifact_root"))
    overrides = [str(o) for o in config.hydra.overrides.task]
    tags = {"mlflow.runName": "sweep", "role": "sweep", "study": name, "sweep_dir": str(config.hydra.sweep.dir),
            "overrides": " ".join(overrides)}
    return client.create_run(exp, tags=tags).info.run_id


def sweep_end(config: DictConfig, sweep_dir: Path) -> None:
    nodes = _trackers(config)
    if not nodes:
        return
    files = sorted(p for p in sweep_dir.iterdir() if p.is_file() and p.suffix in REPORT_SUFFIXES) \
        if sweep_dir.is_dir() else []
    table = _summary_table(sweep_dir)
    counts = _outcomes(sweep_dir)
    for name, node in nodes.items():
        try:
            if name == "MLflowTracker":
                _mlflow_end(node, files, table, counts)
            else:
                _wandb_end(node, config, sweep_dir, files, table, counts)
        except Exception as e:
            _warn(f"{name}: the sweep summary was not logged: {type(e).__name__}: {' '.join(str(e).split())[:300]}")


def _summary_table(sweep_dir: Path):
    import pandas as pd

    path = sweep_dir / "summary.csv"
    return pd.read_csv(path) if path.is_file() else None


def _outcomes(sweep_dir: Path) -> dict[str, int]:
    counts = Counter()
    for mj in sweep_dir.rglob("metrics.json"):
        try:
            counts[json.loads(mj.read_text()).get("status", "unknown")] += 1
        except (OSError, ValueError):
            counts["unreadable"] += 1
    return {f"jobs_{k}": v for k, v in sorted(counts.items())}


def _mlflow_end(node: DictConfig, files: list[Path], table, counts: dict[str, int]) -> None:
    from mlflow.entities import RunTag

    from src.tracking.mlflow_logger import client_for, local_uri

    run_id = env.get(ENV_PARENT_RUN)
    os.environ.pop(ENV_PARENT_RUN, None)  # this sweep's parent run ends here
    if run_id is None:
        return
    client = client_for(local_uri(node.get("tracking_uri")))
    for path in files:
        client.log_artifact(run_id, str(path))
    if table is not None:  # also as an MLflow table: the UI's artifact view shows it as one
        client.log_table(run_id, data=table, artifact_file="summary_table.json")
    client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in counts.items()])
    client.set_terminated(run_id, "FINISHED")


def _wandb_end(node: DictConfig, config: DictConfig, sweep_dir: Path, files: list[Path], table,
               counts: dict[str, int]) -> None:
    import wandb

    from src.tracking.wandb_logger import setup_mode

    run = wandb.init(project=node.get("project"), entity=node.get("entity"), mode=setup_mode(node.get("mode")),
                     group=node.get("group") or study_name(sweep_dir), job_type="summary", name="summary", dir=str(sweep_dir),
                     config={"overrides": [str(o) for o in config.hydra.overrides.task]},
                     settings=wandb.Settings(silent=True))
    try:
        if table is not None:
            run.log({"summary": wandb.Table(dataframe=table)})
        images = {p.stem: wandb.Image(str(p)) for p in files if p.suffix == ".png"}
        if images:
            run.log(images)
        run.summary.update(counts)
    finally:
        run.finish()


def _warn(message: str) -> None:
    print(f"[tracking] {message}", file=sys.stderr)
