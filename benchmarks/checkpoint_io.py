"""Checkpoint I/O per epoch: Lightning's `save_last=True` against our LatestCheckpoint (last.ckpt a
link to the epoch's top-k file, or a file of its own when the epoch did not improve).

    python benchmarks/checkpoint_io.py                  # ResNet18 (11.17M params, SGD momentum), 6 epochs
    python benchmarks/checkpoint_io.py --model lenet5   # smoke run

The model trains one tiny batch per epoch; val/acc follows a fixed script (improves on epochs 0, 1,
3, 4; not on 2 and the last, 5), so both policies see the same best/not-best epochs. Every trainer.save_checkpoint
call is timed and the bytes it wrote counted. Also printed: whether last.ckpt holds the latest
epoch after the run (what resume=true continues from).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from src.lit.checkpoint import LatestCheckpoint  # noqa: E402
from src.models import LeNet5, ResNet18  # noqa: E402

VAL_ACC = [0.30, 0.50, 0.45, 0.60, 0.70, 0.65]


class Scripted(L.LightningModule):
    def __init__(self, model: torch.nn.Module, shape):
        super().__init__()
        self.model, self.shape = model, shape

    def training_step(self, batch, i):
        x = torch.randn(2, *self.shape)
        return F.cross_entropy(self.model(x), torch.tensor([0, 1]))

    def validation_step(self, batch, i):
        self.log("val/acc", VAL_ACC[self.current_epoch], batch_size=1)

    def configure_optimizers(self):  # momentum buffers: a checkpoint holds 2 copies of the weights
        return torch.optim.SGD(self.parameters(), lr=0.01, momentum=0.9, nesterov=True)

    def train_dataloader(self):
        return [0]

    def val_dataloader(self):
        return [0]


def run(policy: str, model_name: str, root: Path) -> dict:
    model, shape = (ResNet18(3, 10), (3, 32, 32)) if model_name == "resnet18" else (LeNet5(1, 10), (1, 28, 28))
    kw = dict(dirpath=root / policy, filename="epoch_{epoch:03d}", monitor="val/acc", mode="max",
              auto_insert_metric_name=False)
    if policy == "save_last=true":
        ckpt = L.pytorch.callbacks.ModelCheckpoint(save_last=True, **kw)
    else:
        ckpt = LatestCheckpoint(**kw)
    trainer = L.Trainer(max_epochs=len(VAL_ACC), accelerator="cpu", logger=False, callbacks=[ckpt],
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    per_epoch = [{"bytes": 0, "s": 0.0, "writes": 0} for _ in VAL_ACC]
    save = trainer.save_checkpoint

    def timed(filepath, *a, **k):
        t = time.perf_counter()
        save(filepath, *a, **k)
        e = per_epoch[trainer.current_epoch]
        e["s"] += time.perf_counter() - t
        e["bytes"] += Path(filepath).stat().st_size
        e["writes"] += 1

    trainer.save_checkpoint = timed
    trainer.fit(Scripted(model, shape))
    last = torch.load(root / policy / "last.ckpt", weights_only=True, map_location="cpu")["epoch"]
    return {"policy": policy, "per_epoch": per_epoch, "last_ckpt_epoch": last}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=["resnet18", "lenet5"], default="resnet18")
    args = p.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        rows = [run(policy, args.model, Path(tmp)) for policy in ("save_last=true", "LatestCheckpoint")]
    print(f"\n{args.model}: val/acc per epoch {VAL_ACC} (best on epochs 0, 1, 3, 4)")
    print("| policy | MB written, per epoch | s in checkpointing, per epoch | mean MB / s per epoch | files | last.ckpt epoch |")
    print("|---|---|---|---:|---:|---:|")
    for r in rows:
        mb = " ".join(f"{e['bytes'] / 1e6:.1f}" for e in r["per_epoch"])
        s = " ".join(f"{e['s']:.2f}" for e in r["per_epoch"])
        writes = sum(e["writes"] for e in r["per_epoch"])
        n = len(r["per_epoch"])
        mean = (f"{sum(e['bytes'] for e in r['per_epoch']) / n / 1e6:.1f} / "
                f"{sum(e['s'] for e in r['per_epoch']) / n:.2f}")
        print(f"| {r['policy']} | {mb} | {s} | {mean} | {writes} | {r['last_ckpt_epoch']} (latest: {n - 1}) |")


if __name__ == "__main__":
    main()
