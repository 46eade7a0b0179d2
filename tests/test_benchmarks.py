"""The throughput benchmark's CPU smoke run: every row measured, ratios taken within the run, and a
row whose loss turns non-finite recorded (marked diverged) instead of aborting the table."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT

# README.md, "Speed and benchmarks": CI runs this line as written (only --out is added).
README_QUICK = "python benchmarks/throughput.py --device cpu --quick"


def _throughput_module():
    spec = importlib.util.spec_from_file_location("bench_throughput", ROOT / "benchmarks" / "throughput.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_readme_names_the_smoke_command():
    assert README_QUICK in (ROOT / "README.md").read_text()


def test_a_diverging_row_keeps_its_speed_and_is_marked(tmp_path):
    """Inputs pushed to inf make the loss NaN from the first step: train() alone would raise."""
    bench = _throughput_module()
    import torch
    from src.lit.classifier import ClassifierModule

    checker = ClassifierModule._raise_if_diverged
    model_ov, data_ov, *_ = bench.WORKLOADS["linear/mnist"]
    row = bench.ours(model_ov, data_ov, ["lit.input_noise_std=1e39", "trainer.compile=off"], 128, 64, 2,
                     torch.device("cpu"), tmp_path)
    assert row["diverged"] is True
    assert row["img_s"] > 0
    assert ClassifierModule._raise_if_diverged is checker  # a real run still stops on divergence
    finite = bench.ours(model_ov, data_ov, ["trainer.compile=off"], 128, 64, 2, torch.device("cpu"), tmp_path)
    assert finite["diverged"] is False


@pytest.mark.slow
def test_throughput_benchmark_smoke(tmp_path):
    out = tmp_path / "bench.json"
    cmd = README_QUICK.split()
    p = subprocess.run([sys.executable, *cmd[1:], "--out", str(out)], cwd=ROOT, capture_output=True, text=True,
                       timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    rows = json.loads(out.read_text())
    pipelines = {(r["workload"], r["pipeline"].split(" (")[0]) for r in rows}
    for wl in ("resnet18/cifar10", "lenet5/mnist", "linear/mnist"):
        assert {(wl, "typical loop"), (wl, "plain loop, tensor data"), (wl, "ours, compile=off"),
                (wl, "ours, compile=auto")} <= pipelines
    assert all(r["img_s"] > 0 for r in rows)
    batch = {"resnet18/cifar10": 8, "lenet5/mnist": 64, "linear/mnist": 64}  # --quick sizes
    for r in rows:
        assert r["us_per_step"] == pytest.approx(1e6 * batch[r["workload"]] / r["img_s"])
    for wl in batch:  # the framework's own time per step: ours minus the plain loop on the same data
        plain = next(r for r in rows if r["workload"] == wl and r["pipeline"] == "plain loop, tensor data")
        ours = next(r for r in rows if r["workload"] == wl and r["pipeline"] == "ours, compile=off")
        assert ours["overhead_us"] == pytest.approx(ours["us_per_step"] - plain["us_per_step"])
    for wl in ("resnet18/cifar10", "lenet5/mnist"):
        base = next(r["img_s"] for r in rows if r["workload"] == wl and r["pipeline"].startswith("typical"))
        for r in rows:
            if r["workload"] == wl and "vs_typical" in r:
                assert r["vs_typical"] == pytest.approx(r["img_s"] / base)
    acts = {r["pipeline"].removeprefix("ours, activation="): r for r in rows if "activation=" in r["pipeline"]}
    assert list(acts) == ["relu", "swish", "seu", "cos", "m_tanh", "formula"]  # the default list, all measured
    assert acts["relu"]["vs_relu"] == 1.0
    for name, r in acts.items():
        assert r["vs_relu"] == pytest.approx(r["img_s"] / acts["relu"]["img_s"])
        assert isinstance(r["diverged"], bool)
    assert "training throughput on CPU" in p.stdout
    if any(r["diverged"] for r in acts.values()):  # m_tanh's quintic overflows ResNet18 at init: shown, not fatal
        assert "(diverged): the training loss became NaN/Inf" in p.stdout
