from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from src.compose import compose_config
from tests import fabricate

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "conf"

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
# a run that outgrows Dynamo's per-code graph limit must fail here, not silently fall back to eager
torch._dynamo.config.fail_on_recompile_limit_hit = True


@pytest.fixture(scope="session")
def fake_data(tmp_path_factory) -> Path:
    """All four datasets in their real layouts (CIFAR-10 as the JPEG image tree), tiny."""
    return fabricate.write_all(tmp_path_factory.mktemp("datasets"))


@pytest.fixture(scope="session")
def fake_cifar_pickles(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cifar_pickles")
    fabricate.write_cifar_pickles(root)
    return root


def compose_cfg(overrides: list[str], output_dir: Path, data_dir: Path | None = None, cache_dir: Path | None = None):
    """The real config, composed as `python train.py <overrides>` would, with Hydra's runtime set."""
    extra = [f"paths.cache_dir={cache_dir or output_dir / 'cache'}"]
    if data_dir is not None:
        extra.append(f"paths.data_dir={data_dir}")
    if not any(o.startswith("data.verify_counts") for o in overrides):
        extra.append("data.verify_counts=false")  # fabricated data is tiny on purpose
    return compose_config(overrides + extra, output_dir)


@pytest.fixture(scope="session")
def main_sweep(tmp_path_factory):
    """One `train.py -m` sweep (6 jobs on 2 fake GPUs) shared by test_sweeps.py and
    test_sweep_workers.py: its worker start-ups cost tens of seconds on 2 cores, paid once."""
    from tests.test_sweeps import run_main_sweep

    return run_main_sweep(tmp_path_factory)


# A fast CPU run: one short epoch, no progress bar.
QUICK = [
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "trainer.num_sanity_val_steps=0",
    "trainer.enable_model_summary=false",
    "~callbacks.progress_bar",
    "data.batch_size=8",
    "data.eval_batch_size=16",
]
