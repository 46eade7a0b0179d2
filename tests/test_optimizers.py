"""Optimizers (SAM included) and the MSE loss of the study toolkit."""
from __future__ import annotations

import json
import math
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
