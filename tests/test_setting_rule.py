"""One rule (src/settings.py) decides which overrides are a *setting*; the three places that use it
must agree: the sweep's setting folder (Hydra's `hydra.sweep.subdir` / a single run's dir), the
report's grouping (`cfg:<key>` columns) and the experiment trackers' run names."""
from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import OmegaConf, open_dict

import src.resolvers  # noqa: F401  (registers ${setting_dir:} and ${run_suffix:})
from src.analysis.runs import load_runs
from src.tracking.job import identity
from tests.conftest import CONF
from tests.test_report_figures import fake_run, multirun_yaml

# each kind of key, with whether it is a setting
KINDS = {
    "a choice": ("activation=tanh", True),
    "a value": ("optimizer.lr=0.05", True),
    "an added key": ("+trainer.gradient_clip_val=1.0", True),
    "a debug mode (computes something else)": ("debug=fdr", True),
    "a deleted callback that changes training": ("~callbacks.model_checkpoint", True),
    "the seed (a replicate)": ("seed=3", False),
    "the fold (a replicate)": ("data.fold=1", False),
    "run control: resume": ("resume=true", False),
    "run control: jobs_per_gpu": ("jobs_per_gpu=2", False),
    "run control: seeds_per_job": ("seeds_per_job=4", False),
    "run control: a pack's seeds (set by the launcher)": ("pack_seeds=[0,1]", False),
    "run control: the Optuna trial": ("++trial=4", False),
    "run control: the optimised metric": ("optimized_metric=val/acc_best", False),
    "run control: a checkpoint to continue": ("ckpt_path=last", False),
    "a location": ("paths.cache_dir=/tmp/elsewhere", False),
    "an absolute path as value": ("+data.extra=/srv/data/x", False),
    "a logger (cannot change a result)": ("logger=csv", False),
    "the progress bar": ("~callbacks.progress_bar", False),
    "the model summary": ("trainer.enable_model_summary=false", False),
}


def _compose(overrides: list[str], multirun: bool):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.mode = RunMode.MULTIRUN if multirun else RunMode.RUN
        cfg.hydra.runtime.output_dir = "/tmp/unused"
    return cfg


@pytest.mark.parametrize("kind", list(KINDS))
def test_each_kind_of_key_goes_through_all_three_alike(kind, tmp_path):
    override, is_setting = KINDS[kind]
    base = ["model=lenet5", "data=mnist"]
    key = override.lstrip("+~").split("=")[0]

    # 1. the folders: a sweep job's setting folder and a single run's dir
    cfg = _compose([*base, override], multirun=True)
    subdir = OmegaConf.select(cfg, "hydra.sweep.subdir")
    run_dir = OmegaConf.select(cfg, "hydra.run.dir")
    folder = subdir.split("/seed=")[0]
    single = run_dir.split("/")[-1].split("_", 1)[1]  # outputs/runs/<date>/<time>_<setting>
    assert "data=mnist" in folder and "model=lenet5" in folder and "model=lenet5" in single
    assert (key in folder) is is_setting and (key in single) is is_setting, (kind, folder, single)
    assert subdir.endswith("/seed=3" if key == "seed" else "/seed=0")

    # 2. the report: a cfg:<key> column only for a setting
    sweep = tmp_path / "sweep"
    multirun_yaml(sweep, [*base, override])
    fake_run(sweep, [*base, override], 0, {"status": "completed", "test/acc": 0.9})
    runs = load_runs(sweep)
    assert (f"cfg:{key}" in runs.columns) is is_setting, (kind, list(runs.columns))

    # 3. the trackers: a single run is named by its settings, as its folder is
    HydraConfig.instance().set_config(_compose([*base, override], multirun=False))
    try:
        job = identity(cfg)
    finally:
        HydraConfig.instance().cfg = None
    assert (key in job.setting) is is_setting, (kind, job.setting)
    assert job.setting == single  # named as its folder is


def test_debug_modes_of_one_seed_get_two_folders():
    """`-m debug=limit,fdr seed=0` wrote both jobs into one folder when debug was left out of names."""
    folders = {OmegaConf.select(_compose(["model=lenet5", "data=mnist", f"debug={d}", "seed=0"], True),
                                "hydra.sweep.subdir") for d in ("limit", "fdr")}
    assert folders == {"data=mnist,debug=limit,model=lenet5/seed=0", "data=mnist,debug=fdr,model=lenet5/seed=0"}


def test_a_sweep_job_is_named_by_its_swept_settings_only(tmp_path):
    """In a sweep, the trackers name a job by the swept keys that are settings (not jobs_per_gpu)."""
    sweep = tmp_path / "sweep"
    multirun_yaml(sweep, ["activation=relu,tanh", "jobs_per_gpu=1,2", "seed=0,1", "model=lenet5"])
    cfg = _compose(["activation=tanh", "jobs_per_gpu=2", "seed=1", "model=lenet5"], multirun=True)
    with open_dict(cfg):
        cfg.hydra.sweep.dir = str(sweep)
    HydraConfig.instance().set_config(cfg)
    try:
        job = identity(cfg)
    finally:
        HydraConfig.instance().cfg = None
    assert job.setting == "activation=tanh" and job.run_name == "activation=tanh/seed=1"
