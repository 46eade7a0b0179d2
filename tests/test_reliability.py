"""Bad input refused clearly; divergence and crashes never lose a finished result; runs repeat."""
from __future__ import annotations

import errno
import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from src.cli import check_jobs
from src.errors import DataError, UserError
from tests import fabricate
from tests.conftest import QUICK, ROOT, compose_cfg
from train import train

BAD_OVERRIDES = [
    ("optimizer.lr=0", "optimizer.lr=0 is not valid: use a number > 0"),
    ("optimizer.lr=-0.1", "optimizer.lr=-0.1"),
    ("optimizer.lr=fast", "optimizer.lr='fast'"),
    ("optimizer.momentum=1.5", "optimizer.momentum=1.5"),
    ("optimizer.weight_decay=-1", "optimizer.weight_decay=-1"),
    ("data.batch_size=0", "data.batch_size=0 is not valid: use an integer >= 1"),
    ("data.batch_size=12.5", "data.batch_size=12.5"),
    ("data.train_fraction=0", "data.train_fraction=0"),
    ("data.train_fraction=1.2", "data.train_fraction=1.2"),
    ("data.test_fraction=-0.5", "data.test_fraction=-0.5"),
    ("data.val_size=-3", "data.val_size=-3"),
    ("data.channels=2", "data.channels=2 is not valid: use one of 1, 3"),
    ("data.name=imagenet", "data.name='imagenet'"),
    ("data.download=sometimes", "data.download='sometimes'"),
    ("trainer.max_epochs=0", "trainer.max_epochs=0 is not valid: use an integer >= 1"),
    ("trainer.precision=bf17", "trainer.precision='bf17'"),
    ("trainer.accelerator=quantum", "trainer.accelerator='quantum'"),
    ("lit.label_smoothing=1.0", "lit.label_smoothing=1.0"),
    ("lit.loss=hinge", "lit.loss='hinge'"),
    ("model.dropout=1.0", "model.dropout=1.0"),
    ("seed=-1", "seed=-1"),
    ("scheduler.interval=hourly", "scheduler.interval='hourly'"),
    ("data.rotate_degrees=200", "data.rotate_degrees=200 is not valid: use a number >= 0 and <= 180"),
    ("data.zoom=[1.2,0.9]", "data.zoom=[1.2, 0.9] must be [low, high] with 0 < low <= high"),
    ("data.mean=[0.5,0.5]", "data.mean/std need 1 or 3 values (one per channel), got 2/3"),
    ("data.batchsize=3", "data.batchsize is not a key of the config: did you mean data.batch_size?"),  # issue 23
]


@pytest.mark.parametrize("override, expected", BAD_OVERRIDES, ids=[o for o, _ in BAD_OVERRIDES])
def test_bad_override_is_refused_in_one_line(override, expected):
    with pytest.raises(UserError) as e:
        check_jobs([override])
    assert expected in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("args, expected", [
    (["activation=formula", 'activation.expr="x*foo(x)"'], "unknown function 'foo'"),
    (["activation=formula", "activation.expr=\"__import__('os')\""], "formula"),
    (["activation=taylor", "activation.order=0"], "activation 'taylor'"),
])
def test_bad_activation_is_refused_before_any_data(args, expected):
    with pytest.raises(UserError) as e:
        check_jobs(args)
    assert expected in str(e.value) and "\n" not in str(e.value)


def test_every_job_of_a_sweep_is_checked_first():
    with pytest.raises(UserError, match=r"optimizer.lr=-1 is not valid"):
        check_jobs(["-m", "optimizer.lr=0.1,-1", "activation=relu,tanh"])
    check_jobs(["-m", "optimizer.lr=0.1,0.01", "activation=relu,tanh"])  # valid: no error


def test_cli_refuses_before_touching_data(tmp_path):
    # an empty data folder: the lr error must come first, and no run folder is made
    env = {**os.environ, "DATA_DIR": str(tmp_path / "nothing")}
    p = subprocess.run([sys.executable, "train.py", "optimizer.lr=-1", f"hydra.run.dir={tmp_path / 'run'}"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and p.stderr.strip().splitlines()[-1].startswith("error: optimizer.lr=-1")
    assert not (tmp_path / "run").exists()


def test_unwritable_output_folder_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(UserError, match="cannot write run outputs to .*file/run"):
        check_jobs([f"hydra.run.dir={blocker}/run"])


# ---------------------------------------------------------------- data integrity
def test_truncated_idx_file_is_named(tmp_path):
    fabricate.write_idx(tmp_path / "MNIST" / "raw")
    f = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte"
    f.write_bytes(f.read_bytes()[:-100])
    from src.datamodules.sources import MNIST, Request

    with pytest.raises(DataError, match=r"train-images-idx3-ubyte is truncated or corrupt: \d+ bytes"):
        MNIST().load(Request(tmp_path, download=False))


def test_bad_pickle_is_named(tmp_path):
    fabricate.write_cifar_pickles(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"\x80\x04garbage")
    from src.datamodules.sources import CIFAR10, Request

    with pytest.raises(DataError, match=r"data_batch_3 is incomplete or corrupt"):
        CIFAR10().load(Request(tmp_path, download=False))


def test_partial_copy_is_refused_by_counts(fake_data, tmp_path):
    from src.datamodules import ImageClassificationDataModule
    from src.datamodules.sources import MNIST

    dm = ImageClassificationDataModule(MNIST(), data_dir=str(fake_data), channels=1, image_size=28)
    with pytest.raises(DataError, match=r"mnist train split .* has 120 images, expected 60000"):
        dm.setup()


# ---------------------------------------------------------------- divergence
def _nan_from_epoch(monkeypatch, epoch: int):
    from src.lit.classifier import ClassifierModule

    original = ClassifierModule._step

    def step(self, stage, batch):
        loss, logits = original(self, stage, batch)
        if stage == "train" and self.current_epoch >= epoch:
            loss = loss * float("nan")
        return loss, logits

    monkeypatch.setattr(ClassifierModule, "_step", step)


def test_divergence_stops_the_run_and_keeps_the_last_good_checkpoint(fake_data, tmp_path, monkeypatch):
    _nan_from_epoch(monkeypatch, epoch=1)
    cfg = compose_cfg(["model=lenet5", "data=mnist", *QUICK, "trainer.max_epochs=3"], tmp_path, fake_data)
    with pytest.raises(UserError, match="diverged.*epoch 1, step 2"):
        train(cfg)
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["status"] == "diverged" and m["diverged_epoch"] == 1 and m["diverged_step"] == 2
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["epoch"] == 0  # the diverged epoch was never checkpointed
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())


def test_exploding_lr_is_recorded_as_diverged(fake_data, tmp_path):
    cfg = compose_cfg(["model=lenet5", "data=mnist", "activation=relu", *QUICK, "optimizer.lr=1e12",
                       "trainer.limit_train_batches=10"], tmp_path, fake_data)
    with pytest.raises(UserError, match="diverged"):
        train(cfg)
    assert json.loads((tmp_path / "metrics.json").read_text())["status"] == "diverged"


def test_in_a_sweep_a_diverged_job_returns_nan_instead_of_raising(fake_data, tmp_path, monkeypatch):
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    _nan_from_epoch(monkeypatch, epoch=0)
    cfg = compose_cfg(["model=lenet5", "data=mnist", *QUICK], tmp_path, fake_data)
    from omegaconf import read_write

    with read_write(HydraConfig.instance().cfg.hydra):
        HydraConfig.instance().cfg.hydra.mode = RunMode.MULTIRUN
    assert math.isnan(train(cfg))
    assert json.loads((tmp_path / "metrics.json").read_text())["status"] == "diverged"


def test_disk_full_is_one_line(fake_data, tmp_path, monkeypatch):
    import lightning as L

    def full(self, filepath, *a, **k):  # the disk fills while the checkpoint (a temp file) is written
        raise OSError(errno.ENOSPC, "No space left on device", filepath)

    monkeypatch.setattr(L.Trainer, "save_checkpoint", full)
    cfg = compose_cfg(["model=lenet5", "data=mnist", *QUICK], tmp_path, fake_data)
    with pytest.raises(UserError, match=r"cannot write .*epoch_000.ckpt: No space left on device"):
        train(cfg)
    assert json.loads((tmp_path / "metrics.json").read_text())["status"] == "failed"


# ---------------------------------------------------------------- no overwrite, resume
def test_completed_run_is_never_overwritten(fake_data, tmp_path):
    cfg = compose_cfg(["model=lenet5", "data=mnist", *QUICK], tmp_path, fake_data)
    first = train(cfg)
    before = (tmp_path / "metrics.json").read_text()
    with pytest.raises(UserError, match="already holds a completed run"):
        train(compose_cfg(["model=lenet5", "data=mnist", *QUICK], tmp_path, fake_data))
    assert (tmp_path / "metrics.json").read_text() == before
    kept = train(compose_cfg(["model=lenet5", "data=mnist", *QUICK, "resume=true"], tmp_path, fake_data))
    assert kept == first and (tmp_path / "metrics.json").read_text() == before
    train(compose_cfg(["model=lenet5", "data=mnist", *QUICK, "overwrite=true", "seed=1"], tmp_path, fake_data))
    assert json.loads((tmp_path / "metrics.json").read_text())["seed"] == 1


def test_a_debug_run_is_no_result_and_resume_trains_afresh_over_it(fake_data, tmp_path):
    """Issue 22.1: `debug=...` then the real run with resume=true kept the one-batch accuracy as a
    result. Now the debug run says status "debug", and resume trains the real run from scratch over
    it: not from the debug run's checkpoint, not appending to its log."""
    train(compose_cfg(["model=lenet5", "data=mnist", "debug=limit", *QUICK], tmp_path, fake_data))
    debug = json.loads((tmp_path / "metrics.json").read_text())
    assert debug["status"] == "debug" and debug["debug"] == "limit"
    assert (tmp_path / "checkpoints" / "last.ckpt").exists()  # what resume=true used to continue from

    train(compose_cfg(["model=lenet5", "data=mnist", *QUICK, "trainer.max_epochs=2", "resume=true"], tmp_path,
                      fake_data))
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["status"] == "completed" and "debug" not in m and m["epochs"] == 2
    assert m["resumed"] is False and m["sessions"] == 1  # trained afresh, not on from the debug checkpoint
    import pandas as pd

    log = pd.read_csv(tmp_path / "csv" / "metrics.csv")
    assert log.dropna(subset=["val/acc"])["epoch"].astype(int).tolist() == [0, 1]  # no debug rows left


def test_resume_keeps_a_completed_run_only_for_its_own_config(fake_data, tmp_path):
    """resume=true used to keep whatever completed metrics.json the folder held. Now only a run of
    the same config (keys that cannot change the result aside: loggers, image logging, locations),
    else one line naming each differing key and overwrite=true."""
    base = ["model=lenet5", "data=mnist", *QUICK]
    first = train(compose_cfg(base, tmp_path, fake_data))
    before = (tmp_path / "metrics.json").read_text()
    kept = train(compose_cfg([*base, "resume=true", "logger=csv", "lit.log_images=false"], tmp_path, fake_data))
    assert kept == first and (tmp_path / "metrics.json").read_text() == before

    with pytest.raises(UserError) as e:
        train(compose_cfg([*base, "resume=true", "trainer.max_epochs=2", "optimizer.lr=0.05"], tmp_path, fake_data))
    msg = str(e.value)
    assert "\n" not in msg and "holds a completed run of another config" in msg and "overwrite=true" in msg
    assert "optimizer.lr: 0.1 -> 0.05" in msg and "trainer.max_epochs: 1 -> 2" in msg
    assert "logger" not in msg and "paths" not in msg  # no key that cannot change the result
    assert (tmp_path / "metrics.json").read_text() == before

    train(compose_cfg([*base, "resume=true", "overwrite=true", "trainer.max_epochs=2"], tmp_path, fake_data))
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["epochs"] == 2 and m["config"]["trainer.max_epochs"] == 2


def test_a_resumed_run_reports_the_wall_time_of_every_session(fake_data, tmp_path):
    """Issue 22.9: a run continued from its checkpoint reported its last session's wall time only."""
    cfg = compose_cfg(["model=lenet5", "data=mnist", *QUICK], tmp_path, fake_data)
    train(cfg)
    first = json.loads((tmp_path / "metrics.json").read_text())
    assert first["resumed"] is False and first["sessions"] == 1
    assert first["wall_time_s"] == first["session_wall_time_s"] > 0
    stats = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["run_stats"]
    assert stats["sessions"] == 1 and 0 < stats["wall_s"] <= first["wall_time_s"]

    (tmp_path / "metrics.json").unlink()  # as if killed after its checkpoint
    train(compose_cfg(["model=lenet5", "data=mnist", *QUICK, "trainer.max_epochs=2", "ckpt_path=last"], tmp_path,
                      fake_data))
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["resumed"] is True and m["sessions"] == 2 and m["epochs"] == 2
    assert m["wall_time_s"] == pytest.approx(m["session_wall_time_s"] + stats["wall_s"], abs=2e-3)
    assert m["wall_time_s"] > m["session_wall_time_s"]


def test_same_seed_deterministic_runs_match_exactly(fake_data, tmp_path):
    keys = ("test/acc", "test/loss", "val/acc_best", "params", "epochs")
    results = []
    for i in range(2):
        cfg = compose_cfg(["model=resnet18", "data=cifar10", *QUICK, "trainer.deterministic=true", "seed=7",
                           "lit.input_noise_std=0.1"], tmp_path / str(i), fake_data)
        train(cfg)
        m = json.loads((tmp_path / str(i) / "metrics.json").read_text())
        results.append({k: m[k] for k in keys})
    # Lightning's deterministic=true switched it on for the process (and with it torch._inductor's
    # `deterministic`, which the conftest guard checks): off again for the tests after this one
    torch.use_deterministic_algorithms(False)
    assert results[0] == results[1]


@pytest.mark.slow
def test_kill_9_mid_epoch_then_resume_from_last(tmp_path):
    """A killed run continues from its last completed epoch and ends with all epochs run."""
    data = tmp_path / "data"
    # 250 steps of 8 per epoch (~1.4 s on 2 idle cores, 60 steps took 0.33 s): the kill 0.3 s after
    # epoch 0's checkpoint lands early in epoch 1 with room to spare on a faster machine; the 500 steps
    # per epoch this had cost minutes on a loaded CI machine and proved nothing more
    fabricate.write_idx(data / "MNIST" / "raw", n_train=2000, n_test=100)
    run_dir = tmp_path / "run"
    args = [sys.executable, "train.py", "model=lenet5", "data=mnist", "data.verify_counts=false",
            "data.batch_size=8", "trainer.max_epochs=3", "~callbacks.progress_bar", f"hydra.run.dir={run_dir}",
            f"paths.cache_dir={tmp_path / 'cache'}"]
    env = {**os.environ, "DATA_DIR": str(data)}
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = run_dir / "checkpoints" / "last.ckpt"
    deadline = time.time() + 300
    while not last.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.3)  # into epoch 1
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (run_dir / "metrics.json").exists(), "the run finished before it could be killed"
    saved_epoch = torch.load(last, weights_only=True)["epoch"]
    assert saved_epoch <= 1
    killed = torch.load(last, weights_only=True)["run_stats"]  # the killed session's record

    p = subprocess.run(args + ["ckpt_path=last"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["status"] == "completed" and m["epochs"] == 3
    assert "Restoring states from the checkpoint" in p.stdout + p.stderr
    # two processes trained it: the killed one's wall time up to its checkpoint survived the kill -9
    assert m["resumed"] is True and m["sessions"] == 2 and killed["sessions"] == 1
    assert m["wall_time_s"] == pytest.approx(m["session_wall_time_s"] + killed["wall_s"], abs=2e-3)
    assert m["wall_time_s"] > m["session_wall_time_s"] > 0
    import pandas as pd

    log = pd.read_csv(run_dir / "csv" / "metrics.csv")
    val_epochs = log.dropna(subset=["val/acc"])["epoch"].astype(int).tolist()
    assert val_epochs == [0, 1, 2]  # every epoch once: none lost, none repeated


class _Payload:
    """An object a malicious checkpoint would smuggle in: unpickling it must be refused."""

    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_checkpoints_load_with_weights_only(fake_data, tmp_path):
    cfg = compose_cfg(["model=lenet5", "data=mnist", *QUICK], tmp_path, fake_data)
    train(cfg)
    last = tmp_path / "checkpoints" / "last.ckpt"
    ckpt = torch.load(last, weights_only=True)
    ckpt["evil"] = _Payload()
    torch.save(ckpt, last)
    (tmp_path / "metrics.json").unlink()
    resumed = compose_cfg(["model=lenet5", "data=mnist", *QUICK, "trainer.max_epochs=2", "ckpt_path=last"],
                          tmp_path, fake_data)
    with pytest.raises(Exception, match="Weights only load failed|weights_only"):
        train(resumed)


def test_readme_tensorboard_binds_to_localhost():
    readme = (ROOT / "README.md").read_text()
    commands = [ln for ln in readme.splitlines() if ln.strip().startswith("tensorboard ")]
    assert commands and all("--host 127.0.0.1" in c or "--host localhost" in c for c in commands)
