"""One LightningDataModule for every dataset: the whole dataset lives in memory (or on the GPU)
as uint8 tensors; batches are sliced from it and augmented/normalised batched on the device."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import lightning as L
import torch

from src.datamodules.augment import build_augment, normalize
from src.datamodules.loader import TensorBatchLoader
from src.datamodules.sources import KNOWN_COUNTS, LOADERS, Splits
from src.datamodules.splits import _check_fraction, stratified_holdout, stratified_subset
from src.errors import ConfigError, DataError


def check_shared_gpu_fits(nbytes: int, gpu_bytes: int, jobs_per_gpu: int | None = None) -> None:
    """A sweep packing k jobs on one GPU (``jobs_per_gpu``) keeps k copies of the dataset there:
    refuse when they would take more than half of the GPU, before the first copy is made."""
    k = jobs_per_gpu or int(os.environ.get("IMGCLS_SWEEP_JOBS_PER_GPU", "1") or 1)
    if k > 1 and nbytes * k > gpu_bytes // 2:
        raise ConfigError(f"jobs_per_gpu={k} would keep {k} copies of this {nbytes / 2**30:.2f} GiB dataset on a "
                          f"{gpu_bytes / 2**30:.0f} GiB GPU (over half of it): lower jobs_per_gpu, or set "
                          f"data.on_device=false to keep the data in host memory")


class ImageClassificationDataModule(L.LightningDataModule):
    def __init__(
        self,
        name: str,
        data_dir: str = "data",
        cache_dir: str | None = None,
        download: str | bool = "auto",
        channels: int = 3,
        image_size: int = 32,
        num_classes: int = 10,
        batch_size: int = 128,
        eval_batch_size: int | None = None,
        augment: str = "none",
        crop_padding: int = 4,
        rotate_degrees: float = 15.0,
        zoom: Sequence[float] = (0.9, 1.1),
        grayscale: bool = False,
        train_fraction: float = 1.0,
        test_fraction: float = 1.0,
        val_size: float = 0,
        merge_val_into_train: bool = False,
        on_device: str | bool = "auto",
        mean: Sequence[float] = (0.5,),
        std: Sequence[float] = (0.5,),
        seed: int = 0,
        verify_counts: bool = True,
        synthetic_sizes: Sequence[int] = (50_000, 10_000),
    ):
        super().__init__()
        # Everything is checked here, before a file is opened.
        if name not in LOADERS:
            raise ConfigError(f"unknown data.name '{name}': choose one of {', '.join(LOADERS)}")
        _check_fraction("train_fraction", train_fraction)
        _check_fraction("test_fraction", test_fraction)
        if batch_size < 1:
            raise ConfigError(f"data.batch_size={batch_size} must be at least 1")
        if val_size < 0:
            raise ConfigError(f"data.val_size={val_size} must be 0 (validate on test) or a count/fraction > 0")
        zoom = tuple(zoom)
        if len(zoom) != 2 or not 0 < zoom[0] <= zoom[1]:
            raise ConfigError(f"data.zoom={list(zoom)} must be [low, high] with 0 < low <= high, e.g. [0.9, 1.1]")
        if not 0 <= rotate_degrees <= 180:
            raise ConfigError(f"data.rotate_degrees={rotate_degrees} must be between 0 and 180")
        if len(mean) not in (1, channels) or len(std) not in (1, channels):
            allowed = "1 value" if channels == 1 else f"1 or {channels} values"
            raise ConfigError(f"data.mean/std need {allowed} (one per channel), got {len(mean)}/{len(std)}")
        self.name, self.data_dir, self.cache_dir, self.download = name, Path(data_dir), cache_dir, download
        self.channels, self.image_size, self.num_classes = channels, image_size, num_classes
        self.grayscale = grayscale
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.augment = build_augment(augment, crop_padding, rotate_degrees, zoom)
        self.train_fraction, self.test_fraction = train_fraction, test_fraction
        self.val_size, self.merge_val_into_train = val_size, merge_val_into_train
        self.on_device, self.seed, self.verify_counts = on_device, seed, verify_counts
        self.synthetic_sizes = synthetic_sizes
        self.mean = torch.tensor(list(mean), dtype=torch.float32).expand(channels).view(1, -1, 1, 1).clone()
        self.std = torch.tensor(list(std), dtype=torch.float32).expand(channels).view(1, -1, 1, 1).clone()
        self.classes: list[str] = []
        # Set by SpeedUp when the model is compiled: every batch of a stage then has one shape (the
        # short last training batch is dropped, the last evaluation batch padded and masked)
        self.static_shapes = False
        self._splits: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    # ------------------------------------------------------------------ loading
    def _load(self) -> Splits:
        s = LOADERS[self.name](self.data_dir, self.download, cache_dir=self.cache_dir, image_size=self.image_size,
                               grayscale=self.grayscale, channels=self.channels, num_classes=self.num_classes,
                               sizes=self.synthetic_sizes)
        for split, x, y, known in (("train", s.train_x, s.train_y, KNOWN_COUNTS[self.name][0]),
                                   ("test", s.test_x, s.test_y, KNOWN_COUNTS[self.name][1])):
            if len(x) != len(y):
                raise DataError(f"{self.name} {split} split in {self.data_dir} has {len(x)} images but {len(y)} labels")
            if self.verify_counts and known is not None and len(x) != known:
                raise DataError(f"{self.name} {split} split in {self.data_dir} has {len(x)} images, expected {known}: "
                                f"the copy is incomplete (set data.verify_counts=false to use a partial copy on purpose)")
        got = (s.train_x.shape[1], *s.train_x.shape[2:])
        want = (self.channels, self.image_size, self.image_size)
        if got != want:
            raise ConfigError(f"{self.name} images are {got} but the data config says {want}: fix data.channels/image_size")
        return s

    def setup(self, stage: str | None = None) -> None:
        if self._splits:
            return
        s = self._load()
        self.classes = s.classes
        train_idx = stratified_subset(s.train_y, self.train_fraction, self.seed)
        tx, ty = s.train_x[train_idx], s.train_y[train_idx]
        test_idx = stratified_subset(s.test_y, self.test_fraction, self.seed + 1)
        test = (s.test_x[test_idx], s.test_y[test_idx])
        if self.val_size:
            tr, va = stratified_holdout(ty, self.val_size, self.seed + 2)
            val = (tx[va], ty[va])
            if not self.merge_val_into_train:
                tx, ty = tx[tr], ty[tr]
        else:
            val = test  # the studies we reproduce validate on the test split
        parts = {"train": (tx, ty), "val": val, "test": test}
        unique = {id(x): x for x, _ in parts.values()}  # val is the test split itself when val_size=0
        device = self._target_device(sum(x.numel() for x in unique.values()))
        moved: dict[int, torch.Tensor] = {}  # one device copy per tensor, shared by val and test
        for pair in parts.values():
            for t in pair:
                if id(t) not in moved:
                    moved[id(t)] = t.to(device)
        self._splits = {k: (moved[id(x)], moved[id(y)]) for k, (x, y) in parts.items()}

    def _target_device(self, nbytes: int) -> torch.device:
        """The training device when the uint8 data takes under a quarter of its free memory."""
        root = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        if self.on_device in (False, "false", "off") or root.type != "cuda":
            return torch.device("cpu")
        check_shared_gpu_fits(nbytes, torch.cuda.get_device_properties(root).total_memory)
        if self.on_device == "auto":
            free, _ = torch.cuda.mem_get_info(root)
            return root if nbytes < free // 4 else torch.device("cpu")
        return root

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        return self._splits[name]

    # ------------------------------------------------------------------ loaders
    def train_dataloader(self):
        x, y = self._splits["train"]
        overfit = self.trainer is not None and self.trainer.overfit_batches > 0
        # compiled: a short last batch would compile (and capture) a second graph inside the timed
        # epoch, so it is dropped -- a different permutation every epoch, so no image is always left out
        drop = self.static_shapes and len(y) >= self.batch_size
        return TensorBatchLoader(x, y, self.batch_size, shuffle=not overfit, drop_last=drop, seed=self.seed)

    def val_dataloader(self):
        return TensorBatchLoader(*self._splits["val"], self.eval_batch_size, pad_last=self.static_shapes)

    def test_dataloader(self):
        return TensorBatchLoader(*self._splits["test"], self.eval_batch_size, pad_last=self.static_shapes)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        x, y = batch
        if self.trainer is not None and self.trainer.training:
            x = self.augment(x)
        if self.mean.device != x.device:
            self.mean, self.std = self.mean.to(x.device), self.std.to(x.device)
        return normalize(x, self.mean, self.std), y

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x * self.std.to(x.device) + self.mean.to(x.device)).clamp(0, 1)
