"""Documented options combine (issue 12, point 12): every logger option x every callbacks option x
the progress-bar flag runs; what Lightning still refuses is one line; no "Total FLOPs: 0" line."""
from __future__ import annotations

import itertools
import json
import logging

import pytest
from lightning.pytorch.callbacks import (DeviceStatsMonitor, LearningRateMonitor, ModelCheckpoint, RichModelSummary,
                                         RichProgressBar)

from src.cli import one_line_errors
from src.lit import trainer_options
from src.lit.estimate import DurationEstimate
from src.lit.trainer_options import Summary, reconcile
from tests.conftest import compose_cfg
from train import train

# One batch of each stage, and nothing removed from the callbacks group (unlike QUICK, which drops
# the progress bar: here the combination is the point).
TINY = ["model=lenet5", "data=mnist", "trainer.max_epochs=1", "trainer.limit_train_batches=1",
        "trainer.limit_val_batches=1", "trainer.limit_test_batches=1", "trainer.num_sanity_val_steps=0",
        "trainer.enable_model_summary=false", "data.batch_size=8", "data.eval_batch_size=16", "lit.log_images=false"]

PAIRINGS = list(itertools.product(["default", "tensorboard", "csv", "none"], ["default", "early_stopping", "none"],
                                  ["true", "false"]))


@pytest.fixture
def no_confusion_figure(monkeypatch):
    """Drawing the test confusion matrix for TensorBoard takes ~3 s of matplotlib per run on 2 cores,
    12 of these 24 runs log to TensorBoard, and the figure is no option's concern (test_train checks it)."""
    from matplotlib.figure import Figure
    from torch.utils.tensorboard import SummaryWriter

    monkeypatch.setattr("src.run_figures.confusion_figure", lambda frame: Figure())
    monkeypatch.setattr(SummaryWriter, "add_figure", lambda self, *a, **k: None)


@pytest.mark.parametrize("logger, callbacks, bar", PAIRINGS, ids=[f"{lg}-{cb}-bar_{b}" for lg, cb, b in PAIRINGS])
def test_every_logger_callbacks_progress_bar_pairing_runs(logger, callbacks, bar, fake_data, tmp_path,
                                                          no_confusion_figure):
    # early stopping needs a hold-out: on the test split (data.val_size=0) it is refused
    holdout = ["data.val_size=16"] if callbacks == "early_stopping" else []
    cfg = compose_cfg([*TINY, f"logger={logger}", f"callbacks={callbacks}", f"trainer.enable_progress_bar={bar}",
                       *holdout], tmp_path, fake_data)
    train(cfg)
    assert json.loads((tmp_path / "metrics.json").read_text())["status"] == "completed"


def test_off_flags_and_no_logger_drop_the_callbacks_they_conflict_with():
    given = [RichProgressBar(), LearningRateMonitor(), DeviceStatsMonitor(), ModelCheckpoint()]
    kept, kwargs = reconcile(given, {"enable_progress_bar": False, "logger": False, "enable_checkpointing": False,
                                     "enable_model_summary": False, "estimate_minutes": 5})
    assert [type(c) for c in kept] == [DurationEstimate]
    assert kept[0].minutes == 5 and "estimate_minutes" not in kwargs  # not a Trainer argument
    kept, _ = reconcile(given, {"enable_progress_bar": True, "logger": [], "enable_checkpointing": True})
    assert [type(c) for c in kept] == [RichProgressBar, ModelCheckpoint, Summary, DurationEstimate]
    kept, _ = reconcile(given, {"logger": None})  # None = Lightning's default logger: the monitors stay
    assert {LearningRateMonitor, DeviceStatsMonitor} <= {type(c) for c in kept}


def test_remaining_lightning_misconfiguration_is_one_line(fake_data, tmp_path, capsys):
    # a monitored metric no one logs: Lightning raises MisconfigurationException at the first validation
    cfg = compose_cfg([*TINY, "callbacks.model_checkpoint.monitor=val/accuracy"], tmp_path, fake_data)
    with pytest.raises(SystemExit) as exit_info, one_line_errors():
        train(cfg)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in err
    assert errors[0].startswith("error: Lightning refused the configuration: `ModelCheckpoint(monitor='val/accuracy')`")
    assert json.loads((tmp_path / "metrics.json").read_text())["status"] == "failed"


def test_model_summary_has_no_total_flops_0_line(fake_data, tmp_path, capsys):
    cfg = compose_cfg([*TINY, "trainer.enable_model_summary=true", "logger=none"], tmp_path, fake_data)
    train(cfg)
    out = capsys.readouterr().out
    assert "Total params" in out and "LeNet5" in out  # the summary was printed
    assert "Total FLOPs: 0" not in out and "FLOPs" not in out


def test_plain_summary_without_rich_has_no_flops_line(monkeypatch, caplog):
    monkeypatch.setattr(trainer_options, "_RICH_AVAILABLE", False)
    data = [(" ", ["0"]), ("Name", ["model"]), ("Type", ["LeNet5"]), ("Params", ["61.7 K"]), ("Mode", ["train"]),
            ("FLOPs", ["0"])]
    with caplog.at_level(logging.INFO):
        Summary.summarize(data, 61706, 61706, 0.247, {"train": 1, "eval": 0}, total_flops=0)
    assert "Total params" in caplog.text and "Flops" not in caplog.text and "FLOPs" not in caplog.text

