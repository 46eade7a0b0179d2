"""Activations as sympy expressions in ``x``: the safe parser behind ``activation=formula``, the
sympy functions the activations are written in, and Maclaurin coefficients for ``taylor``.

The user's text is never evaluated by Python. It is parsed with :func:`ast.parse` (which only
builds a syntax tree) and the tree is walked node by node: numbers, ``x``, the constants ``pi`` and
``e``, ``+ - * / **`` (``^`` too), and calls of the whitelisted functions below are turned into
sympy objects; anything else is refused with a one-line ``ValueError`` naming the token.
"""
from __future__ import annotations

import ast
from fractions import Fraction

import sympy as sp
from sympy.codegen.cfunctions import expm1, log1p

X = sp.Symbol("x", real=True)

MAX_FORMULA_CHARS = 500
MAX_EXPONENT = 100


class sigmoid(sp.Function):  # noqa: N801  (lower case: it is the name users write)
    """Logistic function 1/(1+e^-x); its derivative stays in terms of itself (stable to evaluate)."""

    @classmethod
    def eval(cls, arg):
        if arg.is_Number:
            return 1 / (1 + sp.exp(-arg))

    def fdiff(self, argindex=1):
        s = sigmoid(self.args[0])
        return s * (1 - s)

    def _eval_rewrite_as_exp(self, arg, **kwargs):
        return 1 / (1 + sp.exp(-arg))


class softplus(sp.Function):  # noqa: N801
    """log(1 + e^x), evaluated in the overflow-free form max(x,0) + log1p(e^-|x|)."""

    @classmethod
    def eval(cls, arg):
        if arg.is_Number:
            return sp.log(1 + sp.exp(arg))

    def fdiff(self, argindex=1):
        return sigmoid(self.args[0])

    def _eval_rewrite_as_exp(self, arg, **kwargs):
        return sp.log(1 + sp.exp(arg))


class step(sp.Function):  # noqa: N801
    """1 for x > 0 else 0 (torch's convention for relu'(0)); derivative 0."""

    @classmethod
    def eval(cls, arg):
        if arg.is_Number:
            return sp.Integer(1) if arg > 0 else sp.Integer(0)

    def fdiff(self, argindex=1):
        return sp.Integer(0)


class relu(sp.Function):  # noqa: N801
    @classmethod
    def eval(cls, arg):
        if arg.is_Number:
            return sp.Max(arg, 0)

    def fdiff(self, argindex=1):
        return step(self.args[0])


# user-visible name -> (sympy callable, number of arguments; None = two or more)
FUNCTIONS: dict[str, tuple] = {
    "abs": (sp.Abs, 1),
    "cos": (sp.cos, 1),
    "erf": (sp.erf, 1),
    "exp": (sp.exp, 1),
    "expm1": (expm1, 1),
    "log": (sp.log, 1),
    "log1p": (log1p, 1),
    "max": (sp.Max, None),
    "min": (sp.Min, None),
    "relu": (relu, 1),
    "sigmoid": (sigmoid, 1),
    "sin": (sp.sin, 1),
    "softplus": (softplus, 1),
    "sqrt": (sp.sqrt, 1),
    "tanh": (sp.tanh, 1),
}
CONSTANTS: dict[str, sp.Expr] = {"pi": sp.pi, "e": sp.E}

_BINOPS = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
    ast.Pow: None,  # checked: exponent size
}


def _allowed() -> str:
    return f"use x, the constants {', '.join(CONSTANTS)} and the functions {', '.join(sorted(FUNCTIONS))}"


def _refuse(text: str, what: str) -> ValueError:
    return ValueError(f"formula '{text}': {what}; {_allowed()}")


def _pow(text: str, base, exp):
    if exp.is_Number and abs(exp) > MAX_EXPONENT:
        raise _refuse(text, f"exponent {exp} is too large (at most {MAX_EXPONENT})")
    return base**exp


def _convert(node: ast.AST, text: str):
    if isinstance(node, ast.Expression):
        return _convert(node.body, text)
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
            raise _refuse(text, f"{node.value!r} is not allowed")
        src = ast.get_source_segment(text, node) or repr(node.value)
        try:  # exact: "0.66" -> 33/50
            return sp.Rational(Fraction(src.replace("_", "")))
        except (ValueError, ZeroDivisionError):
            return sp.Float(node.value)
    if isinstance(node, ast.Name):
        if node.id == "x":
            return X
        if node.id in CONSTANTS:
            return CONSTANTS[node.id]
        if node.id in FUNCTIONS:
            raise _refuse(text, f"function '{node.id}' must be called, e.g. {node.id}(x)")
        raise _refuse(text, f"unknown name '{node.id}'")
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        v = _convert(node.operand, text)
        return -v if isinstance(node.op, ast.USub) else v
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        a, b = _convert(node.left, text), _convert(node.right, text)
        op = _BINOPS[type(node.op)]
        return _pow(text, a, b) if op is None else op(a, b)
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name):
            raise _refuse(text, f"'{ast.get_source_segment(text, node.func)}' is not a function name")
        name = node.func.id
        if name not in FUNCTIONS:
            raise _refuse(text, f"unknown function '{name}'")
        if node.keywords or any(isinstance(a, ast.Starred) for a in node.args):
            raise _refuse(text, f"{name}() takes positional arguments only")
        fn, arity = FUNCTIONS[name]
        n = len(node.args)
        if (arity is None and n < 2) or (arity is not None and n != arity):
            want = "two or more arguments" if arity is None else f"{arity} argument"
            raise _refuse(text, f"{name}() takes {want}, got {n}")
        return fn(*(_convert(a, text) for a in node.args))
    token = ast.get_source_segment(text, node) or type(node).__name__
    raise _refuse(text, f"'{token}' is not allowed (only numbers, x, + - * / ** and function calls)")


def parse_formula(text: str) -> sp.Expr:
    """Turn ``text`` (e.g. ``"x*sigmoid(x)"``) into a sympy expression in :data:`X`, or refuse it."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"formula must be a non-empty expression in x; {_allowed()}")
    text = " ".join(text.split()).replace("^", "**")  # x^2 means x**2, as in sympy's parser
    if len(text) > MAX_FORMULA_CHARS:
        raise ValueError(f"formula is longer than {MAX_FORMULA_CHARS} characters")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as e:
        raise _refuse(text, f"syntax error at column {e.offset}") from None
    expr = sp.sympify(_convert(tree, text))
    if expr.free_symbols - {X}:
        raise _refuse(text, f"unknown symbols {sorted(map(str, expr.free_symbols - {X}))}")
    for sub in sp.preorder_traversal(expr):  # x-free parts must be real numbers: log(-1) is not
        if isinstance(sub, sp.Expr) and not sub.free_symbols:
            try:
                float(sub)
            except TypeError:
                raise _refuse(text, f"'{sub}' is not a real number") from None
    return expr


def maclaurin(function: str, order: int) -> list[sp.Expr]:
    """Exact Maclaurin coefficients c_0..c_order of tanh, sigmoid or softplus (sympy series)."""
    bases = {"tanh": sp.tanh(X), "sigmoid": 1 / (1 + sp.exp(-X)), "softplus": sp.log(1 + sp.exp(X))}
    if function not in bases:
        raise ValueError(f"taylor: unknown function '{function}': choose one of {', '.join(bases)}")
    if isinstance(order, bool) or not isinstance(order, int) or not 1 <= order <= 25:
        raise ValueError(f"taylor: order must be an integer from 1 to 25, got {order!r}")
    poly = sp.series(bases[function], X, 0, order + 1).removeO()
    return [poly.coeff(X, k) for k in range(order + 1)]
