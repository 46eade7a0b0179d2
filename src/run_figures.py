"""The figures of one run, drawn in one place for everyone who shows them: the activation and its
derivative, and the test confusion matrix with the ``test_confusion.csv`` it is read back from.

Users: the LightningModule (TensorBoard figures, the CSV in the run dir), the experiment trackers
(PNG artefacts, src/tracking/figures.py) and the analysis commands (src/analysis/activations_plot.py,
landscape.py, per_class.py). Here, below all of them, so that src/lit never imports src/analysis.
Drawn on matplotlib's Agg canvas directly: no pyplot state, safe in sweep workers and in a run
whose backend was never chosen. Imports nothing at module level but the standard library: the
analysis commands that only need the CSV's name load neither torch nor matplotlib.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

if TYPE_CHECKING:
    from torch import nn

CONFUSION_CSV = "test_confusion.csv"  # per run: rows = true class, columns = predicted, counts


# ------------------------------------------------------------------ activations
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


def activation_module(item) -> tuple[str, nn.Module]:
    """(label, a module) for an activation given as a name entry ("elu:alpha=0.5"), a factory or a
    module (the activation figure and the depth landscape take the same three)."""
    from torch import nn

    if isinstance(item, nn.Module):
        return getattr(item, "act_name", type(item).__name__.lower()), item
    if isinstance(item, str):
        from src.models.activations import activation_factory  # the registry, only for names

        name, kwargs = parse_entry(item)
        return item, activation_factory(name, **kwargs)()
    if callable(item):
        return getattr(item, "activation_name", getattr(item, "__name__", "activation")), item()
    raise TypeError(f"cannot use {item!r} as an activation: give a name, a factory or a module")


def _label(name: str, module: nn.Module) -> str:
    expr = getattr(module, "expr", None)
    if expr is not None and str(expr) not in name:
        text = f"{name}: {expr}"
        return text if len(text) <= 60 else text[:57] + "..."
    return name


def activation_values(module: nn.Module, x_range=(-5.0, 5.0), points: int = 801):
    """x, f(x), f'(x) as float64 numpy arrays (the derivative from the module's own backward)."""
    import torch

    x = torch.linspace(float(x_range[0]), float(x_range[1]), points, dtype=torch.float64, requires_grad=True)
    module = copy.deepcopy(module).to("cpu", torch.float64)  # never touch a live model's module
    with torch.enable_grad():
        y = module(x)
        (dy,) = torch.autograd.grad(y.sum(), x)
    return x.detach().numpy(), y.detach().numpy(), dy.numpy()


def activation_figure(items: Iterable, x_range: Sequence[float] = (-5.0, 5.0)):
    """A matplotlib Figure (Agg, not shown): each activation and its derivative side by side.
    ``items`` are registry names (``"seu:alpha=0.5"``), factories or modules."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    mods = [activation_module(item) for item in items]
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


# ------------------------------------------------------------------ the test confusion matrix
def confusion_frame(counts, labels: Sequence[str] | None = None):
    """Counts (true x predicted, any array) as the DataFrame ``test_confusion.csv`` holds; classes
    without names are numbered."""
    import numpy as np
    import pandas as pd

    counts = np.asarray(counts)
    names = list(labels) if labels else [str(i) for i in range(counts.shape[0])]
    return pd.DataFrame(counts, index=pd.Index(names, name="true"), columns=names)


def log_confusion(counts, labels: Sequence[str] | None, run_dir: Path | None, tb=None, step: int = 0):
    """A run's test confusion matrix: test_confusion.csv in ``run_dir`` (when given) and its figure
    in TensorBoard (``tb``, when given); the frame is returned."""
    frame = confusion_frame(counts, labels)
    if run_dir is not None:
        write_confusion(frame, run_dir)
    if tb is not None:
        tb.add_figure("test/confusion_matrix", confusion_figure(frame), step)
    return frame


def log_image_grid(tb, x, denormalize) -> None:
    """Up to 64 random images of a training batch (``denormalize``: back to [0, 1]) as one grid in
    TensorBoard. Draws its sample from the batch's device generator, as a run always has."""
    import torch
    from torchvision.utils import make_grid

    idx = torch.randperm(x.shape[0], device=x.device)[:64]
    tb.add_image("train/images", make_grid(denormalize(x[idx].float()).cpu(), nrow=8), 0)


def write_confusion(frame, run_dir: Path) -> Path:
    path = Path(run_dir) / CONFUSION_CSV
    frame.to_csv(path)
    return path


def confusion_figure(frame):
    """A matplotlib Figure (Agg, not shown) of the counts, growing with the number of classes;
    the numbers are written into the cells while they stay readable (up to 20 classes)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n = len(frame)
    values = frame.to_numpy()
    fig = Figure(figsize=(2 + 0.45 * n, 1.6 + 0.45 * n), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.imshow(values, cmap="Blues")
    ax.set_xticks(range(n), [str(c) for c in frame.columns], rotation=90)
    ax.set_yticks(range(n), [str(c) for c in frame.index])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= 20:
        top = values.max() or 1
        for i in range(n):
            for j in range(n):
                v = frame.iat[i, j]
                ax.text(j, i, str(v), ha="center", va="center", fontsize=7,
                        color="white" if v > top / 2 else "black")
    return fig
