"""Issue 22, study integrity, in units that need no training: debug runs are never tabled, the
report reads each run's provenance, a sweep keeps its package list, the recorded config leaves out
only what cannot change a result, and provenance survives a machine without git."""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import time

import pytest

from src import provenance
from src.analysis import report
from src.analysis.runs import load_runs
from tests.test_report_figures import fake_run
from tests.test_report_stats import make_sweep


# ------------------------------------------------------------------------------ provenance
def test_git_state_is_null_without_git_or_outside_a_checkout(tmp_path, monkeypatch):
    assert provenance.git_state(tmp_path) == (None, None)  # a folder that is no checkout

    def no_git(*args, **kwargs):
        raise FileNotFoundError(2, "No such file or directory", "git")

    monkeypatch.setattr(provenance.subprocess, "run", no_git)
    assert provenance.git_state() == (None, None)

    def hung(*args, **kwargs):
        raise subprocess.TimeoutExpired("git", kwargs.get("timeout"))

    monkeypatch.setattr(provenance.subprocess, "run", hung)
    assert provenance.git_state() == (None, None)


def test_git_state_names_the_commit_and_whether_tracked_files_changed(tmp_path):
    try:
        subprocess.run(["git", "--version"], capture_output=True, check=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        pytest.skip("no git on this machine")
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}

    def git(*args):
        return subprocess.run(["git", "-C", str(tmp_path), *args], capture_output=True, text=True, check=True,
                              env=env, timeout=30).stdout.strip()

    git("init", "-q")
    assert provenance.git_state(tmp_path) == (None, None)  # no commit yet
    (tmp_path / "a.py").write_text("x = 1\n")
    git("add", "a.py")
    git("commit", "-q", "-m", "one")
    head = git("rev-parse", "HEAD")
    assert provenance.git_state(tmp_path) == (head, False)
    (tmp_path / "notes.txt").write_text("untracked\n")
    assert provenance.git_state(tmp_path) == (head, False)  # untracked files: not scanned
    (tmp_path / "a.py").write_text("x = 2\n")
    assert provenance.git_state(tmp_path) == (head, True)


def test_rerun_command_is_shell_quoted_without_run_control():
    overrides = ["activation=formula", "activation.expr=x * sigmoid(x)", "data.root=/my data/set", "seed=3",
                 "resume=true", "overwrite=true", "+lit.tag='a b'"]
    command = provenance.rerun_command(overrides)
    assert shlex.split(command) == ["python", "train.py", "activation=formula", "activation.expr=x * sigmoid(x)",
                                    "data.root=/my data/set", "seed=3", "+lit.tag='a b'"]


def test_a_sweep_folder_keeps_the_package_list_once(tmp_path, monkeypatch):
    from importlib.metadata import version

    path = provenance.write_environment(tmp_path)
    lines = path.read_text().splitlines()
    assert path.name == "environment.txt" and f"torch=={version('torch')}" in lines
    assert lines[1:] == sorted(lines[1:], key=lambda ln: ln.split("==")[0].lower()) and len(lines) > 10
    stamp = path.stat().st_mtime_ns
    time.sleep(0.01)
    assert provenance.write_environment(tmp_path) == path and path.stat().st_mtime_ns == stamp  # resumed: same
    monkeypatch.setattr(provenance, "installed_packages", lambda: ["torch==99.0"])
    later = provenance.write_environment(tmp_path)  # resumed after an upgrade: the first list stays
    assert later.name.startswith("environment_") and "torch==99.0" in later.read_text()
    assert path.read_text().splitlines() == lines


# ------------------------------------------------------------------------- the report
def test_debug_runs_are_listed_never_tabled(tmp_path):
    """A debug run (status "debug"; or, recorded before that status existed, a completed run with a
    debug= override) is left out of the table with a one-line note."""
    sweep = make_sweep(tmp_path / "sweep", {"relu": {0: 0.90, 1: 0.92}, "tanh": {0: 0.80, 1: 0.82}})
    fake_run(sweep, ["activation=relu", "debug=fdr"], 0, {"status": "debug", "debug": "fdr", "test/acc": 0.1})
    fake_run(sweep, ["activation=tanh", "debug=limit"], 0, {"status": "completed", "test/acc": 0.1})
    s = report.write_report(sweep, out_dir=tmp_path / "out", show=False, plots=False)
    assert s.keys == ["activation"] and list(s.table["activation"]) == ["relu", "tanh"]
    assert list(s.table["n"]) == [2, 2] and list(s.table["runs"]) == [2, 2]
    assert s.table["mean"].tolist() == pytest.approx([0.91, 0.81])
    assert any("2 debug run(s) left out" in w for w in s.warnings)
    assert "debug run(s) left out" in (tmp_path / "out" / "summary.md").read_text()

    only_debug = tmp_path / "debug_sweep"  # `-m debug=fdr`: the table says so instead of failing
    fake_run(only_debug, ["activation=relu", "debug=fdr"], 0, {"status": "debug", "debug": "fdr", "test/acc": 0.1})
    s = report.summarize(only_debug)
    assert list(s.table["n"]) == [0] and list(s.problems["status"]) == ["debug"]


def test_load_runs_reads_each_runs_provenance(tmp_path):
    prov = {"commit": "abc123", "dirty": False, "device": "NVIDIA H100", "device_type": "cuda",
            "precision": "bf16-mixed", "torch": "2.9.0", "host": "n1"}
    fake_run(tmp_path, ["activation=relu"], 0, {"status": "completed", "test/acc": 0.9, "provenance": prov})
    fake_run(tmp_path, ["activation=relu"], 1, {"status": "completed", "test/acc": 0.9})  # from before provenance
    runs = load_runs(tmp_path).set_index("seed")
    assert runs.loc[0, ["commit", "device", "precision", "torch"]].tolist() == \
        ["abc123", "NVIDIA H100", "bf16-mixed", "2.9.0"]
    assert runs.loc[1, ["commit", "device", "precision", "torch"]].isna().all()


# -------------------------------------------------------------------------- the sweep
def test_the_live_status_counts_a_debug_run_as_done(tmp_path):
    from src.sweeps.status import sweep_state

    since = time.time() - 5
    for name, status in (("a", "debug"), ("b", "completed"), ("c", "failed")):
        (tmp_path / name / ".hydra").mkdir(parents=True)
        (tmp_path / name / ".hydra" / "overrides.yaml").write_text("[]\n")
        (tmp_path / name / "metrics.json").write_text(json.dumps({"status": status}))
    state = sweep_state(tmp_path, since)
    assert sorted(state["done"]) == ["a", "b"] and state["failed"] == ["c"]


# ---------------------------------------------------------------- the recorded config
def test_the_recorded_config_leaves_out_only_what_cannot_change_a_result(tmp_path):
    from src.compose import compose_config
    from src.run_config import differences, result_config

    base = ["model=lenet5", "data=mnist", "seed=0"]
    config = result_config(compose_config(base, tmp_path / "a"))
    same = result_config(compose_config([*base, "logger=csv", "lit.log_images=false", "resume=true",
                                         "trainer.enable_progress_bar=false", "data.download=false",
                                         f"paths.cache_dir={tmp_path}"], tmp_path / "b"))
    assert same == config  # loggers, image logging, run control, the progress bar, locations, fetching
    assert config["seed"] == 0 and config["trainer.max_epochs"] == 30 and config["activation.name"] == "relu"
    assert not [k for k in config if k.startswith(("paths.", "logger", "hydra"))]
    assert "callbacks.model_checkpoint.dirpath" not in config and "lit.optimizer" not in config
    other = result_config(compose_config([*base, "seed=1", "debug=fdr"], tmp_path / "c"))
    assert differences({"config": config}, other, []) == ["seed: 0 -> 1", "trainer.fast_dev_run: false -> true"]
    assert json.loads(json.dumps(config)) == config  # as metrics.json holds it


def test_the_run_log_gets_the_outcome_so_it_is_never_empty(tmp_path, caplog):
    """train.log was created empty in every run folder (52 of 52 checked)."""
    import json
    import logging

    from src.runs import log_outcome

    (tmp_path / "metrics.json").write_text(json.dumps({"status": "failed", "error": "DataError: MNIST not found"}))
    with caplog.at_level(logging.INFO, logger="train"):
        log_outcome(tmp_path)
        (tmp_path / "metrics.json").write_text(json.dumps({"status": "completed", "test/acc": 0.9871}))
        log_outcome(tmp_path)
    lines = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "train"]
    assert lines[0][0] == logging.ERROR and "[outcome] failed: DataError: MNIST not found" in lines[0][1]
    assert lines[1][0] == logging.INFO and "[outcome] completed: test/acc=0.9871" in lines[1][1]
