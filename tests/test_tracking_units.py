"""Tracking pieces that need no training: the one-line refusal when a tracker's package is
missing, the names runs get, and when W&B goes online."""
from __future__ import annotations

import sys

import pytest
from omegaconf import OmegaConf

from src.errors import UserError
from src.tracking.job import override_tags, require, study_name, tracked_runs
from src.tracking.sweep import sweep_start
from src.tracking.wandb_logger import has_api_key, wandb_mode
from tests.conftest import compose_cfg

WANDB = "src.tracking.wandb_logger.WandbTracker"
MLFLOW = "src.tracking.mlflow_logger.MLflowTracker"


def test_missing_package_is_refused_in_one_line_naming_the_extra(monkeypatch, capsys, tmp_path):
    require(WANDB)  # installed here (the test extra): no complaint
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if it were not installed
    with pytest.raises(UserError) as e:
        require(WANDB)
    assert str(e.value) == 'logger=wandb needs the wandb package: pip install -e ".[wandb]"'
    cfg = compose_cfg(["model=lenet5", "data=mnist", "logger=default_wandb"], tmp_path)
    with pytest.raises(UserError, match=r"\.\[wandb\]"), tracked_runs(cfg):  # a single run: before training
        pytest.fail("the job must not start")
    sweep = OmegaConf.create({"logger": {"csv": {"_target_": "x"}, "wandb": {"_target_": WANDB}}})
    with pytest.raises(SystemExit) as stop:  # a sweep: before its first job
        sweep_start(sweep)
    assert stop.value.code == 2
    assert capsys.readouterr().err == 'error: logger=wandb needs the wandb package: pip install -e ".[wandb]"\n'


def test_mlflow_extra_named_too(monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)
    with pytest.raises(UserError, match=r'^logger=mlflow needs the mlflow package: pip install -e "\.\[mlflow\]"$'):
        require(MLFLOW)


def test_logger_sets_add_trackers_to_tensorboard_and_csv(tmp_path):
    for name, extra in (("default_mlflow", ["mlflow"]), ("default_wandb", ["wandb"]),
                        ("default_mlflow_wandb", ["mlflow", "wandb"])):
        cfg = compose_cfg(["model=lenet5", "data=mnist", f"logger={name}"], tmp_path)
        assert list(cfg.logger) == ["tensorboard", "csv", *extra], name


def test_study_names_and_override_tags():
    assert study_name("outputs/multirun/2026-01-01/12-00-00") == "2026-01-01/12-00-00"
    assert study_name("/scratch/relu_vs_tanh") == "relu_vs_tanh"
    tags = override_tags(["activation=relu", "+trainer.foo=1", "~callbacks.progress_bar", "optimizer.lr=0.05"])
    assert tags == {"overrides": "activation=relu +trainer.foo=1 ~callbacks.progress_bar optimizer.lr=0.05",
                    "override.activation": "relu", "override.trainer.foo": "1",
                    "override.callbacks.progress_bar": "(deleted)", "override.optimizer.lr": "0.05"}


def test_wandb_is_offline_unless_a_key_is_set(monkeypatch, tmp_path):
    for var in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    assert not has_api_key() and wandb_mode() == "offline"
    (tmp_path / "netrc").write_text("machine api.wandb.ai\n  login user\n  password " + "k" * 40 + "\n")
    assert has_api_key() and wandb_mode() == "online"  # `wandb login` wrote this
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    assert wandb_mode() == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert wandb_mode() == "disabled" and wandb_mode("offline") == "offline"  # config, then env, then key


def test_outcome_is_this_jobs_metrics_json_else_killed(tmp_path):
    from src.results import write_json
    from src.tracking.job import fingerprint, job_outcome

    write_json(tmp_path / "metrics.json", {"status": "completed", "test/acc": 0.5})  # an earlier run's (overwrite)
    before = fingerprint(tmp_path / "metrics.json")
    assert job_outcome(tmp_path, before)["status"] == "killed"  # this job wrote nothing: interrupted
    write_json(tmp_path / "metrics.json", {"status": "failed", "error": "RuntimeError: x"})
    assert job_outcome(tmp_path, before) == {"status": "failed", "error": "RuntimeError: x"}
    assert job_outcome(tmp_path / "elsewhere", None)["status"] == "killed"


def test_the_job_state_lives_in_the_tracked_job_not_in_module_globals(tmp_path):
    """tracked_runs yields the object that builds the trackers and closes them; the module keeps
    constants only (no dict or list that one job could leave behind for the next)."""
    import src.tracking.job as job_module
    from src.tracking.job import TrackedJob

    mutable = [n for n, v in vars(job_module).items() if isinstance(v, (dict, list, set)) and not n.isupper()
               and not n.startswith("__")]
    assert mutable == []
    cfg = OmegaConf.create({"logger": {"csv": {"_target_": "lightning.pytorch.loggers.CSVLogger",
                                               "save_dir": str(tmp_path)}}, "paths": {"output_dir": str(tmp_path)}})
    with tracked_runs(cfg) as job:
        assert isinstance(job, TrackedJob) and job.cfg is cfg
        logger = job.build(cfg.logger.csv)
    assert type(logger).__name__ == "CSVLogger" and job.trackers == []  # not a tracker: nothing to close
