"""The sections of benchmarks/gpu_check.py and their sizes, on a GPU and for --smoke (CPU, tiny).

Each section takes the Check (its `sub` runs one subprocess under the time budget) and returns a
dict for the JSON report, raises Skip (cannot run here) or SectionFailed (ran, found a problem:
its data is kept). Metrics are read with .get(): a field the trainer does not write yet shows as
missing, it does not break the check.
"""
from __future__ import annotations

import csv
import json
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


class Skip(Exception):
    """A section that cannot run here (no Triton, no time left): recorded as skipped, not failed."""


class SectionFailed(Exception):
    """A section that ran and found something wrong: the one-line error plus what it measured."""

    def __init__(self, message: str, data: dict):
        super().__init__(message)
        self.data = data


RUN_FIELDS = ("status", "error", "train_images_per_s", "test_images_per_s", "compile_s", "compiled", "compile_mode",
              "compile_fallback", "compile_graphs", "graphs_compiled_while_timed", "recompiles", "peak_gpu_mem_mb",
              "test/acc", "epochs", "epoch_time_mean_s", "wall_time_s")
RUNS = {"default": [], "sam": ["optimizer=sam"], "seu": ["activation=seu"], "compile_off": ["trainer.compile=off"]}
GPU_RUN = ["trainer.max_epochs=2", "data.download=false"]  # the defaults: ResNet18, CIFAR-10 (DATA_DIR)
GPU_SWEEP = ["model=lenet5", "trainer.max_epochs=1", "trainer.limit_train_batches=50", "data.download=false"]
SMOKE_DATA = ["data=synthetic", "data.synthetic_sizes=[256,64]", "data.batch_size=32", "data.eval_batch_size=64",
              "model=lenet5", "trainer.accelerator=cpu"]
SMOKE_RUN = [*SMOKE_DATA, "trainer.max_epochs=2"]
SMOKE_SWEEP = [*SMOKE_DATA, "trainer.max_epochs=1", "trainer.limit_train_batches=2"]
# seconds per step (GPU, smoke); the budget may cut any of them shorter
CAPS = {"environment": (60, 120), "kernels": (150, 300), "sweep_sequential": (180, 400), "sweep_parallel": (180, 400),
        "run_default": (170, 240), "run_sam": (150, 240), "run_seu": (130, 240), "run_compile_off": (80, 240),
        "throughput": (150, 400), "activations": (130, 300), "sweep_packed": (120, 240)}
# sweep_packed: LeNet-5/MNIST (tanh), seeds 0-3 as fused seed packs (src/packs, issue 25); MNIST must be in
# DATA_DIR (MNIST/raw), else synthetic images of its shape stand in (the GPU recipe unpacks only CIFAR-10)
PACKED = ["model=lenet5", "activation=tanh", "seed=0,1,2,3"]
GPU_PACKED = ["trainer.max_epochs=2", "data.train_fraction=0.1", "data.download=false"]  # 2 x 47 steps of 128
SMOKE_PACKED = ["trainer.max_epochs=1", "trainer.limit_train_batches=4", "data.train_fraction=0.02",
                "data.test_fraction=0.05", "data.batch_size=32", "data.eval_batch_size=256", "trainer.accelerator=cpu"]
MNIST_SHAPED = ["data=synthetic", "data.synthetic_sizes=[60000,10000]", "data.channels=1", "data.image_size=28",
                "data.mean=[0.1307]", "data.std=[0.3081]"]


def smoke_compile() -> list[str]:
    """On the CPU: torch.compile with Dynamo's eager backend, so that graph capture and the graph
    counts are exercised without Inductor's C++ build (minutes on 2 cores). The trainer has the
    backend option only once its compile fixes are in; before that the smoke runs stay eager."""
    conf = (ROOT / "conf" / "trainer" / "default.yaml").read_text()
    return ["trainer.compile=default", "trainer.compile_backend=eager"] if "compile_backend:" in conf else []


def _cap(check, name: str) -> float:
    return CAPS[name][1 if check.smoke else 0]


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _fields(m: dict) -> dict:
    return {k: m.get(k) for k in RUN_FIELDS}


def _compile_problems(label: str, m: dict, expect: bool) -> list[str]:
    """What a run that should have compiled says otherwise (only fields the trainer writes)."""
    out = []
    if not expect or m.get("status") != "completed":
        return out
    if m.get("compiled") is False:
        out.append(f"{label} ran eager: {m.get('compile_fallback') or 'compile fell back'}")
    elif "compile_graphs" in m and not m["compile_graphs"]:
        out.append(f"{label} compiled no graph")
    if m.get("graphs_compiled_while_timed"):
        out.append(f"{label} compiled {m['graphs_compiled_while_timed']} graph(s) inside timed steps")
    if m.get("recompiles"):
        out.append(f"{label} recompiled {m['recompiles']} time(s)")
    return out


# ----------------------------------------------------------------------------- sections
def environment(check) -> dict:
    path = check.out / "environment.json"
    code = ("import json, os, platform, sys, importlib.metadata as md, torch\n"
            "def v(p):\n"
            "    try: return md.version(p)\n"
            "    except Exception: return None\n"
            "cuda = torch.cuda.is_available()\n"
            "d = {'python': platform.python_version(), 'torch': torch.__version__, 'cuda': torch.version.cuda,\n"
            "     'triton': v('triton'), 'lightning': v('lightning'), 'hydra': v('hydra-core'), 'cpus': os.cpu_count(),\n"
            "     'gpus': torch.cuda.device_count() if cuda else 0,\n"
            "     'device': torch.cuda.get_device_name(0) if cuda else platform.processor() or 'cpu',\n"
            "     'capability': '.'.join(map(str, torch.cuda.get_device_capability(0))) if cuda else None,\n"
            "     'bf16': torch.cuda.is_bf16_supported() if cuda else None,\n"
            "     'memory_gb': round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1) if cuda else None}\n"
            f"open({str(path)!r}, 'w').write(json.dumps(d))\n")
    rc = check.sub("environment", ["-c", code], _cap(check, "environment"))
    env = _read(path)
    if rc != 0 or not env:
        raise RuntimeError(f"exit {rc}: {check.log_tail('environment')}")
    try:
        env["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                       text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        env["commit"] = None  # a copied tree without .git
    env["data_dir"] = check.env.get("DATA_DIR")
    if not check.smoke and not env.get("gpus"):
        raise SectionFailed("no CUDA device: this is the GPU mode (use --smoke on a CPU)", env)
    return env


def kernels(check) -> dict:
    path = check.out / "kernels.json"
    rc = check.sub("kernels", ["benchmarks/kernel_check.py", "--device", "cpu" if check.smoke else "cuda",
                               "--out", str(path)], _cap(check, "kernels"))
    r = _read(path)
    if not r:
        raise RuntimeError(f"exit {rc}: {check.log_tail('kernels')}")
    if r.get("skipped"):
        raise Skip(f"skipped: {r['skipped']}")
    bad = [row for row in r["rows"] if not row["ok"]]
    if bad:
        eg = bad[0]
        raise SectionFailed(f"{len(bad)} of {len(r['rows'])} kernel cases out of tolerance, e.g. {eg['activation']} "
                            f"{eg['dtype']} {eg['layout']}", r)
    return r


def run(variant: str):
    def section(check) -> dict:
        name = f"run_{variant}"
        run_dir = check.out / "runs" / variant
        compile_ov = smoke_compile() if check.smoke and variant != "compile_off" else []
        overrides = [*(SMOKE_RUN if check.smoke else GPU_RUN), *compile_ov, *RUNS[variant]]
        rc = check.sub(name, ["train.py", *overrides, f"hydra.run.dir={run_dir}"], _cap(check, name))
        m = _read(run_dir / "metrics.json")
        fields = _fields(m)
        data = {"overrides": overrides, "exit_code": rc, "run_status": fields.pop("status"), **fields}
        if rc != 0 or m.get("status") != "completed":
            raise SectionFailed(m.get("error") or check.log_tail(name) or f"exit {rc}", data)
        problems = _compile_problems(variant, m, expect=variant != "compile_off" and (not check.smoke or bool(compile_ov)))
        if not m.get("train_images_per_s"):
            problems.append("no training img/s recorded")
        if problems:
            raise SectionFailed("; ".join(problems), data)
        return data
    return section


def _jobs(sweep_dir: Path) -> list[dict]:
    """Every job folder of a sweep (one per metrics.json or sweep_job.json), in start order."""
    dirs = {p.parent for pat in ("**/metrics.json", "**/sweep_job.json") for p in sweep_dir.glob(pat)}
    jobs = []
    for d in dirs:
        m, slot = _read(d / "metrics.json"), _read(d / "sweep_job.json")
        choices = m.get("choices") or {}
        jobs.append({"dir": str(d.relative_to(sweep_dir)), "activation": choices.get("activation"), "seed": m.get("seed"),
                     **_fields(m), "pack": m.get("pack"), **{f"slot_{k}": slot.get(k) for k in ("gpu", "slot", "pid", "gpu_uuid", "locked")},
                     "start": slot.get("start"), "end": slot.get("end")})
    return sorted(jobs, key=lambda j: (j["start"] or 0, j["dir"]))


def _sweep(check, name: str, extra: list[str], n_expected: int, base: list[str] | None = None) -> tuple[dict, list[str]]:
    sweep_dir = check.out / name
    if base is None:
        base = [*SMOKE_SWEEP, *smoke_compile()] if check.smoke else GPU_SWEEP
    overrides = ["-m", *extra, *base, f"hydra.sweep.dir={sweep_dir}"]
    t = time.monotonic()
    rc = check.sub(name, ["train.py", *overrides], _cap(check, name))
    jobs = _jobs(sweep_dir)
    data = {"overrides": overrides, "exit_code": rc, "wall_s": round(time.monotonic() - t, 1), "jobs": jobs}
    problems = [] if rc == 0 else [f"exit {rc}: {check.log_tail(name)}"]
    if len(jobs) != n_expected:
        problems.append(f"{len(jobs)} of {n_expected} jobs left a record")
    problems += [f"job {j['dir']}: {j['status']} {j.get('error') or ''}".strip() for j in jobs if j["status"] != "completed"]
    return data, problems


def sweep_sequential(check) -> dict:
    """Three activations one after another in one process: each must compile its own graphs."""
    data, problems = _sweep(check, "sweep_sequential", ["hydra/launcher=sequential", "activation=relu,tanh,seu"], 3)
    expect = not check.smoke or bool(smoke_compile())
    for j in data["jobs"]:
        problems += _compile_problems(f"job activation={j['activation']}", j, expect)
    if problems:
        raise SectionFailed("; ".join(problems), data)
    return data


def sweep_parallel(check) -> dict:
    """Four jobs, two per GPU: every job records its slot; at most two run at once per GPU."""
    data, problems = _sweep(check, "sweep_parallel", ["jobs_per_gpu=2", "activation=relu,tanh", "seed=0,1"], 4)
    jobs = data["jobs"]
    problems += [f"job {j['dir']} recorded no slot" for j in jobs if j["slot_slot"] is None]
    if not check.smoke:
        problems += [f"job {j['dir']} ran on no GPU" for j in jobs if j["slot_gpu"] is None]
    slots = {(j["slot_gpu"], j["slot_slot"]) for j in jobs if j["slot_slot"] is not None}
    spans = [(j["start"], j["end"]) for j in jobs if j["start"] and j["end"]]
    data["slots"] = sorted(map(str, slots))
    data["max_concurrent"] = max((sum(s <= t < e for s, e in spans) for t, _ in spans), default=0)
    per_gpu = {}
    for g, _ in slots:
        per_gpu[g] = per_gpu.get(g, 0) + 1
    if any(n > 2 for n in per_gpu.values()):
        problems.append(f"more than jobs_per_gpu=2 slots on one GPU: {data['slots']}")
    if problems:
        raise SectionFailed("; ".join(problems), data)
    return data


def sweep_packed(check) -> dict:
    """Four seeds of one setting as fused seed packs (issue 25): `auto` on a GPU (one slot: one pack
    of 4, or chunks if it would not fit), 2 per pack on the CPU (where `auto` is 1). Every member
    leaves a completed run folder with its `pack` entry, compiled without graphs in timed steps, and
    the study table counts all four seeds."""
    data_dir = ROOT / check.env.get("DATA_DIR", "data")
    mnist = all((data_dir / "MNIST" / "raw" / f).is_file() for f in
                ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"))
    source = ["data=mnist"] if mnist else MNIST_SHAPED
    base = [*source, *SMOKE_PACKED, *smoke_compile()] if check.smoke else [*source, *GPU_PACKED]
    k = "2" if check.smoke else "auto"
    data, problems = _sweep(check, "sweep_packed", [*PACKED, f"seeds_per_job={k}"], 4, base)
    data["data"] = "mnist" if mnist else "synthetic, MNIST's shape (no MNIST/raw in DATA_DIR)"
    jobs = data["jobs"]
    packs = {tuple(j["pack"]["members"]): j["pack"] for j in jobs if j.get("pack")}
    data["packs"] = [{"members": list(m), "size": p.get("size"), "pack_train_images_per_s": p.get("pack_train_images_per_s")}
                     for m, p in sorted(packs.items())]
    data["test_acc"] = {j["seed"]: j.get("test/acc") for j in sorted(jobs, key=lambda j: str(j["seed"]))}
    data["notes"] = [ln for ln in _log_lines(check, "sweep_packed") if "[pack]" in ln][:5]  # chunking, refusals
    problems += [f"job {j['dir']} has no pack entry" for j in jobs if j["status"] == "completed" and not j.get("pack")]
    seeds = sorted(s for m in packs for s in m)
    if packs and seeds != [0, 1, 2, 3]:
        problems.append(f"the packs' members are {seeds}, not seeds 0-3 once each")
    for m, p in packs.items():
        if check.smoke and p.get("size") != 2:
            problems.append(f"pack {list(m)} has size {p.get('size')}, not seeds_per_job=2")
        elif not check.smoke and (p.get("size") or 0) < 2:
            problems.append(f"pack {list(m)} has size {p.get('size')}: auto made no pack on a GPU")
    expect = not check.smoke or bool(smoke_compile())
    for j in jobs:
        problems += _compile_problems(f"member seed={j['seed']}", j, expect)
        if not check.smoke and j["status"] == "completed" and j.get("peak_gpu_mem_mb") is None:
            problems.append(f"member seed={j['seed']} recorded no peak_gpu_mem_mb")
    table = _read_csv(check.out / "sweep_packed" / "summary.csv")
    data["table_n"] = [r.get("n") for r in table]
    if data["table_n"] != ["4"]:
        problems.append(f"the study table (summary.csv) has n={data['table_n'] or 'nothing'}, not one setting of n=4")
    if problems:
        raise SectionFailed("; ".join(problems), data)
    return data


def _log_lines(check, name: str) -> list[str]:
    try:
        return (check.out / "logs" / f"{name}.log").read_text(errors="replace").splitlines()
    except OSError:
        return []


def _read_csv(path: Path) -> list[dict]:
    try:
        with open(path, newline="") as f:
            return list(csv.DictReader(f))
    except OSError:
        return []


def throughput(check) -> dict:
    path = check.out / "throughput.json"
    if check.smoke:
        args = ["--device", "cpu", "--quick", "--workloads", "linear/mnist", "--compile", "off", "--activations", ""]
    else:  # train.py's batch 128, so the compiled graphs of run_default/run_seu come from Inductor's cache
        args = ["--device", "cuda", "--workloads", "resnet18/cifar10,lenet5/mnist", "--images", "10240", "--batch", "128",
                "--compile", "off,auto", "--activations", "relu,seu"]
    rc = check.sub("throughput", ["benchmarks/throughput.py", *args, "--out", str(path)], _cap(check, "throughput"))
    rows = _read(path)
    if rc != 0 or not rows:
        raise RuntimeError(f"exit {rc}: {check.log_tail('throughput')}")
    return {"args": args, "rows": rows}


def activations(check) -> dict:
    path = check.out / "activations.json"
    if check.smoke:
        args = ["--device", "cpu", "--activations", "relu,seu", "--batch", "8", "--steps", "1", "--warmup", "1",
                "--rounds", "1"]
    else:
        args = ["--device", "cuda", "--compile", "--activations", "relu,seu,m_tanh", "--batch", "512", "--steps", "20",
                "--warmup", "3", "--rounds", "2"]
    rc = check.sub("activations", ["benchmarks/activations.py", *args, "--out", str(path)], _cap(check, "activations"))
    r = _read(path)
    if rc != 0 or not r:
        raise RuntimeError(f"exit {rc}: {check.log_tail('activations')}")
    return {"args": args, **r}


def plan(smoke: bool):
    """(sections run side by side, sections run one at a time after them), in report order."""
    concurrent = [("environment", environment), ("kernels", kernels), ("sweep_sequential", sweep_sequential),
                  ("sweep_parallel", sweep_parallel), ("sweep_packed", sweep_packed)]
    serial = [(f"run_{v}", run(v)) for v in RUNS] + [("throughput", throughput), ("activations", activations)]
    return concurrent, serial
