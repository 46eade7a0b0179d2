"""data=image_folder on fabricated folders: both layouts, any class count and image size, RGB and
grayscale, statistics computed once, the memory-mapped cache, sets too large for where they must
go, unreadable files, and the class count reaching the model through the config."""
from __future__ import annotations

import json
import logging
from collections import namedtuple

import pytest
import torch
from hydra.utils import instantiate

from src.cli import check_jobs
from src.datamodules import ImageClassificationDataModule, cache, decode, image_folder, views
from src.datamodules.image_folder import ImageFolder
from src.datamodules.sources import MNIST
from src.errors import ConfigError, DataError, UserError
from tests.conftest import QUICK, compose_cfg
from tests.fabricate_sets import write_folder
from train import train

THREE = {"cat": 6, "dog": 9, "frog": 12}


def _dm(root, tmp_path, test_size=0.2, split_seed=0, skip_bad_images=False, **kw):
    opts = dict(image_size=16, num_classes=3, channels=3, mean=None, std=None, verify_counts=False)
    opts.update(kw)
    source = ImageFolder(str(root), data_dir=str(tmp_path), test_size=test_size, split_seed=split_seed,
                         skip_bad_images=skip_bad_images)
    dm = ImageClassificationDataModule(source, data_dir=str(tmp_path), cache_dir=str(tmp_path / "cache"), **opts)
    dm.setup()
    return dm


@pytest.fixture
def split_layout(tmp_path):
    """train/ and val/ (any name of TEST_DIRS), non-square 40x30 images, 3 classes of unequal size."""
    write_folder(tmp_path / "set" / "train", THREE, seed=1)
    write_folder(tmp_path / "set" / "val", {"cat": 2, "dog": 3, "frog": 4}, seed=2)
    return tmp_path / "set"


def test_train_and_test_folders(split_layout, tmp_path):
    dm = _dm(split_layout, tmp_path)
    x, y = dm.split("train")
    assert dm.classes == ["cat", "dog", "frog"]
    assert x.dtype == torch.uint8 and tuple(x.shape) == (27, 3, 16, 16)  # resized (squashed) to 16x16
    assert torch.bincount(y).tolist() == [6, 9, 12]
    assert torch.bincount(dm.split("test")[1]).tolist() == [2, 3, 4]
    # the resize is torchvision's antialiased bilinear of the decoded uint8 image, done once
    first = decode.decode_file(str(split_layout / "train" / "cat" / "000.png"), False, None)
    from torchvision.transforms.v2 import functional as TF

    assert torch.equal(x[0], TF.resize(first, [16, 16], antialias=True))
    g = _dm(split_layout, tmp_path, grayscale=True, channels=1, image_size=20)
    assert tuple(g.split("train")[0].shape) == (27, 1, 20, 20)


def test_single_folder_gets_a_stratified_seeded_test_split(tmp_path):
    write_folder(tmp_path / "flat", {"a": 10, "b": 20, "c": 30, "d": 40}, size=(24, 24))
    dm = _dm(tmp_path / "flat", tmp_path, num_classes=4, test_size=0.2)
    ty, vy = dm.split("train")[1], dm.split("test")[1]
    assert torch.bincount(vy).tolist() == [2, 4, 6, 8] and torch.bincount(ty).tolist() == [8, 16, 24, 32]
    again = _dm(tmp_path / "flat", tmp_path, num_classes=4, test_size=0.2, seed=7)  # the run's seed: same split
    assert torch.equal(again.split("test")[0], dm.split("test")[0])
    other = _dm(tmp_path / "flat", tmp_path, num_classes=4, test_size=0.2, split_seed=1)
    assert not torch.equal(other.split("test")[0], dm.split("test")[0])
    counted = _dm(tmp_path / "flat", tmp_path, num_classes=4, test_size=10)  # a count of images
    assert len(counted.split("test")[1]) == 10
    # train/ alone (no test folder) is split the same way
    write_folder(tmp_path / "only" / "train", {"a": 5, "b": 5}, size=(24, 24))
    assert len(_dm(tmp_path / "only", tmp_path, num_classes=2, test_size=0.2).split("test")[1]) == 2


def test_mean_std_come_from_the_training_split_once(tmp_path, monkeypatch):
    write_folder(tmp_path / "flat", {"dark": 8, "light": 8}, size=(12, 12))
    dm = _dm(tmp_path / "flat", tmp_path, num_classes=2, test_size=0.25)
    x = dm.split("train")[0].double() / 255
    assert dm.mean.flatten().tolist() == pytest.approx(x.mean((0, 2, 3)).tolist(), abs=1e-6)
    assert dm.std.flatten().tolist() == pytest.approx(x.std((0, 2, 3), correction=0).tolist(), abs=1e-6)
    record = json.loads(next((tmp_path / "cache").glob("*.json")).read_text())
    assert list(record["stats"]) == ["test_size=0.25,split_seed=0"]

    def boom(*a, **k):
        raise AssertionError("statistics computed again")

    monkeypatch.setattr(image_folder, "channel_stats", boom)
    again = _dm(tmp_path / "flat", tmp_path, num_classes=2, test_size=0.25)
    assert torch.equal(again.mean, dm.mean)
    given = _dm(tmp_path / "flat", tmp_path, num_classes=2, test_size=0.25, mean=[0.5], std=[0.25])
    assert given.mean.flatten().tolist() == [0.5] * 3


def test_decoded_set_is_a_memory_mapped_file(split_layout, tmp_path, monkeypatch):
    dm = _dm(split_layout, tmp_path)
    files = sorted((tmp_path / "cache").glob("*.u8"))
    assert sorted(f.stat().st_size for f in files) == [9 * 3 * 16 * 16, 27 * 3 * 16 * 16]  # val/ and train/
    # a split that would take over half the free memory stays a view of the file: batches gather from it
    monkeypatch.setattr(views, "available_memory", lambda: 1000)
    lazy = _dm(split_layout, tmp_path, val_size=5)
    assert lazy._splits["train"].index is not None
    seen = torch.cat([x for x, _ in lazy.val_dataloader()])
    assert torch.equal(seen, lazy.split("val")[0]) and len(seen) == 5
    xs, ys = zip(*lazy.train_dataloader())
    assert sorted(torch.cat(ys).tolist()) == sorted(lazy.split("train")[1].tolist())


def test_too_large_for_the_cache_disk_or_memory_is_refused_in_one_line(split_layout, tmp_path, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(cache.shutil, "disk_usage", lambda p: usage(10**6, 10**6 - 5000, 5000))
    with pytest.raises(DataError) as e:
        _dm(split_layout, tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and "decodes to 0.00 GiB" in msg and "paths.cache_dir" in msg and "image_size" in msg
    assert not list((tmp_path / "cache").glob("*.u8"))  # refused before a file was written
    monkeypatch.setattr(cache, "available_memory", lambda: 1000)
    dm = ImageClassificationDataModule(ImageFolder(str(split_layout)), data_dir=str(tmp_path), cache_dir=None,
                                       image_size=64, num_classes=3, mean=None, std=None)
    with pytest.raises(DataError, match=r"decodes to .* GiB but only .* of memory is available: set paths.cache_dir"):
        dm.setup()


def test_unreadable_image_is_named_or_skipped_and_counted(tmp_path, caplog):
    write_folder(tmp_path / "flat", {"a": 6, "b": 6}, size=(16, 16))
    (tmp_path / "flat" / "b" / "003.png").write_bytes(b"\x89PNG broken")
    (tmp_path / "flat" / "a" / "001.png").write_bytes(b"")
    with pytest.raises(DataError) as e:
        _dm(tmp_path / "flat", tmp_path, num_classes=2, test_size=2)
    msg = str(e.value)
    assert "\n" not in msg and "a/001.png" in msg and "(and 1 more)" in msg and "data.skip_bad_images=true" in msg
    with caplog.at_level(logging.WARNING):
        dm = _dm(tmp_path / "flat", tmp_path, num_classes=2, test_size=2, skip_bad_images=True)
    assert "skipped 2 unreadable image(s)" in caplog.text
    assert len(dm.split("train")[1]) + len(dm.split("test")[1]) == 10
    caplog.clear()
    with caplog.at_level(logging.WARNING):  # from the cache: said again, and still refused without the flag
        _dm(tmp_path / "flat", tmp_path, num_classes=2, test_size=2, skip_bad_images=True)
    assert "skipped 2 unreadable image(s)" in caplog.text
    with pytest.raises(DataError, match="a/001.png"):
        _dm(tmp_path / "flat", tmp_path, num_classes=2, test_size=2)


def test_bad_layouts_and_options_are_one_line(tmp_path):
    with pytest.raises(DataError, match="image folder .*nowhere not found: point data.root"):
        ImageFolder("nowhere", data_dir=str(tmp_path))
    with pytest.raises(ConfigError, match="needs data.root="):
        ImageFolder(None, data_dir=str(tmp_path))
    write_folder(tmp_path / "s" / "train", {"a": 3, "b": 3}, size=(16, 16))
    write_folder(tmp_path / "s" / "test", {"a": 1, "c": 1}, size=(16, 16))
    with pytest.raises(DataError, match="different class folders"):
        _dm(tmp_path / "s", tmp_path, num_classes=2)
    write_folder(tmp_path / "two", {"a": 3, "b": 3}, size=(16, 16))
    with pytest.raises(ConfigError, match="has 2 classes .* but data.num_classes=3"):
        _dm(tmp_path / "two", tmp_path, num_classes=3)


def test_config_interpolates_classes_channels_and_size_into_the_model(split_layout, tmp_path):
    """data.root relative to paths.data_dir; num_classes counted from the folders at composition."""
    cfg = compose_cfg(["data=image_folder", "data.root=set", "data.grayscale=true", "data.image_size=28",
                       "model=lenet5", *QUICK], tmp_path / "run", tmp_path)
    assert (cfg.data.num_classes, cfg.data.channels, cfg.data.image_size) == (3, 1, 28)
    assert cfg.data.mean is None and cfg.data.std is None
    model = instantiate(cfg.model)
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 3)
    assert train(cfg) >= 0  # end to end on the CPU
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["status"] == "completed"


def test_command_line_without_a_root_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    with pytest.raises(UserError) as e:
        check_jobs(["data=image_folder", f"hydra.run.dir={tmp_path}/out"])
    assert "\n" not in str(e.value) and "data.root" in str(e.value)


def test_formats_beyond_png_and_jpeg(tmp_path):
    """BMP and TIFF go through PIL (torchvision.io does not decode them), JPEG and PNG through torchvision."""
    for ext, k in (("bmp", 0), ("tif", 1), ("jpg", 2), ("png", 3)):
        write_folder(tmp_path / "tmp", {f"class{k}": 2}, size=(20, 20), ext=ext, seed=k)
    dm = _dm(tmp_path / "tmp", tmp_path, num_classes=4, test_size=4)
    assert torch.bincount(dm.split("train")[1]).tolist() == [1, 1, 1, 1]
    import numpy as np
    from PIL import Image

    bmp = torch.from_numpy(np.array(Image.open(tmp_path / "tmp" / "class0" / "000.bmp"))).permute(2, 0, 1)
    assert torch.equal(decode.decode_file(str(tmp_path / "tmp" / "class0" / "000.bmp"), False, None), bmp)


def test_data_that_cannot_fit_the_gpu_is_refused_with_on_device_true(monkeypatch, tmp_path):
    """No GPU needed: the trainer's device and the GPU's memory are faked."""
    from types import SimpleNamespace

    dm = ImageClassificationDataModule(MNIST(), data_dir=str(tmp_path), channels=1, image_size=28, on_device=True)
    dm.trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device("cuda", 0)))
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda d: SimpleNamespace(total_memory=2**34))
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda d: (2**30, 2**34))
    with pytest.raises(ConfigError) as e:
        dm._target_device(3 * 2**30)
    assert "\n" not in str(e.value) and "3.00 GiB" in str(e.value) and "data.on_device=auto" in str(e.value)
    assert dm._target_device(2**29) == torch.device("cuda", 0)
    dm.on_device = "auto"  # auto: host memory when it takes over a quarter of the free memory
    assert dm._target_device(2**29) == torch.device("cpu") and dm._target_device(2**27) == torch.device("cuda", 0)


def test_a_class_without_training_images_is_refused_or_kept_for_training(tmp_path, caplog):
    """Issue 23.5: every training image of 'zebras' skipped as unreadable trained silently (its
    confusion row all wrong); one zebra in a cut split went to the test split alone."""
    write_folder(tmp_path / "set" / "train", {"cats": 16, "dogs": 16}, seed=1)
    (tmp_path / "set" / "train" / "zebras").mkdir()
    for i in range(3):
        (tmp_path / "set" / "train" / "zebras" / f"{i}.png").write_bytes(b"not a png")
    write_folder(tmp_path / "set" / "test", {"cats": 4, "dogs": 4, "zebras": 2}, seed=2)
    with pytest.raises(DataError) as e:
        _dm(tmp_path / "set", tmp_path, skip_bad_images=True)
    line = str(e.value)
    assert "'zebras' has no training image" in line and "train 0, test 2" in line and "\n" not in line
    # a single folder with one zebra: cut 20 % per class, the zebra stays in training, said once
    write_folder(tmp_path / "flat", {"cats": 16, "dogs": 16, "zebras": 1}, size=(24, 24))
    with caplog.at_level(logging.WARNING):
        dm = _dm(tmp_path / "flat", tmp_path, test_size=0.2)
    assert torch.bincount(dm.split("train")[1], minlength=3).tolist()[2] == 1
    assert torch.bincount(dm.split("test")[1], minlength=3).tolist()[2] == 0
    assert sum("kept one image of zebras" in r.getMessage() for r in caplog.records) == 1
