"""Tiny CIFAR-100, SVHN and user image folders in their real on-disk formats."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
from PIL import Image

# the first fine and coarse names of the real meta file (the rest are filler of the same shape)
FINE = ["apple", "aquarium_fish", "baby", "bear", "beaver"] + [f"fine_{i:02d}" for i in range(5, 100)]
COARSE = ["aquatic_mammals", "fish", "flowers", "food_containers"] + [f"coarse_{i:02d}" for i in range(4, 20)]


def write_cifar100(root: Path, n_train: int = 200, n_test: int = 100, seed: int = 0) -> dict:
    """cifar-100-python/{train,test,meta}: pickled dicts with the real keys (``data`` as planar RGB
    rows of 3072 bytes, ``fine_labels``, ``coarse_labels``, ``filenames``, ``batch_label``)."""
    rng = np.random.default_rng(seed)
    base = root / "cifar-100-python"
    base.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        fine = np.arange(n) % 100
        coarse = fine % 20
        hwc = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
        entry = {"filenames": [f"img_{i}.png" for i in range(n)], "batch_label": f"{split} batch 1 of 1",
                 "fine_labels": fine.tolist(), "coarse_labels": coarse.tolist(),
                 "data": hwc.transpose(0, 3, 1, 2).reshape(n, -1)}
        with open(base / split, "wb") as f:
            pickle.dump(entry, f)
        out[split] = (hwc, fine, coarse)
    with open(base / "meta", "wb") as f:
        pickle.dump({"fine_label_names": FINE, "coarse_label_names": COARSE}, f)
    return out


def write_svhn(root: Path, sizes=(("train", 30), ("test", 20), ("extra", 10)), seed: int = 0) -> dict:
    """SVHN/<split>_32x32.mat as the originals: X (32, 32, 3, N) uint8, y (N, 1) with 10 for the digit 0."""
    from scipy.io import savemat

    rng = np.random.default_rng(seed)
    (root / "SVHN").mkdir(parents=True, exist_ok=True)
    out = {}
    for split, n in sizes:
        digits = np.arange(n) % 10
        x = rng.integers(0, 256, size=(32, 32, 3, n), dtype=np.uint8)
        y = np.where(digits == 0, 10, digits).astype(np.uint8).reshape(n, 1)
        savemat(root / "SVHN" / f"{split}_32x32.mat", {"X": x, "y": y})
        out[split] = (x, digits)
    return out


def write_folder(root: Path, classes: dict[str, int], size=(40, 30), mode: str = "RGB", ext: str = "png",
                 seed: int = 0) -> None:
    """root/<class>/<i>.<ext>: per class a count of images, class k brighter than class k-1."""
    rng = np.random.default_rng(seed)
    for k, (cls, n) in enumerate(classes.items()):
        d = root / cls
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            shape = (size[1], size[0]) + ((3,) if mode == "RGB" else ())
            img = np.clip(rng.integers(0, 40, size=shape) + 50 * k, 0, 255).astype(np.uint8)
            Image.fromarray(img).save(d / f"{i:03d}.{ext}")
