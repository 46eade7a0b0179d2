"""MLflow for studies (conf/logger/mlflow.yaml): one run per job, one experiment per sweep.

Lightning's MLFlowLogger does the per-epoch logging; this subclass adds what a study needs:
- a local store by default (SQLite at outputs/mlflow.db, artifacts in outputs/mlartifacts), its
  paths made absolute so every sweep worker writes to the same files;
- experiment = the study, run name = setting + seed, a tag per override, the flattened composed
  config as params, nested under the sweep's parent run (src/tracking/sweep.py);
- the run is created when the logger is built and ended by :meth:`close_job` with the job's
  outcome (FINISHED, or FAILED with metrics.json's one-line error), not by Lightning's finalize,
  which runs after fit and again after test and cannot know whether the job later fails;
- every store call retries while SQLite reports the database busy, so parallel jobs share one
  store (SQLite serialises writers; each call is one short transaction).
"""
from __future__ import annotations

import os
import re
import time
from pathlib import Path

from lightning.pytorch.loggers import MLFlowLogger

from src import env
from src.env import ENV_PARENT_RUN
from src.results import ENDED_WELL
from src.tracking.job import final_labels, final_numbers, flat_config, identity, job_tags

# MLflow 3 sends usage telemetry unless told not to; a local-first study tool stays quiet unless
# the user opts in (MLFLOW_DISABLE_TELEMETRY=false).
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

DEFAULT_URI = "sqlite:///outputs/mlflow.db"
STATUS = {**dict.fromkeys(ENDED_WELL, "FINISHED"), "killed": "KILLED"}  # anything else (failed, diverged): FAILED
_SERVER = re.compile(r"^(https?|databricks)")


class _Retrying:
    """An MlflowClient whose calls are retried while the store is busy: SQLite's own wait (5 s)
    can run out under many writers, and MLflow reports that as TEMPORARILY_UNAVAILABLE."""

    def __init__(self, client, attempts: int = 8):
        self._client, self._attempts = client, attempts

    def __getattr__(self, name):
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        def call(*args, **kwargs):
            from mlflow.exceptions import MlflowException

            for attempt in range(self._attempts):
                try:
                    return attr(*args, **kwargs)
                except MlflowException as e:
                    if e.error_code != "TEMPORARILY_UNAVAILABLE" or attempt == self._attempts - 1:
                        raise
                    time.sleep(0.2 * 2 ** attempt)

        return call


def local_uri(uri: str | None) -> str:
    """``sqlite:///outputs/mlflow.db`` relative to where the command runs, made absolute."""
    uri = uri or DEFAULT_URI
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        path = Path(uri[len("sqlite:///"):]).resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path}"
    return uri


def client_for(uri: str):
    from mlflow.tracking import MlflowClient

    return _Retrying(MlflowClient(uri))


def experiment_id(client, uri: str, name: str, artifact_root: str | None) -> str:
    """The study's experiment, created on first use. Parallel jobs may race to create it: the
    loser finds the winner's. A local store keeps artifacts under artifact_root/<study>."""
    from mlflow.exceptions import MlflowException

    from src.errors import UserError

    exp = client.get_experiment_by_name(name)
    if exp is None:
        location = None
        if artifact_root and not _SERVER.match(uri):
            location = (Path(artifact_root).resolve() / re.sub(r"[^\w.=,+-]", "_", name)).as_uri()
        try:
            return client.create_experiment(name, artifact_location=location)
        except MlflowException:
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise
    if exp.lifecycle_stage == "deleted":
        raise UserError(f"MLflow experiment '{name}' was deleted: restore it (mlflow experiments restore "
                        f"--experiment-id {exp.experiment_id}) or set logger.mlflow.experiment_name")
    return exp.experiment_id


class MLflowTracker(MLFlowLogger):
    def __init__(self, tracking_uri: str | None = None, artifact_root: str | None = "outputs/mlartifacts",
                 experiment_name: str | None = None, run_name: str | None = None, tags: dict | None = None,
                 log_model: bool | str = False, prefix: str = "", job=None):
        from src.runs import in_multirun

        if in_multirun():
            from src.log_filters import quiet_mlflow

            quiet_mlflow()
        cfg = job.cfg if job is not None else None  # built by TrackedJob.build (train.py)
        job = identity(cfg)
        uri = local_uri(tracking_uri)
        name = experiment_name or job.study
        all_tags = {**job_tags(job), **(dict(tags) if tags else {})}
        if parent := env.get(ENV_PARENT_RUN):  # set by the sweep's launching process for its jobs
            from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

            all_tags[MLFLOW_PARENT_RUN_ID] = parent
        super().__init__(experiment_name=name, run_name=run_name or job.run_name, tracking_uri=uri,
                         tags=all_tags, log_model=log_model, prefix=prefix)
        self._mlflow_client = _Retrying(self._mlflow_client)
        self._experiment_id = experiment_id(self._mlflow_client, uri, name, artifact_root)
        self._params: dict[str, str] = {}
        self._last_step = 0
        _ = self.experiment  # the run exists from now on, also if the job fails before its first epoch
        if cfg is not None:
            self.log_hyperparams(flat_config(cfg))

    def log_hyperparams(self, params) -> None:
        """Params are write-once in MLflow: a key already logged (train.py logs the study's knobs
        again at the end) is skipped, so the composed config's value stays."""
        from lightning.fabric.utilities.logger import _convert_params, _flatten_dict
        from mlflow.entities import Param
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH, MAX_PARAMS_TAGS_PER_BATCH

        new = {k: str(v)[:MAX_PARAM_VAL_LENGTH] for k, v in _flatten_dict(_convert_params(params)).items()
               if k not in self._params}
        items = [Param(k, v) for k, v in new.items()]
        for i in range(0, len(items), MAX_PARAMS_TAGS_PER_BATCH):
            self.experiment.log_batch(self.run_id, params=items[i:i + MAX_PARAMS_TAGS_PER_BATCH])
        self._params.update(new)

    def log_metrics(self, metrics, step: int | None = None) -> None:
        super().log_metrics(metrics, step)
        self._last_step = max(self._last_step, step or 0)

    def finalize(self, status: str = "success") -> None:
        if self._checkpoint_callback:  # log_model=true: the checkpoints, as Lightning would
            self._scan_and_log_checkpoints(self._checkpoint_callback)

    def close_job(self, outcome: dict, files: list) -> None:
        """metrics.json's numbers as the run's final metrics (at its last step, so they are the
        values the UI and search_runs show), its words as tags, the files as artifacts, the end."""
        from mlflow.entities import Metric, RunTag
        from mlflow.utils.validation import MAX_TAG_VAL_LENGTH

        client, run_id = self.experiment, self.run_id
        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, self._last_step) for k, v in final_numbers(outcome).items()]
        tags = [RunTag(k, v[:MAX_TAG_VAL_LENGTH]) for k, v in final_labels(outcome).items()]
        client.log_batch(run_id, metrics=metrics, tags=tags[:100])
        for f in files:
            client.log_artifact(run_id, str(f.path), f.folder)
        client.set_terminated(run_id, STATUS.get(outcome.get("status"), "FAILED"))
