"""Fused seed packs (issue 25): training img/s of K seeds trained as one vectorised model
(src/packs/stack.py), against one standalone run and against K processes sharing the device.

    python benchmarks/fused.py --device cuda                          # the H100/H200 tables
    python benchmarks/fused.py --device cpu --smoke                   # CI: lenet5, resnet20, K=1,2,4
    python benchmarks/fused.py --device cuda --cells lenet5:16,resnet20:8 --out fused.json

A training step (forward, loss, backward, SGD momentum step) on synthetic tensors of the real image
shapes (MNIST 1x28x28, CIFAR-10 3x32x32) already on the device; pixel values do not change speed:
  one run         one standalone model (the config's nn.Module) stepping alone: img/s_1, also the img/s
                  of "K separate runs one after another" (K times the time for K times the images).
  pack            StackedModel of K members (member k built under torch.manual_seed(k)); loss = sum of
                  the members' mean cross-entropies, one optimizer step over the stacked parameters;
                  img/s summed over members = K*B*steps/time.
  jobs_per_gpu=K  K spawned processes, each stepping its own standalone model on the same device,
                  started together behind a barrier; img/s = all their images / (last end - first start).
--compile auto = reduce-overhead on CUDA, off on the CPU (trainer.compile=auto), for every column.
On CUDA all run as train.py does: bf16 autocast, channels_last for a standalone model (a pack's 5-D
weights stay contiguous: StackedModel.is_pack). Warm-up steps (compiling, CUDA graph recording) are
not timed; img/s is the median of --rounds rounds (a busy machine's slow round does not count). A
pack of 2 is first checked against its standalone member (check_member_equivalence): a wrong pack's speed is worthless.
"""
from __future__ import annotations

import argparse
import copy
import gc
import json
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere without install

from src.compose import compose_config  # noqa: E402
from src.lit.compile_state import compile_in_place, fresh_compiler_state, graphs_compiled  # noqa: E402
from src.lit.speed import resolve_compile  # noqa: E402
from src.packs.stack import StackedModel  # noqa: E402

MODELS = {  # name: (config overrides, input shape, label)
    "lenet5": (["model=lenet5", "data=mnist"], (1, 28, 28), "LeNet-5/MNIST"),
    "resnet20": (["model=resnet20", "data=cifar10"], (3, 32, 32), "ResNet-20/CIFAR-10"),
    "resnet18": (["model=resnet18", "data=cifar10"], (3, 32, 32), "ResNet18/CIFAR-10"),
}
GOALS = (("lenet5", 16, 10.0), ("resnet20", 8, 3.0))  # issue 25, on one H100/H200
LR = 0.01          # a speed measurement must not depend on the optimisation staying finite
CHECK_TOL = 1e-4   # relative: member 0 of a pack against its standalone model
NUM_CLASSES = 10


def model_spec(name: str) -> dict:
    """The model's resolved config (plain dict): instantiated here and in the spawned workers without
    composing Hydra again."""
    with tempfile.TemporaryDirectory(prefix="fused-") as run_dir:  # nothing is written there
        return OmegaConf.to_container(compose_config(MODELS[name][0], run_dir).model, resolve=True)


def build(spec: dict, seed: int, device: torch.device) -> torch.nn.Module:
    torch.manual_seed(seed)
    return instantiate(spec).to(device)


def pack_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Sum of the members' mean cross-entropies, in one call: member k's gradient is its own run's."""
    k, b = y.shape
    return F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view(k, b).mean(1).sum()


class Stepper:
    """One model (standalone, or a pack when ``members`` is given), its optimizer and its batch."""

    def __init__(self, model, shape, batch, members, device, mode, backend):
        self.device, self.members, self.model = device, members, model  # compiled below, in place
        cuda = device.type == "cuda"
        lead = (members,) if members else ()
        self.x = torch.randn(*lead, batch, *shape, device=device)
        self.y = torch.randint(0, NUM_CLASSES, (*lead, batch), device=device)
        if cuda and not members:  # train.py's channels_last=auto (src/lit/speed.py)
            model.to(memory_format=torch.channels_last)
            self.x = self.x.contiguous(memory_format=torch.channels_last)
        self.amp = cuda and torch.cuda.is_bf16_supported()  # train.py's bf16-mixed
        self.opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)
        if mode:
            compile_in_place(model, mode, backend)
        # CUDA graph trees: a new training step starts here, so the last step's outputs may be reused
        self.mark_step = mode == "reduce-overhead" and cuda

    def step(self) -> None:
        if self.mark_step:
            torch.compiler.cudagraph_mark_step_begin()
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            out = self.model(self.x)
            loss = pack_loss(out, self.y) if self.members else F.cross_entropy(out, self.y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()

    def run(self, steps: int) -> float:
        """Seconds for ``steps`` steps, the device synchronised around them."""
        sync = torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)
        sync()
        t = time.perf_counter()
        for _ in range(steps):
            self.step()
        sync()
        return time.perf_counter() - t


def _peak_mb(device: torch.device):
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def _is_oom(exc: BaseException) -> bool:
    # Inductor's autotuning and CUDA graph recording re-raise an OOM under their own types
    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


def _one_line(e: BaseException) -> str:
    return " ".join(f"{type(e).__name__}: {e}".split())[:300]


def cell(fn, device: torch.device) -> dict:
    """One measurement; a CUDA OOM (a large K) or a compile error becomes the cell's status instead of
    ending the table. Memory and compiled graphs of the cell are released afterwards."""
    fresh_compiler_state(device)  # each cell compiles its own graphs, none left from the last K
    try:
        return {"status": "ok", **fn()}
    except Exception as e:  # noqa: BLE001 -- fault isolation: the next cell still runs
        return {"status": "OOM"} if _is_oom(e) else {"status": "error", "error": _one_line(e)}
    finally:
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()


def measure(spec, shape, members, args, device) -> dict:
    """img/s of one standalone model (members=None) or of a pack of ``members``."""
    model = (StackedModel([build(spec, k, device) for k in range(members)]).to(device) if members
             else build(spec, 0, device))
    st = Stepper(model, shape, args.batch_size, members, device, args.mode, args.backend)
    st.run(args.warmup)
    graphs = graphs_compiled()
    secs = statistics.median(st.run(args.steps) for _ in range(args.rounds))
    return {"img_s": (members or 1) * args.batch_size * args.steps / secs, "seconds": secs,  # of a round
            "steps": args.steps, "batch": args.batch_size, "peak_mb": _peak_mb(device),
            "graphs_while_timed": graphs_compiled() - graphs}  # > 0: compile time inside the img/s


def check_member_equivalence(spec, shape, device, batch: int = 16) -> dict:
    """Member 0 of a pack of 2, after two SGD-momentum steps (the momentum buffer in use), gives the
    outputs (eval mode: its running statistics too) of its standalone model stepped the same way, in
    fp32 without TF32 or cuDNN's autotuned (Winograd, FFT) algorithms, where grouped and plain
    convolutions would round differently. Raises otherwise."""
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    saved = (cudnn.allow_tf32, matmul.allow_tf32, cudnn.benchmark)
    cudnn.allow_tf32 = matmul.allow_tf32 = cudnn.benchmark = False
    try:
        models = [build(spec, k, device) for k in range(2)]
        alone = copy.deepcopy(models[0])
        pack = StackedModel(models)
        x = torch.randn(2, batch, *shape, device=device)
        y = torch.randint(0, NUM_CLASSES, (2, batch), device=device)
        opts = [torch.optim.SGD(m.parameters(), lr=LR, momentum=0.9) for m in (pack, alone)]
        for _ in range(2):
            for opt, loss in ((opts[0], lambda: pack_loss(pack(x), y)),
                              (opts[1], lambda: F.cross_entropy(alone(x[0]), y[0]))):
                opt.zero_grad(set_to_none=True)
                loss().backward()
                opt.step()
        with torch.no_grad():  # eval mode: the running statistics are compared too
            a, b = pack.eval()(x)[0], alone.eval()(x[0])
        err = float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))
    finally:
        cudnn.allow_tf32, matmul.allow_tf32, cudnn.benchmark = saved
    if not err <= CHECK_TOL:
        raise RuntimeError(f"pack member 0 differs from its standalone model after 2 steps: relative error "
                           f"{err:.2e} > {CHECK_TOL:g}: the pack trains something else; no speed is worth reporting")
    return {"members": 2, "steps": 2, "batch": batch, "max_rel_err": err, "ok": True}


# ----------------------------------------------------------------------------- jobs_per_gpu=K
def _worker(rank, spec, shape, args, device_str, threads, barrier, queue) -> None:
    """One of K processes: its own standalone model and compile; times its steps after the barrier."""
    device = torch.device(device_str)
    try:
        if device.type == "cpu":
            torch.set_num_threads(threads)
        # K processes compile at once: each its share of the cores for Inductor's compile workers
        torch._inductor.config.compile_threads = max(1, (os.cpu_count() or 1) // barrier.parties)
        st = Stepper(build(spec, rank, device), shape, args.batch_size, None, device, args.mode, args.backend)
        st.run(args.warmup)
        barrier.wait(timeout=args.concurrent_timeout)
        start = time.monotonic()  # CLOCK_MONOTONIC: one clock for every process of the machine
        st.run(args.steps * args.rounds)  # one span: the K processes overlap in it
        queue.put({"rank": rank, "start": start, "end": time.monotonic(), "peak_mb": _peak_mb(device)})
    except BaseException as e:  # noqa: BLE001 -- told to the parent, which must not wait for this one
        barrier.abort()
        queue.put({"rank": rank, "oom": _is_oom(e), "error": _one_line(e)})


def concurrent(spec, shape, k: int, args, device) -> dict:
    """K processes at once on one device, as a sweep with jobs_per_gpu=K runs them."""
    threads = max(1, args.threads // k)  # a CPU sweep job's share of the cores (trainer.threads=auto)
    ctx = mp.get_context("spawn")  # CUDA cannot be forked
    barrier, queue = ctx.Barrier(k), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(r, spec, shape, args, str(device), threads, barrier, queue), daemon=True)
             for r in range(k)]
    for p in procs:
        p.start()
    results = []
    try:
        for _ in range(k):
            results.append(queue.get(timeout=args.concurrent_timeout + 60))
    except Exception:  # noqa: BLE001 -- queue.Empty: a worker hung or died without a word
        results.append({"error": f"no result from {k - len(results)} worker(s) in time"})
    for p in procs:
        p.join(timeout=30)
        if p.is_alive():
            p.terminate()  # our own worker, by its handle
    if bad := [r for r in results if "error" in r]:  # an OOM's message says so: the cell reads OOM
        oom = any(r.get("oom") for r in bad)
        raise RuntimeError("a jobs_per_gpu worker ran out of memory" if oom else bad[0]["error"])
    secs = max(r["end"] for r in results) - min(r["start"] for r in results)
    peaks = [r["peak_mb"] for r in results if r["peak_mb"] is not None]
    return {"img_s": k * args.batch_size * args.steps * args.rounds / secs, "seconds": secs, "threads": threads,
            "peak_mb": sum(peaks) if peaks else None}


# ----------------------------------------------------------------------------- report
def _fmt(c: dict | None, key="img_s", fmt=",.0f") -> str:
    return "–" if not c else format(c[key], fmt) if c["status"] == "ok" else c["status"]


def _ratio(c, base) -> float | None:
    ok = c and base and c["status"] == "ok" and base["status"] == "ok"
    return c["img_s"] / base["img_s"] if ok else None


def goals(result: dict) -> list[dict]:
    out = []
    for name, k, target in GOALS:
        row = next((r for r in result["models"].get(name, {}).get("rows", []) if r["K"] == k), None)
        ratio = row and row.get("ratio")
        verdict = "not measured" if row is None else f"not met ({row['pack']['status']})" if ratio is None else (
            "met" if ratio >= target else "not met")
        out.append({"model": name, "K": k, "target": target, "ratio": ratio, "verdict": verdict})
    return out


def markdown(result: dict) -> str:
    cuda = result["device_type"] == "cuda"
    lines = [f"# Fused seed packs on {result['device']}", "",
             f"torch {result['torch']}, compile={result['compile']} ({result['compile_mode'] or 'eager'}"
             f"{', backend ' + result['backend'] if result['compile_mode'] else ''}), batch {result['batch']} per "
             f"member, median of {result['rounds']} rounds of {result['steps']} steps after {result['warmup']} warm-up "
             "step(s), "
             f"{result['precision']}; jobs_per_gpu=K: {result['concurrent_note']}", ""]
    for name, m in result["models"].items():
        base = m["one_run"]
        err, peak = m["check"]["max_rel_err"], (f" (peak {base['peak_mb']:,.0f} MB)" if base.get("peak_mb") else "")
        lines += [f"## {MODELS[name][2]}", "",
                  f"one run: {_fmt(base)} img/s{peak} = the img/s of K separate runs one after another. "
                  f"Pack check: member 0 of a pack of 2 matches its standalone model (relative error {err:.1e} "
                  f"<= {CHECK_TOL:g}).", "",
                  "| K | pack img/s | ratio vs one run | jobs_per_gpu=K img/s | ratio |"
                  + (" pack peak MB |" if cuda else ""),
                  "|---|---|---|---|---|" + ("---|" if cuda else "")]
        for r in sorted(m["rows"], key=lambda r: r["K"]):
            p, c = r["pack"], r.get("concurrent")
            row = [str(r["K"]), _fmt(p), "–" if r["ratio"] is None else f"{r['ratio']:.2f}x",
                   _fmt(c) if c else "skipped",
                   "–" if r.get("concurrent_ratio") is None else f"{r['concurrent_ratio']:.2f}x"]
            if cuda:
                row.append(_fmt(p, "peak_mb") if p.get("peak_mb") is not None or p["status"] != "ok" else "–")
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    lines += ["## Goals (issue 25: on one H100/H200)", ""]
    for g in goals(result):
        got = "" if g["ratio"] is None else f" ({g['ratio']:.2f}x)"
        lines.append(f"- {MODELS[g['model']][2]} with {g['K']} members >= {g['target']:g}x one run: {g['verdict']}{got}"
                     + ("" if cuda else " -- on the CPU, where this goal does not apply"))
    if not cuda:
        packs = [f"{n} K={r['K']}: {r['ratio']:.2f}x" for n, m in result["models"].items() for r in m["rows"]
                 if r["K"] > 1 and r["ratio"] is not None]
        lines += ["", f"On the CPU a pack measured {', '.join(packs) or 'no ratio'} of one run's img/s (expected "
                  "below 1): one model's step already keeps the CPU's threads busy, so K members cost K times the "
                  "work, plus vmap's copies. Packs pay on GPUs only, where one small model leaves most of the GPU idle "
                  "and a pack fills it with one kernel per layer; this is why seeds_per_job=auto means 1 on a CPU."]
    return "\n".join(lines) + "\n"


def _write(result: dict, out: str | None) -> None:
    """The table so far (rewritten after every cell: a killed run still leaves what it measured)."""
    if not out:
        return
    path = Path(out)
    full = {**result, "goals": goals(result), "markdown": markdown(result)}
    text = full["markdown"] if path.suffix == ".md" else json.dumps(full, indent=2)
    (tmp := path.with_name(path.name + ".tmp")).write_text(text)
    os.replace(tmp, path)


def plan(args) -> list[tuple[str, int]]:
    """(model, K) cells in run order: --cells as given (a budgeted run puts the goal cells first, so a
    timeout loses the least), else --models x --members; a model's one run comes before its first."""
    if args.cells:
        return [(name.strip(), int(k)) for name, k in (item.split(":") for item in args.cells.split(","))]
    return [(m.strip(), int(k)) for m in args.models.split(",") if m.strip() for k in args.members.split(",")]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--smoke", action="store_true", help="CPU CI mode: lenet5 and resnet20, K=1,2,4, batch 32, "
                    "3x3 steps, no jobs_per_gpu column (unless --concurrent)")
    ap.add_argument("--models", default=None, help="comma list (default lenet5,resnet20,resnet18)")
    ap.add_argument("--members", default=None, help="pack sizes K, comma list (default 1,2,4,8,16,32)")
    ap.add_argument("--cells", default=None, help="model:K list in run order, instead of --models x --members")
    ap.add_argument("--steps", type=int, default=None, help="timed steps a round (cuda 20, cpu 5, smoke 3)")
    ap.add_argument("--rounds", type=int, default=3, help="timed rounds, median reported (jobs_per_gpu=K: one span)")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (default all cores; smoke 1: on a busy CI "
                    "machine OpenMP's spinning makes 2+ threads erratic, as in activations.py)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 5; 1 smoke)")
    ap.add_argument("--batch-size", type=int, default=None, help="images per member per step (default 128; 32 smoke)")
    ap.add_argument("--compile", default="auto", help="off | auto | a torch.compile mode, for every column")
    ap.add_argument("--backend", default="inductor", help="torch.compile backend (eager/aot_eager: graph capture only)")
    ap.add_argument("--concurrent", action="store_true", default=None, help="measure jobs_per_gpu=K (smoke: off)")
    ap.add_argument("--no-concurrent", dest="concurrent", action="store_false", help="skip jobs_per_gpu=K")
    ap.add_argument("--concurrent-timeout", type=float, default=600, help="seconds the K workers may take to warm up")
    ap.add_argument("--out", default=None, help="also write the result here: .md as markdown, else JSON")
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: no CUDA device here")
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    s = args.smoke
    args.models = args.models or ("lenet5,resnet20" if s else ",".join(MODELS))
    args.members = args.members or ("1,2,4" if s else "1,2,4,8,16,32")
    args.steps = args.steps or (3 if s else 20 if cuda else 5)
    args.warmup = args.warmup if args.warmup is not None else (1 if s else 5)
    args.batch_size = args.batch_size or (32 if s else 128)
    args.concurrent = (not s) if args.concurrent is None else args.concurrent
    args.mode = resolve_compile(args.compile, device)
    args.threads = args.threads or (1 if s else os.cpu_count() or 1)
    torch.set_num_threads(args.threads)
    todo = plan(args)
    if unknown := {name for name, _ in todo} - set(MODELS):
        ap.error(f"unknown model(s) {sorted(unknown)}: use {', '.join(MODELS)}")
    torch.backends.cudnn.benchmark = True
    result = {
        "device": torch.cuda.get_device_name(device) if cuda else f"CPU ({torch.get_num_threads()} threads)",
        "device_type": device.type, "torch": torch.__version__, "compile": args.compile, "compile_mode": args.mode,
        "backend": args.backend, "batch": args.batch_size, "steps": args.steps, "rounds": args.rounds,
        "warmup": args.warmup,
        "precision": "bf16 autocast" if cuda and torch.cuda.is_bf16_supported() else "fp32",
        "concurrent_note": (("K spawned processes, each its own model and compile, started together behind a barrier"
                             + ("" if cuda else f", each with max(1, {args.threads} // K) CPU threads"))
                            if args.concurrent else f"skipped (--no-concurrent{', the --smoke default' if s else ''})"),
        "models": {}}
    t0 = time.perf_counter()
    specs: dict[str, dict] = {}
    for name, k in todo:
        _, shape, label = MODELS[name]
        if name not in specs:
            spec = specs[name] = model_spec(name)
            print(f"[fused] {label}: checking a pack of 2 against its standalone member", flush=True)
            m = result["models"][name] = {"check": check_member_equivalence(spec, shape, device), "rows": []}
            m["one_run"] = cell(lambda: measure(spec, shape, None, args, device), device)
            print(f"[fused] {label} one run: {_fmt(m['one_run'])} img/s", flush=True)
            _write(result, args.out)
        spec, m = specs[name], result["models"][name]
        row = {"K": k, "pack": cell(lambda: measure(spec, shape, k, args, device), device)}
        row["ratio"] = _ratio(row["pack"], m["one_run"])
        if args.concurrent:
            row["concurrent"] = cell(lambda: concurrent(spec, shape, k, args, device), device)
            row["concurrent_ratio"] = _ratio(row["concurrent"], m["one_run"])
        m["rows"].append(row)
        print(f"[fused] {label} K={k}: pack {_fmt(row['pack'])} img/s"
              + ("" if row["ratio"] is None else f" ({row['ratio']:.2f}x)"), flush=True)
        _write(result, args.out)
    result["total_s"] = round(time.perf_counter() - t0, 1)
    _write(result, args.out)
    print(markdown(result))
    cells = [c for m in result["models"].values() for r in [{"pack": m["one_run"]}, *m["rows"]]
             for c in (r["pack"], r.get("concurrent") or {"status": "ok"})]
    return 1 if any(c["status"] == "error" for c in cells) else 0  # an OOM is a result, an error is not


if __name__ == "__main__":
    raise SystemExit(main())
