"""Training throughput of ResNet18 per activation, and its ratio to ReLU measured in the same run.

    python benchmarks/activations.py --device cuda                       # eager, bf16, channels_last
    python benchmarks/activations.py --device cuda --compile             # eager and torch.compile
    python benchmarks/activations.py --device cpu --steps 2 --batch 8    # smoke test
    python benchmarks/activations.py --device cuda --compile --out acts.json   # also as JSON (gpu_check.py)

One training step = forward, cross-entropy, backward, SGD (momentum) update on synthetic
CIFAR-shaped data already on the device. On CUDA the step runs under bf16 autocast with
channels_last tensors. Every activation is timed ``--rounds`` times, interleaved (relu, a, b, ...,
relu, a, b, ...), and the median is reported, so slow drifts of the machine hit all alike.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere without install

from src.models.resnet import ResNet18  # noqa: E402
from src.models.activations import activation_factory  # noqa: E402

DEFAULT = "relu,leakyrelu,silu,gelu,mish,seu,cos,taylor,m_tanh,m_sigmoid,m_softplus,formula"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Bench:
    """One model + optimizer + data for one activation; ``run(steps)`` returns images/s."""

    def __init__(self, name: str, args, device: torch.device, compiled: bool):
        torch.manual_seed(0)
        self.device, self.cuda = device, device.type == "cuda"
        fmt = torch.channels_last if self.cuda else torch.contiguous_format
        model = ResNet18(3, 10, act_layer=activation_factory(name)).to(device, memory_format=fmt)
        self.opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        self.model = torch.compile(model) if compiled else model
        self.x = torch.randn(args.batch, 3, 32, 32, device=device).contiguous(memory_format=fmt)
        self.y = torch.randint(0, 10, (args.batch,), device=device)
        self.batch = args.batch
        self.run(args.warmup)

    def step(self) -> None:
        amp = torch.autocast("cuda", dtype=torch.bfloat16) if self.cuda else contextlib.nullcontext()
        with amp:
            loss = F.cross_entropy(self.model(self.x), self.y)
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)

    def run(self, steps: int) -> float:
        if steps <= 0:
            return 0.0
        _sync(self.device)
        t = time.perf_counter()
        for _ in range(steps):
            self.step()
        _sync(self.device)
        return steps * self.batch / (time.perf_counter() - t)


def measure(names: list[str], args, device: torch.device, compiled: bool) -> dict[str, float]:
    if not compiled:
        return _measure(names, args, device, compiled)
    # every bench is a ResNet18 alive at once (interleaved rounds): Dynamo keeps their graphs
    # under one code object, at most `recompile_limit` (8) of them, and would run the rest
    # eagerly after a warning. Room for each, and a loud failure should that ever not hold
    # (torch's own patch: the process's settings come back afterwards).
    torch._dynamo.reset()
    with torch._dynamo.config.patch(recompile_limit=max(8, 2 * len(names)), fail_on_recompile_limit_hit=True):
        return _measure(names, args, device, compiled)


def _measure(names: list[str], args, device: torch.device, compiled: bool) -> dict[str, float]:
    benches = {}
    for name in names:
        t = time.perf_counter()
        benches[name] = Bench(name, args, device, compiled)
        if args.verbose:
            print(f"  built {name} ({time.perf_counter() - t:.1f} s incl. warm-up)", file=sys.stderr)
    rates: dict[str, list[float]] = {n: [] for n in names}
    for _ in range(args.rounds):
        for name in names:
            rates[name].append(benches[name].run(args.steps))
    del benches
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {n: statistics.median(r) for n, r in rates.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, default=None, help="images per step (default 512 on cuda, 32 on cpu)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per round (default 50 on cuda, 3 on cpu)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 10 on cuda, 1 on cpu)")
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds, median reported (default 3 on cuda, 1 on cpu)")
    p.add_argument("--activations", default=DEFAULT, help=f"comma-separated (default: {DEFAULT})")
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads (default 1: stable on a shared machine, where OpenMP spinning "
                        "makes 2+ threads erratic)")
    p.add_argument("--compile", action="store_true", help="also measure torch.compile(model)")
    p.add_argument("--verbose", action="store_true")
    p.add_argument("--out", default=None, help="also write the table as JSON here")
    args = p.parse_args(argv)
    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device here")
    for key, gpu, cpu in (("batch", 512, 32), ("steps", 50, 3), ("warmup", 10, 1), ("rounds", 3, 1)):
        if getattr(args, key) is None:
            setattr(args, key, gpu if cuda else cpu)
    names = [n.strip() for n in args.activations.split(",") if n.strip()]
    names = ["relu"] + [n for n in names if n != "relu"]
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = True
    if not cuda:
        torch.set_num_threads(args.threads)

    where = torch.cuda.get_device_name(device) if cuda else f"CPU, {torch.get_num_threads()} thread(s)"
    print(f"ResNet18 training step, {where}, batch {args.batch}, {args.steps} steps x {args.rounds} rounds"
          + (", bf16 autocast, channels_last" if cuda else ", float32") + f", torch {torch.__version__}")
    modes = [("eager", False)] + ([("compiled", True)] if args.compile else [])
    results = {mode: measure(names, args, device, compiled) for mode, compiled in modes}
    header = f"{'activation':<12}" + "".join(f"{m + ' img/s':>16}{'vs relu':>9}" for m, _ in modes)
    print(header)
    print("-" * len(header))
    for name in names:
        row = f"{name:<12}"
        for mode, _ in modes:
            r = results[mode]
            row += f"{r[name]:>16,.0f}{r[name] / r['relu']:>9.3f}"
        print(row)
    if args.out:
        rows = [{"activation": n, **{f"{m}_img_s": results[m][n] for m, _ in modes},
                 **{f"{m}_vs_relu": results[m][n] / results[m]["relu"] for m, _ in modes}} for n in names]
        Path(args.out).write_text(json.dumps({"device": where, "batch": args.batch, "steps": args.steps,
                                              "rounds": args.rounds, "modes": [m for m, _ in modes],
                                              "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
