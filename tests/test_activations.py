"""Activations: every registered one against a float64 reference written as the plain formula
(autograd for the gradient), the factory contract, the custom ones' parser, Taylor coefficients,
configs, the plot command, torch.compile, and the generated Triton kernels (interpreter, on CPU)."""
from __future__ import annotations

import copy
import math
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import sympy as sp
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from src.models.activations import CUSTOM_ACTIVATIONS, activation_factory, available_activations

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "conf" / "activation"


def _sig(x):
    return 1 / (1 + torch.exp(-x))


_SELU_ALPHA, _SELU_SCALE = 1.6732632423543772848170429916717, 1.0507009873554804934193349852946

# The plain formulas, in float64 (autograd supplies the reference gradient).
REFERENCE = {
    "relu": lambda x: torch.where(x > 0, x, 0.0),
    "leakyrelu": lambda x: torch.where(x > 0, x, 0.01 * x),
    "elu": lambda x: torch.where(x > 0, x, torch.exp(x) - 1),
    "selu": lambda x: _SELU_SCALE * torch.where(x > 0, x, _SELU_ALPHA * (torch.exp(x) - 1)),
    "gelu": lambda x: 0.5 * x * (1 + torch.erf(x / math.sqrt(2))),
    "silu": lambda x: x * _sig(x),
    "swish": lambda x: x * _sig(x),
    "mish": lambda x: x * torch.tanh(torch.log(1 + torch.exp(x))),
    "hardswish": lambda x: x * torch.clamp(x + 3, 0, 6) / 6,
    "tanh": lambda x: (torch.exp(x) - torch.exp(-x)) / (torch.exp(x) + torch.exp(-x)),
    "sigmoid": _sig,
    "softplus": lambda x: torch.log(1 + torch.exp(x)),
    "seu": lambda x: torch.where(x < 0, torch.exp(x) - 1, x * _sig(x)),
    "cos": lambda x: x * _sig(x) + 0.5 * _sig(5 * x) ** 2,
    "taylor": lambda x: x - x**3 / 3 + 2 * x**5 / 15,
    "m_tanh": lambda x: 23 / 25 * x - x**3 / 10 + 7 / 25 * x**5,
    "m_sigmoid": lambda x: 0.5 + (x**5 - 8700 * x**3 + 540250 * x) / 2700000,
    "m_softplus": lambda x: 0.66 + x / 2 + 2 / 17 * x**2 + x**4 / 600,
    "formula": lambda x: x * _sig(x),  # the config's default expression
}
# x = 0 (kinks and the SEU branch point), tiny |x|, a dense grid, and large |x|
POINTS = torch.cat(
    [torch.tensor([0.0, 1e-4, -1e-4, 30.0, -30.0, 12.5, -12.5]), torch.linspace(-6, 6, 97)]
).double()


def _value_and_grad(fn, x: torch.Tensor):
    x = x.detach().clone().requires_grad_(True)
    y = fn(x)
    (g,) = torch.autograd.grad(y.sum(), x)
    return y.detach(), g


def test_every_activation_has_a_reference_and_a_config():
    assert set(REFERENCE) == set(available_activations())
    assert {p.stem for p in CONF.glob("*.yaml")} == set(available_activations())


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_values_and_gradients_match_float64_reference(name):
    act = activation_factory(name)()
    y_ref, g_ref = _value_and_grad(REFERENCE[name], POINTS)
    assert torch.isfinite(y_ref).all() and torch.isfinite(g_ref).all()
    # float64 through the module: exact up to rounding
    y64, g64 = _value_and_grad(act.double(), POINTS)
    torch.testing.assert_close(y64, y_ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(g64, g_ref, rtol=1e-10, atol=1e-12)
    # float32, the training dtype on the CPU
    y32, g32 = _value_and_grad(act.float(), POINTS.float())
    torch.testing.assert_close(y32.double(), y_ref, rtol=2e-5, atol=2e-6)
    torch.testing.assert_close(g32.double(), g_ref, rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("name", ["seu", "cos", "formula", "swish", "silu"])
def test_no_nan_or_inf_far_out(name):
    x = torch.tensor([-1e4, -1e3, -100.0, -88.0, -30.0, 0.0, 30.0, 88.0, 100.0, 1e3, 1e4])
    for dtype in (torch.float32, torch.bfloat16):
        y, g = _value_and_grad(activation_factory(name)(), x.to(dtype))
        assert torch.isfinite(y).all() and torch.isfinite(g).all(), (dtype, y, g)


def test_custom_activations_in_bfloat16_follow_float32():
    x = torch.linspace(-4, 4, 101)
    for name in CUSTOM_ACTIVATIONS:
        act = activation_factory(name)()
        y, g = _value_and_grad(act, x.bfloat16())
        y32, g32 = _value_and_grad(act, x.bfloat16().float())
        assert y.dtype == g.dtype == torch.bfloat16
        torch.testing.assert_close(y.float(), y32, rtol=1e-2, atol=1e-2)
        torch.testing.assert_close(g.float(), g32, rtol=1e-2, atol=1e-2)


def test_factory_returns_fresh_modules():
    for name in available_activations():
        factory = activation_factory(name)
        a, b = factory(), factory()
        assert a is not b and isinstance(a, torch.nn.Module), name
        assert factory.activation_name == name
    f = activation_factory("swish", trainable_beta=True)
    assert f().beta is not f().beta


def test_unknown_activation_and_parameter_are_refused_in_one_line():
    with pytest.raises(ValueError, match="unknown activation 'nope'") as e:
        activation_factory("nope")
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="activation 'seu' has no parameter 'beta'; its parameters: alpha"):
        activation_factory("seu", beta=2.0)


def test_swish_is_silu_and_fixed_beta():
    x = torch.linspace(-8, 8, 201)
    torch.testing.assert_close(activation_factory("swish")()(x), torch.nn.functional.silu(x))
    torch.testing.assert_close(activation_factory("swish")()(x), activation_factory("silu")()(x))
    y = activation_factory("swish", beta=1.5)()(x)
    torch.testing.assert_close(y, x * torch.sigmoid(1.5 * x))


def test_leakyrelu_slope_is_0_01():
    act = activation_factory("leakyrelu")()
    assert act.negative_slope == 0.01
    torch.testing.assert_close(act(torch.tensor([-2.0, 3.0])), torch.tensor([-0.02, 3.0]))


def test_trainable_beta_swish_learns():
    act = activation_factory("swish", beta=1.0, trainable_beta=True)()
    params = list(act.parameters())
    assert len(params) == 1 and params[0].shape == ()
    x = torch.linspace(-3, 3, 50)
    act(x).pow(2).sum().backward()
    assert params[0].grad is not None and params[0].grad.abs() > 0
    # d/dβ of x·σ(βx) = x²·σ(βx)(1-σ(βx))
    s = torch.sigmoid(x)
    torch.testing.assert_close(params[0].grad, (2 * x * s * x * x * s * (1 - s)).sum())


def test_taylor_coefficients_are_the_known_series():
    from src.models.formula import maclaurin

    R = sp.Rational
    assert maclaurin("tanh", 5) == [0, 1, 0, R(-1, 3), 0, R(2, 15)]
    assert maclaurin("sigmoid", 5) == [R(1, 2), R(1, 4), 0, R(-1, 48), 0, R(1, 480)]
    assert maclaurin("softplus", 4) == [sp.log(2), R(1, 2), R(1, 8), 0, R(-1, 192)]
    x = torch.linspace(-1, 1, 21, dtype=torch.float64)
    t7 = activation_factory("taylor", function="tanh", order=7)()
    torch.testing.assert_close(t7(x), x - x**3 / 3 + 2 * x**5 / 15 - 17 * x**7 / 315)
    sp4 = activation_factory("taylor", function="softplus", order=4)()
    torch.testing.assert_close(sp4(x), math.log(2) + x / 2 + x**2 / 8 - x**4 / 192)
    with pytest.raises(ValueError, match="order must be an integer from 1 to 25"):
        activation_factory("taylor", order=0)
    with pytest.raises(ValueError, match="unknown function 'relu'"):
        activation_factory("taylor", function="relu")


@pytest.mark.parametrize(
    "text, token",
    [
        ("__import__('os')", "unknown function '__import__'"),
        ("__import__('os').system('true')", "is not a function name"),
        ("x*foo(x)", "unknown function 'foo'"),
        ("y+x", "unknown name 'y'"),
        ("x.real", "'x.real' is not allowed"),
        ("[x][0]", "is not allowed"),
        ("'x'", "'x' is not allowed"),
        ("lambda: 1", "is not allowed"),
        ("9**9**9", "too large"),
        ("x*log(-1)", "not a real number"),
        ("exp", "must be called"),
        ("x +", "syntax error"),
        ("", "non-empty"),
    ],
)
def test_formula_refusals_are_one_line(text, token):
    with pytest.raises(ValueError) as e:
        activation_factory("formula", expr=text)
    msg = str(e.value)
    assert token in msg and "\n" not in msg
    if text:
        assert "sigmoid" in msg and "tanh" in msg  # names the allowed functions


def test_formula_builds_value_and_symbolic_derivative():
    x = torch.linspace(-5, 5, 41, dtype=torch.float64)
    act = activation_factory("formula", expr="x*tanh(softplus(x))")()  # mish
    y, g = _value_and_grad(act, x)
    y_ref, g_ref = _value_and_grad(REFERENCE["mish"], x)
    torch.testing.assert_close(y, y_ref)
    torch.testing.assert_close(g, g_ref)
    leaky = activation_factory("formula", expr="max(x, 0.1*x) + x^2/2 - 2**x + abs(x)**1.5")()
    y, g = _value_and_grad(leaky, x)
    y_ref, g_ref = _value_and_grad(
        lambda t: torch.maximum(t, 0.1 * t) + t**2 / 2 - 2**t + t.abs() ** 1.5, x
    )
    torch.testing.assert_close(y, y_ref)
    torch.testing.assert_close(g, g_ref)


def test_custom_activation_double_backward_and_gradcheck():
    x = torch.tensor([-2.0, -0.7, 0.3, 1.9], dtype=torch.float64, requires_grad=True)
    for name in ("seu", "cos", "m_sigmoid", "formula"):
        act = activation_factory(name)()
        assert torch.autograd.gradcheck(act, (x,))
        assert torch.autograd.gradgradcheck(act, (x,))


def test_custom_modules_pickle_and_deepcopy():
    for name in CUSTOM_ACTIVATIONS:
        act = activation_factory(name)()
        x = torch.linspace(-2, 2, 9)
        for clone in (copy.deepcopy(act), pickle.loads(pickle.dumps(act))):
            torch.testing.assert_close(clone(x), act(x))


def test_torch_compile_traces_the_custom_function_in_one_graph():
    # aot_eager: Dynamo + AOTAutograd (forward and backward graphs) without Inductor's C++ build
    for name in ("seu", "formula"):
        act = activation_factory(name)
        model = torch.nn.Sequential(torch.nn.Linear(6, 8), act(), torch.nn.Linear(8, 3), act())
        x = torch.randn(4, 6)
        ref = model(x)
        ref.sum().backward()
        g_ref = model[0].weight.grad.clone()
        model.zero_grad()
        out = torch.compile(model, backend="aot_eager", fullgraph=True)(x)
        out.sum().backward()
        torch.testing.assert_close(out, ref)
        torch.testing.assert_close(model[0].weight.grad, g_ref)


@pytest.mark.parametrize("path", sorted(CONF.glob("*.yaml")), ids=lambda p: p.stem)

def _inductor_kernels(name: str) -> list[str]:
    """Names of the kernels Inductor generates for a conv-BN-act-conv-BN-act block's forward and
    backward; the compiled block must match the eager one in output and gradient."""
    import re

    from torch._inductor.utils import run_and_get_code

    torch._dynamo.reset()
    torch.manual_seed(0)
    act, nn = activation_factory(name), torch.nn
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), act(),
                          nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), act(), nn.Flatten(), nn.Linear(512, 10))
    eager = copy.deepcopy(model)
    x = torch.randn(4, 3, 8, 8)
    ref = eager(x)
    ref.sum().backward()
    compiled = torch.compile(model)

    def step():
        out = compiled(x)
        out.sum().backward()
        return out

    out, codes = run_and_get_code(step)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(model[0].weight.grad, eager[0].weight.grad, rtol=1e-3, atol=1e-4)
    return sorted(set(re.findall(r"^(\w+) = async_compile\.", "\n".join(codes), flags=re.M)))


@pytest.mark.slow
def test_inductor_fuses_custom_activations_into_the_neighbouring_kernels():
    # The compiled path of the speed claim: Inductor must see f and f' as plain pointwise math and
    # fuse them into batch-norm's forward and backward kernels, as it does for the built-in SiLU
    # (ReLU is special: its backward saves a mask). Same kernel count as SiLU = no extra memory pass.
    reference = _inductor_kernels("silu")
    assert len(reference) >= 4, f"Inductor generated too few kernels for the check to mean anything: {reference}"
    for name in ("seu", "m_tanh", "formula"):
        kernels = _inductor_kernels(name)
        assert len(kernels) == len(reference), (name, kernels, reference)
        alone = [k for k in kernels if any(op in k for op in ("sigmoid", "exp", "where", "mul"))
                 and "batch_norm" not in k]
        assert not alone, f"{name}: activation math left in kernels of its own: {alone}"


@pytest.mark.parametrize("path", sorted(CONF.glob("*.yaml")), ids=lambda p: p.stem)
def test_config_instantiates_to_a_working_factory(path):
    factory = instantiate(OmegaConf.load(path))
    assert callable(factory) and factory.activation_name == path.stem
    y = factory()(torch.linspace(-3, 3, 7))
    assert y.shape == (7,) and torch.isfinite(y).all()


def test_formula_config_override():
    cfg = OmegaConf.load(CONF / "formula.yaml")
    cfg.expr = "x*tanh(x)"
    act = instantiate(cfg)()
    x = torch.linspace(-2, 2, 5)
    torch.testing.assert_close(act(x), x * torch.tanh(x))


def test_plot_command_writes_png(tmp_path, capsys):
    from src.analysis.activations_plot import activation_figure, main

    out = tmp_path / "acts.png"
    assert main(["relu", "swish", "seu", "cos", "m_tanh", "formula:x*tanh(x)", "--out", str(out), "--range", "-4", "4"]) == 0
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert main(["nope", "--out", str(tmp_path / "x.png")]) == 2
    assert "unknown activation 'nope'" in capsys.readouterr().err
    fig = activation_figure([activation_factory("taylor"), activation_factory("swish", trainable_beta=True)()])
    assert len(fig.axes) == 4


def test_triton_source_is_valid_python():
    from src.models.fused_activations import triton_source

    for name in CUSTOM_ACTIVATIONS:
        src = triton_source(activation_factory(name)()._spec)
        compile(src, name, "exec")  # syntax only: Triton is not imported
        assert "def forward_kernel" in src and "def backward_kernel" in src


_SUBPROCESS = textwrap.dedent(
    """
    import importlib.util, sys, torch
    from src.models.activations import CUSTOM_ACTIVATIONS, activation_factory
    x = torch.linspace(-30, 30, 3001)
    mods = [activation_factory(n)() for n in CUSTOM_ACTIVATIONS]
    mods.append(activation_factory("formula", expr="tanh(x)*softplus(x) + expm1(x)/3 - log1p(abs(x)) + erf(x)")())
    for m in mods:  # the CPU path
        xi = x.clone().requires_grad_(True)
        m(xi).sum().backward()
    assert "triton" not in sys.modules, "the CPU path imported triton"
    assert "src.models.fused_activations" not in sys.modules
    print("cpu-ok")
    if importlib.util.find_spec("triton") is None:
        sys.exit(0)
    from src.models import fused_activations as fa
    for m in mods:
        spec = m._spec
        k = fa.load_kernels(spec)
        for dt in (torch.float32, torch.bfloat16):
            xi = x.to(dt)
            g = torch.randn_like(xi)
            y, dx = fa.forward(k, xi), fa.backward(k, xi, g)
            yr, dxr = spec.forward(xi), spec.backward(xi, g)
            assert y.dtype == dx.dtype == dt
            assert torch.isfinite(y).all() and torch.isfinite(dx).all(), m
            tol = 1e-5 if dt == torch.float32 else 1e-2
            err_y = ((y.double() - yr.double()).abs() / (1 + yr.double().abs())).max().item()
            err_g = ((dx.double() - dxr.double()).abs() / (1 + dxr.double().abs())).max().item()
            assert err_y < tol and err_g < tol, (m, dt, err_y, err_g)
    print("triton-interpreter-ok")
    """
)


def test_cpu_path_never_imports_triton_and_kernels_match_in_interpreter(tmp_path):
    env = {**os.environ, "TRITON_INTERPRET": "1", "IMGCLS_KERNEL_DIR": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-c", _SUBPROCESS], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "cpu-ok" in proc.stdout
    try:
        import importlib.util

        has_triton = importlib.util.find_spec("triton") is not None
    except Exception:
        has_triton = False
    if has_triton:
        assert "triton-interpreter-ok" in proc.stdout
