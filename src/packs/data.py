"""The data of a pack: every member's own data module (its seed draws its batch order, and its
subset, hold-out or fold where those are seeded), read once where they agree.

Members whose splits do not depend on the seed (the whole training split, validation on the test
split: the studies' default) share one copy of the data; only their batch orders differ. Their
evaluation batches are then one batch for all members (``shared_eval``), which the stacked model
takes once. Augmentation and normalisation happen in the pack's training step, per member and
inside that member's random stream (src/packs/rng.py); batches arrive here as uint8.
"""
from __future__ import annotations

import lightning as L
import torch

from src.datamodules.image_classification import ImageClassificationDataModule

def _seeded_splits(dm: ImageClassificationDataModule) -> bool:
    return dm.train_fraction < 1 or dm.test_fraction < 1 or bool(dm.val_size) or bool(dm.folds)


class PackLoader:
    """Member loaders zipped: batches [K, B, ...] and labels [K, B]."""

    def __init__(self, loaders: list):
        lengths = {len(lo) for lo in loaders}
        if len(lengths) != 1:
            raise ValueError(f"the members' loaders differ in length ({sorted(lengths)}): their splits differ in size")
        self.loaders = loaders

    def __len__(self) -> int:
        return len(self.loaders[0])

    def __iter__(self):
        for parts in zip(*self.loaders):
            yield torch.stack([p[0] for p in parts]), torch.stack([p[1] for p in parts])


class PackData(L.LightningDataModule):
    def __init__(self, members: list[ImageClassificationDataModule]):
        super().__init__()
        self.members = members
        self.lead = members[0]
        self.shared_eval = False

    # SpeedUp (src/lit/speed.py) sets static_shapes on the trainer's data module when compiling
    @property
    def static_shapes(self) -> bool:
        return self.lead.static_shapes

    @static_shapes.setter
    def static_shapes(self, value: bool) -> None:
        for dm in self.members:
            dm.static_shapes = value

    def setup(self, stage: str | None = None) -> None:
        for dm in self.members:
            dm.trainer = self.trainer  # their loaders read the trainer's epoch (resume draws the same orders)
        self.lead.setup(stage)
        for dm in self.members[1:]:
            if dm._splits:
                continue
            if _seeded_splits(dm):
                dm.setup(stage)  # its own subset / hold-out / fold: its own copy
                continue
            # the same images in the same splits: share the lead's tensors, keep the own seed (batch order)
            dm._splits, dm.classes, dm._eval_sizes = self.lead._splits, self.lead.classes, self.lead._eval_sizes
            dm.mean, dm.std, dm.rank, dm.world = self.lead.mean, self.lead.std, self.lead.rank, self.lead.world
        self.shared_eval = all(dm._splits["val"] is self.lead._splits["val"] and
                               dm._splits["test"] is self.lead._splits["test"] for dm in self.members)

    def train_dataloader(self):
        return PackLoader([dm.train_dataloader() for dm in self.members])

    def val_dataloader(self):
        return self.lead.val_dataloader() if self.shared_eval else PackLoader([dm.val_dataloader() for dm in self.members])

    def test_dataloader(self):
        return self.lead.test_dataloader() if self.shared_eval else PackLoader([dm.test_dataloader() for dm in self.members])

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        return batch  # uint8: the pack's steps augment and normalise per member
