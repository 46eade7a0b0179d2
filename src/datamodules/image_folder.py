"""The user's own image folders (``data=image_folder data.root=...``), in either layout:

- ``<root>/train/<class>/*`` and ``<root>/test/<class>/*`` (or ``val/`` or ``validation/``);
- ``<root>/<class>/*`` alone: a stratified test split of ``data.test_size`` is cut from it, seeded
  by ``data.split_seed`` (not the run's seed, so every seed of a study tests on the same images).

Any number of classes (the sorted folder names), any image size (resized once to
``data.image_size`` when decoded), RGB or grayscale. The per-channel mean/std of the training split
are computed once and kept in the cache record beside the decoded images.
"""
from __future__ import annotations

from pathlib import Path

import torch

from src.datamodules.cache import write_meta
from src.datamodules.decode import decode_folder
from src.datamodules.listing import class_folders
from src.datamodules.sources import DataSource, Request, Splits
from src.datamodules.splits import stratified_holdout
from src.errors import ConfigError, DataError

TEST_DIRS = ("test", "val", "validation")


def resolve_root(root, data_dir) -> Path:
    """An absolute ``data.root``, or one relative to ``paths.data_dir`` (else to the working folder)."""
    if root in (None, "", "???"):
        raise ConfigError("data=image_folder needs data.root=/path/to/set (holding <class>/ folders, "
                          "or train/ and test/ folders of them)")
    p = Path(str(root)).expanduser()
    if p.is_absolute():
        return p
    under_data = Path(str(data_dir)) / p
    return under_data if under_data.exists() or not p.exists() else p


def layout(root: Path) -> tuple[Path, Path | None]:
    """(training folder, test folder or None when the test split is to be cut from it)."""
    if not root.is_dir():
        raise DataError(f"image folder {root} not found: point data.root at a folder of <class>/ folders "
                        f"(absolute, or relative to paths.data_dir)")
    if (root / "train").is_dir():
        test = next((root / d for d in TEST_DIRS if (root / d).is_dir()), None)
        return root / "train", test
    return root, None


def count_classes(root, data_dir) -> int | None:
    """Class folders under the training folder, for ``num_classes: ${folder_classes:...}``; None when
    the folder is not there (the data module then says so in one line)."""
    try:
        train, _ = layout(resolve_root(root, data_dir))
    except (ConfigError, DataError):
        return None
    try:
        return len(class_folders(train)) or None  # the loader's own rule (hidden folders are no classes)
    except OSError:
        return None


def channel_stats(x: torch.Tensor, rows: torch.Tensor | None = None, chunk: int = 256) -> tuple[list, list]:
    """Per-channel mean and std in [0, 1] over the given rows, from a histogram of the 256 pixel
    values per channel: exact, and read in chunks (x may be memory-mapped, larger than memory)."""
    rows = torch.arange(len(x)) if rows is None else rows
    c = x.shape[1]
    hist = torch.zeros(c, 256, dtype=torch.int64)
    for part in rows.split(chunk):
        b = x.index_select(0, part)
        for ch in range(c):
            hist[ch] += torch.bincount(b[:, ch].reshape(-1), minlength=256)
    v = torch.arange(256, dtype=torch.float64) / 255
    n = hist.sum(1).double()
    mean = (hist * v).sum(1) / n
    std = ((hist * v * v).sum(1) / n - mean * mean).clamp_min(0).sqrt()
    return [round(float(m), 6) for m in mean], [round(float(s), 6) for s in std]


def _stats(x, rows, meta: dict, tag: str, cache_dir) -> tuple[list, list]:
    """The training split's statistics, from the cache record when computed before."""
    known = meta.setdefault("stats", {})
    if tag not in known:
        known[tag] = channel_stats(x, rows)
        write_meta(cache_dir, meta["key"], meta)
    return tuple(known[tag])


class ImageFolder(DataSource):
    """``root`` (absolute, or relative to ``data_dir``) in either layout of the module docstring;
    ``test_size`` (a fraction or a count) and ``split_seed`` cut the single-folder layout's test
    split; ``skip_bad_images``: skip unreadable files, saying how many, instead of stopping."""
    name = "image_folder"

    def __init__(self, root: str | None = None, data_dir: str = "data", test_size: float = 0.2, split_seed: int = 0,
                 skip_bad_images: bool = False):
        if not (0 < test_size < 1 or (test_size >= 1 and float(test_size).is_integer())):
            raise ConfigError(f"data.test_size={test_size} must be a fraction (0 < f < 1) or a count of images")
        self.root = resolve_root(root, data_dir)
        if not self.root.is_dir():
            raise DataError(f"image folder {self.root} not found: point data.root at a folder of <class>/ "
                            f"folders (absolute, or relative to paths.data_dir)")
        self.test_size, self.split_seed, self.skip_bad_images = test_size, split_seed, skip_bad_images

    def load(self, request: Request) -> Splits:
        size, gray, cache_dir, skip = request.image_size, request.grayscale, request.cache_dir, self.skip_bad_images
        train_dir, test_dir = layout(self.root)
        tx, ty, classes, meta = decode_folder(train_dir, size, gray, cache_dir, skip)
        if test_dir is not None:
            vx, vy, test_classes, _ = decode_folder(test_dir, size, gray, cache_dir, skip)
            if test_classes != classes:
                raise DataError(f"{test_dir} and {train_dir} hold different class folders "
                                f"({', '.join(sorted(set(test_classes) ^ set(classes))[:5])} in only one): "
                                f"give both the same <class>/ folders")
            every_class_trains(classes, ty, vy, train_dir, skip)
            mean, std = _stats(tx, None, meta, "all", cache_dir)
            return Splits(tx, ty, vx, vy, classes, mean=mean, std=std)
        if len(classes) < 2:
            raise DataError(f"{train_dir} holds {len(classes)} class folder(s): a classifier needs at least 2")
        test_size, split_seed = self.test_size, self.split_seed
        every_class_trains(classes, ty, ty[:0], train_dir, skip)  # a class with no image at all
        train_idx, test_idx = stratified_holdout(ty, test_size, split_seed, what="data.test_size", held="test")
        train_idx, test_idx = keep_one_for_training(classes, ty, train_idx, test_idx)
        mean, std = _stats(tx, train_idx, meta, f"test_size={test_size},split_seed={split_seed}", cache_dir)
        return Splits(tx, ty[train_idx], tx, ty[test_idx], classes, train_index=train_idx, test_index=test_idx,
                      mean=mean, std=std)


def every_class_trains(classes: list[str], train_y: torch.Tensor, test_y: torch.Tensor, train_dir: Path,
                       skip: bool) -> None:
    """A class without a training image would train silently (its row of the confusion matrix all
    wrong): refused in one line naming it and its images per split."""
    n = len(classes)
    train, test = torch.bincount(train_y, minlength=n).tolist(), torch.bincount(test_y, minlength=n).tolist()
    for c, name in enumerate(classes):
        if train[c] == 0:
            why = " (every file of it was skipped as unreadable)" if skip else ""
            raise DataError(f"class '{name}' has no training image{why}: train {train[c]}, test {test[c]}; add "
                            f"images to {train_dir / name} or remove that folder")


def keep_one_for_training(classes: list[str], labels: torch.Tensor, train_idx: torch.Tensor,
                          test_idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A cut test split takes a class's share; a class too small for it (one image, or a share
    rounded up to all) keeps one image for training instead, and a warning says so."""
    import logging

    moved = []
    trained = torch.bincount(labels[train_idx], minlength=len(classes))
    for c in (trained == 0).nonzero().flatten().tolist():
        mine = test_idx[labels[test_idx] == c]
        train_idx = torch.cat([train_idx, mine[:1]]).sort().values
        test_idx = test_idx[test_idx != mine[0]]
        moved.append(f"{classes[c]} ({len(mine)} image(s))")
    if moved:
        logging.getLogger(__name__).warning(
            "data.test_size: kept one image of %s for training (too few for a test share and a training one)",
            ", ".join(moved))
    return train_idx, test_idx
