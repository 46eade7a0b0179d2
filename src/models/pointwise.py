"""Custom activations as one fused pointwise op each: a sympy expression f(x), its symbolic
derivative f'(x), and a ``torch.autograd.Function`` that saves only the input.

Three paths, one definition:

* CUDA, eager: one Triton kernel forward (y = f(x)) and one backward (dx = g·f'(x)), generated from
  the sympy expressions (:mod:`src.models.fused_activations`; Triton is imported there, lazily, only
  when a CUDA tensor arrives).
* ``torch.compile``: the same Function is traced with plain torch ops, so Inductor fuses f and f'
  into the neighbouring kernels (batch-norm, residual add) as it does for a built-in activation.
* CPU (or float64, or no Triton): plain torch ops, in float32 for half inputs.

Both the torch function and the Triton kernels are generated from the sympy tree by
:mod:`src.models.codegen` (user text never reaches Python).
"""
from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass, field

import sympy as sp
import torch
from sympy.codegen.cfunctions import expm1
from torch import nn

from src import env
from src.models.codegen import TensorFn, identifier, torch_callable
from src.models.formula import X, sigmoid

_HALF = (torch.float16, torch.bfloat16)
_TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


@functools.cache
def _triton_importable() -> bool:
    return env.get(env.NO_TRITON, "") in ("", "0") and importlib.util.find_spec("triton") is not None


def _use_triton(x: torch.Tensor) -> bool:
    """Triton only for real (not fake/functional) eager CUDA tensors of a float dtype it handles."""
    return (
        not torch.compiler.is_compiling()
        and x.is_cuda
        and type(x) is torch.Tensor
        and x.dtype in _TRITON_DTYPES
        and _triton_importable()
    )


@dataclass(eq=False)
class PointwiseSpec:
    name: str
    expr: sp.Expr
    dexpr: sp.Expr
    f: TensorFn
    df: TensorFn
    _kernels: object = field(default=None, init=False, repr=False)

    def kernels(self):
        if self._kernels is None:
            from src.models import fused_activations

            self._kernels = fused_activations.load_kernels(self)
        return self._kernels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _use_triton(x):
            from src.models import fused_activations

            return fused_activations.forward(self.kernels(), x)
        xc = x.float() if x.dtype in _HALF else x
        return self.f(xc).to(x.dtype)

    def backward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        # grad mode is on in backward only for create_graph=True: stay differentiable then
        if not torch.is_grad_enabled() and _use_triton(x):
            from src.models import fused_activations

            return fused_activations.backward(self.kernels(), x, g)
        xc = x.float() if x.dtype in _HALF else x
        return (g.to(xc.dtype) * self.df(xc)).to(x.dtype)


class PointwiseFunction(torch.autograd.Function):
    """y = f(x); dx = g·f'(x). Saves only the input: f'(x) is recomputed in the backward kernel."""

    @staticmethod
    def forward(ctx, x, spec):
        ctx.save_for_backward(x)
        ctx.spec = spec
        return spec.forward(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return ctx.spec.backward(x, g), None


@functools.lru_cache(maxsize=256)
def compile_pointwise(name: str, expr: sp.Expr) -> PointwiseSpec:
    """f, its sympy derivative f' and generated torch functions for both (cached per name and f)."""
    expr = sp.sympify(expr)
    if expr.free_symbols - {X}:
        raise ValueError(f"activation '{name}': unknown symbols {sorted(map(str, expr.free_symbols - {X}))}")
    dexpr = sp.diff(expr, X)
    ident = identifier(name)
    spec = PointwiseSpec(name, expr, dexpr, torch_callable(expr, f"{ident}_f"), torch_callable(dexpr, f"{ident}_df"))
    return spec


class PointwiseActivation(nn.Module):
    """An activation defined by a sympy expression in ``x`` (see the module docstring)."""

    def __init__(self, name: str, expr: sp.Expr | str):
        super().__init__()
        self.act_name = name
        self.expr = sp.sympify(expr) if not isinstance(expr, str) else None
        if self.expr is None:
            from src.models.formula import parse_formula

            self.expr = parse_formula(expr)
        self._spec = compile_pointwise(name, self.expr)

    @property
    def derivative(self) -> sp.Expr:
        return self._spec.dexpr

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return PointwiseFunction.apply(x, self._spec)

    def extra_repr(self) -> str:
        return f"{self.act_name}: f(x)={self.expr}"

    # the compiled spec holds closures: rebuild it (from the cache) instead of pickling it
    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("_spec", None)
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        self._spec = compile_pointwise(self.act_name, self.expr)


def _num(v) -> sp.Rational:
    """A config number as an exact rational (0.1 -> 1/10), so caches and derivatives stay exact."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(f"expected a number, got {v!r}")
    return sp.Rational(repr(float(v)))


class SEU(PointwiseActivation):
    """Swish Exponential Unit: α(eˣ − 1) for x < 0, x·σ(x) for x ≥ 0."""

    def __init__(self, alpha: float = 1.0):
        super().__init__("seu", sp.Piecewise((_num(alpha) * expm1(X), X < 0), (X * sigmoid(X), True)))
        self.alpha = float(alpha)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"


class CoS(PointwiseActivation):
    """Reconstructed CoS ("Consisting of Sigmoid"): x·σ(x) + c·σ(a·x)² (a = 5, c = 0.5)."""

    def __init__(self, a: float = 5.0, c: float = 0.5):
        super().__init__("cos", X * sigmoid(X) + _num(c) * sigmoid(_num(a) * X) ** 2)
        self.a, self.c = float(a), float(c)

    def extra_repr(self) -> str:
        return f"a={self.a}, c={self.c}"


class Taylor(PointwiseActivation):
    """Maclaurin polynomial of ``function`` (tanh, sigmoid, softplus) up to x**order (Horner)."""

    def __init__(self, function: str = "tanh", order: int = 5):
        from src.models.formula import maclaurin

        coeffs = maclaurin(function, order)
        super().__init__("taylor", sp.Add(*(c * X**k for k, c in enumerate(coeffs))))
        self.function, self.order, self.coefficients = function, order, coeffs

    def extra_repr(self) -> str:
        return f"function={self.function}, order={self.order}, f(x)={self.expr}"


class Formula(PointwiseActivation):
    """``activation=formula activation.expr="x*sigmoid(x)"``: a whitelisted sympy expression."""

    def __init__(self, expr: str = "x*sigmoid(x)"):
        from src.models.formula import parse_formula

        super().__init__("formula", parse_formula(expr))
        self.text = expr


R = sp.Rational
PRESETS: dict[str, sp.Expr] = {
    # the adjusted polynomials of the Taylor study
    "m_tanh": R(23, 25) * X - R(1, 10) * X**3 + R(7, 25) * X**5,
    "m_sigmoid": R(1, 2) + (X**5 - 8700 * X**3 + 540250 * X) / 2700000,
    "m_softplus": R(33, 50) + X / 2 + R(2, 17) * X**2 + R(1, 600) * X**4,
}


def preset(name: str) -> PointwiseActivation:
    return PointwiseActivation(name, PRESETS[name])
