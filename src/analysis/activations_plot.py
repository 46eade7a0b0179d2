"""Plot activations and their derivatives: one row per activation, function left, derivative right.

    python -m src.analysis.activations_plot relu swish seu cos m_tanh [--out activations.png] [--range -5 5]
    python -m src.analysis.activations_plot seu:alpha=0.5 taylor:function=sigmoid,order=3 "formula:x*tanh(x)"

(installed as ``imgcls-activations``: ``imgcls-activations relu swish seu``.)

An entry is a registry name, optionally with ``:key=value,...`` parameters (``formula:EXPR`` takes
the expression). The figure itself is :func:`src.run_figures.activation_figure` (the runs'
TensorBoard and trackers draw it too); it accepts names, factories or modules. The derivative is
the activation's own backward (autograd through the module), in float64.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from src.models.activations import available_activations
from src.run_figures import activation_figure


def activation_parser(module: str, description: str, out: str) -> argparse.ArgumentParser:
    """The command line the activation figures share: activation entries, --out PNG, --dpi."""
    parser = argparse.ArgumentParser(prog=f"python -m {module}", description=description,
                                     epilog=f"activations: {', '.join(available_activations())}")
    parser.add_argument("names", nargs="+", help="registry names, optionally name:key=value,... or formula:EXPR")
    parser.add_argument("--out", default=out, help=f"PNG path (default: {out})")
    parser.add_argument("--dpi", type=int, default=110)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = activation_parser("src.analysis.activations_plot",
                               "Write a PNG of activations (left) and their derivatives (right).",
                               "outputs/activations.png")  # outputs/ is git-ignored; the checkout stays clean
    parser.add_argument("--range", nargs=2, type=float, default=(-5.0, 5.0), metavar=("LO", "HI"))
    args = parser.parse_args(argv)
    if args.range[0] >= args.range[1]:
        parser.error("--range LO HI needs LO < HI")
    try:
        fig = activation_figure(args.names, args.range)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=args.dpi)
    print(f"wrote {args.out} ({len(args.names)} activations)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
