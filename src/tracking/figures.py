"""The two figures a tracker's run carries: the test confusion matrix and the activation plot.

Drawn with matplotlib's Agg canvas directly (no pyplot state, safe in sweep workers); the
confusion matrix is read back from the test_confusion.csv the classifier writes, so no figure
object has to travel from the LightningModule to the trackers."""
from __future__ import annotations

from pathlib import Path


def confusion_png(csv: Path, out: Path) -> Path | None:
    if not csv.is_file():
        return None
    import pandas as pd
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    counts = pd.read_csv(csv, index_col=0)
    n = len(counts)
    fig = Figure(figsize=(2 + 0.45 * n, 1.6 + 0.45 * n), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.imshow(counts.to_numpy(), cmap="Blues")
    ax.set_xticks(range(n), [str(c) for c in counts.columns], rotation=90)
    ax.set_yticks(range(n), [str(c) for c in counts.index])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= 20:  # numbers in the cells while they stay readable
        top = counts.to_numpy().max() or 1
        for i in range(n):
            for j in range(n):
                v = counts.iat[i, j]
                ax.text(j, i, str(v), ha="center", va="center", fontsize=7,
                        color="white" if v > top / 2 else "black")
    fig.savefig(out, dpi=90)
    return out


def activation_png(activation_cfg, out: Path) -> Path | None:
    if activation_cfg is None:
        return None
    from hydra.utils import instantiate

    from src.analysis.activations_plot import activation_figure

    fig = activation_figure([instantiate(activation_cfg)])
    fig.savefig(out, dpi=80)
    return out
