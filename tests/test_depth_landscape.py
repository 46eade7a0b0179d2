"""Issue 8, part: the plain deep networks of the accuracy-vs-depth study (DeepMLP, DeepCNN, their
configs and the depth_study preset) and the output-landscape command (src/analysis/landscape.py)."""
from __future__ import annotations

import csv
import json
import math
import re
import shlex

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from torch import nn

from src.analysis.landscape import landscape, landscape_figure, landscape_network, landscape_weights, main, write_csv
from src.models import DeepCNN, DeepMLP
from src.models.activations import activation_factory
from src.models.deep_plain import downsample_positions
from tests.conftest import CONF, QUICK, ROOT, compose_cfg
from tests.model_checks import (  # noqa: F401
    ACTIVATION_FUNCS, BUILTIN_ACTIVATIONS, Marker, RecordCalls, n_params, one_thread,
)


pytestmark = pytest.mark.usefixtures("one_thread")
BUILTIN = BUILTIN_ACTIVATIONS


# ================================================================================ the models
def mlp_count(c, s, k, depth, w, bn):
    return c * s * s * w + (depth - 1) * w * w + depth * w * (2 if bn else 1) + w * k + k


def cnn_count(c, k, depth, w, bn):
    return 9 * c * w + (depth - 1) * 9 * w * w + depth * w * (2 if bn else 1) + w * k + k


@pytest.mark.parametrize("bn", [False, True])
@pytest.mark.parametrize("depth", [1, 2, 7, 50])
@pytest.mark.parametrize("c,s,k", [(1, 28, 10), (3, 32, 10), (3, 16, 2)])
def test_parameter_counts_are_the_formulas(c, s, k, depth, bn):
    for w in (8, 128):
        assert n_params(DeepMLP(c, k, "relu", image_size=s, depth=depth, width=w, batch_norm=bn)) == \
            mlp_count(c, s, k, depth, w, bn)
    for w in (8, 32):
        assert n_params(DeepCNN(c, k, "relu", depth=depth, width=w, batch_norm=bn)) == cnn_count(c, k, depth, w, bn)


@pytest.mark.parametrize("name,count,count_bn,depth_counts", [
    ("deepmlp", 250_378, 251_658, {2: 118_282, 50: 910_858}),
    ("deepcnn", 83_882, 84_202, {2: 9_898, 50: 453_802}),
])
def test_configs_state_their_mnist_counts(name, count, count_bn, depth_counts, tmp_path):
    text = (CONF / "model" / f"{name}.yaml").read_text()
    cfg = compose_cfg([f"model={name}", "data=mnist"], tmp_path)
    assert n_params(instantiate(cfg.model)) == count and f"{count:,}" in text
    bn = compose_cfg([f"model={name}", "data=mnist", "model.batch_norm=true"], tmp_path)
    assert n_params(instantiate(bn.model)) == count_bn and f"{count_bn:,}" in text
    for depth, n in depth_counts.items():
        assert f"{n:,}" in text
        deep = compose_cfg([f"model={name}", "data=mnist", f"model.depth={depth}"], tmp_path)
        assert n_params(instantiate(deep.model)) == n
    model = instantiate(cfg.model)
    assert sum(isinstance(m, nn.ReLU) for m in model.modules()) == cfg.model.depth  # activation=relu arrived


def _builders():
    return {
        "mlp": lambda c, s, depth, bn, act: DeepMLP(c, 10, act, image_size=s, depth=depth, width=32, batch_norm=bn),
        "cnn": lambda c, s, depth, bn, act: DeepCNN(c, 10, act, depth=depth, width=8, batch_norm=bn),
    }


@pytest.mark.parametrize("bn", [False, True])
@pytest.mark.parametrize("depth", [2, 50])
@pytest.mark.parametrize("c,s", [(1, 28), (3, 32)], ids=["1x28x28", "3x32x32"])
@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_forward_backward(kind, c, s, depth, bn):
    torch.manual_seed(0)
    model = _builders()[kind](c, s, depth, bn, "relu").train()
    out = model(torch.randn(4, c, s, s))
    assert out.shape == (4, 10) and torch.isfinite(out).all()
    nn.functional.cross_entropy(out, torch.tensor([0, 1, 2, 3])).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
    assert not any(isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d) for m in model.modules()) or bn
    with torch.no_grad():
        assert model.eval()(torch.randn(1, c, s, s)).shape == (1, 10)


@pytest.mark.parametrize("depth", [2, 5, 50])
@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_every_nonlinearity_comes_from_the_factory(kind, depth):
    model = _builders()[kind](3, 32, depth, True, Marker)
    leaves = [m for m in model.modules() if not list(m.children())]
    assert sum(isinstance(m, Marker) for m in leaves) == depth
    assert not [m for m in leaves if isinstance(m, BUILTIN)]
    allowed = (nn.Linear, nn.Conv2d, nn.BatchNorm1d, nn.BatchNorm2d, nn.Flatten, nn.AdaptiveAvgPool2d, Marker)
    assert {type(m).__name__ for m in leaves if not isinstance(m, allowed)} == set()

    ran = []
    for m in leaves:
        if isinstance(m, Marker):
            m.register_forward_hook(lambda *a: ran.append(1))
    with RecordCalls() as rec:
        model(torch.randn(2, 3, 32, 32)).sum().backward()
    assert len(ran) == depth
    assert not rec.names & ACTIVATION_FUNCS
    # and no activation is spelt in the source
    code = (ROOT / "src" / "models" / "deep_plain.py").read_text()
    assert not re.search(r"nn\.(ReLU6?|SiLU|GELU|Tanh|Sigmoid|LeakyReLU|ELU|Mish|Hardswish)\b|\bF\.\w+|"
                         r"functional|\.relu\(|torch\.(relu|tanh|sigmoid)\b", code)


def test_no_residual_connections_and_downsampling_positions():
    assert downsample_positions(50, 2) == [16, 33] and downsample_positions(10, 2) == [3, 6]
    assert downsample_positions(2, 2) == [0, 1] and downsample_positions(1, 3) == [0]
    model = DeepCNN(1, 10, "relu", depth=50, width=8)
    strides = [m.stride[0] for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [i for i, st in enumerate(strides) if st == 2] == [16, 33]
    assert model.features(torch.randn(1, 1, 28, 28)).shape == (1, 8, 7, 7)
    assert DeepCNN(3, 10, "relu", depth=5, width=8, downsample=0).features(torch.randn(1, 3, 32, 32)).shape[-1] == 32
    # plain: the features are one Sequential chain, so the output is a function of the last layer only
    mlp = DeepMLP(1, 10, "relu", depth=6, width=16)
    x = torch.randn(3, 1, 28, 28)
    h = x
    for layer in mlp.features:
        h = layer(h)
    torch.testing.assert_close(mlp.fc(h), mlp(x))
    for bad in (dict(depth=0), dict(width=0), dict(init="orthogonal")):
        with pytest.raises(ValueError):
            DeepMLP(**bad)


def test_kaiming_init_is_the_default_and_the_same_for_every_activation():
    def weights(act, init="kaiming"):
        torch.manual_seed(3)
        return [p.detach().clone() for p in DeepMLP(1, 10, act, depth=5, width=64, init=init).parameters()]

    relu, swish, cos = weights("relu"), weights("swish"), weights("cos")
    assert all(torch.equal(a, b) and torch.equal(a, c) for a, b, c in zip(relu, swish, cos))
    hidden = DeepMLP(1, 10, "relu", depth=5, width=256).features[3].weight  # a 256 → 256 layer
    assert hidden.std().item() == pytest.approx(math.sqrt(2 / 256), rel=0.03)
    assert float(DeepMLP(depth=3).features[1].bias.detach().abs().max()) == 0.0
    torch_default = DeepMLP(1, 10, "relu", depth=5, width=256, init="torch").features[3].weight
    assert torch_default.abs().max().item() <= 1 / math.sqrt(256) + 1e-7


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_loss_decreases_at_depth_5(kind):
    torch.manual_seed(0)
    c, s = (1, 28) if kind == "mlp" else (3, 16)
    model = (DeepMLP(c, 10, "swish", image_size=s, depth=5, width=64) if kind == "mlp"
             else DeepCNN(c, 10, "swish", depth=5, width=16))
    x, y = torch.randn(32, c, s, s), torch.arange(32) % 10
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(20):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


# ================================================================================ the preset
SWEEP = ("python train.py -m experiment=depth_study activation=relu,swish,cos model.depth=2,5,10,20,30,40,50"
         " seed=0,1,2")


def _documented_sweeps() -> list[list[str]]:
    text = (CONF / "experiment" / "depth_study.yaml").read_text()
    assert text.startswith("# @package _global_\n")
    lines = [re.sub(r"^#\s*", "", ln) for ln in text.splitlines() if re.match(r"^#\s+python train\.py", ln)]
    assert lines[0] == SWEEP
    return [shlex.split(ln)[3:] for ln in lines]  # after "python train.py -m"


def test_depth_study_documents_its_sweeps_and_every_job_composes(tmp_path):
    from src.cli import check_group_choices
    from src.config_schema import validate

    sweeps = _documented_sweeps()
    assert len(sweeps) >= 2 and any("model=deepcnn" in s for s in sweeps)
    for args in sweeps:
        assert args[0] == "experiment=depth_study"
        check_group_choices(args)
        values = [a.split("=", 1)[1].split(",") for a in args]
        base = [f"{a.split('=', 1)[0]}={v[0]}" for a, v in zip(args, values)]
        jobs = [base] + [base[:i] + [f"{a.split('=', 1)[0]}={v}"] + base[i + 1:]
                         for i, (a, vs) in enumerate(zip(args, values)) for v in vs[1:] if not a.startswith("seed=")]
        for job in jobs:
            cfg = compose_cfg(job, tmp_path)
            validate(cfg)
            depth = next(int(j.split("=")[1]) for j in job if j.startswith("model.depth="))
            model = instantiate(cfg.model)
            assert model.depth == depth and model.batch_norm == ("model.batch_norm=true" in job)
    c = compose_cfg(["experiment=depth_study"], tmp_path)
    assert c.data.name == "mnist" and c.model._target_ == "src.models.deep_plain.DeepMLP" and c.activation.name == "relu"
    assert c.optimizer._target_ == "torch.optim.Adam" and c.optimizer.lr == 0.001 and c.optimizer.weight_decay == 0
    assert (c.data.batch_size, c.data.augment, c.model.batch_norm) == (128, "none", False)
    assert 3 <= c.trainer.max_epochs <= 20


@pytest.mark.parametrize("extra", [["activation=swish", "model.depth=20"],
                                   ["model=deepcnn", "activation=cos", "model.depth=5"]], ids=["deepmlp", "deepcnn"])
def test_depth_study_trains_a_few_batches(extra, fake_data, tmp_path):
    from train import train

    cfg = compose_cfg(["experiment=depth_study", "seed=0", *extra, *QUICK], tmp_path, fake_data)
    train(cfg)
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["status"] == "completed" and math.isfinite(m["test/loss"])
    assert m["choices"]["experiment"] == "depth_study"
    assert m["params"] == n_params(instantiate(cfg.model))


# ================================================================================ the landscape
def _hand_weights(layers, width, seed, bias_std=1.0):
    """The documented draw: one generator, W1, b1, W2, b2, ... in float64; W ~ N(0, 2/fan_in)."""
    g = torch.Generator().manual_seed(seed)
    sizes = [2] + [width] * layers + [1]
    out = []
    for fi, fo in zip(sizes[:-1], sizes[1:]):
        w = torch.randn(fo, fi, generator=g, dtype=torch.float64).numpy() * math.sqrt(2 / fi)
        b = torch.randn(fo, generator=g, dtype=torch.float64).numpy() * bias_std
        out.append((w, b))
    return out


def _hand_net(weights, act, x, y):
    h = np.array([x, y])
    for i, (w, b) in enumerate(weights):
        h = w @ h + b
        if i < len(weights) - 1:
            h = act(h)
    return float(h[0])


HAND = {"relu": lambda h: np.maximum(h, 0.0), "swish": lambda h: h / (1.0 + np.exp(-h)), "tanh": np.tanh}


def test_csv_and_arrays_hold_the_networks_values(tmp_path):
    layers, width, seed, r, points = 4, 16, 7, 3.0, 21
    results = landscape(["relu", "swish", "tanh"], layers=layers, width=width, seed=seed, range_=r, points=points)
    assert list(results) == ["relu", "swish", "tanh"]
    path = write_csv(results, tmp_path / "l.csv")
    with path.open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["activation", "x", "y", "output"] and len(rows) == 3 * points * points
    table = {(row["activation"], float(row["x"]), float(row["y"])): float(row["output"]) for row in rows}
    weights = _hand_weights(layers, width, seed)
    expected_axis = np.linspace(-r, r, points)
    for name, (xs, ys, z) in results.items():
        np.testing.assert_allclose(xs, expected_axis, rtol=0, atol=1e-12)
        np.testing.assert_allclose(ys, expected_axis, rtol=0, atol=1e-12)
        assert z.shape == (points, points) and z.dtype == np.float64
        for i, j in [(0, 0), (0, points - 1), (points - 1, 0), (10, 10), (3, 17), (points - 1, points - 1)]:
            x, y = xs[j], ys[i]
            assert table[(name, x, y)] == z[i, j]  # the CSV holds the array's values exactly
            assert z[i, j] == pytest.approx(_hand_net(weights, HAND[name], x, y), rel=1e-11, abs=1e-12)
        assert len({v for (a, _, _), v in table.items() if a == name}) > points  # not a constant map


def test_relu_landscape_is_piecewise_linear_smooth_ones_are_not():
    tol = 1e-11
    # on the grid: a small net has few kinks, so most second differences along a row vanish for ReLU
    grid = landscape(["relu", "swish", "cos", "seu"], layers=2, width=8, points=120)
    frac = {k: (np.abs(np.diff(z, 2, axis=1)) < tol * np.abs(z).max()).mean() for k, (_, _, z) in grid.items()}
    assert frac["relu"] > 0.8 and max(frac["swish"], frac["cos"], frac["seu"]) < 0.05, frac
    # the default 6x64 net along a fine line through its plane
    weights = landscape_weights(6, 64, 0)
    t = torch.linspace(-5, 5, 20001, dtype=torch.float64)
    line = torch.stack([t, 0.3 * t + 1], 1)
    for name in ("relu", "swish", "seu"):
        with torch.no_grad():
            z = landscape_network(weights, activation_factory(name)())(line)[:, 0].numpy()
        zero = (np.abs(np.diff(z, 2)) < tol * np.abs(z).max()).mean()
        assert (zero > 0.9) if name == "relu" else (zero < 0.05), (name, zero)


def test_same_seed_same_outputs_and_the_same_weights_for_every_activation(monkeypatch):
    import src.analysis.landscape as mod

    kw = dict(layers=3, width=12, points=15)
    a, b = landscape(["relu", "cos"], seed=4, **kw), landscape(["relu", "cos"], seed=4, **kw)
    assert all(np.array_equal(a[k][2], b[k][2]) for k in a)
    c = landscape(["relu"], seed=5, **kw)
    assert not np.allclose(a["relu"][2], c["relu"][2])
    assert not np.allclose(a["relu"][2], a["cos"][2])

    seen = []
    real = mod.landscape_network
    monkeypatch.setattr(mod, "landscape_network", lambda w, act: seen.append(w) or real(w, act))
    torch.manual_seed(123)
    before = torch.rand(1)
    landscape(["relu", "swish", "seu", "tanh"], seed=4, **kw)
    torch.manual_seed(123)
    assert torch.equal(torch.rand(1), before)  # the global RNG is left alone
    assert len(seen) == 4 and all(w is seen[0] for w in seen)  # built once, activations swapped
    nets = [real(seen[0], activation_factory(n)()) for n in ("relu", "swish")]
    sd0, sd1 = nets[0].state_dict(), nets[1].state_dict()
    assert sd0.keys() == sd1.keys() and all(torch.equal(sd0[k], sd1[k]) for k in sd0)
    hand = _hand_weights(3, 12, 4)
    linears = [m for m in nets[1] if isinstance(m, nn.Linear)]
    assert len(linears) == 4
    for lin, (w, b) in zip(linears, hand):
        assert np.array_equal(lin.weight.detach().numpy(), w) and np.array_equal(lin.bias.detach().numpy(), b)


def test_command_writes_png_and_csv(tmp_path, capsys):
    out, table = tmp_path / "fig" / "landscape.png", tmp_path / "l.csv"
    assert main(["relu", "swish", "seu:alpha=0.5", "--out", str(out), "--csv", str(table), "--points", "12",
                 "--layers", "3", "--width", "10", "--seed", "2", "--range", "4"]) == 0
    assert out.stat().st_size > 5000 and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = list(csv.DictReader(table.open()))
    assert len(rows) == 3 * 144 and {r["activation"] for r in rows} == {"relu", "swish", "seu:alpha=0.5"}
    ref = landscape(["seu:alpha=0.5"], layers=3, width=10, seed=2, range_=4, points=12)["seu:alpha=0.5"][2]
    got = np.array([float(r["output"]) for r in rows if r["activation"] == "seu:alpha=0.5"]).reshape(12, 12)
    assert np.array_equal(got, ref)
    assert min(float(r["x"]) for r in rows) == -4.0 and max(float(r["y"]) for r in rows) == 4.0
    assert "wrote" in capsys.readouterr().out
    assert main(["nope", "--out", str(tmp_path / "x.png")]) == 2 and not (tmp_path / "x.png").exists()
    fig = landscape_figure(["relu", "tanh"], layers=2, width=4, points=10)
    assert len([ax for ax in fig.axes if ax.images]) == 2


def test_the_activation_figures_default_into_outputs_never_the_current_folder(tmp_path, monkeypatch):
    """`python -m src.analysis.activations_plot relu` wrote activations.png into the repo root."""
    from src.analysis import activations_plot

    monkeypatch.chdir(tmp_path)
    assert activations_plot.main(["relu", "tanh"]) == 0
    assert (tmp_path / "outputs" / "activations.png").stat().st_size > 1000
    assert not (tmp_path / "activations.png").exists()


def test_a_test_prefix_is_warned_about(caplog):
    """+trainer.limit_test_batches tests a class-sorted prefix (horses-or-humans: 128/128 horses)."""
    import logging

    from src.lit.trainer import build_trainer

    with caplog.at_level(logging.WARNING):
        build_trainer(compile="off", accelerator="cpu", logger=False, enable_checkpointing=False,
                      limit_test_batches=2, enable_progress_bar=False)
    assert sum("data.test_fraction" in r.getMessage() and "sorted by class" in r.getMessage()
               for r in caplog.records) == 1
