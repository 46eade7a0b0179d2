"""Plot activations and their derivatives: one row per activation, function left, derivative right.

    python -m src.analysis.activations_plot relu swish seu cos m_tanh [--out activations.png] [--range -5 5]
    python -m src.analysis.activations_plot seu:alpha=0.5 taylor:function=sigmoid,order=3 "formula:x*tanh(x)"

(``python -m src.plot_activations`` is an alias.)

An entry is a registry name, optionally with ``:key=value,...`` parameters (``formula:EXPR`` takes
the expression). :func:`activation_figure` is importable (e.g. to log a run's activation to
TensorBoard with ``SummaryWriter.add_figure``); it accepts names, factories or modules.
The derivative is the activation's own backward (autograd through the module), in float64.
"""
from __future__ import annotations

import argparse
import copy
import sys
from typing import Iterable, Sequence

import torch
from torch import nn

from src.models.activations import activation_factory, available_activations


def _value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def parse_entry(entry: str) -> tuple[str, dict]:
    """``"seu:alpha=0.5"`` -> ("seu", {"alpha": 0.5}); ``"formula:x*tanh(x)"`` -> expr."""
    name, _, params = entry.partition(":")
    if not params:
        return name, {}
    if name.lower() == "formula" and not params.startswith("expr="):
        return name, {"expr": params}
    kwargs = {}
    for item in params.split(","):
        key, eq, val = item.partition("=")
        if not eq:
            raise ValueError(f"'{entry}': parameters are key=value pairs separated by commas")
        kwargs[key.strip()] = _value(val.strip())
    return name, kwargs


def _module(item) -> tuple[str, nn.Module]:
    if isinstance(item, nn.Module):
        return getattr(item, "act_name", type(item).__name__.lower()), item
    if isinstance(item, str):
        name, kwargs = parse_entry(item)
        return item, activation_factory(name, **kwargs)()
    if callable(item):
        return getattr(item, "activation_name", getattr(item, "__name__", "activation")), item()
    raise TypeError(f"cannot plot {item!r}: give a name, a factory or a module")


def _label(name: str, module: nn.Module) -> str:
    expr = getattr(module, "expr", None)
    if expr is not None and str(expr) not in name:
        text = f"{name}: {expr}"
        return text if len(text) <= 60 else text[:57] + "..."
    return name


def activation_values(module: nn.Module, x_range=(-5.0, 5.0), points: int = 801):
    """x, f(x), f'(x) as float64 numpy arrays (the derivative from the module's own backward)."""
    x = torch.linspace(float(x_range[0]), float(x_range[1]), points, dtype=torch.float64, requires_grad=True)
    module = copy.deepcopy(module).to("cpu", torch.float64)  # never touch a live model's module
    with torch.enable_grad():
        y = module(x)
        (dy,) = torch.autograd.grad(y.sum(), x)
    return x.detach().numpy(), y.detach().numpy(), dy.numpy()


def activation_figure(items: Iterable, x_range: Sequence[float] = (-5.0, 5.0)):
    """A matplotlib Figure (Agg, not shown): each activation and its derivative side by side."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # Agg, without touching pyplot's state
    from matplotlib.figure import Figure

    mods = [_module(item) for item in items]
    if not mods:
        raise ValueError("nothing to plot: give at least one activation")
    fig = Figure(figsize=(9, 2.6 * len(mods)), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(mods), 2, squeeze=False)
    for (name, module), (ax_f, ax_d) in zip(mods, axes):
        x, y, dy = activation_values(module, x_range)
        ax_f.plot(x, y, color="tab:blue")
        ax_d.plot(x, dy, color="tab:orange")
        ax_f.set_title(_label(name, module), fontsize=10)
        ax_d.set_title(f"{name}: derivative", fontsize=10)
        for ax in (ax_f, ax_d):
            ax.axhline(0, color="0.7", lw=0.8)
            ax.axvline(0, color="0.7", lw=0.8)
            ax.grid(alpha=0.3)
            ax.set_xlim(x[0], x[-1])
    return fig


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
                               "Write a PNG of activations (left) and their derivatives (right).", "activations.png")
    parser.add_argument("--range", nargs=2, type=float, default=(-5.0, 5.0), metavar=("LO", "HI"))
    args = parser.parse_args(argv)
    if args.range[0] >= args.range[1]:
        parser.error("--range LO HI needs LO < HI")
    try:
        fig = activation_figure(args.names, args.range)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    fig.savefig(args.out, dpi=args.dpi)
    print(f"wrote {args.out} ({len(args.names)} activations)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
