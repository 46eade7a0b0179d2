"""Where the images come from: one ``DataSource`` class per dataset, with its own options and the
split sizes of its complete copy. ``conf/data/<name>.yaml`` names the class in its ``source:`` node;
the data module asks it for the whole dataset (``load(Request) -> Splits``): uint8 tensors
[N,C,H,W] and int64 labels for the train and test splits.

Here: the interface, MNIST, Fashion-MNIST, CIFAR-10 (read through torchvision's own dataset
classes), horses-or-humans and random images; CIFAR-100 and SVHN in cifar100_svhn.py, the user's
own folders in image_folder.py. ``download``: ``auto`` uses local files when present and
torchvision's download otherwise; ``False`` never touches the network.

A new dataset is a DataSource subclass (here, or in a module of its own) and a
``conf/data/<name>.yaml`` that starts from ``base/datamodule@_here_`` and names the class in its
``source:`` node; an option of the dataset goes beside the data module's (``data.<option>``, for
the command line) and into ``source:`` as ``${data.<option>}``.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

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


@dataclass(frozen=True)
class Request:
    """What the data module asks of a source: where the files are, and the images it expects (a
    source of fixed-size files may ignore the latter: the data module checks what comes back)."""
    data_dir: Path
    download: str | bool = "auto"
    cache_dir: str | None = None
    image_size: int = 32
    channels: int = 3
    grayscale: bool = False
    num_classes: int = 10


class DataSource(ABC):
    """One dataset: its options are its constructor's parameters, checked there (before any file
    is read: the command-line pre-check builds the data module without loading it)."""
    name: str = ""  # in messages; the data.name of the config that uses it
    # images in the (train, test) splits of a complete copy (data.verify_counts); None: any
    known_counts: tuple[int, int] | None = None

    @abstractmethod
    def load(self, request: Request) -> Splits:
        """The whole dataset; a missing or broken copy raises DataError in one line."""


def _download_mode(download) -> bool:
    if download in (True, "true", "auto"):
        return True
    if download in (False, "false", None):
        return False
    raise DataError(f"data.download={download!r} is not valid: use auto, true or false")


def _missing(what: str, root: Path, expected: str, why: str = "") -> DataError:
    reason = f" ({why})" if why else ""
    # data.download=auto is suggested only where it would change something: after a failed download it was on
    allow = ", or allow data.download=auto" if why == "data.download=false" else ""
    return DataError(
        f"{what} not found in {root}: expected {expected}{reason}; "
        f"point at the folder holding it with DATA_DIR=... or paths.data_dir=...{allow}"
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


class MNIST(DataSource):
    """Raw IDX files in ``MNIST/raw/``."""
    name, known_counts = "mnist", (60_000, 10_000)
    reader = datasets.MNIST  # its class name is also the folder's

    def load(self, request: Request) -> Splits:
        return _read_idx(self.reader, request.data_dir, self.reader.__name__, _download_mode(request.download))


class FashionMNIST(MNIST):
    """Raw IDX files in ``FashionMNIST/raw/``."""
    name = "fashion_mnist"
    reader = datasets.FashionMNIST


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


class CIFAR10(DataSource):
    """Either layout: the official python batches ``cifar-10-batches-py/`` or an image tree
    ``cifar-10-images/{train,test}/<class>/*`` of JPEG/PNG files (``skip_bad_images``: skip an
    unreadable file of the tree, saying how many, instead of stopping)."""
    name, known_counts = "cifar10", (50_000, 10_000)

    def __init__(self, skip_bad_images: bool = False):
        self.skip_bad_images = skip_bad_images

    def load(self, request: Request) -> Splits:
        return _load_cifar10(request.data_dir, request.download, request.cache_dir, self.skip_bad_images)


def _load_cifar10(root: Path, download, cache_dir, skip_bad_images: bool) -> Splits:
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


class HorsesOrHumans(DataSource):
    """``horse-or-human/{train,validation}/{horses,humans}``; validation is the test split. The
    300x300 originals are resized once, when decoded (decode.RESIZE_FILTER), to the requested
    size (and to one channel when grayscale)."""
    name, known_counts = "horses_or_humans", (1_027, 256)

    def __init__(self, skip_bad_images: bool = False):
        self.skip_bad_images = skip_bad_images

    def load(self, request: Request) -> Splits:
        root = request.data_dir
        base = root / "horse-or-human"
        expected = f"{base}/{{train,validation}}/{{horses,humans}}/*.png"
        have = (base / "train").is_dir() and (base / "validation").is_dir()
        if not have:
            if not _download_mode(request.download):
                raise _missing("horses-or-humans", root, expected, "data.download=false")
            try:
                _download_horses(base)
            except Exception as e:
                raise _missing("horses-or-humans", root, expected, f"download failed: {_one_line(e)}") from None
        size, gray, cache, skip = request.image_size, request.grayscale, request.cache_dir, self.skip_bad_images
        tx, ty, classes = _decode_folder(base / "train", size, gray, cache, skip)
        vx, vy, _ = _decode_folder(base / "validation", size, gray, cache, skip)
        return Splits(tx, ty, vx, vy, classes)


class Synthetic(DataSource):
    """Random uint8 images of the requested shape and class count, ``sizes`` = (train, test) images:
    for throughput benchmarks, since speed does not depend on pixel values (no files)."""
    name = "synthetic"

    def __init__(self, sizes: Sequence[int] = (50_000, 10_000)):
        self.sizes = (int(sizes[0]), int(sizes[1]))

    def load(self, request: Request) -> Splits:
        g = torch.Generator().manual_seed(0)
        c = 1 if request.grayscale else request.channels
        size, k = request.image_size, request.num_classes

        def split(n):
            return (torch.randint(0, 256, (n, c, size, size), dtype=torch.uint8, generator=g),
                    torch.randint(0, k, (n,), generator=g))

        (tx, ty), (vx, vy) = split(self.sizes[0]), split(self.sizes[1])
        return Splits(tx, ty, vx, vy, [str(i) for i in range(k)])
