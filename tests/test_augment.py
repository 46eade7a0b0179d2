"""The batched crop/flip is a true per-sample RandomCrop(padding)+flip, and runs only in training."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from src.datamodules.augment import normalize, random_crop_flip
from src.datamodules.loader import TensorBatchLoader


def _all_candidates(img, pad):
    p = F.pad(img, (pad, pad, pad, pad))
    h, w = img.shape[-2:]
    out = []
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            crop = p[:, dy:dy + h, dx:dx + w]
            out += [crop, crop.flip(-1)]
    return out


def test_each_output_is_a_padded_crop_or_its_mirror():
    torch.manual_seed(0)
    x = torch.randint(0, 256, (16, 3, 8, 8), dtype=torch.uint8)
    y = random_crop_flip(x, padding=2)
    assert y.dtype == torch.uint8 and y.shape == x.shape
    for img, out in zip(x, y):
        assert any(torch.equal(out, c) for c in _all_candidates(img, 2))


def test_offsets_and_flips_differ_per_sample():
    torch.manual_seed(0)
    x = torch.arange(64, dtype=torch.uint8).view(1, 1, 8, 8).repeat(256, 1, 1, 1)
    y = random_crop_flip(x, padding=4)
    distinct = {tuple(v.flatten().tolist()) for v in y}
    assert len(distinct) > 100  # 81 offsets x 2 flips available
    mirrored = random_crop_flip(x, crop=False)
    flipped = (mirrored[:, 0, 4, 1:] < mirrored[:, 0, 4, :-1]).all(dim=1).float().mean()
    assert 0.35 < flipped < 0.65


def test_normalize_uses_channel_constants():
    x = torch.full((2, 3, 4, 4), 255, dtype=torch.uint8)
    mean = torch.tensor([0.5, 0.25, 0.0]).view(1, 3, 1, 1)
    std = torch.tensor([0.5, 0.25, 1.0]).view(1, 3, 1, 1)
    out = normalize(x, mean, std)
    assert out.dtype == torch.float32
    assert torch.allclose(out[:, :, 0, 0], torch.tensor([1.0, 3.0, 1.0]))


def test_loader_reshuffles_each_epoch_and_covers_everything():
    x = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1)
    loader = TensorBatchLoader(x, torch.arange(10), batch_size=4, shuffle=True, seed=1)
    assert len(loader) == 3
    e1 = torch.cat([b[1] for b in loader])
    e2 = torch.cat([b[1] for b in loader])
    assert sorted(e1.tolist()) == list(range(10)) and not torch.equal(e1, e2)
    again = TensorBatchLoader(x, torch.arange(10), batch_size=4, shuffle=True, seed=1)
    assert torch.equal(torch.cat([b[1] for b in again]), e1)  # reproducible from the seed
    assert len(TensorBatchLoader(x, torch.arange(10), 4, drop_last=True)) == 2


def test_augmentation_only_while_training(fake_data, tmp_path):
    from types import SimpleNamespace

    from src.datamodules import ImageClassificationDataModule
    from src.datamodules.sources import CIFAR10

    dm = ImageClassificationDataModule(CIFAR10(), data_dir=str(fake_data), cache_dir=str(tmp_path), augment="crop_flip",
                                       verify_counts=False)
    dm.setup()
    x, y = next(iter(dm.val_dataloader()))
    dm.trainer = SimpleNamespace(training=False)
    evaluated, _ = dm.on_after_batch_transfer((x, y), 0)
    assert torch.allclose(evaluated, normalize(x, dm.mean, dm.std))
    dm.trainer = SimpleNamespace(training=True)
    trained, _ = dm.on_after_batch_transfer((x, y), 0)
    assert not torch.allclose(trained, evaluated)
