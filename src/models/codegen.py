"""sympy expression in x -> straight-line Python for torch or Triton.

:class:`Emitter` writes one statement per node after common-subexpression elimination, every name
from a fixed table, every number a float literal, so user text never reaches Python (formulas are
parsed against a whitelist in :mod:`src.models.formula`). Constant sub-expressions are folded and
polynomials use Horner's rule. :mod:`src.models.pointwise` runs the torch code on CPU and under
``torch.compile``; :mod:`src.models.fused_activations` wraps the Triton code into kernels.
"""
from __future__ import annotations

import linecache
import re
from typing import Callable

import sympy as sp
import torch
import torch.nn.functional as F
from sympy.codegen.cfunctions import expm1, log1p

from src.models.formula import X, relu, sigmoid, softplus, step

TensorFn = Callable[[torch.Tensor], torch.Tensor]


def horner_coefficients(expr: sp.Expr) -> list[float] | None:
    """Coefficients (highest power first) when ``expr`` is a polynomial in x, else None."""
    if not expr.free_symbols or not expr.is_polynomial(X):
        return None
    return [float(c) for c in sp.Poly(expr, X).all_coeffs()]


def constant(e: sp.Expr) -> float:
    try:
        v = float(e)
    except TypeError:
        raise ValueError(f"activation: constant '{e}' is not a real number") from None
    if v != v or v in (float("inf"), float("-inf")):
        raise ValueError(f"activation: constant '{e}' is not finite")
    return v


def _split_mul(e: sp.Mul) -> tuple[list, list]:
    """Numerator and denominator factors (x**-2 -> denominator x**2)."""
    num, den = [], []
    for a in e.args:
        if a.is_Pow and a.exp.is_Number and a.exp < 0:
            den.append(a.base ** (-a.exp))
        else:
            num.append(a)
    return num, den


def _is_literal(code: str) -> bool:
    try:
        float(code.strip("()"))
        return True
    except ValueError:
        return False


# function templates per target; "{a}" is the (tensor) argument
_TARGETS = {
    "torch": {
        sp.exp: "torch.exp({a})",
        sp.log: "torch.log({a})",
        sp.Abs: "torch.abs({a})",
        sp.sin: "torch.sin({a})",
        sp.cos: "torch.cos({a})",
        sp.erf: "torch.erf({a})",
        sp.tanh: "torch.tanh({a})",
        sp.sign: "torch.sign({a})",
        expm1: "torch.expm1({a})",
        log1p: "torch.log1p({a})",
        sigmoid: "torch.sigmoid({a})",
        softplus: "F.softplus({a})",
        relu: "torch.relu({a})",
        step: "({a} > 0).to({a}.dtype)",
        sp.Heaviside: "(({a} > 0).to({a}.dtype) + {h} * ({a} == 0).to({a}.dtype))",
        "sqrt": "torch.sqrt({a})",
        "rsqrt": "torch.rsqrt({a})",
        "pow": "torch.pow({a}, {b})",
        "where": "torch.where({c}, {a}, {b})",
        sp.Max: "torch.maximum({a}, {b})",
        sp.Min: "torch.minimum({a}, {b})",
        "full": "torch.full_like(x, {v})",
    },
    "triton": {
        sp.exp: "tl.exp({a})",
        sp.log: "tl.log({a})",
        sp.Abs: "tl.abs({a})",
        sp.sin: "tl.sin({a})",
        sp.cos: "tl.cos({a})",
        sp.erf: "tl.erf({a})",
        sp.tanh: "_tanh({a})",
        sp.sign: "tl.where({a} > 0.0, 1.0, tl.where({a} < 0.0, -1.0, 0.0))",
        expm1: "_expm1({a})",
        log1p: "_log1p({a})",
        sigmoid: "tl.sigmoid({a})",
        softplus: "_softplus({a})",
        relu: "tl.maximum({a}, 0.0)",
        step: "tl.where({a} > 0.0, 1.0, 0.0)",
        sp.Heaviside: "tl.where({a} > 0.0, 1.0, tl.where({a} == 0.0, {h}, 0.0))",
        "sqrt": "tl.sqrt({a})",
        "rsqrt": "1.0 / tl.sqrt({a})",
        "pow": "tl.exp({b} * tl.log({a}))",
        "where": "tl.where({c}, {a}, {b})",
        sp.Max: "tl.maximum({a}, {b})",
        sp.Min: "tl.minimum({a}, {b})",
        "full": "tl.zeros_like(x) + {v}",
    },
}
_REL = {sp.StrictLessThan: "<", sp.LessThan: "<=", sp.StrictGreaterThan: ">", sp.GreaterThan: ">="}


class Emitter:
    """sympy expression in x -> straight-line statements for ``target`` ("torch" or "triton")."""

    def __init__(self, target: str):
        self.t = _TARGETS[target]
        self.lines: list[str] = []
        self.names: dict[sp.Expr, str] = {X: "x"}

    def tmp(self, code: str) -> str:
        name = f"t{len(self.lines)}"
        self.lines.append(f"{name} = {code}")
        return name

    def block(self, code: str) -> str:
        """A literal as a full tensor (where / the functions / the result want tensors)."""
        return self.tmp(self.t["full"].format(v=code)) if _is_literal(code) else code

    def ipow(self, b: str, n: int) -> str:
        """b**n for an integer n >= 1 by repeated squaring (exact for negative b)."""
        if n == 1:
            return b
        half = self.ipow(b, n // 2)
        sq = self.tmp(f"{half} * {half}")
        return sq if n % 2 == 0 else self.tmp(f"{sq} * {b}")

    def emit(self, e: sp.Expr) -> str:
        if e in self.names:
            return self.names[e]
        if not e.free_symbols:
            v = constant(e)
            return f"({v!r})" if v < 0 else repr(v)
        code = self._emit(e)
        self.names[e] = code
        return code

    def _emit(self, e: sp.Expr) -> str:
        t = self.t
        if e.is_Add:
            return self.tmp(" + ".join(self.emit(a) for a in e.args))
        if e.is_Mul:
            num, den = _split_mul(e)
            top = " * ".join(self.emit(a) for a in num) or "1.0"
            if not den:
                return self.tmp(top)
            return self.tmp(f"{top} / ({' * '.join(self.emit(a) for a in den)})")
        if e.is_Pow and not e.base.free_symbols:  # c**x = exp(x*log c)
            return self.emit(sp.exp(e.exp * sp.log(e.base)))
        if e.is_Pow:
            b, ex = self.block(self.emit(e.base)), e.exp
            if ex == sp.Rational(1, 2):
                return self.tmp(t["sqrt"].format(a=b))
            if ex == sp.Rational(-1, 2):
                return self.tmp(t["rsqrt"].format(a=b))
            if ex.is_Integer and 0 < abs(int(ex)) <= 64:
                p = self.ipow(b, abs(int(ex)))
                return p if ex > 0 else self.tmp(f"1.0 / {p}")
            return self.tmp(t["pow"].format(a=b, b=self.emit(ex)))
        if e.func in (sp.Max, sp.Min):
            out = self.block(self.emit(e.args[0]))
            for a in e.args[1:]:
                out = self.tmp(t[e.func].format(a=out, b=self.block(self.emit(a))))
            return out
        if e.func is sp.Heaviside:  # from max/min; H(0) = 1/2 as in sympy and torch.maximum's gradient
            h = constant(e.args[1]) if len(e.args) > 1 else 0.5
            return self.tmp(t[sp.Heaviside].format(a=self.block(self.emit(e.args[0])), h=repr(h)))
        if e.func in t:  # one-argument functions
            return self.tmp(t[e.func].format(a=self.block(self.emit(e.args[0]))))
        if e.func in _REL:
            return self.tmp(f"{self.emit(e.lhs)} {_REL[e.func]} {self.emit(e.rhs)}")
        if isinstance(e, sp.Piecewise):
            if e.args[-1][1] is not sp.true:
                raise ValueError(f"activation: piecewise '{e}' needs an 'otherwise' branch")
            out = self.block(self.emit(e.args[-1][0]))
            for v, c in reversed(e.args[:-1]):
                out = self.tmp(t["where"].format(c=self.emit(c), a=self.block(self.emit(v)), b=out))
            return out
        raise ValueError(f"activation: cannot translate '{e.func.__name__}' in '{e}'")


def emit_body(expr: sp.Expr, target: str) -> tuple[list[str], str]:
    """Statements and the name of the result (a tensor shaped like x) for one expression."""
    em = Emitter(target)
    coeffs = horner_coefficients(expr)
    if coeffs is not None:  # Horner: (((c_n x + c_n-1) x + ...) x + c_0)
        if len(coeffs) == 1:
            return em.lines, em.block(repr(coeffs[0]))
        acc = f"{coeffs[0]!r}"
        for c in coeffs[1:]:
            acc = em.tmp(f"{acc} * x" + (f" + ({c!r})" if c else ""))
        return em.lines, acc
    reps, (reduced,) = sp.cse([expr], symbols=sp.numbered_symbols("_c"))
    for sym, sub in reps:
        em.names[sym] = em.emit(sub)
    return em.lines, em.block(em.emit(reduced))


def torch_source(expr: sp.Expr, name: str = "f") -> str:
    lines, result = emit_body(sp.sympify(expr), "torch")
    body = "".join(f"    {line}\n" for line in lines)
    return f"def {name}(x):\n{body}    return {result}\n"


def identifier(name: str) -> str:
    """``name`` made usable inside generated function and module names."""
    return re.sub(r"\W", "_", name) or "act"


_SOURCE_COUNTER = [0]


def torch_callable(expr: sp.Expr, name: str = "f") -> TensorFn:
    """``expr`` as a plain function of a tensor (generated code: no closures, so Dynamo traces it
    as ordinary torch ops). The generated text is registered with linecache for tracebacks."""
    source = torch_source(expr, name)
    _SOURCE_COUNTER[0] += 1
    filename = f"<activation {name} #{_SOURCE_COUNTER[0]}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    namespace = {"torch": torch, "F": F}
    exec(compile(source, filename, "exec"), namespace)  # generated from the sympy tree, never user text
    fn = namespace[name]
    fn.source = source
    return fn
