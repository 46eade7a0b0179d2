"""The activation registry: every nonlinearity a model uses comes from a factory built here.

A factory is a zero-argument callable returning a fresh ``nn.Module`` (timm's ``act_layer``
idea), so one config choice (``activation=tanh``) changes every nonlinearity inside a model.
"""
from __future__ import annotations

import functools
from typing import Callable

from torch import nn

ActivationFactory = Callable[[], nn.Module]

# name -> nn.Module class (or any callable returning a module); aliases share the entry.
_REGISTRY: dict[str, Callable[..., nn.Module]] = {
    "relu": nn.ReLU,
    "leakyrelu": nn.LeakyReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "silu": nn.SiLU,
    "swish": nn.SiLU,
}

# Defaults that differ from torch's own (the studies use LeakyReLU with slope 0.01, torch's default too,
# but we state it so the composed config shows it).
_DEFAULT_KWARGS: dict[str, dict] = {"leakyrelu": {"negative_slope": 0.01}}


def register_activation(name: str, builder: Callable[..., nn.Module]) -> None:
    """Add an activation under ``name`` (lower case); used by the toolkit's custom activations."""
    _REGISTRY[name.lower()] = builder


def available_activations() -> list[str]:
    return sorted(_REGISTRY)


def activation_factory(name: str, **kwargs) -> ActivationFactory:
    """Return a factory for activation ``name`` with keyword arguments bound (Hydra target)."""
    key = name.lower()
    if key not in _REGISTRY:
        raise ValueError(
            f"unknown activation '{name}': choose one of {', '.join(available_activations())}"
        )
    params = {**_DEFAULT_KWARGS.get(key, {}), **kwargs}
    # inplace activations break when a model reuses the pre-activation tensor; never default to it.
    factory = functools.partial(_REGISTRY[key], **params)
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
