"""OmegaConf resolvers used by conf/ (registered on import, before Hydra composes)."""
from __future__ import annotations

import re

import torch
from omegaconf import OmegaConf


def auto_precision() -> str:
    """bf16 mixed precision where the GPU supports it, fp32 elsewhere (the CPU)."""
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    return "32-true"


def setting_dir(override_dirname: str) -> str:
    """A sweep's overrides as one safe folder name ("default" when only the seed is swept)."""
    name = re.sub(r"[^A-Za-z0-9=,._+-]", "_", override_dirname or "")
    return name[:180] or "default"


def run_suffix(override_dirname: str) -> str:
    return "_" + setting_dir(override_dirname) if override_dirname else ""


def channels_for(grayscale: bool, colour_channels: int = 3) -> int:
    return 1 if grayscale else colour_channels


_RESOLVERS = {
    "auto_precision": auto_precision,
    "setting_dir": setting_dir,
    "run_suffix": run_suffix,
    "channels_for": channels_for,
}


def register() -> None:
    for name, fn in _RESOLVERS.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


register()
