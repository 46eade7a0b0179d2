"""A train.py-like task for the Optuna sweeper's tests: a quadratic with its maximum 0 at
x=2, y=-1, a run that takes `sleep` seconds (every third trial `sleep_long`), and a metrics.json
with its start and end times, as our runs write one."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig


@hydra.main(version_base="1.3", config_path=".", config_name="quadratic")
def main(cfg) -> float:
    start = time.time()
    long = cfg.trial is not None and int(cfg.trial) % 3 == 0
    time.sleep(cfg.sleep_long if long else cfg.sleep)
    if cfg.fail_above is not None and cfg.x > cfg.fail_above:
        raise RuntimeError(f"x={cfg.x} is too large")  # a crashing run: the search must go on
    value = -((cfg.x - 2) ** 2) - ((cfg.y + 1) ** 2)
    out = Path(HydraConfig.get().runtime.output_dir)
    (out / "metrics.json").write_text(json.dumps({"status": "completed", "objective": value, "start": start,
                                                  "end": time.time(), "pid": os.getpid(), "seed": cfg.seed}))
    return value


if __name__ == "__main__":
    main()
