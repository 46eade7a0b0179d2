"""Every dataset the ``data=`` group can name: its reader and its split sizes."""
from __future__ import annotations

from src.datamodules.cifar100_svhn import SVHN_EXTRA, load_cifar100, load_svhn
from src.datamodules.image_folder import load_image_folder
from src.datamodules.sources import (load_cifar10, load_fashion_mnist, load_horses_or_humans, load_mnist,
                                     load_synthetic)

# Images per (train, test) split of the complete datasets (None: any).
KNOWN_COUNTS = {
    "mnist": (60_000, 10_000),
    "fashion_mnist": (60_000, 10_000),
    "cifar10": (50_000, 10_000),
    "cifar100": (50_000, 10_000),
    "svhn": (73_257, 26_032),
    "horses_or_humans": (1_027, 256),
    "image_folder": (None, None),
    "synthetic": (None, None),
}

LOADERS = {
    "mnist": load_mnist,
    "fashion_mnist": load_fashion_mnist,
    "cifar10": load_cifar10,
    "cifar100": load_cifar100,
    "svhn": load_svhn,
    "horses_or_humans": load_horses_or_humans,
    "image_folder": load_image_folder,
    "synthetic": load_synthetic,
}


def known_counts(name: str, svhn_extra: bool = False) -> tuple[int | None, int | None]:
    train, test = KNOWN_COUNTS[name]
    if name == "svhn" and svhn_extra:
        train += SVHN_EXTRA
    return train, test
