"""Each on-disk format loads through the one DataModule; bad data is refused in one line."""
from __future__ import annotations

import pytest
import torch

from src.datamodules import ImageClassificationDataModule
from src.datamodules import decode, sources
from src.datamodules.sources import Request
from src.errors import ConfigError, DataError
from tests import fabricate
from tests.conftest import ROOT

SHAPES = {"mnist": (1, 28, 28), "fashion_mnist": (1, 28, 28), "cifar10": (3, 32, 32)}
SOURCES = {"mnist": sources.MNIST, "fashion_mnist": sources.FashionMNIST, "cifar10": sources.CIFAR10,
           "horses_or_humans": sources.HorsesOrHumans}


def _dm(name, root, tmp_path, **kw):
    defaults = dict(channels=3, image_size=32, num_classes=10, verify_counts=False)
    if name in ("mnist", "fashion_mnist"):
        defaults.update(channels=1, image_size=28)
    if name == "horses_or_humans":
        defaults.update(image_size=40, num_classes=2)
    defaults.update(kw)
    dm = ImageClassificationDataModule(SOURCES[name](), data_dir=str(root), cache_dir=str(tmp_path / "cache"),
                                       **defaults)
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
    a = sources.CIFAR10().load(Request(tmp_path / "p", download=False))
    b = sources.CIFAR10().load(Request(tmp_path / "t", download=False))
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
        ImageClassificationDataModule(sources.MNIST(), data_dir=str(tmp_path / "nowhere"), train_fraction=bad)


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


# ------------------------------------------------------------------ conf/data/*.yaml -> sources
def _compose_data(name, overrides, tmp_path):
    from tests.conftest import compose_cfg
    from tests.fabricate_sets import write_folder

    if not (tmp_path / "set").exists():  # for configs with a data.root (data=image_folder)
        write_folder(tmp_path / "set", {"a": 1, "b": 1}, size=(8, 8))
    cfg = compose_cfg([f"data={name}", *overrides], tmp_path / "run", tmp_path)
    if "root" in cfg.data and not any(o.startswith("data.root=") for o in overrides):
        cfg = compose_cfg([f"data={name}", "data.root=set", *overrides], tmp_path / "run", tmp_path)
    return cfg


@pytest.mark.parametrize("name", sorted(p.stem for p in (ROOT / "conf" / "data").glob("*.yaml")))
def test_every_data_config_builds_its_data_module_and_source(name, tmp_path):
    """Each conf/data/<name>.yaml composes with the real config, passes the schema and builds its
    data module around the DataSource its source: node names (no file is read): a new yaml without
    a working source fails here."""
    from src.config_schema import validate
    from src.datamodules import build_datamodule

    cfg = _compose_data(name, [], tmp_path)
    validate(cfg)
    dm = build_datamodule(cfg.data)
    assert isinstance(dm, ImageClassificationDataModule) and isinstance(dm.source, sources.DataSource)
    assert dm.source.name and cfg.data.name == name
    counts = dm.source.known_counts
    assert counts is None or (len(counts) == 2 and all(isinstance(n, int) and n > 0 for n in counts))


def _source_cases():
    from src.datamodules.cifar100_svhn import CIFAR100, SVHN
    from src.datamodules.image_folder import ImageFolder

    # (config, documented overrides, class, known (train, test) counts, what the overrides set on it)
    return [
        ("mnist", [], sources.MNIST, (60_000, 10_000), {}),
        ("fashion_mnist", [], sources.FashionMNIST, (60_000, 10_000), {}),
        ("cifar10", [], sources.CIFAR10, (50_000, 10_000), {"skip_bad_images": False}),
        ("cifar10", ["data.skip_bad_images=true"], sources.CIFAR10, (50_000, 10_000), {"skip_bad_images": True}),
        ("cifar100", [], CIFAR100, (50_000, 10_000), {"label_type": "fine"}),
        ("cifar100", ["data.label_type=coarse"], CIFAR100, (50_000, 10_000), {"label_type": "coarse"}),
        ("svhn", [], SVHN, (73_257, 26_032), {"extra": False}),
        ("svhn", ["data.svhn_extra=true"], SVHN, (73_257 + 531_131, 26_032), {"extra": True}),
        ("horses_or_humans", ["data.skip_bad_images=true"], sources.HorsesOrHumans, (1_027, 256),
         {"skip_bad_images": True}),
        ("image_folder", ["data.root=set", "data.test_size=10", "data.split_seed=3", "data.skip_bad_images=true"],
         ImageFolder, None, {"test_size": 10, "split_seed": 3, "skip_bad_images": True}),
        ("synthetic", ["data.synthetic_sizes=[7,3]"], sources.Synthetic, None, {"sizes": (7, 3)}),
    ]


@pytest.mark.parametrize("case", range(len(_source_cases())))
def test_documented_data_overrides_reach_the_source(case, tmp_path):
    from src.datamodules import build_datamodule

    name, overrides, cls, counts, attrs = _source_cases()[case]
    cfg = _compose_data(name, overrides, tmp_path)
    source = build_datamodule(cfg.data).source
    assert type(source) is cls and source.name == name and source.known_counts == counts
    assert {k: getattr(source, k) for k in attrs} == attrs
    if name == "image_folder":  # data.root relative to paths.data_dir
        assert source.root == tmp_path / "set"


def test_data_keys_that_nothing_reads_and_sources_that_are_not_built_are_refused(tmp_path):
    from omegaconf import open_dict

    from src.datamodules import build_datamodule

    cfg = _compose_data("svhn", [], tmp_path)
    with open_dict(cfg.data):
        cfg.data.extra_split = True  # read neither by the data module nor by source:
    with pytest.raises(ConfigError, match=r"data.extra_split is an option of neither .* nor its data.source"):
        build_datamodule(cfg.data)
    cfg = _compose_data("mnist", [], tmp_path)
    with open_dict(cfg.data):
        del cfg.data.source["_target_"]
    with pytest.raises(Exception) as e:
        build_datamodule(cfg.data)
    from src.cli import user_error_in

    assert "data.source must build a DataSource" in str(user_error_in(e.value))
