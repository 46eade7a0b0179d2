"""`python train.py` as a user types it: bad input exits non-zero with one `error:` line."""
from __future__ import annotations

import os
import runpy
import subprocess
import sys

import pytest

from tests.conftest import ROOT


def run(*args: str, data_dir=None, timeout=120) -> subprocess.CompletedProcess:
    """`python train.py ARGS`, from the (temporary) data folder when one is given: a run that gets as
    far as its run dir (outputs/runs/... relative to the current folder) then writes it there, never
    into the checkout."""
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    if data_dir is not None:
        env["DATA_DIR"] = str(data_dir)
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=data_dir or ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def run_here(monkeypatch, capsys, *args: str) -> subprocess.CompletedProcess:
    """train.py's `__main__` block in this process (runpy), for refusals that come before Hydra starts:
    the same guards, output and exit status, without a new interpreter's ~10 s of imports. That a
    real `python train.py` exits 2 with one line and no traceback the subprocess tests below prove."""
    monkeypatch.setattr(sys, "argv", ["train.py", *args])
    monkeypatch.setenv("HYDRA_FULL_ERROR", "0")
    monkeypatch.chdir(ROOT)
    code = 0
    try:
        runpy.run_path(str(ROOT / "train.py"), run_name="__main__")
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out.out, out.err)


def one_error_line(p: subprocess.CompletedProcess) -> str:
    assert p.returncode != 0, p.stdout + p.stderr
    assert "Traceback" not in p.stderr, p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, p.stderr
    return lines[0]


@pytest.mark.parametrize("args, expected", [
    (["model=nope"], "unknown model 'nope': choose one of"),
    (["activation=relu,nosuch", "-m"], "unknown activation 'nosuch'"),
    (["data=imagenet"], "unknown data 'imagenet'"),
])
def test_unknown_choice(args, expected, monkeypatch, capsys):
    line = one_error_line(run_here(monkeypatch, capsys, *args))
    assert expected in line and "resnet18" in line or "relu" in line or "mnist" in line


def test_missing_dataset_names_directory_and_fix(tmp_path):
    line = one_error_line(run("data=mnist", "model=lenet5", "data.download=false", data_dir=tmp_path))
    assert str(tmp_path) in line and "DATA_DIR" in line and "MNIST" in line


def test_bad_fraction_refused_before_data_is_read(tmp_path):
    # the data folder is empty: the fraction error must come first, before any loading
    line = one_error_line(run("data=mnist", "data.train_fraction=1.5", "data.download=false", data_dir=tmp_path))
    assert "data.train_fraction=1.5" in line and "> 0 and <= 1" in line


def test_cfg_job_prints_composed_config():
    p = run("model=lenet5", "data=mnist", "activation=tanh", "--cfg", "job")
    assert p.returncode == 0, p.stderr
    assert "_target_: src.models.lenet.LeNet5" in p.stdout and "name: tanh" in p.stdout
    assert "in_channels: ${data.channels}" in p.stdout


def test_sweep_check_composes_once_per_setting_and_still_checks_every_seed(monkeypatch, tmp_path):
    import hydra

    from src.cli import check_jobs
    from src.errors import UserError

    calls = []
    real = hydra.compose
    monkeypatch.setattr(hydra, "compose", lambda *a, **k: calls.append(k["overrides"]) or real(*a, **k))
    sweep = ["-m", "activation=relu,tanh", "seed=0,1,2", f"hydra.sweep.dir={tmp_path}"]
    check_jobs(sweep)
    assert len(calls) == 2  # 6 jobs, 2 settings: Hydra's ~0.3 s composition is not paid per seed
    with pytest.raises(UserError, match=r"^seed=-1 is not valid: use an integer >= 0"):
        check_jobs(["-m", "activation=relu,tanh", "seed=0,-1", f"hydra.sweep.dir={tmp_path}"])


def test_a_list_of_options_is_checked_element_by_element():
    """logger=[default,mlflow] combines options of one group; each element must exist."""
    from src.cli import check_group_choices
    from src.errors import UserError

    check_group_choices(["logger=[default,mlflow]"])
    with pytest.raises(UserError, match="unknown logger 'nope'"):
        check_group_choices(["logger=[default,nope]"])


# ----------------------------------------------------------------- study integrity (issue 22)
@pytest.mark.parametrize("args, named", [
    (["callbacks=early_stopping"], "callbacks.early_stopping (monitor=val/loss)"),
    (["-m", "scheduler=cosine,plateau", "seed=0,1"], "scheduler (monitor=val/loss)"),
    (["+callbacks.stop._target_=lightning.pytorch.callbacks.EarlyStopping", "+callbacks.stop.monitor=val/acc"],
     "callbacks.stop (monitor=val/acc)"),
])
def test_what_acts_on_validation_needs_a_hold_out(args, named, monkeypatch, capsys, tmp_path):
    """With data.val_size=0 (the default) validation is the test split: early stopping or a plateau
    schedule would let the test set steer training. Refused in one line before any data is read
    and before a sweep's first job; the checkpoint's own val/acc monitor is no such choice."""
    from src.cli import check_jobs

    monkeypatch.setenv("DATA_DIR", str(tmp_path / "no_data"))
    line = one_error_line(run_here(monkeypatch, capsys, "model=lenet5", "data=mnist", *args,
                                   f"hydra.run.dir={tmp_path / 'run'}", f"hydra.sweep.dir={tmp_path / 'sweep'}"))
    assert named in line and "data.val_size=5000" in line and "test split" in line
    assert "model_checkpoint" not in line
    assert not (tmp_path / "run").exists() and not (tmp_path / "sweep").exists()
    check_jobs(["model=lenet5", "data=mnist", *args, "data.val_size=5000"])  # a hold-out: accepted
    check_jobs(["model=lenet5", "data=mnist", *args, "data.folds=5", "data.fold=0"])  # k-fold: its own fold


def _recorded_job(overrides: list[str]) -> tuple[dict, str]:
    """A sweep job's config as train() records it in metrics.json, and its folder below the sweep."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from src.compose import CONF_DIR
    from src.run_config import result_config

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    GlobalHydra.instance().clear()
    return result_config(cfg), str(cfg.hydra.sweep.subdir)


def test_resume_into_runs_of_another_config_is_refused_before_any_job(monkeypatch, capsys, tmp_path):
    """resume=true kept any completed metrics.json it found, so a sweep resumed after its experiment
    file changed, or over runs made with `debug=fdr` before debug named folders (issue 22.1), tabled
    them as results of the new config. Now the pre-check refuses in one line, naming the keys."""
    import json

    from src.cli import check_jobs

    sweep = tmp_path / "sweep"
    cmd = ["-m", "model=lenet5", "data=mnist", "activation=relu,tanh", "seed=0", "resume=true",
           f"hydra.sweep.dir={sweep}"]
    runs = {}
    for act in ("relu", "tanh"):
        config, subdir = _recorded_job(["model=lenet5", "data=mnist", f"activation={act}", "seed=0"])
        runs[act] = (sweep / subdir, config)
        (sweep / subdir).mkdir(parents=True)
        (sweep / subdir / "metrics.json").write_text(json.dumps({"status": "completed", "test/acc": 0.5,
                                                                 "config": config}))
    check_jobs(cmd)  # the same config: both runs are kept

    relu_dir, relu_config = runs["relu"]
    (relu_dir / "metrics.json").write_text(json.dumps({"status": "completed", "test/acc": 0.5,
                                                       "config": {**relu_config, "trainer.max_epochs": 5}}))
    line = one_error_line(run_here(monkeypatch, capsys, *cmd))
    assert str(relu_dir) in line and "trainer.max_epochs: 5 -> 30" in line and "overwrite=true" in line
    assert not (sweep / "multirun.yaml").exists()  # no job started
    check_jobs([*cmd, "overwrite=true"])  # overwrite=true trains it again: accepted

    # a run recorded before metrics.json held its config: compared by its overrides
    tanh_dir, _ = runs["tanh"]
    (tanh_dir / "metrics.json").write_text(json.dumps({
        "status": "completed", "test/acc": 0.1,
        "overrides": ["model=lenet5", "data=mnist", "activation=tanh", "seed=0", "debug=fdr"]}))
    (relu_dir / "metrics.json").write_text(json.dumps({"status": "completed", "config": relu_config}))
    line = one_error_line(run_here(monkeypatch, capsys, *cmd))
    assert str(tanh_dir) in line and "debug: fdr -> <absent>" in line
