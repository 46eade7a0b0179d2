"""Wall time of one Optuna search with n_jobs=1 and with n_jobs=N, measured back to back in one
run (the ratio is the figure; absolute times depend on the machine's load).

    python benchmarks/search_parallel.py                       # 8 trials, LeNet-5, 10 % MNIST, 1 epoch
    python benchmarks/search_parallel.py --jobs 4 --trials 16  # a bigger machine
    python benchmarks/search_parallel.py --smoke               # 2 trials on fabricated data (CI)

Both searches use the same sampler seed and the random sampler, so they run the same parameters;
the trial values are printed beside the times so that equal work can be checked.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def search(sweep_dir: Path, n_jobs: int, trials: int, extra: list[str]) -> tuple[float, list[float]]:
    cmd = [sys.executable, "train.py", "-m", "hparams_search=lenet_lr_batch", f"hydra.sweeper.n_trials={trials}",
           f"hydra.sweeper.n_jobs={n_jobs}", f"hydra.launcher.n_jobs={n_jobs}", "hydra.sweeper.sampler=random",
           "hydra.sweeper.pruner=none", "hydra.sweeper.confirm_seeds=0", f"hydra.sweep.dir={sweep_dir}",
           "~callbacks.progress_bar", "trainer.enable_model_summary=false", "hydra.job_logging.root.level=WARNING",
           *extra]
    start = time.perf_counter()
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "MPLBACKEND": "Agg"})
    wall = time.perf_counter() - start
    if r.returncode != 0:
        raise SystemExit(f"search failed (n_jobs={n_jobs}): {r.stderr[-2000:]}")
    values = [json.loads(p.read_text())["val/acc_best"] for p in sorted(sweep_dir.glob("trial=*/seed=0/metrics.json"))]
    return wall, values


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--smoke", action="store_true", help="2 trials on fabricated MNIST (checks the script)")
    ap.add_argument("--data-dir", default=os.environ.get("DATA_DIR", "data"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data_dir = Path(args.data_dir).resolve()
        extra = ["data.train_fraction=0.1", "data.test_fraction=0.1", "trainer.max_epochs=1"]
        if args.smoke:
            sys.path.insert(0, str(ROOT))
            from tests import fabricate

            data_dir = fabricate.write_all(tmp / "data")
            extra = ["trainer.max_epochs=1", "data.verify_counts=false", "data.val_size=16"]
            args.trials = 2
        extra += [f"paths.data_dir={data_dir}", f"paths.cache_dir={tmp / 'cache'}"]
        rows = []
        for n in (1, args.jobs):
            wall, values = search(tmp / f"jobs{n}", n, args.trials, extra)
            rows.append((n, wall, values))
    base = rows[0][1]
    print(f"| n_jobs | trials | wall (s) | speed-up vs n_jobs=1 | trial values (val/acc_best) |")
    print("|---:|---:|---:|---:|---|")
    for n, wall, values in rows:
        print(f"| {n} | {len(values)} | {wall:.1f} | {base / wall:.2f} | {', '.join(f'{v:.3f}' for v in values)} |")


if __name__ == "__main__":
    main()
