"""Training throughput of our train.py path against the usual DataLoader loop, in one process on
one device, printed as img/s and ratios (a benchmark, never a timed test).

    python benchmarks/throughput.py --device cuda                  # the H100 table
    python benchmarks/throughput.py --device cpu --quick           # smoke run (CI)

Rows, per workload (ResNet18 on CIFAR-10-shaped data, LeNet-5 on MNIST-shaped data, and a linear
classifier on MNIST-shaped data, whose step costs almost nothing on the device, so its µs/step is
the framework's own per-step time: the Lightning overhead that CUDA graphs cannot remove):
  typical loop   torch Dataset of PIL images, DataLoader workers, RandomCrop+flip, fp32
  plain loop     our tensor-resident data + batched augmentation, no Lightning (bf16, channels_last on GPU)
  ours           python train.py's own path (Lightning Trainer, our modules), per trainer.compile mode
and, for ResNet18, `ours` per activation with its ratio to ReLU. Synthetic pixels: throughput does
not depend on their values. `ours` is the last epoch's training img/s; compile time is excluded
and printed apart; eval img/s is the test pass.

A speed measurement must not depend on the optimisation staying finite: every row trains at
lr=BENCH_LR (0.01, not the study's 0.1, at which random labels drive ResNet18's test loss to ~1000),
and a row whose loss still turns NaN/Inf keeps its timing and is marked `diverged` instead of
aborting the table (m_tanh's quintic overflows ResNet18's residual stream at initialisation, at any
learning rate; NaN arithmetic costs the same as finite arithmetic, so its img/s stays valid).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from src.compose import compose_config  # noqa: E402
from src.datamodules.augment import normalize, random_crop_flip  # noqa: E402
from src.datamodules.loader import TensorBatchLoader  # noqa: E402
from src.models import FCN, LeNet5, ResNet18  # noqa: E402

MNIST_SHAPED = ["data=synthetic", "data.channels=1", "data.image_size=28", "data.augment=none",
                "data.mean=[0.1307]", "data.std=[0.3081]"]

WORKLOADS = {
    # name: (model overrides, data overrides, model builder, shape, augment)
    "resnet18/cifar10": (["model=resnet18"], ["data=synthetic"], lambda: ResNet18(3, 10), (3, 32, 32), True),
    "lenet5/mnist": (["model=lenet5", "activation=tanh"], MNIST_SHAPED,
                     lambda: LeNet5(1, 10, "tanh", image_size=28), (1, 28, 28), False),
    "linear/mnist": (["model=fcn", "model.hidden_sizes=[]"], MNIST_SHAPED,
                     lambda: FCN(1, 10, image_size=28, hidden_sizes=()), (1, 28, 28), False),
}


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


WARMUP = 3
BENCH_LR = 0.01  # the same in every pipeline: the rows differ in the data path only


def _timed_steps(step, batches, warmup: int, device) -> float:
    """img/s over the batches after `warmup` steps."""
    it = iter(batches)
    for _ in range(warmup):
        step(*next(it))
    _sync(device)
    t, n = time.perf_counter(), 0
    for x, y in it:
        step(x, y)
        n += len(y)
    _sync(device)
    return n / (time.perf_counter() - t)


def _sgd_step(model, device, amp: bool, channels_last: bool):
    opt = torch.optim.SGD(model.parameters(), lr=BENCH_LR, momentum=0.9, nesterov=True, weight_decay=5e-4)

    def step(x, y):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


class _PILDataset(torch.utils.data.Dataset):
    """What most training scripts do: one PIL image per sample through torchvision transforms."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, augment: bool, mean, std):
        from torchvision import transforms as T

        self.images, self.labels = images, labels
        ops = [T.RandomCrop(images.shape[1], padding=4), T.RandomHorizontalFlip()] if augment else []
        self.tf = T.Compose([*ops, T.ToTensor(), T.Normalize(mean, std)])

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        from PIL import Image

        img = self.images[i]
        return self.tf(Image.fromarray(img.squeeze(-1) if img.shape[-1] == 1 else img)), int(self.labels[i])


def typical_loop(builder, shape, augment, n, batch, device, workers) -> float:
    c, h, w = shape
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, h, w, c), dtype=np.uint8)
    ds = _PILDataset(images, rng.integers(0, 10, n), augment, [0.5] * c, [0.25] * c)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers, drop_last=True,
                                         pin_memory=device.type == "cuda", persistent_workers=False)
    model = builder().to(device)
    return _timed_steps(_sgd_step(model, device, amp=False, channels_last=False), loader, WARMUP, device)


def plain_loop(builder, shape, augment, n, batch, device) -> float:
    """Our data path without Lightning: the reference for Lightning's per-step overhead."""
    gpu = device.type == "cuda"
    x = torch.randint(0, 256, (n, *shape), dtype=torch.uint8, device=device)
    y = torch.randint(0, 10, (n,), device=device)
    mean = torch.full((1, shape[0], 1, 1), 0.5, device=device)
    std = torch.full((1, shape[0], 1, 1), 0.25, device=device)
    model = builder().to(device)
    if gpu:
        model = model.to(memory_format=torch.channels_last)
    inner = _sgd_step(model, device, amp=gpu, channels_last=False)

    def step(xb, yb):
        inner(normalize(random_crop_flip(xb) if augment else xb, mean, std), yb)

    return _timed_steps(step, TensorBatchLoader(x, y, batch, shuffle=True, drop_last=True), WARMUP, device)


def ours(model_ov, data_ov, extra, n, batch, epochs, device, out_dir) -> dict:
    """Short epochs through train() (two: the second epoch's img/s is the steady state; --quick runs
    one, a smoke run's numbers mean nothing): the last epoch's img/s."""
    from train import train

    n_test = max(batch, n // 5)
    overrides = [*model_ov, *data_ov, f"data.synthetic_sizes=[{n},{n_test}]", f"data.batch_size={batch}",
                 f"data.eval_batch_size={2 * batch}", f"trainer.max_epochs={epochs}",
                 f"trainer.accelerator={'gpu' if device.type == 'cuda' else 'cpu'}", "trainer.num_sanity_val_steps=0",
                 "trainer.limit_val_batches=0", "trainer.enable_model_summary=false", "~callbacks.progress_bar",
                 "~callbacks.model_checkpoint", "trainer.enable_checkpointing=false", "logger=csv", "lit.log_images=false", "data.on_device=auto", *extra]
    run = Path(tempfile.mkdtemp(dir=out_dir))
    cfg = compose_config([*overrides, f"optimizer.lr={BENCH_LR}"], run)
    with _divergence_recorded() as diverged:
        train(cfg)
    m = json.loads((run / "metrics.json").read_text())
    import pandas as pd

    log = pd.read_csv(run / "csv" / "metrics.csv")
    last = log["time/train_images_per_s"].dropna().iloc[-1]
    return {"img_s": float(last), "eval_img_s": m["test_images_per_s"], "compile_s": m["compile_s"],
            "peak_mb": m["peak_gpu_mem_mb"], "epoch_s": m["epoch_time_mean_s"], "diverged": bool(diverged)}


@contextlib.contextmanager
def _divergence_recorded():
    """Within the block, a non-finite training loss is noted (in the yielded list) instead of
    raising Diverged, so that the run finishes its timed epochs (see the module docstring)."""
    from src.lit.classifier import ClassifierModule

    seen: list[int] = []
    original = ClassifierModule._raise_if_diverged

    def note(self):
        if int(self._bad_step) >= 0:
            seen.append(int(self._bad_step))

    ClassifierModule._raise_if_diverged = note
    try:
        yield seen
    finally:
        ClassifierModule._raise_if_diverged = original


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--quick", action="store_true", help="tiny sizes: a CPU smoke run")
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    ap.add_argument("--compile", default="off,auto", help="trainer.compile modes for `ours` (comma list)")
    ap.add_argument("--activations", default="relu,swish,seu,cos,m_tanh,formula")
    ap.add_argument("--activation-compile", default="auto", help="trainer.compile for the activation rows")
    ap.add_argument("--images", type=int, default=None, help="training images per epoch")
    ap.add_argument("--batch", type=int, default=None, help="images per step for every workload "
                    "(default 512 for ResNet18, 128 for the others; gpu_check.py uses train.py's 128, "
                    "whose compiled graphs Inductor then has cached)")
    ap.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    ap.add_argument("--out", default=None, help="also write the table as JSON here")
    args = ap.parse_args(argv)

    device = torch.device(args.device)
    quick = args.quick
    # (batch, images); --quick: two steps of each row (the first is the loops' warm-up), one epoch of
    # `ours`: every row and ratio still computed, in a third of the time (8 of the rows train ResNet18)
    sizes = {"resnet18/cifar10": (8 if quick else 512, 16 if quick else 20_480),
             "lenet5/mnist": (64 if quick else 128, 128 if quick else 60_000),
             "linear/mnist": (64 if quick else 128, 128 if quick else 60_000)}
    epochs = 1 if quick else 2
    if args.batch:
        sizes = {wl: (args.batch, n) for wl, (_, n) in sizes.items()}
    if quick:
        global WARMUP
        args.workers, WARMUP = min(args.workers, 2), 1
    rows: list[dict] = []
    tmp = tempfile.mkdtemp(prefix="bench-")
    for wl in args.workloads.split(","):
        model_ov, data_ov, builder, shape, augment = WORKLOADS[wl]
        batch, n = sizes[wl]
        n = args.images or n
        base = typical_loop(builder, shape, augment, min(n, 4 * batch if quick else n), batch, device, args.workers)
        rows.append({"workload": wl, "pipeline": f"typical loop ({args.workers} workers, PIL, fp32)", "img_s": base})
        plain = plain_loop(builder, shape, augment, n, batch, device)
        rows.append({"workload": wl, "pipeline": "plain loop, tensor data", "img_s": plain})
        for mode in args.compile.split(","):
            r = ours(model_ov, data_ov, [f"trainer.compile={mode}"], n, batch, epochs, device, tmp)
            rows.append({"workload": wl, "pipeline": f"ours, compile={mode}", **r,
                         "lightning_overhead": plain / r["img_s"] - 1 if mode == "off" else None,
                         "overhead_us": 1e6 * batch * (1 / r["img_s"] - 1 / plain) if mode == "off" else None})
        for r in rows:
            if r["workload"] == wl:
                r["vs_typical"] = r["img_s"] / base
    acts = [a for a in args.activations.split(",") if a]
    if acts and "resnet18/cifar10" in args.workloads:
        model_ov, data_ov, *_ = WORKLOADS["resnet18/cifar10"]
        batch, n = sizes["resnet18/cifar10"]
        n = args.images or n
        relu = None
        for act in acts:
            r = ours(["model=resnet18", f"activation={act}"], data_ov, [f"trainer.compile={args.activation_compile}"],
                     n, batch, epochs, device, tmp)
            if act == "relu":
                relu = r["img_s"]
            rows.append({"workload": "resnet18/cifar10", "pipeline": f"ours, activation={act}", **r,
                         "vs_relu": r["img_s"] / relu if relu else None})
    for r in rows:
        r["us_per_step"] = 1e6 * sizes[r["workload"]][0] / r["img_s"]
    _print(rows, device)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2))
    return 0


def _print(rows, device) -> None:
    from rich.console import Console
    from rich.table import Table

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    t = Table(title=f"training throughput on {name}")
    for col in ("workload", "pipeline", "img/s", "µs/step", "x typical", "vs relu", "eval img/s", "compile s",
                "Lightning overhead"):
        t.add_column(col, justify="left" if col in ("workload", "pipeline") else "right")

    def f(v, fmt):
        return "" if v is None else format(v, fmt)

    for r in rows:
        pipeline = r["pipeline"] + (" (diverged)" if r.get("diverged") else "")
        t.add_row(r["workload"], pipeline, f(r["img_s"], ",.0f"), f(r.get("us_per_step"), ",.0f"),
                  f(r.get("vs_typical"), ".2f"),
                  f(r.get("vs_relu"), ".3f"), f(r.get("eval_img_s"), ",.0f"), f(r.get("compile_s"), ".1f"),
                  "" if r.get("lightning_overhead") is None
                  else f"{r['lightning_overhead']:+.1%} ({r['overhead_us']:+,.0f} µs/step)")
    Console(width=160).print(t)
    if any(r.get("diverged") for r in rows):
        print("(diverged): the training loss became NaN/Inf; the row's img/s is still valid (same arithmetic)")


if __name__ == "__main__":
    sys.exit(main())
