"""Tiny datasets written in the real on-disk formats, for tests that must not need real data."""
from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np
from PIL import Image

CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _class_images(labels: np.ndarray, shape: tuple[int, ...], rng) -> np.ndarray:
    """Noise plus a class-dependent brightness, so a model can learn something in a few steps."""
    base = rng.integers(0, 60, size=(len(labels), *shape))
    return np.clip(base + (labels.reshape(-1, *[1] * len(shape)) * 19), 0, 255).astype(np.uint8)


def write_idx(raw: Path, n_train: int = 120, n_test: int = 40, seed: int = 0) -> None:
    """MNIST/FashionMNIST raw IDX files (uncompressed, as torchvision reads them)."""
    raw.mkdir(parents=True, exist_ok=True)
    rng = _rng(seed)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % 10
        images = _class_images(labels, (28, 28), rng)
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 2051, n, 28, 28) + images.tobytes())
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 2049, n) + labels.astype(np.uint8).tobytes())


def cifar_arrays(n_train: int = 100, n_test: int = 40, seed: int = 0):
    rng = _rng(seed)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        labels = np.arange(n) % 10
        out[split] = (_class_images(labels, (32, 32, 3), rng), labels)
    return out


def write_cifar_pickles(root: Path, arrays=None) -> None:
    """cifar-10-batches-py/: five data batches, a test batch and batches.meta."""
    arrays = arrays or cifar_arrays()
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True, exist_ok=True)
    x, y = arrays["train"]
    for i, (xs, ys) in enumerate(zip(np.array_split(x, 5), np.array_split(y, 5)), start=1):
        _dump(base / f"data_batch_{i}", xs, ys)
    _dump(base / "test_batch", *arrays["test"])
    with open(base / "batches.meta", "wb") as f:
        pickle.dump({"label_names": CIFAR_CLASSES, "num_cases_per_batch": 10000, "num_vis": 3072}, f)


def _dump(path: Path, x: np.ndarray, y: np.ndarray) -> None:
    data = x.transpose(0, 3, 1, 2).reshape(len(x), -1)  # the batches store planar RGB rows
    with open(path, "wb") as f:
        pickle.dump({"batch_label": path.name, "labels": [int(v) for v in y], "data": data,
                     "filenames": [f"{i}.png" for i in range(len(y))]}, f)


def write_cifar_tree(root: Path, arrays=None, ext: str = "jpg") -> None:
    """cifar-10-images/{train,test}/<class>/NNNN.<ext> (the Kaggle/GitHub layout)."""
    arrays = arrays or cifar_arrays()
    for split, (x, y) in arrays.items():
        counters = {}
        for img, label in zip(x, y):
            d = root / "cifar-10-images" / split / CIFAR_CLASSES[label]
            d.mkdir(parents=True, exist_ok=True)
            k = counters[label] = counters.get(label, -1) + 1
            Image.fromarray(img).save(d / f"{k:04d}.{ext}", quality=95)


def write_horses(root: Path, per_class: int = 6, size: int = 48, seed: int = 0) -> None:
    """horse-or-human/{train,validation}/{horses,humans}/*.png (300x300 RGB in the real set)."""
    rng = _rng(seed)
    for split, n in (("train", per_class), ("validation", max(2, per_class // 2))):
        for label, cls in enumerate(("horses", "humans")):
            d = root / "horse-or-human" / split / cls
            d.mkdir(parents=True, exist_ok=True)
            imgs = _class_images(np.full(n, label * 5), (size, size, 3), rng)
            for i, img in enumerate(imgs):
                Image.fromarray(img).save(d / f"{cls[:-1]}{i:02d}-0.png")


def write_all(root: Path) -> Path:
    write_idx(root / "MNIST" / "raw", seed=1)
    write_idx(root / "FashionMNIST" / "raw", seed=2)
    write_cifar_tree(root)
    write_horses(root)
    return root
