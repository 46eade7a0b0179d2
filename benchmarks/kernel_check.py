"""Every eager Triton activation kernel against the torch path: forward and backward, float32 and
bfloat16, NCHW, NHWC (channels_last) and strided (non-contiguous) inputs; prints the max errors.

    python benchmarks/kernel_check.py --device cuda --out kernels.json   # on a GPU (the real check)
    python benchmarks/kernel_check.py --device cpu                       # Triton's CPU interpreter

On a GPU `tl.exp`/`tl.log` are approximate (ex2/lg2.approx), unlike the interpreter's numpy math,
so the expm1/log1p-style terms of the generated kernels (`_expm1`, `_log1p`, `_softplus`) are also
checked on inputs near 0, where a relative error would show first. Errors, per case:
  abs      max |triton - torch| (both in the tensor's dtype; torch computes in float32)
  rel      max |triton - torch| / |torch| (|torch| >= the dtype's tiny; torch = 0 is compared in abs)
  err      max |triton - torch| / (1 + |torch|): the verdict, against TOL (the CPU test's tolerance)
  near0    max rel over the inputs with |x| < 1e-2, against NEAR0_TOL
Against float64 the torch path itself has a comparable error in bf16 (one bf16 ulp = 2**-8 relative),
so a bf16 case within TOL means the kernel rounds like torch, not better than bf16 can hold.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

TOL = {"float32": 1e-5, "bfloat16": 1e-2}          # tests/test_activations.py's interpreter tolerance
NEAR0_TOL = {"float32": 1e-5, "bfloat16": 1e-2}    # documented in README ("The GPU check")


def activations():
    """Every activation that runs through the generated kernels (one PointwiseActivation each)."""
    from src.models.activations import CUSTOM_ACTIVATIONS, activation_factory

    mods = {name: activation_factory(name)() for name in CUSTOM_ACTIVATIONS}
    mods["swish(beta=1.5)"] = activation_factory("swish", beta=1.5)()._fixed  # fixed β != 1: a kernel too
    # every Triton helper at once (_expm1, _log1p, _softplus, _tanh) and tl.erf
    mods["formula(helpers)"] = activation_factory(
        "formula", expr="tanh(x)*softplus(x) + expm1(x)/3 - log1p(abs(x)) + erf(x)")()
    return mods


def inputs(shape, device, seed=0):
    """Wide values (saturation, overflow guards), values near 0 (expm1/log1p) and exactly 0."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    n = 1
    for s in shape:
        n *= s
    tiny = torch.logspace(-7, -2, 64, dtype=torch.float64)
    special = torch.cat([torch.linspace(-30, 30, 241, dtype=torch.float64), tiny, -tiny, torch.zeros(1, dtype=torch.float64)])
    rest = torch.randn(max(0, n - len(special)), generator=gen, dtype=torch.float64) * 3
    flat = torch.cat([special, rest])[:n]
    flat = flat[torch.randperm(n, generator=gen)]
    return flat.reshape(shape).float().to(device)


def layouts(x):
    """The same values as NCHW, NHWC, and a non-contiguous strided view (every other W column)."""
    import torch

    n, c, h, w = x.shape
    wide = torch.zeros(n, c, h, 2 * w, device=x.device, dtype=x.dtype)
    wide[..., ::2] = x
    strided = wide[..., ::2]
    assert not strided.is_contiguous() and not strided.is_contiguous(memory_format=torch.channels_last)
    return {"nchw": x.contiguous(), "nhwc": x.contiguous(memory_format=torch.channels_last), "strided": strided}


def _torch_path(spec, x, g):
    """src/models/pointwise.PointwiseSpec's non-Triton branch: float32 math for half inputs."""
    import torch

    xc = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    return spec.f(xc).to(x.dtype), (g.to(xc.dtype) * spec.df(xc)).to(x.dtype)


def _errors(out, ref, x, dtype):
    import torch

    out, ref = out.double().flatten(), ref.double().flatten()
    diff = (out - ref).abs()
    tiny = torch.finfo(dtype).tiny
    nz = ref.abs() >= tiny
    rel = torch.where(nz, diff / ref.abs().clamp_min(tiny), torch.zeros_like(diff))
    near = x.double().flatten().abs() < 1e-2
    worst = int(rel.argmax())
    finite = bool(torch.isfinite(out).all() == torch.isfinite(ref).all())
    return {"abs": float(diff.max()), "rel": float(rel.max()), "err": float((diff / (1 + ref.abs())).max()),
            "near0": float(rel[near].max()) if near.any() else 0.0, "worst_x": float(x.double().flatten()[worst]),
            "finite_match": finite}


def check(device_name: str, shape) -> list[dict]:
    import torch

    from src.models import fused_activations as fa

    device = torch.device(device_name)
    rows = []
    base = inputs(shape, device)
    g_base = torch.randn(shape, generator=torch.Generator().manual_seed(1)).to(device)
    for name, act in activations().items():
        spec = act._spec
        kernels = spec.kernels()
        for dtype in (torch.float32, torch.bfloat16):
            for layout, x in layouts(base.to(dtype)).items():
                g = g_base.to(dtype)
                if layout == "nhwc":
                    g = g.contiguous(memory_format=torch.channels_last)
                y, dx = fa.forward(kernels, x), fa.backward(kernels, x, g)
                y_ref, dx_ref = _torch_path(spec, x, g)
                dt = str(dtype).removeprefix("torch.")
                row = {"activation": name, "dtype": dt, "layout": layout,
                       "layout_kept": layout == "strided" or y.stride() == x.stride()}
                if device.type == "cuda":  # the module's eager path must be the kernel, not torch
                    xr = x.detach().clone().requires_grad_(True)
                    ym = act(xr)
                    ym.backward(g)
                    row["module_uses_triton"] = bool(torch.equal(ym, y) and torch.equal(xr.grad, dx))
                for part, out, ref in (("fwd", y, y_ref), ("bwd", dx, dx_ref)):
                    row[part] = _errors(out, ref, x, dtype)
                row["ok"] = all(row[p]["err"] <= TOL[dt] and row[p]["near0"] <= NEAR0_TOL[dt] and row[p]["finite_match"]
                                for p in ("fwd", "bwd")) and row["layout_kept"] and row.get("module_uses_triton", True)
                rows.append(row)
    return rows


def table(rows) -> str:
    head = "| activation | dtype | layout | fwd abs | fwd rel | fwd near0 | bwd abs | bwd rel | bwd near0 | ok |"
    lines = [head, "|---" * (head.count("|") - 1) + "|"]
    for r in rows:
        f, b = r["fwd"], r["bwd"]
        lines.append(f"| {r['activation']} | {r['dtype']} | {r['layout']} | {f['abs']:.2e} | {f['rel']:.2e} | "
                     f"{f['near0']:.2e} | {b['abs']:.2e} | {b['rel']:.2e} | {b['near0']:.2e} | "
                     f"{'yes' if r['ok'] else 'NO'} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", choices=("cpu", "cuda"), default=None)
    ap.add_argument("--out", default=None, help="write the rows as JSON here")
    args = ap.parse_args(argv)
    import importlib.util

    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu":  # before Triton is first imported: the kernels then run in numpy
        os.environ["TRITON_INTERPRET"] = "1"
        import warnings  # numpy's overflow notes on exp(±large): the kernels' saturation, checked below

        warnings.filterwarnings("ignore", "overflow encountered", RuntimeWarning)
    result = {"device": device, "tolerance": TOL, "near0_tolerance": NEAR0_TOL, "rows": []}
    if importlib.util.find_spec("triton") is None:
        result["skipped"] = "triton is not installed"
    elif device == "cuda" and not torch.cuda.is_available():
        result["skipped"] = "no CUDA device"
    else:
        t = time.perf_counter()
        # small on the interpreter (numpy, one program at a time); a few blocks per launch on a GPU
        result["rows"] = check(device, (2, 4, 8, 8) if device == "cpu" else (8, 32, 32, 32))
        result["seconds"] = round(time.perf_counter() - t, 1)
        result["all_ok"] = all(r["ok"] for r in result["rows"])
        print(table(result["rows"]))
    print(f"kernel check on {device}: " + (result.get("skipped") or
                                           f"{sum(r['ok'] for r in result['rows'])}/{len(result['rows'])} ok"))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))
    return 0 if result.get("all_ok", True) else 1


if __name__ == "__main__":
    sys.exit(main())
