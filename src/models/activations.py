"""The activation registry: every nonlinearity a model uses comes from a factory built here.

A factory is a zero-argument callable returning a fresh ``nn.Module`` (timm's ``act_layer``
idea), so one config choice (``activation=tanh``) changes every nonlinearity inside a model.

Built-ins are torch modules. The custom activations (seu, cos, taylor, m_tanh, m_sigmoid,
m_softplus, formula) are sympy expressions compiled to one fused op each
(:mod:`src.models.pointwise`): a custom autograd Function saving only its input, one Triton kernel
forward and one backward on CUDA, plain torch ops on the CPU and under ``torch.compile``. They are
imported lazily, so sympy is loaded only when one of them is used.
"""
from __future__ import annotations

import functools
import inspect
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from src.errors import ConfigError

ActivationFactory = Callable[[], nn.Module]


class Swish(nn.Module):
    """x·σ(βx). β = 1 is SiLU; ``trainable_beta`` makes β a learnable scalar per activation module."""

    def __init__(self, beta: float = 1.0, trainable_beta: bool = False):
        super().__init__()
        self.trainable_beta = bool(trainable_beta)
        if self.trainable_beta:
            self.beta = nn.Parameter(torch.tensor(float(beta)))
        else:
            self.beta = float(beta)
            self._fixed = None
            if self.beta != 1.0:  # a fixed β != 1 is a custom pointwise op (fused on CUDA)
                from src.models.pointwise import PointwiseActivation

                self._fixed = PointwiseActivation("swish", f"x*sigmoid({self.beta!r}*x)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.trainable_beta:
            return x * torch.sigmoid(self.beta.to(x.dtype) * x)
        if self._fixed is None:
            return F.silu(x)
        return self._fixed(x)

    def extra_repr(self) -> str:
        beta = float(self.beta.detach()) if self.trainable_beta else self.beta
        return f"beta={beta}, trainable_beta={self.trainable_beta}"


def _lazy(attr: str, *args) -> Callable[..., nn.Module]:
    """A builder that imports :mod:`src.models.pointwise` (and sympy) only when called."""

    def build(**kwargs):
        from src.models import pointwise

        return getattr(pointwise, attr)(*args, **kwargs)

    build.__name__ = attr if not args else args[0]
    build.target = (attr, args)  # type: ignore[attr-defined]
    return build


# name -> nn.Module class (or any callable returning a module); aliases share the entry.
_REGISTRY: dict[str, Callable[..., nn.Module]] = {
    "relu": nn.ReLU,
    "leakyrelu": nn.LeakyReLU,
    "elu": nn.ELU,
    "selu": nn.SELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "swish": Swish,
    "mish": nn.Mish,
    "hardswish": nn.Hardswish,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "softplus": nn.Softplus,
    "seu": _lazy("SEU"),
    "cos": _lazy("CoS"),
    "taylor": _lazy("Taylor"),
    "m_tanh": _lazy("preset", "m_tanh"),
    "m_sigmoid": _lazy("preset", "m_sigmoid"),
    "m_softplus": _lazy("preset", "m_softplus"),
    "formula": _lazy("Formula"),
}

# Defaults that differ from torch's own (the studies use LeakyReLU with slope 0.01, torch's default too,
# but we state it so the composed config shows it).
_DEFAULT_KWARGS: dict[str, dict] = {"leakyrelu": {"negative_slope": 0.01}}

# The custom activations implemented as fused pointwise ops (what the benchmark compares to ReLU).
CUSTOM_ACTIVATIONS = ("seu", "cos", "taylor", "m_tanh", "m_sigmoid", "m_softplus", "formula")


def available_activations() -> list[str]:
    return sorted(_REGISTRY)


def _parameters(builder: Callable) -> list[str] | None:
    """Names of the builder's keyword parameters; None when it cannot be told (accepts **kwargs)."""
    target = getattr(builder, "target", None)
    if target is not None:  # lazy builder: report the real class's parameters
        from src.models import pointwise

        builder = getattr(pointwise, target[0])
        skip = len(target[1])
    else:
        skip = 0
    try:
        params = list(inspect.signature(builder).parameters.values())[skip:]
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "inplace"]


def activation_factory(name: str, **kwargs) -> ActivationFactory:
    """Return a factory for activation ``name`` with keyword arguments bound (Hydra target).

    One module is built here, so a bad parameter (or a refused formula) fails when the config is
    instantiated, in one line, not somewhere inside model construction.
    """
    key = name.lower()
    if key not in _REGISTRY:
        raise ConfigError(
            f"unknown activation '{name}': choose one of {', '.join(available_activations())}"
        )
    params = {**_DEFAULT_KWARGS.get(key, {}), **kwargs}
    allowed = _parameters(_REGISTRY[key])
    unknown = [] if allowed is None else sorted(set(params) - set(allowed) - {"inplace"})
    if unknown:
        raise ConfigError(
            f"activation '{key}' has no parameter {', '.join(map(repr, unknown))}; "
            f"its parameters: {', '.join(allowed) or 'none'}"
        )
    # inplace activations break when a model reuses the pre-activation tensor; never default to it.
    factory = functools.partial(_REGISTRY[key], **params)
    try:
        factory()  # validate now (compiled custom activations are cached, so this is cheap later)
    except ConfigError:
        raise
    except (ValueError, TypeError) as e:
        raise ConfigError(f"activation '{key}': {e}") from None
    factory.activation_name = key  # type: ignore[attr-defined]
    return factory


def as_factory(act: str | ActivationFactory | None, default: str = "relu") -> ActivationFactory:
    """Accept a factory, a registry name, or None (the model's own default)."""
    if act is None:
        return activation_factory(default)
    if isinstance(act, str):
        return activation_factory(act)
    if not callable(act):
        raise TypeError(f"activation must be a name or a zero-argument callable, got {type(act).__name__}")
    return act
