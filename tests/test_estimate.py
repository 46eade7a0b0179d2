"""The duration estimate (issue 12): one line, once, only for a run longer than the threshold."""
from __future__ import annotations

import json

import pytest

from src.errors import ConfigError
from src.lit import estimate
from src.lit.estimate import DurationEstimate
from tests.conftest import QUICK, compose_cfg
from train import train

# 8 training batches of 8 (warm-up 1 + 5 timed fit in the first epoch), one validation batch of 16
RUN = ["model=lenet5", "data=mnist", *QUICK, "trainer.limit_train_batches=8", "trainer.max_epochs=2"]


def _estimate_lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.startswith("[estimate]")]


def test_long_run_says_so_once_with_the_extrapolation(fake_data, tmp_path, capsys, monkeypatch):
    """A fake clock that gains 6000 s per reading: the 5 timed steps take 1200 s each."""
    readings = iter(range(0, 10**7, 6000))
    monkeypatch.setattr(estimate, "_now", lambda: next(readings))
    # callbacks=none: the estimate comes from build_trainer, not from the callbacks group
    overrides = [o for o in RUN if o != "~callbacks.progress_bar"] + ["callbacks=none"]
    train(compose_cfg(overrides, tmp_path, fake_data))
    lines = _estimate_lines(capsys.readouterr().err)
    # per epoch: 8 x 1200 s training + 1 eval batch of 16 = 1200 s x 1/3 x 16/8 = 800 s -> 10400 s;
    # run: 2 epochs + the test pass (800 s) = 21600 s = 6.0 h
    # the quick try reads the run's data folder (without DATA_DIR it would look in ./data)
    assert lines == ["[estimate] ~6.0 h on cpu (2.9 h per epoch); for a quick try: "
                     f"DATA_DIR={fake_data.resolve()} python train.py experiment=mnist_lenet5"]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["status"] == "completed"
    import torch

    assert metrics["threads"] == torch.get_num_threads()  # trainer.threads=auto: torch's own count (issue 23.9)


def test_short_run_prints_nothing_with_the_default_threshold(fake_data, tmp_path, capsys):
    train(compose_cfg(RUN, tmp_path, fake_data))
    assert _estimate_lines(capsys.readouterr().err) == []


def test_threshold_is_configurable(fake_data, tmp_path, capsys):
    train(compose_cfg([*RUN, "trainer.estimate_minutes=0"], tmp_path, fake_data))
    (line,) = _estimate_lines(capsys.readouterr().err)
    assert " on cpu (" in line and f"per epoch); for a quick try: DATA_DIR={fake_data.resolve()} python train.py " \
                                   "experiment=mnist_lenet5" in line


def test_compiled_models_skip_the_compile_and_graph_recording_steps():
    class Compiled:
        compiled, warmup_calls = True, 2  # reduce-overhead on a GPU (SpeedUp)

    assert DurationEstimate()._warmup(Compiled()) == 3 and DurationEstimate()._warmup(object()) == 1


@pytest.mark.parametrize("bad", [-1, "soon", True])
def test_bad_threshold_is_refused(bad):
    with pytest.raises(ConfigError, match="trainer.estimate_minutes"):
        DurationEstimate(bad)
