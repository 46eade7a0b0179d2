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
# (set once, before any test's snapshot below, for the whole session)
torch._dynamo.config.fail_on_recompile_limit_hit = True

# Torch's config modules, changed only through their own .patch(...): pytest's monkeypatch undoes a
# change by deleting the attribute, and torch answers a delattr by hiding the option for the rest of
# the process (every compiled test after it fails with "... does not exist").
TORCH_CONFIGS = ("torch._dynamo.config", "torch._inductor.config", "torch._functorch.config")
HIDDEN = "<hidden>"


def _torch_config_state() -> dict[str, dict[str, tuple[str, object]]]:
    import importlib
    import warnings

    state = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # reading a deprecated option warns
        for name in TORCH_CONFIGS:
            module = importlib.import_module(name)
            state[name] = {k: (repr(getattr(module, k)), getattr(module, k)) if hasattr(module, k) else (HIDDEN, None)
                           for k in module.get_config_copy()}
    return state


@pytest.fixture(autouse=True)
def torch_configs_unchanged():
    """Fails the test that leaves an option of a torch config module changed or hidden (and puts
    the option back, so that one such test does not fail every compiled test after it)."""
    import importlib

    before = _torch_config_state()
    yield
    after = _torch_config_state()
    problems = []
    for module, options in before.items():
        for key, (text, value) in options.items():
            now = after[module][key][0]
            if now == text:
                continue
            problems.append(f"{module}.{key} " + ("is hidden (deleted, e.g. by pytest's monkeypatch)" if now == HIDDEN
                                                   else f"changed from {text} to {now}"))
            if text != HIDDEN:
                setattr(importlib.import_module(module), key, value)
    if problems:
        pytest.fail("torch config left changed by this test (change it with config.patch(...)): "
                    + "; ".join(problems[:5]), pytrace=False)


def _checkout_files() -> set[str] | None:
    """Untracked and ignored files of the checkout (None outside a git checkout), less what Python
    and pytest themselves keep there."""
    import subprocess

    try:
        out = subprocess.run(["git", "status", "--porcelain", "--ignored", "--untracked-files=all"], cwd=ROOT,
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    own = ("__pycache__/", ".pytest_cache/", ".egg-info/")
    return {ln[3:] for ln in out.stdout.splitlines() if ln[:2] in ("??", "!!") and not any(o in ln for o in own)}


@pytest.fixture(autouse=True, scope="module")
def checkout_unchanged():
    """Tests write only under their tmp_path: a module that leaves a new file in the checkout (a run
    in ./outputs, a dataset in ./data) fails, naming the files."""
    before = _checkout_files()
    yield
    after = _checkout_files()
    if before is not None and after is not None and after - before:
        new = sorted(after - before)
        pytest.fail(f"this test module wrote into the checkout ({len(new)} new file(s)): {', '.join(new[:5])}",
                    pytrace=False)


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
