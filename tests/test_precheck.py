"""Issue 23: every bad override is refused by the pre-check, in one `error:` line naming the key, with
exit status 2, before any run dir or data exists (train.py's `__main__`, run in-process)."""
from __future__ import annotations

import os
import time

import pytest

from tests.test_cli import one_error_line, run_here

CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1

# (override(s), what the error line must name). Each was accepted, trained with the value ignored,
# or failed only inside the job (after its run dir and a failed metrics.json existed).
BAD = [
    ("optimizer.lr=-1", "optimizer.lr"),
    ("optimizer.lr=0", "optimizer.lr"),
    ("optimizer.momentum=1.5", "optimizer.momentum"),
    ("optimizer.weight_decay=-0.1", "optimizer.weight_decay"),
    ("optimizer.lr=fast", "optimizer.lr"),
    ("lit.mixup.alpha=-1", "lit.mixup.alpha"),
    ("lit.mixup.cutmix_alpha=-0.5", "lit.mixup.cutmix_alpha"),
    ("lit.mixup.prob=2", "lit.mixup.prob"),
    ("lit.mixup.prob=-0.1", "lit.mixup.prob"),
    ("lit.mixup.switch_prob=1.5", "lit.mixup.switch_prob"),
    ("+lit.mixup.beta=1", "lit.mixup.beta"),
    ("lit.tta=rotate", "lit.tta"),
    ("lit.loss=hinge", "lit.loss"),
    ("lit.label_smoothing=1", "lit.label_smoothing"),
    ("lit.input_noise_std=-1", "lit.input_noise_std"),
    ("lit.divergence_check_every=0", "lit.divergence_check_every"),
    ("trainer.devices=0", "trainer.devices"),
    ("trainer.devices=-2", "trainer.devices"),
    (f"trainer.accelerator=cpu trainer.devices={CORES + 2}", "trainer.devices"),  # more processes than cores
    ("trainer.accelerator=gpu", "trainer.accelerator"),  # refused where there is no GPU (skipped with one)
    ("trainer.accelerator=quantum", "trainer.accelerator"),
    ("trainer.max_epochs=0", "trainer.max_epochs"),
    ("trainer.precision=8", "trainer.precision"),
    ("trainer.check_val_every_n_epoch=0", "trainer.check_val_every_n_epoch"),
    ("trainer.limit_train_batches=0", "trainer.limit_train_batches"),
    ("trainer.gradient_clip_val=-1", "trainer.gradient_clip_val"),
    ("trainer.compile=fastest", "trainer.compile"),
    ("trainer.threads=0", "trainer.threads"),
    ("trainer.threads=many", "trainer.threads"),
    ("trainer.estimate_minutes=-1", "trainer.estimate_minutes"),
    ("+trainer.accumulate_grad_batches=0", "trainer.accumulate_grad_batches"),
    ("+trainer.max_steps=-5", "trainer.max_steps"),
    ("+trainer.foo=1", "trainer.foo"),
    ("+trainer.max_epoch=3", "trainer.max_epochs"),  # the nearest real option is suggested
    ("+lit.foo=1", "lit.foo"),
    ("+model.foo=1", "model.foo"),
    ("+model.widht=2", "model.widht"),
    ("+optimizer.lrr=0.1", "optimizer.lr?"),
    ("+scheduler.eta=0", "scheduler.eta"),
    ("+callbacks.model_checkpoint.monitr=val/acc", "callbacks.model_checkpoint.monitr"),
    ("+foo=1", "foo"),
    ("+optimzer.lr=0.1", "optimizer.lr"),
    ("optimzer.lr=0.1", "optimizer.lr?"),
    ("trainer.max_epoch=3", "trainer.max_epochs?"),
    ("lit.label_smothing=0.1", "lit.label_smoothing?"),
    ("data.batch_sise=64", "data.batch_size?"),
    ("scheduler.warmup_epochs=1000 trainer.max_epochs=1", "scheduler.warmup_epochs"),
    ("scheduler.warmup_epochs=-1", "scheduler.warmup_epochs"),
    ("scheduler=multistep scheduler.milestones=[-1]", "scheduler.milestones"),
    ("scheduler=multistep scheduler.milestones=[0,10]", "scheduler.milestones"),
    ("scheduler=multistep scheduler.milestones=5", "scheduler.milestones"),
    ("scheduler.eta_min=-1", "scheduler.eta_min"),
    ("scheduler=exponential scheduler.gamma=0", "scheduler.gamma"),
    ("data.batch_size=100000", "data.batch_size"),
    ("data.batch_size=0", "data.batch_size"),
    ("data.train_fraction=1.5", "data.train_fraction"),
    ("data.val_size=-1", "data.val_size"),
    ("trainer.limit_val_batches=0 data.val_size=500", "data.val_size"),
    ("data.augment=mirror", "data.augment"),
    ("data.channels=2", "data.channels"),
    ("model.dropout=1", "model.dropout"),
    ("seed=-1", "seed"),
    ("resume=maybe", "resume"),
    ("activation=relu, tanh", "activation=relu,"),  # a space after the comma: two arguments
    ("model=lenet5 tanh", "tanh"),
]


@pytest.fixture(scope="module", autouse=True)
def _imports_paid_once():
    """The checks that read a signature or a constructor import torch and Lightning (~7 s on a busy
    2-core machine, once a process): paid here, so each case's time is the check's own."""
    import src.datamodules  # noqa: F401
    import src.lit  # noqa: F401


@pytest.mark.parametrize("overrides, named", BAD, ids=[b[0] for b in BAD])
def test_bad_override_refused_before_any_job(overrides, named, monkeypatch, capsys, tmp_path):
    if overrides == "trainer.accelerator=gpu":
        from src.sweeps.slots import visible_gpus

        if visible_gpus():
            pytest.skip("this machine has a GPU")
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "no_data"))
    args = ["model=lenet5", "data=mnist", *overrides.split(" "),
            f"hydra.run.dir={tmp_path / 'run'}", f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    start = time.perf_counter()
    p = run_here(monkeypatch, capsys, *args)
    elapsed = time.perf_counter() - start
    assert p.returncode == 2
    line = one_error_line(p)
    assert named in line, line
    assert "To append" not in line and "use +" not in line, line  # never Hydra's advice to add the key
    assert not (tmp_path / "run").exists() and not (tmp_path / "sweep").exists() and not (tmp_path / "no_data").exists()
    assert elapsed < 5, f"{elapsed:.1f} s"  # in-process: the imports are paid once per session


def test_every_job_of_a_sweep_is_checked_before_the_first_starts(monkeypatch, capsys, tmp_path):
    line = one_error_line(run_here(monkeypatch, capsys, "-m", "model=lenet5", "data=mnist", "lit.mixup.prob=0.5,2",
                                   f"hydra.sweep.dir={tmp_path / 'sweep'}"))
    assert "lit.mixup.prob=2" in line and not (tmp_path / "sweep").exists()


@pytest.mark.parametrize("overrides", [
    ["+trainer.strategy=ddp"],  # a Lightning Trainer option, passed on by build_trainer's **kwargs
    ["optimizer=sam"],  # SAM passes lr, momentum, ... on to its base optimizer
    ["+callbacks.stop._target_=lightning.pytorch.callbacks.EarlyStopping", "+callbacks.stop.monitor=val/acc",
     "data.val_size=5000"],
    ["trainer.threads=1"],
    ["scheduler=multistep", "scheduler.milestones=[2,4]", "scheduler.warmup_epochs=1", "trainer.max_epochs=5"],
])
def test_good_overrides_pass_the_key_checks(overrides, tmp_path):
    from src.cli import check_group_choices, check_jobs

    args = ["model=lenet5", "data=mnist", *overrides, f"hydra.run.dir={tmp_path / 'run'}"]
    check_group_choices(args)
    check_jobs(args)


def test_every_shipped_option_passes_the_key_checks(tmp_path):
    """The signature check must not refuse what conf/ itself ships (all model/optimizer/... options)."""
    from src.cli import check_jobs
    from src.compose import CONF_DIR

    for group in ("model", "optimizer", "scheduler", "callbacks", "logger", "activation", "experiment"):
        for option in sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml")):
            extra = ["data.val_size=5000"] if (group, option) in {("scheduler", "plateau"),
                                                                   ("callbacks", "early_stopping")} else []
            check_jobs([f"{group}={option}", *extra, f"hydra.run.dir={tmp_path / 'run'}"])


def test_schema_compile_modes_match_the_speed_module():
    """config_schema keeps torch.compile's modes as a literal (no torch import before a refusal)."""
    from src.config_schema import COMPILE_MODES
    from src.lit.speed import COMPILE_MODES as USED

    assert COMPILE_MODES == USED


def test_missing_data_suggests_download_auto_only_when_it_was_off(tmp_path):
    from src.datamodules.sources import _missing

    assert "allow data.download=auto" in str(_missing("MNIST", tmp_path, "raw/", "data.download=false"))
    assert "data.download=auto" not in str(_missing("MNIST", tmp_path, "raw/", "download failed: offline"))


def test_threads_setting_sets_torch_threads(monkeypatch):
    import torch

    from src.lit.trainer import build_trainer

    calls = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)  # the session's own count stays as it is
    build_trainer(threads=1, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                  enable_model_summary=False)
    build_trainer(threads="auto", accelerator="cpu", logger=False, enable_checkpointing=False,
                  enable_progress_bar=False, enable_model_summary=False)
    assert calls == [1]


def test_refusal_imports_neither_torch_nor_lightning(tmp_path):
    """A bad value is refused before torch (~2 s) and Lightning (~7 s) are imported: a real
    `python train.py optimizer.lr=-1` answers in well under a second (it took 7-13 s)."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    code = ("import runpy, sys\nsys.argv = ['train.py', 'optimizer.lr=-1', 'lit.mixup.prob=0.5']\n"
            "try:\n    runpy.run_path('train.py', run_name='__main__')\nexcept SystemExit as e:\n"
            "    print(e.code, 'torch' in sys.modules, 'lightning' in sys.modules)\n")
    start = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                       env={**os.environ, "DATA_DIR": str(tmp_path)})
    assert p.stdout.split() == ["2", "False", "False"], p.stdout + p.stderr
    assert p.stderr.strip() == "error: optimizer.lr=-1 is not valid: use a number > 0"
    assert time.perf_counter() - start < 10
