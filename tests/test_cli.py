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
    assert "_target_: src.models.LeNet5" in p.stdout and "name: tanh" in p.stdout
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
