"""The spine's acceptance run on the real MNIST (../shared/datasets): one CPU epoch of LeNet-5."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.conftest import ROOT, compose_cfg
from train import train


def real_data_dir() -> Path | None:
    for cand in (os.environ.get("DATA_DIR"), ROOT.parent / "shared" / "datasets"):
        if cand and (Path(cand) / "MNIST" / "raw" / "train-images-idx3-ubyte").exists():
            return Path(cand)
    if os.environ.get("CI"):
        pytest.fail("CI must have the real datasets: set DATA_DIR=../shared/datasets")
    return None


@pytest.mark.slow
@pytest.mark.real_data
def test_lenet5_one_epoch_on_real_mnist(tmp_path):
    data = real_data_dir()
    if data is None:
        pytest.skip("real MNIST not found (set DATA_DIR)")
    cfg = compose_cfg(["model=lenet5", "data=mnist", "trainer.max_epochs=1", "~callbacks.progress_bar",
                       "data.verify_counts=true"], tmp_path, data)
    acc = train(cfg)
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert acc >= 0.97, m
    assert m["epochs"] == 1 and m["params"] == 61_706
    print(f"LeNet-5 real MNIST: test acc {acc:.4f}, epoch {m['epoch_time_mean_s']:.1f} s, "
          f"{m['train_images_per_s']:.0f} img/s")


@pytest.mark.slow
@pytest.mark.real_data
def test_taylor_study_preset_learns_with_the_quintic_activation(tmp_path):
    """experiment=taylor_mnist with m_tanh (0.92x - 0.1x³ + 0.28x⁵, which grows like x⁵): the preset's
    recipe must train, not diverge. One epoch on a stratified 20 % of real MNIST gave 96.2 %."""
    data = real_data_dir()
    if data is None:
        pytest.skip("real MNIST not found (set DATA_DIR)")
    cfg = compose_cfg(["experiment=taylor_mnist", "activation=m_tanh", "trainer.max_epochs=1",
                       "data.train_fraction=0.2", "~callbacks.progress_bar"], tmp_path, data)
    acc = train(cfg)
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["status"] == "completed" and acc >= 0.93, m
    assert m["params"] == 3_156_098  # the study's SimpleCNN on MNIST
