"""Learning-rate schedules, alone and behind a linear warm-up, per step and per epoch."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import torch
from hydra.utils import instantiate
from torch import nn

from src.errors import ConfigError
from tests.conftest import CONF, QUICK, compose_cfg
from train import train


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def _read_lr(run_dir: Path, column: str) -> list[float]:
    return pd.read_csv(run_dir / "csv" / "metrics.csv")[column].dropna().tolist()


def _metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


# ============================================================================ schedules
def _run_schedule(name: str, overrides: list[str], epochs: int, steps_per_epoch: int, lr: float = 1.0,
                  metrics=None, tmp_path=Path("/tmp")):
    """The lr of every optimizer step, stepping the scheduler as Lightning does (per step, or at
    each epoch's end with the monitored metric for plateau)."""
    cfg = compose_cfg([f"scheduler={name}", *overrides], tmp_path)
    param = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=lr, momentum=0.9)
    conf = instantiate(cfg.scheduler)(opt, total_steps=epochs * steps_per_epoch, steps_per_epoch=steps_per_epoch)
    sched, interval = conf["scheduler"], conf["interval"]
    lrs = []
    for epoch in range(epochs):
        for _ in range(steps_per_epoch):
            lrs.append(opt.param_groups[0]["lr"])
            param.grad = torch.ones_like(param)
            opt.step()
            if interval == "step":
                sched.step()
        if interval == "epoch":
            sched.step(metrics[epoch]) if conf.get("reduce_on_plateau") else sched.step()
    return lrs, conf


def test_every_schedule_has_a_config():
    assert {"cosine", "cosine_restarts", "multistep", "exponential", "plateau", "onecycle", "constant"} <= set(
        _options("scheduler"))


def test_cosine_per_step_and_per_epoch(tmp_path):
    lrs, conf = _run_schedule("cosine", [], epochs=3, steps_per_epoch=4, tmp_path=tmp_path)
    assert conf["interval"] == "step"
    assert lrs == pytest.approx([0.5 * (1 + math.cos(math.pi * t / 12)) for t in range(12)])
    lrs, _ = _run_schedule("cosine", ["scheduler.interval=epoch"], epochs=3, steps_per_epoch=4, tmp_path=tmp_path)
    assert lrs == pytest.approx([0.5 * (1 + math.cos(math.pi * e / 3)) for e in range(3) for _ in range(4)])


def test_cosine_warm_restarts(tmp_path):
    over = ["scheduler.T_0=2", "scheduler.T_mult=2"]
    lrs, _ = _run_schedule("cosine_restarts", over, epochs=7, steps_per_epoch=3, tmp_path=tmp_path)
    cycle = lambda t, T: 0.5 * (1 + math.cos(math.pi * t / T))  # noqa: E731
    per_epoch = [cycle(0, 2), cycle(1, 2), cycle(0, 4), cycle(1, 4), cycle(2, 4), cycle(3, 4), cycle(0, 8)]
    assert lrs == pytest.approx([v for v in per_epoch for _ in range(3)])
    lrs, conf = _run_schedule("cosine_restarts", over + ["scheduler.interval=step"], epochs=6, steps_per_epoch=3,
                              tmp_path=tmp_path)
    assert conf["interval"] == "step"  # T_0 = 2 epochs = 6 steps, then 12 steps
    assert lrs == pytest.approx([cycle(t, 6) for t in range(6)] + [cycle(t, 12) for t in range(12)])


def test_exponential_per_epoch_and_per_step(tmp_path):
    lrs, _ = _run_schedule("exponential", ["scheduler.gamma=0.5"], epochs=3, steps_per_epoch=4, tmp_path=tmp_path)
    assert lrs == pytest.approx([0.5 ** e for e in range(3) for _ in range(4)])
    lrs, _ = _run_schedule("exponential", ["scheduler.gamma=0.5", "scheduler.interval=step"], epochs=3,
                           steps_per_epoch=4, tmp_path=tmp_path)
    assert lrs == pytest.approx([0.5 ** (t / 4) for t in range(12)])  # the same decay per epoch, smoothly


def test_multistep_milestones_in_epochs(tmp_path):
    lrs, _ = _run_schedule("multistep", ["scheduler.milestones=[1,3]"], epochs=4, steps_per_epoch=2, tmp_path=tmp_path)
    assert lrs == pytest.approx([1, 1, 0.1, 0.1, 0.1, 0.1, 0.01, 0.01])


def test_plateau_reduces_on_a_stalled_val_loss(tmp_path):
    val_loss = [1.0, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8]
    lrs, conf = _run_schedule("plateau", ["scheduler.patience=1"], epochs=7, steps_per_epoch=2, metrics=val_loss,
                              tmp_path=tmp_path)
    assert conf["monitor"] == "val/loss" and conf["interval"] == "epoch" and conf["reduce_on_plateau"]
    # best at epoch 1; epochs 2 and 3 do not improve -> more than `patience` bad epochs -> x0.1 from epoch 4
    assert lrs[::2] == pytest.approx([1, 1, 1, 1, 0.1, 0.1, 0.01])


def test_onecycle_over_the_run(tmp_path):
    lrs, conf = _run_schedule("onecycle", ["scheduler.pct_start=0.25"], epochs=4, steps_per_epoch=5, lr=0.5,
                              tmp_path=tmp_path)
    assert conf["interval"] == "step"
    peak = max(range(len(lrs)), key=lrs.__getitem__)
    assert lrs[0] == pytest.approx(0.5 / 25) and lrs[peak] == pytest.approx(0.5, rel=1e-3)
    assert peak == pytest.approx(0.25 * 19, abs=1)
    assert all(a < b for a, b in zip(lrs[:peak], lrs[1:peak + 1]))
    assert all(a > b for a, b in zip(lrs[peak:], lrs[peak + 1:]))
    assert lrs[-1] < 0.5 / 25 / 100


def _ramp(t: int, w: int) -> float:
    return min(1.0, (t + 1) / w)


def test_warmup_in_front_of_an_epoch_schedule(tmp_path):
    """Per-step warm-up over 6 steps in front of a per-epoch multistep: the milestone stays at its epoch."""
    over = ["scheduler.milestones=[2]", "scheduler.warmup_steps=6"]
    lrs, conf = _run_schedule("multistep", over, epochs=3, steps_per_epoch=4, tmp_path=tmp_path)
    assert conf["interval"] == "epoch"
    assert lrs == pytest.approx([1 / 6, 2 / 6, 3 / 6, 4 / 6, 5 / 6, 1, 1, 1, 0.1, 0.1, 0.1, 0.1])
    same, _ = _run_schedule("multistep", ["scheduler.milestones=[2]", "scheduler.warmup_epochs=1.5"], epochs=3,
                            steps_per_epoch=4, tmp_path=tmp_path)
    assert same == pytest.approx(lrs)


@pytest.mark.parametrize("name,over", [("cosine", []), ("exponential", ["scheduler.gamma=0.5"]),
                                       ("constant", []), ("cosine_restarts", ["scheduler.T_0=1"])])
def test_warmup_multiplies_any_schedule(name, over, tmp_path):
    plain, _ = _run_schedule(name, over, epochs=3, steps_per_epoch=4, tmp_path=tmp_path)
    warmed, _ = _run_schedule(name, over + ["scheduler.warmup_steps=5"], epochs=3, steps_per_epoch=4,
                              tmp_path=tmp_path)
    assert warmed == pytest.approx([lr * _ramp(t, 5) for t, lr in enumerate(plain)])


def test_warmup_in_front_of_plateau_and_onecycle(tmp_path):
    val_loss = [1.0, 1.0, 1.0, 1.0]
    plain, _ = _run_schedule("plateau", ["scheduler.patience=0"], epochs=4, steps_per_epoch=3, metrics=val_loss,
                             tmp_path=tmp_path)
    warmed, conf = _run_schedule("plateau", ["scheduler.patience=0", "scheduler.warmup_epochs=1"], epochs=4,
                                 steps_per_epoch=3, metrics=val_loss, tmp_path=tmp_path)
    assert conf["reduce_on_plateau"] and conf["monitor"] == "val/loss"
    assert warmed == pytest.approx([lr * _ramp(t, 3) for t, lr in enumerate(plain)])
    assert warmed[-1] == pytest.approx(0.01)  # the plateau saw its own lr, not the warm-up's
    plain, _ = _run_schedule("onecycle", [], epochs=2, steps_per_epoch=5, tmp_path=tmp_path)
    warmed, _ = _run_schedule("onecycle", ["scheduler.warmup_steps=4"], epochs=2, steps_per_epoch=5,
                              tmp_path=tmp_path)
    assert warmed == pytest.approx([lr * _ramp(t, 4) for t, lr in enumerate(plain)])


def test_warmup_state_survives_a_checkpoint(tmp_path):
    from src.lit.schedules import cosine

    def make():
        p = nn.Parameter(torch.zeros(1))
        opt = torch.optim.SGD([p], lr=1.0)
        return p, opt, cosine(opt, total_steps=20, steps_per_epoch=5, warmup_steps=8)["scheduler"]

    p, opt, sched = make()
    for _ in range(3):
        opt.step()
        sched.step()
    state_opt, state_sched = opt.state_dict(), sched.state_dict()
    rest = []
    for _ in range(10):
        opt.step()
        sched.step()
        rest.append(opt.param_groups[0]["lr"])
    p2, opt2, sched2 = make()
    opt2.load_state_dict(state_opt)
    sched2.load_state_dict(state_sched)
    again = []
    for _ in range(10):
        opt2.step()
        sched2.step()
        again.append(opt2.param_groups[0]["lr"])
    assert again == pytest.approx(rest)


def test_warmup_options_are_checked(tmp_path):
    with pytest.raises(ConfigError, match="not both"):
        _run_schedule("cosine", ["scheduler.warmup_steps=2", "scheduler.warmup_epochs=1"], 2, 2, tmp_path=tmp_path)
    with pytest.raises(ConfigError, match="interval"):
        _run_schedule("cosine", ["scheduler.interval=batch"], 2, 2, tmp_path=tmp_path)


def test_warmup_through_lightning_per_step(fake_data, tmp_path):
    """The warm-up hook and Lightning's per-epoch scheduler stepping compose in a real run."""
    cfg = compose_cfg(["model=lenet5", "data=mnist", *QUICK, "scheduler=multistep", "scheduler.milestones=[2]",
                       "scheduler.warmup_steps=4", "optimizer.lr=0.1", "trainer.limit_train_batches=3",
                       "trainer.max_epochs=3", "trainer.log_every_n_steps=1",
                       "callbacks.learning_rate_monitor.logging_interval=step"], tmp_path, fake_data)
    train(cfg)
    lrs = _read_lr(tmp_path, "lr-SGD")
    assert lrs == pytest.approx([0.025, 0.05, 0.075, 0.1, 0.1, 0.1, 0.01, 0.01, 0.01])


def test_plateau_and_early_stopping_through_lightning(fake_data, tmp_path):
    """plateau steps on val/loss at each epoch's end; early stopping ends the run on it."""
    cfg = compose_cfg(["model=lenet5", "data=mnist", *QUICK, "scheduler=plateau", "scheduler.patience=0",
                       "scheduler.threshold=0.9", "optimizer.lr=0.001", "trainer.max_epochs=6",
                       "callbacks=early_stopping", "callbacks.early_stopping.patience=2",
                       "callbacks.early_stopping.min_delta=100",
                       "data.val_size=16"],  # a hold-out: with validation on the test split both are refused
                      tmp_path, fake_data)
    assert {"model_checkpoint", "learning_rate_monitor", "early_stopping"} <= set(cfg.callbacks)
    train(cfg)
    m = _metrics(tmp_path)
    assert m["status"] == "completed" and m["epochs"] == 3  # epochs 1 and 2 do not improve by 100
    # never 90 % better: x0.1 after every epoch from the second on (patience 0)
    assert _read_lr(tmp_path, "lr-SGD") == pytest.approx([1e-3, 1e-3, 1e-4])
