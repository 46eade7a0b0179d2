"""Triton kernels for the custom activations: one kernel forward, one backward, generated from the
sympy expressions of f and f'.

Nothing here imports Triton at module import time: :func:`triton_source` is plain text generation
(tested on CPU), and :func:`load_kernels` imports Triton only when a CUDA tensor first reaches a
custom activation. The generated module uses only ``triton.language`` core math (no libdevice), so it
also runs under ``TRITON_INTERPRET=1`` on the CPU, which is how the tests check it without a GPU.

Each kernel treats the tensor as a flat array: inputs must be dense (contiguous or channels_last);
the output takes the input's strides (``empty_like``) and the incoming gradient is copied into the
input's layout when its strides differ. Arithmetic is float32 whatever the storage dtype.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import sys
import tempfile
from pathlib import Path

import sympy as sp
import torch

from src import env
from src.models.codegen import emit_body, identifier

BLOCK = 1024
NUM_WARPS = 4

_HELPERS = '''
@triton.jit
def _expm1(x):
    u = tl.exp(x)
    um1 = u - 1.0
    kahan = tl.where(um1 == 0.0, x, um1 * x / tl.log(u))  # exact-ish near 0
    return tl.where(tl.abs(x) < 0.5, kahan, um1)


@triton.jit
def _log1p(x):
    u = 1.0 + x
    d = u - 1.0
    kahan = tl.where(d == 0.0, x, tl.log(u) * x / d)
    return tl.where(tl.abs(x) < 0.5, kahan, tl.log(u))


@triton.jit
def _tanh(x):
    ax = tl.abs(x)
    t = tl.exp(-2.0 * ax)
    y = (1.0 - t) / (1.0 + t)
    y = tl.where(ax < 0.05, ax * (1.0 - ax * ax * (1.0 / 3.0 - ax * ax * (2.0 / 15.0))), y)
    return tl.where(x < 0.0, -y, y)


@triton.jit
def _softplus(x):
    return tl.maximum(x, 0.0) + _log1p(tl.exp(-tl.abs(x)))
'''

_KERNELS = '''
@triton.jit
def forward_kernel(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
{forward}
    tl.store(y_ptr + offs, ({f}).to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def backward_kernel(x_ptr, g_ptr, dx_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    g = tl.load(g_ptr + offs, mask=mask, other=0.0).to(tl.float32)
{backward}
    tl.store(dx_ptr + offs, (g * ({df})).to(dx_ptr.dtype.element_ty), mask=mask)
'''

def _body(expr: sp.Expr) -> tuple[str, str]:
    lines, result = emit_body(expr, "triton")
    return "\n".join(f"    {line}" for line in lines) or "    pass", result


def triton_source(spec) -> str:
    """The Python/Triton module text for ``spec`` (a :class:`PointwiseSpec`)."""
    fwd, f = _body(spec.expr)
    bwd, df = _body(spec.dexpr)
    header = f'"""Generated for activation {spec.name}: f(x) = {spec.expr}; f\'(x) = {spec.dexpr}"""\n'
    return (
        header
        + "import triton\nimport triton.language as tl\n\n"
        + _HELPERS
        + _KERNELS.format(forward=fwd, f=f, backward=bwd, df=df)
    )


def _cache_dir() -> Path:
    root = env.get(env.KERNEL_DIR) or os.path.join(tempfile.gettempdir(), f"imgcls_kernels_{os.getuid()}")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def load_kernels(spec):
    """Write the generated module to a file (Triton's JIT reads kernel source from disk) and import it."""
    source = triton_source(spec)
    digest = hashlib.sha256(source.encode()).hexdigest()[:20]
    modname = f"imgcls_act_{identifier(spec.name)}_{digest}"
    if modname in sys.modules:
        return sys.modules[modname]
    path = _cache_dir() / f"{modname}.py"
    if not path.exists() or path.read_text() != source:
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(source)
        os.replace(tmp, path)  # atomic: several ranks may write at once
    module_spec = importlib.util.spec_from_file_location(modname, path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[modname] = module
    module_spec.loader.exec_module(module)
    return module


def _dense(x: torch.Tensor) -> torch.Tensor:
    if (
        x.is_contiguous()
        or (x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last))
        or (x.dim() == 5 and x.is_contiguous(memory_format=torch.channels_last_3d))
    ):
        return x
    return x.contiguous()


def _device(x: torch.Tensor):
    """Triton launches on the current CUDA device: switch only when x lives elsewhere."""
    if x.device.type == "cuda" and x.device.index != torch.cuda.current_device():
        return torch.cuda.device(x.device)
    return contextlib.nullcontext()


def _grid(n: int):
    return ((n + BLOCK - 1) // BLOCK,)


def forward(kernels, x: torch.Tensor) -> torch.Tensor:
    x = _dense(x)
    y = torch.empty_like(x)
    n = x.numel()
    if n:
        with _device(x):
            kernels.forward_kernel[_grid(n)](x, y, n, BLOCK=BLOCK, num_warps=NUM_WARPS)
    return y


def backward(kernels, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    x = _dense(x)
    if g.stride() != x.stride() or g.dtype != x.dtype:
        g = torch.empty_like(x).copy_(g)
    dx = torch.empty_like(x)
    n = x.numel()
    if n:
        with _device(x):
            kernels.backward_kernel[_grid(n)](x, g, dx, n, BLOCK=BLOCK, num_warps=NUM_WARPS)
    return dx
