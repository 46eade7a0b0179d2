"""gpu_check.md from gpu_check.json's dict: a summary of every section, then one table per section.
A value the trainer did not record shows as "–" (missing), never as 0."""
from __future__ import annotations

DASH = "–"


def _f(v, fmt: str = "") -> str:
    if v is None:
        return DASH
    if isinstance(v, bool):
        return "yes" if v else "no"
    try:
        return format(v, fmt)
    except (TypeError, ValueError):
        return str(v)


def _table(head: list[str], rows: list[list]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join((c if isinstance(c, str) else _f(c)).replace("|", "/") for c in r) + " |" for r in rows]
    return out


def _runs(sections: dict) -> list[str]:
    rows = []
    for name, s in sections.items():
        if name.startswith("run_"):
            rows.append([name.removeprefix("run_"), s.get("run_status") or s["status"], _f(s.get("train_images_per_s"), ",.0f"),
                         _f(s.get("compile_s"), ".1f"), _f(s.get("compiled")), _f(s.get("compile_mode")),
                         _f(s.get("compile_graphs")), _f(s.get("recompiles")), _f(s.get("graphs_compiled_while_timed")),
                         _f(s.get("peak_gpu_mem_mb"), ",.0f"), _f(s.get("test/acc"), ".4f"), _f(s.get("wall_time_s"), ".1f"),
                         s.get("compile_fallback") or s.get("error") or ""])
    if not rows:
        return []
    return ["## train.py runs", "", *_table(
        ["run", "status", "train img/s", "compile s", "compiled", "mode", "graphs", "recompiles", "graphs in timed steps",
         "peak MB", "test acc", "wall s", "note"], rows), ""]


def _sweep(title: str, s: dict | None, parallel: bool) -> list[str]:
    if not s:
        return []
    lines = [f"## {title}: {s['status']}", ""]
    if s.get("error"):
        lines += [f"**{s['error']}**", ""]
    jobs = s.get("jobs") or []
    if parallel:
        lines += [f"slots: {', '.join(s.get('slots') or []) or DASH}; at most {_f(s.get('max_concurrent'))} jobs at once",
                  ""]
        lines += _table(["activation", "seed", "status", "gpu", "slot", "pid", "gpu uuid", "train img/s", "compiled",
                         "graphs"],
                        [[_f(j["activation"]), _f(j["seed"]), _f(j["status"]), _f(j["slot_gpu"]), _f(j["slot_slot"]), _f(j["slot_pid"]),
                          _f(j["slot_gpu_uuid"]), _f(j.get("train_images_per_s"), ",.0f"), _f(j.get("compiled")),
                          _f(j.get("compile_graphs"))] for j in jobs])
    else:
        lines += _table(["activation", "status", "compiled", "graphs", "recompiles", "compile s", "train img/s"],
                        [[_f(j["activation"]), _f(j["status"]), _f(j.get("compiled")), _f(j.get("compile_graphs")),
                          _f(j.get("recompiles")), _f(j.get("compile_s"), ".1f"), _f(j.get("train_images_per_s"), ",.0f")]
                         for j in jobs])
    return [*lines, ""]


def _packed(s: dict | None) -> list[str]:
    if not s:
        return []
    lines = [f"## Packed sweep ({' '.join(o for o in s.get('overrides') or [] if o.startswith('seeds_per_job'))}): "
             f"{s['status']}", ""]
    if s.get("error"):
        lines += [f"**{s['error']}**", ""]
    packs = "; ".join(f"{p['members']} (size {_f(p.get('size'))}, {_f(p.get('pack_train_images_per_s'), ',.0f')} img/s)"
                      for p in s.get("packs") or [])
    lines += [f"data: {_f(s.get('data'))}; sweep wall {_f(s.get('wall_s'), '.1f')} s; packs: {packs or DASH}; "
              f"study table n: {', '.join(map(str, s.get('table_n') or [])) or DASH}", ""]
    lines += [f"`{n}`" for n in s.get("notes") or []] + ([""] if s.get("notes") else [])
    lines += _table(["seed", "status", "pack", "index", "pack img/s", "compiled", "graphs", "graphs in timed steps",
                     "peak MB", "test acc", "note"],
                    [[_f(j["seed"]), _f(j["status"]), _f((j.get("pack") or {}).get("members")),
                      _f((j.get("pack") or {}).get("index")), _f((j.get("pack") or {}).get("pack_train_images_per_s"), ",.0f"),
                      _f(j.get("compiled")), _f(j.get("compile_graphs")), _f(j.get("graphs_compiled_while_timed")),
                      _f(j.get("peak_gpu_mem_mb"), ",.0f"), _f(j.get("test/acc"), ".4f"),
                      j.get("compile_fallback") or j.get("error") or ""]
                     for j in sorted(s.get("jobs") or [], key=lambda j: str(j["seed"]))])
    return [*lines, ""]


def _kernels(s: dict | None) -> list[str]:
    if not s:
        return []
    lines = [f"## Triton kernels vs the torch path: {s['status']}", ""]
    if s.get("error"):
        lines += [f"**{s['error']}**", ""]
    rows = s.get("rows") or []
    if not rows:
        return lines
    lines += [f"device {s.get('device')}; verdict err = |triton - torch| / (1 + |torch|) <= {s.get('tolerance')}, "
              f"relative error for |x| < 1e-2 <= {s.get('near0_tolerance')}; max over NCHW, NHWC and strided inputs "
              "(layouts that differ are listed below)", ""]
    merged: dict = {}
    for r in rows:
        m = merged.setdefault((r["activation"], r["dtype"]), {"ok": True, "fwd": {}, "bwd": {}, "bad": []})
        m["ok"] &= r["ok"]
        if not r["ok"]:
            m["bad"].append(r["layout"])
        for p in ("fwd", "bwd"):
            for k in ("abs", "rel", "near0"):
                m[p][k] = max(m[p].get(k, 0.0), r[p][k])
    lines += _table(["activation", "dtype", "fwd abs", "fwd rel", "fwd rel near 0", "bwd abs", "bwd rel", "bwd rel near 0",
                     "ok"],
                    [[a, d, *(f"{m[p][k]:.2e}" for p in ("fwd", "bwd") for k in ("abs", "rel", "near0")),
                      "yes" if m["ok"] else f"NO ({', '.join(m['bad'])})"] for (a, d), m in merged.items()])
    if any("module_uses_triton" in r for r in rows):
        off = [f"{r['activation']}/{r['dtype']}/{r['layout']}" for r in rows if not r.get("module_uses_triton", True)]
        lines += ["", "eager module path runs the Triton kernel: " + ("yes, every case" if not off else f"NO: {off}")]
    return [*lines, ""]


def _throughput(s: dict | None) -> list[str]:
    if not s:
        return []
    lines = [f"## benchmarks/throughput.py ({' '.join(s.get('args') or [])}): {s['status']}", ""]
    if s.get("error"):
        return [*lines, f"**{s['error']}**", ""]
    rows = [[r["workload"], r["pipeline"] + (" (diverged)" if r.get("diverged") else ""), _f(r["img_s"], ",.0f"),
             _f(r.get("us_per_step"), ",.0f"), _f(r.get("vs_typical"), ".2f"), _f(r.get("vs_relu"), ".3f"),
             _f(r.get("compile_s"), ".1f"), _f(r.get("peak_mb"), ",.0f")] for r in s.get("rows") or []]
    return [*lines, *_table(["workload", "pipeline", "img/s", "µs/step", "x typical", "vs relu", "compile s", "peak MB"],
                            rows), ""]


def _activations(s: dict | None) -> list[str]:
    if not s:
        return []
    lines = [f"## benchmarks/activations.py ({' '.join(s.get('args') or [])}): {s['status']}", ""]
    if s.get("error"):
        return [*lines, f"**{s['error']}**", ""]
    modes = s.get("modes") or []
    lines += [f"{s.get('device')}, batch {s.get('batch')}, {s.get('steps')} steps x {s.get('rounds')} rounds", ""]
    head = ["activation"] + [c for m in modes for c in (f"{m} img/s", f"{m} vs relu")]
    rows = [[r["activation"], *(c for m in modes for c in (_f(r.get(f"{m}_img_s"), ",.0f"), _f(r.get(f"{m}_vs_relu"), ".3f")))]
            for r in s.get("rows") or []]
    return [*lines, *_table(head, rows), ""]


def markdown(report: dict) -> str:
    sections = report["sections"]
    env = sections.get("environment") or {}
    title = env.get("device") or "unknown device"
    lines = [f"# GPU check ({report['mode']}) on {title}", "",
             f"started {report['started']}, {report.get('total_s')} s of a {report['budget_s']:.0f} s budget; "
             f"torch {_f(env.get('torch'))}, CUDA {_f(env.get('cuda'))}, triton {_f(env.get('triton'))}, "
             f"commit {_f(env.get('commit'))}", "", "## Summary", ""]
    lines += _table(["section", "status", "seconds", "note"],
                    [[n, s["status"], _f(s.get("seconds")), (s.get("error") or "").replace("|", "/")]
                     for n, s in sections.items()])
    lines += ["", *_runs(sections), *_sweep("Sequential sweep, one process", sections.get("sweep_sequential"), False),
              *_sweep("Parallel sweep, jobs_per_gpu=2", sections.get("sweep_parallel"), True),
              *_packed(sections.get("sweep_packed")),
              *_kernels(sections.get("kernels")), *_throughput(sections.get("throughput")),
              *_activations(sections.get("activations"))]
    return "\n".join(lines) + "\n"
