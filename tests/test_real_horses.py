"""The real horses-or-humans (../shared/datasets/horse-or-human, 1,027 + 256 PNGs of 300x300): counts
and class order, the resize done once at decode time, the cache (a second load decodes nothing, a
changed file re-decodes its split), the same set read as a generic image folder, and a short CPU
training run that learns."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from torchvision.io import ImageReadMode, decode_image, read_file
from torchvision.transforms.v2 import functional as TF

from src.datamodules import ImageClassificationDataModule, decode
from src.datamodules.image_folder import ImageFolder
from src.datamodules.sources import HorsesOrHumans
from tests.conftest import ROOT, compose_cfg

pytestmark = [pytest.mark.slow, pytest.mark.real_data]


def horses_dir() -> Path | None:
    for cand in (os.environ.get("DATA_DIR"), ROOT.parent / "shared" / "datasets"):
        if cand and (Path(cand) / "horse-or-human" / "validation" / "humans").is_dir():
            return Path(cand)
    if os.environ.get("CI"):
        pytest.fail("CI must have the real datasets: set DATA_DIR=../shared/datasets")
    return None


@pytest.fixture(scope="module")
def data() -> Path:
    d = horses_dir()
    if d is None:
        pytest.skip("real horses-or-humans not found (set DATA_DIR)")
    return d


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("horses_cache")


@pytest.fixture
def decodes(monkeypatch) -> list:
    """Every call of the one image decoder, by file."""
    calls = []
    real = decode.decode_file

    def counted(path, *a, **k):
        calls.append(path)
        return real(path, *a, **k)

    monkeypatch.setattr(decode, "decode_file", counted)
    return calls


def load(data_dir, cache_dir, root=None, **kw) -> ImageClassificationDataModule:
    """horses-or-humans through its own source, or (root given) read as a generic image folder."""
    opts = dict(image_size=150, num_classes=2, verify_counts=True)
    opts.update(kw)
    source = HorsesOrHumans() if root is None else ImageFolder(root, data_dir=str(data_dir))
    dm = ImageClassificationDataModule(source, data_dir=str(data_dir), cache_dir=str(cache_dir), **opts)
    dm.setup()
    return dm


def test_counts_classes_and_the_resize_at_decode_time(data, cache, decodes):
    dm = load(data, cache)
    assert len(decodes) == 1_283  # every file once
    (tx, ty), (vx, vy) = dm.split("train"), dm.split("test")
    assert dm.classes == ["horses", "humans"]
    assert torch.bincount(ty).tolist() == [500, 527] and torch.bincount(vy).tolist() == [128, 128]
    assert tx.dtype == torch.uint8 and tuple(tx.shape) == (1_027, 3, 150, 150) and tuple(vx.shape[1:]) == (3, 150, 150)
    # decoded and resized once from the 300x300 original, antialiased bilinear on the uint8 tensor
    first = sorted((data / "horse-or-human" / "train" / "horses").iterdir())[0]
    original = decode_image(read_file(str(first)), mode=ImageReadMode.RGB)
    assert tuple(original.shape) == (3, 300, 300)
    assert torch.equal(tx[0], TF.resize(original, [150, 150], antialias=True))
    assert dm.split("val")[0] is vx  # validation is the test split (data.val_size=0)


def test_grayscale_100_is_the_binary_activation_input(data, cache):
    dm = load(data, cache, image_size=100, grayscale=True, channels=1)
    assert tuple(dm.split("train")[0].shape) == (1_027, 1, 100, 100)
    assert tuple(dm.split("test")[0].shape) == (256, 1, 100, 100)


def test_second_load_decodes_nothing(data, cache, decodes):
    first = load(data, cache)  # decoded by the first test, or here when run alone
    decodes.clear()
    again = load(data, cache)
    assert decodes == []
    assert torch.equal(first.split("train")[0], again.split("train")[0])


def test_a_changed_file_re_decodes_its_split(data, cache, decodes, tmp_path):
    """A symlinked copy of the set shares the cache (same names, sizes, times); replacing one
    validation file re-decodes the validation split only, and the new pixels are what is loaded."""
    src = (data / "horse-or-human").resolve()  # CI's DATA_DIR is relative: links must not dangle
    for f in src.rglob("*.png"):
        link = tmp_path / "horse-or-human" / f.relative_to(src)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(f)
    load(data, cache)  # the cache filled from the original (already, unless this test runs alone)
    decodes.clear()
    before = load(tmp_path, cache)
    assert decodes == []
    victim = tmp_path / "horse-or-human" / "validation" / "humans" / sorted(os.listdir(src / "validation" / "humans"))[0]
    victim.unlink()
    shutil.copyfile(sorted((src / "train" / "horses").iterdir())[3], victim)  # a horse where a human was
    after = load(tmp_path, cache)
    assert len(decodes) == 256 and all("validation" in p for p in decodes)
    row = 128  # the first human of the validation split
    assert not torch.equal(after.split("test")[0][row], before.split("test")[0][row])
    assert torch.equal(after.split("test")[0][row], before.split("train")[0][3])
    assert torch.equal(after.split("train")[0], before.split("train")[0])


def test_read_as_a_generic_image_folder(data, cache, tmp_path):
    cfg = compose_cfg(["data=image_folder", "data.root=horse-or-human", "data.image_size=150"], tmp_path, data, cache)
    assert cfg.data.num_classes == 2 and cfg.data.channels == 3
    folder = load(data, cache, root="horse-or-human", mean=None, std=None, verify_counts=False)
    named = load(data, cache)
    assert folder.classes == named.classes == ["horses", "humans"]
    for split in ("train", "test"):
        assert torch.equal(folder.split(split)[1], named.split(split)[1])
        assert torch.equal(folder.split(split)[0], named.split(split)[0])
    mean = folder.mean.flatten().tolist()  # computed from the 1,027 training images
    assert all(0.4 < m < 0.6 for m in mean) and all(0.2 < s < 0.35 for s in folder.std.flatten().tolist())


def test_lenet5_learns_horses_from_humans_on_the_cpu(data, tmp_path):
    """LeNet-5 at 64x64, Adam, 5 epochs (about 10 s on 2 free cores, 0.9 s per epoch; 92.2 %, best
    93.8 %): validation accuracy (the validation split, 256 images, half of each class) clearly
    above the 50 % of chance."""
    from train import train

    cfg = compose_cfg(["model=lenet5", "data=horses_or_humans", "data.image_size=64", "optimizer=adam",
                       "optimizer.lr=0.001", "scheduler=constant", "trainer.max_epochs=5", "seed=0",
                       "~callbacks.progress_bar", "data.verify_counts=true"], tmp_path, data)
    acc = train(cfg)
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["status"] == "completed" and acc >= 0.75 and m["val/acc_best"] >= 0.8, m
    print(f"LeNet-5 horses-or-humans 64x64, 5 epochs: validation acc {acc:.4f} (best {m['val/acc_best']:.4f}), "
          f"epoch {m['epoch_time_mean_s']:.1f} s")
