"""Output landscapes: what a randomly initialised small network computes over a 2-D input plane,
one heat map per activation, side by side (ReLU gives sharp facets, smooth activations smooth
surfaces).

    python -m src.analysis.landscape relu swish cos seu [--out landscape.png] [--layers 6] [--width 64]
                                     [--seed 0] [--range 5] [--points 200] [--csv landscape.csv]

(installed as ``imgcls-landscape``: ``imgcls-landscape relu swish cos seu``.)

The network is fully connected: 2 inputs (x, y) → ``layers`` hidden layers of ``width`` units,
each followed by the activation → 1 output. Its weights are drawn once per seed, in float64, from
``torch.Generator().manual_seed(seed)`` in the order W₁, b₁, W₂, b₂, …: weights
N(0, 2/fan_in) (He), biases N(0, ``bias_std``²) (non-zero, so the kinks of a ReLU net do not all
pass through the origin); every activation then runs with exactly these weights, so the panels
differ by the activation alone. The grid is ``points`` × ``points`` over [−range, range]²,
evaluated in float64 on the CPU.

An entry is a registry name, optionally with ``:key=value,...`` parameters, as in
:mod:`src.analysis.activations_plot` (``seu:alpha=0.5``, ``formula:x*tanh(x)``). :func:`landscape`
returns the numbers, :func:`landscape_figure` the matplotlib Figure (Agg, no pyplot state), and
:func:`write_csv` the long table (columns activation, x, y, output).
"""
from __future__ import annotations

import copy
import csv
import sys
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from torch import nn

from src.analysis.activations_plot import activation_parser
from src.run_figures import activation_module

Weights = list[tuple[torch.Tensor, torch.Tensor]]


def landscape_weights(layers: int = 6, width: int = 64, seed: int = 0, bias_std: float = 1.0) -> Weights:
    """[(W, b), ...] for 2 → width (× ``layers``) → 1, float64, drawn from a generator seeded with
    ``seed`` (the global torch RNG is not touched)."""
    if layers < 1 or width < 1:
        raise ValueError(f"layers and width must be at least 1, got layers={layers}, width={width}")
    gen = torch.Generator().manual_seed(int(seed))
    sizes = [2] + [int(width)] * int(layers) + [1]
    weights = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        w = torch.randn(fan_out, fan_in, generator=gen, dtype=torch.float64) * (2.0 / fan_in) ** 0.5
        b = torch.randn(fan_out, generator=gen, dtype=torch.float64) * float(bias_std)
        weights.append((w, b))
    return weights


def landscape_network(weights: Weights, act: nn.Module) -> nn.Sequential:
    """Linear → act for each hidden layer, then the output Linear, holding copies of ``weights``;
    each activation slot gets its own deep copy of ``act``. float64, CPU, eval mode."""
    layers: list[nn.Module] = []
    for i, (w, b) in enumerate(weights):
        lin = nn.Linear(w.shape[1], w.shape[0], dtype=torch.float64)
        with torch.no_grad():
            lin.weight.copy_(w)
            lin.bias.copy_(b)
        layers.append(lin)
        if i < len(weights) - 1:
            layers.append(copy.deepcopy(act).to("cpu", torch.float64))
    return nn.Sequential(*layers).eval()


def grid(range_: float = 5.0, points: int = 200) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
    """xs, ys (both linspace(−range, range, points)) and the (points², 2) inputs, row-major with y
    as the row: input k is (xs[k % points], ys[k // points])."""
    axis = torch.linspace(-float(range_), float(range_), int(points), dtype=torch.float64)
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")
    return axis.numpy(), axis.numpy().copy(), torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=1)


def landscape(
    names: Iterable,
    layers: int = 6,
    width: int = 64,
    seed: int = 0,
    range_: float = 5.0,
    points: int = 200,
    bias_std: float = 1.0,
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """{label: (xs, ys, Z)} with Z[i, j] the network's output at (xs[j], ys[i]) (float64); the same
    weights (built once from ``seed``) for every activation."""
    items = list(names)
    if not items:
        raise ValueError("nothing to draw: give at least one activation")
    if range_ <= 0 or points < 2:
        raise ValueError(f"range must be > 0 and points at least 2, got range={range_}, points={points}")
    weights = landscape_weights(layers, width, seed, bias_std)
    xs, ys, inputs = grid(range_, points)
    out: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for item in items:
        label, act = activation_module(item)
        net = landscape_network(weights, act)
        with torch.no_grad():
            z = net(inputs).reshape(len(ys), len(xs))
        out[label] = (xs, ys, z.numpy())
    return out


def landscape_figure(results: dict | Iterable, title: str | None = None, contours: int = 16, **kwargs):
    """A matplotlib Figure (Agg, not shown): one heat map per activation, side by side. ``results``
    is :func:`landscape`'s dict, or activation entries (then ``kwargs`` go to :func:`landscape`);
    ``contours`` thin white contour lines on each map (0: none)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # Agg, without touching pyplot's state
    from matplotlib.figure import Figure

    if not isinstance(results, dict):
        results = landscape(results, **kwargs)
    if not results:
        raise ValueError("nothing to draw: give at least one activation")
    n = len(results)
    fig = Figure(figsize=(3.3 * n + 0.4, 3.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, n, squeeze=False)[0]
    for ax, (label, (xs, ys, z)) in zip(axes, results.items()):
        im = ax.imshow(z, origin="lower", extent=(xs[0], xs[-1], ys[0], ys[-1]), cmap="viridis",
                       interpolation="nearest", aspect="equal")
        # thin contour lines: polygonal (kinked) for a piecewise-linear net, curved for a smooth one
        if contours:
            ax.contour(xs, ys, z, levels=contours, colors="white", linewidths=0.5, alpha=0.7)
        fig.colorbar(im, ax=ax, shrink=0.8)
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("x")
        ax.set_ylabel("y")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def write_csv(results: dict, path: str | Path) -> Path:
    """Long table: activation, x, y, output (floats written exactly, ``repr`` round-trips)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["activation", "x", "y", "output"])
        for label, (xs, ys, z) in results.items():
            xl, yl, zl = xs.tolist(), ys.tolist(), z.tolist()
            for i, y in enumerate(yl):
                row = zl[i]
                for j, x in enumerate(xl):
                    w.writerow([label, repr(x), repr(y), repr(row[j])])
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = activation_parser(
        "src.analysis.landscape",
        "Heat maps of a random fully connected net's output over a 2-D input grid, one per activation.",
        "outputs/landscape.png")  # outputs/ is git-ignored: a default run leaves the checkout clean
    parser.add_argument("--layers", type=int, default=6, help="hidden layers (default 6)")
    parser.add_argument("--width", type=int, default=64, help="units per hidden layer (default 64)")
    parser.add_argument("--seed", type=int, default=0, help="weight seed, the same for every activation")
    parser.add_argument("--range", type=float, default=5.0, dest="range_", help="grid over [-R, R]^2 (default 5)")
    parser.add_argument("--points", type=int, default=200, help="grid points per axis (default 200)")
    parser.add_argument("--csv", default=None, help="also write activation,x,y,output rows here")
    args = parser.parse_args(argv)
    if args.layers < 1 or args.width < 1:
        parser.error("--layers and --width must be at least 1")
    if args.range_ <= 0 or args.points < 2:
        parser.error("--range must be > 0 and --points at least 2")
    try:
        results = landscape(args.names, layers=args.layers, width=args.width, seed=args.seed,
                            range_=args.range_, points=args.points)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    title = f"random net: 2 → {args.layers}×{args.width} → 1, seed {args.seed}"
    fig = landscape_figure(results, title=title)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=args.dpi)
    print(f"wrote {args.out} ({len(results)} activations, {args.points}x{args.points} grid)")
    if args.csv:
        write_csv(results, args.csv)
        print(f"wrote {args.csv} ({len(results) * args.points ** 2} rows)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
