"""benchmarks/gpu_check.py: its CPU smoke run (every section, run, sweep job and slot reported) and the
machinery that keeps a GPU check within its budget (fault isolation, timeouts, skipped steps)."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT

SECTIONS = ["environment", "kernels", "sweep_sequential", "sweep_parallel", "sweep_packed", "run_default", "run_sam",
            "run_seu", "run_compile_off", "throughput", "activations", "fused"]


def _module(name: str):
    sys.path.insert(0, str(ROOT / "benchmarks"))  # gpu_check imports its sibling modules by name
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie has ended: only its exit status is left
        return f.read().split(")")[-1].split()[0] != "Z"


def test_a_failing_section_is_recorded_in_one_line_and_the_next_one_runs(tmp_path):
    gc = _module("gpu_check")
    check = gc.Check(tmp_path, smoke=True, budget_s=60)

    def broken(_):
        raise ValueError("first line\nsecond line")

    check.section("broken", broken)
    check.section("fine", lambda _: {"value": 3})
    report = json.loads((tmp_path / "gpu_check.json").read_text())["sections"]
    assert report["broken"]["status"] == "failed"
    assert report["broken"]["error"] == "ValueError: first line second line"
    assert report["fine"] == {"value": 3, "status": "ok", "seconds": report["fine"]["seconds"]}


def test_a_step_past_its_timeout_is_killed_with_its_children(tmp_path):
    gc = _module("gpu_check")
    check = gc.Check(tmp_path, smoke=True, budget_s=120)
    pidfile = tmp_path / "child.pid"
    code = ("import subprocess, sys, time\n"
            "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
            f"open({str(pidfile)!r}, 'w').write(str(c.pid))\n"
            "time.sleep(120)\n")
    t = time.monotonic()
    with pytest.raises(TimeoutError, match="timed out after 8 s"):
        check.sub("sleepy", ["-c", code], cap_s=8)
    assert time.monotonic() - t < 40
    assert not _alive(int(pidfile.read_text())), "the step's own child (a sweep worker) outlived the timeout"
    assert (tmp_path / "logs" / "sleepy.log").read_text().startswith("$ ")


def test_a_step_without_budget_left_is_skipped_not_started(tmp_path):
    gc = _module("gpu_check")
    check = gc.Check(tmp_path, smoke=True, budget_s=gc.MIN_START_S + gc.RESERVE_S - 1)
    marker = tmp_path / "started"
    check.section("late", lambda c: c.sub("late", ["-c", f"open({str(marker)!r}, 'w')"], cap_s=60))
    entry = json.loads((tmp_path / "gpu_check.json").read_text())["sections"]["late"]
    assert entry["status"] == "skipped" and "time budget spent" in entry["error"]
    assert not marker.exists()


def test_markdown_shows_missing_fields_as_missing_and_every_error():
    report = _module("gpu_report")
    md = report.markdown({
        "mode": "gpu", "started": "now", "budget_s": 450, "total_s": 12.0,
        "sections": {
            "environment": {"status": "ok", "device": "NVIDIA H200", "torch": "2.9", "seconds": 1.0},
            "run_default": {"status": "ok", "run_status": "completed", "train_images_per_s": 123456.7, "compile_s": 31.2,
                            "test/acc": 0.5, "seconds": 40.0},  # written before the trainer records graph counts
            "run_sam": {"status": "failed", "error": "sam recompiled 2 time(s)", "seconds": 50.0, "recompiles": 2},
            "throughput": {"status": "skipped", "error": "skipped: time budget spent (3 s left)"},
        }})
    assert md.startswith("# GPU check (gpu) on NVIDIA H200")
    run_row = next(line for line in md.splitlines() if line.startswith("| default |"))
    assert "123,457" in run_row and "31.2" in run_row and "0.5000" in run_row
    assert run_row.count("–") >= 4  # compiled, mode, graphs, recompiles: not recorded, not 0
    assert "| run_sam | failed | 50.0 | sam recompiled 2 time(s) |" in md
    assert "| throughput | skipped |" in md and "time budget spent" in md


@pytest.mark.slow
def test_smoke_mode_runs_every_section_on_the_cpu(tmp_path):
    out = tmp_path / "check"
    t = time.monotonic()
    p = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--smoke", "--out", str(out)], cwd=ROOT,
                       capture_output=True, text=True, timeout=1200)
    elapsed = time.monotonic() - t
    assert p.returncode == 0, (p.stdout + p.stderr)[-4000:]
    report = json.loads((out / "gpu_check.json").read_text())
    s = report["sections"]
    assert list(s) == SECTIONS and report["mode"] == "smoke"
    print(f"gpu_check --smoke: {elapsed:.0f} s")
    assert all(v["status"] == "ok" for k, v in s.items() if k != "kernels"), {k: v.get("error") for k, v in s.items()}
    if importlib.util.find_spec("triton") is not None:  # the Triton CPU interpreter
        assert s["kernels"]["status"] == "ok" and len(s["kernels"]["rows"]) == 9 * 2 * 3
    compiled = "compile_backend:" in (ROOT / "conf" / "trainer" / "default.yaml").read_text()
    for name in ("run_default", "run_sam", "run_seu", "run_compile_off"):
        assert s[name]["run_status"] == "completed" and s[name]["train_images_per_s"] > 0
        assert 0 <= s[name]["test/acc"] <= 1
        assert (out / "runs" / name.removeprefix("run_") / "metrics.json").is_file()
    if compiled:  # Dynamo's eager backend in smoke mode: graphs are captured and counted
        assert s["run_default"]["compiled"] is True and s["run_default"]["compile_graphs"] > 0
        assert s["run_compile_off"]["compiled"] is False
    seq = s["sweep_sequential"]["jobs"]
    assert sorted(j["activation"] for j in seq) == ["relu", "seu", "tanh"]
    assert all(j["status"] == "completed" for j in seq)
    if compiled:  # every job of one process compiles its own graphs (issue 12, point 1)
        assert all(j["compiled"] and j["compile_graphs"] > 0 for j in seq), seq
    par = s["sweep_parallel"]
    assert len(par["jobs"]) == 4
    assert sorted((j["activation"], j["seed"]) for j in par["jobs"]) == [("relu", 0), ("relu", 1), ("tanh", 0),
                                                                         ("tanh", 1)]
    assert all(j["slot_slot"] is not None and j["slot_pid"] for j in par["jobs"])
    assert 1 <= len(par["slots"]) <= 2
    packed = s["sweep_packed"]  # seeds 0-3, seeds_per_job=2: two packs of two, each member its own run folder
    assert sorted(j["seed"] for j in packed["jobs"]) == [0, 1, 2, 3]
    assert all(j["status"] == "completed" and j["pack"]["size"] == 2 for j in packed["jobs"])
    assert [p["members"] for p in packed["packs"]] == [[0, 1], [2, 3]]
    assert all(p["pack_train_images_per_s"] > 0 for p in packed["packs"]) and packed["table_n"] == ["4"]
    if compiled:
        assert all(j["compiled"] and j["graphs_compiled_while_timed"] == 0 for j in packed["jobs"]), packed["jobs"]
    assert {r["pipeline"] for r in s["throughput"]["rows"]} >= {"plain loop, tensor data", "ours, compile=off"}
    assert all(r["img_s"] > 0 for r in s["throughput"]["rows"])
    fused = s["fused"]  # benchmarks/fused.py's goal cells (K=16 LeNet-5, K=8 ResNet-20) against one run
    assert "--cells" in fused["args"] and set(fused["models"]) == {"lenet5", "resnet20"}
    assert sorted(r["K"] for r in fused["models"]["lenet5"]["rows"]) == [4, 16]
    assert [r["K"] for r in fused["models"]["resnet20"]["rows"]] == [8]
    assert all(r["ratio"] > 0 for m in fused["models"].values() for r in m["rows"])
    assert {g["verdict"] for g in fused["goals"]} <= {"met", "not met"}  # both goal cells measured
    acts = {r["activation"]: r for r in s["activations"]["rows"]}
    assert set(acts) == {"relu", "seu"} and acts["relu"]["eager_vs_relu"] == 1.0 and acts["seu"]["eager_img_s"] > 0
    md = (out / "gpu_check.md").read_text()
    for heading in ("## Summary", "## train.py runs", "## Sequential sweep", "## Parallel sweep", "## Packed sweep",
                    "## Triton kernels", "## benchmarks/throughput.py", "## benchmarks/activations.py",
                    "## benchmarks/fused.py (", "### LeNet-5/MNIST"):
        assert heading in md
    for name in SECTIONS:
        assert f"| {name} | ok |" in md or name == "kernels"
