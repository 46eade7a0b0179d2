"""The study toolkit: optimizers (SAM included), schedules with warm-up, the MSE loss, regularisers
(augmentation presets, input noise, early stopping) and the study presets in conf/experiment/."""
from __future__ import annotations

import json
import math
import re
import shlex
from functools import partial
from pathlib import Path

import pandas as pd
import pytest
import torch
from hydra.utils import instantiate
from torch import nn

from src.errors import ConfigError
from src.lit.sam import SAM
from tests.conftest import CONF, QUICK, compose_cfg
from train import train


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def _read_lr(run_dir: Path, column: str) -> list[float]:
    return pd.read_csv(run_dir / "csv" / "metrics.csv")[column].dropna().tolist()


def _metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


# ============================================================================ optimizers
OPTIMIZERS = ["sgd", "sgd_plain", "sgd_momentum", "adam", "adamw", "rmsprop", "adadelta", "adagrad", "sam"]


def test_every_optimizer_has_a_config():
    assert set(OPTIMIZERS) <= set(_options("optimizer"))


def _tiny_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8, bias=False), nn.BatchNorm1d(8), nn.Tanh(), nn.Linear(8, 3))


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_optimizer_config_instantiates_and_steps(name, tmp_path):
    from src.lit.losses import split_decay_groups

    cfg = compose_cfg([f"optimizer={name}"], tmp_path)
    model = _tiny_model()
    # with the norm/bias groups too (lit.no_decay_norm_bias=true)
    opt = instantiate(cfg.optimizer)(params=split_decay_groups(model))
    assert isinstance(opt, torch.optim.Optimizer)
    assert opt.param_groups[1]["weight_decay"] == 0.0
    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    before = [p.detach().clone() for p in model.parameters()]

    def closure():
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss

    first = opt.step(closure)
    assert torch.isfinite(first)
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    # the state survives a checkpoint round trip (as Lightning saves and restores it)
    again = instantiate(cfg.optimizer)(params=split_decay_groups(model))
    again.load_state_dict(opt.state_dict())
    assert again.state_dict()["param_groups"] == opt.state_dict()["param_groups"]


def _flat_loss(model, x, y):
    return nn.functional.mse_loss(model(x), y)


@pytest.mark.parametrize("adaptive", [False, True])
def test_sam_step_equals_hand_computed_sam(adaptive):
    """w1 = w0 - lr * (g(w0 + e) + wd*w0),  e = rho * g(w0)/||g(w0)||  (ASAM: rho * w^2 g / ||w g||)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2))
    x, y = torch.randn(7, 3), torch.randn(7, 2)
    rho, lr, wd = 0.05, 0.1, 1e-2
    w0 = [p.detach().clone() for p in model.parameters()]

    def grads_at(ws):
        with torch.no_grad():
            for p, w in zip(model.parameters(), ws):
                p.copy_(w)
        model.zero_grad()
        _flat_loss(model, x, y).backward()
        return [p.grad.detach().clone() for p in model.parameters()]

    with torch.no_grad():
        loss_w0 = _flat_loss(model, x, y).item()
    g1 = grads_at(w0)
    scaled = [g * w.abs() for g, w in zip(g1, w0)] if adaptive else g1
    norm = torch.sqrt(sum((s ** 2).sum() for s in scaled))
    e = [rho * (s * w.abs() if adaptive else s) / norm for s, w in zip(scaled, w0)]
    g2 = grads_at([w + d for w, d in zip(w0, e)])
    expected = [w - lr * (g + wd * w) for w, g in zip(w0, g2)]

    with torch.no_grad():  # back to w0 for SAM
        for p, w in zip(model.parameters(), w0):
            p.copy_(w)
    opt = SAM(model.parameters(), base_optimizer=torch.optim.SGD, rho=rho, adaptive=adaptive, lr=lr,
              weight_decay=wd)
    passes = []

    def closure():
        passes.append(opt.in_second_pass)
        opt.zero_grad()
        loss = _flat_loss(model, x, y)
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert passes == [False, True]  # two forward/backward passes, the second flagged
    assert loss.item() == pytest.approx(loss_w0)  # step() returns the loss at w, not at w + e
    for p, want in zip(model.parameters(), expected):
        torch.testing.assert_close(p.detach(), want, rtol=1e-5, atol=1e-6)


def test_sam_returns_the_loss_at_w_and_shares_groups_with_its_base():
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    x, y = torch.randn(5, 3), torch.randn(5, 1)
    with torch.no_grad():
        at_w = _flat_loss(model, x, y).item()
    opt = SAM(model.parameters(), base_optimizer=partial(torch.optim.SGD, momentum=0.9), lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)

    def closure():
        opt.zero_grad()
        loss = _flat_loss(model, x, y)
        loss.backward()
        return loss

    assert opt.step(closure).item() == pytest.approx(at_w)
    sched.step()
    assert opt.base_optimizer.param_groups[0]["lr"] == pytest.approx(0.05)  # the scheduler reaches the base
    assert "momentum_buffer" in opt.state_dict()["state"][0]  # the base's state is checkpointed
    with pytest.raises(ConfigError, match="closure"):
        opt.step()


def test_bn_stats_frozen_keeps_running_statistics():
    from src.lit.sam import bn_stats_frozen

    bn = nn.BatchNorm1d(3)
    bn.train()
    with bn_stats_frozen(nn.Sequential(bn)):
        out = bn(torch.randn(8, 3) * 5 + 2)
    assert torch.equal(bn.running_mean, torch.zeros(3)) and torch.equal(bn.running_var, torch.ones(3))
    assert out.mean(0).abs().max() < 1e-5 and bn.momentum == 0.1  # batch statistics used; momentum restored
    bn(torch.randn(8, 3) + 2)
    assert not torch.equal(bn.running_mean, torch.zeros(3))


def test_sam_runs_twice_per_step_under_lightning_bf16(tmp_path):
    """Lightning's automatic optimisation + bf16-mixed: the closure (training_step) runs twice a step."""
    import lightning as L
    from torch.utils.data import DataLoader, TensorDataset

    from src.lit import ClassifierModule

    calls = []

    class Counting(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))

        def forward(self, x):
            if self.training:
                calls.append(torch.is_autocast_cpu_enabled() if hasattr(torch, "is_autocast_cpu_enabled")
                             else torch.is_autocast_enabled("cpu"))
            return self.net(x)

    torch.manual_seed(0)
    model = Counting()
    module = ClassifierModule(model, optimizer=partial(SAM, base_optimizer=torch.optim.SGD, lr=0.1), scheduler=None,
                              num_classes=3, log_images=False)
    data = DataLoader(TensorDataset(torch.randn(24, 1, 4, 4), torch.randint(0, 3, (24,))), batch_size=8)
    before = [p.detach().clone() for p in model.parameters()]
    trainer = L.Trainer(accelerator="cpu", precision="bf16-mixed", max_steps=3, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, default_root_dir=tmp_path)
    trainer.fit(module, train_dataloaders=data)
    assert len(calls) == 6 and all(calls)  # 3 steps x 2 passes, each under bf16 autocast
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_sam_trains_end_to_end_with_decay_groups(fake_data, tmp_path):
    cfg = compose_cfg(["model=lenet5", "data=mnist", "optimizer=sam", "lit.no_decay_norm_bias=true",
                       "trainer.precision=bf16-mixed", *QUICK], tmp_path, fake_data)
    train(cfg)
    m = _metrics(tmp_path)
    assert m["status"] == "completed" and math.isfinite(m["test/loss"])
    logged = pd.read_csv(tmp_path / "csv" / "metrics.csv")
    groups = [c for c in logged.columns if c.startswith("lr-SAM")]  # lr-SAM/pg1, lr-SAM/pg2: decay groups
    assert len(groups) == 2 and all(logged[c].dropna().iloc[0] == pytest.approx(0.1) for c in groups)


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
                       "callbacks.early_stopping.min_delta=100"], tmp_path, fake_data)
    assert {"model_checkpoint", "learning_rate_monitor", "early_stopping"} <= set(cfg.callbacks)
    train(cfg)
    m = _metrics(tmp_path)
    assert m["status"] == "completed" and m["epochs"] == 3  # epochs 1 and 2 do not improve by 100
    # never 90 % better: x0.1 after every epoch from the second on (patience 0)
    assert _read_lr(tmp_path, "lr-SGD") == pytest.approx([1e-3, 1e-3, 1e-4])


# ============================================================================ losses
def test_mse_on_softmax_matches_a_hand_computation():
    from src.lit.losses import build_loss

    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]])
    target = torch.tensor([0, 1])
    total = 0.0
    for row, t in zip(logits.tolist(), target.tolist()):
        z = sum(math.exp(v) for v in row)
        total += sum((math.exp(v) / z - (1.0 if k == t else 0.0)) ** 2 for k, v in enumerate(row))
    expected = total / logits.numel()  # mean over every (sample, class) entry
    assert build_loss("mse", 3)(logits, target).item() == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ConfigError):
        build_loss("hinge", 3)


def test_mse_loss_trains_end_to_end(fake_data, tmp_path):
    cfg = compose_cfg(["model=lenet5", "data=mnist", "lit.loss=mse", *QUICK], tmp_path, fake_data)
    train(cfg)
    m = _metrics(tmp_path)
    assert m["status"] == "completed" and 0 < m["test/loss"] < 1  # a squared error of probabilities


# ============================================================================ regularisers
AUGMENTS = ["none", "flip", "crop_flip", "scale_rotate", "crop_flip_scale_rotate"]


@pytest.mark.parametrize("name", AUGMENTS[1:])
def test_augment_preset_keeps_shape_and_differs_per_sample(name):
    from src.datamodules.augment import build_augment

    torch.manual_seed(0)
    img = torch.randint(0, 256, (1, 3, 12, 12), dtype=torch.uint8)
    x = img.repeat(64, 1, 1, 1)
    out = build_augment(name, padding=2)(x)
    assert out.shape == x.shape and out.dtype == torch.uint8 and out.device == x.device
    assert len({tuple(o.flatten().tolist()) for o in out}) > (1 if name == "flip" else 16)
    assert torch.equal(build_augment("none")(x), x)


def test_scale_rotate_geometry():
    from src.datamodules.augment import random_scale_rotate, scale_rotate

    x = torch.randint(0, 256, (3, 2, 8, 8), dtype=torch.uint8)
    same = scale_rotate(x, torch.zeros(3), torch.ones(3))
    assert torch.equal(same, x)
    quarter = scale_rotate(x, torch.full((3,), math.pi / 2), torch.ones(3))
    assert torch.equal(quarter, torch.rot90(x, 1, (2, 3)))
    shrunk = scale_rotate(x, torch.zeros(3), torch.full((3,), 0.5))
    assert (shrunk[..., 0, :] == 0).all() and (shrunk[..., :, -1] == 0).all()  # zoom out: zeros at the border
    assert torch.equal(random_scale_rotate(x, degrees=0.0, scale=(1.0, 1.0)), x)


def test_scale_rotate_runs_in_the_datamodule_in_training_only(fake_data, tmp_path):
    from types import SimpleNamespace

    from src.datamodules import ImageClassificationDataModule
    from src.datamodules.augment import normalize

    dm = ImageClassificationDataModule("cifar10", data_dir=str(fake_data), cache_dir=str(tmp_path),
                                       augment="scale_rotate", verify_counts=False)
    dm.setup()
    x, y = next(iter(dm.val_dataloader()))
    dm.trainer = SimpleNamespace(training=False)
    assert torch.allclose(dm.on_after_batch_transfer((x, y), 0)[0], normalize(x, dm.mean, dm.std))
    dm.trainer = SimpleNamespace(training=True)
    assert not torch.allclose(dm.on_after_batch_transfer((x, y), 0)[0], normalize(x, dm.mean, dm.std))


def test_input_noise_changes_training_inputs_only():
    from src.lit import ClassifierModule

    seen = []

    class Recorder(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(16, 3)

        def forward(self, x):
            seen.append(x.detach().clone())
            return self.fc(x.flatten(1))

    module = ClassifierModule(Recorder(), optimizer=partial(torch.optim.SGD, lr=0.1), num_classes=3,
                              input_noise_std=0.5, log_images=False)
    torch.manual_seed(0)
    x, y = torch.randn(256, 1, 4, 4), torch.randint(0, 3, (256,))
    module.training_step((x, y), 1)  # batch 1: no image-grid logging, which needs a trainer
    module.validation_step((x, y), 0)
    module.test_step((x, y), 0)
    trained, validated, tested = seen
    noise = trained - x
    assert noise.std().item() == pytest.approx(0.5, rel=0.05) and abs(noise.mean().item()) < 0.02
    assert torch.equal(validated, x) and torch.equal(tested, x)


def test_early_stopping_config_keeps_the_default_callbacks(tmp_path):
    default = compose_cfg([], tmp_path).callbacks
    stopping = compose_cfg(["callbacks=early_stopping"], tmp_path).callbacks
    assert set(stopping) == set(default) | {"early_stopping"}
    assert all(stopping[k] == default[k] for k in default)
    es = stopping.early_stopping
    assert es.monitor == "val/loss" and es.mode == "min" and es.patience > 0


# ============================================================================ study presets
PRESETS = ["binary_activation", "cifar_activation", "cos_study", "taylor_mnist", "pyramidnet_shakedrop", "lenet_grid"]
TINY = {  # what each preset needs to run a few batches on the fabricated data in seconds
    "binary_activation": ["data.image_size=32"],
    "pyramidnet_shakedrop": ["model.depth=20", "model.alpha=12"],
}


def _preset_text(name: str) -> str:
    return (CONF / "experiment" / f"{name}.yaml").read_text()


def _documented_sweeps(name: str) -> list[list[str]]:
    """The `python train.py -m ...` lines in the preset's header comment, as argument lists."""
    lines = [re.sub(r"^#\s*", "", ln).rstrip(" \\") for ln in _preset_text(name).splitlines()
             if re.match(r"^#\s+python train\.py", ln)]
    return [shlex.split(ln)[2:] for ln in lines]


def _missing_configs(name: str) -> list[str]:
    """Model/activation configs the preset or its documented sweeps name but conf/ lacks (yet)."""
    text = _preset_text(name)
    wanted = set()
    for group in ("model", "activation", "optimizer", "scheduler", "data"):
        wanted |= {(group, v) for v in re.findall(rf"override /{group}: (\w+)", text)}
        for args in _documented_sweeps(name):
            for a in args:
                if a.startswith(f"{group}="):
                    wanted |= {(group, v) for v in a.split("=", 1)[1].split(",")}
    return sorted(f"conf/{g}/{v}.yaml" for g, v in wanted if v not in _options(g))


def _skip_if_missing(name: str) -> None:
    missing = _missing_configs(name)
    if missing:
        pytest.skip(f"experiment={name} names configs that do not exist yet: {', '.join(missing)}")


def test_every_study_has_a_preset():
    assert set(PRESETS) <= set(_options("experiment"))


@pytest.mark.parametrize("name", PRESETS)
def test_preset_documents_its_sweep_and_every_job_composes(name, tmp_path):
    """Each documented command line composes and validates, every swept value included (one value
    of one key at a time, the others at their first value: the full grids are thousands of jobs)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from src.cli import check_group_choices
    from src.config_schema import validate

    assert _preset_text(name).startswith("# @package _global_\n")
    sweeps = _documented_sweeps(name)
    assert sweeps and all(s[0] == "-m" and s[1] == f"experiment={name}" for s in sweeps)
    assert any("seed=0,1,2,3,4" in s for s in sweeps[0])
    _skip_if_missing(name)
    jobs = []
    for args in sweeps:
        overrides = [a for a in args if a != "-m"]
        check_group_choices(overrides)
        values = [a.split("=", 1)[1].split(",") for a in overrides]
        base = [f"{a.split('=', 1)[0]}={v[0]}" for a, v in zip(overrides, values)]
        jobs.append(base)
        for i, (a, vs) in enumerate(zip(overrides, values)):
            key = a.split("=", 1)[0]
            jobs += [base[:i] + [f"{key}={v}"] + base[i + 1:] for v in vs[1:] if key != "seed"]
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        for job in jobs:
            cfg = compose("train", overrides=job)
            validate(cfg)
    GlobalHydra.instance().clear()


def _expect(name: str, cfg) -> None:
    """What the issue says each study fixed."""
    c = cfg
    if name == "binary_activation":
        assert (c.data.name, c.data.image_size, c.data.grayscale, c.data.channels) == ("horses_or_humans", 100, True, 1)
        assert c.model._target_.endswith("ResNet18") and c.optimizer.momentum == 0
        assert (c.data.batch_size, c.optimizer.weight_decay, c.optimizer.lr) == (8, 1.0, 0.001)
        assert list(c.scheduler.milestones) == [8, 14] and c.scheduler.gamma == 0.1 and c.trainer.max_epochs == 25
    elif name == "cifar_activation":
        assert c.data.name == "cifar10" and c.model._target_.endswith("ResNet18")
        assert (c.trainer.max_epochs, c.data.batch_size, c.optimizer.lr, c.optimizer.momentum) == (60, 128, 0.1, 0.9)
        assert not c.optimizer.nesterov and list(c.scheduler.milestones) == [30, 45] and c.scheduler.gamma == 0.1
    elif name == "cos_study":
        assert c.data.name == "cifar10" and c.trainer.max_epochs == 200 and c.model._target_.endswith("ShuffleNetV2")
    elif name == "taylor_mnist":
        assert c.data.name == "mnist" and c.model._target_.endswith("SimpleCNN") and c.model.conv_activation == "relu"
        assert c.optimizer._target_ == "torch.optim.Adam" and c.optimizer.lr == 0.001
        assert (c.data.batch_size, c.trainer.max_epochs) == (128, 12)
    elif name == "pyramidnet_shakedrop":
        assert c.model._target_.endswith("PyramidNet") and c.model.shakedrop and c.activation.name == "leakyrelu"
        assert c.optimizer._target_ == "torch.optim.SGD" and c.scheduler._target_.endswith("cosine")
        assert c.lit.label_smoothing > 0 and c.data.merge_val_into_train and c.data.val_size > 0
        assert c.data.batch_size == 256
    elif name == "lenet_grid":
        assert c.data.name == "fashion_mnist" and c.model._target_.endswith("LeNet5")
        assert c.optimizer._target_ == "torch.optim.SGD" and c.optimizer.momentum == 0
        assert (c.trainer.max_epochs, c.optimizer.lr, c.data.batch_size) == (5, 0.1, 40)


@pytest.mark.parametrize("name", PRESETS)
def test_preset_composes_and_trains_a_few_batches(name, fake_data, tmp_path):
    _skip_if_missing(name)
    _expect(name, compose_cfg([f"experiment={name}"], tmp_path, fake_data))
    cfg = compose_cfg([f"experiment={name}", "seed=0", *QUICK, *TINY.get(name, [])], tmp_path, fake_data)
    train(cfg)
    m = _metrics(tmp_path)
    assert m["status"] == "completed" and math.isfinite(m["test/loss"])
    assert m["choices"]["experiment"] == name
