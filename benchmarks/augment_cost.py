"""What each regulariser of the catalogue costs per batch, next to the training step it feeds
(a benchmark, never a timed test):

    python benchmarks/augment_cost.py --device cpu                 # the CPU table in benchmarks/README.md
    python benchmarks/augment_cost.py --device cuda --batch 512    # the GPU check (target: < 10 % of a ResNet18 step)
    python benchmarks/augment_cost.py --quick                      # smoke run (tests)

Per workload (ResNet18 on CIFAR-10-shaped batches, LeNet-5 on MNIST-shaped ones, random pixels:
the cost does not depend on them) it times the model's training step (forward, backward, SGD; bf16
autocast and channels_last on a GPU, as train.py) and each regulariser on the same batch, as
train.py runs it: the data-side ops on the uint8 batch, mixup/CutMix on the normalised float
batch, one EMA update over the model's weights. Test-time augmentation is timed against the
plain evaluation forward it adds to. `ops` counts the aten operations one call dispatches, views
left out, which on a GPU is about the number of kernel launches (what dominates small ops there).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from src.datamodules.augment import build_augment, random_crop_flip  # noqa: E402
from src.lit.averaging import WeightAverage  # noqa: E402
from src.lit.mixing import cutmix, mixup  # noqa: E402
from src.lit.tta import tta_logits  # noqa: E402
from src.models import LeNet5, ResNet18  # noqa: E402

WORKLOADS = {  # name: (model builder, image shape, cutout size)
    "resnet18/cifar10": (lambda: ResNet18(3, 10), (3, 32, 32), 16),
    "lenet5/mnist": (lambda: LeNet5(1, 10, "relu", image_size=28), (1, 28, 28), 12),
}


class _CountOps(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.n = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        returns = func._schema.returns
        view = bool(returns) and returns[0].alias_info is not None and not returns[0].alias_info.is_write
        self.n += not view  # views (detach, slices, expand...) launch no kernel
        return func(*args, **(kwargs or {}))


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device, reps: int, warmup: int = 2) -> float:
    """Median milliseconds per call."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        _sync(device)
        t = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)


def count_ops(fn) -> int:
    with _CountOps() as c:
        fn()
    return c.n


def measure(workload: str, batch: int, device: torch.device, reps: int) -> list[dict]:
    build, shape, hole = WORKLOADS[workload]
    torch.manual_seed(0)
    model = build().to(device)
    gpu = device.type == "cuda"
    if gpu:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
    x8 = torch.randint(0, 256, (batch, *shape), dtype=torch.uint8, device=device)
    xf = (x8.float() / 255 - 0.5) / 0.25
    y = torch.randint(0, 10, (batch,), device=device)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=gpu):
            loss = F.cross_entropy(model(xf), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    @torch.no_grad()
    def evaluate():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=gpu):
            return model(xf)

    step_ms, eval_ms = timed(step, device, reps), timed(evaluate, device, reps)
    ema = WeightAverage("ema")
    ema.track(model)
    ema.updates = 1  # time the steady-state update (lerp), not the first copy
    plain = evaluate()
    train_ops = {
        "crop_flip (existing, baseline)": lambda: random_crop_flip(x8, padding=4),
        "randaugment N=2 M=9": build_augment("none", policy="randaugment"),
        "trivialaugment": build_augment("none", policy="trivialaugment"),
        "autoaugment (CIFAR-10 policy)": build_augment("none", policy="autoaugment"),
        f"cutout 1x{hole}": build_augment("none", cutout=1, cutout_size=hole),
        "random erasing p=0.5": build_augment("none", erasing=0.5),
        "mixup alpha=0.2": lambda: mixup(xf, y, 0.2),
        "cutmix alpha=1": lambda: cutmix(xf, y, 1.0),
        "EMA update (every step)": ema.update,
    }
    rows = [{"workload": workload, "op": "model training step", "ms": step_ms, "ops": None, "pct": 100.0}]
    for name, op in train_ops.items():
        fn = (lambda op=op: op(x8)) if name.startswith(("rand", "trivial", "auto", "cutout")) else op
        ms = timed(fn, device, reps)
        rows.append({"workload": workload, "op": name, "ms": ms, "ops": count_ops(fn), "pct": 100 * ms / step_ms})
    rows.append({"workload": workload, "op": "model eval forward", "ms": eval_ms, "ops": None, "pct": None})
    for mode in ("flip", "flip_translate"):
        def tta(mode=mode):
            with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=gpu):
                return tta_logits(model, xf, plain, mode)
        ms = timed(tta, device, reps)
        rows.append({"workload": workload, "op": f"TTA {mode} (test batches only)", "ms": ms, "ops": None,
                     "pct": None, "x_eval": ms / eval_ms})
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=128, help="images per batch (train.py's default: 128)")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--quick", action="store_true", help="batch 8, one repetition: a smoke run")
    ap.add_argument("--out", default=None, help="also write the rows as JSON here")
    args = ap.parse_args(argv)
    if args.quick:
        args.batch, args.reps = 8, 1
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rows = [r for wl in args.workloads.split(",") for r in measure(wl, args.batch, device, args.reps)]
    print(f"device {device} ({torch.get_num_threads()} threads on the CPU), batch {args.batch}, median of {args.reps}")
    print("| workload | op | ms / batch | ops / call (no views) | % of the training step |")
    print("|---|---|---:|---:|---:|")
    for r in rows:
        pct = f"{r['pct']:.1f}" if r["pct"] is not None else (f"{r['x_eval']:.2f}x eval" if "x_eval" in r else "")
        ops = "" if r["ops"] is None else str(r["ops"])
        print(f"| {r['workload']} | {r['op']} | {r['ms']:.2f} | {ops} | {pct} |")
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
