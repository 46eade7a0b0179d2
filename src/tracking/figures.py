"""The two figures a tracker's run carries, as PNG files: the test confusion matrix and the
activation plot. Drawn by src/run_figures.py, as the run's TensorBoard figures are; the confusion
matrix is read back from the test_confusion.csv the classifier writes, so no figure object has to
travel from the LightningModule to the trackers."""
from __future__ import annotations

from pathlib import Path


def confusion_png(csv: Path, out: Path) -> Path | None:
    if not csv.is_file():
        return None
    import pandas as pd

    from src.run_figures import confusion_figure

    confusion_figure(pd.read_csv(csv, index_col=0)).savefig(out, dpi=90)
    return out


def activation_png(activation_cfg, out: Path) -> Path | None:
    if activation_cfg is None:
        return None
    from hydra.utils import instantiate

    from src.run_figures import activation_figure

    fig = activation_figure([instantiate(activation_cfg)])
    fig.savefig(out, dpi=80)
    return out
