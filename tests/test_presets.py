"""Regularisers (augmentation presets, input noise, early stopping) and the study presets in
conf/experiment/."""
from __future__ import annotations

import json
import math
import re
import shlex
from functools import partial
from pathlib import Path

import pytest
import torch
from torch import nn

from tests.conftest import CONF, QUICK, compose_cfg
from train import train


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def _metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


# ============================================================================ regularisers
AUGMENTS = ["none", "flip", "crop_flip", "scale_rotate", "crop_flip_scale_rotate"]


@pytest.mark.parametrize("name", AUGMENTS[1:])
def test_augment_preset_keeps_shape_and_differs_per_sample(name):
    from src.datamodules.augment import build_augment

    torch.manual_seed(0)
    img = torch.randint(0, 256, (1, 3, 12, 12), dtype=torch.uint8)
    x = img.repeat(64, 1, 1, 1)
    out = build_augment(name, padding=2)(x)
    assert out.shape == x.shape and out.dtype == torch.uint8 and out.device == x.device
    assert len({tuple(o.flatten().tolist()) for o in out}) > (1 if name == "flip" else 16)
    assert torch.equal(build_augment("none")(x), x)


def test_augment_presets_are_one_list():
    """build_augment's presets, AUGMENT_PRESETS (the schema's data.augment choices) and AUGMENTS agree."""
    from src.config_schema import DataOptions
    from src.datamodules.augment import AUGMENT_PRESETS, build_augment
    from src.errors import ConfigError

    schema = DataOptions.__dataclass_fields__["augment"].metadata["choices"]
    schema = schema() if callable(schema) else schema  # read lazily from augment.py (src/config_schema.py)
    assert tuple(AUGMENTS) == AUGMENT_PRESETS == schema
    with pytest.raises(ConfigError, match=re.escape(f"choose one of {', '.join(AUGMENT_PRESETS)}") + "$"):
        build_augment("crop")


def test_scale_rotate_geometry():
    from src.datamodules.augment import random_scale_rotate, scale_rotate

    x = torch.randint(0, 256, (3, 2, 8, 8), dtype=torch.uint8)
    same = scale_rotate(x, torch.zeros(3), torch.ones(3))
    assert torch.equal(same, x)
    quarter = scale_rotate(x, torch.full((3,), math.pi / 2), torch.ones(3))
    assert torch.equal(quarter, torch.rot90(x, 1, (2, 3)))
    shrunk = scale_rotate(x, torch.zeros(3), torch.full((3,), 0.5))
    assert (shrunk[..., 0, :] == 0).all() and (shrunk[..., :, -1] == 0).all()  # zoom out: zeros at the border
    assert torch.equal(random_scale_rotate(x, degrees=0.0, scale=(1.0, 1.0)), x)


def test_scale_rotate_runs_in_the_datamodule_in_training_only(fake_data, tmp_path):
    from types import SimpleNamespace

    from src.datamodules import ImageClassificationDataModule
    from src.datamodules.augment import normalize
    from src.datamodules.sources import CIFAR10

    dm = ImageClassificationDataModule(CIFAR10(), data_dir=str(fake_data), cache_dir=str(tmp_path),
                                       augment="scale_rotate", verify_counts=False)
    dm.setup()
    x, y = next(iter(dm.val_dataloader()))
    dm.trainer = SimpleNamespace(training=False)
    assert torch.allclose(dm.on_after_batch_transfer((x, y), 0)[0], normalize(x, dm.mean, dm.std))
    dm.trainer = SimpleNamespace(training=True)
    assert not torch.allclose(dm.on_after_batch_transfer((x, y), 0)[0], normalize(x, dm.mean, dm.std))
    # the ranges come from the data config: no rotation and no zoom leave the batch as it was
    still = ImageClassificationDataModule(CIFAR10(), data_dir=str(fake_data), cache_dir=str(tmp_path),
                                          augment="scale_rotate", rotate_degrees=0, zoom=[1.0, 1.0],
                                          verify_counts=False)
    still.trainer = SimpleNamespace(training=True)
    assert torch.equal(still.on_after_batch_transfer((x, y), 0)[0], normalize(x, dm.mean, dm.std))


def test_input_noise_changes_training_inputs_only():
    from src.lit import ClassifierModule

    seen = []

    class Recorder(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(16, 3)

        def forward(self, x):
            seen.append(x.detach().clone())
            return self.fc(x.flatten(1))

    module = ClassifierModule(Recorder(), optimizer=partial(torch.optim.SGD, lr=0.1), num_classes=3,
                              input_noise_std=0.5, log_images=False)
    torch.manual_seed(0)
    x, y = torch.randn(256, 1, 4, 4), torch.randint(0, 3, (256,))
    module.training_step((x, y), 1)  # batch 1: no image-grid logging, which needs a trainer
    module.validation_step((x, y), 0)
    module.test_step((x, y), 0)
    trained, validated, tested = seen
    noise = trained - x
    assert noise.std().item() == pytest.approx(0.5, rel=0.05) and abs(noise.mean().item()) < 0.02
    assert torch.equal(validated, x) and torch.equal(tested, x)


def test_early_stopping_config_keeps_the_default_callbacks(tmp_path):
    default = compose_cfg([], tmp_path).callbacks
    stopping = compose_cfg(["callbacks=early_stopping"], tmp_path).callbacks
    assert set(stopping) == set(default) | {"early_stopping"}
    assert all(stopping[k] == default[k] for k in default)
    es = stopping.early_stopping
    assert es.monitor == "val/loss" and es.mode == "min" and es.patience > 0


# ============================================================================ study presets
PRESETS = ["binary_activation", "cifar_activation", "cos_study", "taylor_mnist", "pyramidnet_shakedrop", "lenet_grid",
           "regularisation_study"]
TINY = {  # what each preset needs to run a few batches on the fabricated data in seconds
    "binary_activation": ["data.image_size=32"],
    "pyramidnet_shakedrop": ["model.depth=20", "model.alpha=12"],
}


def _preset_text(name: str) -> str:
    return (CONF / "experiment" / f"{name}.yaml").read_text()


def _documented_sweeps(name: str) -> list[list[str]]:
    """The `python train.py -m ...` lines in the preset's header comment, as argument lists."""
    lines = [re.sub(r"^#\s*", "", ln).rstrip(" \\") for ln in _preset_text(name).splitlines()
             if re.match(r"^#\s+python train\.py", ln)]
    return [shlex.split(ln)[2:] for ln in lines]


def _missing_configs(name: str) -> list[str]:
    """Model/activation configs the preset or its documented sweeps name but conf/ lacks (yet)."""
    text = _preset_text(name)
    wanted = set()
    for group in ("model", "activation", "optimizer", "scheduler", "data"):
        wanted |= {(group, v) for v in re.findall(rf"override /{group}: (\w+)", text)}
        for args in _documented_sweeps(name):
            for a in args:
                if a.startswith(f"{group}="):
                    wanted |= {(group, v) for v in a.split("=", 1)[1].split(",")}
    return sorted(f"conf/{g}/{v}.yaml" for g, v in wanted if v not in _options(g))


def _skip_if_missing(name: str) -> None:
    missing = _missing_configs(name)
    if missing:
        pytest.skip(f"experiment={name} names configs that do not exist yet: {', '.join(missing)}")


def test_every_study_has_a_preset():
    assert set(PRESETS) <= set(_options("experiment"))


@pytest.mark.parametrize("name", PRESETS)
def test_preset_documents_its_sweep_and_every_job_composes(name, tmp_path):
    """Each documented command line composes and validates, every swept value included (one value
    of one key at a time, the others at their first value: the full grids are thousands of jobs)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from src.cli import check_group_choices
    from src.config_schema import validate

    assert _preset_text(name).startswith("# @package _global_\n")
    sweeps = _documented_sweeps(name)
    assert sweeps and all(s[0] == "-m" and s[1] == f"experiment={name}" for s in sweeps)
    assert any("seed=0,1,2,3,4" in s for s in sweeps[0])
    _skip_if_missing(name)
    jobs = []
    for args in sweeps:
        overrides = [a for a in args if a != "-m"]
        check_group_choices(overrides)
        values = [a.split("=", 1)[1].split(",") for a in overrides]
        base = [f"{a.split('=', 1)[0]}={v[0]}" for a, v in zip(overrides, values)]
        jobs.append(base)
        for i, (a, vs) in enumerate(zip(overrides, values)):
            key = a.split("=", 1)[0]
            jobs += [base[:i] + [f"{key}={v}"] + base[i + 1:] for v in vs[1:] if key != "seed"]
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        for job in jobs:
            cfg = compose("train", overrides=job)
            validate(cfg)
    GlobalHydra.instance().clear()


def _expect(name: str, cfg) -> None:
    """What the issue says each study fixed."""
    c = cfg
    if name == "binary_activation":
        assert (c.data.name, c.data.image_size, c.data.grayscale, c.data.channels) == ("horses_or_humans", 100, True, 1)
        assert c.model._target_.endswith("ResNet18") and c.optimizer.momentum == 0
        assert (c.data.batch_size, c.optimizer.weight_decay, c.optimizer.lr) == (8, 1.0, 0.001)
        assert list(c.scheduler.milestones) == [8, 14] and c.scheduler.gamma == 0.1 and c.trainer.max_epochs == 25
    elif name == "cifar_activation":
        assert c.data.name == "cifar10" and c.model._target_.endswith("ResNet18")
        assert (c.trainer.max_epochs, c.data.batch_size, c.optimizer.lr, c.optimizer.momentum) == (60, 128, 0.1, 0.9)
        assert not c.optimizer.nesterov and list(c.scheduler.milestones) == [30, 45] and c.scheduler.gamma == 0.1
    elif name == "cos_study":
        assert c.data.name == "cifar10" and c.trainer.max_epochs == 200 and c.model._target_.endswith("ShuffleNetV2")
    elif name == "taylor_mnist":
        assert c.data.name == "mnist" and c.model._target_.endswith("SimpleCNN") and c.model.conv_activation == "relu"
        assert c.optimizer._target_ == "torch.optim.Adam" and c.optimizer.lr == 0.001
        assert (c.data.batch_size, c.trainer.max_epochs) == (128, 12)
    elif name == "pyramidnet_shakedrop":
        assert c.model._target_.endswith("PyramidNet") and c.model.shakedrop and c.activation.name == "leakyrelu"
        assert c.optimizer._target_ == "torch.optim.SGD" and c.scheduler._target_.endswith("cosine")
        assert c.lit.label_smoothing > 0 and c.data.merge_val_into_train and c.data.val_size > 0
        assert c.data.batch_size == 256
    elif name == "regularisation_study":
        assert c.data.name == "cifar10" and c.model._target_.endswith("ResNet18") and c.lit.tta == "flip"
        assert (c.trainer.max_epochs, c.data.batch_size, c.data.policy, c.lit.mixup.alpha) == (60, 128, "none", 0.0)
    elif name == "lenet_grid":
        assert c.data.name == "fashion_mnist" and c.model._target_.endswith("LeNet5")
        assert c.optimizer._target_ == "torch.optim.SGD" and c.optimizer.momentum == 0
        assert (c.trainer.max_epochs, c.optimizer.lr, c.data.batch_size) == (5, 0.1, 40)


@pytest.mark.parametrize("name", PRESETS)
def test_preset_composes_and_trains_a_few_batches(name, fake_data, tmp_path):
    _skip_if_missing(name)
    _expect(name, compose_cfg([f"experiment={name}"], tmp_path, fake_data))
    cfg = compose_cfg([f"experiment={name}", "seed=0", *QUICK, *TINY.get(name, [])], tmp_path, fake_data)
    train(cfg)
    m = _metrics(tmp_path)
    assert m["status"] == "completed" and math.isfinite(m["test/loss"])
    assert m["choices"]["experiment"] == name
