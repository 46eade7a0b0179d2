"""One LightningDataModule for every dataset, read by the DataSource it is given (sources.py): the
whole dataset lives in memory (or on the GPU) as uint8 tensors; batches are sliced from it and
augmented/normalised batched on the device."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import lightning as L
import torch

from src.datamodules.augment import build_augment, normalize
from src.datamodules.image_folder import channel_stats
from src.datamodules.loader import TensorBatchLoader, eval_steps, shard_bounds
from src.datamodules.sources import DataSource, Request, Splits
from src.datamodules.splits import _check_fraction, stratified_holdout, stratified_kfold, stratified_subset
from src.datamodules.cache import gib
from src.datamodules.views import View, place
from src.errors import ConfigError, DataError


def check_shared_gpu_fits(nbytes: int, gpu_bytes: int, jobs_per_gpu: int | None = None) -> None:
    """A sweep packing k jobs on one GPU (``jobs_per_gpu``) keeps k copies of the dataset there:
    refuse when they would take more than half of the GPU, before the first copy is made."""
    from src import env

    k = jobs_per_gpu or int(env.get(env.ENV_PER_GPU, "1") or 1)
    if k > 1 and nbytes * k > gpu_bytes // 2:
        raise ConfigError(f"jobs_per_gpu={k} would keep {k} copies of this {nbytes / 2**30:.2f} GiB dataset on a "
                          f"{gpu_bytes / 2**30:.0f} GiB GPU (over half of it): lower jobs_per_gpu, or set "
                          f"data.on_device=false to keep the data in host memory")


class ImageClassificationDataModule(L.LightningDataModule):
    def __init__(
        self,
        source: DataSource,
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
        policy: str = "none",
        policy_n: int = 2,
        policy_m: int = 9,
        cutout: int = 0,
        cutout_size: int = 16,
        erasing: float = 0.0,
        erasing_area: Sequence[float] = (0.02, 0.33),
        erasing_ratio: Sequence[float] = (0.3, 3.3),
        erasing_value: str = "mean",
        grayscale: bool = False,
        train_fraction: float = 1.0,
        test_fraction: float = 1.0,
        val_size: float = 0,
        merge_val_into_train: bool = False,
        on_device: str | bool = "auto",
        mean: Sequence[float] | None = (0.5,),
        std: Sequence[float] | None = (0.5,),
        seed: int | None = 0,
        verify_counts: bool = True,
        folds: int = 0,
        fold: int = 0,
        batch_size_is_global: bool = False,
    ):
        super().__init__()
        # Everything is checked here, before a file is opened.
        if not isinstance(source, DataSource):  # e.g. a source: node without a _target_
            raise ConfigError(f"data.source must build a DataSource (its _target_: a class of src/datamodules/), "
                              f"got {type(source).__name__}")
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
        if (mean is None) != (std is None):
            raise ConfigError("data.mean and data.std go together: give both, or null for both (computed from the "
                              "training split)")
        if mean is not None and (len(mean) not in (1, channels) or len(std) not in (1, channels)):
            allowed = "1 value" if channels == 1 else f"1 or {channels} values"
            raise ConfigError(f"data.mean/std need {allowed} (one per channel), got {len(mean)}/{len(std)}")
        if folds == 1 or folds < 0 or not 0 <= fold < max(folds, 1):  # a fold without folds would be ignored
            raise ConfigError(f"data.folds={folds} data.fold={fold}: use folds >= 2 with 0 <= fold < folds "
                              f"(or folds=0, no cross-validation)")
        if folds and val_size:
            raise ConfigError(f"data.folds={folds} validates on a fold: set data.val_size=0 (the test split stays "
                              f"apart and is tested as well)")
        self.folds, self.fold = folds, fold
        self.source, self.name = source, source.name
        self.data_dir, self.cache_dir, self.download = Path(data_dir), cache_dir, download
        self.channels, self.image_size, self.num_classes = channels, image_size, num_classes
        self.grayscale = grayscale
        # per process (per GPU) unless batch_size_is_global: then divided by the world size in setup()
        self.batch_size, self.batch_size_is_global = batch_size, batch_size_is_global
        self.eval_batch_size = eval_batch_size or batch_size
        # then the regularisers after data.augment (policy, cutout, erasing: src/datamodules/batch_ops.py)
        self.augment = build_augment(augment, crop_padding, rotate_degrees, zoom, policy=policy, policy_n=policy_n,
                                     policy_m=policy_m, cutout=cutout, cutout_size=cutout_size, erasing=erasing,
                                     erasing_area=erasing_area, erasing_ratio=erasing_ratio,
                                     erasing_value=erasing_value)
        self.train_fraction, self.test_fraction = train_fraction, test_fraction
        self.val_size, self.merge_val_into_train = val_size, merge_val_into_train
        self.on_device, self.seed, self.verify_counts = on_device, seed, verify_counts
        self.mean = self.std = None  # null: computed from the training split in setup()
        if mean is not None:
            self._set_stats(mean, std)
        self.classes: list[str] = []
        # Set by SpeedUp when the model is compiled: every batch of a stage then has one shape (the
        # short last training batch is dropped, the last evaluation batch padded and masked)
        self.static_shapes = False
        self._splits: dict[str, View] = {}
        self.rank, self.world = 0, 1  # this process under DDP (set in setup() from the trainer)
        self._eval_sizes: dict[str, int] = {}  # evaluation split sizes before sharding

    def _set_stats(self, mean, std) -> None:
        c = self.channels
        self.mean = torch.tensor(list(mean), dtype=torch.float32).expand(c).view(1, -1, 1, 1).clone()
        self.std = torch.tensor(list(std), dtype=torch.float32).expand(c).view(1, -1, 1, 1).clone()

    # ------------------------------------------------------------------ loading
    def _load(self) -> Splits:
        s = self.source.load(Request(self.data_dir, self.download, self.cache_dir, self.image_size, self.channels,
                                     self.grayscale, self.num_classes))
        known_train, known_test = self.source.known_counts or (None, None)
        for split, x, index, y, known in (("train", s.train_x, s.train_index, s.train_y, known_train),
                                          ("test", s.test_x, s.test_index, s.test_y, known_test)):
            n = len(x if index is None else index)
            if n != len(y):
                raise DataError(f"{self.name} {split} split in {self.data_dir} has {n} images but {len(y)} labels")
            if self.verify_counts and known is not None and n != known:
                raise DataError(f"{self.name} {split} split in {self.data_dir} has {n} images, expected {known}: "
                                f"the copy is incomplete (set data.verify_counts=false to use a partial copy on purpose)")
        if len(s.classes) != self.num_classes:
            raise ConfigError(f"{self.name} has {len(s.classes)} classes ({', '.join(map(str, s.classes[:5]))}"
                              f"{', ...' if len(s.classes) > 5 else ''}) but data.num_classes={self.num_classes}: "
                              f"fix data.num_classes")
        got = (s.train_x.shape[1], *s.train_x.shape[2:])
        want = (self.channels, self.image_size, self.image_size)
        if got != want:
            raise ConfigError(f"{self.name} images are {got} but the data config says {want}: fix data.channels/image_size")
        return s

    def _set_world(self) -> None:
        """Rank and world size from the trainer; a global batch size becomes the per-process one.
        Runs before any data is read, so a size that does not divide fails at once."""
        if self.trainer is not None:
            self.rank, self.world = self.trainer.global_rank, self.trainer.world_size
        if self.batch_size_is_global and self.world > 1:
            from src.ddp.batch import per_process_batch

            self.batch_size = per_process_batch(self.batch_size, self.world)
            self.eval_batch_size = -(-self.eval_batch_size // self.world)
            self.batch_size_is_global = False  # divided once

    def setup(self, stage: str | None = None) -> None:
        if self._splits:
            return
        self._set_world()
        s = self._load()
        self.classes = s.classes
        if self.mean is None:  # data.mean/std null: the training split's own, once (cached for image folders)
            self._set_stats(*((s.mean, s.std) if s.mean is not None else channel_stats(s.train_x, s.train_index)))
        seed = self.seed or 0
        train = View.of(s.train_x, s.train_y, s.train_index)
        train = train.take(stratified_subset(train.labels, self.train_fraction, seed))
        test = View.of(s.test_x, s.test_y, s.test_index)
        test = test.take(stratified_subset(test.labels, self.test_fraction, seed + 1))
        if self.folds:  # fold k validates, the other folds train; the test split stays apart
            tr, va = stratified_kfold(train.labels, self.folds, self.fold, seed)
            train, val = train.take(tr), train.take(va)
        elif self.val_size:
            tr, va = stratified_holdout(train.labels, self.val_size, seed + 2)
            val = train.take(va)
            if not self.merge_val_into_train:
                train = train.take(tr)
        else:
            val = test  # the studies we reproduce validate on the test split
        parts = {"train": train, "val": val, "test": test}
        self._eval_sizes = {k: len(parts[k].labels) for k in ("val", "test")}
        if self.world > 1:  # each rank keeps only its evaluation shard; training needs every image
            parts = self._shard_eval(parts)
        device = self._target_device(sum(v.nbytes for v in {id(v): v for v in parts.values()}.values()))
        self._splits = place(parts, device)

    def _shard_eval(self, parts: dict[str, View]) -> dict[str, View]:
        """This rank's contiguous share of each evaluation split (val and test stay one view when
        val is the test split). Every image lies in exactly one shard: no rank evaluates a copy."""
        shards: dict[int, View] = {}
        for k in ("val", "test"):
            v = parts[k]
            if id(v) not in shards:
                lo, hi = shard_bounds(len(v.labels), self.rank, self.world)
                shards[id(v)] = v.take(torch.arange(lo, hi))
            parts[k] = shards[id(v)]
        return parts

    def _target_device(self, nbytes: int) -> torch.device:
        """The training device when the uint8 data takes under a quarter of its free memory (auto),
        or always (true: refused in one line when it cannot fit at all); else host memory."""
        root = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        if self.on_device in (False, "false", "off") or root.type != "cuda":
            return torch.device("cpu")
        check_shared_gpu_fits(nbytes, torch.cuda.get_device_properties(root).total_memory)
        free, _ = torch.cuda.mem_get_info(root)
        if self.on_device == "auto":
            return root if nbytes < free // 4 else torch.device("cpu")
        if nbytes > free:
            raise ConfigError(f"data.on_device=true: the {self.name} data takes {gib(nbytes)} but {root} has "
                              f"{gib(free)} free: set data.on_device=auto (host memory when it does not fit) or false")
        return root

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(images, labels) of a split, copied out of the source when it is a view of it (under DDP
        an evaluation split is this rank's shard)."""
        return self._splits[name].tensors()

    # ------------------------------------------------------------------ loaders
    def train_dataloader(self):
        v = self._splits["train"]
        overfit = self.trainer is not None and self.trainer.overfit_batches > 0
        # compiled: a short last batch would compile (and capture) a second graph inside the timed
        # epoch, so it is dropped -- a different permutation every epoch, so no image is always left out
        drop = self.static_shapes and len(v.labels) >= self.batch_size
        # the trainer's epoch draws the order, so a resumed run repeats an uninterrupted one's orders
        epoch = (lambda: self.trainer.current_epoch) if self.trainer is not None else None
        return TensorBatchLoader(v.images, v.labels, self.batch_size, shuffle=not overfit, drop_last=drop,
                                 seed=self.seed, index=v.index, rank=self.rank, world=self.world, epoch_fn=epoch)

    def _eval_loader(self, name: str) -> TensorBatchLoader:
        v = self._splits[name]
        # under DDP every rank makes the largest shard's number of steps (padding-only batches after
        # its own shard): equal step counts, every image counted once
        steps = eval_steps(self._eval_sizes[name], self.world, self.eval_batch_size) if self.world > 1 else None
        return TensorBatchLoader(v.images, v.labels, self.eval_batch_size, pad_last=self.static_shapes,
                                 index=v.index, steps=steps)

    def val_dataloader(self):
        return self._eval_loader("val")

    def test_dataloader(self):
        return self._eval_loader("test")

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        x, y = batch
        if self.trainer is not None and self.trainer.training:
            x = self.augment(x)
        if self.mean.device != x.device:
            self.mean, self.std = self.mean.to(x.device), self.std.to(x.device)
        return normalize(x, self.mean, self.std), y

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x * self.std.to(x.device) + self.mean.to(x.device)).clamp(0, 1)
