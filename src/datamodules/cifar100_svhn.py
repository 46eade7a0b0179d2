"""CIFAR-100 and SVHN, the usual second and third benchmarks of activation and regularisation
papers. The files are read here (the official pickles, torchvision's .mat files) so that a
re-packed copy loads without torchvision's MD5 pins; torchvision only downloads them."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch
from torchvision import datasets

from src.datamodules.sources import DataSource, Request, Splits, _decode_folder, _download_mode, _missing, _one_line
from src.errors import ConfigError, DataError

SVHN_EXTRA = 531_131  # images in extra_32x32.mat
LABEL_TYPES = ("fine", "coarse")  # CIFAR-100's data.label_type (src/config_schema.py checks against it)


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            return pickle.load(f, encoding="latin1")
    except Exception as e:
        raise DataError(f"CIFAR-100 file {path} is incomplete or corrupt: {_one_line(e)}; "
                        f"restore it from the original archive") from None


class CIFAR100(DataSource):
    """``cifar-100-python/{train,test,meta}`` (fine labels, or the 20 superclasses with
    ``label_type=coarse``) or the image tree ``cifar-100-images/{train,test}/<fine class>/*``
    (``skip_bad_images``: skip its unreadable files, saying how many, instead of stopping)."""
    name, known_counts = "cifar100", (50_000, 10_000)

    def __init__(self, label_type: str = "fine", skip_bad_images: bool = False):
        if label_type not in LABEL_TYPES:
            raise ConfigError(f"data.label_type={label_type!r} is not valid: use fine (100 classes) or coarse (20)")
        self.label_type, self.skip_bad_images = label_type, skip_bad_images

    def load(self, request: Request) -> Splits:
        return _load_cifar100(request.data_dir, request.download, request.cache_dir, self.label_type,
                              self.skip_bad_images)


def _load_cifar100(root: Path, download, cache_dir, label_type: str, skip_bad_images: bool) -> Splits:
    tree, pickles = root / "cifar-100-images", root / "cifar-100-python"
    if (tree / "train").is_dir() and (tree / "test").is_dir() and not pickles.is_dir():
        if label_type == "coarse":
            raise ConfigError(f"data.label_type=coarse needs the cifar-100-python pickles: the image tree {tree} "
                              f"only holds the 100 fine classes")
        tx, ty, classes = _decode_folder(tree / "train", None, False, cache_dir, skip_bad_images)
        vx, vy, _ = _decode_folder(tree / "test", None, False, cache_dir, skip_bad_images)
        return Splits(tx, ty, vx, vy, classes)
    expected = f"{pickles}/{{train,test,meta}} (python pickles) or {tree}/{{train,test}}/<class>/*.png"
    if not all((pickles / f).exists() for f in ("train", "test", "meta")):
        if not _download_mode(download):
            raise _missing("CIFAR-100", root, expected, "data.download=false")
        try:
            datasets.CIFAR100(str(root), train=True, download=True)
        except Exception as e:
            raise _missing("CIFAR-100", root, expected, f"download failed: {_one_line(e)}") from None
    meta = _unpickle(pickles / "meta")
    out = []
    for split in ("train", "test"):
        d = _unpickle(pickles / split)
        try:
            x = np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)  # planar RGB rows, as CIFAR-10's
            y = torch.tensor(d[f"{label_type}_labels"], dtype=torch.int64)
        except (KeyError, ValueError) as e:
            raise DataError(f"CIFAR-100 file {pickles / split} is incomplete or corrupt: {_one_line(e)}; "
                            f"restore it from the original archive") from None
        out += [torch.from_numpy(x.copy()), y]
    return Splits(*out, list(meta[f"{label_type}_label_names"]))


def _read_mat(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    from scipy.io import loadmat

    try:
        m = loadmat(str(path))
        x, y = m["X"], m["y"].astype(np.int64).reshape(-1)
        if x.ndim != 4 or x.shape[:3] != (32, 32, 3) or x.shape[3] != len(y):
            raise ValueError(f"X is {x.shape}, y has {len(y)} labels")
    except Exception as e:
        raise DataError(f"SVHN file {path} is incomplete or corrupt: {_one_line(e)}; "
                        f"restore it from the original download") from None
    y[y == 10] = 0  # the .mat files label the digit 0 as 10
    return torch.from_numpy(np.ascontiguousarray(x.transpose(3, 2, 0, 1))), torch.from_numpy(y)


class SVHN(DataSource):
    """``SVHN/{train,test}_32x32.mat`` (+ ``extra_32x32.mat`` with ``extra=True``: 531,131 more
    training images); labels 0-9 with the digit 0 as class 0."""
    name = "svhn"

    def __init__(self, extra: bool = False):
        self.extra = extra

    @property
    def known_counts(self) -> tuple[int, int]:
        return 73_257 + (SVHN_EXTRA if self.extra else 0), 26_032

    def load(self, request: Request) -> Splits:
        return _load_svhn(request.data_dir, request.download, self.extra)


def _load_svhn(root: Path, download, svhn_extra: bool) -> Splits:
    base = root / "SVHN"
    wanted = ["train", "test"] + (["extra"] if svhn_extra else [])
    expected = f"{base}/{{{','.join(wanted)}}}_32x32.mat"
    for split in wanted:
        if not (base / f"{split}_32x32.mat").exists():
            if not _download_mode(download):
                raise _missing("SVHN", root, expected, "data.download=false")
            try:
                datasets.SVHN(str(base), split=split, download=True)
            except Exception as e:
                raise _missing("SVHN", root, expected, f"download failed: {_one_line(e)}") from None
    tx, ty = _read_mat(base / "train_32x32.mat")
    vx, vy = _read_mat(base / "test_32x32.mat")
    if svhn_extra:
        ex, ey = _read_mat(base / "extra_32x32.mat")
        tx, ty = torch.cat([tx, ex]), torch.cat([ty, ey])
    return Splits(tx, ty, vx, vy, [str(d) for d in range(10)])
