"""Each on-disk format loads through the one DataModule; bad data is refused in one line."""
from __future__ import annotations

import pytest
import torch

from src.datamodules import ImageClassificationDataModule
from src.datamodules import decode, sources
from src.errors import ConfigError, DataError
from tests import fabricate

SHAPES = {"mnist": (1, 28, 28), "fashion_mnist": (1, 28, 28), "cifar10": (3, 32, 32)}


def _dm(name, root, tmp_path, **kw):
    defaults = dict(channels=3, image_size=32, num_classes=10, verify_counts=False)
    if name in ("mnist", "fashion_mnist"):
        defaults.update(channels=1, image_size=28)
    if name == "horses_or_humans":
        defaults.update(image_size=40, num_classes=2)
    defaults.update(kw)
    dm = ImageClassificationDataModule(name, data_dir=str(root), cache_dir=str(tmp_path / "cache"), **defaults)
    dm.setup("fit")
    return dm


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10"])
def test_formats_load_as_uint8_tensors(name, fake_data, tmp_path):
    dm = _dm(name, fake_data, tmp_path)
    x, y = dm.split("train")
    assert x.dtype == torch.uint8 and tuple(x.shape[1:]) == SHAPES[name]
    assert y.dtype == torch.int64 and set(y.tolist()) == set(range(10))
    assert len(dm.split("test")[1]) == 40
    assert len(dm.classes) == 10


def test_cifar_both_layouts_give_the_same_images_and_labels(tmp_path):
    """The pickled batches and a lossless (PNG) image tree of the same pixels must agree exactly,
    including the label order implied by the sorted class folders."""
    arrays = fabricate.cifar_arrays(n_train=50, n_test=20, seed=3)
    fabricate.write_cifar_pickles(tmp_path / "p", arrays)
    fabricate.write_cifar_tree(tmp_path / "t", arrays, ext="png")
    a = sources.load_cifar10(tmp_path / "p", download=False)
    b = sources.load_cifar10(tmp_path / "t", download=False)
    assert a.classes == b.classes == fabricate.CIFAR_CLASSES
    for xa, ya, xb, yb in ((a.train_x, a.train_y, b.train_x, b.train_y), (a.test_x, a.test_y, b.test_x, b.test_y)):
        # the tree loses the interleaving across classes: compare sorted by (label, original order)
        order = torch.argsort(ya, stable=True)
        assert torch.equal(ya[order], yb)
        assert torch.equal(xa[order], xb)
    # and the pickle layout decodes to the pixels that were written
    assert torch.equal(a.train_x[0].permute(1, 2, 0), torch.from_numpy(arrays["train"][0][0]))


def test_horses_are_resized_and_grayscale_option(fake_data, tmp_path):
    dm = _dm("horses_or_humans", fake_data, tmp_path, image_size=40)
    x, y = dm.split("train")
    assert tuple(x.shape[1:]) == (3, 40, 40) and set(y.tolist()) == {0, 1}
    assert dm.classes == ["horses", "humans"]
    assert len(dm.split("test")[1]) == 6  # validation/ is the test split
    g = _dm("horses_or_humans", fake_data, tmp_path, image_size=24, grayscale=True, channels=1)
    assert tuple(g.split("train")[0].shape[1:]) == (1, 24, 24)


def test_decoded_images_are_cached(fake_data, tmp_path, monkeypatch):
    first = _dm("cifar10", fake_data, tmp_path).split("train")[0]
    assert list((tmp_path / "cache").glob("*.u8")) and list((tmp_path / "cache").glob("*.json"))

    def boom(*a, **k):
        raise AssertionError("decoded again despite the cache")

    monkeypatch.setattr(decode, "decode_file", boom)
    again = _dm("cifar10", fake_data, tmp_path).split("train")[0]
    assert torch.equal(first, again)


def test_fractions_and_holdout_are_stratified(fake_data, tmp_path):
    dm = _dm("mnist", fake_data, tmp_path, train_fraction=0.5, test_fraction=0.5, val_size=20)
    tx, ty = dm.split("train")
    vx, vy = dm.split("val")
    assert len(vy) == 20 and len(ty) == 40 and len(dm.split("test")[1]) == 20
    assert torch.bincount(vy).tolist() == [2] * 10 and torch.bincount(ty).tolist() == [4] * 10
    merged = _dm("mnist", fake_data, tmp_path, train_fraction=0.5, val_size=20, merge_val_into_train=True)
    assert len(merged.split("train")[1]) == 60 and len(merged.split("val")[1]) == 20


def test_val_defaults_to_the_test_split(fake_data, tmp_path):
    dm = _dm("mnist", fake_data, tmp_path)
    assert dm.split("val")[0] is dm.split("test")[0]


@pytest.mark.parametrize("bad", [0, -0.1, 1.5, "half"])
def test_bad_fraction_is_refused_before_loading(bad, tmp_path):
    with pytest.raises(ConfigError, match=r"train_fraction.*0 < f <= 1"):
        ImageClassificationDataModule("mnist", data_dir=str(tmp_path / "nowhere"), train_fraction=bad)


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10", "horses_or_humans"])
def test_missing_dataset_with_download_off(name, tmp_path):
    with pytest.raises(DataError) as e:
        _dm(name, tmp_path / "empty", tmp_path, download=False)
    msg = str(e.value)
    assert "\n" not in msg and str(tmp_path / "empty") in msg and "DATA_DIR" in msg and "paths.data_dir" in msg


def test_download_failure_is_one_line(tmp_path, monkeypatch):
    """No network: torchvision's urllib error becomes one line naming the folder and the fix."""
    import urllib.request

    def offline(*a, **k):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    for name in ("cifar10", "horses_or_humans"):
        with pytest.raises(DataError, match="download failed") as e:
            _dm(name, tmp_path / "empty", tmp_path, download="auto")
        assert "\n" not in str(e.value)


def test_unreadable_image_names_its_path(tmp_path):
    fabricate.write_horses(tmp_path, per_class=2, size=16)
    bad = tmp_path / "horse-or-human" / "train" / "horses" / "horse00-0.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(DataError, match="unreadable image .*horse00-0.png"):
        _dm("horses_or_humans", tmp_path, tmp_path, image_size=16)
