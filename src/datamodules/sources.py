"""Readers for the on-disk datasets, through torchvision's own dataset classes.

Each reader returns the whole dataset as uint8 tensors [N,C,H,W] and int64 labels for the train
and test splits. ``download``: ``auto`` uses local files when present and torchvision's download
otherwise; ``False`` never touches the network.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torchvision import datasets

from src.datamodules.decode import decode_folder
from src.errors import DataError

HORSES_URLS = {
    "train": "https://storage.googleapis.com/learning-datasets/horse-or-human.zip",
    "validation": "https://storage.googleapis.com/learning-datasets/validation-horse-or-human.zip",
}


@dataclass
class Splits:
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: list[str]
    # rows of train_x / test_x that form the split (None: all), when both splits are cut from one
    # decoded folder: indexing would copy a set that may be larger than memory
    train_index: torch.Tensor | None = None
    test_index: torch.Tensor | None = None
    mean: list[float] | None = None  # per-channel statistics of the training split, when computed
    std: list[float] | None = None


def _download_mode(download) -> bool:
    if download in (True, "true", "auto"):
        return True
    if download in (False, "false", None):
        return False
    raise DataError(f"data.download={download!r} is not valid: use auto, true or false")


def _missing(what: str, root: Path, expected: str, why: str = "") -> DataError:
    reason = f" ({why})" if why else ""
    return DataError(
        f"{what} not found in {root}: expected {expected}{reason}; "
        f"point at the folder holding it with DATA_DIR=... or paths.data_dir=..., or allow data.download=auto"
    )


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


IDX_MAGIC = {"images-idx3-ubyte": (2051, 3), "labels-idx1-ubyte": (2049, 1)}


def check_idx_file(path: Path) -> None:
    """An IDX file's size must equal what its header promises (catches truncated copies)."""
    kind = next(k for k in IDX_MAGIC if path.name.endswith(k))
    magic, ndim = IDX_MAGIC[kind]
    with open(path, "rb") as f:
        header = f.read(4 + 4 * ndim)
    if len(header) < 4 + 4 * ndim or int.from_bytes(header[:4], "big") != magic:
        raise DataError(f"{path} is not an IDX file (bad header); restore it from the original archive")
    dims = [int.from_bytes(header[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    expected = 4 + 4 * ndim + int(torch.tensor(dims).prod())
    size = path.stat().st_size
    if size != expected:
        raise DataError(f"{path} is truncated or corrupt: {size} bytes where its header promises {expected}; "
                        f"restore it from the original archive")


def _read_idx(cls, root: Path, name: str, download: bool) -> Splits:
    raw = root / cls.__name__ / "raw"
    expected = f"{raw}/{{train,t10k}}-{{images-idx3,labels-idx1}}-ubyte"
    exists = all((raw / f).exists() for f in (
        "train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"))
    if not exists and not download:
        raise _missing(name, root, expected, "data.download=false")
    if exists:
        for f in sorted(raw.glob("*-ubyte")):
            check_idx_file(f)
    try:
        tr = cls(str(root), train=True, download=not exists)
        te = cls(str(root), train=False, download=False)
    except Exception as e:  # torchvision's download or parse failure: say which files, in one line
        if not exists:
            raise _missing(name, root, expected, f"download failed: {_one_line(e)}") from None
        raise DataError(f"{name} files in {raw} are unreadable or corrupt: {_one_line(e)}") from None
    return Splits(tr.data.unsqueeze(1).contiguous(), tr.targets.long(), te.data.unsqueeze(1).contiguous(),
                  te.targets.long(), list(tr.classes))


def load_mnist(root: Path, download, **_) -> Splits:
    return _read_idx(datasets.MNIST, root, "MNIST", _download_mode(download))


def load_fashion_mnist(root: Path, download, **_) -> Splits:
    return _read_idx(datasets.FashionMNIST, root, "FashionMNIST", _download_mode(download))


class _CIFAR10Pickles(datasets.CIFAR10):
    """torchvision's CIFAR10 reader minus the MD5 pin, so re-packed or fabricated batches load too;
    integrity is checked on what is read (counts, shapes) instead."""

    def _check_integrity(self) -> bool:
        base = Path(self.root) / self.base_folder
        return all((base / f).exists() for f, _ in self.train_list + self.test_list)

    def _load_meta(self) -> None:
        import pickle

        with open(Path(self.root) / self.base_folder / self.meta["filename"], "rb") as f:
            self.classes = pickle.load(f, encoding="latin1")[self.meta["key"]]
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}


def _decode_folder(folder: Path, image_size, grayscale: bool, cache_dir, skip_bad: bool = False):
    x, y, classes, _ = decode_folder(folder, image_size, grayscale, cache_dir, skip_bad)
    return x, y, classes


def load_cifar10(root: Path, download, cache_dir=None, skip_bad_images: bool = False, **_) -> Splits:
    """Either layout: the official python batches or an image-folder tree of JPEG/PNG files."""
    download = _download_mode(download)
    tree, pickles = root / "cifar-10-images", root / "cifar-10-batches-py"
    if (tree / "train").is_dir() and (tree / "test").is_dir():
        tx, ty, classes = _decode_folder(tree / "train", None, False, cache_dir, skip_bad_images)
        vx, vy, _ = _decode_folder(tree / "test", None, False, cache_dir, skip_bad_images)
        return Splits(tx, ty, vx, vy, classes)
    expected = f"{pickles}/ (python batches) or {tree}/{{train,test}}/<class>/*.jpg"
    if not pickles.is_dir() and not download:
        raise _missing("CIFAR-10", root, expected, "data.download=false")
    try:
        tr = _CIFAR10Pickles(str(root), train=True, download=not pickles.is_dir())
        te = _CIFAR10Pickles(str(root), train=False)
    except Exception as e:
        if not pickles.is_dir():
            raise _missing("CIFAR-10", root, expected, f"download failed: {_one_line(e)}") from None
        raise DataError(f"CIFAR-10 batch {_first_bad_pickle(pickles)} is incomplete or corrupt: "
                        f"{_one_line(e)}; restore it from the original archive") from None

    def to_tensor(d):
        return torch.from_numpy(d.data).permute(0, 3, 1, 2).contiguous(), torch.tensor(d.targets)

    try:
        (tx, ty), (vx, vy) = to_tensor(tr), to_tensor(te)
    except Exception as e:
        raise DataError(f"CIFAR-10 batch {_first_bad_pickle(pickles)} is incomplete or corrupt: "
                        f"{_one_line(e)}; restore it from the original archive") from None
    return Splits(tx, ty, vx, vy, list(tr.classes))


def _first_bad_pickle(folder: Path) -> Path | str:
    import pickle

    names = [f for f, _ in _CIFAR10Pickles.train_list + _CIFAR10Pickles.test_list] + ["batches.meta"]
    for name in names:
        try:
            with open(folder / name, "rb") as f:
                entry = pickle.load(f, encoding="latin1")
            if name != "batches.meta" and (entry["data"].ndim != 2 or entry["data"].shape[1] != 3072
                                           or len(entry["data"]) != len(entry["labels"])):
                return folder / name
        except Exception:
            return folder / name
    return folder


def _download_horses(base: Path) -> None:
    from torchvision.datasets.utils import download_and_extract_archive

    for split, url in HORSES_URLS.items():
        download_and_extract_archive(url, download_root=str(base / "_zips"), extract_root=str(base / split))


def load_horses_or_humans(root: Path, download, image_size: int = 150, grayscale: bool = False,
                          cache_dir=None, skip_bad_images: bool = False, **_) -> Splits:
    """``horse-or-human/{train,validation}/{horses,humans}``; validation is the test split. The
    300x300 originals are resized once, when decoded (decode.RESIZE_FILTER)."""
    base = root / "horse-or-human"
    expected = f"{base}/{{train,validation}}/{{horses,humans}}/*.png"
    have = (base / "train").is_dir() and (base / "validation").is_dir()
    if not have:
        if not _download_mode(download):
            raise _missing("horses-or-humans", root, expected, "data.download=false")
        try:
            _download_horses(base)
        except Exception as e:
            raise _missing("horses-or-humans", root, expected, f"download failed: {_one_line(e)}") from None
    tx, ty, classes = _decode_folder(base / "train", image_size, grayscale, cache_dir, skip_bad_images)
    vx, vy, _ = _decode_folder(base / "validation", image_size, grayscale, cache_dir, skip_bad_images)
    return Splits(tx, ty, vx, vy, classes)


def load_synthetic(root: Path, download, image_size: int = 32, grayscale: bool = False, channels: int = 3,
                   num_classes: int = 10, sizes=(50_000, 10_000), **_) -> Splits:
    """Random uint8 images of a real dataset's shape, for throughput benchmarks (no files)."""
    g = torch.Generator().manual_seed(0)
    c = 1 if grayscale else channels

    def split(n):
        return (torch.randint(0, 256, (n, c, image_size, image_size), dtype=torch.uint8, generator=g),
                torch.randint(0, num_classes, (n,), generator=g))

    (tx, ty), (vx, vy) = split(int(sizes[0])), split(int(sizes[1]))
    return Splits(tx, ty, vx, vy, [str(i) for i in range(num_classes)])
