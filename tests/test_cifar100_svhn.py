"""CIFAR-100 and SVHN from fabricated files in the real formats (no real copy here): labels, shapes,
the coarse labels and the extra split, the configs' published constants, and one-line errors
when the files are missing offline or corrupt."""
from __future__ import annotations

import urllib.error
import urllib.request

import numpy as np
import pytest
import torch

from src.datamodules import ImageClassificationDataModule
from src.datamodules.cifar100_svhn import CIFAR100, SVHN
from src.datamodules.sources import Request
from src.errors import ConfigError, DataError
from tests.conftest import QUICK, compose_cfg
from tests.fabricate_sets import COARSE, FINE, write_cifar100, write_svhn

SOURCES = {"cifar100": CIFAR100, "svhn": SVHN}


def load_cifar100(root, download, cache_dir=None, **options):
    return CIFAR100(**options).load(Request(root, download, cache_dir))


def load_svhn(root, download, svhn_extra=False):
    return SVHN(extra=svhn_extra).load(Request(root, download))


def test_cifar100_pickles_fine_and_coarse(tmp_path):
    arrays = write_cifar100(tmp_path)
    fine = load_cifar100(tmp_path, download=False)
    hwc, fine_y, coarse_y = arrays["train"]
    assert fine.classes == FINE and tuple(fine.train_x.shape) == (200, 3, 32, 32) and len(fine.test_y) == 100
    assert torch.equal(fine.train_x.permute(0, 2, 3, 1), torch.from_numpy(hwc))  # planar rows decoded to pixels
    assert fine.train_y.tolist() == fine_y.tolist()
    coarse = load_cifar100(tmp_path, download=False, label_type="coarse")
    assert coarse.classes == COARSE and coarse.train_y.tolist() == coarse_y.tolist()
    assert torch.equal(coarse.train_x, fine.train_x)


def test_cifar100_config_and_datamodule(tmp_path):
    write_cifar100(tmp_path)
    cfg = compose_cfg(["data=cifar100"], tmp_path / "run", tmp_path)
    assert cfg.data.num_classes == 100 and list(cfg.data.mean) == [0.5071, 0.4865, 0.4409]
    assert list(cfg.data.std) == [0.2673, 0.2564, 0.2762]
    assert compose_cfg(["data=cifar100", "data.label_type=coarse"], tmp_path / "run", tmp_path).data.num_classes == 20
    dm = ImageClassificationDataModule(CIFAR100(label_type="coarse"), data_dir=str(tmp_path), num_classes=20,
                                       verify_counts=False)
    dm.setup()
    assert len(dm.classes) == 20 and torch.bincount(dm.split("train")[1]).tolist() == [10] * 20
    with pytest.raises(DataError, match="has 200 images, expected 50000"):  # a partial copy is caught
        ImageClassificationDataModule(CIFAR100(), data_dir=str(tmp_path), num_classes=100).setup()
    with pytest.raises(ConfigError, match="label_type"):
        load_cifar100(tmp_path, download=False, label_type="medium")


def test_cifar100_image_tree_has_fine_labels_only(tmp_path):
    from tests.fabricate_sets import write_folder

    write_folder(tmp_path / "cifar-100-images" / "train", {"apple": 2, "bear": 2}, size=(32, 32))
    write_folder(tmp_path / "cifar-100-images" / "test", {"apple": 1, "bear": 1}, size=(32, 32))
    s = load_cifar100(tmp_path, download=False, cache_dir=str(tmp_path / "cache"))
    assert s.classes == ["apple", "bear"] and tuple(s.train_x.shape) == (4, 3, 32, 32)
    with pytest.raises(ConfigError, match="label_type=coarse needs the cifar-100-python pickles"):
        load_cifar100(tmp_path, download=False, label_type="coarse")


def test_svhn_mat_files_map_ten_to_zero_and_add_extra(tmp_path):
    arrays = write_svhn(tmp_path)
    s = load_svhn(tmp_path, download=False)
    x, digits = arrays["train"]
    assert tuple(s.train_x.shape) == (30, 3, 32, 32) and len(s.test_y) == 20
    assert s.train_y.tolist() == digits.tolist() and s.train_y.min() == 0  # 10 in the file is the digit 0
    assert torch.equal(s.train_x[4].permute(1, 2, 0), torch.from_numpy(x[..., 4]))
    extra = load_svhn(tmp_path, download=False, svhn_extra=True)
    assert len(extra.train_y) == 40 and torch.equal(extra.train_x[30:].permute(0, 2, 3, 1),
                                                      torch.from_numpy(np.moveaxis(arrays["extra"][0], 3, 0)))
    cfg = compose_cfg(["data=svhn"], tmp_path / "run", tmp_path)
    assert cfg.data.num_classes == 10 and list(cfg.data.mean) == [0.4377, 0.4438, 0.4728]
    dm = ImageClassificationDataModule(SVHN(extra=True), data_dir=str(tmp_path))
    with pytest.raises(DataError, match="has 40 images, expected 604388"):
        dm.setup()


@pytest.mark.parametrize("name", ["cifar100", "svhn"])
def test_missing_offline_is_one_line(name, tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    with pytest.raises(DataError) as e:
        ImageClassificationDataModule(SOURCES[name](), data_dir=str(empty),
                                      num_classes=100 if name == "cifar100" else 10, download=False).setup()
    msg = str(e.value)
    assert "\n" not in msg and str(empty) in msg and "DATA_DIR" in msg and "data.download=false" in msg

    def offline(*a, **k):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(DataError, match="download failed") as e:
        ImageClassificationDataModule(SOURCES[name](), data_dir=str(empty),
                                      num_classes=100 if name == "cifar100" else 10, download="auto").setup()
    assert "\n" not in str(e.value)


def test_corrupt_files_are_named(tmp_path):
    write_cifar100(tmp_path)
    (tmp_path / "cifar-100-python" / "test").write_bytes(b"\x80\x04garbage")
    with pytest.raises(DataError, match=r"cifar-100-python/test is incomplete or corrupt"):
        load_cifar100(tmp_path, download=False)
    write_svhn(tmp_path)
    (tmp_path / "SVHN" / "train_32x32.mat").write_bytes(b"MATLAB 5.0 truncated")
    with pytest.raises(DataError, match=r"train_32x32.mat is incomplete or corrupt"):
        load_svhn(tmp_path, download=False)


def test_coarse_cifar100_trains_with_20_outputs(tmp_path):
    """data.label_type=coarse reaches the model and the metrics through data.num_classes (20)."""
    import json

    import pandas as pd

    from train import train

    write_cifar100(tmp_path / "data")
    cfg = compose_cfg(["data=cifar100", "data.label_type=coarse", "model=lenet5", *QUICK], tmp_path, tmp_path / "data")
    train(cfg)
    m = json.loads((tmp_path / "metrics.json").read_text())
    # LeNet-5 on 3 channels: 456 + 2,416 + 48,120 + 10,164 conv/fc weights, and 84 x 20 + 20 for the output
    assert m["status"] == "completed" and m["params"] == 456 + 2_416 + 48_120 + 10_164 + 84 * 20 + 20
    assert pd.read_csv(tmp_path / "test_confusion.csv", index_col=0).shape == (20, 20)
