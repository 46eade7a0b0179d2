"""OmegaConf resolvers used by conf/ (registered on import, before Hydra composes)."""
from __future__ import annotations

import hashlib
import re

import torch
from omegaconf import OmegaConf


def auto_precision(accelerator: str = "auto") -> str:
    """bf16 mixed precision when training on a GPU that has bf16 units (compute capability 8.0+),
    fp32 otherwise -- also on a GPU machine when the run is put on the CPU (trainer=cpu), where
    bf16 autocast would only slow it down. Resolved when the trainer is built, i.e. in a sweep
    worker after its GPU slot is set."""
    if str(accelerator) not in ("auto", "gpu", "cuda"):
        return "32-true"
    if torch.cuda.is_available() and torch.cuda.get_device_capability(0) >= (8, 0):
        return "bf16-mixed"
    return "32-true"


def setting_dir(override_dirname: str) -> str:
    """A sweep's overrides as one safe folder name ("default" when only the seed is swept). Long
    names are cut with a hash of the whole, so settings that differ late never share a folder."""
    name = re.sub(r"[^A-Za-z0-9=,._+-]", "_", override_dirname or "")
    if len(name) > 180:
        name = f"{name[:170]}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"
    return name or "default"


def run_suffix(override_dirname: str) -> str:
    return "_" + setting_dir(override_dirname) if override_dirname else ""


def channels_for(grayscale: bool, colour_channels: int = 3) -> int:
    return 1 if grayscale else colour_channels


def folder_classes(root, data_dir) -> int | str:
    """data=image_folder's num_classes: its class folders, counted when the config is composed (a
    directory listing, no image is read). When there are none, a string that names the problem, so
    the schema's one-line refusal of data.num_classes says what to fix."""
    from src.datamodules.image_folder import count_classes

    n = count_classes(root, data_dir)
    if n is not None:
        return n
    return "no class folders: set data.root=/path/to/set" if root in (None, "") else \
        f"no class folders found under data.root={root}"


def label_classes(label_type: str) -> int:
    """CIFAR-100: 100 fine classes, or 20 coarse superclasses."""
    return 20 if str(label_type) == "coarse" else 100


def fold_dir(folds, fold) -> str:
    """The sweep folder's fold level below seed=<n> (only when data.folds is set)."""
    return f"/fold={fold}" if folds else ""


_RESOLVERS = {
    "auto_precision": auto_precision,
    "setting_dir": setting_dir,
    "run_suffix": run_suffix,
    "channels_for": channels_for,
    "folder_classes": folder_classes,
    "label_classes": label_classes,
    "fold_dir": fold_dir,
}


def register() -> None:
    for name, fn in _RESOLVERS.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


register()
import src.ddp.slurm  # noqa: E402,F401  (the SLURM launcher's DDP resolvers: conf/hydra/launcher/slurm.yaml)
