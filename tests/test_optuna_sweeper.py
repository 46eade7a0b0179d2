"""hydra/sweeper=optuna through the real Hydra plugin: a quadratic task app (tests/optuna_app/) for
the search machinery (optimum, no batch barrier, crash and resume, two processes on one study),
and the real train.py for pruning and the one-line refusals."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from tests.conftest import ROOT

APP = ROOT / "tests" / "optuna_app" / "quadratic.py"
optuna.logging.set_verbosity(optuna.logging.WARNING)


def search(sweep_dir: Path, *overrides: str, wait: bool = True):
    cmd = [sys.executable, str(APP), "-m", f"hydra.sweep.dir={sweep_dir}", *overrides]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if wait:
        r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-3000:]
        return r
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)  # its own process group: killed with its workers


def study_of(sweep_dir: Path) -> optuna.Study:
    return optuna.load_study(study_name=sweep_dir.name, storage=f"sqlite:///{sweep_dir / 'optuna.db'}")


def runs(sweep_dir: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(sweep_dir.glob("trial=*/seed=*/metrics.json"))]


def test_finds_the_optimum_with_no_batch_barrier(tmp_path):
    d = tmp_path / "quad"
    search(d, "hydra.sweeper.n_trials=30", "sleep=0.15", "sleep_long=1.0")
    study = study_of(d)
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(complete) == 30 and len(study.trials) == 30
    best = study.best_trial
    # within 1 of (2, -1) in a 10 x 10 box after 30 trials (random search's best is ~-2 on average;
    # parallel trials finish in varying order, so TPE's path and the exact best vary run to run)
    assert best.value > -1.0, best.params
    assert abs(best.params["x"] - 2) < 1.0 and abs(best.params["y"] + 1) < 1.0
    # no barrier: some trial started well after another one began, while that one still ran
    # (in batches of n_jobs=2, a trial only starts after both of the previous batch ended)
    spans = [(r["start"], r["end"]) for r in runs(d)]
    assert len(spans) == 30
    started_midway = [(a, c) for a in spans for c in spans if a[0] + 0.3 < c[0] < a[1] - 0.05]
    assert len(started_midway) >= 3, spans
    assert max(sum(s < t[0] < e for s, e in spans) for t in spans) <= 1  # never more than n_jobs at once
    report = (d / "search.md").read_text()
    assert f"**Best trial {best.number}**" in report and "30 trials: 30 complete" in report
    assert {"trials.csv", "history.png", "importance.png"} <= {p.name for p in d.iterdir()}
    # the importance figure names its evaluator (fANOVA and PED-ANOVA can disagree widely)
    assert "importance.png: fANOVA, 30 complete trials." in report


def test_a_killed_search_resumes_without_losing_or_double_counting(tmp_path):
    d = tmp_path / "quad"
    opts = ["hydra.sweeper.n_trials=8", "hydra.sweeper.heartbeat_s=1", "hydra.sweeper.grace_s=8",
            "sleep=1.0", "sleep_long=1.0"]
    proc = search(d, *opts, wait=False)
    deadline = time.time() + 120
    while time.time() < deadline:
        time.sleep(0.3)
        if (d / "optuna.db").exists():
            try:
                done = study_of(d).get_trials(states=(optuna.trial.TrialState.COMPLETE,))
            except Exception:  # the study is being created
                continue
            if len(done) >= 3:
                break
    os.killpg(proc.pid, signal.SIGKILL)  # the launcher and its workers, as a lost node would
    proc.wait()
    before = study_of(d)
    kept = {t.number: t.value for t in before.get_trials(states=(optuna.trial.TrialState.COMPLETE,))}
    killed = {t.number: t.params for t in before.get_trials(states=(optuna.trial.TrialState.RUNNING,))}
    assert len(kept) >= 3 and killed, "the search was not killed mid-trial"
    # resumed at once, before the killed trials look stale (grace 8 s): the new process runs what
    # is left of the budget, then waits for them to go stale and runs them again
    r = search(d, *opts)
    assert "stale" in r.stderr, r.stderr
    after = study_of(d)
    by_number = {t.number: t for t in after.trials}
    states = {t.number: (t.state.name, t.value, t.system_attrs.get("failed_trial")) for t in after.trials}
    assert all(by_number[n].state.name == "COMPLETE" and by_number[n].value == v for n, v in kept.items()), states
    assert all(by_number[n].state.name == "FAIL" for n in killed), (killed, states)
    retried = {t.system_attrs["failed_trial"]: t for t in after.trials if "failed_trial" in t.system_attrs}
    assert set(retried) == set(killed), states
    assert all(retried[n].state.name == "COMPLETE" and retried[n].params == killed[n] for n in killed), states
    assert len(after.get_trials(states=(optuna.trial.TrialState.COMPLETE,))) == 8  # the budget, no more


def test_two_processes_share_one_sqlite_study(tmp_path):
    d = tmp_path / "quad"
    opts = ["hydra.sweeper.n_trials=10", "hydra.sweeper.n_jobs=1", "hydra.launcher.n_jobs=1", "sleep=0.4"]
    procs = [search(d, *opts, wait=False) for _ in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err.decode()[-3000:]
    study = study_of(d)
    counted = [t for t in study.trials if not t.user_attrs.get("over_budget")]
    assert len(counted) == 10 and all(t.state.name == "COMPLETE" for t in counted)
    assert len({t.number for t in counted}) == 10 and len(runs(d)) == 10
    launchers = {t.user_attrs["launcher"] for t in counted}
    assert len(launchers) == 2  # both processes ran trials of the one study


def test_seeds_per_trial_tell_the_mean_and_confirmation_uses_fresh_seeds(tmp_path):
    d = tmp_path / "quad"
    search(d, "hydra.sweeper.n_trials=3", "hydra.sweeper.seeds_per_trial=2", "hydra.sweeper.confirm_seeds=3",
           "hydra.sweeper.sampler=random", "y=choice(-1.0,3.0)")  # a command-line range joins the space
    study = study_of(d)
    assert {t.params["y"] for t in study.trials} <= {-1.0, 3.0}
    for t in study.trials:
        assert t.user_attrs["seeds"] == [0, 1] and len(t.user_attrs["per_seed"]) == 2
        assert t.value == pytest.approx(sum(v[0] for v in t.user_attrs["per_seed"]) / 2)
    conf = study.user_attrs["confirmation"]
    assert conf["trial"] == study.best_trial.number and conf["seeds"] == [2, 3, 4]  # never used by the search
    seeds = sorted(json.loads(p.read_text())["seed"] for p in (d / "confirm").glob("seed=*/metrics.json"))
    assert seeds == [2, 3, 4]
    assert "Confirmation" in (d / "search.md").read_text() and (d / "confirm.csv").exists()


def test_multi_objective_pareto_front_and_failed_trials(tmp_path):
    d = tmp_path / "quad"
    search(d, "hydra.sweeper.n_trials=6", "hydra.sweeper.sampler=random", "hydra.sweeper.objectives=[objective,start]",
           "hydra.sweeper.direction=[maximize,minimize]", "fail_above=0.0")
    study = study_of(d)
    assert len(study.directions) == 2 and study.best_trials
    assert "Pareto front" in (d / "search.md").read_text() and (d / "pareto.png").exists()
    # a crashing run is told to Optuna as failed, with its error, and the search goes on to n_trials
    failed = [t for t in study.trials if t.state.name == "FAIL"]
    assert len(study.trials) == 6 and failed and all(t.params["x"] > 0 for t in failed)
    assert all("is too large" in t.user_attrs["error"] for t in failed)
    assert all(t.params["x"] <= 0 for t in study.trials if t.state.name == "COMPLETE")
