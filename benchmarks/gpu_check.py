"""The GPU check: one prepared command that collects every GPU-only fact in under 8 minutes and
writes DIR/gpu_check.json and DIR/gpu_check.md (plus each step's log and run folder under DIR).

    DATA_DIR=/tmp/data python benchmarks/gpu_check.py --out $OUT/gpu_check   # one H100/H200
    python benchmarks/gpu_check.py --smoke --out /tmp/gpu_check              # the same steps on the CPU (CI)

Sections (benchmarks/gpu_sections.py): the environment; every eager Triton activation kernel
against the torch path; a 3-job sequential sweep in one process (each job must compile its own
graphs); a 4-job parallel sweep with jobs_per_gpu=2 (the GPU slots); four seeds as fused seed packs
(seeds_per_job=auto: one pack of 4 on one GPU; 2 per pack with --smoke, where auto is 1), each member
a completed run folder with its `pack` entry and the study table at n=4. These five run at the same
time: they check behaviour, not speed (the packed sweep's img/s is shared with the others: `fused`
below measures a pack alone). Started first, they are never cut by the budget. Then, one at a time so that their img/s are clean (two at a
time with --smoke, whose CPU numbers mean nothing): train.py end to end with the defaults (ResNet18,
CIFAR-10, 2 epochs) and with SAM, SEU and compile=off; the throughput table (throughput.py) and the
activation table (activations.py) in short modes; last, fused seed packs (fused.py: a pack's img/s
against one run, against issue 25's goals; this file's `fused`).

Every step is a subprocess with its own timeout, and a step that fails, times out or finds a
mismatch records one line and the check goes on. A time budget (--budget, 450 s on a GPU) bounds
the whole: a step that would start with too little time left is recorded as skipped. The JSON is
rewritten after every section, so even a killed check leaves what it had.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

import gpu_sections  # noqa: E402
from gpu_sections import SectionFailed, Skip  # noqa: E402
from gpu_report import markdown  # noqa: E402

MIN_START_S = 10   # a step is not started with less time than this left in the budget
RESERVE_S = 5      # kept back for writing the report


def one_line(exc: BaseException) -> str:
    """Our own findings as they are; anything else with its exception type (a bug in a section)."""
    text = " ".join(str(exc).split())
    return (text if isinstance(exc, (Skip, SectionFailed)) else f"{type(exc).__name__}: {text}")[:300]


class Check:
    def __init__(self, out: Path, smoke: bool, budget_s: float):
        self.out, self.smoke = out, smoke
        self.t0 = time.monotonic()
        self.deadline = self.t0 + budget_s
        self.lock = threading.Lock()
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        if smoke:  # the CPU, even on a machine that has a GPU: CI's configuration
            self.env["CUDA_VISIBLE_DEVICES"] = ""
        elif not self.env.get("DATA_DIR") and Path("/tmp/data/cifar-10-images").is_dir():
            self.env["DATA_DIR"] = "/tmp/data"  # where the README's GPU recipe unpacks CIFAR-10
        self.report = {"mode": "smoke" if smoke else "gpu", "started": dt.datetime.now().isoformat(timespec="seconds"),
                       "budget_s": budget_s, "argv": sys.argv, "sections": {}}

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def sub(self, name: str, args: list[str], cap_s: float) -> int:
        """Run `python <args>` from the repository root, output to logs/<name>.log, killed (its whole
        process group: sweep workers too) at min(cap_s, what the budget has left)."""
        left = self.remaining() - RESERVE_S
        if left < MIN_START_S:
            raise Skip(f"skipped: time budget spent ({self.remaining():.0f} s left)")
        timeout = min(cap_s, left)
        log = self.out / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "w") as f:
            f.write(f"$ {sys.executable} {' '.join(args)}\n")
            f.flush()
            p = subprocess.Popen([sys.executable, *args], cwd=ROOT, env=self.env, stdout=f, stderr=subprocess.STDOUT,
                                 start_new_session=True)
            try:
                return p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _kill_group(p)
                raise TimeoutError(f"timed out after {timeout:.0f} s (log: {log.relative_to(self.out)})") from None

    def log_tail(self, name: str, n: int = 1) -> str:
        """The last meaningful line of a step's log: what one-line error it ended with."""
        try:
            lines = [ln.strip() for ln in (self.out / "logs" / f"{name}.log").read_text(errors="replace").splitlines()]
        except OSError:
            return ""
        lines = [ln for ln in lines if ln and not set(ln) <= set("━─│┃ ")]
        return " | ".join(lines[-n:])[:300]

    def section(self, name: str, fn) -> None:
        t = time.monotonic()
        try:
            entry = {**(fn(self) or {}), "status": "ok"}
        except Skip as e:
            entry = {"status": "skipped", "error": one_line(e)}
        except SectionFailed as e:
            entry = {**e.data, "status": "failed", "error": one_line(e)}
        except Exception as e:  # noqa: BLE001 -- fault isolation: the next section still runs
            entry = {"status": "failed", "error": one_line(e)}
        entry["seconds"] = round(time.monotonic() - t, 1)
        with self.lock:
            self.report["sections"][name] = entry
            self.write()
        print(f"[gpu_check] {name}: {entry['status']} ({entry['seconds']} s)"
              + (f" -- {entry['error']}" if entry.get("error") else ""), flush=True)

    def write(self) -> None:
        self.report["total_s"] = round(time.monotonic() - self.t0, 1)
        tmp = self.out / "gpu_check.json.tmp"
        tmp.write_text(json.dumps(self.report, indent=2, default=str))
        os.replace(tmp, self.out / "gpu_check.json")


# ----------------------------------------------------------------------------- fused seed packs
FUSED_CELLS = "lenet5:16,resnet20:8,lenet5:4"  # goal cells first (issue 25): a timeout loses K=4 first
# seconds (GPU, smoke): five cells that each compile (reduce-overhead) their own graphs on a GPU;
# fused.py rewrites its JSON after every cell, so a step cut short still reports what it measured
FUSED_CAPS = (90, 240)


def fused(check) -> dict:
    """benchmarks/fused.py: a seed pack's img/s (summed over members) against one run, for LeNet-5
    K=1 (the one run), 4, 16 and ResNet-20 K=1, 8, with compile on; a goal not met on a GPU fails the
    section. jobs_per_gpu=K is left out here: sweep_parallel covers the slots, and K processes each
    compiling their own graphs would not fit the budget."""
    path = check.out / "fused.json"
    if check.smoke:  # Dynamo's eager backend: the pack's graph capture runs in CI, without Inductor's C++ build
        args = ["--device", "cpu", "--smoke", "--batch-size", "16", "--steps", "3", *_smoke_compile("--backend")]
    else:
        args = ["--device", "cuda", "--compile", "auto", "--steps", "20", "--warmup", "3"]
    args += ["--cells", FUSED_CELLS, "--no-concurrent"]
    try:
        rc = check.sub("fused", ["benchmarks/fused.py", *args, "--out", str(path)], FUSED_CAPS[1 if check.smoke else 0])
    except TimeoutError as e:
        rc, timed_out = None, str(e)
    else:
        timed_out = None
    r = gpu_sections._read(path)
    if not r:
        raise RuntimeError(timed_out or f"exit {rc}: {check.log_tail('fused')}")
    data = {"args": args, "exit_code": rc, "goals": r.get("goals"), "device": r.get("device"),
            "models": r.get("models"), "markdown": r.get("markdown")}
    problems = [timed_out + " (the cells measured before are kept)"] if timed_out else []
    if rc not in (0, None):
        problems.append(f"exit {rc}: {check.log_tail('fused')}")
    cells = [(f"{n} one run", m["one_run"]) for n, m in (r.get("models") or {}).items()]
    cells += [(f"{n} K={row['K']}", row["pack"]) for n, m in (r.get("models") or {}).items() for row in m["rows"]]
    problems += [f"{label} compiled {c['graphs_while_timed']} graph(s) inside timed steps" for label, c in cells
                 if c.get("graphs_while_timed")]  # its img/s would include compile time
    if not check.smoke:  # the goals are for a GPU; a cell that ran out of memory misses its goal too
        problems += [f"goal not met: {g['model']} with {g['K']} members "
                     + (f"{g['ratio']:.2f}x < {g['target']:g}x" if g["ratio"] is not None else g["verdict"])
                     for g in r.get("goals") or [] if g["verdict"].startswith("not met")]
    if problems:
        raise SectionFailed("; ".join(problems), data)
    return data


def _smoke_compile(flag: str) -> list[str]:
    """gpu_sections.smoke_compile()'s choice (compile with the eager backend when the trainer has it)
    as fused.py options."""
    ov = dict(o.split("=", 1) for o in gpu_sections.smoke_compile())
    return ["--compile", ov["trainer.compile"], flag, ov["trainer.compile_backend"]] if ov else ["--compile", "off"]


def fused_markdown(s: dict | None) -> str:
    """fused.py's own tables under a section heading (gpu_report.py knows the other sections)."""
    if not s:
        return ""
    lines = [f"## benchmarks/fused.py ({' '.join(s.get('args') or [])}): {s['status']}", ""]
    if s.get("error"):
        lines += [f"**{s['error']}**", ""]
    body = (s.get("markdown") or "").splitlines()[2:]  # its title and blank line: this heading
    return "\n".join(lines + [("#" + ln if ln.startswith("#") else ln) for ln in body]) + "\n"


def _kill_group(p: subprocess.Popen) -> None:
    """The step and every process it started (loky workers, compile pools), by its group id."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(p.pid, sig)
        except ProcessLookupError:
            return
        try:
            p.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="folder for gpu_check.json, gpu_check.md, logs/ and the runs")
    ap.add_argument("--smoke", action="store_true", help="the same sections on the CPU at tiny sizes (CI)")
    ap.add_argument("--budget", type=float, default=None,
                    help="seconds for the whole check (default 450 on a GPU, 900 for --smoke)")
    ap.add_argument("--only", default=None, help="comma list of section names (default: all)")
    args = ap.parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    check = Check(out, args.smoke, args.budget or (900 if args.smoke else 450))
    wanted = set(args.only.split(",")) if args.only else None
    concurrent, serial = gpu_sections.plan(args.smoke)
    serial = [*serial, ("fused", fused)]  # issue 25's pack speed, last: the budget cuts it before the older sections
    concurrent = [(n, f) for n, f in concurrent if wanted is None or n in wanted]
    serial = [(n, f) for n, f in serial if wanted is None or n in wanted]
    for name, _ in concurrent + serial:  # report order is plan order; a killed check shows what was left
        check.report["sections"][name] = {"status": "pending"}
    # behaviour checks side by side (they do not report speed), then the timed steps alone on a GPU;
    # two at a time in smoke mode, whose CPU img/s mean nothing (CI's wall time does)
    for group, workers in ((concurrent, len(concurrent)), (serial, 2 if args.smoke else 1)):
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            for fut in [pool.submit(check.section, n, f) for n, f in group]:
                fut.result()
    check.write()
    (out / "gpu_check.md").write_text(markdown(check.report) + fused_markdown(check.report["sections"].get("fused")))
    failed = [n for n, s in check.report["sections"].items() if s["status"] == "failed"]
    print(f"[gpu_check] wrote {out / 'gpu_check.md'} and gpu_check.json in {check.report['total_s']} s; "
          + (f"failed: {', '.join(failed)}" if failed else "no section failed"), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
