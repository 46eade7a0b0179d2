"""OmegaConf resolvers used by conf/ (registered on import, before Hydra composes)."""
from __future__ import annotations

from omegaconf import OmegaConf

from src import settings


def auto_precision(accelerator: str = "auto") -> str:
    """bf16 mixed precision when training on a GPU that has bf16 units (compute capability 8.0+),
    fp32 otherwise -- also on a GPU machine when the run is put on the CPU (trainer=cpu), where
    bf16 autocast would only slow it down. Resolved when the trainer is built, i.e. in a sweep
    worker after its GPU slot is set."""
    if str(accelerator) not in ("auto", "gpu", "cuda"):
        return "32-true"
    import torch  # here, not at the top: the pre-check imports this module and refuses bad input before torch

    if torch.cuda.is_available() and torch.cuda.get_device_capability(0) >= (8, 0):
        return "bf16-mixed"
    return "32-true"


def setting_dir(overrides) -> str:
    """A sweep job's setting folder, from its overrides (`hydra.overrides.task`) by the one rule
    of src/settings.py ("default" when only the seed is swept)."""
    return settings.folder_name(_override_list(overrides))


def run_suffix(overrides) -> str:
    return settings.run_suffix(_override_list(overrides))


def _override_list(overrides) -> list[str]:
    return [str(o) for o in overrides or []]  # a ListConfig: ${hydra.overrides.task}


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


def parallel_jobs(jobs_per_gpu=1) -> int:
    """The parallel launcher's n_jobs (conf/hydra/launcher/parallel.yaml): src/sweeps/slots.py."""
    from src.sweeps.slots import parallel_jobs as jobs

    return jobs(jobs_per_gpu)


def slurm_tasks(strategy, gpus_per_node, devices) -> int:
    """Tasks per node of a SLURM job (conf/hydra/launcher/slurm.yaml): src/ddp/slurm.py."""
    from src.ddp.slurm import slurm_tasks_per_node

    return slurm_tasks_per_node(strategy, gpus_per_node, devices)


def slurm_nodes(strategy, num_nodes) -> int:
    from src.ddp.slurm import slurm_nodes as nodes

    return nodes(strategy, num_nodes)


# Every resolver conf/ uses, registered here and nowhere else (train.py and src/compose.py import
# this module before Hydra composes).
RESOLVERS = {
    "auto_precision": auto_precision,
    "setting_dir": setting_dir,
    "run_suffix": run_suffix,
    "channels_for": channels_for,
    "folder_classes": folder_classes,
    "label_classes": label_classes,
    "fold_dir": fold_dir,
    "imgcls_parallel_jobs": parallel_jobs,
    "imgcls_slurm_tasks": slurm_tasks,
    "imgcls_slurm_nodes": slurm_nodes,
}


def register() -> None:
    for name, fn in RESOLVERS.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


register()
