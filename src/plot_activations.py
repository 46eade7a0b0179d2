"""Old entry point, kept as an alias: ``python -m src.plot_activations`` runs
``python -m src.analysis.activations_plot`` (``src.lit.classifier`` imports :func:`activation_figure` here)."""
import sys

from src.analysis.activations_plot import activation_figure, activation_values, main, parse_entry  # noqa: F401

if __name__ == "__main__":
    sys.exit(main())
