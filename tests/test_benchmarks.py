"""The throughput benchmark's CPU smoke run: every row measured, ratios taken within the run."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT


@pytest.mark.slow
def test_throughput_benchmark_smoke(tmp_path):
    out = tmp_path / "bench.json"
    p = subprocess.run([sys.executable, "benchmarks/throughput.py", "--device", "cpu", "--quick", "--compile", "off",
                        "--activations", "relu,seu", "--out", str(out)], cwd=ROOT, capture_output=True, text=True,
                       timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    rows = json.loads(out.read_text())
    pipelines = {(r["workload"], r["pipeline"].split(" (")[0]) for r in rows}
    for wl in ("resnet18/cifar10", "lenet5/mnist", "linear/mnist"):
        assert {(wl, "typical loop"), (wl, "plain loop, tensor data"), (wl, "ours, compile=off")} <= pipelines
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
    acts = {r["pipeline"]: r for r in rows if "activation=" in r["pipeline"]}
    assert acts["ours, activation=relu"]["vs_relu"] == 1.0
    seu = acts["ours, activation=seu"]
    assert seu["vs_relu"] == pytest.approx(seu["img_s"] / acts["ours, activation=relu"]["img_s"])
    assert "training throughput on CPU" in p.stdout
