"""Fused seed packs, the launcher's side (src/sweeps/packing.py, src/sweeps/launch.py, src/cli.py):
which jobs share a pack, what Hydra's sweeper gets back for each original job, and the commands
refused before any job starts. Nothing here trains: the pack's own training is src/packs/."""
from __future__ import annotations

import concurrent.futures as cf
import json
import math
from pathlib import Path

import pytest
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf

from src.env import FAKE_GPUS
from src.settings import folder_name
from src.sweeps.packing import auto_size, member_returns, pack_overrides, plan_packs
from tests.test_cli import one_error_line, run_here


def seeds(n: int, *extra: str) -> list[list[str]]:
    return [[*extra, f"seed={s}"] for s in range(n)]


# ------------------------------------------------------------------------------ grouping
def test_seeds_of_one_setting_split_into_consecutive_packs_of_k():
    jobs = seeds(5, "activation=tanh", "seeds_per_job=2")
    packs = plan_packs(jobs, gpus=0)
    assert packs == [[0, 1], [2, 3], [4]]  # the last pack of a setting is smaller
    assert pack_overrides(jobs, packs[0]) == ["activation=tanh", "seeds_per_job=2", "seed=0", "pack_seeds=[0,1]"]
    assert pack_overrides(jobs, packs[1])[-1] == "pack_seeds=[2,3]"
    assert pack_overrides(jobs, packs[2]) == jobs[4]  # a pack of one is an ordinary job: no pack_seeds


def test_seeds_per_job_one_leaves_every_job_alone():
    jobs = seeds(4, "activation=tanh")
    assert plan_packs(jobs, default=1) == [[0], [1], [2], [3]]
    assert [pack_overrides(jobs, [i]) for i in range(4)] == jobs  # exactly the overrides Hydra gave


def test_interleaved_settings_keep_their_own_packs():
    # Hydra's order for `activation=relu,tanh seed=0,1,2`: the settings alternate, seed by seed
    jobs = [[f"activation={a}", f"seed={s}"] for s in range(3) for a in ("relu", "tanh")]
    packs = plan_packs(jobs, default=2, gpus=0)
    assert packs == [[0, 2], [1, 3], [4], [5]]
    assert all(len({j[0] for j in (jobs[i] for i in p)}) == 1 for p in packs)
    assert pack_overrides(jobs, packs[1]) == ["activation=tanh", "seed=0", "pack_seeds=[0,1]"]


def test_jobs_that_differ_in_another_key_never_share_a_pack():
    jobs = [["optimizer.lr=0.1", "seed=0"], ["optimizer.lr=0.2", "seed=1"], ["optimizer.lr=0.1", "seed=2"],
            ["seeds_per_job=3", "seed=3"], ["seeds_per_job=2", "seed=4"], ["seeds_per_job=3", "seed=5"],
            ["seeds_per_job=2", "seed=6"]]
    packs = plan_packs(jobs, default=2, gpus=0)
    assert packs == [[0, 2], [1], [3, 5], [4, 6]]  # lr and seeds_per_job both set a pack apart


def test_a_job_without_an_integer_seed_runs_alone():
    jobs = [["activation=relu"], ["activation=relu", "seed=null"], ["activation=relu", "seed=1"]]
    assert plan_packs(jobs, default=2, gpus=0) == [[0], [1], [2]]


@pytest.mark.parametrize("seeds_, total, slots, gpus, expected", [
    (20, 20, 1, 0, 1),     # no GPU: no packs
    (20, 20, 1, 1, 16),    # one GPU slot: as many seeds as the cap allows
    (4, 4, 2, 1, 2),       # two slots, four seeds: two packs, one per slot
    (3, 60, 4, 4, 3),      # never more than the setting's seeds
    (10, 10, 8, 8, 2),     # 8 slots: packs of 2 leave 5 packs, not one pack of 10
])
def test_auto_size(seeds_, total, slots, gpus, expected):
    assert auto_size(seeds_, total, slots, gpus) == expected


def test_auto_is_one_without_a_gpu_and_fills_the_slots_with_one(monkeypatch):
    jobs = seeds(20, "seeds_per_job=auto")
    monkeypatch.setenv(FAKE_GPUS, "")  # a machine without a visible GPU
    assert plan_packs(jobs, gpu_slots=2) == [[i] for i in range(20)]
    monkeypatch.setenv(FAKE_GPUS, "0")
    assert plan_packs(jobs, gpu_slots=1) == [list(range(16)), list(range(16, 20))]
    assert plan_packs(seeds(4), default="auto", gpu_slots=2) == [[0, 1], [2, 3]]


# ------------------------------------------------------------------------ JobReturn expansion
def fake_member(sweep: Path, overrides: list[str], seed: int, metrics: dict | None) -> Path:
    run = sweep / folder_name(overrides) / f"seed={seed}"
    (run / ".hydra").mkdir(parents=True, exist_ok=True)
    if metrics is not None:
        (run / "metrics.json").write_text(json.dumps(metrics))
    return run


def pack_return(leader_dir: Path | None, value: float = 0.9, status=JobStatus.COMPLETED,
                overrides: list[str] | None = None) -> JobReturn:
    """What Hydra's execute_job returns for the job (a pack's: overrides with pack_seeds)."""
    hydra_cfg = OmegaConf.create({"hydra": {"runtime": {"output_dir": str(leader_dir)}}}) if leader_dir else None
    return JobReturn(overrides=overrides or ["seed=0", "pack_seeds=[0,1]"], hydra_cfg=hydra_cfg, status=status,
                     _return_value=value, task_name="train")


def test_a_pack_returns_one_job_return_per_member_from_its_own_folder(tmp_path):
    setting = ["activation=tanh"]
    dirs = [fake_member(tmp_path, setting, 0, {"status": "completed", "test/acc": 0.91}),
            fake_member(tmp_path, setting, 1, {"status": "completed", "test/acc": 0.87, "val/acc_best": 0.5}),
            fake_member(tmp_path, setting, 2, None),                                      # never finished
            fake_member(tmp_path, setting, 3, {"status": "diverged", "test/acc": 0.1})]   # did not complete
    members = [(10 + s, [*setting, f"seed={s}"]) for s in range(4)]
    out = member_returns(pack_return(dirs[0]), members, "test/acc", lambda o, i: pytest.fail("not needed"))
    assert list(out) == [10, 11, 12, 13]
    assert [r.overrides for r in out.values()] == [ov for _, ov in members]  # no pack_seeds in any
    assert [r.working_dir for r in out.values()] == [str(d) for d in dirs]
    values = [r.return_value for r in out.values()]
    assert values[:2] == [0.91, 0.87] and math.isnan(values[2]) and math.isnan(values[3])
    assert all(r.status == JobStatus.COMPLETED for r in out.values())
    by_own_metric = member_returns(pack_return(dirs[0]), [members[0], (11, [*members[1][1], "optimized_metric=val/acc_best"])],
                                   "test/acc", lambda o, i: None)
    assert by_own_metric[11].return_value == 0.5  # a job's own optimized_metric override is its metric


def test_a_pack_that_failed_past_train_keeps_its_failed_return_for_the_leader(tmp_path):
    members = [(0, ["seed=0"]), (1, ["seed=1"])]
    failed = pack_return(tmp_path / "default" / "seed=0", value=RuntimeError("boom"), status=JobStatus.FAILED)
    out = member_returns(failed, members, "test/acc", lambda o, i: None)
    assert out[0] is failed  # Hydra's sweeper raises it, as for any job that failed past train()
    assert math.isnan(out[1].return_value) and out[1].working_dir == str(tmp_path / "default" / "seed=1")


# ------------------------------------------------------------------- the launcher, faked pool
class FakePool:
    """Runs the submitted jobs when the launcher waits, as a worker would after their submission."""

    def __init__(self):
        self.futures: list[cf.Future] = []
        self.pending: list = []

    def wait(self, futures):
        import time

        time.sleep(0.02)  # files written now are newer than the submission, by the coarse file clock too
        while self.pending:
            self.pending.pop(0)()
        return {f for f in futures if f.done()}

    def in_flight(self):
        return [f for f in self.futures if not f.done()]

    def shutdown(self, kill=False):
        pass


class FakeRunner:
    """Runs each submitted job at once: a pack writes every member's metrics.json as train_pack
    would; the first submission of a job listed in ``die`` loses its worker instead."""
    submitted: list[list[str]] = []
    die: set[str] = set()

    def __init__(self, launcher, n_jobs):
        self.sweep, self.n_jobs, self.pool = Path(str(launcher.config.hydra.sweep.dir)), n_jobs, FakePool()

    def submit(self, idx, overrides):
        from src.sweeps.pool import WorkerDied

        FakeRunner.submitted.append(list(overrides))
        f: cf.Future = cf.Future()
        self.pool.futures.append(f)
        pack = next((o.split("=", 1)[1] for o in overrides if o.startswith("pack_seeds=")), None)
        seeds_ = json.loads(pack) if pack else [int(next(o for o in overrides if o.startswith("seed="))[5:])]
        key = " ".join(o for o in overrides if not o.startswith("resume="))

        def run():
            if key in FakeRunner.die:
                FakeRunner.die.discard(key)
                fake_member(self.sweep, overrides, seeds_[0], {"status": "completed", "test/acc": 0.5})  # done before
                f.set_exception(WorkerDied("the worker process died during this job"))
                return
            for s in seeds_:
                fake_member(self.sweep, overrides, s, {"status": "completed", "test/acc": s / 10})
            f.set_result(pack_return(self.sweep / folder_name(overrides) / f"seed={seeds_[0]}", seeds_[0] / 10,
                                     overrides=list(overrides)))

        self.pool.pending.append(run)
        return f


@pytest.fixture
def launch(monkeypatch, tmp_path):
    from src.sweeps import launch as launch_module, runners

    FakeRunner.submitted, FakeRunner.die = [], set()
    monkeypatch.setattr(runners, "PoolRunner", FakeRunner)
    monkeypatch.setattr(runners, "launcher_jobs", lambda launcher: 2)
    monkeypatch.setattr(launch_module, "job_dir",
                        lambda la, ov, idx: tmp_path / folder_name(ov) / f"seed={ov[-1].split('=')[1]}")
    monkeypatch.setenv(FAKE_GPUS, "")
    launcher = type("L", (), {"config": OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}},
                                                          "seeds_per_job": 1, "optimized_metric": "test/acc"})})()
    return lambda jobs, retry=0: launch_module.launch_jobs(launcher, jobs, 3, retry_killed=retry)


def test_launcher_submits_one_job_per_pack_and_returns_one_per_original_job(launch, tmp_path):
    jobs = seeds(5, "activation=tanh", "seeds_per_job=2")
    returns = launch(jobs)
    assert FakeRunner.submitted == [[*jobs[0], "pack_seeds=[0,1]"], [*jobs[2], "pack_seeds=[2,3]"], jobs[4]]
    assert [r.overrides for r in returns] == jobs
    assert [r.return_value for r in returns] == [0.0, 0.1, 0.2, 0.3, 0.4]
    assert [Path(r.working_dir).name for r in returns[:4]] == [f"seed={s}" for s in range(4)]
    assert returns[4].hydra_cfg is not None  # the lone job's return is the worker's own, as without packs


def test_a_killed_pack_is_marked_killed_for_each_member_and_retried_whole(launch, tmp_path):
    jobs = seeds(3, "seeds_per_job=3")
    FakeRunner.die = {" ".join([*jobs[0], "pack_seeds=[0,1,2]"])}
    returns = launch(jobs)  # no retry: the members the death cost are killed, NaN
    statuses = [json.loads((tmp_path / "default" / f"seed={s}" / "metrics.json").read_text())["status"] for s in range(3)]
    assert statuses == ["completed", "killed", "killed"]  # seed 0 had written its own result before
    assert returns[0].return_value == 0.5 and all(math.isnan(r.return_value) for r in returns[1:])

    FakeRunner.submitted, FakeRunner.die = [], {" ".join([*jobs[0], "pack_seeds=[0,1,2]"])}
    returns = launch(jobs, retry=1)
    assert FakeRunner.submitted[-1] == [*jobs[0], "pack_seeds=[0,1,2]", "resume=true"]
    assert [r.return_value for r in returns] == [0.0, 0.1, 0.2]


def test_a_member_completed_in_an_earlier_try_survives_its_pack_being_killed(launch, tmp_path):
    """resume=true keeps a member that completed before (train_pack skips it): its metrics.json is
    older than the pack's start, and the pack's death must not overwrite it with `killed`."""
    import os

    jobs = seeds(2, "seeds_per_job=2")
    earlier = tmp_path / "default" / "seed=1" / "metrics.json"
    earlier.parent.mkdir(parents=True)
    earlier.write_text(json.dumps({"status": "completed", "test/acc": 0.7}))
    os.utime(earlier, (1, 1))  # long before this launch
    FakeRunner.die = {" ".join([*jobs[0], "pack_seeds=[0,1]"])}
    returns = launch(jobs)
    assert json.loads(earlier.read_text()) == {"status": "completed", "test/acc": 0.7}
    assert [r.return_value for r in returns] == [0.5, 0.7]  # seed 0 wrote its own before the worker died


# ------------------------------------------------------------------ refusals before any job
SWEEP = ["-m", "model=lenet5", "data=mnist", "seed=0,1"]


@pytest.mark.parametrize("args, expected", [
    (["seeds_per_job=2", "hydra/launcher=sequential"],
     "seeds_per_job=2: packs run with the parallel launcher only (hydra/launcher=sequential"),
    (["seeds_per_job=auto", "hydra/launcher=slurm"], "packs run with the parallel launcher only (hydra/launcher=slurm"),
    (["pack_seeds=[0,1]"], "pack_seeds=[0,1]: pack_seeds is set by the launcher; use seeds_per_job"),
    (["seeds_per_job=0"], "seeds_per_job=0 is not valid: use auto, 1 (no packs)"),
    (["seeds_per_job=2", "+trainer.accumulate_grad_batches=2"], "packs need trainer.accumulate_grad_batches=1"),
    (["seeds_per_job=2", "trainer.devices=2"], "packs cannot run under DDP"),
])
def test_what_a_pack_cannot_do_is_refused_in_one_line(args, expected, monkeypatch, capsys, tmp_path):
    line = one_error_line(run_here(monkeypatch, capsys, *SWEEP, *args, f"hydra.sweep.dir={tmp_path}/s"))
    assert expected in line, line
    assert not (tmp_path / "s" / "multirun.yaml").exists()  # no job started


def test_an_optuna_search_is_no_pack_of_seeds(tmp_path):
    from src.cli import check_jobs
    from src.errors import ConfigError

    with pytest.raises(ConfigError, match="an Optuna search's trials are no seeds of one setting"):
        check_jobs(["-m", "hparams_search=lenet_lr_batch", "seeds_per_job=2", f"hydra.sweep.dir={tmp_path}"])


def test_packs_are_accepted_by_the_parallel_launcher_and_ignored_by_a_single_run(tmp_path):
    from src.cli import check_jobs
    from src.errors import UserError

    check_jobs([*SWEEP, "seeds_per_job=2", f"hydra.sweep.dir={tmp_path}/a"])
    check_jobs([*SWEEP, "seeds_per_job=auto", "hydra/launcher=parallel", f"hydra.sweep.dir={tmp_path}/b"])
    check_jobs(["model=lenet5", "data=mnist", "seeds_per_job=2", f"hydra.run.dir={tmp_path}/c"])  # one run: no pack
    with pytest.raises(UserError, match="pack_seeds is set by the launcher"):  # even without -m
        check_jobs(["model=lenet5", "data=mnist", "pack_seeds=[0,1]", f"hydra.run.dir={tmp_path}/d"])
