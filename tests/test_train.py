"""train.py's entry function end to end on every dataset with both spine models (CPU, tiny data)."""
from __future__ import annotations

import json

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.conftest import QUICK, compose_cfg
from train import train

DATASETS = {  # name -> (overrides, channels)
    "mnist": ([], 1),
    "fashion_mnist": ([], 1),
    "cifar10": ([], 3),
    "horses_or_humans": (["data.image_size=40"], 3),
}
PARAMS = {("lenet5", "mnist"): 61_706, ("resnet18", "cifar10"): 11_173_962}


def _tags(run_dir):
    tags = {"scalars": set(), "images": set(), "tensors": set()}
    for ev in run_dir.glob("events.out.tfevents.*"):
        acc = EventAccumulator(str(ev), size_guidance={"images": 0, "tensors": 0})
        acc.Reload()
        t = acc.Tags()
        for k in tags:
            tags[k] |= set(t.get(k, []))
    return tags


@pytest.mark.parametrize("model", ["lenet5", "resnet18"])
@pytest.mark.parametrize("data", list(DATASETS))
def test_train_end_to_end(model, data, fake_data, tmp_path):
    extra, channels = DATASETS[data]
    cfg = compose_cfg([f"model={model}", f"data={data}", "seed=0", *QUICK, *extra], tmp_path, fake_data)
    value = train(cfg)

    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["status"] == "completed"
    assert value == m["test/acc"] and 0.0 <= m["test/acc"] <= 1.0
    assert m["test/loss"] > 0 and m["val/acc_best"] is not None and m["val/acc_best_epoch"] == 0
    assert m["epochs"] == 1 and m["epoch_time_mean_s"] > 0 and m["train_images_per_s"] > 0
    assert m["wall_time_s"] >= m["epoch_time_mean_s"]
    assert m["seed"] == 0 and f"model={model}" in m["overrides"]
    assert m["choices"]["model"] == model and m["choices"]["data"] == data
    if (model, data) in PARAMS:
        assert m["params"] == PARAMS[(model, data)]
    # the model saw the data config's channel count
    first = next(iter(cfg.model.keys() - {"_target_"}), None)
    assert cfg.model.in_channels == channels, first

    tags = _tags(tmp_path)
    assert {"train/acc", "val/acc", "test/acc", "time/epoch_s", "time/train_images_per_s"} <= tags["scalars"]
    assert {"train/images", "test/confusion_matrix", "activation"} <= tags["images"]
    assert (tmp_path / "csv" / "metrics.csv").exists()
    import pandas as pd

    confusion = pd.read_csv(tmp_path / "test_confusion.csv", index_col=0)
    assert confusion.shape == (cfg.data.num_classes, cfg.data.num_classes)
    tested = min(16, 6 if data == "horses_or_humans" else 40)  # one test batch of data.eval_batch_size
    assert confusion.to_numpy().sum() == tested
    assert abs(m["test/acc"] - confusion.to_numpy().trace() / tested) < 1e-6
    assert (tmp_path / "checkpoints" / "last.ckpt").exists()


def test_hparams_carry_real_metrics(fake_data, tmp_path):
    """TensorBoard's hparams tab gets the final metrics, not Lightning's hp_metric=-1."""
    cfg = compose_cfg(["model=lenet5", "data=mnist", *QUICK], tmp_path, fake_data)
    train(cfg)
    m = json.loads((tmp_path / "metrics.json").read_text())
    tags = _tags(tmp_path)
    assert "hp_metric" not in tags["scalars"]
    assert "hp/test_acc" in tags["scalars"]
    acc = None
    for ev in tmp_path.glob("events.out.tfevents.*"):
        ea = EventAccumulator(str(ev))
        ea.Reload()
        if "hp/test_acc" in ea.Tags()["scalars"]:
            acc = ea.Scalars("hp/test_acc")[-1].value
    assert acc == pytest.approx(m["test/acc"], abs=1e-6)


def test_metrics_record_where_the_run_came_from(fake_data, tmp_path):
    """Issue 22.8: metrics.json's provenance: code, versions, device, the precision the Trainer
    used, the determinism switches, host, start time and the command that runs it again."""
    import datetime as dt
    import shlex
    import socket
    import subprocess

    import lightning
    import numpy
    import torch
    import torchvision

    from tests.conftest import ROOT

    before = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    cfg = compose_cfg(["model=lenet5", "data=mnist", "activation=tanh", "optimizer.lr=0.05", *QUICK,
                       "trainer.deterministic=true"], tmp_path, fake_data)
    train(cfg)
    p = json.loads((tmp_path / "metrics.json").read_text())["provenance"]
    try:
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10).stdout.strip() or None
    except OSError:
        head = None
    assert p["commit"] == head and (p["dirty"] is None) == (head is None)
    assert (p["torch"], p["torchvision"], p["lightning"], p["numpy"]) == \
        (torch.__version__, torchvision.__version__, lightning.__version__, numpy.__version__)
    assert p["python"].count(".") == 2 and p["hydra"]
    assert p["device_type"] == "cpu" and p["device_count"] == 1 and p["cuda"] is None and p["cudnn"] is None
    assert p["precision"] == "32-true"  # ${auto_precision:} resolved on the CPU
    assert p["deterministic_algorithms"] is True and p["cudnn_benchmark"] is False  # trainer.deterministic=true
    assert p["host"] == socket.gethostname()
    assert before <= dt.datetime.fromisoformat(p["started"]) <= dt.datetime.now(dt.timezone.utc)
    command = shlex.split(p["command"])
    assert command[:2] == ["python", "train.py"] and "activation=tanh" in command and "optimizer.lr=0.05" in command
    torch.use_deterministic_algorithms(False)  # trainer.deterministic=true set it for the process


def test_seed_zero_is_applied(fake_data, tmp_path):
    """seed=0 must seed (the `if cfg.get("seed")` trap): two runs give identical results."""
    results = []
    for i in range(2):
        out = tmp_path / str(i)
        cfg = compose_cfg(["model=lenet5", "data=cifar10", "seed=0", *QUICK], out, fake_data)
        train(cfg)
        results.append(json.loads((out / "metrics.json").read_text())["test/loss"])
    assert results[0] == results[1]


def test_activation_choice_reaches_every_layer(fake_data, tmp_path):
    from hydra.utils import instantiate
    from torch import nn

    cfg = compose_cfg(["model=resnet18", "activation=tanh"], tmp_path, fake_data)
    model = instantiate(cfg.model)
    kinds = {type(m) for m in model.modules()}
    assert nn.Tanh in kinds and nn.ReLU not in kinds
    assert sum(isinstance(m, nn.Tanh) for m in model.modules()) == 17  # stem + 2 per block x 8


def test_cosine_schedule_anneals_over_the_run(fake_data, tmp_path):
    """Per-step cosine: starts at optimizer.lr and reaches ~0 at the run's last step."""
    import pandas as pd

    cfg = compose_cfg(["model=lenet5", "data=mnist", *QUICK, "trainer.limit_train_batches=6",
                       "trainer.max_epochs=2", "trainer.log_every_n_steps=1",
                       "callbacks.learning_rate_monitor.logging_interval=step"], tmp_path, fake_data)
    train(cfg)
    lr = pd.read_csv(tmp_path / "csv" / "metrics.csv")["lr-SGD"].dropna().to_numpy()
    assert len(lr) == 12
    assert lr[0] == pytest.approx(0.1)
    assert all(a > b for a, b in zip(lr, lr[1:]))  # strictly decreasing, every step
    assert lr[-1] < 0.01


def test_sam_counts_each_image_once(fake_data, tmp_path):
    """SAM runs training_step twice per step; metrics and image counts must see it once."""
    import torch

    cfg = compose_cfg(["model=lenet5", "data=mnist", "optimizer=sam", *QUICK], tmp_path, fake_data)
    train(cfg)
    stats = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["run_stats"]
    assert stats["train_images"] == 2 * 8  # limit_train_batches=2, batch 8


@pytest.mark.parametrize("debug, epochs", [("fdr", 1), ("limit", 3), ("overfit", 20)])
def test_debug_configs(debug, epochs, fake_data, tmp_path):
    cfg = compose_cfg(["model=lenet5", "data=mnist", f"debug={debug}", "~callbacks.progress_bar",
                       "data.batch_size=8", "optimizer=adam"], tmp_path, fake_data)
    train(cfg)
    m = json.loads((tmp_path / "metrics.json").read_text())
    # a debug run is never a result (issue 22.1): resume never keeps it, the report never tables it
    assert m["status"] == "debug" and m["debug"] == debug and m["epochs"] == epochs
    if debug == "overfit":  # the same 3 batches, 20 times, constant lr: the loss falls
        import pandas as pd

        log = pd.read_csv(tmp_path / "csv" / "metrics.csv")
        loss = log["train/loss"].dropna().to_numpy()
        assert len(loss) == 20 and loss[-1] < 0.5 * loss[0]
        assert log["lr-Adam"].dropna().nunique() == 1


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", ["sgd", "sam"])  # SAM: two forward passes per step, BN frozen in the 2nd
def test_compiled_run_matches_eager(optimizer, fake_data, tmp_path):
    """trainer.compile through Lightning: the model is compiled in place (so the best checkpoint
    loads back into it by its plain parameter names), shapes change between training, a short last
    (120 = 10 x 12, no short batch: a compiled run drops one, so both train on the same batches) and
    evaluation (40 = 2 x 16 + 8: padded and masked when compiled), and the test result is the eager
    one up to float rounding."""
    results = {}
    for mode in ("off", "default"):
        out = tmp_path / mode
        cfg = compose_cfg([f"optimizer={optimizer}", "model=lenet5", "data=mnist", "seed=0", "trainer.max_epochs=2",
                           "data.batch_size=12",
                           "data.eval_batch_size=16",  # the sanity check stays on: it compiles first, under no_grad
                           "trainer.enable_model_summary=false", "~callbacks.progress_bar", f"trainer.compile={mode}"],
                          out, fake_data)
        train(cfg)
        results[mode] = json.loads((out / "metrics.json").read_text())
    eager, compiled = results["off"], results["default"]
    assert compiled["status"] == "completed" and compiled["compile_s"] > 0 and not eager["compile_s"]
    assert compiled["test/loss"] == pytest.approx(eager["test/loss"], rel=1e-4)
    assert compiled["test/acc"] == pytest.approx(eager["test/acc"], abs=1e-6)
