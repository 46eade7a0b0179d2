"""benchmarks/fused.py (issue 25): its CPU smoke run (a row per K for each model, img/s summed over the
members, the pack checked against its standalone member first), the jobs_per_gpu=K column, a wrong
pack stopping the benchmark, an OOM recorded as a cell (tests/test_gpu_check.py's smoke run covers the
gpu_check section that runs it)."""
from __future__ import annotations

import importlib.util
import json
import math
import re
import subprocess
import sys
import time

import pytest
import torch

from tests.conftest import ROOT


def _fused():
    spec = importlib.util.spec_from_file_location("bench_fused", ROOT / "benchmarks" / "fused.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _run(tmp_path, *args: str, timeout: float = 300) -> tuple[dict, str, float]:
    out = tmp_path / "fused.json"
    t = time.monotonic()
    p = subprocess.run([sys.executable, "benchmarks/fused.py", "--device", "cpu", *args, "--out", str(out)], cwd=ROOT,
                       capture_output=True, text=True, timeout=timeout)
    elapsed = time.monotonic() - t
    assert p.returncode == 0, (p.stdout + p.stderr)[-4000:]
    return json.loads(out.read_text()), p.stdout, elapsed


def _positive(x) -> bool:
    return isinstance(x, float) and math.isfinite(x) and x > 0


def test_smoke_measures_every_pack_size_of_both_models(tmp_path):
    r, stdout, elapsed = _run(tmp_path, "--smoke")
    print(f"fused.py --smoke: {elapsed:.0f} s")
    assert r["device_type"] == "cpu" and r["compile_mode"] is None  # compile=auto is off on the CPU
    assert list(r["models"]) == ["lenet5", "resnet20"]
    for name, m in r["models"].items():
        assert m["check"]["ok"] is True and m["check"]["members"] == 2 and m["check"]["max_rel_err"] <= 1e-4, name
        assert m["one_run"]["status"] == "ok" and _positive(m["one_run"]["img_s"])
        assert [row["K"] for row in m["rows"]] == [1, 2, 4]
        for row in m["rows"]:
            p = row["pack"]
            assert p["status"] == "ok" and _positive(p["img_s"]) and _positive(row["ratio"]), (name, row)
            # img/s summed over the members: K * batch * steps of the (median) round / its seconds
            assert p["img_s"] == pytest.approx(row["K"] * p["batch"] * p["steps"] / p["seconds"], rel=1e-9)
            assert row["ratio"] == pytest.approx(p["img_s"] / m["one_run"]["img_s"])
            assert "concurrent" not in row  # --smoke leaves jobs_per_gpu=K out by default
        k2 = next(row["pack"] for row in m["rows"] if row["K"] == 2)
        assert (k2["batch"], k2["steps"]) == (32, 3)
    md = r["markdown"]
    assert md in stdout
    for label in ("## LeNet-5/MNIST", "## ResNet-20/CIFAR-10"):
        table = md.split(label)[1].split("\n## ")[0]
        assert [int(k) for k in re.findall(r"^\| (\d+) \|", table, re.M)] == [1, 2, 4], table
        assert "one run:" in table and "K separate runs one after another" in table
    assert "jobs_per_gpu=K: skipped (--no-concurrent, the --smoke default)" in md
    assert {(g["model"], g["K"], g["verdict"]) for g in r["goals"]} == {("lenet5", 16, "not measured"),
                                                                     ("resnet20", 8, "not measured")}
    cpu_line = md.strip().splitlines()[-1]
    assert cpu_line.startswith("On the CPU a pack measured lenet5 K=2: ")
    assert "seeds_per_job=auto means 1 on a CPU" in cpu_line and "resnet20 K=4: " in cpu_line


def test_jobs_per_gpu_column_runs_k_processes_behind_a_barrier(tmp_path):
    r, stdout, _ = _run(tmp_path, "--smoke", "--concurrent", "--cells", "lenet5:2", "--rounds", "1", "--threads", "2")
    row = r["models"]["lenet5"]["rows"][0]
    c = row["concurrent"]
    assert c["status"] == "ok" and _positive(c["img_s"]) and _positive(row["concurrent_ratio"])
    assert c["threads"] == 1  # each of the 2 processes gets its share of the 2 threads
    assert c["img_s"] == pytest.approx(2 * r["batch"] * r["steps"] * r["rounds"] / c["seconds"], rel=1e-9)
    line = next(ln for ln in r["markdown"].splitlines() if ln.startswith("| 2 |"))
    assert "K spawned processes" in r["markdown"] and "skipped" not in line and line.count("x |") == 2


def test_a_pack_that_trains_its_members_differently_stops_the_benchmark(monkeypatch):
    fused = _fused()
    spec = fused.model_spec("lenet5")
    ok = fused.check_member_equivalence(spec, (1, 28, 28), torch.device("cpu"), batch=4)
    assert ok["ok"] and ok["max_rel_err"] <= fused.CHECK_TOL
    original = fused.pack_loss
    monkeypatch.setattr(fused, "pack_loss", lambda logits, y: 2 * original(logits, y))  # twice the members' gradients
    with pytest.raises(RuntimeError, match="pack member 0 differs from its standalone model"):
        fused.check_member_equivalence(spec, (1, 28, 28), torch.device("cpu"), batch=4)


def test_an_out_of_memory_cell_reads_oom_and_an_error_its_one_line():
    fused = _fused()
    cpu = torch.device("cpu")

    def oom():
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    def broken():
        raise ValueError("first\nsecond")

    assert fused.cell(oom, cpu) == {"status": "OOM"}
    assert fused.cell(broken, cpu) == {"status": "error", "error": "ValueError: first second"}
    assert fused._fmt({"status": "OOM"}) == "OOM"
    assert fused._ratio({"status": "OOM"}, {"status": "ok", "img_s": 1.0}) is None  # no ratio, no goal met
